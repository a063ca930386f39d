"""Stale movers at the daily transitions: where a device is that has not pinged since it left.

A device's last ping says where it *was*. Around the daily transitions (leaving for work,
coming home) a device that has been silent for an hour or more may well have moved since. The
devices for which this matters are the *movers*: devices with a home region (modal night
region, :meth:`PresenceState.home_region`) and a different *daytime region* (region of their
latest ping in the local day window, :meth:`PresenceState.day_region`) whose last ping is at
one of the two. For them the tally keeps, instead of nothing, the counts

    (home region N, daytime region D, last seen at D?, age bucket (10-minute steps), class)

(:func:`mover_rows`), which add up across partitions like every tally row. At estimate time
(:func:`transition_shift`), on the summed counts:

- ``p_now``: the share of *fresh* movers (last ping less than ``stale_ms`` old, default one
  age step, 10 min) seen at their daytime region: where the movers are now, measured;
- ``p_b``: the share of the movers last seen ``b`` steps ago (age bucket ``b``) seen at their
  daytime region: where the movers were then, measured from the same devices that went silent
  (a device's silence is taken as independent of where it is);
- the stale movers of bucket ``b`` are moved, in expectation, by the smallest flow that turns
  ``p_b`` into ``p_now``: if ``p_now > p_b``, a share ``m = (p_now - p_b) / (1 - p_b)`` of those
  last seen at home go to their daytime region; otherwise ``m = (p_b - p_now) / p_b`` of those
  last seen at their daytime region go home. The others stay where they were seen.

The age steps are short (:data:`AGE_STEP_MS`) because the fresh movers are themselves where
they *were*: with whole-hour buckets, ``p_now`` came from pings 0-59 min old (about 30 min on
average at the morning peak), lagged the flow by that much, and the movers of that first hour
were never re-placed; against the simulator's truth that left about two thirds of a suburb's
morning error (docs/BENCHMARKS.md, issue 13, fifth pass).

Domestic devices without a home yet (no night seen: low-rate or new SIMs; by day on the
simulator, with roamers, a quarter of the present devices on its second day, an eighth on the
third, a twelfth on the fourth, so most of it is warm-up) but with a daytime region are
counted too, by (region of the last ping, daytime region, age bucket, class)
(:data:`UNHOUSED_FIELDS`), and so are the housed devices whose daytime region is their home,
seen there, by (region, age bucket) (:data:`STAYER_FIELDS`). Such a device moves with the
housed movers' ``m`` of its age bucket: seen away from its daytime region when the bucket moves
to work, as a mover seen at home; seen at its daytime region when the bucket moves home, with
probability ``m`` times the share of movers among the housed devices seen at that region in
the same bucket (the others live there), to the homes of that region's movers in proportion.
Kept where they were, they carried about a third of what was left of a region's transition
error after the 10-minute steps (docs/BENCHMARKS.md, fifth pass).

Each moved-or-not device is a Bernoulli(``m``) draw between two regions, which gives the
interval its *transition* variance: ``w^2 m (1 - m)`` on every region (or parent region)
holding exactly one of the two candidates, plus the sampling error of ``m`` itself (from the
binomial errors of ``p_now`` and ``p_b``), shared by all the devices of a bucket, plus a model
error: ``m`` rests on a device's silence being independent of where it is, which it is not
(a device goes quiet on the road, or at home in the evening), so the people the rule moves in
or out of a region carry a relative error ``model_rse`` (``EstimateConfig.transition_rse``),
summed over the region's movers before squaring (one wrong ``m`` moves them all). Everything
here is a function of the tally (live = replay, partitions add up); nothing is fitted to a
generator. Cells (the map) keep every device at its last cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from estimators.units import MINUTE_MS

MOVER_FIELDS = ("mover_home", "mover_day", "mover_at_day", "mover_age_10min", "mover_cls",
                "mover_count")
"""Tally columns of the mover counts (one row per distinct key, see the module text)."""
UNHOUSED_FIELDS = ("unhoused_here", "unhoused_day", "unhoused_age_10min", "unhoused_cls",
                   "unhoused_count")
"""Tally columns of the present domestic devices without a home yet that have a daytime region:
(region of the last ping, daytime region, age bucket, class)."""
STAYER_FIELDS = ("stayer_region", "stayer_age_10min", "stayer_count")
"""Tally columns of the housed present devices whose daytime region is their home region and
who were last seen there: (that region, age bucket)."""
AGE_STEP_MS = 10 * MINUTE_MS
"""Width of a mover age bucket (``mover_age_10min``); ``stale_ms`` is a multiple of it."""
MAX_AGE_BUCKET = 255
"""Last age bucket (ages from 42.5 h on share it)."""


def mover_rows(candidate: np.ndarray, home: np.ndarray, day: np.ndarray, here: np.ndarray,
               age_ms: np.ndarray, cls: np.ndarray) -> dict[str, np.ndarray]:
    """Count the movers among ``candidate`` devices (bool[n]: present and housed).

    ``home``/``day``/``here`` int64[n]: home region, daytime region (-1: none) and the region
    of the last ping; ``age_ms`` int64[n]: age of the last ping; ``cls`` int64[n]: class.
    Returns the :data:`MOVER_FIELDS` columns, rows sorted by key.
    """
    i = np.flatnonzero(candidate)
    return mover_columns(mover_codes(home[i], day[i], here[i], age_ms[i], cls[i]))


def mover_codes(home: np.ndarray, day: np.ndarray, here: np.ndarray, age_ms: np.ndarray,
                cls: np.ndarray) -> np.ndarray:
    """The int64 key of each mover among candidate devices (arrays as in :func:`mover_rows`,
    candidates only); codes of several parts concatenated count as one
    (:func:`mover_columns`)."""
    i = np.flatnonzero((day >= 0) & (day != home) & ((here == home) | (here == day)))
    bucket = np.minimum(age_ms[i] // AGE_STEP_MS, MAX_AGE_BUCKET)
    return ((home[i] << 33) | (day[i] << 17) | ((here[i] == day[i]).astype(np.int64) << 16)
            | (bucket << 8) | cls[i])


def mover_columns(code: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`MOVER_FIELDS` columns counting mover keys (:func:`mover_codes`)."""
    uniq, count = np.unique(code, return_counts=True)
    return {"mover_home": (uniq >> 33).astype(np.int32),
            "mover_day": ((uniq >> 17) & 0xFFFF).astype(np.int32),
            "mover_at_day": ((uniq >> 16) & 1).astype(np.uint8),
            "mover_age_10min": ((uniq >> 8) & 0xFF).astype(np.uint8),
            "mover_cls": (uniq & 0xFF).astype(np.uint8),
            "mover_count": count.astype(np.int64)}


