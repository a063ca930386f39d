"""Accuracy of snapshots against a simulator's ground truth (the oracle for every estimator).

Pure functions over parsed snapshots and truth records: absolute percentage errors of
``present`` and ``resident`` per region and hour, and how often the stated interval holds the
true value. Only regions at or above ``min_true`` true people are scored (small regions are
dominated by counting noise and are often suppressed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

INTERVALS = {"present": ("lo", "hi"), "resident": ("resident_lo", "resident_hi")}


@dataclass(frozen=True)
class Accuracy:
    """Median and 90th-percentile APE (%) and interval coverage (%) per figure."""

    scored: int
    present_mape: float
    present_p90: float
    present_coverage: float
    resident_mape: float
    resident_p90: float
    resident_coverage: float

    def line(self) -> str:
        """One readable line of the figures."""
        return (f"{self.scored} region-hours: present MdAPE {self.present_mape:.2f}% "
                f"(p90 {self.present_p90:.2f}%, in interval {self.present_coverage:.1f}%), "
                f"resident MdAPE {self.resident_mape:.2f}% (p90 {self.resident_p90:.2f}%, "
                f"in interval {self.resident_coverage:.1f}%)")


def score(snapshots: Iterable[Mapping[str, Any]],
          truth: Mapping[str, Mapping[str, Mapping[str, int]]], min_true: float,
          regions: Iterable[str] | None = None) -> Accuracy:
    """Score snapshots against truth keyed by ``at``; optionally only the listed regions."""
    wanted = set(regions) if regions is not None else None
    ape: dict[str, list[float]] = {"present": [], "resident": []}
    inside: dict[str, list[bool]] = {"present": [], "resident": []}
    scored = 0
    for snap in snapshots:
        true_regions = truth.get(snap["at"])
        if true_regions is None:
            continue
        for rid, est in snap["regions"].items():
            t = true_regions.get(rid)
            if t is None or (wanted is not None and rid not in wanted):
                continue
            if min(t["present"], t["resident"]) < min_true:
                continue
            scored += 1
            for fig, (lo_key, hi_key) in INTERVALS.items():
                value, true = est[fig], t[fig]
                if value is None:
                    ape[fig].append(100.0)
                    inside[fig].append(False)
                    continue
                ape[fig].append(100.0 * abs(value - true) / true)
                inside[fig].append(est[lo_key] <= true <= est[hi_key])
    if scored == 0:
        raise ValueError("no region-hour to score: no matching times or all regions too small")

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    return Accuracy(
        scored=scored,
        present_mape=pct(ape["present"], 50), present_p90=pct(ape["present"], 90),
        present_coverage=100.0 * float(np.mean(inside["present"])),
        resident_mape=pct(ape["resident"], 50), resident_p90=pct(ape["resident"], 90),
        resident_coverage=100.0 * float(np.mean(inside["resident"])),
    )


HOUR_BUCKETS = (("night", 22, 6), ("morning", 6, 10), ("day", 10, 16), ("evening", 16, 22))
"""Local hour-of-day buckets ``(name, from_h, to_h)`` (to excluded, wrapping at midnight) that
separate the night, the two daily transitions and the day."""


def hour_bucket(local_hour: int, buckets: tuple[tuple[str, int, int], ...] = HOUR_BUCKETS) -> str:
    """The name of the bucket holding a local hour of day (0..23)."""
    for name, lo, hi in buckets:
        if (lo <= local_hour < hi) if lo < hi else (local_hour >= lo or local_hour < hi):
            return name
    raise ValueError(f"hour {local_hour} is in no bucket")


def score_by(snapshots: Iterable[Mapping[str, Any]],
             truth: Mapping[str, Mapping[str, Mapping[str, int]]], min_true: float,
             key: Callable[[str], str]) -> dict[str, Accuracy]:
    """:func:`score` per group of snapshots, grouped by ``key(snapshot["at"])`` (e.g. the hour
    bucket of the instant); groups with nothing to score are left out."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for snap in snapshots:
        groups.setdefault(key(snap["at"]), []).append(snap)
    out = {}
    for name, snaps in groups.items():
        try:
            out[name] = score(snaps, truth, min_true)
        except ValueError:
            continue
    return out
