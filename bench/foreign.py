"""Stays of foreign SIMs against the simulator's truth (a benchmark: prints figures, asserts nothing).

    python bench/foreign.py [--scenario astana] [--scale 0.002] [--days 150] [--boost 50]
                            [--seed 1] [--min-cell 100]

Simulates the scenario in memory with its example ``[foreign]`` section on (stays of realistic
length, local SIMs; ``arrivals_per_year`` multiplied by ``--boost`` so that country-month cells
reach ``--min-cell`` people at a small scale), feeds the foreign SIMs' pings hour by hour into
:class:`estimators.foreign.ForeignState` (regions binned as the engine bins them), and the local
SIMs bought by visitors into an engine (to see when they count as residents). Prints, against
the truth of every visitor's stay (``stream.simulator.foreign_truth``; one person = one foreign
SIM in the simulator, so the factor is 1):

- arrivals and departures per country and month (settled months the data covers whole): the
  error of cells with at least ``--min-cell`` people, and how often the 90 % interval holds the
  truth for model terms 0.05, 0.1 and 0.2;
- the stock by stay class at the end of each settled month and week;
- the confusion matrix of estimated stay classes (completed stays) against the true length, for
  visitors who keep their foreign SIM, and what happens to those who switch;
- the double count of long-stayers who buy a local SIM: days on which the foreign SIM is still in
  the stock while the local SIM already counts as a resident;
- cost: state per foreign SIM and the time of one night's evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np

from estimators.engine import Engine, EngineConfig
from estimators.foreign import (
    CLASSES,
    CountryFactor,
    ForeignFigureConfig,
    ForeignPeriod,
    ForeignState,
    ZoneClock,
    estimate_foreign,
)
from estimators.regions import regions_from_geojson
from estimators.units import HOUR_MS
from stream.simulator import foreign_truth, load_scenario, simulate, visitor_stays, with_foreign
from stream.simulator.foreign import TRUE_CLASSES, VisitorStays, day_index, night_count, true_class
from stream.sources.mcc_table import load_mcc_table
from stream.sources.simulation import SimulationFeed

SECRET = b"bench-foreign-secret-0123456789ab"
MODEL_TERMS = (0.02, 0.03, 0.05, 0.1)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    base = load_scenario(args.scenario)
    sc = with_foreign(base)
    sc = with_foreign(base, arrivals_per_year=sc.foreign.arrivals_per_year * args.boost)
    sim = simulate(sc, scale=args.scale, days=args.days, seed=args.seed)
    regions = regions_from_geojson(sim.regions_geojson)
    engine = Engine(regions, EngineConfig(migration=None))
    feed = SimulationFeed(sim, engine, SECRET)  # keys, cell plan
    table = load_mcc_table()
    fs = ForeignState(len(regions.ids), table, ZoneClock(engine.config.timezone, engine.config.night),
                      record=True)
    stays = visitor_stays(sim)
    foreign_dev = sim.device_home_mcc != 401
    local_dev = np.zeros(sim.n_devices, dtype=bool)
    local_dev[stays.local_device[stays.local_device >= 0]] = True
    switchers = np.flatnonzero(stays.local_device >= 0)
    overlap = np.zeros(switchers.size, dtype=np.int64)  # nights counted twice, per switcher
    collected: dict[tuple[str, int], ForeignPeriod] = {}
    pings = foreign_pings = 0
    for chunk in sim.hours():
        pings += len(chunk)
        loc = feed.locations(chunk)
        f = foreign_dev[chunk.device]
        ts = chunk.ts_ms[f]
        if ts.size:
            foreign_pings += ts.size
            fs.ingest(feed.keys[chunk.device[f]], ts, sim.device_home_mcc[chunk.device[f]],
                      engine.cells.region[loc[f]], engine.utc_offset_s(ts))
        lo = local_dev[chunk.device]
        if lo.any():
            engine.ingest(feed.keys[chunk.device[lo]], chunk.ts_ms[lo], feed.opclass[chunk.device[lo]],
                          loc[lo])
        end = chunk.start_ms + HOUR_MS
        before = fs.evaluated_night
        fs.evaluate_until(end)
        if fs.evaluated_night is not None and fs.evaluated_night != before:
            overlap += _double_counted(engine, fs, feed, stays, switchers, end)
            for p in fs.tally().periods:
                if p.settled and p.complete:
                    collected.setdefault((p.kind, p.number), p)
    seconds = time.perf_counter() - t0
    first_day = int(fs.day_of(np.array([sim.start_ms]))[0][0])
    t1 = time.perf_counter()
    fs.evaluate(fs.evaluated_night + 1)
    night_s = time.perf_counter() - t1
    return {"sim": sim, "fs": fs, "feed": feed, "regions": regions, "table": table,
            "stays": stays, "collected": collected, "pings": pings, "foreign_pings": foreign_pings,
            "seconds": seconds, "night_s": night_s, "first_day": first_day,
            "switchers": switchers, "overlap": overlap}


def _double_counted(engine: Engine, fs: ForeignState, feed: SimulationFeed,
                    stays: VisitorStays, switchers: np.ndarray, at_ms: int) -> np.ndarray:
    """Per switcher, 1 when tonight its foreign SIM is in the foreign stock and its local SIM
    counts as a resident (active within 24 h, with a home night)."""
    if not switchers.size:
        return np.zeros(0, dtype=np.int64)
    f_rows = fs.presence.index.lookup(feed.keys[stays.device[switchers]])
    in_stock = np.zeros(switchers.size, dtype=bool)
    known = f_rows >= 0
    in_stock[known] = fs.arrays["open"][f_rows[known]]
    l_rows = engine.state.index.lookup(feed.keys[stays.local_device[switchers]])
    resident = np.zeros(switchers.size, dtype=bool)
    if engine.state.n_devices:
        last, _ = engine.state.last_seen()
        home = engine.state.home_region(int(fs.evaluated_night or 0),
                                        engine.config.estimate.min_nights)
        ok = l_rows >= 0
        rows = l_rows[ok]
        resident[ok] = (home[rows] >= 0) & (at_ms - last[rows] < engine.config.estimate.activity_ms)
    return (in_stock & resident).astype(np.int64)


def _sim_stays(stays: VisitorStays) -> VisitorStays:
    """The stays of the foreign SIMs: a visitor whose foreign SIM goes quiet when they buy a
    local one leaves the foreign SIMs' truth then (they go on as a domestic SIM)."""
    cut = (stays.switch_ms >= 0) & ~stays.dual
    return dataclasses.replace(stays, depart_ms=np.where(cut, stays.switch_ms, stays.depart_ms))


