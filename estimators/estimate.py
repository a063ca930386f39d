"""Present and resident population at an instant, with intervals and disclosure control.

Each device carries a weight ``factor / coverage``:

- ``factor`` (calibration): people per active device, looked up for the device's home region
  (where it sleeps; its current region when it has no home yet) and its operator class;
- ``coverage``: the share of its operator class's *active* devices (seen within ``activity_ms``)
  that the figure can see: devices seen within ``horizon_ms`` for ``present``, devices with a
  home for ``resident``. Dividing by it keeps both figures on the same footing as the factor.

``present`` at ``t`` sums the weights of devices whose last ping is within ``horizon_ms`` before
``t``, by the region of that ping; ``resident`` sums the weights of active domestic devices by
home region. The interval model (``docs/METHOD.md``): each device is a Bernoulli draw of the
``w`` people it stands for (variance ``w(w-1)``), factors carry their calibration rse (errors of
one calibration row are shared by all regions using it), plus a stated model-error rse (its
own for ``resident``) and, for ``present``, the transition terms of the stale movers it re-places
(:mod:`estimators.routine`); ``lo`` and ``hi`` are ``estimate -/+ z * sd`` (z = 1.645: 90 %), ``lo``
clipped at 0.
Figures resting on fewer than ``k`` devices are suppressed (NaN here, null when published).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from estimators.calibration import N_CLASSES, FactorMatrix
from estimators.disclosure import (
    cell_levels,
    complementary_suppression,
    region_tree_suppression,
    unique_inverse,
)
from estimators.presence import (
    EPOCH_MS,
    LOC_BITS,
    MAX_LOCATIONS,
    MAX_TS_REL_MS,
    ROAMER,
    PresenceState,
    current_night,
)
from estimators.regions import RegionSet
from estimators.routine import (
    AGE_STEP_MS,
    MOVER_FIELDS,
    UNHOUSED_FIELDS,
    mover_codes,
    mover_columns,
    stayer_codes,
    stayer_columns,
    transition_shift,
    unhoused_codes,
    unhoused_columns,
)
from estimators.tally import Tally
from estimators.units import DAY_MS, HOUR_MS


@dataclass(frozen=True)
class EstimateConfig:
    """Tunables of the estimate (defaults and their reasons in ``docs/METHOD.md``).

    ``horizon_ms``: a device is present where its last ping within this time was;
    ``activity_ms``: devices seen within this time are active; ``min_nights``: nights seen before
    a device has a home; ``k_anonymity``: figures resting on fewer devices are suppressed; ``z``:
    the interval's normal quantile (1.645: 90 %); ``model_rse``: model-error relative standard
    error of the people counted in their home region, ``away_rse`` that of the people counted
    away from it (present only: workplaces are not calibrated, and where a displaced device is
    is less certain), ``sibling_away_rse`` that of the people counted away from it but in the
    same parent region (another district of their city: their factor was calibrated next door;
    :func:`present_model_rse`). A region's model error is shared by all its people and
    independent of other regions': a parent's is summed in quadrature over its subtree.
    ``transition_rse``: the model error of the people the stale-mover rule moves in or out of a
    region (present only, :func:`estimators.routine.transition_shift`: the rule assumes a
    device's silence is independent of where it is); ``resident_model_rse``: the model-error
    relative standard error of ``resident``, a term of its own (the resident error is mostly a
    per-region constant: the reference census's error carried by the factor, plus home-rule
    error; not where a ping was). ``transitions``:
    re-place *stale movers* (devices whose home and daytime regions differ, silent for
    ``stale_ms`` or more, default 10 min) by what the fresh movers did since
    (:mod:`estimators.routine`), with their own variance term; ``routine_ms``: a daytime
    region older than this is not used.
    Raises ``ValueError`` for a non-positive horizon or activity window, a horizon longer than
    the activity window, k < 1, a negative model-error term, or ``stale_ms`` not a whole number
    of 10-minute steps of at least one (from the horizon on, nothing is stale).
    """

    horizon_ms: int = 6 * HOUR_MS
    activity_ms: int = DAY_MS
    min_nights: int = 1
    k_anonymity: int = 15
    z: float = 1.645
    model_rse: float = 0.006
    away_rse: float = 0.04
    sibling_away_rse: float = 0.015
    transition_rse: float = 0.15
    resident_model_rse: float = 0.0055
    stale_ms: int = AGE_STEP_MS
    routine_ms: int = 3 * DAY_MS
    transitions: bool = True

    def __post_init__(self) -> None:
        if self.horizon_ms <= 0 or self.activity_ms <= 0:
            raise ValueError("horizon and activity window must be positive")
        if self.stale_ms < AGE_STEP_MS or self.stale_ms % AGE_STEP_MS:
            raise ValueError("stale_ms must be a whole number of 10-minute steps, at least one")
        if min(self.model_rse, self.away_rse, self.sibling_away_rse, self.resident_model_rse,
               self.transition_rse) < 0:
            raise ValueError("model error terms must be >= 0")
        if self.routine_ms <= 0:
            raise ValueError("routine_ms must be positive")
        if self.horizon_ms > self.activity_ms:
            raise ValueError("horizon must not exceed the activity window")
        if self.k_anonymity < 1:
            raise ValueError("k (disclosure threshold) must be >= 1")


@dataclass
class Estimate:
    """Figures at ``at_ms`` (UTC ms), per region and per H3 cell.

    Per region, ``float64[n_regions]`` in people (index as in :class:`RegionSet`, aggregated
    over subtrees; NaN = suppressed, fewer than k devices): ``present`` with its interval (90 %
    at the default ``z``)
    ``present_lo``/``present_hi``, ``resident`` with ``resident_lo``/``resident_hi``, and the
    device counts behind them, ``present_devices`` and ``resident_devices``.
    Per cell at the engine's resolution: ``cell_id`` ``uint64[n_cells]`` H3 cell numbers
    (sorted), ``cell_present`` ``float64[n_cells]`` people (NaN = suppressed) and
    ``cell_devices``; ``coarse_cells`` maps each coarser published resolution to
    ``(cell_id, cell_present)``. ``active_devices``: devices active at ``at_ms``;
    ``coverage_present``/``coverage_resident``: the share of them the figures can see.
    ``resident_by_home``/``resident_by_home_rse`` ``float64[n_regions]``: resident people by
    home region itself (no subtree sums, no suppression) and their calibration error; inputs
    of the migration flows (:mod:`estimators.flows`), never published as they are.
    """

    at_ms: int
    present: np.ndarray
    present_lo: np.ndarray
    present_hi: np.ndarray
    present_devices: np.ndarray
    resident: np.ndarray
    resident_lo: np.ndarray
    resident_hi: np.ndarray
    resident_devices: np.ndarray
    cell_id: np.ndarray
    cell_present: np.ndarray
    cell_devices: np.ndarray
    active_devices: int
    coverage_present: float
    coverage_resident: float
    coarse_cells: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    unresolved_groups: int = 0
    resident_by_home: np.ndarray | None = None
    resident_by_home_rse: np.ndarray | None = None


def class_coverage(cls: np.ndarray, active: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Share of each class's active devices that are also ``seen`` (1 where a class is empty)."""
    n_active = np.bincount(cls[active], minlength=N_CLASSES).astype(np.float64)
    n_seen = np.bincount(cls[active & seen], minlength=N_CLASSES).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_seen > 0, n_seen / np.maximum(n_active, 1.0), 1.0)


