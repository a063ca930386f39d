"""Dump every scored hour of the robustness suite for offline interval studies (a benchmark).

    python bench/interval_dump.py --seed S [--variants a,b] [--out /tmp/idump]

Runs each variant as ``bench/accuracy.py --suite`` does (scale 0.05, 4 days, calibrated on day 1
at the default estimate settings) and pickles, per variant, the regions, the calibration rows,
the resolved factors, and for every hour end after day 1 the canonical tally and the truth, to
``OUT/SEED/VARIANT.pkl``. Everything the interval may use is a function of these (the tally and
the calibration); the truth is there to score it.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time

from estimators.calibration import Calibration
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.regions import regions_from_geojson
from estimators.units import DAY_MS
from stream.simulator import simulate
from stream.simulator.scenario import load_scenario
from stream.sources.simulation import SimulationFeed


def dump(scenario: str, variant: str, seed: int, scale: float, days: float, out: str) -> float:
    """Simulate one variant and pickle its tallies, calibration and truth; returns seconds."""
    t0 = time.perf_counter()
    sc = load_scenario(f"{scenario}:{variant}")
    sim = simulate(sc, scale=scale, days=days, seed=seed)
    regions = regions_from_geojson(sim.regions_geojson)
    engine = Engine(regions, EngineConfig(res=8, estimate=EstimateConfig()))
    feed = SimulationFeed(sim, engine, b"bench-accuracy-secret-key-000000")
    cal_end = sim.start_ms + DAY_MS
    hours, rows = [], []
    for hour in feed.hours():
        if hour.end_ms == cal_end:
            rows = engine.fit_calibration(cal_end, sim.reference, 0.0)
            engine.set_calibration(Calibration(rows))
        if hour.end_ms <= cal_end:
            continue
        hours.append((hour.end_ms, engine.tally(hour.end_ms), hour.truth))
    path = os.path.join(out, str(seed), f"{variant}.pkl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"regions": regions, "rows": rows, "hours": hours,
                     "utc_offset_h": sc.utc_offset_h, "reference": sim.reference,
                     "scale": scale}, f)
    return time.perf_counter() - t0


def main() -> None:
    """Dump the listed variants (all by default) at one seed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="astana")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--days", type=float, default=4.0)
    ap.add_argument("--variants", default="")
    ap.add_argument("--out", default="/tmp/idump")
    args = ap.parse_args()
    names = (args.variants.split(",") if args.variants
             else list(load_scenario(args.scenario).variants))
    for name in names:
        s = dump(args.scenario, name, args.seed, args.scale, args.days, args.out)
        print(f"seed {args.seed} {name}: {s:.0f} s", flush=True)


if __name__ == "__main__":
    main()
