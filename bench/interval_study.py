"""Region-hour records of the present interval from :mod:`bench.interval_dump` pickles.

    python bench/interval_study.py --seeds 1,2,3,4 [--dump /tmp/idump] [--out /tmp/irec.npz]
    python bench/interval_study.py --report [--out /tmp/irec.npz]

For every scored region-hour (truth >= 2 500 simulated people, as ``--suite``) of every dumped
variant: the present estimate, the truth, and the parts of its sd (``sd² = base² + (M·home +
A·away)² + (T·moved)²``, exact for the estimate's code up to b4014a4) plus candidate predictors
of the error, all computed from the tally and the calibration only. The ninth pass (89ca0ad)
changed the model terms (one draw per region, in quadrature over a parent's subtree, and a
sibling term): on later code ``current_sd`` no longer rebuilds the estimate's own sd; to
reproduce this study, run it in a worktree of c4a4324 (its code), and use
:mod:`bench.interval_terms` for the current terms. Saved as one ``.npz`` of columns.
``--report`` prints the diagnosis (docs/BENCHMARKS.md, "Present interval: what predicts the
error", issue 13 seventh pass): cells below / in / above 85-95 % per seed under the constant
terms, oracles that know each run's error size, and the correlation of each candidate
predictor with the error size of a run-region-bucket.
"""

from __future__ import annotations

import argparse
import glob
import os
import pickle
from dataclasses import replace

import numpy as np

from estimators.accuracy import hour_bucket
from estimators.calibration import Calibration
from estimators.estimate import EstimateConfig, estimate_from_tally
from estimators.routine import transition_shift
from estimators.units import HOUR_MS

BUCKETS = ("night", "morning", "day", "evening")


