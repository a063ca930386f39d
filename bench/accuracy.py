"""Accuracy against the simulator's truth (a benchmark: prints figures, asserts nothing).

    python bench/accuracy.py [--scenario astana|kz] [--scale S] [--days D] [--horizons 1h,6h]
    python bench/accuracy.py --suite [--scale 0.05] [--days 4] [--variants base,bursty]
        [--seed S | --seeds 1,2,3]
        [--no-transitions] [--stale 10m] [--model-rse M] [--away-rse A]
        [--transition-rse T] [--resident-model-rse R] [--state-reference-rse [--no-pool]]

Simulates a scenario in memory, fits calibration factors at the end of day 1 against the
scenario's independent reference population, keeps feeding the remaining days and, at every hour
end after day 1, compares present and resident per region with the truth, for each horizon in
the sweep (the device state does not depend on the horizon, so one run serves them all).
Scored: regions with at least --min-true true people (default 50 000, in simulated people).

``--suite`` runs every robustness variant of the scenario (its ``[variants]`` tables,
docs/SCENARIOS.md) at the default estimate settings and prints, per variant and local hour-of-day
bucket (night 22-06, morning 06-10, day 10-16, evening 16-22), MdAPE, p90 and 90 % interval
coverage of present and resident, then the worst variant per bucket, the "suite" rows (the
region-hours of all variants pooled, then scored per bucket) and, per bucket, how many variant
cells have interval coverage below / in / above 85-95 %. There the threshold is --min-people real
people (default 50 000), i.e. ``min_people * scale`` simulated people. ``--seeds 1,2,3`` runs the
suite once per seed and then pools the region-hours of every seed and variant.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from typing import Any

from estimators.accuracy import Accuracy, hour_bucket, score, score_by
from estimators.calibration import Calibration, shrink_factors
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.regions import regions_from_geojson
from estimators.units import DAY_MS, HOUR_MS
from stream.publish.snapshot import build_snapshot
from stream.simulator import simulate
from stream.simulator.scenario import load_scenario
from stream.sources.simulation import SimulationFeed
from stream.timefmt import iso_utc, parse_duration_ms, parse_iso_ms

BUCKETS = ("night", "morning", "day", "evening")
COVERAGE_BAND = (85.0, 95.0)
"""Interval coverage (%) the issue asks of every bucket (90 % intervals)."""


@dataclass
class Run:
    """One simulated run scored under several estimate settings (``label`` -> snapshots)."""

    name: str
    devices: int
    pings: int
    seconds: float
    utc_offset_h: int
    snaps: dict[str, list[dict[str, Any]]]
    truth: dict[str, dict]


def run(scenario: str, scale: float, days: float, seed: int, configs: dict[str, EstimateConfig],
        res: int = 8, state_reference_rse: bool = False, pool: bool = True) -> Run:
    """Simulate ``scenario`` (``NAME`` or ``NAME:VARIANT``), calibrate on day 1 and take a
    snapshot at every later hour end under each of ``configs``. ``state_reference_rse``: the
    calibration states the scenario's reference error (``calibrate --reference-rse``) and,
    with ``pool``, shrinks sibling factors (``--pool-siblings``)."""
    t0 = time.perf_counter()
    sc = load_scenario(scenario)
    sim = simulate(sc, scale=scale, days=days, seed=seed)
    regions = regions_from_geojson(sim.regions_geojson)
    base = next(iter(configs.values()))
    engine = Engine(regions, EngineConfig(res=res, estimate=base))
    feed = SimulationFeed(sim, engine, b"bench-accuracy-secret-key-000000")
    cal_end = sim.start_ms + DAY_MS
    snaps: dict[str, list[dict]] = {label: [] for label in configs}
    truth: dict[str, dict] = {}
    n_pings = 0
    for hour in feed.hours():
        n_pings += hour.pings
        if hour.end_ms == cal_end:
            rse = sc.reference_rse if state_reference_rse else 0.0
            rows = engine.fit_calibration(cal_end, sim.reference, rse)
            if pool:
                rows = shrink_factors(regions, rows, rse)
            engine.set_calibration(Calibration(rows))
        if hour.end_ms <= cal_end:
            continue
        truth[iso_utc(hour.end_ms)] = hour.truth
        for label, cfg in configs.items():
            engine.config = replace(engine.config, estimate=cfg)
            est = engine.estimate(hour.end_ms)
            snaps[label].append(build_snapshot(est, regions, engine.cells.res, sim.registry))
    return Run(scenario, len(sim.device_name), n_pings, time.perf_counter() - t0,
               sc.utc_offset_h, snaps, truth)


def bucket_key(utc_offset_h: int):
    """``at`` (ISO UTC, optionally ``TAG|`` in front, see :class:`Pool`) -> its local
    hour-of-day bucket name."""
    def key(at: str) -> str:
        ms = parse_iso_ms(at.rpartition("|")[2])
        return hour_bucket(int((ms // HOUR_MS + utc_offset_h) % 24))
    return key


@dataclass
class Pool:
    """Region-hours of several runs, to be scored as one sample.

    Runs share their instants (every variant of a seed starts at the same time), so each run's
    ``at`` is tagged ``TAG|at`` in both its snapshots and its truth; the per-region figures are
    kept, the rest of the snapshot (cells) is not.
    """

    snaps: list[dict[str, Any]]
    truth: dict[str, dict]
    utc_offset_h: dict[str, int]

    @classmethod
    def empty(cls) -> Pool:
        """A pool without runs."""
        return cls([], {}, {})

    def add(self, tag: str, r: Run, label: str) -> None:
        """Add run ``r``'s snapshots under setting ``label`` as ``tag`` (unique per pool)."""
        self.snaps += [{"at": f"{tag}|{s['at']}", "regions": s["regions"]}
                       for s in r.snaps[label]]
        self.truth.update({f"{tag}|{at}": t for at, t in r.truth.items()})
        self.utc_offset_h[tag] = r.utc_offset_h

    def extend(self, other: Pool) -> None:
        """Add every run of ``other`` (tags kept, so they must differ from this pool's)."""
        self.snaps += other.snaps
        self.truth.update(other.truth)
        self.utc_offset_h.update(other.utc_offset_h)

    def rows(self, min_true: float) -> dict[str, Accuracy]:
        """Scores of all pooled region-hours per local hour bucket (each run's own UTC
        offset), plus ``"all"``."""
        def key(at: str) -> str:
            return bucket_key(self.utc_offset_h[at.partition("|")[0]])(at)
        rows = score_by(self.snaps, self.truth, min_true, key)
        rows["all"] = score(self.snaps, self.truth, min_true)
        return rows