def _region_figures(regions: RegionSet, where: np.ndarray, count: np.ndarray, weight: np.ndarray,
                    rse: np.ndarray, row: np.ndarray, config: EstimateConfig,
                    model_rse: np.ndarray | float,
                    shift: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """Totals, interval and device counts per region from counted (region, weight) rows;
    ``model_rse``: the model-error relative standard error of the people counted, per row
    (``float64[n_rows]``, see :func:`present_model_rse`) or one for all (resident:
    ``config.resident_model_rse``); a region's model error is shared by its own rows and
    independent of other regions', so a parent's is summed in quadrature over its subtree;
    ``shift``: people moved between leaf regions (per region, before subtree sums) and the
    variance of that move per (subtree) region, added to the totals and the variance."""
    n = len(regions.ids)
    subtree = regions.subtree.astype(np.float64)
    count = count.astype(np.float64)
    people = np.bincount(where, weights=count * weight, minlength=n)
    if shift is not None:
        people = people + shift[0]
    total = subtree @ people
    devices = subtree @ np.bincount(where, weights=count, minlength=n)
    count_var = subtree @ np.bincount(where, weights=count * weight * np.maximum(weight - 1.0, 0.0),
                                      minlength=n)
    rows = row + 1
    n_rows = int(rows.max()) + 1 if rows.size else 1
    by_row = np.bincount(where * n_rows + rows, weights=count * weight * rse,
                         minlength=n * n_rows).reshape(n, n_rows)  # as np.add.at, in row order
    cal_sd_by_row = subtree @ by_row
    cal_var = (cal_sd_by_row**2).sum(axis=1)
    own_model_sd = np.bincount(where, weights=count * weight * model_rse, minlength=n)
    var = count_var + cal_var + subtree @ own_model_sd**2
    if shift is not None:
        var = var + shift[1]
    sd = np.sqrt(var)
    lo = np.maximum(total - config.z * sd, 0.0)
    hi = total + config.z * sd
    return total, lo, hi, devices


def present_model_rse(regions: RegionSet, where: np.ndarray, factor_region: np.ndarray,
                      config: EstimateConfig) -> np.ndarray:
    """Model-error rse of each present row (``float64[n_rows]``): ``config.model_rse`` for
    people counted in their factor (home) region ``factor_region``, ``sibling_away_rse`` for
    people counted elsewhere in the same parent region (the home region lies under the counting
    region's parent, or, for a top-level counting region, under that region itself: another
    district of their city, or the city's own area), ``away_rse`` for the rest (``where``,
    ``factor_region``: ``int64[n_rows]`` region indices of :class:`RegionSet`)."""
    parent = regions.parent_index[where]
    scope = np.where(parent >= 0, parent, where)
    sibling = regions.subtree[scope, factor_region]
    return np.where(where == factor_region, config.model_rse,
                    np.where(sibling, config.sibling_away_rse, config.away_rse))


def _suppress(values: list[np.ndarray], devices: np.ndarray, k: int) -> None:
    """Blank (NaN) every figure (device counts included) resting on fewer than ``k`` devices."""
    small = devices < k
    for v in values:
        v[small] = np.nan


TALLY_CHUNK = 1 << 18
"""Devices counted at a time by :func:`tally_state` (keeps its temporaries in cache, and out
of fresh memory pages: an int64 array of 5 M devices costs as much to allocate as to fill)."""


def tally_state(state: PresenceState, loc_cell: np.ndarray, loc_region: np.ndarray,
                operators: tuple[str, ...], at_ms: int, utc_offset_s: int,
                config: EstimateConfig, chunk: int = TALLY_CHUNK) -> Tally:
    """Count the devices behind every figure at ``at_ms`` (see :mod:`estimators.tally`).

    Cost: the kept home regions (:meth:`PresenceState.home`), one pass over the devices'
    latest-ping stamps in chunks of ``chunk`` devices (the rest runs on active devices only)
    and one sort of the present devices' codes; the result does not depend on ``chunk``.
    """
    n = state.n_devices
    home_all = state.home(current_night(at_ms, utc_offset_s, state.window), config.min_nights)
    region_of = np.asarray(loc_region)
    movers = config.transitions and MOVER_FIELDS[0] in Tally.__dataclass_fields__
    codes, mover_parts, unhoused_parts, stayer_parts = [], [], [], []
    by_home = np.zeros(0, dtype=np.int64)
    per_class = np.zeros((3, N_CLASSES), dtype=np.int64)  # active, present, housed
    for lo in range(0, n, chunk):
        stamp = state.stamp[lo:min(n, lo + chunk)]
        # active: 0 <= age < activity_ms, i.e. at - activity_ms < ts <= at, on the raw stamps
        a = np.flatnonzero(_stamp_at_least(stamp, at_ms - config.activity_ms + 1)
                           & ~_stamp_at_least(stamp, at_ms + 1))
        a_stamp = stamp[a]
        cls = state.opclass[lo + a]
        home = home_all[lo + a]
        has_home = (home >= 0) & (cls != ROAMER)
        loc = (a_stamp & np.uint64(MAX_LOCATIONS)).astype(np.int64)
        here = region_of[loc].astype(np.int64)
        p = np.flatnonzero(_stamp_at_least(a_stamp, at_ms - config.horizon_ms + 1))
        # one int64 code per device, (loc, factor region, class), counted with one sort
        codes.append((loc[p] << 24) | (np.where(has_home[p], home[p], here[p]) << 8) | cls[p])
        r = np.flatnonzero(has_home)
        part = np.bincount(home[r] * 256 + cls[r]) if r.size else by_home[:0]
        if part.size > by_home.size:
            by_home = np.concatenate([by_home, np.zeros(part.size - by_home.size, np.int64)])
        by_home[: part.size] += part
        for i, who in enumerate((cls, cls[p], cls[r])):
            per_class[i] += np.bincount(who, minlength=N_CLASSES)
        if movers:
            c = p[has_home[p]]  # present and housed: movers and stayers
            age_c = at_ms - ((a_stamp[c] >> np.uint64(LOC_BITS)).astype(np.int64) + EPOCH_MS)
            day = state.day_region(at_ms, config.routine_ms, lo + a[c])
            home_c, here_c = home[c], here[c]
            mover_parts.append(mover_codes(home_c, day, here_c, age_c, cls[c].astype(np.int64)))
            stayer_parts.append(stayer_codes(home_c, day, here_c, age_c))
            u = p[~has_home[p] & (cls[p] != ROAMER)]  # present, domestic, no home yet
            age_u = at_ms - ((a_stamp[u] >> np.uint64(LOC_BITS)).astype(np.int64) + EPOCH_MS)
            unhoused_parts.append(unhoused_codes(
                here[u], state.day_region(at_ms, config.routine_ms, lo + a[u]), age_u,
                cls[u].astype(np.int64)))
    code = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
    uniq, p_count = np.unique(code, return_counts=True)
    p_loc, p_fr, p_cls = uniq >> 24, (uniq >> 8) & 0xFFFF, uniq & 0xFF
    r_code = np.flatnonzero(by_home)
    r_reg, r_cls, r_count = r_code // 256, r_code % 256, by_home[r_code]
    extra = {}
    if movers:
        none = np.zeros(0, dtype=np.int64)
        extra = (mover_columns(np.concatenate(mover_parts) if mover_parts else none)
                 | unhoused_columns(np.concatenate(unhoused_parts) if unhoused_parts else none)
                 | stayer_columns(np.concatenate(stayer_parts) if stayer_parts else none))
    return Tally(**extra,
        at_ms=at_ms, operators=tuple(operators),
        present_cell=np.asarray(loc_cell, dtype=np.uint64)[p_loc],
        present_region=np.asarray(loc_region, dtype=np.int32)[p_loc],
        present_factor_region=p_fr.astype(np.int32), present_cls=p_cls.astype(np.uint8),
        present_count=p_count,
        resident_region=r_reg.astype(np.int32), resident_cls=r_cls.astype(np.uint8),
        resident_count=r_count,
        n_active=per_class[0], n_present=per_class[1], n_housed=per_class[2],
    )


def _stamp_at_least(stamp: np.ndarray, ts_ms: int) -> np.ndarray:
    """``stamp`` time >= ``ts_ms`` (bool per stamp), without decoding the stamps."""
    rel = ts_ms - EPOCH_MS
    if rel <= 0:
        return np.ones(stamp.shape, dtype=bool)
    if rel > MAX_TS_REL_MS:
        return np.zeros(stamp.shape, dtype=bool)
    return stamp >= np.uint64(rel << LOC_BITS)


def _coverage(seen: np.ndarray, of: np.ndarray) -> np.ndarray:
    """Share ``seen / of`` per class (1 where nothing was seen)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(seen > 0, seen / np.maximum(of, 1).astype(np.float64), 1.0)


def estimate_from_tally(tally: Tally, regions: RegionSet, factors: FactorMatrix,
                        config: EstimateConfig, res: int = 0, coarser: tuple[int, ...] = ()
                        ) -> Estimate:
    """Present and resident population from a tally (factors resolved for ``tally.operators``).

    Cells are published at the tally's resolution ``res`` and, summed, at each ``coarser``
    resolution (which needs H3 cell ids), all under primary and complementary suppression
    (:mod:`estimators.disclosure`), which may also hide present region figures (the
    complement of a small region); resident figures (regions only) get primary suppression and
    the region step (:func:`~estimators.disclosure.region_tree_suppression`).
    """
    domestic_active = tally.n_active.copy()
    domestic_active[ROAMER] = 0
    cov_present = _coverage(tally.n_present, tally.n_active)
    cov_resident = _coverage(tally.n_housed, domestic_active)

    p_cls = tally.present_cls.astype(np.int64)
    pf = (tally.present_factor_region.astype(np.int64), p_cls)
    p_weight = factors.factor[pf] / cov_present[p_cls]
    shift = None
    if config.transitions and getattr(tally, MOVER_FIELDS[0], None) is not None:
        m_cls = tally.mover_cls.astype(np.int64)
        m_weight = factors.factor[tally.mover_home.astype(np.int64), m_cls] / cov_present[m_cls]
        u_weight = None
        if getattr(tally, UNHOUSED_FIELDS[0], None) is not None:
            u_cls = tally.unhoused_cls.astype(np.int64)
            u_weight = (factors.factor[tally.unhoused_here.astype(np.int64), u_cls]
                        / cov_present[u_cls])
        shift = transition_shift(tally, m_weight, regions.subtree.astype(np.float64),
                                 config.stale_ms, config.transition_rse, u_weight)
    p_region = tally.present_region.astype(np.int64)
    present_fig = _region_figures(regions, p_region, tally.present_count, p_weight,
                                  factors.rse[pf], factors.row[pf], config,
                                  present_model_rse(regions, p_region, pf[0], config), shift)
    r_cls = tally.resident_cls.astype(np.int64)
    rf = (tally.resident_region.astype(np.int64), r_cls)
    r_weight = factors.factor[rf] / cov_resident[r_cls]
    resident_fig = _region_figures(regions, tally.resident_region.astype(np.int64),
                                   tally.resident_count, r_weight, factors.rse[rf], factors.row[rf],
                                   config, config.resident_model_rse)
    by_home, by_home_rse = _by_home(len(regions.ids), tally.resident_region.astype(np.int64),
                                    tally.resident_count, r_weight, factors.rse[rf], factors.row[rf])

    cell_id, inverse = unique_inverse(tally.present_cell)  # canonical rows: sorted by cell
    cell_present = np.bincount(inverse, weights=tally.present_count * p_weight,
                               minlength=cell_id.size).astype(np.float64)
    cell_devices = np.bincount(inverse, weights=tally.present_count.astype(np.float64),
                               minlength=cell_id.size).astype(np.float64)

    present_fig = [a.copy() for a in present_fig]
    resident_fig = [a.copy() for a in resident_fig]
    _suppress(present_fig, present_fig[3].copy(), config.k_anonymity)
    _suppress(resident_fig, resident_fig[3].copy(), config.k_anonymity)
    # resident figures are subtree sums of devices by home region: a parent minus its visible
    # children must not give a small region's count either (disclosure.py, the region step)
    resident_own = np.bincount(tally.resident_region.astype(np.int64),
                               tally.resident_count.astype(np.float64), len(regions.ids))
    resident_hidden = region_tree_suppression(regions.parent_index, resident_own,
                                              ~np.isnan(resident_fig[3]), config.k_anonymity)
    for a in resident_fig:
        a[resident_hidden] = np.nan

    # parts: (cell, region) pairs; a cell a border crosses has one per region (disclosure.py)
    n_reg = len(regions.ids)
    part, part_inverse = unique_inverse(inverse * n_reg + tally.present_region)
    part_devices = np.bincount(part_inverse, tally.present_count.astype(np.float64), part.size)
    levels = cell_levels(res, cell_id, cell_present, cell_devices, coarser if cell_id.size else ())
    masks, region_hidden, unresolved = complementary_suppression(
        levels, part // n_reg, part % n_reg, part_devices, regions.parent_index,
        ~np.isnan(present_fig[3]), config.k_anonymity)
    for lvl, hidden in zip(levels, masks, strict=True):
        lvl.present[hidden] = np.nan
        lvl.devices[hidden] = np.nan
    for a in present_fig:
        a[region_hidden] = np.nan
    n_active = int(tally.n_active.sum())
    return Estimate(
        at_ms=tally.at_ms,
        present=present_fig[0], present_lo=present_fig[1], present_hi=present_fig[2],
        present_devices=present_fig[3],
        resident=resident_fig[0], resident_lo=resident_fig[1], resident_hi=resident_fig[2],
        resident_devices=resident_fig[3],
        cell_id=cell_id, cell_present=cell_present, cell_devices=cell_devices,
        active_devices=n_active,
        coverage_present=float(tally.n_present.sum() / n_active) if n_active else 0.0,
        coverage_resident=float(tally.n_housed.sum() / max(int(domestic_active.sum()), 1)),
        coarse_cells={lvl.res: (lvl.cell_id, lvl.present) for lvl in levels[1:]},
        unresolved_groups=unresolved,
        resident_by_home=by_home, resident_by_home_rse=by_home_rse,
    )


def _by_home(n: int, where: np.ndarray, count: np.ndarray, weight: np.ndarray, rse: np.ndarray,
             row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """People per home region itself and the calibration's relative error of that figure."""
    people = np.bincount(where, weights=count * weight, minlength=n)
    rows = row + 1
    by_row = np.zeros((n, int(rows.max()) + 1 if rows.size else 1))
    np.add.at(by_row, (where, rows), count * weight * rse)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(people > 0, np.sqrt((by_row**2).sum(axis=1)) / people, 0.0)
    return people, rel
