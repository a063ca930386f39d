"""Exact regions (issue 13): binning speed and district accuracy (prints figures, asserts nothing).

    python bench/exact_regions.py speed [--n 1000000]
    python bench/exact_regions.py astana [--scale 0.01] [--days 3] [--seed 1]
        [--state-reference-rse [--no-pool]] [--exact-reference]
    python bench/exact_regions.py reference [--scale 0.05] [--seeds 20]

``speed``: lat/lon positions -> location numbers per second on one core, for the region of
each position (``CellTable.locate_latlng``) against the region of its res-8 cell's centre (the
rule before issue 13, ``CellTable.locate`` without regions), on three sets: the positions of
bench/engine_speed.py (GPS-like noise around 12 cities, four big regions), the same number of
positions with GPS-like noise over simulated Astana's districts, and Astana again with
positions repeating (homes, offices: 50 k distinct places). Each set is binned twice in one
table (cold memos, then warm).

``astana``: simulates the scenario, replays it through one engine (calibrated on day 1
against the scenario's reference, as ``defacto demo --offline``) and prints, for every
district at the last hour, the resident estimate and resident devices against the truth, and
the floor the cell plan sets: the share of each district's residents whose home ping (their
serving tower, or their reported position) lies in another district. The script runs against
whatever ``estimators`` is on the path, so the same command in a checkout of the old code
gives the "before" column. ``--exact-reference``: the scenario's reference drawn without its
census error (``reference_rse`` 0): what the estimator reaches when the figures it is
calibrated to are the truth.

``reference``: the scenario's reference population itself against the true residents per
Astana district, for ``--seeds`` seeds (1..N): how often a figure calibrated to reproduce it
exactly could be within 0.5 % of the truth (the census error the scenario draws,
``reference_rse``, is what the "resident per district within 0.5 %" goal meets first).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np

from estimators.calibration import Calibration, shrink_factors
from estimators.cells import CellTable
from estimators.engine import Engine, EngineConfig
from estimators.h3vec import latlng_to_cell
from estimators.regions import RegionSet, regions_from_geojson
from estimators.units import DAY_MS
from stream.simulator import Simulation, load_scenario, simulate
from stream.sources.simulation import SimulationFeed

CITIES = np.array([[51.17, 71.45], [43.24, 76.89], [42.32, 69.59], [49.81, 73.09],
                   [50.28, 57.17], [52.29, 76.95], [49.95, 82.61], [47.11, 51.92],
                   [43.65, 51.17], [44.85, 65.51], [53.21, 63.62], [42.90, 71.37]])


def _astana_regions() -> tuple[RegionSet, dict]:
    sim = simulate(load_scenario("astana"), scale=0.001, days=0.05, seed=1)
    return regions_from_geojson(sim.regions_geojson), sim.regions_geojson


def _time(regions: RegionSet, lat: np.ndarray, lon: np.ndarray, exact: bool) -> list[float]:
    table = CellTable(regions, 8)
    out = []
    for _ in range(2):
        t0 = time.perf_counter()
        for lo in range(0, lat.size, 1_000_000):
            s = slice(lo, lo + 1_000_000)
            if exact and hasattr(table, "locate_latlng"):
                table.locate_latlng(lat[s], lon[s])
            else:
                table.locate(latlng_to_cell(lat[s], lon[s], 8))
        out.append(lat.size / (time.perf_counter() - t0))
    return out


def speed(n: int) -> None:
    """Print the speed table."""
    from bench.engine_speed import synthetic_regions
    rng = np.random.default_rng(0)
    city = rng.integers(0, len(CITIES), size=n)
    sets = {"engine_speed": (synthetic_regions(), CITIES[city, 0] + rng.normal(0, 0.08, n),
                             CITIES[city, 1] + rng.normal(0, 0.12, n))}
    astana, _ = _astana_regions()
    sets["astana noisy"] = (astana, 51.17 + rng.normal(0, 0.06, n), 71.45 + rng.normal(0, 0.09, n))
    places = np.column_stack([51.17 + rng.normal(0, 0.06, 50_000),
                              71.45 + rng.normal(0, 0.09, 50_000)])
    pick = places[rng.integers(0, 50_000, n)]
    sets["astana repeated"] = (astana, pick[:, 0], pick[:, 1])
    print(f"lat/lon binning, one core (pid {os.getpid()}), {n:,} positions, res 8, batches of 1 M")
    print(f"{'set':<16} {'rule':<8} {'cold pos/s':>12} {'warm pos/s':>12} {'tested 1 by 1':>14}")
    for name, (regions, lat, lon) in sets.items():
        for rule, exact in (("centre", False), ("exact", True)):
            cold, warm = _time(regions, lat, lon, exact)
            tested = ""
            if exact:
                table = CellTable(regions, 8)
                if hasattr(table, "points"):
                    table.locate_latlng(lat, lon)
                    tested = f"{table.points.tested / n:.1%}"
            print(f"{name:<16} {rule:<8} {cold:>12,.0f} {warm:>12,.0f} {tested:>14}")


def astana(scale: float, days: float, seed: int, state_reference_rse: bool = False,
           pool: bool = True, calibration_days: float = 1.0, exact_reference: bool = False) -> None:
    """Print resident per district against the truth at the last hour; the calibration states
    the scenario's reference error with ``state_reference_rse`` (and then pools sibling
    districts' factors unless not ``pool``, as ``calibrate --reference-rse``); the factors are
    fitted at the end of the first ``calibration_days``; ``exact_reference``: the scenario's
    reference without its census error."""
    t0 = time.perf_counter()
    scenario = load_scenario("astana")
    if exact_reference:
        scenario = replace(scenario, reference_rse=0.0)
    sim = simulate(scenario, scale=scale, days=days, seed=seed)
    regions = regions_from_geojson(sim.regions_geojson)
    engine = Engine(regions, EngineConfig(res=8))
    feed = SimulationFeed(sim, engine, b"bench-exact-regions-secret-00000")
    cal_end = sim.start_ms + round(calibration_days * DAY_MS)
    last = None
    n = 0
    for hour in feed.hours():
        n += hour.pings
        if hour.end_ms == cal_end:
            rse = sim.scenario.reference_rse if state_reference_rse else 0.0
            rows = engine.fit_calibration(cal_end, sim.reference, rse)
            engine.set_calibration(Calibration(shrink_factors(regions, rows, rse) if pool
                                               else rows))
        last = hour
    assert last is not None
    est = engine.estimate(last.end_ms)
    floor = _floor(sim, regions)
    exact = hasattr(engine.cells, "points")
    print(f"astana scale {scale} days {days} seed {seed}: {n:,} pings, "
          f"{time.perf_counter() - t0:.0f} s, rule {'exact' if exact else 'centre'}, reference "
          f"error {sim.scenario.reference_rse:g}; "
          f"reference regions {sorted(sim.reference)}")
    print(f"{'region':<18} {'true':>9} {'resident':>9} {'error':>7} {'devices':>8} "
          f"{'floor':>7}")
    for i, rid in enumerate(regions.ids[:-1]):
        true = last.truth.get(rid, {}).get("resident", 0)
        if not true:
            continue
        err = est.resident[i] / true - 1
        print(f"{rid:<18} {true:>9,} {est.resident[i]:>9,.0f} {err:>+7.2%} "
              f"{est.resident_devices[i]:>8,.0f} {floor.get(rid, float('nan')):>+7.2%}")


def _floor(sim: Simulation, regions: RegionSet) -> dict[str, float]:
    """Per region: (residents whose home position, as pinged, lies in it) / (true residents) - 1,
    over the devices of cell-reporting operators (their serving tower's point) and of lat/lon
    ones (their home, without noise): what an exact binning of the pings can reach at best."""
    p = sim._dev_person
    resident = p < sim.people.n_residents
    home_leaf = sim.people.home_leaf[p[resident]]
    rows = sim._dev_home_cell[resident]
    plan = sim.cell_plan
    lat = np.where(rows >= 0, plan["lat"][np.maximum(rows, 0)], sim.people.home_lat[p[resident]])
    lon = np.where(rows >= 0, plan["lon"][np.maximum(rows, 0)], sim.people.home_lon[p[resident]])
    where = regions.locate(lat, lon)
    truth = np.array([regions.index[sim.leaf_ids[leaf]] for leaf in home_leaf.tolist()])
    out = {}
    for i, rid in enumerate(regions.ids[:-1]):
        below = regions.subtree[i]
        true = int(below[truth].sum())
        if true:
            out[rid] = int(below[where].sum()) / true - 1
    return out


def reference_draws(scale: float, seeds: int) -> None:
    """Print, per seed, the reference's error per Astana district against the true residents
    at the start, and how often it is within 0.5 %."""
    scenario = load_scenario("astana")
    errors = []
    all_within = 0
    for seed in range(1, seeds + 1):
        sim = simulate(scenario, scale=scale, days=0.05, seed=seed)
        people = sim.people
        true = np.bincount(people.home_leaf[:people.n_residents], minlength=len(sim.leaf_ids))
        line = []
        for leaf, rid in enumerate(sim.leaf_ids):
            if rid.startswith("astana-") and rid in sim.reference and true[leaf]:
                line.append((rid[7:], sim.reference[rid] / true[leaf] - 1))
        errors += [e for _, e in line]
        all_within += all(abs(e) < 0.005 for _, e in line)
        print(f"seed {seed:>2}: " + "  ".join(f"{name} {e:+.2%}" for name, e in line))
    err = np.array(errors)
    print(f"reference_rse {scenario.reference_rse:g}, scale {scale:g}, {seeds} seeds: "
          f"{np.mean(np.abs(err) < 0.005):.0%} of district draws within 0.5 % of the truth, "
          f"all five in {all_within} of {seeds} seeds, rms {np.sqrt(np.mean(err ** 2)):.2%}")


def main() -> None:
    """Run the chosen part."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["speed", "astana", "reference"])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--scale", type=float, default=0.01)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=20, help="reference: seeds 1..N")
    ap.add_argument("--state-reference-rse", action="store_true",
                    help="astana: calibrate stating the scenario's reference error (pools "
                         "sibling districts' factors)")
    ap.add_argument("--no-pool", action="store_true", help="with --state-reference-rse")
    ap.add_argument("--calibration-days", type=float, default=1.0,
                    help="astana: fit the factors at the end of this many days (default 1)")
    ap.add_argument("--exact-reference", action="store_true",
                    help="astana: the scenario's reference without its census error")
    args = ap.parse_args()
    if args.what == "speed":
        speed(args.n)
    elif args.what == "reference":
        reference_draws(args.scale, args.seeds)
    else:
        astana(args.scale, args.days, args.seed, args.state_reference_rse, not args.no_pool,
               args.calibration_days, args.exact_reference)


if __name__ == "__main__":
    main()