def bucket_rows(r: Run, label: str, min_true: float) -> dict[str, Accuracy]:
    """Scores of one run and setting per hour bucket, plus ``"all"``."""
    rows = score_by(r.snaps[label], r.truth, min_true, bucket_key(r.utc_offset_h))
    rows["all"] = score(r.snaps[label], r.truth, min_true)
    return rows


HEADER = (f"{'variant':<16} {'bucket':<8} {'n':>5} | {'present MdAPE':>13} {'p90':>6} "
          f"{'cover':>6} | {'resident MdAPE':>14} {'p90':>6} {'cover':>6}")


def fmt(name: str, bucket: str, a: Accuracy) -> str:
    """One table line."""
    return (f"{name:<16} {bucket:<8} {a.scored:>5} | {a.present_mape:>12.2f}% "
            f"{a.present_p90:>5.2f}% {a.present_coverage:>5.1f}% | {a.resident_mape:>13.2f}% "
            f"{a.resident_p90:>5.2f}% {a.resident_coverage:>5.1f}%")


def worst(table: dict[str, dict[str, Accuracy]]) -> dict[str, Accuracy]:
    """Per bucket, the worst value of each figure over the variants (a synthetic row)."""
    out = {}
    for b in (*BUCKETS, "all"):
        rows = [t[b] for t in table.values() if b in t]
        if not rows:
            continue
        out[b] = Accuracy(
            scored=sum(a.scored for a in rows),
            present_mape=max(a.present_mape for a in rows),
            present_p90=max(a.present_p90 for a in rows),
            present_coverage=min(a.present_coverage for a in rows),
            resident_mape=max(a.resident_mape for a in rows),
            resident_p90=max(a.resident_p90 for a in rows),
            resident_coverage=min(a.resident_coverage for a in rows))
    return out


