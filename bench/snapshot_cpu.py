"""CPU of a replay's snapshot thread alone, on tallies captured once (a benchmark: prints
figures, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/snapshot_cpu.py capture --dir /tmp/replay-bench \
        --tallies /tmp/snapcpu/tallies.pkl
    PYTHONPATH=. .venv/bin/python bench/snapshot_cpu.py run --dir /tmp/replay-bench \
        --tallies /tmp/snapcpu/tallies.pkl --out /tmp/snapcpu/new

``capture`` runs ``defacto replay`` on ``DIR/pings.jsonl`` (as ``bench/replay_speed.py``'s
``replay`` contender, plus a flows file) and pickles every tally the snapshot thread receives,
with the replay's snapshots and flows written beside the pickle (``snapshots.jsonl``,
``flows.jsonl``). ``run`` builds a fresh engine for the same reference files and does what the
snapshot thread does (``stream.cli.offline._replay``'s ``write`` and the flows writer's close)
on every captured tally, ``--rounds`` times, printing this thread's CPU seconds per round (the
median too) split into estimate, snapshot, foreign line, JSON and flows; the outputs of the
last round go to ``OUT/snapshots.jsonl`` and ``OUT/flows.jsonl``, to compare byte for byte with
the replay's and another code's. Run it with ``PYTHONPATH`` at the code to measure (a
worktree): the script only uses interfaces both sides share.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import time
from pathlib import Path
from typing import Any


def _paths(d: Path) -> Any:
    from stream.sources.reference_files import ReferencePaths

    return ReferencePaths(regions=d / "regions.geojson", cells=d / "cells.csv",
                          registry=d / "registry.csv")


def capture(d: Path, tallies: Path) -> None:
    from estimators.engine import Engine
    from stream.cli import offline

    seen: list[bytes] = []
    estimate_tally = Engine.estimate_tally

    def recording(self: Engine, tally: Any) -> Any:
        seen.append(pickle.dumps(tally, protocol=pickle.HIGHEST_PROTOCOL))
        return estimate_tally(self, tally)

    Engine.estimate_tally = recording  # type: ignore[method-assign]
    out = tallies.parent
    config = offline.ReplayConfig(pings=(d / "pings.jsonl",), reference=_paths(d),
                                  key_file=d / "key", out=out / "snapshots.jsonl",
                                  flows_out=out / "flows.jsonl", rejects=out / "rejects.jsonl")
    result = offline.run_replay(config)
    with open(tallies, "wb") as fh:
        pickle.dump(seen, fh, protocol=pickle.HIGHEST_PROTOCOL)
    print(f"{result.snapshots} snapshots, {len(seen)} tallies pickled to {tallies}")


def run(d: Path, tallies: Path, out: Path, rounds: int) -> None:
    from stream.cli import offline
    from stream.estimate.engine_options import EngineOptions, build_engine
    from stream.publish.foreign import add_foreign_line
    from stream.publish.snapshot import engine_snapshot
    from stream.sources.reference_files import load_reference

    reference = load_reference(_paths(d))
    engine = build_engine(EngineOptions(), reference)
    with open(tallies, "rb") as fh:
        blobs = pickle.load(fh)
    out.mkdir(parents=True, exist_ok=True)
    stages = ("estimate", "snapshot", "foreign", "json", "flows")
    totals: list[dict[str, float]] = []
    for r in range(rounds):
        last = r == rounds - 1
        spent = dict.fromkeys(stages, 0.0)
        snaps = open(out / "snapshots.jsonl", "w") if last else None
        flows = offline.FlowsWriter(out / "flows.jsonl" if last else None, engine,
                                    engine.config.estimate.k_anonymity)
        clock = time.thread_time
        for blob in blobs:
            tally = pickle.loads(blob)  # afresh each round: an estimate writes into its tally
            t0 = clock()
            estimate = engine.estimate_tally(tally)
            t1 = clock()
            snap = engine_snapshot(engine, tally.at_ms, reference.registry, estimate, tally,
                                   cells_as_json=True)
            t2 = clock()
            add_foreign_line(snap, flows.foreign_line(tally))
            t3 = clock()
            line = offline.json_line(snap)
            if snaps is not None:
                snaps.write(line)
            t4 = clock()
            flows.add(tally, estimate)
            t5 = clock()
            for s, a, b in zip(stages, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5), strict=True):
                spent[s] += b - a
        t0 = clock()
        flows.close()
        spent["flows"] += clock() - t0
        if snaps is not None:
            snaps.close()
        totals.append(spent)
        print(f"round {r + 1}: {sum(spent.values()):.3f} CPU-s  "
              + "  ".join(f"{s} {v:.3f}" for s, v in spent.items()), flush=True)
    med = {s: statistics.median(t[s] for t in totals) for s in stages}
    print(f"median of {rounds}: {statistics.median(sum(t.values()) for t in totals):.3f} CPU-s  "
          + "  ".join(f"{s} {v:.3f}" for s, v in med.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("capture", "run"))
    p.add_argument("--dir", type=Path, default=Path("/tmp/replay-bench"))
    p.add_argument("--tallies", type=Path, required=True)
    p.add_argument("--out", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("DEFACTO_CACHE_DIR", "off")
    if args.mode == "capture":
        args.tallies.parent.mkdir(parents=True, exist_ok=True)
        capture(args.dir, args.tallies)
    else:
        run(args.dir, args.tallies, args.out, args.rounds)


if __name__ == "__main__":
    main()
