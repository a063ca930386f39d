"""Accuracy against the simulator's truth (a benchmark: prints figures, asserts nothing).

    python bench/accuracy.py [--scenario astana|kz] [--scale S] [--days D] [--horizons 1h,6h]

Simulates a scenario in memory, fits calibration factors at the end of day 1 against the
scenario's independent reference population, keeps feeding the remaining days and, at every hour
end after day 1, compares present and resident per region with the truth, for each horizon in
the sweep (the device state does not depend on the horizon, so one run serves them all).
Scored: regions with at least --min-true true people (default 50 000, in simulated people).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from estimators.accuracy import score
from estimators.calibration import Calibration
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.regions import regions_from_geojson
from estimators.units import DAY_MS, HOUR_MS
from stream.publish.snapshot import build_snapshot
from stream.simulator import load_scenario, simulate
from stream.sources.simulation import SimulationFeed
from stream.timefmt import iso_utc, parse_duration_ms


def main() -> None:
    """Run the sweep and print one line per horizon."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="astana")
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--days", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--horizons", default="1h,3h,6h,12h,24h")
    ap.add_argument("--model-rse", type=float, default=EstimateConfig.model_rse)
    ap.add_argument("--min-true", type=float, default=50_000)
    ap.add_argument("--res", type=int, default=8)
    args = ap.parse_args()

    horizons = [parse_duration_ms(h) for h in args.horizons.split(",")]
    t0 = time.perf_counter()
    sim = simulate(load_scenario(args.scenario), scale=args.scale, days=args.days, seed=args.seed)
    regions = regions_from_geojson(sim.regions_geojson)
    base = EstimateConfig(model_rse=args.model_rse)
    engine = Engine(regions, EngineConfig(res=args.res, estimate=base))
    feed = SimulationFeed(sim, engine, b"bench-accuracy-secret-key-000000")
    cal_end = sim.start_ms + DAY_MS
    snaps: dict[int, list[dict]] = {h: [] for h in horizons}
    truth: dict[str, dict] = {}
    n_pings = 0
    for hour in feed.hours():
        n_pings += hour.pings
        if hour.end_ms == cal_end:
            rows = engine.fit_calibration(cal_end, sim.reference)
            engine.set_calibration(Calibration(rows))
        if hour.end_ms <= cal_end:
            continue
        truth[iso_utc(hour.end_ms)] = hour.truth
        for h in horizons:
            engine.config = replace(engine.config, estimate=replace(base, horizon_ms=h))
            est = engine.estimate(hour.end_ms)
            snaps[h].append(build_snapshot(est, regions, engine.cells.res, sim.registry))
    secs = time.perf_counter() - t0
    print(f"{args.scenario} scale {args.scale} days {args.days} seed {args.seed}: "
          f"{len(sim.device_name):,} devices, {n_pings:,} pings, {secs:.0f} s; "
          f"calibrated on day 1, scored {len(truth)} hours, regions >= {args.min_true:,.0f} "
          f"true people, model_rse {args.model_rse}")
    for h in horizons:
        try:
            acc = score(snaps[h], truth, args.min_true)
        except ValueError as exc:
            print(f"horizon {h / HOUR_MS:>5.1f} h: {exc}")
            continue
        print(f"horizon {h / HOUR_MS:>5.1f} h: {acc.line()}")


if __name__ == "__main__":
    main()