def unhoused_codes(here: np.ndarray, day: np.ndarray, age_ms: np.ndarray, cls: np.ndarray
                   ) -> np.ndarray:
    """The int64 key of each domestic device without a home that has a daytime region (arrays
    as in :func:`mover_rows`, of present domestic devices without a home only)."""
    i = np.flatnonzero(day >= 0)
    bucket = np.minimum(age_ms[i] // AGE_STEP_MS, MAX_AGE_BUCKET)
    return (here[i] << 33) | (day[i] << 17) | (bucket << 8) | cls[i]


def unhoused_columns(code: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`UNHOUSED_FIELDS` columns counting :func:`unhoused_codes`."""
    uniq, count = np.unique(code, return_counts=True)
    return {"unhoused_here": (uniq >> 33).astype(np.int32),
            "unhoused_day": ((uniq >> 17) & 0xFFFF).astype(np.int32),
            "unhoused_age_10min": ((uniq >> 8) & 0xFF).astype(np.uint8),
            "unhoused_cls": (uniq & 0xFF).astype(np.uint8),
            "unhoused_count": count.astype(np.int64)}


def stayer_codes(home: np.ndarray, day: np.ndarray, here: np.ndarray, age_ms: np.ndarray
                 ) -> np.ndarray:
    """The int64 key of each *stayer* among housed present devices (arrays as in
    :func:`mover_rows`): daytime region = home region = region of the last ping."""
    i = np.flatnonzero((day >= 0) & (day == home) & (here == home))
    return (day[i] << 8) | np.minimum(age_ms[i] // AGE_STEP_MS, MAX_AGE_BUCKET)


def stayer_columns(code: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`STAYER_FIELDS` columns counting :func:`stayer_codes` (keys are small: counted
    by ``np.bincount``, no sort)."""
    counts = np.bincount(code) if code.size else np.zeros(0, dtype=np.int64)
    uniq = np.flatnonzero(counts)
    count = counts[uniq]
    return {"stayer_region": (uniq >> 8).astype(np.int32),
            "stayer_age_10min": (uniq & 0xFF).astype(np.uint8),
            "stayer_count": count.astype(np.int64)}


def bucket_shares(tally: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per age bucket (0..255, :data:`AGE_STEP_MS` each): movers seen at their daytime region,
    and all movers."""
    count = tally.mover_count.astype(np.float64)
    age = tally.mover_age_10min.astype(np.int64)
    at_day = np.bincount(age, weights=count * tally.mover_at_day, minlength=MAX_AGE_BUCKET + 1)
    total = np.bincount(age, weights=count, minlength=MAX_AGE_BUCKET + 1)
    return at_day, total


def move_shares(tally: Any, stale_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per age bucket: the share ``m`` of stale movers that move, its direction (True: to the
    daytime region), the variance of ``m`` from the binomial errors of the shares, and
    ``p_now`` (NaN without fresh movers; then nothing moves). ``stale_ms``: movers younger
    than this are fresh (a multiple of :data:`AGE_STEP_MS`)."""
    at_day, total = bucket_shares(tally)
    fresh = np.arange(total.size) < stale_ms // AGE_STEP_MS
    n_now = total[fresh].sum()
    m = np.zeros(total.size)
    to_day = np.zeros(total.size, dtype=bool)
    var_m = np.zeros(total.size)
    if n_now == 0:
        return m, to_day, var_m, float("nan")
    p_now = at_day[fresh].sum() / n_now
    var_now = p_now * (1 - p_now) / n_now
    stale = ~fresh & (total > 0)
    p = np.where(stale, at_day / np.maximum(total, 1), 0.0)
    var_p = np.where(stale, p * (1 - p) / np.maximum(total, 1), 0.0)
    up = stale & (p_now > p) & (p < 1)
    down = stale & (p_now < p) & (p > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(up, (p_now - p) / (1 - p), np.where(down, (p - p_now) / p, 0.0))
        var_m = np.where(up, var_now / (1 - p) ** 2 + var_p * ((1 - p_now) / (1 - p) ** 2) ** 2,
                         np.where(down, var_now / p**2 + var_p * (p_now / p**2) ** 2, 0.0))
    return np.clip(m, 0.0, 1.0), up, var_m, float(p_now)


def _unhoused_moves(tally: Any, weight: np.ndarray, n: int, m_b: np.ndarray, up_b: np.ndarray
                    ) -> tuple[np.ndarray, ...]:
    """The moves of the devices without a home (see :func:`transition_shift`), as rows
    ``(src, dst, age bucket, scale, count, weight)``: each moves with probability
    ``m_b[age] * scale``."""
    here = tally.unhoused_here.astype(np.int64)
    day = tally.unhoused_day.astype(np.int64)
    age = tally.unhoused_age_10min.astype(np.int64)
    count = tally.unhoused_count.astype(np.float64)
    # away from the daytime region: a mover seen at home (``here``), moving with the morning
    away = np.flatnonzero((here != day) & up_b[age] & (m_b[age] > 0))
    parts = [(here[away], day[away], age[away], np.ones(away.size), count[away], weight[away])]
    # at the daytime region: a mover with the share of housed devices seen there in the same
    # age bucket that are movers, going home like them to the homes of that region's movers
    at = np.flatnonzero((here == day) & ~up_b[age] & (m_b[age] > 0))
    if at.size:
        m_at = tally.mover_at_day.astype(bool)
        m_day, m_age = tally.mover_day.astype(np.int64), tally.mover_age_10min.astype(np.int64)
        m_count = tally.mover_count.astype(np.float64)
        movers_at = np.zeros((n, MAX_AGE_BUCKET + 1))
        np.add.at(movers_at, (m_day[m_at], m_age[m_at]), m_count[m_at])
        stayers = np.zeros((n, MAX_AGE_BUCKET + 1))
        np.add.at(stayers, (tally.stayer_region.astype(np.int64),
                            tally.stayer_age_10min.astype(np.int64)),
                  tally.stayer_count.astype(np.float64))
        homes = np.zeros((n, n))  # daytime region -> homes of its movers
        np.add.at(homes, (m_day, tally.mover_home.astype(np.int64)), m_count)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(movers_at > 0, movers_at / (movers_at + stayers), 0.0)
            homes = homes / np.maximum(homes.sum(axis=1, keepdims=True), 1.0)
        at = at[share[day[at], age[at]] > 0]
        # one sub-row per (row, home of its daytime region's movers), without an n_rows x n
        # matrix: the nonzero homes of each daytime region, in CSR order
        from_day, to_home = np.nonzero(homes)
        start = np.searchsorted(from_day, np.arange(n + 1))
        k = start[day[at] + 1] - start[day[at]]
        row = np.repeat(at, k)
        pos = np.repeat(start[day[at]] - np.cumsum(k) + k, k) + np.arange(int(k.sum()))
        dst = to_home[pos]
        parts.append((here[row], dst, age[row], share[day[row], age[row]]
                      * homes[day[row], dst], count[row], weight[row]))
    return tuple(np.concatenate(c) for c in zip(*parts, strict=True))


def transition_shift(tally: Any, weight: np.ndarray, subtree: np.ndarray, stale_ms: int,
                     model_rse: float = 0.0, unhoused_weight: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """People moved between leaf regions by the stale-mover rule, and its variance.

    ``weight`` float64[n_rows]: people per device of each mover row; ``subtree``
    float64[n_regions, n_regions] (``RegionSet.subtree``); ``model_rse``: relative model error
    of the people moved in or out of a region; ``unhoused_weight`` float64[n_unhoused_rows]:
    people per device of each :data:`UNHOUSED_FIELDS` row (None, or a tally without those
    rows: they stay where they were seen). Returns ``(shift, var)``: people added per region
    before subtree sums (sums to 0) and the transition variance per region after them (see
    the module text).

    Devices without a home yet (domestic, with a daytime region) move with the housed movers'
    ``m`` of their age bucket: seen away from their daytime region, in the morning direction,
    as a mover seen at home; seen at it, in the evening direction, with probability ``m`` times
    the share of movers among the housed devices seen at that region in the same bucket
    (movers and :data:`STAYER_FIELDS` rows), to the homes of that region's movers in
    proportion.
    """
    n = subtree.shape[0]
    m_b, up_b, var_m_b, _ = move_shares(tally, stale_ms)
    age = tally.mover_age_10min.astype(np.int64)
    at_day = tally.mover_at_day.astype(bool)
    home, day = tally.mover_home.astype(np.int64), tally.mover_day.astype(np.int64)
    # rows moving: last seen at home when the bucket moves to the day region, and vice versa
    moving = np.where(up_b[age], ~at_day, at_day)
    src = np.where(at_day, day, home)
    dst = np.where(at_day, home, day)
    scale = moving.astype(np.float64)
    count = tally.mover_count.astype(np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if unhoused_weight is not None and getattr(tally, UNHOUSED_FIELDS[-1], np.zeros(0)).size:
        u = _unhoused_moves(tally, np.asarray(unhoused_weight, dtype=np.float64), n, m_b, up_b)
        src, dst, age, scale, count, w = (np.concatenate([a, b]) for a, b in
                                          zip((src, dst, age, scale, count, w), u, strict=True))
    m = m_b[age] * scale
    mass = count * w
    shift = (np.bincount(dst, weights=m * mass, minlength=n)
             - np.bincount(src, weights=m * mass, minlength=n))
    sel = np.flatnonzero(m > 0)
    if sel.size == 0:
        return shift, np.zeros(n)
    # +1/-1 where one candidate is inside, float64[n, n_sel] laid out column by column (rows of
    # the transposed subtree: a copy per row, several times faster than a gather per element)
    inside = np.ascontiguousarray(subtree.T)
    d = inside[dst[sel]]
    np.subtract(d, inside[src[sel]], out=d)
    d = d.T
    crossed = np.abs(d)  # also d**2 (d is -1, 0 or 1)
    draw_var = crossed @ (count[sel] * w[sel] ** 2 * m[sel] * (1 - m[sel]))
    # error of m, shared by all the devices of a bucket: (sum of their mass per region)^2
    share_var = np.zeros(n)
    age_sel, moved_mass = age[sel], mass[sel] * scale[sel]
    by_age = np.argsort(age_sel, kind="stable")  # each bucket's rows together, in row order
    ages, starts = np.unique(age_sel[by_age], return_index=True)
    for b, rows in zip(ages.tolist(), np.split(by_age, starts[1:]), strict=True):
        share_var += var_m_b[b] * (d[:, rows] @ moved_mass[rows]) ** 2
    moved = crossed @ (m[sel] * mass[sel])  # people moved in or out of each region
    return shift, draw_var + share_var + (model_rse * moved) ** 2
