"""Snapshots: an :class:`Estimate` plus the registry, as the JSON object defacto publishes.

The layout is the contract in ``schemas/snapshot.schema.json``. Population figures are rounded to
whole people; suppressed figures (fewer than k devices) are ``null``. Device pseudonyms or keys
never appear: only counts per region and per H3 cell.

Warm-up (:mod:`estimators.warmup`): a snapshot taken before the engine has observed long enough
says so in ``warming_up`` (top level: which figures, and when they are ready; per region: which
figures); while ``resident`` is warming up the registry gap (``gap``, ``gap_ratio*``) is null,
and gap alerts neither open nor close (:func:`gap_alerts`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import orjson

from estimators.alerts import GapAlert, gap_crossings, hold_gap_alerts, update_gap_alerts
from estimators.engine import Engine
from estimators.estimate import Estimate
from estimators.regions import RegionSet
from estimators.tally import Tally
from estimators.units import SECOND_MS
from estimators.warmup import PeriodWarmUp, WarmUp
from stream.timefmt import iso_utc

log = logging.getLogger("defacto.publish")


def count_or_null(x: float | None) -> int | None:
    """A published count: rounded, or None when suppressed (NaN), not finite or 2**63 or more.
    Such a figure (an overflow upstream; input limits should make it impossible) is logged,
    never published and never allowed to stop a snapshot."""
    if x is None or math.isnan(x):
        return None
    if not math.isfinite(x) or abs(x) >= _LARGEST:
        log.warning("a non-finite figure or one of 2**63 or more (%s) was published as null", x)
        return None
    return round(x)


_LARGEST = 2.0 ** 63
"""Figures this large or larger are an overflow upstream (input limits keep real ones far below):
published as null, like an infinite one, never wrapped around by an int64 cast."""


def _publishable(rounded: np.ndarray) -> np.ndarray:
    """Which rounded figures are published as numbers (finite and below :data:`_LARGEST`)."""
    with np.errstate(invalid="ignore"):
        return np.abs(rounded) < _LARGEST  # False for NaN and inf


def compact_json(doc: Any) -> str:
    """A published document as compact JSON text (UTF-8, numpy scalars as numbers, NaN as null),
    by orjson: several times faster than ``json.dumps`` on a snapshot's thousands of cells."""
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def counts_or_null(values: np.ndarray) -> list[int | None]:
    """:func:`count_or_null` of every value of a ``float64`` array, without a Python call per
    value (rounding half to even, as ``round``)."""
    values = np.asarray(values, dtype=np.float64)
    rounded = np.rint(values)
    finite = _publishable(rounded)
    if finite.all():
        return rounded.astype(np.int64).tolist()
    out = np.where(finite, rounded, 0).astype(np.int64).astype(object)
    out[~finite] = None  # suppressed (most cells of a snapshot): no Python call per value
    for x in values[~finite & ~np.isnan(values)].tolist():
        count_or_null(x)  # logged
    return out.tolist()


def cell_ids(cells: np.ndarray) -> list[str]:
    """H3 cell numbers (uint64) as their hex strings (``h3.int_to_str``, several times faster)."""
    return list(map("%x".__mod__, np.asarray(cells, dtype=np.uint64).tolist()))


_HEX_PAIRS = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), dtype=np.uint16)
"""The two ASCII hex digits of every byte value, as one ``uint16`` each (in memory order)."""


def _hex_digits(ids: np.ndarray) -> np.ndarray | None:
    """H3 cell numbers (``uint64[n]``, n > 0) as ``uint8[n, d]`` ASCII hex digits, as ``"%x"``
    writes them, when all have the same number ``d`` of digits (cells of one resolution); None
    otherwise. By byte: the numbers' big-endian bytes index a table of digit pairs."""
    d = len(f"{int(ids[0]):x}")
    if int(ids.min()) < (1 << 4 * (d - 1) if d > 1 else 0) \
            or (d < 16 and int(ids.max()) >= 1 << 4 * d):
        return None
    pairs = _HEX_PAIRS[ids.astype(">u8").view(np.uint8).reshape(-1, 8)]
    return pairs.view(np.uint8)[:, 16 - d:]


