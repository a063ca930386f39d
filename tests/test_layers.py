"""The layout stays true: stages never import shells, Faust or aiohttp; nothing imports the CLI;
the estimators import nothing from stream; no import cycle among project modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("stream.contract", "stream.timefmt", "stream.simulator", "stream.sources",
          "stream.decode", "stream.estimate", "stream.publish")
SHELLS = ("stream.worker", "stream.web", "stream.local", "stream.cli", "stream.app")
FRAMEWORKS = ("faust", "mode", "aiohttp")
ENTRY_SHIMS = ("stream.app",)  # `faust -A stream.app worker` needs the CLI's parser


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Project module → the modules it imports (at any depth, also inside functions).

    ``from package import submodule`` counts as importing the submodule only (Python runs the
    package's ``__init__`` for any submodule import; that is not a dependency of its own).
    Imports under ``if TYPE_CHECKING:`` are for annotations and never run: not counted.
    """
    paths = [p for pkg in ("estimators", "stream") for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module(p) for p in paths}
    out: dict[str, set[str]] = {}
    for path in paths:
        names: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for top in ast.walk(tree) if isinstance(top, ast.If)
                       and isinstance(top.test, ast.Name) and top.test.id == "TYPE_CHECKING"
                       for stmt in top.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules
                names.update(subs)
                if len(subs) < len(node.names):
                    names.add(node.module)
        out[_module(path)] = names
    return out


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_stages_import_no_shell_or_framework() -> None:
    bad = {m: sorted(n for n in names if _within(n, SHELLS + FRAMEWORKS))
           for m, names in _imports().items() if _within(m, STAGES)}
    assert not {m: n for m, n in bad.items() if n}


def test_nothing_imports_the_cli() -> None:
    bad = {m: sorted(n for n in names if _within(n, ("stream.cli",)))
           for m, names in _imports().items() if not _within(m, ("stream.cli", *ENTRY_SHIMS))}
    assert not {m: n for m, n in bad.items() if n}


def test_only_the_worker_imports_faust_and_only_the_web_aiohttp() -> None:
    for m, names in _imports().items():
        if any(_within(n, ("faust", "mode")) for n in names):
            assert _within(m, ("stream.worker",)), m
        if any(_within(n, ("aiohttp",)) for n in names):
            assert _within(m, ("stream.web",)), m


def test_estimators_import_nothing_from_stream() -> None:
    bad = {m: sorted(n for n in names if _within(n, ("stream",)))
           for m, names in _imports().items() if _within(m, ("estimators",))}
    assert not {m: n for m, n in bad.items() if n}


def test_no_import_cycle() -> None:
    graph = _imports()
    edges = {m: {n for n in names if n in graph and n != m} for m, names in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(edges):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, " -> ".join(cycle)
