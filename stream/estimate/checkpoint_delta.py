"""Checkpoint deltas: the device rows changed since the last full checkpoint, and nothing else.

A worker's full checkpoint carries every device (129 MB at 1.2 M devices); between two of them
only the devices that pinged change, a few per cent per checkpoint interval at real ping rates.
So a checkpoint is written as a *base* (everything) or a *delta*: the rows whose content
changed since the base, found by comparing a 64-bit digest per row with the base's (kept in
memory, 8 bytes per device), plus every array that is not a device row (held pings, watermark,
ledgers, location table) in full. Deltas are cumulative (each against the base, not the previous
delta), so resuming needs the base and the latest delta only. A new base is written when the
changed rows pass ``max_share`` of all rows (a night close, which moves every device's home
summary; an eviction, which compacts the rows), and first after a cold start.

Rows are matched by position: the engine keeps a device's row until rows are compacted, and a
compaction changes the key (part of each row's digest) of every moved row, so moved rows are in
the delta. A restored engine keeps the blob's row order, and the digests see a stamp's location
as its (H3 cell, region), not the engine's number for it, so after a restart the worker adopts
the stored base (:func:`~stream.estimate.checkpoint.restore` returns it) and its first
checkpoint is a delta too. The digest is a 64-bit xor–multiply–shift chain over the row's
64-bit words, finished by murmur3's mixer; two different rows share one (and the row is missed)
with a probability of the order of 2^-64 (each step carries differences both up, by the
multiply, and down, by the shift). A delta's rows index a location table of their own.

Pure functions over :func:`~estimators.engine.portable_state` arrays, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from estimators.device_index import mix64
from estimators.presence import MAX_LOCATIONS

DELTA_ROWS = "delta_rows"
"""The array of a delta holding the changed row numbers (int64, ascending)."""
_STEP = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)


@dataclass(frozen=True)
class DeltaBase:
    """The last full checkpoint written: its ``id`` (16 hex digits, a digest of its rows),
    ``digests`` (uint64[n_devices], one per device row) and ``layout`` (each device field's
    name, dtype and row shape: a delta is written only for the same layout)."""

    id: str
    digests: np.ndarray
    layout: tuple[tuple[str, str, tuple[int, ...]], ...] = ()


def field_layout(state: dict[str, np.ndarray], fields: list[str]
                 ) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """Each device field's (name, dtype, row shape) in ``state``."""
    return tuple((f, np.asarray(state[f]).dtype.str, np.asarray(state[f]).shape[1:])
                 for f in fields)


def row_digests(columns: list[np.ndarray]) -> np.ndarray:
    """A 64-bit digest of each row across ``columns`` (arrays with the same first dimension
    ``n``, any dtype and trailing shape): uint64[n]. Equal rows give equal digests; unequal
    rows collide with a probability of the order of 2^-64."""
    n = len(columns[0]) if columns else 0
    h = np.zeros(n, dtype=np.uint64)
    if n == 0:
        return h
    for col in columns:
        raw = np.ascontiguousarray(col).view(np.uint8).reshape(n, -1)
        pad = (-raw.shape[1]) % 8
        if pad:
            raw = np.concatenate([raw, np.zeros((n, pad), dtype=np.uint8)], axis=1)
        for word in raw.view(np.uint64).T:
            h ^= word
            h *= _STEP
            h ^= h >> _SHIFT  # carries high bits down too: a multiply alone only carries up
    return mix64(h)


def device_digests(state: dict[str, np.ndarray], fields: list[str]) -> np.ndarray:
    """:func:`row_digests` of a checkpoint's device rows (``state``: portable state arrays,
    ``fields``: its device row names) with each stamp's location number replaced by a hash of
    its (H3 cell, region) from ``stamp_cells``/``stamp_regions``: the digests do not depend on
    how an engine numbered its locations, so a restored engine's rows digest as the blob's."""
    stamp = np.asarray(state["stamp"], dtype=np.uint64)
    mask = np.uint64(MAX_LOCATIONS)
    loc = (stamp & mask).astype(np.int64)
    cells = np.asarray(state["stamp_cells"], dtype=np.uint64)
    regions = np.asarray(state["stamp_regions"], dtype=np.int64).astype(np.uint64)
    where = mix64(cells ^ mix64(regions)) if len(cells) else cells
    portable = (stamp & ~mask) ^ (where[loc] if len(loc) else stamp)
    return row_digests([portable if f == "stamp" else state[f] for f in fields])


def base_of(digests: np.ndarray, layout: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
            ) -> DeltaBase:
    """The :class:`DeltaBase` of a full checkpoint whose rows have these :func:`row_digests`
    (and fields this :func:`field_layout`)."""
    return DeltaBase(hashlib.blake2b(digests.tobytes(), digest_size=8).hexdigest(), digests,
                     layout)


def changed_rows(base: DeltaBase, digests: np.ndarray) -> np.ndarray:
    """Row numbers (int64, ascending) whose digest differs from ``base``'s, plus every row
    beyond the base's length."""
    m = min(len(base.digests), len(digests))
    differ = np.flatnonzero(base.digests[:m] != digests[:m])
    return np.concatenate([differ, np.arange(m, len(digests), dtype=np.int64)])


def apply_rows(base: dict[str, np.ndarray], rows: np.ndarray, values: dict[str, np.ndarray],
               n: int) -> dict[str, np.ndarray]:
    """The device arrays of a base with a delta applied: each of ``values`` (name -> the
    changed rows' values, in ``rows`` order) laid over ``base[name]`` cut or grown to ``n``
    rows. Raises ``ValueError`` when a delta array does not fit its base (another layout) or
    the rows do not cover every row the base lacks."""
    out: dict[str, np.ndarray] = {}
    rows = np.asarray(rows, dtype=np.int64)
    for name, vals in values.items():
        old = np.asarray(base[name])
        if old.shape[1:] != vals.shape[1:] or old.dtype != vals.dtype or len(vals) != len(rows):
            raise ValueError(f"checkpoint delta: {name} {vals.dtype}{vals.shape} does not fit "
                             f"its base's {old.dtype}{old.shape}")
        arr = np.zeros((n, *old.shape[1:]), dtype=old.dtype)
        m = min(n, len(old))
        if np.count_nonzero(rows >= m) != n - m or (rows.size and rows.max() >= n):
            raise ValueError(f"checkpoint delta: its rows do not cover rows {m}..{n - 1}")
        arr[:m] = old[:m]
        arr[rows] = vals
        out[name] = arr
    return out
