"""Border cells by day: resident footprint weights against weights learned from lat/lon devices.

    python bench/day_footprints.py [--scenario astana] [--scale 0.05] [--days 4] [--seed 1]
        [--variants base,bursty] [--strength 20,50] [--window 9,17] [--regions tselinograd]
        [--oracle] [--reach 1,0.75]

Runs every robustness variant of the scenario as ``bench/accuracy.py --suite`` does (calibrated
on day 1, scored at every later hour end), with one engine per setting fed the *same* simulated
pings: ``resident`` (border cells' devices spread by the resident reference, today's rule) and,
per prior strength ``a``, ``day a``: the lat/lon-reporting devices' day- and night-window
pings of day 1 counted per footprint piece (:mod:`estimators.day_footprints`), the resident
prior rescaled by their night-to-day change, used for cell-id pings in the day window from
day 2 on. Prints per variant and bucket the suite's figures for each setting, the signed error
of the listed regions (mean over the bucket's hours, % of truth) and the worst over the
variants. A benchmark: asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np

from bench.accuracy import BUCKETS, HEADER, Run, bucket_key, bucket_rows, fmt, worst
from estimators.accuracy import Accuracy
from estimators.calibration import Calibration, shrink_factors
from estimators.day_footprints import (
    DAY_WINDOW_H,
    NIGHT_WINDOW_H,
    PieceLocator,
    count_pieces,
    day_footprints,
    is_daytime,
)
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.footprints import (
    WEIGHT_DIGITS,
    Footprints,
    _thresholds,
    footprint_weights,
    population_density,
    start_rows,
)
from estimators.regions import regions_from_geojson
from estimators.units import DAY_MS, HOUR_MS
from stream.publish.snapshot import build_snapshot
from stream.simulator import simulate
from stream.simulator.model import HourChunk
from stream.simulator.scenario import Scenario, load_scenario
from stream.sources.simulation import SimulationFeed
from stream.timefmt import iso_utc

SECRET = b"bench-accuracy-secret-key-000000"


class DayFeed(SimulationFeed):
    """A feed whose cell-id pings in the day window choose pieces by the plan's day weights
    (when set), and that counts its lat/lon pings' pieces while ``learning``."""

    window: tuple[int, int] = DAY_WINDOW_H
    learning = False
    locator: PieceLocator | None = None
    counts: np.ndarray | None = None

    def locations(self, chunk: HourChunk) -> np.ndarray:
        plan = self.engine.plan
        assert plan is not None
        loc = np.empty(len(chunk.ts_ms), dtype=np.int64)
        is_cell = chunk.cell >= 0
        dev = chunk.device[is_cell]
        ts = chunk.ts_ms[is_cell]
        day = is_daytime(ts, self.engine.utc_offset_s(ts), self.window)
        loc[is_cell] = plan.locations(chunk.cell[is_cell].astype(np.int64),
                                      None if self.draws is None else self.draws[dev], day)
        by_point = ~is_cell
        if by_point.any():
            lat, lon = chunk.lat[by_point], chunk.lon[by_point]
            loc[by_point] = self.engine.cells.locate_latlng(lat, lon)
            if self.learning and self.locator is not None and self.counts is not None:
                pts = chunk.ts_ms[by_point]
                for k, window in enumerate((self.window, NIGHT_WINDOW_H)):
                    day = is_daytime(pts, self.engine.utc_offset_s(pts), window)
                    if day.any():
                        region = self.engine.regions.locate(lat[day], lon[day])
                        pos, piece = self.locator.pieces(lat[day], lon[day], region)
                        count_pieces(self.counts[k], self.keys[chunk.device[by_point][day]],
                                     pts[day] // HOUR_MS, pos, piece)
        return loc


@dataclass
class Setting:
    """One engine of the comparison."""

    label: str
    engine: Engine
    feed: SimulationFeed
    strength: float | None = None
    snaps: list[dict] = field(default_factory=list)
    moved: float = 0.0


def layer_oracle(fp: Footprints, sc: Scenario, region_ids: list[str], cell: np.ndarray
                 ) -> Footprints:
    """``fp`` with each border row's pieces restricted to the regions the simulator lets its
    tower layer serve (simulator knowledge, not an estimator: a rural-layer tower, cell name
    ``R…``, serves only positions in rural leaves, an urban one only urban leaves); rows left
    with no piece keep theirs."""
    urban = np.array([sc.region(r).urban for r in region_ids] + [False])
    row = start_rows(fp.ptr)
    rural_row = np.char.startswith(cell, "R")[row]
    unassigned = fp.region == len(region_ids)
    ok = unassigned | (urban[fp.region] != rural_row)
    w = np.where(ok, fp.weight, 0.0)
    total = np.bincount(row, weights=w, minlength=fp.n_rows)[row]
    w = np.where(total > 0, w / np.where(total > 0, total, 1.0), fp.weight)
    w = np.round(w, WEIGHT_DIGITS)
    return Footprints(fp.ptr, fp.region, w, fp.lat, fp.lon, _thresholds(fp.ptr, w))


def run_variant(scenario: str, scale: float, days: float, seed: int, strengths: list[float],
                window: tuple[int, int], config: EstimateConfig, oracle: bool = False,
                reaches: tuple[float, ...] = ()) -> tuple[dict, list[Setting], int, float]:
    """Simulate one variant once and feed every setting's engine the same pings."""
    t0 = time.perf_counter()
    sc = load_scenario(scenario)
    sim = simulate(sc, scale=scale, days=days, seed=seed)
    regions = regions_from_geojson(sim.regions_geojson)
    settings = []
    for label, a in [("resident", None), *((f"day {a:g}", a) for a in strengths)]:
        engine = Engine(regions, EngineConfig(res=8, estimate=config))
        feed = DayFeed(sim, engine, SECRET) if a is not None else SimulationFeed(sim, engine,
                                                                                  SECRET)
        if a is not None and engine.plan is not None and engine.plan.footprints is not None:
            assert isinstance(feed, DayFeed)
            plan = engine.plan
            _, group = np.unique(np.asarray(plan.operator, dtype=object).astype(str),
                                 return_inverse=True)
            feed.window = window
            feed.locator = PieceLocator(plan.footprints, plan.lat, plan.lon,
                                        group.reshape(-1), regions.n)
            feed.counts = np.zeros((2, plan.footprints.weight.size))
            feed.learning = True
        settings.append(Setting(label, engine, feed, a))
    if oracle:
        engine = Engine(regions, EngineConfig(res=8, estimate=config))
        feed = SimulationFeed(sim, engine, SECRET)
        plan = engine.plan
        if plan is not None and plan.footprints is not None:
            plan.apportion(layer_oracle(plan.footprints, sc, regions.ids[: regions.n],
                                        np.asarray(sim.cell_plan["cell"], dtype=str)),
                           engine.cells)
        settings.append(Setting("layer oracle", engine, feed))
    for reach in reaches:
        engine = Engine(regions, EngineConfig(res=8, estimate=config))
        feed = SimulationFeed(sim, engine, SECRET)
        plan = engine.plan
        if plan is not None and plan.footprints is not None:
            _, group = np.unique(np.asarray(plan.operator, dtype=object).astype(str),
                                 return_inverse=True)
            plan.apportion(footprint_weights(plan.lat, plan.lon, group.reshape(-1), regions,
                                             population_density(regions, sim.reference),
                                             plan.region, reach_factor=reach), engine.cells)
            engine.hold_locations(lambda plan=plan: plan.piece_loc)
        settings.append(Setting(f"reach {reach:g}", engine, feed))
    cal_end = sim.start_ms + DAY_MS
    truth: dict[str, dict] = {}
    for chunk in sim.hours():
        end = chunk.start_ms + HOUR_MS
        for s in settings:
            s.feed.ingest(chunk)
            if end == cal_end:
                rows = shrink_factors(regions, s.engine.fit_calibration(cal_end, sim.reference),
                                      0.0)
                s.engine.set_calibration(Calibration(rows))
                feed = s.feed
                if isinstance(feed, DayFeed) and feed.counts is not None:
                    plan = s.engine.plan
                    assert plan is not None and plan.footprints is not None
                    assert s.strength is not None
                    day = day_footprints(plan.footprints, feed.counts[0], feed.counts[1], s.strength)
                    plan.apportion_day(day)
                    feed.learning = False
                    s.moved = float(np.abs(day.weight - plan.footprints.weight).sum()
                                    / max(1, plan.footprints.border_rows().size) / 2)
        if end <= cal_end:
            continue
        truth[iso_utc(end)] = chunk.truth_end
        for s in settings:
            est = s.engine.estimate(end)
            s.snaps.append(build_snapshot(est, regions, s.engine.cells.res, sim.registry))
    return truth, settings, sc.utc_offset_h, time.perf_counter() - t0


def signed_error(snaps: list[dict], truth: dict, region: str, key
                 ) -> dict[str, tuple[float, float]]:
    """Mean signed present error of ``region`` per bucket (% of truth) and the share of its
    hours whose 90 % interval holds the truth (%)."""
    out: dict[str, list[tuple[float, bool]]] = {}
    for snap in snaps:
        t = truth.get(snap["at"], {}).get(region)
        est = snap["regions"].get(region)
        if t is None or est is None or est["present"] is None:
            continue
        true = t["present"]
        out.setdefault(key(snap["at"]), []).append(
            (100.0 * (est["present"] - true) / true, est["lo"] <= true <= est["hi"]))
    return {b: (float(np.mean([e for e, _ in v])), 100.0 * float(np.mean([c for _, c in v])))
            for b, v in out.items()}


def main() -> None:
    """Run the comparison and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="astana")
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--days", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variants", default="")
    ap.add_argument("--strength", default="20", help="prior strengths a, comma-separated")
    ap.add_argument("--window", default=f"{DAY_WINDOW_H[0]},{DAY_WINDOW_H[1]}",
                    help="local day window start,end hours")
    ap.add_argument("--regions", default="tselinograd,kokshetau,astana-saryarka,astana-almaty")
    ap.add_argument("--min-people", type=float, default=50_000)
    ap.add_argument("--reach", default="", help="also engines whose footprints reach these "
                    "multiples of the nearest other site's distance (default 2), comma-separated")
    ap.add_argument("--oracle", action="store_true",
                    help="also a 'layer oracle' engine: border pieces restricted to the regions "
                         "the simulator's tower layer serves (an upper bound, not an estimator)")
    args = ap.parse_args()
    strengths = [float(a) for a in args.strength.split(",")]
    lo, hi = (int(h) for h in args.window.split(","))
    names = args.variants.split(",") if args.variants else list(
        load_scenario(args.scenario).variants)
    watch = args.regions.split(",")
    min_true = args.min_people * args.scale
    config = EstimateConfig()
    print(f"day footprints {args.scenario} scale {args.scale} days {args.days} seed {args.seed}"
          f" window {lo}-{hi} strengths {strengths}")
    tables: dict[str, dict[str, dict[str, Accuracy]]] = {}
    t0 = time.perf_counter()
    for name in names:
        truth, settings, off, secs = run_variant(f"{args.scenario}:{name}", args.scale,
                                                 args.days, args.seed, strengths, (lo, hi),
                                                 config, args.oracle,
                                                 tuple(float(x) for x in args.reach.split(",")
                                                       if x))
        key = bucket_key(off)
        print(HEADER)
        for s in settings:
            r = Run(name, 0, 0, 0.0, off, {"x": s.snaps}, truth)
            rows = bucket_rows(r, "x", min_true)
            tables.setdefault(s.label, {})[name] = rows
            for b in (*BUCKETS, "all"):
                if b in rows:
                    print(fmt(f"{name[:9]} {s.label}", b, rows[b]))
            errs = {reg: signed_error(s.snaps, truth, reg, key) for reg in watch}
            nan = (float("nan"), float("nan"))
            print(f"  {s.label}: mean weight moved {s.moved:.4f}; signed present error % "
                  "(coverage %) night morning day evening: "
                  + "; ".join(f"{reg} " + " ".join(
                      "{:+.2f} ({:.0f})".format(*errs[reg].get(b, nan)) for b in BUCKETS)
                      for reg in watch))
        print(f"  ({secs:.0f} s)", flush=True)
    print("worst over the variants (each figure separately):")
    for label, table in tables.items():
        for b, a in worst(table).items():
            print(fmt(f"WORST {label}", b, a))
    print(f"took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
