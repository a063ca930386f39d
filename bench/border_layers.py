"""Where border cells' devices are placed against where the simulator's towers can serve.

    python bench/border_layers.py [--variant base] [--seed 1] [--scale 0.05] [--region tselinograd]

The simulator serves a cell-id device from the tower layer of the leaf it is in (rural leaves:
the rural grid, urban leaves: the urban grid), whatever tower is nearer. A border cell's
footprint (:mod:`estimators.footprints`) is geometric, so an urban tower at a city's edge has
pieces in the rural ring around it although every device it serves is in the city, and a rural
tower's footprint reaches into the city. This prints, on day 2 of one simulated run, per local
window (day 09-17, night 00-06): the cell-id device-hours (one per device, hour and plan row)
that ``--footprints reference`` places in ``--region`` from rows of the other layer, those it
places out of the region from rows of the region's layer whose footprint covers it, and the
net as % of the device-hours at rows sited in the region. Simulator knowledge: a diagnosis,
not an estimator.
"""

from __future__ import annotations

import argparse

import numpy as np

from estimators.day_footprints import DAY_WINDOW_H, NIGHT_WINDOW_H, is_daytime
from estimators.engine import Engine, EngineConfig
from estimators.footprints import start_rows
from estimators.regions import regions_from_geojson
from estimators.units import DAY_MS, HOUR_MS
from stream.simulator import simulate
from stream.simulator.scenario import load_scenario
from stream.sources.simulation import SimulationFeed


def main() -> None:
    """Simulate two days and print the misplacement per window."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="astana")
    ap.add_argument("--variant", default="base")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--region", default="tselinograd")
    args = ap.parse_args()
    sc = load_scenario(f"{args.scenario}:{args.variant}")
    sim = simulate(sc, scale=args.scale, days=2, seed=args.seed)
    regions = regions_from_geojson(sim.regions_geojson)
    engine = Engine(regions, EngineConfig(res=8))
    SimulationFeed(sim, engine, b"bench-border-layers-secret-00000")
    plan = engine.plan
    assert plan is not None and plan.footprints is not None
    fp = plan.footprints
    target = regions.ids.index(args.region)
    urban = np.array([sc.region(r).urban for r in regions.ids[: regions.n]] + [False])
    rural_row = np.char.startswith(np.asarray(sim.cell_plan["cell"], dtype=str), "R")
    row = start_rows(fp.ptr)
    served = (fp.region == regions.unassigned) | (urban[fp.region] != rural_row[row])
    covers = np.isin(row, np.unique(row[fp.region == target]))
    same_layer = rural_row[row] != urban[target]
    windows = {"day": DAY_WINDOW_H, "night": NIGHT_WINDOW_H}
    hours = {name: np.zeros(len(plan)) for name in windows}
    for chunk in sim.hours():
        if chunk.start_ms < sim.start_ms + DAY_MS:
            continue
        c = chunk.cell >= 0
        ts, r, d = chunk.ts_ms[c], chunk.cell[c].astype(np.int64), chunk.device[c]
        for name, window in windows.items():
            m = is_daytime(ts, engine.utc_offset_s(ts), window)
            key = np.unique(np.stack([d[m].astype(np.int64), ts[m] // HOUR_MS, r[m]], 1), axis=0)
            hours[name] += np.bincount(key[:, 2], minlength=len(plan))
    print(f"{args.scenario}:{args.variant} seed {args.seed} scale {args.scale}, day 2, "
          f"{args.region}: {int(covers.sum())} pieces of {np.unique(row[covers]).size} rows")
    for name, n in hours.items():
        placed = n[row] * fp.weight
        into = placed[(fp.region == target) & ~served].sum()
        out = placed[covers & same_layer & ~served].sum()
        own = n[plan.region == target].sum()
        print(f"  {name:<5}: placed in from the other layer {into:,.0f}, out from its own layer "
              f"{out:,.0f}, device-hours at rows sited in it {own:,.0f}: net "
              f"{100 * (into - out) / own:+.2f} %")


if __name__ == "__main__":
    main()
