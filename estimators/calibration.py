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
from dataclasses import dataclass

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