def _truth_by_country(run: dict[str, Any], kind: str, observed: bool = False, sims: bool = False
                      ) -> dict[str, dict[tuple[Any, ...], int]]:
    """The truth keyed by country code; ``observed``: as seen from the start of the run (stays
    that began before it arrive then, their nights count from then); ``sims``: of the foreign
    SIMs (:func:`_sim_stays`) rather than the people."""
    table, sim, stays = run["table"], run["sim"], run["stays"]
    raw = foreign_truth(sim, kind, _sim_stays(stays) if sims else stays,
                        sim.start_ms if observed else None)
    out: dict[str, dict[tuple[Any, ...], int]] = {}
    for name, cells in raw.items():
        agg: dict[tuple[Any, ...], int] = {}
        for key, v in cells.items():
            k = (str(table.codes([key[0]])[0]), *key[1:])
            agg[k] = agg.get(k, 0) + v
        out[name] = agg
    return out


def _flows(run: dict[str, Any], min_cell: int) -> list[str]:
    """Arrivals and departures per country and month against the truth."""
    table, regions = run["table"], run["regions"]
    truth = _truth_by_country(run, "month")
    codes = table.countries
    lines = []
    for name in ("arrivals", "departures"):
        errs, covered = [], {m: [] for m in MODEL_TERMS}
        detail = []
        for (kind, number), p in sorted(run["collected"].items()):
            if kind != "month" or p.nights_range[0] <= run["first_day"]:
                continue  # the data began inside it: everyone present then is an arrival
            est = getattr(p, name).sum(axis=tuple(range(1, getattr(p, name).ndim)))
            figs = {m: estimate_foreign(p, codes, regions, [CountryFactor("*", 1.0)],
                                        ForeignFigureConfig(k=1, model_rse=m,
                                                            countries=tuple(codes)))
                    for m in MODEL_TERMS}
            for c, code in enumerate(codes):
                t = sum(v for key, v in truth[name].items() if key[0] == code and key[1] == number)
                if t < min_cell:
                    continue
                errs.append((est[c] - t) / t)
                detail.append(f"{p.label} {code} {t}/{int(est[c])}")
                for m, fe in figs.items():
                    f = fe.figures[name]
                    row = fe.countries.index(code)
                    lo, hi = (f.lo[row, -1], f.hi[row, -1]) if f.lo.ndim == 2 else (
                        f.lo[row, -1, -1], f.hi[row, -1, -1])
                    covered[m].append(bool(lo <= t <= hi))
        if not errs:
            lines.append(f"{name}: no country-month with >= {min_cell} people (raise --boost or --scale)")
            continue
        e = np.abs(errs)
        lines.append(f"{name}: {len(errs)} country-months >= {min_cell} people: |error| median "
                     f"{100 * np.median(e):.1f} %, max {100 * e.max():.1f} %, mean error "
                     f"{100 * np.mean(errs):+.1f} %, within 10 % in {100 * np.mean(e <= 0.10):.0f} %; "
                     "90 % interval covers the truth " + ", ".join(
                         f"{100 * np.mean(v):.0f} % (model {m:g})" for m, v in covered.items()))
        lines.append("  true/estimated: " + ", ".join(detail[:12]))
    return lines


