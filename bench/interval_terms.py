"""Re-score the suite's 90 % intervals on a grid of the model-error terms (a benchmark).

    python bench/interval_terms.py --seeds 1,2,3,4 [--dump /tmp/idump] [--parts /tmp/iterms.npz]
    python bench/interval_terms.py --report [--parts /tmp/iterms.npz[,more.npz]] [--fit 1,2,3]
        [--held 4]

The first form reads the :mod:`bench.interval_dump` pickles and saves, for every scored
region-hour (truth >= 2 500 simulated people in present and resident, as ``accuracy.py
--suite``), the present and resident estimates, the truth and the parts of their sd, taken from
the estimate itself at unit terms (so exact for its code)::

    present sd² = base² + Σ_{q in subtree} (model_rse·home_q + sibling_away_rse·sibling_q
                                            + away_rse·away_q)² + (transition_rse·moved)²
    resident sd² = resident_base² + Σ_{q in subtree} (resident_model_rse·resident_q)²

``--report`` scores the present interval on a grid of (model_rse, sibling_away_rse,
away_rse, transition_rse)
and the resident one on a grid of resident_model_rse under the pooled reading of issue 13 (all
variants' region-hours pooled per local hour-of-day bucket): a setting is chosen on the
``--fit`` seeds pooled (every bucket in 85-95 %, the worst bucket farthest inside the band) and
shown on the ``--held`` seed, with the variant cells (seed × variant × bucket) below / in /
above the band. MdAPE and p90 do not depend on these terms.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import pickle
import time
from dataclasses import replace

import numpy as np

from estimators.accuracy import hour_bucket
from estimators.calibration import Calibration
from estimators.estimate import EstimateConfig, estimate_from_tally
from estimators.units import HOUR_MS

BUCKETS = ("night", "morning", "day", "evening")
BAND = (85.0, 95.0)
DEFAULT = EstimateConfig()
Z = DEFAULT.z


UNIT_TERMS = {"hh": {"model_rse": 1.0, "resident_model_rse": 1.0}, "ss": {"sibling_away_rse": 1.0},
              "aa": {"away_rse": 1.0}, "hs": {"model_rse": 1.0, "sibling_away_rse": 1.0},
              "ha": {"model_rse": 1.0, "away_rse": 1.0},
              "sa": {"sibling_away_rse": 1.0, "away_rse": 1.0},
              "moved": {"transition_rse": 1.0}}
"""Present model-error terms at unit size whose variance the parts read off the estimate (the
resident term rides with ``hh``: the two figures' intervals do not mix)."""


def parts(path: str, seed: int, min_true: float = 2500.0, check_every: int = 6
          ) -> dict[str, list]:
    """Per scored region-hour of one dumped variant: ids, estimates, truth and sd parts (people²).

    A region's present model variance is a quadratic form in the three model terms (each
    region's own error is ``model_rse·home + sibling_away_rse·sibling + away_rse·away``, a
    parent's are those of its subtree in quadrature), so it is read off
    :func:`estimate_from_tally` at unit terms: ``base``/``r_base`` are the present/resident
    variance at all terms 0, ``hh``, ``ss``, ``aa`` the added variance at one term 1, ``hs``,
    ``ha``, ``sa`` the cross terms (from two terms at 1), ``moved`` that at ``transition_rse``
    1 and ``r_q`` that at ``resident_model_rse`` 1. ``check`` (every ``check_every``-th
    hour, else 0) is the largest relative difference between the sd rebuilt from the parts at
    the default terms and the default estimate's own (should be ~1e-12)."""
    with open(path, "rb") as f:
        d = pickle.load(f)
    regions, variant = d["regions"], os.path.basename(path)[:-4]
    cal = Calibration(d["rows"])
    zero = replace(DEFAULT, model_rse=0.0, away_rse=0.0, sibling_away_rse=0.0,
                   transition_rse=0.0, resident_model_rse=0.0)
    out: dict[str, list] = {}
    for n_hour, (at_ms, tally, truth) in enumerate(d["hours"]):
        factors = cal.resolve(regions, tally.operators)
        e0 = estimate_from_tally(tally, regions, factors, zero)
        var = {"base": ((e0.present_hi - e0.present) / Z) ** 2,
               "r_base": ((e0.resident_hi - e0.resident) / Z) ** 2}
        for k, terms in UNIT_TERMS.items():
            e = estimate_from_tally(tally, regions, factors, replace(zero, **terms))
            var[k] = ((e.present_hi - e.present) / Z) ** 2 - var["base"]
            if "resident_model_rse" in terms:
                var["r_q"] = ((e.resident_hi - e.resident) / Z) ** 2 - var["r_base"]
        for k, (a, b) in {"hs": ("hh", "ss"), "ha": ("hh", "aa"), "sa": ("ss", "aa")}.items():
            var[k] = (var[k] - var[a] - var[b]) / 2.0
        check = np.zeros(len(regions.ids))
        if n_hour % check_every == 0:
            ed = estimate_from_tally(tally, regions, factors, DEFAULT)
            sd_def = present_sd(var, DEFAULT.model_rse, DEFAULT.sibling_away_rse,
                                DEFAULT.away_rse, DEFAULT.transition_rse)
            r_def = resident_sd(var, DEFAULT.resident_model_rse)
            check = np.maximum(np.abs(sd_def / ((ed.present_hi - ed.present) / Z) - 1),
                               np.abs(r_def / ((ed.resident_hi - ed.resident) / Z) - 1))
        local = int((at_ms // HOUR_MS + d["utc_offset_h"]) % 24)
        for i, rid in enumerate(regions.ids):
            t = truth.get(rid)
            if t is None or min(t["present"], t["resident"]) < min_true:
                continue
            if np.isnan(e0.present[i]) or np.isnan(e0.resident[i]):
                continue
            for k, v in (("seed", seed), ("variant", variant), ("region", rid), ("hour", local),
                         ("bucket", BUCKETS.index(hour_bucket(local))),
                         ("est", e0.present[i]), ("truth", t["present"]),
                         ("r_est", e0.resident[i]), ("r_truth", t["resident"]),
                         ("check", check[i])):
                out.setdefault(k, []).append(v)
            for k, v in var.items():
                out.setdefault(k, []).append(v[i])
    return out


def covered(est: np.ndarray, truth: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Whether the published interval (ends rounded to whole people, as the snapshot's, the
    lower one at least 0) holds the truth, ``bool[n]``."""
    return ((np.rint(np.maximum(est - Z * sd, 0.0)) <= truth)
            & (truth <= np.rint(est + Z * sd)))


def present_sd(d: dict[str, np.ndarray], m: float, s: float, a: float, t: float) -> np.ndarray:
    """Present sd (people, ``float64[n]``) under ``model_rse`` ``m``, ``sibling_away_rse``
    ``s``, ``away_rse`` ``a`` and ``transition_rse`` ``t``."""
    var = (d["base"] + m * m * d["hh"] + s * s * d["ss"] + a * a * d["aa"]
           + 2 * (m * s * d["hs"] + m * a * d["ha"] + s * a * d["sa"]) + t * t * d["moved"])
    return np.sqrt(np.maximum(var, 0.0))


def resident_sd(d: dict[str, np.ndarray], r: float) -> np.ndarray:
    """Resident sd (people, ``float64[n]``) under ``resident_model_rse`` ``r``."""
    return np.sqrt(np.maximum(d["r_base"] + r * r * d["r_q"], 0.0))


def bucket_coverage(inside: np.ndarray, bucket: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Coverage (%) per bucket, ``float64[4]``, of the region-hours in ``mask`` pooled."""
    return 100.0 * (np.bincount(bucket[mask], inside[mask], minlength=4)
                    / np.maximum(np.bincount(bucket[mask], minlength=4), 1))


def cells(inside: np.ndarray, cell: np.ndarray, mask: np.ndarray) -> tuple[int, int, int, float]:
    """Cells (``cell`` ids, e.g. seed × variant × bucket) below / in / above the band, and the
    lowest cell's coverage (%)."""
    n = np.bincount(cell[mask])
    cov = 100.0 * np.bincount(cell[mask], inside[mask], minlength=n.size)[n > 0] / n[n > 0]
    return (int((cov < BAND[0]).sum()), int(((cov >= BAND[0]) & (cov <= BAND[1])).sum()),
            int((cov > BAND[1]).sum()), round(float(cov.min()), 1))


def margin(cov: np.ndarray) -> float:
    """Distance (points) of the worst bucket inside the band (negative: outside)."""
    return float(np.min(np.minimum(cov - BAND[0], BAND[1] - cov)))


def fmt_cov(cov: np.ndarray) -> str:
    """Four bucket coverages, out-of-band ones starred."""
    return " ".join(f"{c:5.1f}{'*' if not BAND[0] <= c <= BAND[1] else ' '}" for c in cov)


def report(path: str, fit: list[int], held: list[int]) -> None:
    """Print the reproduction at the defaults, the grids and the per-bucket diagnosis."""
    files = [dict(np.load(p)) for p in path.split(",")]
    d = {k: np.concatenate([f[k] for f in files]) for k in files[0]}
    print(f"{d['est'].size} region-hours; parts check: max rel sd difference "
          f"{d['check'].max():.1e}")
    seed, bucket = d["seed"], d["bucket"]
    _, cell = np.unique(np.char.add(np.char.add(seed.astype(str), "|" + d["variant"]),
                                    "|" + bucket.astype(str)), return_inverse=True)
    f_mask, h_mask = np.isin(seed, fit), np.isin(seed, held)
    seeds = sorted(set(seed.tolist()))
    err = np.abs(d["est"] - d["truth"])

    def p_in(sd: np.ndarray) -> np.ndarray:
        return covered(d["est"], d["truth"], sd)

    def r_in(sd: np.ndarray) -> np.ndarray:
        return covered(d["r_est"], d["r_truth"], sd)
    print("defaults, coverage % night/morning/day/evening (* outside 85-95):")
    dm, ds, da, dt = (DEFAULT.model_rse, DEFAULT.sibling_away_rse, DEFAULT.away_rse,
                      DEFAULT.transition_rse)
    for fig, inside in (("present", p_in(present_sd(d, dm, ds, da, dt))),
                        ("resident", r_in(resident_sd(d, DEFAULT.resident_model_rse)))):
        for s in seeds:
            m = seed == s
            print(f"  {fig:<8} seed {s}     {fmt_cov(bucket_coverage(inside, bucket, m))} "
                  f"cells {cells(inside, cell, m)}")
        all_ = np.ones_like(f_mask)
        print(f"  {fig:<8} seeds all  {fmt_cov(bucket_coverage(inside, bucket, all_))} "
              f"cells {cells(inside, cell, all_)}")

    def row(label: str, inside: np.ndarray) -> tuple[tuple[float, int], str]:
        """Sort key (worst bucket's margin on the fit seeds, then fit cells out of band, both
        best first) and the printed line."""
        fc, hc = bucket_coverage(inside, bucket, f_mask), bucket_coverage(inside, bucket, h_mask)
        ac = bucket_coverage(inside, bucket, f_mask | h_mask)
        fit_cells = cells(inside, cell, f_mask)
        return (-margin(fc), fit_cells[0] + fit_cells[2]), (
            f"{label} | {fmt_cov(fc)} {margin(fc):+5.1f} | {fmt_cov(hc)} | {fmt_cov(ac)} | "
            f"{fit_cells} {cells(inside, cell, h_mask)}")

    head = (f"fit seeds {fit} pooled: n/m/d/e, margin | held {held}: n/m/d/e | all: n/m/d/e | "
            "cells b/i/a/worst fit, held")
    ms = (0.0, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.01, 0.015)
    ss = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04)
    as_ = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06)
    ts = (0.0, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25)
    rows = [(*row(f"m {m:.3f} s {s:.3f} a {a:.3f} t {t:.3f}", inside), (m, s, a, t),
             cells(inside, cell, f_mask))
            for m, s, a, t in itertools.product(ms, ss, as_, ts)
            for inside in (p_in(present_sd(d, m, s, a, t)),)]
    rows.sort(key=lambda r: r[0])
    print(f"present, {len(rows)} settings, best 15 by margin; {head}")
    for _, text, _, _ in rows[:15]:
        print("  " + text)
    print("present, the trade-off with the per-variant reading: for each number of fit cells "
          "below 85 %, the setting with the best margin (if better than any with fewer below):")
    best = -np.inf
    for k in range(0, 40):
        cand = [r for r in rows if r[3][0] == k]
        if cand and -cand[0][0][0] > best:
            best = -cand[0][0][0]
            print("  " + cand[0][1])
    print("present, defaults and one term at a time (others at the defaults):")
    for _, text, key, _ in sorted(rows, key=lambda r: r[2]):
        if sum(x != y for x, y in zip(key, (dm, ds, da, dt), strict=True)) <= 1:
            print("  " + text)
    best_key = rows[0][2]
    for label, key in (("defaults", (dm, ds, da, dt)), ("best margin", best_key)):
        print(f"present per region, {label} {key}, coverage % n/m/d/e (fit seeds | held):")
        inside = p_in(present_sd(d, *key))
        for rid in sorted(set(d["region"].tolist())):
            r = d["region"] == rid
            print(f"  {rid:<18} {fmt_cov(bucket_coverage(inside, bucket, r & f_mask))} | "
                  f"{fmt_cov(bucket_coverage(inside, bucket, r & h_mask))}")
    print(f"resident; {head}")
    for r in (0.0, 0.004, 0.0045, 0.0048, 0.005, 0.0052, 0.0055, 0.006, 0.0065, 0.007):
        print("  " + row(f"r {r:.4f}", r_in(resident_sd(d, r)))[1])
    # what a bucket-independent setting can do: per bucket, the size of each term, and the
    # uniform sd scale / the transition_rse that would bring that bucket alone to 90 %
    sd0 = present_sd(d, dm, ds, da, dt)
    terms = {"base": np.sqrt(d["base"]), "m·home": dm * np.sqrt(d["hh"]),
             "s·sibling": ds * np.sqrt(d["ss"]), "a·away": da * np.sqrt(d["aa"]),
             "t·moved": dt * np.sqrt(d["moved"]), "sd": sd0}
    print("present at the defaults, per bucket (fit seeds): median of each sd term as % of the "
          "estimate, |error| p90 / z as % of the estimate, the sd scale that gives 90 %, and "
          "the smallest transition_rse giving >= 90 % (others at the defaults):")
    print("  bucket   " + " ".join(f"{k:>7}" for k in terms) + "  p90/z   scale  t90")
    for b, name in enumerate(BUCKETS):
        m = f_mask & (bucket == b)
        sub = {k: v[m] for k, v in d.items()}
        t90 = next((t for t in np.arange(0.0, 0.601, 0.005)
                    if covered(sub["est"], sub["truth"], present_sd(sub, dm, ds, da, t)).mean()
                    >= 0.90),
                   float("nan"))
        print(f"  {name:<8} " + " ".join(f"{100 * np.median(v[m] / d['est'][m]):7.2f}"
                                         for v in terms.values())
              + f"  {100 * np.quantile(err[m] / d['est'][m], 0.9) / Z:5.2f}"
              + f"  x{np.quantile(err[m] / (Z * sd0[m]), 0.90):.2f}  {t90:.3f}")

def main() -> None:
    """Collect the parts (``--seeds``) or print the report (``--report``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3,4")
    ap.add_argument("--dump", default="/tmp/idump")
    ap.add_argument("--parts", default="/tmp/iterms.npz")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--fit", default="1,2,3")
    ap.add_argument("--held", default="4")
    args = ap.parse_args()
    if args.report:
        report(args.parts, [int(s) for s in args.fit.split(",")],
               [int(s) for s in args.held.split(",")])
        return
    t0 = time.perf_counter()
    cols: dict[str, list] = {}
    for s in args.seeds.split(","):
        for path in sorted(glob.glob(os.path.join(args.dump, s, "*.pkl"))):
            for k, v in parts(path, int(s)).items():
                cols.setdefault(k, []).extend(v)
    np.savez(args.parts, **{k: np.asarray(v) for k, v in cols.items()})
    print(f"{len(cols.get('est', []))} region-hours -> {args.parts} "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
