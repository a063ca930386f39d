"""Tallies: the integer sufficient statistics of an estimate, summable across partitions.

Every figure defacto publishes is a function of a few device counts at an instant ``at_ms``:

- ``present`` rows: devices seen within the horizon, counted by (H3 cell, factor region,
  operator class), where the factor region is the device's home region (its current region when
  it has none) and selects the calibration factor;
- ``resident`` rows: active domestic devices with a home, counted by (home region, class);
- per-class totals of active, present and housed devices (the coverage corrections);
- with migration on, the period counts of :mod:`estimators.migration` (open and last closed
  week and month);
- with foreign stays on, the period ledgers of :mod:`estimators.foreign` (arrivals, departures,
  nights and stock of foreign SIMs by country, region and stay class);
- ``observed_from_ms``: when the engine began observing (its earliest accepted ping), which says
  whether the figures are still warming up (:mod:`estimators.warmup`). It is not a count: merged,
  it is the parts' common start, or the latest when a part started over later (the combined
  figure is warm only when every part is; :func:`merged_observation`).

A tally holds only these counts (no device keys), so tallies of disjoint device sets (Kafka
partitions) add up exactly, and :func:`estimate_from_tally` on the sum gives the same figures,
to the last bit, as on a single engine that saw all the pings. Replay and the live pipeline both
go through it, which is what makes them agree.

Region and factor-region columns are *indices* into one regions file, cells come from one cell
plan, counts from one set of engine options: a tally carries an opaque ``fingerprint`` of those
settings (set by the caller, ``stream.estimate.fingerprint``), and tallies with different
fingerprints are never summed (:class:`TallyMismatchError`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from estimators.calibration import N_CLASSES
from estimators.foreign import ForeignTally, merge_foreign
from estimators.migration import MigrationTally, merge_migration
from estimators.presence import ROAMER
from estimators.warmup import SAME_START_MS

PRESENT_FIELDS = ("present_cell", "present_region", "present_factor_region", "present_cls",
                  "present_count")
RESIDENT_FIELDS = ("resident_region", "resident_cls", "resident_count")
CLASS_FIELDS = ("n_active", "n_present", "n_housed")
MOVER_FIELDS = ("mover_home", "mover_day", "mover_at_day", "mover_age_10min", "mover_cls",
                "mover_count")
MOVER_DTYPES = (np.int32, np.int32, np.uint8, np.uint8, np.uint8)
UNHOUSED_FIELDS = ("unhoused_here", "unhoused_day", "unhoused_age_10min", "unhoused_cls",
                   "unhoused_count")
UNHOUSED_DTYPES = (np.int32, np.int32, np.uint8, np.uint8)
STAYER_FIELDS = ("stayer_region", "stayer_age_10min", "stayer_count")
STAYER_DTYPES = (np.int32, np.uint8)
ROUTINE_FIELDS = MOVER_FIELDS + UNHOUSED_FIELDS + STAYER_FIELDS
"""Every column of the stale-mover rule's rows (:mod:`estimators.routine`)."""


def _none(dtype: type) -> np.ndarray:
    return np.zeros(0, dtype=dtype)


class TallyMismatchError(ValueError):
    """Tallies that cannot be summed: taken with different settings (fingerprints)."""