def records(path: str, seed: int, min_true: float = 2500.0) -> dict[str, list]:
    """The records of one dumped variant."""
    with open(path, "rb") as f:
        d = pickle.load(f)
    regions = d["regions"]
    variant = os.path.basename(path)[:-4]
    cal = Calibration(d["rows"])
    n = len(regions.ids)
    subtree = regions.subtree.astype(np.float64)
    zero = replace(EstimateConfig(), model_rse=0.0, away_rse=0.0, sibling_away_rse=0.0,
                   transition_rse=0.0)
    out: dict[str, list] = {}

    def put(**kw):
        for k, v in kw.items():
            out.setdefault(k, []).append(v)

    for at_ms, tally, truth in d["hours"]:
        factors = cal.resolve(regions, tally.operators)
        est = estimate_from_tally(tally, regions, factors, zero)
        cov = np.where(tally.n_present > 0, tally.n_present / np.maximum(tally.n_active, 1), 1.0)
        pc = tally.present_cls.astype(np.int64)
        w = factors.factor[tally.present_factor_region.astype(np.int64), pc] / cov[pc]
        where = tally.present_region.astype(np.int64)
        cnt = tally.present_count.astype(np.float64)
        away = tally.present_region != tally.present_factor_region
        people_away = subtree @ np.bincount(where, weights=cnt * w * away, minlength=n)
        m_cls = tally.mover_cls.astype(np.int64)
        m_w = factors.factor[tally.mover_home.astype(np.int64), m_cls] / cov[m_cls]
        u_cls = tally.unhoused_cls.astype(np.int64)
        u_w = factors.factor[tally.unhoused_here.astype(np.int64), u_cls] / cov[u_cls]
        s0 = transition_shift(tally, m_w, subtree, 600_000, 0.0, u_w)
        s1 = transition_shift(tally, m_w, subtree, 600_000, 1.0, u_w)
        moved = np.sqrt(np.maximum(s1[1] - s0[1], 0.0))
        shift_abs = np.abs(subtree @ s0[0])
        # per-class present people (one factor per region: class mix differences only)
        per_cls = np.zeros((n, 256))
        np.add.at(per_cls, (where, pc), cnt * w)
        per_cls = subtree @ per_cls
        # movers by age: stale (>= 1 h) movers' people last seen in the region
        age = tally.mover_age_10min.astype(np.int64)
        m_here = np.where(tally.mover_at_day.astype(bool), tally.mover_day, tally.mover_home)
        mc = tally.mover_count.astype(np.float64) * m_w
        stale = subtree @ np.bincount(m_here.astype(np.int64), weights=mc * (age >= 6),
                                      minlength=n)
        movers = subtree @ np.bincount(m_here.astype(np.int64), weights=mc, minlength=n)
        unh = subtree @ np.bincount(tally.unhoused_here.astype(np.int64),
                                    weights=tally.unhoused_count * u_w, minlength=n)
        # people per (figure region, factor region): reference errors are per factor row
        fr = tally.present_factor_region.astype(np.int64)
        by_f = np.zeros((n, n + 1))
        np.add.at(by_f, (where, fr), cnt * w)
        by_f = subtree @ by_f
        q_ref = np.sqrt((by_f**2).sum(axis=1))
        inside_f = np.zeros((n, n + 1))
        inside_f[:, :n] = subtree
        away_sub = (by_f * (1 - inside_f)).sum(axis=1)
        q_away = np.sqrt(((by_f * (1 - inside_f))**2).sum(axis=1))
        q_home = np.sqrt(((by_f * inside_f)**2).sum(axis=1))
        # residents present outside the figure's region: factor region inside, present outside
        pres_in = subtree[:, where]  # [region, row]: row present inside
        fac_in = subtree[:, np.minimum(fr, n - 1)] * (fr < n)
        outflow = (fac_in * (1 - pres_in)) @ (cnt * w)
        # people at cells that have pieces in more than one region (border cells)
        cell_u, cinv = np.unique(tally.present_cell, return_inverse=True)
        n_reg_of = np.zeros(cell_u.size)
        pairs = np.unique(cinv.reshape(-1) * (n + 1) + where)
        np.add.at(n_reg_of, pairs // (n + 1), 1)
        border = subtree @ np.bincount(where, weights=cnt * w * (n_reg_of[cinv.reshape(-1)] > 1),
                                       minlength=n)
        z = EstimateConfig().z
        local = int((at_ms // HOUR_MS + d["utc_offset_h"]) % 24)
        for i, rid in enumerate(regions.ids):
            t = truth.get(rid)
            if t is None or min(t["present"], t["resident"]) < min_true:
                continue
            if np.isnan(est.present[i]):
                continue
            total = est.present[i]
            put(seed=seed, variant=variant, region=rid, at=at_ms, hour=local,
                bucket=BUCKETS.index(hour_bucket(local)), est=total, truth=t["present"],
                base=(est.present_hi[i] - total) / z, home=total - people_away[i],
                away=people_away[i], moved=moved[i], shift=shift_abs[i],
                devices=est.present_devices[i], resident=est.resident[i],
                true_resident=t["resident"], stale=stale[i], movers=movers[i], unhoused=unh[i],
                cls_max=per_cls[i].max() / max(total, 1.0), q_ref=q_ref[i],
                q_home=q_home[i], q_away=q_away[i], away_sub=away_sub[i],
                outflow=outflow[i], border=border[i])
    return out


def main() -> None:
    """Collect the records of every dumped variant at the given seeds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3,4")
    ap.add_argument("--dump", default="/tmp/idump")
    ap.add_argument("--out", default="/tmp/irec.npz")
    ap.add_argument("--report", action="store_true", help="print the diagnosis of --out")
    args = ap.parse_args()
    if args.report:
        report(args.out)
        return
    cols: dict[str, list] = {}
    for s in args.seeds.split(","):
        for path in sorted(glob.glob(os.path.join(args.dump, s, "*.pkl"))):
            for k, v in records(path, int(s)).items():
                cols.setdefault(k, []).extend(v)
    np.savez(args.out, **{k: np.asarray(v) for k, v in cols.items()})
    print(f"{len(cols.get('est', []))} region-hours -> {args.out}")


Z = 1.645


def cell_coverage(d: dict[str, np.ndarray], sd: np.ndarray) -> dict[tuple, float]:
    """Present coverage (%) per (seed, variant, bucket) cell under the sd ``sd`` (people)."""
    inside = np.abs(d["est"] - d["truth"]) <= Z * sd
    key = np.char.add(np.char.add(d["seed"].astype(str), "|" + d["variant"]),
                      "|" + d["bucket"].astype(str))
    u, inv = np.unique(key, return_inverse=True)
    share = np.bincount(inv, inside) / np.bincount(inv)
    return {tuple(k.split("|")): 100.0 * s for k, s in zip(u, share, strict=True)}


def band(cov: dict[tuple, float], seeds: list[str]) -> str:
    """``below/in/above`` 85-95 % and the worst cell over the cells of ``seeds``."""
    v = np.array([x for k, x in cov.items() if k[0] in seeds])
    return f"{(v < 85).sum()}/{((v >= 85) & (v <= 95)).sum()}/{(v > 95).sum()} w{v.min():.1f}"


def current_sd(d: dict[str, np.ndarray], m: float = 0.006, a: float = 0.04, t: float = 0.15,
               phi: float = 0.0) -> np.ndarray:
    """The present sd (people) with constant terms ``m``, ``a``, ``t`` and, with ``phi``, a
    counting term ``phi * sum(w^2)`` over the region's devices (approximated by est * w_mean)."""
    w2 = d["est"] * d["est"] / np.maximum(d["devices"], 1.0)
    return np.sqrt(d["base"] ** 2 + (m * d["home"] + a * d["away"]) ** 2
                   + (t * d["moved"]) ** 2 + phi * w2)


def report(path: str) -> None:
    """Print the diagnosis tables of docs/BENCHMARKS.md (interval, seventh pass)."""
    d = dict(np.load(path))
    seeds = [str(s) for s in sorted(set(d["seed"].tolist()))]
    fit = [s for s in seeds if s != "4"]

    def line(label: str, sd: np.ndarray) -> None:
        cov = cell_coverage(d, sd)
        print(f"{label:<34} fit {band(cov, fit):<16} "
              + " ".join(f"s{s} {band(cov, [s])}" for s in seeds))

    line("constant terms (defaults)", current_sd(d))
    rel = (d["est"] - d["truth"]) / d["truth"]
    run = np.char.add(np.char.add(d["seed"].astype(str), d["variant"]), d["region"])
    _, inv = np.unique(run, return_inverse=True)
    const = (np.bincount(inv, rel) / np.bincount(inv))[inv]
    print(f"rms error {100 * np.sqrt((rel**2).mean()):.2f} %: per run-region constant "
          f"{100 * np.sqrt((const**2).mean()):.2f} %, rest "
          f"{100 * np.sqrt(((rel - const)**2).mean()):.2f} %")
    inside = np.abs(d["est"] - d["truth"]) <= Z * current_sd(d)
    print("region, bucket: coverage % / rms error % / median sd %")
    for r in np.unique(d["region"]):
        parts = []
        for b in range(4):
            m = (d["region"] == r) & (d["bucket"] == b)
            parts.append(f"{100 * inside[m].mean():5.1f} / {100 * np.sqrt((rel[m]**2).mean()):.2f}"
                         f" / {100 * np.median(current_sd(d)[m] / d['est'][m]):.2f}")
        print(f"  {r:<16} " + " | ".join(parts))
    err = np.abs(d["est"] - d["truth"])
    for name, parts in (("run", ("seed", "variant", "region", "bucket")),
                        ("seed-region", ("seed", "region", "bucket")),
                        ("variant-region", ("variant", "region", "bucket"))):
        key = d[parts[0]].astype(str)
        for p in parts[1:]:
            key = np.char.add(np.char.add(key, "|"), d[p].astype(str))
        _, kinv = np.unique(key, return_inverse=True)
        rms = np.sqrt(np.bincount(kinv, err**2) / np.bincount(kinv))[kinv]
        for k in (1.3, 1.45, 1.6):
            line(f"oracle {name} x{k}", k * rms / Z)
    rel_abs = np.abs(rel)
    _, binv = np.unique(np.char.add(run, d["bucket"].astype(str)), return_inverse=True)
    n = np.bincount(binv)

    def mean(x: np.ndarray) -> np.ndarray:
        return np.bincount(binv, x) / n

    y = np.log(np.sqrt(mean(rel_abs**2)))
    sd_now = np.log(mean(current_sd(d) / d["est"]))
    resid = y - np.polyval(np.polyfit(sd_now, y, 1), sd_now)
    ratio = d["est"] / d["resident"]
    feats = {k: mean(d[k] / d["est"]) for k in ("away", "outflow", "moved", "stale",
                                                 "unhoused", "border", "shift")}
    feats["1/sqrt(devices)"] = mean(1 / np.sqrt(d["devices"]))
    feats["|present-resident|"] = mean(np.abs(ratio - 1))
    feats["hourly sd of present/resident"] = np.sqrt(np.maximum(mean(ratio**2)
                                                                - mean(ratio)**2, 0))
    print(f"log rms error per run-region-bucket: corr with log current sd "
          f"{np.corrcoef(y, sd_now)[0, 1]:+.2f}")
    for k, x in feats.items():
        lx = np.log(np.maximum(x, 1e-6))
        print(f"  {k:<30} corr {np.corrcoef(y, lx)[0, 1]:+.2f}, after the current sd "
              f"{np.corrcoef(resid, lx)[0, 1]:+.2f}")
    for phi, t in ((0.03, 0.1), (0.06, 0.05), (0.1, 0.05), (0.06, 0.15)):
        line(f"counting phi {phi}, transition {t}", current_sd(d, t=t, phi=phi))


if __name__ == "__main__":
    main()
