"""Gap alerts: when a region's resident population and its registry drift apart.

A region is *over* when even the lower end of its resident interval exceeds the registered
population by more than the threshold (``(resident_lo - registered) / registered > threshold``),
and *under* when even the upper end falls short by more than it (``(resident_hi - registered) /
registered < -threshold``). Requiring the whole interval beyond the threshold keeps sampling noise
from paging anyone: a region whose estimate straddles the threshold is not alerted.

An alert opens at the first snapshot that crosses, keeps its start time while the crossing lasts
(tracking the latest and the largest magnitude), and closes at the first snapshot that does not
cross (or crosses the other way, which opens a new alert). The state is a plain dict so the
publisher can keep it in Redis next to the snapshot it belongs to.

Figures that are still warming up (:mod:`estimators.warmup`) never open or close an alert: their
snapshots leave the open alerts as they are (:func:`hold_gap_alerts`), and the first warm
snapshot takes up from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

OVER = "over"
UNDER = "under"


def gap_crossings(gap_ratio_lo: np.ndarray, gap_ratio_hi: np.ndarray, threshold: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per region: direction code (+1 over, -1 under, 0 within) and magnitude of the crossing.

    The magnitude is the gap ratio at the interval end nearest zero, so it is the gap that the
    estimate supports at least (positive over, negative under; 0 when within).
    """
    if not threshold > 0:
        raise ValueError(f"gap threshold must be positive, got {threshold!r}")
    lo = np.asarray(gap_ratio_lo, dtype=np.float64)
    hi = np.asarray(gap_ratio_hi, dtype=np.float64)
    over = lo > threshold
    under = hi < -threshold
    direction = over.astype(np.int8) - under.astype(np.int8)
    magnitude = np.where(over, lo, np.where(under, hi, 0.0))
    return direction, magnitude


@dataclass
class GapAlert:
    """One alert: a region's gap beyond the threshold, from ``since_ms`` to ``until_ms``."""

    region: str
    name: str
    direction: str
    since_ms: int
    at_ms: int
    magnitude: float
    peak: float
    threshold: float
    until_ms: int | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready fields."""
        return asdict(self)


def update_gap_alerts(active: dict[str, GapAlert], region_ids: list[str], names: list[str],
                      direction: np.ndarray, magnitude: np.ndarray, at_ms: int, threshold: float
                      ) -> tuple[dict[str, GapAlert], list[GapAlert], list[GapAlert]]:
    """Advance the open alerts to the snapshot at ``at_ms``: (still open, opened, closed).

    ``active`` is not modified. A snapshot older than an alert's latest one changes nothing for
    that alert, so replaying a snapshot twice is harmless.
    """
    still: dict[str, GapAlert] = {}
    opened: list[GapAlert] = []
    closed: list[GapAlert] = []
    seen: set[str] = set()
    for i, rid in enumerate(region_ids):
        seen.add(rid)
        want = OVER if direction[i] > 0 else UNDER if direction[i] < 0 else None
        cur = active.get(rid)
        if cur is not None and at_ms <= cur.at_ms:
            still[rid] = cur
            continue
        mag = round(float(magnitude[i]), 4)
        if cur is not None and cur.direction == want:
            peak = max(cur.peak, mag) if want == OVER else min(cur.peak, mag)
            still[rid] = GapAlert(rid, names[i], want, cur.since_ms, at_ms, mag, peak, threshold)
            continue
        if cur is not None:
            closed.append(GapAlert(**{**cur.to_dict(), "until_ms": at_ms}))
        if want is not None:
            new = GapAlert(rid, names[i], want, at_ms, at_ms, mag, mag, threshold)
            still[rid] = new
            opened.append(new)
    for rid, cur in active.items():
        if rid not in seen:
            closed.append(GapAlert(**{**cur.to_dict(), "until_ms": max(at_ms, cur.at_ms)}))
    return still, opened, closed


def hold_gap_alerts(active: dict[str, GapAlert]
                    ) -> tuple[dict[str, GapAlert], list[GapAlert], list[GapAlert]]:
    """The outcome of a snapshot whose figures are warming up: every open alert stays open,
    unchanged (its latest snapshot, magnitude and peak are those of the last warm snapshot);
    nothing opens or closes. Same shape as :func:`update_gap_alerts`."""
    return dict(active), [], []
