"""Per-device presence state: last location, operator class and a ring of night locations.

State per device (37 bytes plus ~8-11 bytes of index, see :mod:`estimators.device_index`):

- ``stamp`` (uint64): ``(ts_ms - EPOCH_MS) << LOC_BITS | loc`` of the device's latest ping.
  Updating it is a scatter-``max``, so the result is the last ping by event time whatever the
  order or repetition of the input (last-writer-wins). Pings of one device in the same
  millisecond that disagree are settled by rank: the larger H3 cell id, then the class (see
  :meth:`PresenceState.update`), never by input order.
- ``opclass`` (uint8): the class of the latest ping: operator index for domestic SIMs,
  ``ROAMER`` for foreign SIMs.
- ``last_night`` (uint16): the latest night (days since 1970 of the evening it starts) that the
  device was seen in, and ``ring`` (``ring_nights`` x uint16/uint32): for each of the last
  ``ring_nights`` nights, ``(time-in-night bucket, region + 1)`` of the device's last ping in that
  night, again merged with ``max``. Residence reads the last ``window.nights`` of them; usual
  residence for migration (:mod:`estimators.migration`) reads more. A slot is cleared before a
  newer night reuses it, which keeps the whole state independent of arrival order (see
  ``docs/METHOD.md``).
- ``day_slot`` (uint32): ``(hour16 << 16) | (region + 1)`` of the device's latest ping inside the
  local *day window* (default 10:00-16:00): its daytime region, read with its home region to
  place devices that have not pinged since a daily transition (:mod:`estimators.routine`).
  ``hour16`` is the ping's hour since ``EPOCH_MS`` modulo 2**16; merges unwrap it against the
  incoming pings (pings within 3.7 years of each other), so the slot is the latest by event
  time whatever the order or batching (ties in one hour: the larger region index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from estimators.device_index import DeviceIndex
from estimators.units import DAY_S, EPOCH_MS, HOUR_MS, HOUR_S, SECOND_MS

LOC_BITS = 23
MAX_LOCATIONS = (1 << LOC_BITS) - 1
MAX_TS_REL_MS = (1 << (64 - LOC_BITS)) - 1
ROAMER = 255
DAY_WINDOW = (10.0, 6.0)
"""Default local day window of :attr:`PresenceState.day_slot`: (start hour, length in hours)."""
_HOUR_WRAP = 1 << 16


@dataclass(frozen=True)
class NightWindow:
    """The local-time night used for residence: ``start_h`` for ``length_h`` hours, ``nights`` kept."""

    start_h: float = 22.0
    length_h: float = 8.0
    nights: int = 7

    def __post_init__(self) -> None:
        if not 0 <= self.start_h < 24:
            raise ValueError("night start must be in [0, 24) hours")
        if not 0 < self.length_h < 24:
            raise ValueError("night length must be in (0, 24) hours")
        if not 1 <= self.nights <= 60:
            raise ValueError("nights must be between 1 and 60")


def night_of(ts_ms: np.ndarray, utc_offset_s: np.ndarray | int, window: NightWindow
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each time: (is it in the night window, night number, seconds since the night began).

    The night number is the day (since 1970, local) on whose evening the night starts.
    """
    local_s = np.asarray(ts_ms, dtype=np.int64) // SECOND_MS + np.asarray(utc_offset_s, dtype=np.int64)
    shifted = local_s - int(round(window.start_h * HOUR_S))
    night = shifted // DAY_S
    into = shifted - night * DAY_S
    return into < int(round(window.length_h * HOUR_S)), night, into


def current_night(at_ms: int, utc_offset_s: int, window: NightWindow) -> int:
    """Number of the most recent night that has begun at ``at_ms`` (it may still be going on)."""
    _, night, _ = night_of(np.array([at_ms - 1]), utc_offset_s, window)
    return int(night[0])


class NightVotes(NamedTuple):
    """The night regions of each device over a span of nights (one row per device).

    ``region`` int64: the region with most nights (ties: the most recent of them), -1 when no
    night was seen; ``nights`` int64: nights it holds; ``seen`` int64: nights with any region;
    ``first`` int64: the earliest night in the span on which it was the night region (-1: none).
    """

    region: np.ndarray
    nights: np.ndarray
    seen: np.ndarray
    first: np.ndarray


