"""Snapshots: an :class:`Estimate` plus the registry, as the JSON object defacto publishes.

The layout is the contract in ``schemas/snapshot.schema.json``. Population figures are rounded to
whole people; suppressed figures (fewer than k devices) are ``null``. Device pseudonyms or keys
never appear: only counts per region and per H3 cell.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import h3
import numpy as np

from estimators.alerts import GapAlert, gap_crossings, update_gap_alerts
from estimators.estimate import Estimate
from estimators.regions import RegionSet


def iso_utc(ts_ms: int) -> str:
    """ISO-8601 UTC with a ``Z``: ``2026-03-02T01:00:00Z`` (milliseconds only when non-zero)."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    text = dt.isoformat(timespec="milliseconds" if ts_ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


def parse_iso_ms(text: str) -> int:
    """Milliseconds since 1970 from an ISO-8601 time; a time without zone is taken as UTC."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


def _count(x: float) -> int | None:
    return None if math.isnan(x) else round(x)


def _ratio(resident: int | None, registered: int | None) -> float | None:
    """``(resident - registered) / registered`` to 4 decimals, None when either is unknown."""
    if resident is None or not registered:
        return None
    return round((resident - registered) / registered, 4)


def build_snapshot(est: Estimate, regions: RegionSet, res: int,
                   registry: dict[str, int] | None, extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The published snapshot: per region figures with the registry gap, and per cell present."""
    registry = registry or {}
    out_regions: dict[str, Any] = {}
    for i, rid in enumerate(regions.ids):
        resident = _count(est.resident[i])
        registered = registry.get(rid)
        gap = resident - registered if resident is not None and registered is not None else None
        ratio = round(gap / registered, 4) if gap is not None and registered else None
        lo, hi = _count(est.resident_lo[i]), _count(est.resident_hi[i])
        out_regions[rid] = {
            "name": regions.names[i],
            "present": _count(est.present[i]),
            "lo": _count(est.present_lo[i]),
            "hi": _count(est.present_hi[i]),
            "resident": resident,
            "resident_lo": lo,
            "resident_hi": hi,
            "registered": registered,
            "gap": gap,
            "gap_ratio": ratio,
            "gap_ratio_lo": _ratio(lo, registered),
            "gap_ratio_hi": _ratio(hi, registered),
            "devices": _count(est.present_devices[i]),
            "resident_devices": _count(est.resident_devices[i]),
        }
    ids = [h3.int_to_str(int(c)) for c in est.cell_id.tolist()]
    snapshot: dict[str, Any] = {
        "at": iso_utc(est.at_ms),
        "res": res,
        "regions": out_regions,
        "cells": {cid: _count(v) for cid, v in zip(ids, est.cell_present.tolist(), strict=True)},
    }
    if extra:
        snapshot.update(extra)
    return snapshot


def gap_alerts(active: dict[str, GapAlert], snapshot: dict[str, Any], at_ms: int, threshold: float
               ) -> tuple[dict[str, GapAlert], list[GapAlert], list[GapAlert]]:
    """A snapshot's gap alerts given the open ones: (open now, opened, closed); see
    :mod:`estimators.alerts` (the whole resident interval must be beyond the threshold)."""
    ids = list(snapshot["regions"])
    figs = [snapshot["regions"][rid] for rid in ids]
    lo = np.array([np.nan if f.get("gap_ratio_lo") is None else f["gap_ratio_lo"] for f in figs])
    hi = np.array([np.nan if f.get("gap_ratio_hi") is None else f["gap_ratio_hi"] for f in figs])
    direction, magnitude = gap_crossings(lo, hi, threshold)
    return update_gap_alerts(active, ids, [f["name"] for f in figs], direction, magnitude, at_ms,
                             threshold)


def region_table(snapshot: dict[str, Any], truth: dict[str, dict[str, int]] | None = None) -> str:
    """A readable fixed-width table of a snapshot's regions (with true figures when given)."""
    head = ["region", "present", "90% interval", "resident", "registered", "gap", "gap %"]
    if truth is not None:
        head += ["true present", "true resident"]
    rows = [head]

    def fmt(v: Any) -> str:
        return "—" if v is None else f"{v:,}"

    for rid, r in snapshot["regions"].items():
        if rid == "unassigned" and r["devices"] is None and r["resident"] is None:
            continue
        interval = "—" if r["lo"] is None else f"{r['lo']:,}–{r['hi']:,}"
        pct = "—" if r["gap_ratio"] is None else f"{100 * r['gap_ratio']:+.1f}%"
        row = [f"{r['name']} ({rid})", fmt(r["present"]), interval, fmt(r["resident"]),
               fmt(r["registered"]), fmt(r["gap"]), pct]
        if truth is not None:
            t = truth.get(rid, {})
            row += [fmt(t.get("present")), fmt(t.get("resident"))]
        rows.append(row)
    widths = [max(len(str(r[c])) for r in rows) for c in range(len(head))]
    lines = []
    for k, r in enumerate(rows):
        cells_ = [str(v).ljust(widths[c]) if c == 0 else str(v).rjust(widths[c])
                  for c, v in enumerate(r)]
        lines.append("  ".join(cells_))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)

