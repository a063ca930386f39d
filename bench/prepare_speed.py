"""CPU time of :meth:`PingDecoder.prepare_rows`, the work of a replay's ``defacto-prepare``
thread, on the chunks of a replay's ping file (a benchmark: prints figures, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/prepare_speed.py --dir /tmp/replay-bench [--profile]
    PYTHONPATH=. .venv/bin/python bench/prepare_speed.py --compare OTHER_CHECKOUT [--rounds 2]

The engine and decoder are built as ``defacto replay`` builds them (the reference files of
``--dir``, made by ``bench/replay_speed.py``; its key file). The chunks (of 100,000 rows) of
``pings.jsonl`` are read once and kept, pickled, in ``--cache`` (2.1 GB for that file;
reading is not what is measured); each is then prepared in turn, as the replay's prepare
thread does (the region memo of the engine's cell table filled as it goes), and the thread CPU
time of each ``prepare_rows`` is summed. ``--profile`` prints the cProfile of the prepare
calls. The digest covers everything ``prepare_rows`` hands on: every group's rows, reasons,
plan rows, times, MCCs, positions, location keys and border flags, device keys and draw
hashes, and the rejects.

``--compare DIR`` runs this script ``--rounds`` times with this checkout and with ``DIR``
(``PYTHONPATH``), interleaved (this, other, this, other ...), each in a fresh process, and
prints each run's CPU time and digest (the same digest: the same output).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pickle
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _chunks(d: Path, cache: Path) -> list[Path]:
    """The pickled chunks of ``d``'s ping file, made on first use."""
    if not (cache / "done").exists():
        from stream.sources.columnar_files import read_columns

        cache.mkdir(parents=True, exist_ok=True)
        for i, chunk in enumerate(read_columns([d / "pings.jsonl"])):
            with open(cache / f"{i:05d}.pkl", "wb") as fh:
                pickle.dump(chunk, fh, protocol=pickle.HIGHEST_PROTOCOL)
        (cache / "done").write_text("")
    return sorted(cache.glob("*.pkl"))


def _digest(h: Any, prepared: Any) -> None:
    for g in prepared.groups:
        for name in ("rows", "reason", "plan_row", "is_cell", "ts", "mcc", "lat", "lon",
                     "point_key", "point_border", "_keys", "_draws"):
            v = getattr(g, name, None)
            h.update(name.encode())
            if v is not None:
                h.update(np.ascontiguousarray(v).tobytes())
    for r in prepared.rejects:
        h.update(repr(r).encode())


def run(d: Path, cache: Path, profile: bool) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from replay_speed import _paths

    from stream.cli.offline import ReplayConfig
    from stream.decode.validate import PingDecoder
    from stream.estimate.engine_options import build_engine
    from stream.sources.key_file import load_pseudonym_key
    from stream.sources.reference_files import load_reference

    files = _chunks(d, cache)
    config = ReplayConfig(pings=(d / "pings.jsonl",), reference=_paths(d), key_file=d / "key")
    engine = build_engine(config.engine, load_reference(config.reference))
    decoder = PingDecoder(engine, load_pseudonym_key(config.key_file),
                          config.windows.max_future_ms)
    prof = cProfile.Profile() if profile else None
    h = hashlib.sha256()
    cpu = 0.0
    rows = 0
    for f in files:
        with open(f, "rb") as fh:
            chunk = pickle.load(fh)
        t0 = time.thread_time()
        if prof is not None:
            prof.enable()
        prepared = decoder.prepare_rows(chunk)
        if prof is not None:
            prof.disable()
        cpu += time.thread_time() - t0
        rows += len(chunk)
        _digest(h, prepared)
    points = engine.cells.points
    print(f"prepare_rows: {cpu:.3f} CPU-s for {rows:,} rows in {len(files)} chunks "
          f"({1e9 * cpu / max(rows, 1):.0f} ns/row); positions tested one by one: "
          f"{points.tested:,}; digest {h.hexdigest()[:16]}")
    if prof is not None:
        st = pstats.Stats(prof)
        st.sort_stats("tottime").print_stats(30)
        st.sort_stats("cumulative").print_stats(45)


def compare(other: Path, rounds: int, argv: list[str]) -> None:
    here = str(ROOT)
    for r in range(rounds):
        for name, path in (("this", here), ("other", str(other))):
            env = {**os.environ, "PYTHONPATH": path, "DEFACTO_CACHE_DIR": "off"}
            out = subprocess.run([sys.executable, __file__, *argv], env=env, check=True,
                                 capture_output=True, text=True, timeout=1800).stdout.strip()
            print(f"round {r} {name:5s} load {os.getloadavg()[0]:.2f}: {out}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="/tmp/replay-bench")
    p.add_argument("--cache", default="/tmp/prepare-speed-chunks")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--compare", default=None, help="another checkout, run interleaved")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    if args.compare:
        compare(Path(args.compare), args.rounds, ["--dir", args.dir, "--cache", args.cache])
        return
    os.environ.setdefault("DEFACTO_CACHE_DIR", "off")
    run(Path(args.dir), Path(args.cache), args.profile)


if __name__ == "__main__":
    main()
