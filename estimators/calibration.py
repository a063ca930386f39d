"""Calibration factors: how many people one counted device stands for, per region and operator.

A factor folds together what a device count misses or double counts: the operator's market share,
SIMs per person (multi-SIM), people without a phone, devices not seen in the activity window.
Rows are ``region, operator, factor[, rse][, people]`` (``people``: the reference population,
on fitted ``region,*`` rows only) where ``*`` matches any region or operator and the
operator ``roaming`` applies to foreign SIMs (default factor 1: a visitor's phone is one visitor).

Lookup for a device assigned to region ``r`` on operator ``o``: the most specific row wins,
walking from ``r`` up its parents: ``(r, o)``, ``(r, *)``, ``(parent, o)``, ... then ``(*, o)``,
``(*, *)``. A device with no matching row counts with factor 1 and is reported as uncalibrated.

:func:`fit_factors` derives factors from a reference period: ``factor_r = reference_r /
devices_r`` where ``devices_r`` is the coverage-corrected count of active domestic devices whose
home is in ``r`` (the same count the resident estimate uses, so the two stay consistent). Each
fitted row keeps ``reference_r`` (``people``): the engine spreads the devices of border cells by
it (:func:`estimators.footprints.apportion_plan`), a prior independent of the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from estimators.presence import ROAMER
from estimators.regions import RegionSet

ANY = "*"
ROAMING = "roaming"
N_CLASSES = 256
FACTOR_RANGE = (0.01, 10_000.0)
"""Plausible people per counted device (inclusive): a factor outside is a unit or column mistake,
and one of 1e155 would overflow the interval's variance."""
RSE_RANGE = (0.0, 10.0)
"""Plausible relative standard error of a factor: ``0 <= rse < 10``."""


def factor_problem(factor: float) -> str | None:
    """Why ``factor`` is not a plausible calibration factor, or None."""
    lo, hi = FACTOR_RANGE
    if not (np.isfinite(factor) and lo <= factor <= hi):
        return (f"factor must be > 0, in the plausible range {lo:g}..{hi:g} people per counted "
                f"device; got {factor:g}")
    return None


def rse_problem(rse: float) -> str | None:
    """Why ``rse`` is not a plausible relative standard error of a factor, or None."""
    lo, hi = RSE_RANGE
    if not (np.isfinite(rse) and lo <= rse < hi):
        return f"rse must be in [{lo:g}, {hi:g}), got {rse:g}"
    return None


def people_problem(region: str, operator: str, people: float | None) -> str | None:
    """Why ``people`` cannot be a calibration row's reference population, or None: only a row
    of one region for any operator (``region,*``) carries one, a count > 0 and finite."""
    if people is None:
        return None
    if region == ANY or operator != ANY:
        return (f"people is allowed only on REGION,* rows (one region, operator {ANY!r}), got "
                f"region {region!r}, operator {operator!r}: leave it blank here")
    if not (np.isfinite(people) and people > 0):
        return f"people must be > 0, got {people:g}"
    return None


@dataclass(frozen=True)
class FactorRow:
    """One calibration row: people per counted device, with its relative standard error, and
    (``region,*`` rows fitted by :func:`fit_factors`) the reference population it was fitted
    to (``people``; None when not given), which places the devices of border cells
    (:func:`estimators.footprints.apportion_plan`).

    Raises ``ValueError`` for a factor outside :data:`FACTOR_RANGE`, an rse outside
    :data:`RSE_RANGE` (NaN and infinities included) or a ``people`` :func:`people_problem`
    refuses.
    """

    region: str
    operator: str
    factor: float
    rse: float = 0.0
    people: float | None = None
    footprints: str | None = None
    """The rule border cells were placed by when the factor was fitted (``--footprints``; None:
    not recorded)."""

    def __post_init__(self) -> None:
        problem = (factor_problem(self.factor) or rse_problem(self.rse)
                   or people_problem(self.region, self.operator, self.people))
        if problem is not None:
            raise ValueError(f"calibration {self.region},{self.operator}: {problem}")


@dataclass
class FactorMatrix:
    """Factors resolved for every (assignment region, operator class) pair.

    ``factor``/``rse``/``row`` are (n_regions + 1, 256) arrays; ``row`` is the index of the
    calibration row used (-1 for the default of 1), ``uncalibrated`` lists the pairs that fell
    back to the default.
    """

    factor: np.ndarray
    rse: np.ndarray
    row: np.ndarray
    uncalibrated: list[tuple[str, str]]