def cells_json(cells: np.ndarray, present: np.ndarray) -> bytes:
    """The snapshot's ``cells`` object as compact JSON, exactly as :func:`compact_json` writes
    ``dict(zip(cell_ids(cells), counts_or_null(present)))``, built by array (a late snapshot has
    some 19 k cells, nearly all suppressed): ``{"<hex id>":<count or null>,...}``.

    ``cells``: ``uint64[n]`` distinct H3 cell numbers; ``present``: ``float64[n]`` people (NaN
    = suppressed; an infinite or overflowing figure is logged and written as null, as
    :func:`count_or_null`). Every entry is first written as null, all of one width; the shown
    ones then take their count in their null's place as the entries are joined.
    """
    ids = np.asarray(cells, dtype=np.uint64)
    values = np.asarray(present, dtype=np.float64)
    n = len(ids)
    if n == 0:
        return b"{}"
    digits = _hex_digits(ids)
    if digits is None:  # mixed resolutions: cell by cell
        return orjson.dumps(dict(zip(cell_ids(ids), counts_or_null(values), strict=True)))
    rounded = np.rint(values)
    finite = _publishable(rounded)
    for x in values[~finite & ~np.isnan(values)].tolist():
        count_or_null(x)  # logged
    shown = np.flatnonzero(finite)
    d = digits.shape[1]
    width = d + 8  # "<hex>":null,
    rows = np.empty((n, width), dtype=np.uint8)
    rows[:, 0] = rows[:, d + 1] = ord('"')
    rows[:, 1:d + 1] = digits
    rows[:, d + 2] = ord(":")
    rows[:, d + 3:d + 7] = np.frombuffer(b"null", dtype=np.uint8)
    rows[:, d + 7] = ord(",")
    nulls = memoryview(rows).cast("B")
    pieces = [b"{"]
    start = 0
    for i, count in zip(shown.tolist(), rounded[shown].astype(np.int64).tolist(), strict=True):
        pieces += (nulls[start:i * width + d + 3], b"%d," % count)
        start = (i + 1) * width
    pieces.append(nulls[start:])
    body = b"".join(pieces)
    return body[:-1] + b"}"


def gap_ratio(resident: int | None, registered: int | None) -> float | None:
    """``(resident - registered) / registered`` to 4 decimals; None when either is unknown or
    nobody is registered."""
    if resident is None or not registered:
        return None
    return round((resident - registered) / registered, 4)


def period_warming_doc(warm: PeriodWarmUp | None, first_night: int, figures: Sequence[str]
                       ) -> dict[str, Any]:
    """A period table's ``warming_up`` object for ``figures`` (``relocations`` and ``confirmed``
    for migration flows, ``arrivals`` for foreign SIMs): whether each, in the period beginning
    on ``first_night``, is still warming up (:class:`~estimators.warmup.PeriodWarmUp`), since
    when the stream was observed (ISO UTC) and the first night of a period where it is warm
    (null: unknown, nothing observed yet)."""
    if warm is None:
        warm = PeriodWarmUp(None, None, None, None)
    out: dict[str, Any] = {figure: warm.warming(figure, first_night) for figure in figures}
    out["observed_since"] = None if warm.observed_from_ms is None else \
        iso_utc(warm.observed_from_ms)
    for figure in figures:
        ready = warm.ready_night(figure)
        out[f"{figure}_ready_from"] = None if ready is None else \
            (date(1970, 1, 1) + timedelta(days=ready)).isoformat()
    return out


def warming_up_doc(warm: WarmUp) -> dict[str, Any]:
    """The snapshot's ``warming_up`` object: which figures are still warming up and when each is
    (or was) warm, ISO UTC (null: unknown, nothing observed yet)."""
    def iso(ms: int | None) -> str | None:
        return None if ms is None else iso_utc(ms)

    return {"present": warm.present, "resident": warm.resident,
            "observed_since": iso(warm.observed_from_ms),
            "present_ready_at": iso(warm.present_ready_ms),
            "resident_ready_at": iso(warm.resident_ready_ms)}


