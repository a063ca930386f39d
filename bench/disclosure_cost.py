"""What disclosure control hides on the astana simulation (a benchmark: prints, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/disclosure_cost.py [--scale 0.01] [--k 15]

Simulates one day of the ``astana`` scenario, takes the engine's estimate at its end (no
calibration: one person per device) and prints, per published resolution, how many cells and
devices primary suppression hides (cells under k devices) and how many with the complementary
suppression of ``estimators/disclosure.py`` on top, plus the time the estimate takes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.h3vec import cell_to_parent
from estimators.regions import regions_from_geojson
from stream.simulator import simulate
from stream.sources.simulation import SimulationFeed


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
    cells, inverse = np.unique(tally.present_cell, return_inverse=True)
    devices = np.bincount(inverse.reshape(-1), tally.present_count.astype(np.float64))
    print(f"astana scale {args.scale}, k = {args.k}: {int(devices.sum()):,} devices present; "
          f"estimate with disclosure control {took * 1000:.0f} ms; "
          f"unresolved groups {est.unresolved_groups}")
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