class PresenceState:
    """The mutable state of all tracked devices; every update is an order-independent merge.

    ``ring_nights`` (default ``window.nights``, at least that) is how many nights of night
    regions are kept per device. Raises ``ValueError`` for more than 65534 regions or a ring
    shorter than the night window.
    """

    def __init__(self, n_regions: int, window: NightWindow, capacity: int = 1024,
                 ring_nights: int | None = None,
                 day_window: tuple[float, float] = DAY_WINDOW) -> None:
        self.window = window
        if not (0 <= day_window[0] < 24 and 0 < day_window[1] < 24):
            raise ValueError(f"day window {day_window}: start in [0, 24) h, length in (0, 24) h")
        self.day_window = day_window
        self.ring_nights = window.nights if ring_nights is None else ring_nights
        if not window.nights <= self.ring_nights <= 366:
            raise ValueError(f"ring of {self.ring_nights} nights: must hold the night window "
                             f"({window.nights}) and at most 366")
        self.index = DeviceIndex(capacity)
        if n_regions + 1 < 256:
            self.ring_dtype, self._region_bits = np.dtype(np.uint16), 8
        elif n_regions + 1 < 65536:
            self.ring_dtype, self._region_bits = np.dtype(np.uint32), 16
        else:
            raise ValueError("at most 65534 regions are supported")
        self._bucket_bits = self.ring_dtype.itemsize * 8 - self._region_bits
        self._night_len_s = int(round(window.length_h * HOUR_S))
        cap = len(self.index.keys)
        self.stamp = np.zeros(cap, dtype=np.uint64)
        self.opclass = np.zeros(cap, dtype=np.uint8)
        self.last_night = np.zeros(cap, dtype=np.uint16)
        self.ring = np.zeros((cap, self.ring_nights), dtype=self.ring_dtype)
        self.day_slot = np.zeros(cap, dtype=np.uint32)

    @property
    def n_devices(self) -> int:
        """Number of devices tracked."""
        return self.index.n

    @property
    def nbytes(self) -> int:
        """Bytes of state held, index included."""
        return int(self.index.nbytes + self.stamp.nbytes + self.opclass.nbytes
                   + self.last_night.nbytes + self.ring.nbytes + self.day_slot.nbytes)

    def _fit_capacity(self) -> None:
        cap = len(self.index.keys)
        if cap == len(self.stamp):
            return
        n = len(self.stamp)
        self.stamp = np.concatenate([self.stamp, np.zeros(cap - n, dtype=np.uint64)])
        self.opclass = np.concatenate([self.opclass, np.zeros(cap - n, dtype=np.uint8)])
        self.last_night = np.concatenate([self.last_night, np.zeros(cap - n, dtype=np.uint16)])
        self.ring = np.concatenate(
            [self.ring, np.zeros((cap - n, self.ring_nights), dtype=self.ring_dtype)])
        self.day_slot = np.concatenate([self.day_slot, np.zeros(cap - n, dtype=np.uint32)])

    def update(self, device_key: np.ndarray, ts_ms: np.ndarray, opclass: np.ndarray,
               loc: np.ndarray, loc_region: np.ndarray, utc_offset_s: np.ndarray | int,
               loc_rank: np.ndarray | None = None, class_rank: np.ndarray | None = None) -> None:
        """Merge a batch of pings (parallel arrays) into the state.

        ``loc`` indexes the cell table (``< 2**23``), ``loc_region`` maps a location to its region
        index, ``ts_ms`` must be >= ``EPOCH_MS`` (the decoder rejects older pings).

        A device's location and class are those of its latest ping. Pings of one device in the
        same millisecond that disagree are ranked by ``loc_rank[loc]`` (uint64, e.g. the H3 cell
        id) and then ``class_rank[opclass]`` (e.g. operator names in order, ``ROAMER`` last), so
        the winner depends on the set of pings only, never on their order or batching; without
        ranks the location number and class code decide (deterministic only when they are).
        """
        if len(device_key) == 0:
            return
        rows, _ = self.index.rows(device_key)
        self._fit_capacity()
        ts = np.asarray(ts_ms, dtype=np.int64)
        loc = np.asarray(loc, dtype=np.int64)
        opclass = np.asarray(opclass, dtype=np.uint8)
        stamp = ((ts - EPOCH_MS).astype(np.uint64) << np.uint64(LOC_BITS)) | loc.astype(np.uint64)
        before, held = self.stamp[rows], self.opclass[rows]
        np.maximum.at(self.stamp, rows, stamp)
        self._settle_ties(rows, stamp, opclass, loc, (before, held), loc_rank, class_rank)
        region = loc_region[loc]
        self._update_nights(rows, ts, region, utc_offset_s)
        self._update_day(rows, ts, region, utc_offset_s)

    def _update_day(self, rows: np.ndarray, ts_ms: np.ndarray, region: np.ndarray,
                    utc_offset_s: np.ndarray | int) -> None:
        """Merge the pings inside the local day window into ``day_slot`` (latest wins)."""
        local_s = ts_ms // SECOND_MS + np.asarray(utc_offset_s, dtype=np.int64)
        into = np.mod(local_s - int(round(self.day_window[0] * HOUR_S)), DAY_S)
        sel = np.flatnonzero(into < int(round(self.day_window[1] * HOUR_S)))
        if sel.size == 0:
            return
        rows, hour = rows[sel], (ts_ms[sel] - EPOCH_MS) // HOUR_MS
        value = hour * _HOUR_WRAP + region[sel].astype(np.int64) + 1
        uniq, first = np.unique(rows, return_index=True)
        held = self.day_slot[uniq].astype(np.int64)
        ref = hour[first]  # unwrap each held slot against one of its device's pings
        held_hour = ref + _signed16((held >> 16) - ref)
        held_value = np.where(held != 0, held_hour * _HOUR_WRAP + (held & 0xFFFF), -1)
        best = np.full(uniq.size, -1, dtype=np.int64)
        np.maximum.at(best, np.searchsorted(uniq, rows), value)
        best = np.maximum(best, held_value)
        self.day_slot[uniq] = (np.mod(best >> 16, _HOUR_WRAP) << 16 | (best & 0xFFFF)).astype(
            np.uint32)

    def day_region(self, at_ms: int, max_age_ms: int) -> np.ndarray:
        """Each device's region in its latest day window, if that ping is less than
        ``max_age_ms`` old (and not after ``at_ms``) at ``at_ms``; else -1. int64[n_devices]."""
        slot = self.day_slot[: self.n_devices].astype(np.int64)
        now_h = (at_ms - EPOCH_MS) // HOUR_MS
        age_h = -_signed16((slot >> 16) - now_h)
        ok = (slot != 0) & (age_h >= 0) & (age_h * HOUR_MS < max_age_ms)
        return np.where(ok, (slot & 0xFFFF) - 1, -1)

    def _settle_ties(self, rows: np.ndarray, stamp: np.ndarray, opclass: np.ndarray,
                     loc: np.ndarray, prior: tuple[np.ndarray, np.ndarray],
                     loc_rank: np.ndarray | None, class_rank: np.ndarray | None) -> None:
        """Set the class of the devices whose latest ping is in this batch, and settle pings of
        one device at the same millisecond (rare) by rank instead of input order. ``prior``:
        each ping's device's stamp and class before the batch."""
        before, held = prior
        shift = np.uint64(LOC_BITS)
        winning = self.stamp[rows]
        latest = (stamp >> shift) == (winning >> shift)  # pings at their device's latest time
        if not latest.any():
            return
        w_rows = rows[latest]
        self.opclass[w_rows] = opclass[latest]
        loc_mask = np.uint64(MAX_LOCATIONS)
        old_tie = (latest & ((before >> shift) == (winning >> shift)) & (before != 0)
                   & ((before != stamp) | (held != opclass)))
        clash = latest & ((stamp != winning) | (self.opclass[rows] != opclass) | old_tie)
        if not clash.any():
            return
        tied = np.unique(rows[clash])
        pick = np.isin(rows, tied) & latest
        c_rows = np.concatenate([rows[pick], rows[old_tie]])
        c_loc = np.concatenate([loc[pick], (before[old_tie] & loc_mask).astype(np.int64)])
        c_cls = np.concatenate([opclass[pick], held[old_tie]])
        l_rank = loc_rank[c_loc] if loc_rank is not None else c_loc.astype(np.uint64)
        k_rank = class_rank[c_cls] if class_rank is not None else c_cls.astype(np.int64)
        order = np.lexsort((k_rank, l_rank, c_rows))
        last = np.r_[c_rows[order][1:] != c_rows[order][:-1], True]
        best = order[last]
        time_bits = self.stamp[c_rows[best]] & ~loc_mask
        self.stamp[c_rows[best]] = time_bits | c_loc[best].astype(np.uint64)
        self.opclass[c_rows[best]] = c_cls[best]

    def _update_nights(self, rows: np.ndarray, ts_ms: np.ndarray, region: np.ndarray,
                       utc_offset_s: np.ndarray | int) -> None:
        in_night, night, into = night_of(ts_ms, utc_offset_s, self.window)
        if not in_night.any():
            return
        sel = np.flatnonzero(in_night)
        rows, night, into, region = rows[sel], night[sel], into[sel], region[sel]
        n_slots = self.ring_nights
        old_last = self.last_night[rows].astype(np.int64)
        np.maximum.at(self.last_night, rows, night.astype(np.uint16))
        advanced = night > old_last
        if advanced.any():
            # devices whose latest night moved on: clear the slots of the nights skipped over
            # (a device listed twice gets the same zeros twice, which is harmless)
            moved = rows[advanced]
            before = old_last[advanced]
            after = self.last_night[moved].astype(np.int64)
            for slot in range(n_slots):
                slot_night = after - np.mod(after - slot, n_slots)
                clear = slot_night > before
                self.ring[moved[clear], slot] = 0
        latest = self.last_night[rows].astype(np.int64)
        keep = night > latest - n_slots
        bucket = (into[keep] << self._bucket_bits) // self._night_len_s
        value = (bucket << self._region_bits) | (region[keep].astype(np.int64) + 1)
        flat = self.ring.reshape(-1)
        np.maximum.at(flat, rows[keep].astype(np.int64) * n_slots + np.mod(night[keep], n_slots),
                      value.astype(self.ring_dtype))

    def last_seen(self) -> tuple[np.ndarray, np.ndarray]:
        """(last event time in ms, last location) of every tracked device."""
        stamp = self.stamp[: self.n_devices]
        ts = (stamp >> np.uint64(LOC_BITS)).astype(np.int64) + EPOCH_MS
        loc = (stamp & np.uint64(MAX_LOCATIONS)).astype(np.int64)
        return ts, loc

    def home_region(self, night_now: int, min_nights: int = 1, chunk: int = 1 << 15) -> np.ndarray:
        """Modal night region over the last ``window.nights`` nights up to ``night_now``, or -1.

        Ties go to the region of the most recent night among the tied ones; devices seen on fewer
        than ``min_nights`` of those nights get -1 (no home).
        """
        votes = self.night_votes(night_now, self.window.nights, chunk)
        return np.where(votes.seen >= max(min_nights, 1), votes.region, -1)

    def night_votes(self, night_now: int, span: int, chunk: int = 1 << 15) -> NightVotes:
        """Each device's night regions over the ``span`` nights ending with ``night_now``.

        ``span`` must not exceed ``ring_nights`` (raises ``ValueError``).
        """
        if not 1 <= span <= self.ring_nights:
            raise ValueError(f"span of {span} nights: the ring holds {self.ring_nights}")
        n = self.n_devices
        n_slots = self.ring_nights
        out = NightVotes(*(np.full(n, fill, dtype=np.int64) for fill in (-1, 0, 0, -1)))
        region_mask = (1 << self._region_bits) - 1
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            ring = self.ring[lo:hi].astype(np.int64)
            last = self.last_night[lo:hi].astype(np.int64)[:, None]
            slots = np.arange(n_slots)[None, :]
            slot_night = last - np.mod(last - slots, n_slots)
            region = (ring & region_mask) - 1
            valid = (ring != 0) & (slot_night > night_now - span) & (slot_night <= night_now)
            region = np.where(valid, region, -1)
            recency = n_slots - (night_now - slot_night)
            latest = np.argmax(np.where(valid, recency, -1), axis=1)
            rows = np.arange(hi - lo)
            pick = region[rows, latest]
            # most devices sleep in one region every night: only the others need a vote
            mixed = np.flatnonzero((valid & (region != pick[:, None])).any(axis=1))
            if mixed.size:
                reg, val, rec = region[mixed], valid[mixed], recency[mixed]
                score = np.where(val, _slot_votes(reg) * (n_slots + 1) + rec, -1)
                pick[mixed] = reg[np.arange(mixed.size), np.argmax(score, axis=1)]
            held = valid & (region == pick[:, None])
            out.region[lo:hi] = np.where(valid.any(axis=1), pick, -1)
            out.nights[lo:hi] = held.sum(axis=1)
            out.seen[lo:hi] = valid.sum(axis=1)
            out.first[lo:hi] = np.where(held, slot_night, np.iinfo(np.int64).max).min(axis=1)
            out.first[lo:hi][~held.any(axis=1)] = -1
        return out

    def evict(self, drop: np.ndarray) -> np.ndarray:
        """Forget the devices where ``drop`` (bool[n_devices]) is set; the rest are renumbered
        ``0..`` in their order. Returns the kept devices' old rows (int64, ascending), for
        arrays kept beside this state's rows (:meth:`estimators.migration.MigrationState.keep_rows`).

        A forgotten device that pings again is a new device.
        """
        kept = self.index.compact(~np.asarray(drop, dtype=bool)[: self.n_devices])
        cap, n = len(self.index.keys), kept.size

        def take(a: np.ndarray) -> np.ndarray:
            out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
            out[:n] = a[kept]
            return out

        self.stamp, self.opclass = take(self.stamp), take(self.opclass)
        self.last_night, self.ring = take(self.last_night), take(self.ring)
        self.day_slot = take(self.day_slot)
        return kept

    def export(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (one row per device) for checkpoints."""
        n = self.n_devices
        return {"key": self.index.keys[:n].copy(), "stamp": self.stamp[:n].copy(),
                "opclass": self.opclass[:n].copy(), "last_night": self.last_night[:n].copy(),
                "ring": self.ring[:n].copy(), "day_slot": self.day_slot[:n].copy()}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Load rows written by :meth:`export` into this (empty) state.

        ``stamp`` locations must already be in this state's location numbering.
        """
        if self.n_devices:
            raise ValueError("restore needs an empty state")
        keys = np.asarray(arrays["key"], dtype=np.uint64)
        ring = np.asarray(arrays["ring"])
        if ring.ndim != 2 or ring.dtype != self.ring_dtype:
            raise ValueError("checkpoint ring does not match this region count")
        if ring.shape[1] != self.ring_nights:
            ring = _resize_ring(ring, np.asarray(arrays["last_night"], dtype=np.int64),
                                self.ring_nights)
        if keys.size == 0:
            return
        rows, _ = self.index.rows(keys)
        self._fit_capacity()
        self.stamp[rows] = arrays["stamp"]
        self.opclass[rows] = arrays["opclass"]
        self.last_night[rows] = arrays["last_night"]
        self.ring[rows] = ring
        if "day_slot" in arrays:  # absent in checkpoints written before it existed
            self.day_slot[rows] = np.asarray(arrays["day_slot"], dtype=np.uint32)


def _signed16(diff: np.ndarray) -> np.ndarray:
    """Hour differences modulo 2**16 mapped to [-2**15, 2**15)."""
    return np.mod(diff + (_HOUR_WRAP >> 1), _HOUR_WRAP) - (_HOUR_WRAP >> 1)


def _slot_votes(region: np.ndarray) -> np.ndarray:
    """For each slot of each row, how many slots of the row hold the same value (sort-based:
    rows x slots x log(slots), not rows x slots**2)."""
    rows, slots = region.shape
    order = np.argsort(region, axis=1, kind="stable")
    ranked = np.take_along_axis(region, order, axis=1)
    starts = np.ones(ranked.shape, dtype=bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    run = np.cumsum(starts, axis=1) - 1
    flat = (np.arange(rows)[:, None] * slots + run).ravel()
    run_len = np.bincount(flat, minlength=rows * slots).reshape(rows, slots)
    votes = np.empty_like(run)
    np.put_along_axis(votes, order, np.take_along_axis(run_len, run, axis=1), axis=1)
    return votes


def _resize_ring(ring: np.ndarray, last_night: np.ndarray, n_slots: int) -> np.ndarray:
    """A ring of ``n_slots`` nights holding the same nights as ``ring`` (the newest ones when it
    shrinks): night ``t`` lives in slot ``t mod n_slots`` either way."""
    old = ring.shape[1]
    out = np.zeros((ring.shape[0], n_slots), dtype=ring.dtype)
    for slot in range(old):
        night = last_night - np.mod(last_night - slot, old)
        keep = night > last_night - n_slots
        out[np.flatnonzero(keep), np.mod(night[keep], n_slots)] = ring[keep, slot]
    return out