def _stock(run: dict[str, Any]) -> list[str]:
    """Stock by class at settled period ends: true/estimated summed over the periods, against
    the truth as seen from the start of the run (a stay's nights before the data began cannot
    be seen), and the true classes for comparison."""
    lines = []
    for kind in ("month", "week"):
        seen = _truth_by_country(run, kind, observed=True, sims=True)["stock"]
        true = _truth_by_country(run, kind)["stock"]
        est_tot, seen_tot, true_tot = (np.zeros(len(CLASSES)) for _ in range(3))
        per_period = []
        for (k, number), p in sorted(run["collected"].items()):
            if k != kind:
                continue
            est = p.stock.sum(axis=(0, 1))
            tru = np.zeros(len(CLASSES))
            for key, v in seen.items():
                if key[1] == number:
                    tru[key[2]] += v
            for key, v in true.items():
                if key[1] == number:
                    true_tot[key[2]] += v
            est_tot += est
            seen_tot += tru
            per_period.append(np.abs(est - tru) / np.maximum(tru, 1))
        if not per_period:
            continue
        err = (est_tot - seen_tot) / np.maximum(seen_tot, 1)
        lines.append(f"stock at {kind} ends ({len(per_period)} settled), foreign SIMs as seen from "
                     "the start / estimated: " + ", ".join(
                         f"{c} {int(t)}/{int(e)} ({100 * x:+.1f} %)" for c, t, e, x in
                         zip(CLASSES, seen_tot, est_tot, err, strict=True)) +
                     f"; per {kind} and class |error| median "
                     f"{100 * np.median(np.array(per_period)[:, 1:]):.1f} %")
        lines.append("  people, classes by nights since the true arrival: " + ", ".join(
            f"{c} {int(t)}" for c, t in zip(CLASSES, true_tot, strict=True)))
    return lines


