"""``defacto replay``/``calibrate`` parse without importing the live and demo modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stream.cli import OFFLINE_COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[2]


def _loaded(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``code``."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         check=True, cwd=ROOT).stdout.strip().splitlines()[-1]
    return json.loads(out)


def test_an_offline_command_imports_neither_live_nor_demo_modules() -> None:
    code = ("from stream.cli import build_parser\n"
            "build_parser('replay').parse_args(['replay', 'p.jsonl', '--key-file', 'k',"
            " '--regions', 'r.geojson'])")
    assert _loaded(code, ("stream.cli.live", "stream.cli.demo", "stream.cli.offline")) == \
        ["stream.cli.offline"]


def test_the_one_command_parser_parses_as_the_whole_one() -> None:
    for argv in (["replay", "a.jsonl", "b.jsonl", "--key-file", "k", "--regions", "r.geojson",
                  "--every", "30m"],
                 ["calibrate", "a.jsonl", "--key-file", "k", "--reference", "r.csv",
                  "--regions", "r.geojson", "--out", "c.csv"]):
        assert argv[0] in OFFLINE_COMMANDS
        whole = vars(build_parser().parse_args(argv))
        one = vars(build_parser(argv[0]).parse_args(argv))
        assert {k: v for k, v in one.items() if k != "func"} == \
            {k: v for k, v in whole.items() if k != "func"}
        assert one["func"] is whole["func"]


def test_the_command_starts_its_reading_process_before_any_heavy_import() -> None:
    """:func:`stream.cli.main` starts the reading process of replay and calibrate first; the
    modules it needs for that are the standard library's (else the start would wait for them)."""
    assert _loaded("import stream.cli, stream.decode.child_start",
                   ("numpy", "polars", "stream.contract", "estimators")) == []