class Calibration:
    """A set of calibration rows with the most-specific-match lookup."""

    def __init__(self, rows: Sequence[FactorRow] = ()) -> None:
        self.rows = list(rows)
        self._by_key: dict[tuple[str, str], int] = {}
        for i, r in enumerate(self.rows):
            key = (r.region, r.operator)
            if key in self._by_key:
                raise ValueError(f"calibration: duplicate row for region {r.region!r}, "
                                 f"operator {r.operator!r}")
            self._by_key[key] = i

    def _find(self, chain: list[str], operator: str) -> int:
        for region in chain:
            for op in (operator, ANY) if operator != ROAMING else (ROAMING,):
                hit = self._by_key.get((region, op))
                if hit is not None:
                    return hit
        return -1

    def people(self) -> dict[str, float]:
        """The reference population the factors were fitted to: region id -> people, from the
        rows that carry one (empty for a calibration without: an older file, or factors from
        another source)."""
        return {r.region: float(r.people) for r in self.rows if r.people is not None}

    def footprints(self) -> str | None:
        """The footprint rule the factors were fitted under (``--footprints`` of ``defacto
        calibrate``), None when the file does not record it."""
        return next((r.footprints for r in self.rows if r.footprints), None)

    def unknown_regions(self, regions: RegionSet) -> list[str]:
        """Region ids in the rows that the region set does not have (likely a typo)."""
        return sorted({r.region for r in self.rows} - set(regions.ids) - {ANY})

    def resolve(self, regions: RegionSet, operators: Sequence[str]) -> FactorMatrix:
        """Resolve factors for all regions and the given operators (class i = operators[i])."""
        n = len(regions.ids)
        factor = np.ones((n, N_CLASSES))
        rse = np.zeros((n, N_CLASSES))
        row = np.full((n, N_CLASSES), -1, dtype=np.int64)
        uncalibrated: list[tuple[str, str]] = []
        classes = [(i, op) for i, op in enumerate(operators)] + [(ROAMER, ROAMING)]
        for r in range(n):
            chain = [regions.ids[a] for a in regions.ancestors(r)] + [ANY]
            for cls, op in classes:
                hit = self._find(chain, op)
                if hit >= 0:
                    factor[r, cls] = self.rows[hit].factor
                    rse[r, cls] = self.rows[hit].rse
                    row[r, cls] = hit
                elif op != ROAMING:
                    uncalibrated.append((regions.ids[r], op))
        return FactorMatrix(factor, rse, row, uncalibrated)


def fit_factors(regions: RegionSet, reference: Mapping[str, float], home: np.ndarray,
                weight: np.ndarray, reference_rse: float = 0.0) -> list[FactorRow]:
    """Fit one factor per reference region from device homes and their coverage weights.

    ``home`` is each active domestic device's home region index (-1: unknown, ignored) and
    ``weight`` its coverage correction (1 / share of its operator's active devices that have a
    home). The factor's rse combines the binomial noise of the device count with
    ``reference_rse``, the stated uncertainty of the reference figures. Raises ``ValueError``
    for an unknown region, a region without devices, a population <= 0, or a fitted factor
    outside :data:`FACTOR_RANGE` (too few devices for the population: a wrong reference file or
    a too short period).
    """
    known = home >= 0
    per_assignment = np.bincount(home[known], weights=weight[known], minlength=len(regions.ids))
    raw = np.bincount(home[known], minlength=len(regions.ids)).astype(np.float64)
    per_region = regions.subtree.astype(np.float64) @ per_assignment
    raw_region = regions.subtree.astype(np.float64) @ raw
    rows: list[FactorRow] = []
    for rid, population in reference.items():
        if rid not in regions.index:
            raise ValueError(f"reference: unknown region {rid!r}")
        i = regions.index[rid]
        if per_region[i] <= 0:
            raise ValueError(f"reference region {rid!r}: no device has its home there in the "
                             "calibration period; cannot fit a factor")
        if population <= 0:
            raise ValueError(f"reference region {rid!r}: population must be > 0")
        factor = float(population) / per_region[i]
        if factor_problem(factor) is not None:
            lo, hi = FACTOR_RANGE
            raise ValueError(f"reference region {rid!r}: {population:g} people on "
                             f"{per_region[i]:.1f} devices with a home there is {factor:.3g} "
                             f"people per device, outside the plausible {lo:g}..{hi:g} (check "
                             "the reference file and the calibration period)")
        p = min(1.0, 1.0 / factor)
        rse = float(np.sqrt((1.0 - p) / max(raw_region[i], 1.0) + reference_rse**2))
        rows.append(FactorRow(rid, ANY, factor, rse, float(population)))
    return rows