def build_snapshot(est: Estimate, regions: RegionSet, res: int,
                   registry: dict[str, int] | None, extra: dict[str, Any] | None = None,
                   warm: WarmUp | None = None, cells_as_json: bool = False) -> dict[str, Any]:
    """The published snapshot: per region figures with the registry gap, and per cell present.

    ``est`` holds ``float64[n_regions]`` people (NaN = suppressed) per figure; they are rounded
    to whole people, NaN becomes ``None``. ``extra`` keys are added at the top level. With
    ``warm``, the snapshot carries ``warming_up`` (top level and per region) and, while
    resident figures are warming up, no gap (null ``gap`` and ``gap_ratio*``). With
    ``cells_as_json`` (a writer that only encodes the snapshot), ``cells`` is the object's JSON
    text as an ``orjson.Fragment`` (:func:`cells_json`): :func:`compact_json` writes the same
    text as for the dict, and ``orjson.loads(orjson.dumps(snapshot["cells"]))`` is the dict.
    """
    registry = registry or {}
    out_regions: dict[str, Any] = {}
    no_gap = warm is not None and warm.resident
    figures = ("present", "present_lo", "present_hi", "resident", "resident_lo", "resident_hi",
               "present_devices", "resident_devices")
    columns = {f: counts_or_null(getattr(est, f)) for f in figures}  # by array, not per value
    for i, rid in enumerate(regions.ids):
        resident = columns["resident"][i]
        registered = registry.get(rid)
        lo, hi = columns["resident_lo"][i], columns["resident_hi"][i]
        if no_gap:
            gap_of, ref = None, None
        else:
            gap_of, ref = resident, registered
        gap = gap_of - ref if gap_of is not None and ref is not None else None
        out_regions[rid] = {
            "name": regions.names[i],
            "present": columns["present"][i],
            "lo": columns["present_lo"][i],
            "hi": columns["present_hi"][i],
            "resident": resident,
            "resident_lo": lo,
            "resident_hi": hi,
            "registered": registered,
            "gap": gap,
            "gap_ratio": gap_ratio(gap_of, ref),
            "gap_ratio_lo": gap_ratio(None if no_gap else lo, ref),
            "gap_ratio_hi": gap_ratio(None if no_gap else hi, ref),
            "devices": columns["present_devices"][i],
            "resident_devices": columns["resident_devices"][i],
        }
        if warm is not None:
            out_regions[rid]["warming_up"] = {"present": warm.present, "resident": warm.resident}
    snapshot: dict[str, Any] = {
        "at": iso_utc(est.at_ms),
        "res": res,
        "regions": out_regions,
        "cells": orjson.Fragment(cells_json(est.cell_id, est.cell_present)) if cells_as_json
        else dict(zip(cell_ids(est.cell_id), counts_or_null(est.cell_present), strict=True)),
    }
    if warm is not None:
        snapshot["warming_up"] = warming_up_doc(warm)
    if extra:
        snapshot.update(extra)
    return snapshot


def engine_snapshot(engine: Engine, at_ms: int, registry: dict[str, int] | None,
                    estimate: Estimate | None = None, tally: Tally | None = None,
                    cells_as_json: bool = False) -> dict[str, Any]:
    """The snapshot of ``engine``'s estimate at ``at_ms`` (or of ``estimate``, computed from
    ``tally``, or from the engine's tally at ``at_ms``) as ``defacto replay`` writes it (with
    ``horizon_s``, ``k`` and ``warming_up``, judged by ``tally`` or else by the engine);
    ``cells_as_json``: see :func:`build_snapshot`."""
    cfg = engine.config.estimate
    if estimate is None:
        tally = engine.tally(at_ms) if tally is None else tally
        estimate = engine.estimate_tally(tally)
    warm = engine.warm_up_tally(tally) if tally is not None else engine.warm_up(at_ms)
    return build_snapshot(estimate, engine.regions, engine.cells.res, registry,
                          {"horizon_s": cfg.horizon_ms // SECOND_MS, "k": cfg.k_anonymity},
                          warm, cells_as_json)


def resident_warming(snapshot: dict[str, Any]) -> bool:
    """Whether a snapshot's resident (and gap) figures are still warming up (a snapshot without
    ``warming_up``, written before it existed, is not)."""
    return bool((snapshot.get("warming_up") or {}).get("resident", False))


def gap_alerts(active: dict[str, GapAlert], snapshot: dict[str, Any], at_ms: int, threshold: float
               ) -> tuple[dict[str, GapAlert], list[GapAlert], list[GapAlert]]:
    """A snapshot's gap alerts given the open ones: (open now, opened, closed); see
    :mod:`estimators.alerts` (the whole resident interval must be beyond the threshold).

    A snapshot whose resident figures are warming up changes nothing: no alert opens or closes,
    the open ones stay as they were (:func:`estimators.alerts.hold_gap_alerts`).
    """
    if resident_warming(snapshot):
        return hold_gap_alerts(active)
    ids = list(snapshot["regions"])
    figs = [snapshot["regions"][rid] for rid in ids]
    lo = np.array([np.nan if f.get("gap_ratio_lo") is None else f["gap_ratio_lo"] for f in figs])
    hi = np.array([np.nan if f.get("gap_ratio_hi") is None else f["gap_ratio_hi"] for f in figs])
    direction, magnitude = gap_crossings(lo, hi, threshold)
    return update_gap_alerts(active, ids, [f["name"] for f in figs], direction, magnitude, at_ms,
                             threshold)
