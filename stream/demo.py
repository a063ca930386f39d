"""``defacto demo``: the main job end to end on built-in defaults.

simulate a scenario -> calibrate on its first day against the independent reference population ->
replay all days (the state warms up on day 1) -> print the region table (estimated vs
registered vs true) and the
accuracy against the simulator's truth. Every step is the public CLI, so the demo is also a
worked example of the commands a user runs on real data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from estimators.accuracy import score
from stream.snapshot import iso_utc

DAY_MS = 86_400_000


def _say(text: str) -> None:
    print(f"\n$ {text}", file=sys.stderr)


def simulate_and_calibrate(out: Path, scenario: str, scale: float, days: float, seed: int
                           ) -> tuple[int, Path, str]:
    """``defacto simulate`` into ``out/sim``, then ``defacto calibrate`` on its first day into
    ``out/calibration.csv``; returns (exit code, simulation directory, end of calibration day)."""
    from stream.cli import main

    out.mkdir(parents=True, exist_ok=True)
    sim_dir = out / "sim"
    argv = ["simulate", scenario, "--scale", str(scale), "--days", str(days), "--seed", str(seed),
            "--out", str(sim_dir)]
    _say("defacto " + " ".join(argv))
    if rc := main(argv):
        return rc, sim_dir, ""
    pings = str(sim_dir / "pings.jsonl")
    with open(pings, encoding="utf-8") as fh:
        first_ts = json.loads(fh.readline())["ts"]
    cal_to = iso_utc(first_ts - first_ts % DAY_MS + DAY_MS)
    argv = ["calibrate", pings, "--regions", str(sim_dir / "regions.geojson"),
            "--cells", str(sim_dir / "cells.csv"), "--reference", str(sim_dir / "reference.csv"),
            "--to", cal_to, "--out", str(out / "calibration.csv")]
    _say("defacto " + " ".join(argv))
    return main(argv), sim_dir, cal_to


def run_demo(out: Path, scenario: str, scale: float, days: float, seed: int) -> int:
    """Run the demo in ``out`` and print the final table; returns the exit code."""
    from stream.cli import main

    if days < 2:
        print("defacto: error: the demo needs --days >= 2 (one to calibrate, one to replay)",
              file=sys.stderr)
        return 2
    rc, sim_dir, cal_to = simulate_and_calibrate(out, scenario, scale, days, seed)
    if rc:
        return rc
    pings = str(sim_dir / "pings.jsonl")
    common = ["--regions", str(sim_dir / "regions.geojson"), "--cells", str(sim_dir / "cells.csv")]
    snapshots = out / "snapshots.jsonl"
    argv = ["replay", pings, *common, "--registry", str(sim_dir / "registry.csv"),
            "--calibration", str(out / "calibration.csv"),
            "--out", str(snapshots), "--table", "--truth", str(sim_dir / "truth.jsonl")]
    _say("defacto " + " ".join(argv))
    if rc := main(argv):
        return rc
    truth = {}
    with open(sim_dir / "truth.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            truth[doc["at"]] = doc["regions"]
    with open(snapshots, encoding="utf-8") as fh:
        snaps = [s for s in map(json.loads, fh) if s["at"] > cal_to]
    try:
        acc = score(snaps, truth, min_true=50_000 * scale)
    except ValueError as exc:
        print(f"\naccuracy: {exc}")
    else:
        print("\naccuracy vs truth after the calibration day "
              f"(regions >= {50_000 * scale:,.0f} simulated people, i.e. "
              f"50 k at full scale): {acc.line()}")
    return 0