@dataclass(frozen=True)
class Shrinkage:
    """What :func:`fay_herriot` found for one group of sibling regions: the between-region
    variance of their log factors (``tau2``), each region's weight on its own figure
    (``weight``, 1: kept, 0: pooled), the shrunk log factors and their mean squared error."""

    tau2: float
    weight: np.ndarray
    log_factor: np.ndarray
    mse: np.ndarray


def fay_herriot(log_factor: np.ndarray, noise_var: np.ndarray, reference: np.ndarray
                ) -> Shrinkage:
    """Shrink sibling regions' log factors toward their pooled factor (Fay & Herriot 1979).

    Model: ``log_factor_i = theta_i + e_i`` with ``e_i ~ (0, noise_var_i)`` (the direct
    figure's sampling error, known) and ``theta_i = mu + u_i``, ``u_i ~ (0, tau2)`` (how much the
    regions' true log factors differ). ``mu`` is estimated by the pooled factor, ``log(sum
    reference / sum devices)`` with ``devices_i = reference_i / factor_i``; to first order that is
    ``sum a_i log_factor_i`` with ``a_i = reference_i / sum reference``. ``tau2`` is the
    Prasad–Rao (1990) moment estimator with these fixed weights: ``S = sum (log_factor_i -
    mu)^2`` has expectation ``sum (tau2 + noise_var_i)(1 - 2 a_i) + m sum a_j^2 (tau2 +
    noise_var_j)``; solved for ``tau2``, truncated at 0 (for equal ``a_i`` it is Prasad and
    Rao's ``(S - (1 - 1/m) sum noise_var) / (m - 1)``). The best linear predictor given
    ``tau2``: ``w_i = tau2 / (tau2 + noise_var_i)``, ``shrunk_i = w_i log_factor_i + (1 - w_i)
    mu``. Its mean squared error (Prasad & Rao 1990; Rao & Molina 2015, §6.2): ``g1 = w_i
    noise_var_i``, ``g2 = (1 - w_i)^2 var(mu)`` with ``var(mu) = sum a_j^2 (tau2 +
    noise_var_j)`` (the error of the estimated mean), ``g3 = noise_var_i^2 / (tau2 +
    noise_var_i)^3 var(tau2)`` with ``var(tau2) = 2 m^-2 sum (tau2 + noise_var_j)^2``;
    ``mse = min(g1 + g2 + 2 g3, noise_var_i)``. The cap: ``g3`` is a large-``m`` term, and with
    the three to eight siblings of a city or an oblast it alone can exceed ``noise_var_i``
    (redrawing the reference on simulated Astana, five districts of equal factors: realised
    error 0.28 %, ``sqrt(g1 + g2)`` 0.28 %, ``sqrt(g1 + g2 + 2 g3)`` 0.50 %; three Akmola
    regions: 0.37, 0.37, 0.65 %, against 0.50 % unpooled; with the simulator's unequal
    district factors: 0.49, 0.45, 0.50 %); the pooled figure is never stated as less certain
    than the region's own.

    All arrays are float64 of shape (m,), log factors in natural log, variances of log factors
    (squared relative errors), ``reference`` in people (> 0). A group of one region, or noise
    all zero, is returned unchanged (weight 1, mse = noise_var). Raises ``ValueError`` for
    arrays of different shapes, a non-finite value, a negative variance or a reference <= 0.
    """
    y = np.asarray(log_factor, dtype=np.float64)
    var = np.asarray(noise_var, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if not (y.shape == var.shape == ref.shape) or y.ndim != 1:
        raise ValueError(f"fay_herriot: shapes differ or are not 1-d: {y.shape}, {var.shape}, "
                         f"{ref.shape}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(var)) and np.all(np.isfinite(ref))):
        raise ValueError("fay_herriot: non-finite input")
    if np.any(var < 0) or np.any(ref <= 0):
        raise ValueError("fay_herriot: noise_var must be >= 0 and reference > 0")
    m = y.size
    if m < 2 or not np.any(var > 0):
        return Shrinkage(float("inf"), np.ones(m), y.copy(), var.copy())
    a = ref / ref.sum()
    mu = float(np.log(ref.sum() / (ref / np.exp(y)).sum()))
    spread = float(((y - mu) ** 2).sum())
    slope = float((1 - 2 * a).sum() + m * (a**2).sum())
    tau2 = max(0.0, (spread - float((var * (1 - 2 * a)).sum()) - m * float((a**2 * var).sum()))
               / slope)
    total = tau2 + var
    pooled = np.divide(var, total, out=np.zeros(m), where=total > 0)  # 1 - w_i
    weight = 1.0 - pooled
    shrunk = weight * y + pooled * mu
    var_mu = float((a**2 * total).sum())
    var_tau2 = 2.0 * float((total**2).sum()) / m**2
    g3 = np.divide(pooled**2 * var_tau2, total, out=np.zeros(m), where=total > 0)
    mse = np.minimum(weight * var + pooled**2 * var_mu + 2 * g3, var)
    return Shrinkage(tau2, weight, shrunk, mse)


def shrink_factors(regions: RegionSet, rows: Sequence[FactorRow], reference_rse: float
                   ) -> list[FactorRow]:
    """Pool sibling regions' fitted factors by how much of their spread the reference's own
    error explains (small-area estimation: Fay & Herriot 1979, :func:`fay_herriot`).

    ``rows`` as :func:`fit_factors` returns them (``region,*`` rows with ``people``; other rows
    pass through unchanged). Siblings are the fitted regions with the same parent (top-level
    regions are one group). In each group of two or more, the direct figure is the log factor,
    its noise the reference's stated error ``reference_rse`` (relative, the same for every
    region): a factor is ``reference / devices``, and the devices are the same ones the factor
    is applied to later, so only the reference's error is noise, while the devices' own
    sampling error and home-rule misplacements are real differences between regions that the
    factor must keep correcting (they belong to ``tau2``). The shrunk factors are then
    benchmarked (one ratio per group, Pfeffermann 2013 §5): the group's devices times its
    shrunk factors add up to its summed reference, scaled as the parent's own factor was when
    the parent was in a group shrunk before (groups go top-down), so pooling moves people
    between siblings, never in or out of their parent. A row's ``rse`` keeps its binomial part
    and replaces ``reference_rse^2`` by the mean squared error of the shrunk log factor.

    With ``reference_rse`` 0 (an exact reference) nothing changes: there is no noise to pool
    away. Pure; returns new rows in the order of ``rows``. Raises ``ValueError`` for a
    ``reference_rse`` outside :data:`RSE_RANGE`.
    """
    problem = rse_problem(reference_rse)
    if problem is not None:
        raise ValueError(f"reference_rse: {problem}")
    out = list(rows)
    if reference_rse == 0:
        return out
    fitted = {r.region: i for i, r in enumerate(rows)
              if r.region != ANY and r.operator == ANY and r.people is not None
              and r.region in regions.index}
    groups: dict[int, list[str]] = {}
    for rid in fitted:
        groups.setdefault(int(regions.parent_index[regions.index[rid]]), []).append(rid)
    scaled: dict[str, float] = {}  # region id -> shrunk factor / fitted factor
    for parent in sorted(groups, key=lambda p: -1 if p < 0 else int(regions.depth[p])):
        group = [rows[fitted[rid]] for rid in groups[parent]]
        if len(group) < 2:
            continue
        factor = np.array([r.factor for r in group])
        people = np.array([float(r.people) for r in group])  # type: ignore[arg-type]
        noise = np.full(len(group), reference_rse**2)
        fh = fay_herriot(np.log(factor), noise, people)
        target = people.sum() * (scaled.get(regions.ids[parent], 1.0) if parent >= 0 else 1.0)
        devices = people / factor
        shrunk = np.exp(fh.log_factor)
        shrunk *= target / float((devices * shrunk).sum())
        rse = np.sqrt(np.maximum(np.array([r.rse for r in group]) ** 2 - noise, 0.0) + fh.mse)
        for k, r in enumerate(group):
            new = float(np.clip(shrunk[k], *FACTOR_RANGE))
            scaled[r.region] = new / r.factor
            out[fitted[r.region]] = replace(r, factor=new, rse=float(min(rse[k], 9.99)))
    return out