def band_counts(table: dict[str, dict[str, Accuracy]], bucket: str) -> dict[str, tuple[int, ...]]:
    """Per figure (present, resident), how many variants' ``bucket`` cells have interval
    coverage below / in / above :data:`COVERAGE_BAND` (bounds inclusive)."""
    lo, hi = COVERAGE_BAND
    out = {}
    for fig in ("present", "resident"):
        cover = [getattr(t[bucket], f"{fig}_coverage") for t in table.values() if bucket in t]
        out[fig] = (sum(c < lo for c in cover), sum(lo <= c <= hi for c in cover),
                    sum(c > hi for c in cover))
    return out


def print_pooled(name: str, rows: dict[str, Accuracy]) -> None:
    """The pooled rows of a pool, per bucket and ``"all"``."""
    for b in (*BUCKETS, "all"):
        if b in rows:
            print(fmt(name, b, rows[b]))


def print_band_counts(table: dict[str, dict[str, Accuracy]]) -> None:
    """Per bucket, the variant cells below / in / above the coverage band, then the four
    buckets' cells summed."""
    lo, hi = COVERAGE_BAND

    def line(name: str, counts: dict[str, tuple[int, ...]]) -> str:
        cells = [" / ".join(map(str, counts[fig])) for fig in ("present", "resident")]
        return f"{name:<8} | {cells[0]:>12} | {cells[1]:>12}"

    print(f"variant cells with coverage below / in / above {lo:.0f}-{hi:.0f} % "
          f"({len(table)} cells per bucket):")
    print(f"{'bucket':<8} | {'present':>12} | {'resident':>12}")
    per_bucket = {b: band_counts(table, b) for b in (*BUCKETS, "all")}
    for b, counts in per_bucket.items():
        print(line(b, counts))
    summed = {fig: tuple(sum(per_bucket[b][fig][i] for b in BUCKETS) for i in range(3))
              for fig in ("present", "resident")}
    print(line("buckets", summed))


def suite_seed(args: argparse.Namespace, config: EstimateConfig, names: list[str],
               seed: int) -> tuple[dict[str, dict[str, Accuracy]], Pool]:
    """Run every variant at ``seed``; print the per-variant, per-bucket table, the worst
    variant, the pooled "suite" rows and the band counts. Returns the table and the pool."""
    min_true = args.min_people * args.scale
    print(f"suite {args.scenario} scale {args.scale} days {args.days} seed {seed}: "
          f"calibrated on day 1, regions >= {args.min_people:,.0f} true people "
          f"(= {min_true:,.0f} simulated), {config}")
    print(HEADER)
    table: dict[str, dict[str, Accuracy]] = {}
    pool = Pool.empty()
    t0 = time.perf_counter()
    for name in names:
        r = run(f"{args.scenario}:{name}", args.scale, args.days, seed, {"x": config},
                args.res, args.state_reference_rse, not args.no_pool)
        table[name] = bucket_rows(r, "x", min_true)
        pool.add(f"{seed}:{name}", r, "x")
        for b in (*BUCKETS, "all"):
            if b in table[name]:
                print(fmt(name, b, table[name][b]))
        print(f"{'':<16} ({r.devices:,} devices, {r.pings:,} pings, {r.seconds:.0f} s)", flush=True)
    print("worst over the variants (each figure separately):")
    for b, a in worst(table).items():
        print(fmt("WORST", b, a))
    print("all variants' region-hours pooled, per bucket:")
    print(HEADER)
    print_pooled("suite", pool.rows(min_true))
    print_band_counts(table)
    print(f"suite took {time.perf_counter() - t0:.0f} s", flush=True)
    return table, pool


