"""Border cells: accuracy per variant and hour bucket under each footprint rule (a benchmark).

    python bench/footprints.py [--variants base,uneven-regions,...] [--rules reference,site]
        [--scale 0.05] [--days 4] [--regions]

Runs :func:`bench.accuracy.run`'s protocol (simulate, calibrate on day 1, snapshot every later
hour end at the default estimate settings) once per variant and footprint rule (``--footprints``,
:data:`estimators.footprints.RULES`; ``reference`` spreads by the simulation's independent
reference population, as :class:`SimulationFeed` does by default, and so as
``bench/accuracy.py`` runs) and prints the suite's table per rule; with
``--regions``, also the mean signed error (%) of present per scored region and bucket, which
shows where a rule moves people across a border.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from bench.accuracy import BUCKETS, HEADER, Run, bucket_key, bucket_rows, fmt, worst
from estimators.calibration import Calibration
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.regions import regions_from_geojson
from estimators.units import DAY_MS
from stream.publish.snapshot import build_snapshot
from stream.simulator import simulate
from stream.simulator.scenario import load_scenario
from stream.sources.simulation import SimulationFeed
from stream.timefmt import iso_utc


def run(scenario: str, rule: str, scale: float, days: float, seed: int, res: int = 8) -> Run:
    """:func:`bench.accuracy.run` at the default estimate settings with footprint ``rule``."""
    t0 = time.perf_counter()
    sc = load_scenario(scenario)
    sim = simulate(sc, scale=scale, days=days, seed=seed)
    regions = regions_from_geojson(sim.regions_geojson)
    engine = Engine(regions, EngineConfig(res=res, estimate=EstimateConfig()))
    feed = SimulationFeed(sim, engine, b"bench-accuracy-secret-key-000000", footprints=rule)
    cal_end = sim.start_ms + DAY_MS
    snaps: list[dict] = []
    truth: dict[str, dict] = {}
    n_pings = 0
    for hour in feed.hours():
        n_pings += hour.pings
        if hour.end_ms == cal_end:
            engine.set_calibration(Calibration(engine.fit_calibration(cal_end, sim.reference)))
        if hour.end_ms <= cal_end:
            continue
        truth[iso_utc(hour.end_ms)] = hour.truth
        snaps.append(build_snapshot(engine.estimate(hour.end_ms), regions, engine.cells.res,
                                    sim.registry))
    return Run(scenario, len(sim.device_name), n_pings, time.perf_counter() - t0,
               sc.utc_offset_h, {"x": snaps}, truth)


def signed_errors(r: Run, min_true: float) -> dict[str, dict[str, float]]:
    """Mean signed error (%) of present per region and bucket (regions >= ``min_true``)."""
    key = bucket_key(r.utc_offset_h)
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for snap in r.snaps["x"]:
        t_all = r.truth.get(snap["at"])
        if t_all is None:
            continue
        for rid, est in snap["regions"].items():
            t = t_all.get(rid)
            if t is None or min(t["present"], t["resident"]) < min_true or est["present"] is None:
                continue
            acc[rid][key(snap["at"])].append(100.0 * (est["present"] - t["present"])
                                             / t["present"])
    return {rid: {b: float(np.mean(v)) for b, v in by.items()} for rid, by in acc.items()}


def main() -> None:
    """Run every (rule, variant) pair and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="astana")
    ap.add_argument("--variants", default="", help="these variants only (a,b,c; default all)")
    ap.add_argument("--rules", default="reference,site")
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--days", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-people", type=float, default=50_000)
    ap.add_argument("--regions", action="store_true", help="print signed errors per region")
    args = ap.parse_args()
    min_true = args.min_people * args.scale
    for rule in args.rules.split(","):
        print(f"== footprints {rule}: {args.scenario} scale {args.scale} days {args.days} "
              f"seed {args.seed}, regions >= {args.min_people:,.0f} people")
        print(HEADER)
        table = {}
        names = (args.variants.split(",") if args.variants
                 else list(load_scenario(args.scenario).variants))
        for name in names:
            r = run(f"{args.scenario}:{name}", rule, args.scale, args.days, args.seed)
            table[name] = bucket_rows(r, "x", min_true)
            for b in (*BUCKETS, "all"):
                if b in table[name]:
                    print(fmt(name, b, table[name][b]))
            print(f"{'':<16} ({r.devices:,} devices, {r.pings:,} pings, {r.seconds:.0f} s)",
                  flush=True)
            if args.regions:
                for rid, by in sorted(signed_errors(r, min_true).items()):
                    cells = " ".join(f"{b} {by.get(b, float('nan')):+6.2f}%" for b in BUCKETS)
                    print(f"    {rid:<18} present signed error: {cells}")
        for b, a in worst(table).items():
            print(fmt("WORST", b, a))


if __name__ == "__main__":
    main()
