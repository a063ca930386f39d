"""What disclosure control hides on the astana simulation (a benchmark: prints, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/disclosure_cost.py [--scale 0.01] [--k 15]

Simulates one day of the ``astana`` scenario, takes the engine's estimate at its end (no
calibration: one person per device) and prints, per published resolution, how many cells and
devices primary suppression hides (cells under k devices) and how many with the complementary
suppression of ``estimators/disclosure.py`` on top, the present region figures hidden (primary,
with complements), the cells a region border splits, and the time the estimate and the
complementary suppression alone (best of 5) take.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from estimators.disclosure import cell_levels, complementary_suppression
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.h3vec import cell_to_parent
from estimators.regions import regions_from_geojson
from estimators.tally import Tally
from stream.simulator import simulate
from stream.sources.simulation import SimulationFeed


def _time_suppression(engine: Engine, tally: Tally) -> float:
    """Seconds one ``complementary_suppression`` call takes on this tally (best of 5)."""
    cfg = engine.config
    cells, inverse = np.unique(tally.present_cell, return_inverse=True)
    counts = tally.present_count.astype(np.float64)
    devices = np.bincount(inverse.reshape(-1), counts)
    n_reg = len(engine.regions.ids)
    part, part_inv = np.unique(inverse.reshape(-1) * n_reg + tally.present_region,
                               return_inverse=True)
    part_devices = np.bincount(part_inv.reshape(-1), counts)
    region_devices = engine.regions.subtree.astype(np.float64) @ np.bincount(
        tally.present_region, counts, n_reg)
    best = float("inf")
    for _ in range(5):
        levels = cell_levels(cfg.res, cells, devices.copy(), devices.copy(), cfg.coarse_res)
        t = time.perf_counter()
        complementary_suppression(levels, part // n_reg, part % n_reg, part_devices,
                                  engine.regions.parent_index,
                                  region_devices >= cfg.estimate.k_anonymity,
                                  cfg.estimate.k_anonymity)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    """Print hidden cells and devices per resolution, primary vs with complements."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.01)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()
    sim = simulate("astana", scale=args.scale, days=1, seed=args.seed)
    engine = Engine(regions_from_geojson(sim.regions_geojson),
                    EngineConfig(res=8, estimate=EstimateConfig(k_anonymity=args.k)))
    last = 0
    for hour in SimulationFeed(sim, engine, b"bench-disclosure-key-0123456789ab").hours():
        last = hour.end_ms
    tally = engine.tally(last)
    t = time.perf_counter()
    est = engine.estimate_tally(tally)
    took = time.perf_counter() - t
    took_cs = _time_suppression(engine, tally)
    cells, inverse = np.unique(tally.present_cell, return_inverse=True)
    devices = np.bincount(inverse.reshape(-1), tally.present_count.astype(np.float64))
    print(f"astana scale {args.scale}, k = {args.k}: {int(devices.sum()):,} devices present; "
          f"estimate with disclosure control {took * 1000:.0f} ms "
          f"(of which complementary suppression {took_cs * 1000:.1f} ms); "
          f"unresolved groups {est.unresolved_groups}")
    n_reg = len(engine.regions.ids)
    reg_dev = engine.regions.subtree.astype(np.float64) @ np.bincount(
        tally.present_region, tally.present_count.astype(np.float64), n_reg)
    split = np.bincount(np.unique(inverse.reshape(-1) * n_reg + tally.present_region) // n_reg)
    print(f"regions hidden: primary {int((reg_dev < args.k).sum())}, with complements "
          f"{int(np.isnan(est.present_devices).sum())} of {n_reg}; cells a border splits: "
          f"{int((split > 1).sum())} of {cells.size}")
    print(f"{'res':>4} {'cells':>7} {'primary cells':>14} {'devices':>9} {'+complements cells':>19} "
          f"{'devices':>9} {'share of devices hidden':>24}")
    for res, (_, present) in sorted([*est.coarse_cells.items(), (8, (est.cell_id, est.cell_present))]):
        ids, parent = np.unique(cell_to_parent(cells, res) if res < 8 else cells, return_inverse=True)
        dev = np.bincount(parent.reshape(-1), devices)
        primary = dev < args.k
        hidden = np.isnan(present)
        share = f"{100 * dev[primary].sum() / dev.sum():.1f} % -> {100 * dev[hidden].sum() / dev.sum():.1f} %"
        print(f"{res:>4} {ids.size:>7,} {int(primary.sum()):>14,} {int(dev[primary].sum()):>9,} "
              f"{int(hidden.sum()):>19,} {int(dev[hidden].sum()):>9,} {share:>24}")


if __name__ == "__main__":
    main()
