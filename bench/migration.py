"""Migration against the simulator's truth (a benchmark: prints figures, asserts nothing).

    python bench/migration.py [--scenario astana] [--scale 0.002] [--days 150] [--boost 10]
                              [--holidays 1.0] [--shift 0.01] [--lapse 0.1] [--new 0.05] [--seed 1]

Simulates the scenario in memory (no files), with temporary stays and SIM churn added unless
the scenario sets its own ``[temporary]``/``[churn]``, migration flows multiplied by ``--boost``
(so that OD cells reach k at a small scale), and the same run with migration switched off (the
null scenario). Feeds the engine hour by hour, calibrates on day 1, and reports:

- movers (devices housed before their person's move): recall (a relocation of the device with
  the right origin and destination,
  ``effective`` within ±7 days of the true move) and precision (matched / detected), for moves
  that happen after the 28-night warm-up and at least 60 nights before the end; detection delay
  (detected − true move) and dating error (effective − true move); the same for confirmed moves
  (movers at least 120 nights before the end);
- the null scenario: false relocations per 10,000 housed devices per 28 days; confirmed moves;
- net migration per region over the evaluation window in people (relocations dated by their
  effective night, scaled like the published flows), against the truth, for regions with
  |true net| >= ``--min-net`` people, with the share of 90 % intervals holding the truth;
- cost: extra state per device and the time of one night's evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np

from estimators.calibration import Calibration
from estimators.engine import Engine, EngineConfig
from estimators.flows import FlowConfig, crossing, estimate_flows, rural_urban
from estimators.migration import MigrationConfig, PeriodCounts, periods_of
from estimators.presence import night_of
from estimators.regions import regions_from_geojson
from estimators.units import DAY_MS
from stream.simulator import load_scenario, simulate
from stream.simulator.scenario import ChurnParams, Scenario, TemporaryParams
from stream.sources.simulation import SimulationFeed

SECRET = b"bench-migration-secret-0123456789"
WARM_UP_NIGHTS = 28
DETECT_NIGHTS = 60
MATCH_DAYS = 7


def _variant(args: argparse.Namespace, migration: bool) -> Scenario:
    sc = load_scenario(args.scenario)
    if sc.temporary == TemporaryParams():
        sc = dataclasses.replace(sc, temporary=TemporaryParams(
            holidays_per_year=args.holidays, holiday_days=(7, 21), shift_share=args.shift))
    if sc.churn == ChurnParams():
        sc = dataclasses.replace(sc, churn=ChurnParams(lapse_per_year=args.lapse, new_share=args.new))
    moves = tuple(dataclasses.replace(m, per_year=m.per_year * args.boost) for m in sc.migrations)
    return dataclasses.replace(sc, migrations=moves if migration else ())


def _run(sc: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    sim = simulate(sc, scale=args.scale, days=args.days, seed=args.seed)
    regions = regions_from_geojson(sim.regions_geojson)
    engine = Engine(regions, EngineConfig(migration=MigrationConfig(
        window_nights=args.window, min_nights=args.min_nights)), record_migration=True)
    feed = SimulationFeed(sim, engine, SECRET)
    cal_end = sim.start_ms + DAY_MS
    pings = 0
    settled: dict[tuple[str, int], tuple[PeriodCounts, np.ndarray, np.ndarray]] = {}
    for hour in feed.hours():
        pings += hour.pings
        if hour.end_ms == cal_end:
            engine.set_calibration(Calibration(engine.fit_calibration(cal_end, sim.reference)))
        _collect_settled(engine, hour.end_ms, settled)
    tally = engine.tally(sim.end_ms)
    estimate = engine.estimate_tally(tally)
    seconds = time.perf_counter() - t0
    assert engine.migration is not None
    t1 = time.perf_counter()
    engine.evaluate_nights_until(engine.night_close_ms(engine.migration.evaluated_night + 1))
    night_s = time.perf_counter() - t1
    return {"sim": sim, "engine": engine, "feed": feed, "estimate": estimate, "pings": pings,
            "seconds": seconds, "night_s": night_s, "regions": regions, "settled": settled}


def _collect_settled(engine: Engine, at_ms: int,
                     out: dict[tuple[str, int], tuple[PeriodCounts, np.ndarray, np.ndarray]]) -> None:
    """Each period dated by effective night, once, when it settles, with the resident estimate
    (and its relative error) of that moment, which scales it when published."""
    mig = engine.migration
    if mig is None or not any(p.settled and (p.kind, p.number) not in out for p in mig.past):
        return
    tally = engine.tally(at_ms)
    est = engine.estimate_tally(tally)
    for p in tally.migration.periods:
        if p.settled and p.complete and (p.kind, p.number) not in out:
            out[(p.kind, p.number)] = (p.by_effective(), est.resident_by_home.copy(),
                                       est.resident_by_home_rse.copy())


def _night(ts_ms: np.ndarray, engine: Engine) -> np.ndarray:
    """Night number (days since 1970 of the local evening) of instants."""
    return night_of(ts_ms, engine.utc_offset_s(ts_ms), engine.config.night)[1]


def _device_metrics(run: dict[str, Any]) -> dict[str, Any]:
    sim, engine, feed, regions = run["sim"], run["engine"], run["feed"], run["regions"]
    ev = engine.migration.events()
    rows, _ = engine.state.index.rows(feed.keys)
    device_of_row = np.full(int(rows.max()) + 1, -1, dtype=np.int64)
    device_of_row[rows] = np.arange(rows.size)
    region_of_leaf = np.array([regions.index[leaf] for leaf in sim.leaf_ids])
    first_night = int(_night(np.array([sim.start_ms]), engine)[0])
    last_night = int(_night(np.array([sim.end_ms - 1]), engine)[0])
    lo, hi = first_night + WARM_UP_NIGHTS, last_night - DETECT_NIGHTS
    reloc = ev["kind"] == 1
    r_dev = device_of_row[ev["row"][reloc]]
    r_src, r_dst = ev["src"][reloc], ev["dst"][reloc]
    r_eff, r_det = ev["effective"][reloc], ev["night"][reloc]
    # true moves, one per device of the mover
    m = sim.moves
    move_night = _night(m.at_ms, engine)
    old_leaf = sim.people.home_leaf[m.person]
    dev_person = sim.device_person
    order = np.argsort(dev_person, kind="stable")
    starts = np.searchsorted(dev_person[order], m.person, side="left")
    ends = np.searchsorted(dev_person[order], m.person, side="right")
    true_rows = [(int(d), region_of_leaf[old_leaf[i]], region_of_leaf[m.home_leaf[i]],
                  int(move_night[i])) for i in range(m.person.size)
                 for d in order[starts[i]:ends[i]].tolist()
                 if region_of_leaf[old_leaf[i]] != region_of_leaf[m.home_leaf[i]]]
    by_device = {d: (a, b, night) for d, a, b, night in true_rows}
    matched = np.zeros(r_dev.size, dtype=bool)
    delay, dating = [], []
    found = set()
    for j in range(r_dev.size):
        t = by_device.get(int(r_dev[j]))
        if t and t[0] == r_src[j] and t[1] == r_dst[j] and abs(int(r_eff[j]) - t[2]) <= MATCH_DAYS:
            matched[j] = True
            found.add(int(r_dev[j]))
            delay.append(int(r_det[j]) - t[2])
            dating.append(int(r_eff[j]) - t[2])
    # a mover can only be seen moving if one of its devices had a usual residence before
    housed_by = {}
    for kind_, row, night in zip(ev["kind"].tolist(), ev["row"].tolist(), ev["night"].tolist(),
                                 strict=True):
        if kind_ == 0:
            housed_by[int(device_of_row[row])] = night
    eligible = {d for d, (_, _, night) in by_device.items()
                if lo <= night <= hi and housed_by.get(d, night) < night}
    in_window = (r_det >= lo) & (r_det <= last_night)
    housed_nights = _housed_device_nights(engine, lo, last_night)
    false = int((in_window & ~matched).sum())
    conf = ev["kind"] == 2
    c_dev, c_src, c_dst = device_of_row[ev["row"][conf]], ev["src"][conf], ev["dst"][conf]
    c_ok = np.array([(t := by_device.get(int(d))) is not None and t[0] == a and t[1] == b
                     for d, a, b in zip(c_dev.tolist(), c_src.tolist(), c_dst.tolist(), strict=True)],
                    dtype=bool)
    c_eligible = {d for d, (_, _, night) in by_device.items()
                  if lo <= night <= last_night - 120 and housed_by.get(d, night) < night}
    c_found = {int(d) for d, ok in zip(c_dev.tolist(), c_ok.tolist(), strict=True) if ok}
    return {
        "true_movers": len(eligible), "recall": len(eligible & found) / max(len(eligible), 1),
        "detected": int(in_window.sum()),
        "precision": float(matched[in_window].mean()) if in_window.any() else float("nan"),
        "delay_median": float(np.median(delay)) if delay else float("nan"),
        "delay_p90": float(np.percentile(delay, 90)) if delay else float("nan"),
        "dating_median_abs": float(np.median(np.abs(dating))) if dating else float("nan"),
        "false_per_10k_28": false / max(housed_nights / 28, 1e-9) * 10_000,
        "confirmed": int(conf.sum()),
        "confirmed_precision": float(c_ok.mean()) if c_ok.size else float("nan"),
        "confirmed_recall": len(c_eligible & c_found) / len(c_eligible) if c_eligible else float("nan"),
        "confirmed_movers": len(c_eligible),
        "window": (lo, hi), "eff": r_eff, "src": r_src, "dst": r_dst, "true_rows": true_rows,
    }


def _housed_device_nights(engine: Engine, lo: int, hi: int) -> float:
    """Device-nights with a usual residence over nights lo..hi (from the current stock, an
    approximation good enough for a rate)."""
    mig = engine.migration
    n = engine.state.n_devices
    housed = int(((mig.arrays["ur"][:n] >= 0) & ~mig.arrays["lapsed"][:n]).sum())
    return housed * max(hi - lo + 1, 0)


def _net_accuracy(run: dict[str, Any], dm: dict[str, Any], min_net: float) -> str:
    """Net migration per region over the window (effective-dated), people, vs truth."""
    sim, engine, regions, est = run["sim"], run["engine"], run["regions"], run["estimate"]
    lo, hi = dm["window"]
    n = len(regions.ids)
    sel = (dm["eff"] >= lo) & (dm["eff"] <= hi)
    moves = np.zeros((n, n))
    np.add.at(moves, (dm["src"][sel], dm["dst"][sel]), 1.0)
    mig = engine.migration
    stock = mig.observed_stock.astype(np.float64)  # as the published flows (estimators.flows)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_device = np.nan_to_num(np.where(stock > 0, est.resident_by_home / stock, 0.0))
    flow = moves * per_device[:, None]
    est_in, est_out = crossing(regions, flow)
    est_net = est_in - est_out
    # truth: people moving, effective in the window
    region_of_leaf = np.array([regions.index[leaf] for leaf in sim.leaf_ids])
    m = sim.moves
    night = _night(m.at_ms, engine)
    keep = (night >= lo) & (night <= hi)
    true = np.zeros((n, n))
    np.add.at(true, (region_of_leaf[sim.people.home_leaf[m.person[keep]]],
                     region_of_leaf[m.home_leaf[keep]]), 1.0)
    true_in, true_out = crossing(regions, true)
    true_net = true_in - true_out
    rows = []
    for g in np.flatnonzero(np.abs(true_net) >= min_net).tolist():
        err = (est_net[g] - true_net[g]) / abs(true_net[g])
        rows.append((regions.ids[g], true_net[g], est_net[g], err))
    if not rows:
        return f"no region with |true net| >= {min_net:g} people in the window"
    rural, urban = rural_urban(regions)
    est_balance = flow[np.ix_(urban, rural)].sum() - flow[np.ix_(rural, urban)].sum()
    true_balance = true[np.ix_(urban, rural)].sum() - true[np.ix_(rural, urban)].sum()
    years = (hi - lo + 1) / 365.25
    balance = (f"; rural balance {true_balance:+.0f} true / {est_balance:+.0f} estimated "
               f"({true_balance / years:+.0f} / {est_balance / years:+.0f} a year)"
               if rural.any() and urban.any() else "")
    errs = np.array([abs(r[3]) for r in rows])
    signs = np.mean([np.sign(r[1]) == np.sign(r[2]) for r in rows])
    detail = ", ".join(f"{rid} {t:+.0f}/{e:+.0f}" for rid, t, e, _ in rows[:8])
    return (f"{len(rows)} regions, |error| median {100 * np.median(errs):.1f} % (max "
            f"{100 * errs.max():.1f} %), sign right {100 * signs:.0f} %; true/estimated: {detail}"
            f"{balance}")


def _coverage(run: dict[str, Any], min_net: float, model_rse: tuple[float, ...]) -> str:
    """Settled periods (dated by effective night) against the true net migration of the same
    period, per region with |true net| >= ``min_net`` people: error, and the 90 % interval's
    coverage for each model error term in ``model_rse``."""
    sim, engine, regions = run["sim"], run["engine"], run["regions"]
    region_of_leaf = np.array([regions.index[leaf] for leaf in sim.leaf_ids])
    m = sim.moves
    night = _night(m.at_ms, engine)
    src = region_of_leaf[sim.people.home_leaf[m.person]]
    dst = region_of_leaf[m.home_leaf]
    n = len(regions.ids)
    lines = []
    for kind in ("week", "month"):
        numbers = periods_of(night, kind)
        errs, signs, hidden = [], [], 0
        covered: dict[float, list[bool]] = {m: [] for m in model_rse}
        for (k, number), (period, resident, rse) in sorted(run["settled"].items()):
            if k != kind:
                continue
            fes = {m: estimate_flows(period, regions, resident, rse,
                                     FlowConfig(k=1, model_rse_flow=m)) for m in model_rse}
            fe = fes[model_rse[0]]
            true = np.zeros((n, n))
            sel = numbers == number
            np.add.at(true, (src[sel], dst[sel]), 1.0)
            t_in, t_out = crossing(regions, true)
            t_net = t_in - t_out
            for g in np.flatnonzero(np.abs(t_net) >= min_net).tolist():
                if np.isnan(fe.net[g]):  # no device moved one way (hidden even at k = 1)
                    hidden += 1
                    continue
                if t_net[g]:
                    errs.append(abs(fe.net[g] - t_net[g]) / abs(t_net[g]))
                for m, f in fes.items():
                    covered[m].append(bool(f.net_lo[g] <= t_net[g] <= f.net_hi[g]))
                if t_net[g]:
                    signs.append(np.sign(fe.net[g]) == np.sign(t_net[g]))
        periods = sum(1 for k, _ in run["settled"] if k == kind)
        cells = len(next(iter(covered.values())))
        if cells:
            errors = (f"|error| median {100 * np.median(errs):.0f} %, sign right "
                      f"{100 * np.mean(signs):.0f} %, " if errs else "")
            lines.append(f"{kind}: {periods} settled periods, {cells} region-periods with |true "
                         f"net| >= {min_net:g} ({hidden} more without a device moving one way): "
                         f"{errors}90 % interval covers the truth " +
                         ", ".join(f"{100 * np.mean(c):.0f} % (model term {m:g})"
                                   for m, c in covered.items()))
        else:
            lines.append(f"{kind}: {periods} settled periods, no region with |true net| >= "
                         f"{min_net:g}")
    return "; ".join(lines)


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="astana")
    ap.add_argument("--scale", type=float, default=0.002)
    ap.add_argument("--days", type=float, default=150.0)
    ap.add_argument("--boost", type=float, default=10.0, help="multiply migration flows")
    ap.add_argument("--holidays", type=float, default=1.0, help="holidays per resident and year")
    ap.add_argument("--shift", type=float, default=0.01, help="share of shift workers (15/15)")
    ap.add_argument("--lapse", type=float, default=0.10, help="SIMs lapsing per year")
    ap.add_argument("--new", type=float, default=0.05, help="share of SIMs appearing")
    ap.add_argument("--min-net", type=float, default=30.0, help="people (simulation scale)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model-rse", type=lambda t: tuple(float(x) for x in t.split(",")),
                    default=(0.05, 0.1, 0.2),
                    help="flow model error terms to measure interval coverage with (comma-separated)")
    ap.add_argument("--window", type=int, default=MigrationConfig.window_nights)
    ap.add_argument("--min-nights", type=int, default=MigrationConfig.min_nights)
    args = ap.parse_args()
    print(f"bench/migration.py: {args.scenario} scale {args.scale} {args.days:g} days, migration "
          f"x{args.boost:g}, holidays {args.holidays}/yr, shift {args.shift}, lapse {args.lapse}/yr, "
          f"new SIMs {args.new}, seed {args.seed}; usual residence: majority of {args.window} "
          f"nights, at least {args.min_nights}")
    for label, with_migration in (("with migration", True), ("null (no migration)", False)):
        run = _run(_variant(args, with_migration), args)
        dm = _device_metrics(run)
        engine = run["engine"]
        n = engine.state.n_devices
        print(f"\n{label}: {run['pings']:,} pings, {n:,} devices, {run['seconds']:.0f} s")
        print(f"  movers after warm-up: {dm['true_movers']}, recall {100 * dm['recall']:.1f} %; "
              f"relocations detected {dm['detected']}, precision {100 * dm['precision']:.1f} %")
        print(f"  detection delay median {dm['delay_median']:.0f} d, p90 {dm['delay_p90']:.0f} d; "
              f"|effective - true| median {dm['dating_median_abs']:.0f} d")
        print(f"  false relocations per 10,000 housed devices per 28 days: "
              f"{dm['false_per_10k_28']:.1f}")
        print(f"  confirmed moves: {dm['confirmed']}, precision {100 * dm['confirmed_precision']:.1f} %, "
              f"recall {100 * dm['confirmed_recall']:.1f} % of {dm['confirmed_movers']} movers "
              f"120+ nights before the end")
        if with_migration:
            print(f"  net migration over the window: {_net_accuracy(run, dm, args.min_net)}")
            print(f"  by effective period: {_coverage(run, args.min_net, args.model_rse)}")
        if not with_migration:
            print(f"  by effective period (truth 0 everywhere): {_coverage(run, 0.0, args.model_rse)}")
        print(f"  cost: {(engine.state.nbytes + engine.migration.nbytes) / n:.0f} B of state per "
              f"device ({engine.migration.nbytes / n:.0f} B migration, ring "
              f"{engine.state.ring_nights} nights); one night evaluated in {run['night_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