def _confusion(run: dict[str, Any]) -> list[str]:
    """Completed stays: estimated class (rows) vs the true class of the person's stay."""
    sim, fs, feed, stays = run["sim"], run["fs"], run["feed"], run["stays"]
    ev = fs.events()["departure"]
    order = np.argsort(feed.keys)
    key = ev["key"].astype(np.uint64)
    at = np.minimum(np.searchsorted(feed.keys[order], key), order.size - 1)
    device = np.where(feed.keys[order][at] == key, order[at], -1)
    stay_of_dev = np.full(sim.n_devices, -1, dtype=np.int64)
    stay_of_dev[stays.device] = np.arange(stays.person.size)
    s = np.where(device >= 0, stay_of_dev[np.maximum(device, 0)], -1)
    off = sim.scenario.utc_offset_h
    t_class = true_class(night_count(stays.arrive_ms, stays.depart_ms, off))
    first = day_index(np.array([sim.start_ms]), off)[0]
    last = day_index(np.array([sim.end_ms - 1]), off)[0]
    # stays seen whole: arrived after the first day, left 5 days before the end
    whole = ((day_index(stays.arrive_ms, off) > first) & (day_index(stays.depart_ms, off) < last - 5))
    split = np.bincount(s[s >= 0], minlength=stays.person.size)
    lines = []
    for label, group in (("keep their foreign SIM", stays.switch_ms < 0),
                         ("switch to a local SIM (foreign SIM quiet)", (stays.switch_ms >= 0) & ~stays.dual),
                         ("switch, dual-SIM (both ping)", (stays.switch_ms >= 0) & stays.dual)):
        sel = whole & group
        one = sel & (split == 1)
        m = np.zeros((4, 4), dtype=np.int64)
        match = (s >= 0) & one[np.maximum(s, 0)]
        np.add.at(m, (np.searchsorted([1, 30, 90], ev["nights"][match], side="right"),
                      t_class[s[match]]), 1)
        n = int(sel.sum())
        if not n:
            continue
        diag = np.trace(m) / max(m.sum(), 1)
        by_seen = np.searchsorted([1, 30, 90], ev["seen"][match], side="right")
        seen_right = np.mean(by_seen == t_class[s[match]]) if match.any() else float("nan")
        seen_share = ev["seen"][match].sum() / max(ev["nights"][match].sum(), 1)
        lines.append(f"{label}: {n} whole stays, {int((sel & (split == 0)).sum())} never seen, "
                     f"{int((sel & (split > 1)).sum())} split in 2+ stays by 72 h gaps; of the "
                     f"others, class right {100 * diag:.1f} % (by nights with a night-time ping "
                     f"instead: {100 * seen_right:.1f} %; such nights are "
                     f"{100 * seen_share:.0f} % of the nights spent)")
        lines.append("  estimated \\ true  " + " ".join(f"{c:>9}" for c in TRUE_CLASSES))
        for i, c in enumerate(CLASSES):
            lines.append(f"  {c:>16}  " + " ".join(f"{v:>9}" for v in m[i]))
    return lines


def _local_sim(run: dict[str, Any]) -> list[str]:
    stays, switchers, overlap = run["stays"], run["switchers"], run["overlap"]
    if not switchers.size:
        return ["no visitor bought a local SIM"]
    dual = stays.dual[switchers]
    lines = []
    for label, sel in (("foreign SIM quiet after the switch", ~dual), ("dual-SIM", dual)):
        if sel.any():
            d = overlap[sel]
            lines.append(f"{label}: {int(sel.sum())} visitors, nights counted twice (foreign "
                         f"stock and resident) median {np.median(d):.0f}, p90 "
                         f"{np.percentile(d, 90):.0f}, max {d.max()}")
    nights = night_count(stays.arrive_ms, stays.depart_ms, run["sim"].scenario.utc_offset_h)
    person_nights = float(np.minimum(nights, run["sim"].n_hours / 24).sum())
    lines.append(f"double-counted nights are {100 * overlap.sum() / max(person_nights, 1):.2f} % "
                 "of all visitor nights in the run")
    return lines


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="astana")
    ap.add_argument("--scale", type=float, default=0.002)
    ap.add_argument("--days", type=float, default=150.0)
    ap.add_argument("--boost", type=float, default=50.0, help="multiply [foreign] arrivals")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-cell", type=int, default=100, help="people (simulation scale)")
    args = ap.parse_args()
    run = _run(args)
    sim, fs = run["sim"], run["fs"]
    f = sim.foreign
    print(f"bench/foreign.py: {args.scenario} scale {args.scale} {args.days:g} days, [foreign] "
          f"arrivals x{args.boost:g}, seed {args.seed}: {run['pings']:,} pings "
          f"({run['foreign_pings']:,} foreign), {run['stays'].person.size:,} visitor stays "
          f"({0 if f is None else f.person.size:,} [foreign]), {run['seconds']:.0f} s")
    for line in (*_flows(run, args.min_cell), *_stock(run), *_confusion(run), *_local_sim(run)):
        print(line)
    print(f"cost: {fs.nbytes / max(fs.n_devices, 1):.0f} B per foreign SIM ({fs.n_devices:,} SIMs); "
          f"one night evaluated in {run['night_s'] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
