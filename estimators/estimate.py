"""Present and resident population at an instant, with intervals and disclosure control.

Each device carries a weight ``factor / coverage``:

- ``factor`` (calibration): people per active device, looked up for the device's home region
  (where it sleeps; its current region when it has no home yet) and its operator class;
- ``coverage``: the share of its operator class's *active* devices (seen within ``activity_s``)
  that the figure can see: devices seen within ``horizon_s`` for ``present``, devices with a
  home for ``resident``. Dividing by it keeps both figures on the same footing as the factor.

``present`` at ``t`` sums the weights of devices whose last ping is within ``horizon_s`` before
``t``, by the region of that ping; ``resident`` sums the weights of active domestic devices by
home region. The interval model (``docs/METHOD.md``): each device is a Bernoulli draw of the
``w`` people it stands for (variance ``w(w-1)``), factors carry their calibration rse (errors of
one calibration row are shared by all regions using it), plus a stated model-error rse; ``lo``
and ``hi`` are ``estimate -/+ z * sd`` (z = 1.645: 90 %), ``lo`` clipped at 0.
Figures resting on fewer than ``k`` devices are suppressed (NaN here, null when published).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from estimators.calibration import N_CLASSES, FactorMatrix
from estimators.presence import ROAMER, PresenceState, current_night
from estimators.regions import RegionSet


@dataclass(frozen=True)
class EstimateConfig:
    """Tunables of the estimate (defaults and their reasons in ``docs/METHOD.md``)."""

    horizon_s: int = 6 * 3600
    activity_s: int = 24 * 3600
    min_nights: int = 1
    k_anonymity: int = 15
    z: float = 1.645
    model_rse: float = 0.01

    def __post_init__(self) -> None:
        if self.horizon_s <= 0 or self.activity_s <= 0:
            raise ValueError("horizon and activity window must be positive")
        if self.horizon_s > self.activity_s:
            raise ValueError("horizon must not exceed the activity window")
        if self.k_anonymity < 1:
            raise ValueError("k (disclosure threshold) must be >= 1")


@dataclass
class Estimate:
    """Figures at ``at_ms``: per region (index as in :class:`RegionSet`, aggregated over
    subtrees) and per H3 cell (``cell_loc`` indexes the cell table)."""

    at_ms: int
    present: np.ndarray
    present_lo: np.ndarray
    present_hi: np.ndarray
    present_devices: np.ndarray
    resident: np.ndarray
    resident_lo: np.ndarray
    resident_hi: np.ndarray
    resident_devices: np.ndarray
    cell_loc: np.ndarray
    cell_present: np.ndarray
    cell_devices: np.ndarray
    active_devices: int
    coverage_present: float
    coverage_resident: float


def class_coverage(cls: np.ndarray, active: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Share of each class's active devices that are also ``seen`` (1 where a class is empty)."""
    n_active = np.bincount(cls[active], minlength=N_CLASSES).astype(np.float64)
    n_seen = np.bincount(cls[active & seen], minlength=N_CLASSES).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_seen > 0, n_seen / np.maximum(n_active, 1.0), 1.0)


def _region_figures(regions: RegionSet, where: np.ndarray, weight: np.ndarray, rse: np.ndarray,
                    row: np.ndarray, config: EstimateConfig) -> tuple[np.ndarray, ...]:
    """Totals, interval and device counts per region from per-device assignment and weight."""
    n = len(regions.ids)
    subtree = regions.subtree.astype(np.float64)
    total = subtree @ np.bincount(where, weights=weight, minlength=n)
    devices = subtree @ np.bincount(where, minlength=n).astype(np.float64)
    count_var = subtree @ np.bincount(where, weights=weight * np.maximum(weight - 1.0, 0.0),
                                      minlength=n)
    rows = row + 1
    n_rows = int(rows.max()) + 1 if rows.size else 1
    by_row = np.zeros((n, n_rows))
    np.add.at(by_row, (where, rows), weight * rse)
    cal_sd_by_row = subtree @ by_row
    cal_var = (cal_sd_by_row**2).sum(axis=1)
    var = count_var + cal_var + (config.model_rse * total) ** 2
    sd = np.sqrt(var)
    lo = np.maximum(total - config.z * sd, 0.0)
    hi = total + config.z * sd
    return total, lo, hi, devices


def _suppress(values: list[np.ndarray], devices: np.ndarray, k: int) -> None:
    """Blank (NaN) every figure (device counts included) resting on fewer than ``k`` devices."""
    small = devices < k
    for v in values:
        v[small] = np.nan


def estimate(state: PresenceState, loc_region: np.ndarray, regions: RegionSet,
             factors: FactorMatrix, at_ms: int, utc_offset_s: int,
             config: EstimateConfig) -> Estimate:
    """Compute present and resident population at ``at_ms`` from the device state."""
    ts, loc = state.last_seen()
    cls = state.opclass[: state.n_devices].astype(np.int64)
    age_ms = at_ms - ts
    active = (age_ms >= 0) & (age_ms < config.activity_s * 1000)
    present = active & (age_ms < config.horizon_s * 1000)
    home = state.home_region(current_night(at_ms, utc_offset_s, state.window), config.min_nights)
    domestic = cls != ROAMER
    has_home = (home >= 0) & domestic

    cov_present = class_coverage(cls, active, present)
    cov_resident = class_coverage(cls, active & domestic, has_home)
    here = loc_region[loc].astype(np.int64) if len(loc) else np.zeros(0, dtype=np.int64)
    factor_region = np.where(has_home, home, here)

    p = np.flatnonzero(present)
    pf = (factor_region[p], cls[p])
    p_weight = factors.factor[pf] / cov_present[cls[p]]
    present_fig = _region_figures(regions, here[p], p_weight, factors.rse[pf], factors.row[pf],
                                  config)

    r = np.flatnonzero(active & has_home)
    rf = (home[r], cls[r])
    r_weight = factors.factor[rf] / cov_resident[cls[r]]
    resident_fig = _region_figures(regions, home[r], r_weight, factors.rse[rf], factors.row[rf],
                                   config)

    cell_sum = np.bincount(loc[p], weights=p_weight) if p.size else np.zeros(0)
    cell_n = np.bincount(loc[p]) if p.size else np.zeros(0, dtype=np.int64)
    cell_loc = np.flatnonzero(cell_n)
    cell_present = cell_sum[cell_loc]
    cell_devices = cell_n[cell_loc].astype(np.float64)
    _suppress([cell_present, cell_devices], cell_devices.copy(), config.k_anonymity)

    present_fig = [a.copy() for a in present_fig]
    resident_fig = [a.copy() for a in resident_fig]
    _suppress(present_fig, present_fig[3].copy(), config.k_anonymity)
    _suppress(resident_fig, resident_fig[3].copy(), config.k_anonymity)
    n_active = int(active.sum())
    return Estimate(
        at_ms=at_ms,
        present=present_fig[0], present_lo=present_fig[1], present_hi=present_fig[2],
        present_devices=present_fig[3],
        resident=resident_fig[0], resident_lo=resident_fig[1], resident_hi=resident_fig[2],
        resident_devices=resident_fig[3],
        cell_loc=cell_loc, cell_present=cell_present, cell_devices=cell_devices,
        active_devices=n_active,
        coverage_present=float(present.sum() / n_active) if n_active else 0.0,
        coverage_resident=float(has_home[active].sum() / max(int((active & domestic).sum()), 1)),
    )
