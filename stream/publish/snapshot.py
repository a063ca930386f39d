"""Snapshots: an :class:`Estimate` plus the registry, as the JSON object defacto publishes.

The layout is the contract in ``schemas/snapshot.schema.json``. Population figures are rounded to
whole people; suppressed figures (fewer than k devices) are ``null``. Device pseudonyms or keys
never appear: only counts per region and per H3 cell.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import h3
import numpy as np

from estimators.alerts import GapAlert, gap_crossings, update_gap_alerts
from estimators.engine import Engine
from estimators.estimate import Estimate
from estimators.regions import RegionSet
from estimators.units import SECOND_MS
from stream.timefmt import iso_utc

log = logging.getLogger("defacto.publish")


def count_or_null(x: float | None) -> int | None:
    """A published count: rounded, or None when suppressed (NaN) or not finite. An infinite
    figure (an overflow upstream; input limits should make it impossible) is logged, never
    published and never allowed to stop a snapshot."""
    if x is None or math.isnan(x):
        return None
    if not math.isfinite(x):
        log.warning("a non-finite figure (%s) was published as null", x)
        return None
    return round(x)


def gap_ratio(resident: int | None, registered: int | None) -> float | None:
    """``(resident - registered) / registered`` to 4 decimals; None when either is unknown or
    nobody is registered."""
    if resident is None or not registered:
        return None
    return round((resident - registered) / registered, 4)


def build_snapshot(est: Estimate, regions: RegionSet, res: int,
                   registry: dict[str, int] | None, extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The published snapshot: per region figures with the registry gap, and per cell present.

    ``est`` holds ``float64[n_regions]`` people (NaN = suppressed) per figure; they are rounded
    to whole people, NaN becomes ``None``. ``extra`` keys are added at the top level.
    """
    registry = registry or {}
    out_regions: dict[str, Any] = {}
    for i, rid in enumerate(regions.ids):
        resident = count_or_null(est.resident[i])
        registered = registry.get(rid)
        gap = resident - registered if resident is not None and registered is not None else None
        lo, hi = count_or_null(est.resident_lo[i]), count_or_null(est.resident_hi[i])
        out_regions[rid] = {
            "name": regions.names[i],
            "present": count_or_null(est.present[i]),
            "lo": count_or_null(est.present_lo[i]),
            "hi": count_or_null(est.present_hi[i]),
            "resident": resident,
            "resident_lo": lo,
            "resident_hi": hi,
            "registered": registered,
            "gap": gap,
            "gap_ratio": gap_ratio(resident, registered),
            "gap_ratio_lo": gap_ratio(lo, registered),
            "gap_ratio_hi": gap_ratio(hi, registered),
            "devices": count_or_null(est.present_devices[i]),
            "resident_devices": count_or_null(est.resident_devices[i]),
        }
    ids = [h3.int_to_str(int(c)) for c in est.cell_id.tolist()]
    snapshot: dict[str, Any] = {
        "at": iso_utc(est.at_ms),
        "res": res,
        "regions": out_regions,
        "cells": {cid: count_or_null(v) for cid, v in zip(ids, est.cell_present.tolist(), strict=True)},
    }
    if extra:
        snapshot.update(extra)
    return snapshot


def engine_snapshot(engine: Engine, at_ms: int, registry: dict[str, int] | None,
                    estimate: Estimate | None = None) -> dict[str, Any]:
    """The snapshot of ``engine``'s estimate at ``at_ms`` (or of ``estimate``, computed from
    its tally at ``at_ms``) as ``defacto replay`` writes it (with ``horizon_s`` and ``k``)."""
    cfg = engine.config.estimate
    est = engine.estimate(at_ms) if estimate is None else estimate
    return build_snapshot(est, engine.regions, engine.cells.res, registry,
                          {"horizon_s": cfg.horizon_ms // SECOND_MS, "k": cfg.k_anonymity})


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