def suite(args: argparse.Namespace, config: EstimateConfig) -> None:
    """Run every variant at each seed (``--seeds``, else ``--seed``) and print the tables;
    with several seeds, then the region-hours of every seed and variant pooled."""
    names = (args.variants.split(",") if args.variants
             else list(load_scenario(args.scenario).variants))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    tables: dict[str, dict[str, Accuracy]] = {}
    pool = Pool.empty()
    for seed in seeds:
        table, seed_pool = suite_seed(args, config, names, seed)
        tables.update({f"{seed}:{name}": rows for name, rows in table.items()})
        pool.extend(seed_pool)
    if len(seeds) < 2:
        return
    label = ",".join(map(str, seeds))
    print(f"seeds {label}: all variants' region-hours pooled, per bucket:")
    print(HEADER)
    print_pooled(f"suite {label}", pool.rows(args.min_people * args.scale))
    print("seeds " + label + ": ", end="")
    print_band_counts(tables)


def main() -> None:
    """Run the sweep (or the suite) and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="astana")
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--days", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--horizons", default="1h,3h,6h,12h,24h")
    ap.add_argument("--model-rse", type=float, default=EstimateConfig.model_rse)
    ap.add_argument("--min-true", type=float, default=50_000)
    ap.add_argument("--res", type=int, default=8)
    ap.add_argument("--suite", action="store_true", help="run every variant of the scenario")
    ap.add_argument("--variants", default="", help="with --suite: these variants only (a,b,c)")
    ap.add_argument("--seeds", default="", help="with --suite: each of these seeds (1,2,3), "
                    "then every seed's region-hours pooled")
    ap.add_argument("--min-people", type=float, default=50_000,
                    help="with --suite: score regions with at least this many real people")
    ap.add_argument("--away-rse", type=float, default=EstimateConfig.away_rse)
    ap.add_argument("--sibling-away-rse", type=float, default=EstimateConfig.sibling_away_rse)
    ap.add_argument("--transition-rse", type=float, default=EstimateConfig.transition_rse,
                    help="model-error rse of the people the stale-mover rule moves")
    ap.add_argument("--resident-model-rse", type=float, default=EstimateConfig.resident_model_rse,
                    help="model-error rse of the resident interval")
    ap.add_argument("--stale", default="10m", help="stale movers are re-placed from this age "
                    "(10-minute steps; default 10m, the engine's)")
    ap.add_argument("--no-transitions", action="store_true",
                    help="keep stale devices where they were (the estimator before issue 13)")
    ap.add_argument("--state-reference-rse", action="store_true",
                    help="calibrate stating the scenario's reference error (calibrate "
                         "--reference-rse), which also pools sibling factors")
    ap.add_argument("--no-pool", action="store_true",
                    help="with --state-reference-rse: do not pool (calibrate --no-pool-siblings)")
    args = ap.parse_args()

    base = EstimateConfig(model_rse=args.model_rse, away_rse=args.away_rse,
                          sibling_away_rse=args.sibling_away_rse,
                          transition_rse=args.transition_rse,
                          resident_model_rse=args.resident_model_rse,
                          stale_ms=parse_duration_ms(args.stale),
                          transitions=not args.no_transitions)
    if args.suite:
        suite(args, base)
        return
    horizons = [parse_duration_ms(h) for h in args.horizons.split(",")]
    configs = {str(h): replace(base, horizon_ms=h) for h in horizons}
    r = run(args.scenario, args.scale, args.days, args.seed, configs, args.res,
            args.state_reference_rse, not args.no_pool)
    print(f"{args.scenario} scale {args.scale} days {args.days} seed {args.seed}: "
          f"{r.devices:,} devices, {r.pings:,} pings, {r.seconds:.0f} s; "
          f"calibrated on day 1, scored {len(r.truth)} hours, regions >= {args.min_true:,.0f} "
          f"true people, model_rse {args.model_rse}, resident_model_rse "
          f"{args.resident_model_rse}")
    for h in horizons:
        try:
            acc = score(r.snaps[str(h)], r.truth, args.min_true)
        except ValueError as exc:
            print(f"horizon {h / HOUR_MS:>5.1f} h: {exc}")
            continue
        print(f"horizon {h / HOUR_MS:>5.1f} h: {acc.line()}")


if __name__ == "__main__":
    main()