@dataclass
class Tally:
    """Device counts at ``at_ms``; class ``i`` is ``operators[i]``, class 255 is roamers.

    ``fingerprint``: an opaque text naming the settings the counts were taken under (``""``:
    not recorded); kept by :meth:`to_bytes`, :meth:`canonical` and :func:`merge_tallies`.
    ``observed_from_ms``: UTC ms of the start of the hour of the engine's earliest accepted ping
    (:func:`estimators.warmup.observation_start`; None: nothing observed, or a tally of an
    earlier version).
    """

    at_ms: int
    operators: tuple[str, ...]
    present_cell: np.ndarray
    present_region: np.ndarray
    present_factor_region: np.ndarray
    present_cls: np.ndarray
    present_count: np.ndarray
    resident_region: np.ndarray
    resident_cls: np.ndarray
    resident_count: np.ndarray
    n_active: np.ndarray
    n_present: np.ndarray
    n_housed: np.ndarray
    migration: MigrationTally | None = None
    fingerprint: str = ""
    foreign: ForeignTally | None = None
    observed_from_ms: int | None = None
    # movers (estimators.routine): devices between their home and daytime regions, counted by
    # (home, daytime region, last seen at the daytime region?, age in 10-minute steps, class);
    # tallies written before the steps (``mover_age``, whole hours) are read as 6 steps an hour
    mover_home: np.ndarray = field(default_factory=lambda: _none(np.int32))
    mover_day: np.ndarray = field(default_factory=lambda: _none(np.int32))
    mover_at_day: np.ndarray = field(default_factory=lambda: _none(np.uint8))
    mover_age_10min: np.ndarray = field(default_factory=lambda: _none(np.uint8))
    mover_cls: np.ndarray = field(default_factory=lambda: _none(np.uint8))
    mover_count: np.ndarray = field(default_factory=lambda: _none(np.int64))
    # domestic devices without a home yet, with a daytime region: (region of the last ping,
    # daytime region, age in 10-minute steps, class); and housed devices seen at the daytime
    # region that is their home: (region, age in 10-minute steps). Absent in older tallies.
    unhoused_here: np.ndarray = field(default_factory=lambda: _none(np.int32))
    unhoused_day: np.ndarray = field(default_factory=lambda: _none(np.int32))
    unhoused_age_10min: np.ndarray = field(default_factory=lambda: _none(np.uint8))
    unhoused_cls: np.ndarray = field(default_factory=lambda: _none(np.uint8))
    unhoused_count: np.ndarray = field(default_factory=lambda: _none(np.int64))
    stayer_region: np.ndarray = field(default_factory=lambda: _none(np.int32))
    stayer_age_10min: np.ndarray = field(default_factory=lambda: _none(np.uint8))
    stayer_count: np.ndarray = field(default_factory=lambda: _none(np.int64))

    def canonical(self) -> Tally:
        """The same counts with operators sorted by name and rows in a fixed order."""
        return merge_tallies([self])

    def to_bytes(self) -> bytes:
        """Compact binary form (numpy ``.npz``, no pickled objects) for Redis and checkpoints."""
        buf = io.BytesIO()
        arrays = {f: getattr(self, f) for f in PRESENT_FIELDS + RESIDENT_FIELDS + CLASS_FIELDS
                  + ROUTINE_FIELDS}
        if self.migration is not None:
            arrays.update(self.migration.to_arrays())
        if self.foreign is not None:
            arrays.update(self.foreign.to_arrays())
        if self.fingerprint:
            arrays["fingerprint"] = np.array(self.fingerprint, dtype=str)
        if self.observed_from_ms is not None:
            arrays["observed_from"] = np.array([self.observed_from_ms], dtype=np.int64)
        np.savez(buf, at_ms=np.array([self.at_ms], dtype=np.int64),
                 operators=np.array(self.operators, dtype=str), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Tally:
        """Inverse of :meth:`to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            fields = {f: z[f] for f in PRESENT_FIELDS + RESIDENT_FIELDS + CLASS_FIELDS}
            fields.update({f: z[f] for f in ROUTINE_FIELDS if f in z.files})  # absent: older
            if "mover_age" in z.files and "mover_age_10min" not in z.files:  # whole hours
                fields["mover_age_10min"] = np.minimum(z["mover_age"].astype(np.int64) * 6,
                                                       255).astype(np.uint8)
            migration = MigrationTally.from_arrays({k: z[k] for k in z.files if k.startswith("mig")})
            foreign = ForeignTally.from_arrays({k: z[k] for k in z.files if k.startswith("fgn")})
            fingerprint = str(z["fingerprint"]) if "fingerprint" in z.files else ""
            observed = int(z["observed_from"][0]) if "observed_from" in z.files else None
            return cls(at_ms=int(z["at_ms"][0]), operators=tuple(z["operators"].tolist()),
                       migration=migration, fingerprint=fingerprint, foreign=foreign,
                       observed_from_ms=observed, **fields)


def sum_by_key(keys: list[np.ndarray], counts: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Sum ``counts`` over equal key tuples; rows come out sorted by the keys (first key first).

    Integer keys only. Keys whose value ranges fit together in 62 bits are sorted as one packed
    int64 (:func:`_packed_keys`): the same order as ``np.lexsort`` over them, in fewer passes."""
    if counts.size == 0:
        return [k[:0] for k in keys], counts[:0].astype(np.int64)
    sort_keys = _packed_keys(keys)
    order = (np.argsort(sort_keys[0], kind="stable") if len(sort_keys) == 1
             else np.lexsort(tuple(reversed(sort_keys))))
    change = np.zeros(counts.size, dtype=bool)
    change[0] = True
    for k in sort_keys:
        s = k[order]
        change[1:] |= s[1:] != s[:-1]
    starts = np.flatnonzero(change)
    summed = np.add.reduceat(counts[order].astype(np.int64), starts)
    first = order[starts]
    return [k[first] for k in keys], summed


_PACK_BITS = 62


def _packed_keys(keys: list[np.ndarray]) -> list[np.ndarray]:
    """The keys to sort by, in the same lexicographic order as ``keys``: the longest run of
    trailing keys whose ranges (``max - min``) fit together in :data:`_PACK_BITS` bits packed
    into one int64 (each key shifted to start at 0), the keys before it as they are."""
    widths = []
    for k in keys:
        lo, hi = int(k.min()), int(k.max())
        fits = lo >= -(1 << _PACK_BITS) and hi < 1 << _PACK_BITS  # int64 arithmetic is exact
        widths.append((lo, (hi - lo).bit_length() if fits else _PACK_BITS + 1))
    start, used = len(keys), 0
    while start > 0 and used + widths[start - 1][1] <= _PACK_BITS:
        start -= 1
        used += widths[start][1]
    if len(keys) - start < 2:
        return list(keys)
    packed = np.zeros(keys[0].size, dtype=np.int64)
    for k, (lo, bits) in zip(keys[start:], widths[start:], strict=True):
        packed <<= bits
        packed |= (k.astype(np.int64) - lo) if lo else k.astype(np.int64)
    return [*keys[:start], packed]


def merge_tallies(tallies: Sequence[Tally]) -> Tally:
    """Sum tallies taken at the same instant (e.g. one per partition) into one canonical tally.

    Raises ``ValueError`` for tallies of different instants, with and without migration or
    foreign counts, or foreign counts over different MCC tables, and :class:`TallyMismatchError`
    for tallies with different fingerprints (the merged tally keeps their common fingerprint).

    The merged ``observed_from_ms`` is the parts' common start, or the latest when one started
    over later (:func:`merged_observation`).
    """
    if not tallies:
        raise ValueError("nothing to merge")
    at_ms = tallies[0].at_ms
    if any(t.at_ms != at_ms for t in tallies):
        raise ValueError("cannot merge tallies taken at different instants")
    fingerprints = sorted({t.fingerprint for t in tallies})
    if len(fingerprints) > 1:
        raise TallyMismatchError(f"cannot merge tallies taken with different settings "
                                 f"({len(fingerprints)} fingerprints)")
    operators = tuple(sorted({op for t in tallies for op in t.operators}))
    if len(operators) >= ROAMER:
        raise ValueError(f"more than {ROAMER - 1} operators")
    code = {op: i for i, op in enumerate(operators)}
    remaps = []
    for t in tallies:
        remap = np.arange(N_CLASSES, dtype=np.int64)
        remap[: len(t.operators)] = [code[op] for op in t.operators]
        remaps.append(remap)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(t, name) for t in tallies])

    def cat_cls(name: str) -> np.ndarray:
        return np.concatenate([r[getattr(t, name).astype(np.int64)]
                               for t, r in zip(tallies, remaps, strict=True)]).astype(np.uint8)

    (p_cell, p_fr, p_cls, p_reg), p_count = sum_by_key(
        [cat("present_cell").astype(np.uint64), cat("present_factor_region").astype(np.int32),
         cat_cls("present_cls"), cat("present_region").astype(np.int32)], cat("present_count"))
    (r_reg, r_cls), r_count = sum_by_key(
        [cat("resident_region").astype(np.int32), cat_cls("resident_cls")], cat("resident_count"))
    mover_keys, mover_count = sum_by_key(
        [cat_cls(k) if k == "mover_cls" else cat(k).astype(d)
         for k, d in zip(MOVER_FIELDS, MOVER_DTYPES, strict=False)], cat("mover_count"))
    movers = dict(zip(MOVER_FIELDS, [*mover_keys, mover_count], strict=True))
    unhoused_keys, unhoused_count = sum_by_key(
        [cat_cls(k) if k == "unhoused_cls" else cat(k).astype(d)
         for k, d in zip(UNHOUSED_FIELDS, UNHOUSED_DTYPES, strict=False)], cat("unhoused_count"))
    movers.update(zip(UNHOUSED_FIELDS, [*unhoused_keys, unhoused_count], strict=True))
    stayer_keys, stayer_count = sum_by_key(
        [cat(k).astype(d) for k, d in zip(STAYER_FIELDS, STAYER_DTYPES, strict=False)],
        cat("stayer_count"))
    movers.update(zip(STAYER_FIELDS, [*stayer_keys, stayer_count], strict=True))
    per_class = {}
    for name in CLASS_FIELDS:
        total = np.zeros(N_CLASSES, dtype=np.int64)
        for t, r in zip(tallies, remaps, strict=True):
            np.add.at(total, r, getattr(t, name).astype(np.int64))
        per_class[name] = total
    with_migration = [t.migration is not None for t in tallies]
    if any(with_migration) and not all(with_migration):
        raise ValueError("cannot merge tallies with and without migration counts "
                         "(workers with different settings?)")
    migration = merge_migration([t.migration for t in tallies if t.migration is not None]) \
        if all(with_migration) else None
    with_foreign = [t.foreign is not None for t in tallies]
    if any(with_foreign) and not all(with_foreign):
        raise ValueError("cannot merge tallies with and without foreign-SIM counts "
                         "(workers with different settings?)")
    foreign = merge_foreign([t.foreign for t in tallies if t.foreign is not None]) \
        if all(with_foreign) else None
    return Tally(at_ms=at_ms, operators=operators, present_cell=p_cell, present_region=p_reg,
                 present_factor_region=p_fr, present_cls=p_cls, present_count=p_count,
                 resident_region=r_reg, resident_cls=r_cls, resident_count=r_count,
                 migration=migration, fingerprint=fingerprints[0], foreign=foreign, **movers,
                 observed_from_ms=merged_observation([t.observed_from_ms for t in tallies]),
                 **per_class)


def merged_observation(starts: Sequence[int | None]) -> int | None:
    """The observation start of merged tallies (None when no part has observed anything).

    The parts of one stream (Kafka partitions) start together: their first pings come
    milliseconds to minutes apart, so their starts (hours, :func:`estimators.warmup.
    observation_start`) are within :data:`~estimators.warmup.SAME_START_MS` of the earliest and
    the merged start is the earliest, the replay's own (live and replay agree). A part that
    starts later than that (a partition whose checkpoint was lost, starting afresh hours or days
    after the others) undercounts its share of every region until it is warm itself: the merged
    start is then the latest, so the sum is warm only when every part is. Parts with no start (an
    engine that has accepted no ping yet, or a tally of an earlier version) are left out.
    """
    known = [s for s in starts if s is not None]
    if not known:
        return None
    first, last = min(known), max(known)
    return first if last - first <= SAME_START_MS else last
