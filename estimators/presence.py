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
- ``home_sum`` (uint32, kept once :meth:`PresenceState.home` has been asked): each device's
  night votes over the *closed* nights ``[C - nights + 2, C]`` of the summary night ``C``
  (region with most votes, nights seen, and two flags saying when one more vote cannot change
  the winner), so that the home region at a tally of night ``C + 1`` is this summary combined
  with the one slot of that night, not a recount of every device's ring. It is advanced one
  night at a time when the first ping of night ``C + 2`` arrives (or at the next
  :meth:`PresenceState.home`), before that ping can overwrite the ring slot of the night
  leaving the span; a device whose summarized nights change afterwards (a very late ping) is
  marked stale and recounted. :meth:`PresenceState.home` equals
  :meth:`PresenceState.home_region` exactly, at every night.
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
# home summary bits (PresenceState.home_sum): region + 1 (16 bits), nights seen (6), flags
_SUM_REGION = 0xFFFF
_SUM_SEEN_SHIFT = 16
_SUM_HELD_SHIFT = 22  # nights of the region (6 bits)
_SUM_DECISIVE = 1 << 28  # its votes exceed every other region's by 2 or more
_SUM_STALE = 1 << 29  # the summary no longer holds: recount the device
_MAX_STEP_NIGHTS = 4  # summaries further behind than this are rebuilt, not stepped


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


ROW_FIELDS = ("key", "stamp", "opclass", "last_night", "ring", "day_slot", "home_sum")
"""The arrays of :meth:`PresenceState.export` that hold one row per device."""


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
        self.home_sum = np.zeros(cap, dtype=np.uint32)
        self.home_sum_night: int | None = None  # C: the summary's last night (None: not kept)
        self.chunk = 1 << 18  # devices the home summaries handle at a time (no effect on them)

    @property
    def n_devices(self) -> int:
        """Number of devices tracked."""
        return self.index.n

    @property
    def nbytes(self) -> int:
        """Bytes of state held, index included."""
        return int(self.index.nbytes + self.stamp.nbytes + self.opclass.nbytes
                   + self.last_night.nbytes + self.ring.nbytes + self.day_slot.nbytes
                   + self.home_sum.nbytes)

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
        self.home_sum = np.concatenate([self.home_sum, np.zeros(cap - n, dtype=np.uint32)])

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
        lo, hi = int(hour.min()), int(hour.max())
        if hi - lo < _HOUR_WRAP >> 2:
            if lo // _HOUR_WRAP == hi // _HOUR_WRAP and self._merge_day_direct(
                    rows, hour, region[sel], lo % _HOUR_WRAP, hi % _HOUR_WRAP):
                return
            self._merge_day_in_place(rows, hour, region[sel], lo - 1)
            return
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

    def _merge_day_direct(self, rows: np.ndarray, hour: np.ndarray, region: np.ndarray,
                          lo16: int, hi16: int) -> bool:
        """:meth:`_update_day`'s merge by one ``np.maximum.at`` on the slots as they are, when
        it gives what unwrapping would: the batch's hours (``lo16..hi16`` modulo 2**16) do not
        wrap, and every held slot of its devices is within 2**15 hours of each of them without
        wrapping either (slots then compare as numbers). Returns False, merging nothing,
        otherwise."""
        held = self.day_slot[rows]
        held_hour = held[held != 0] >> np.uint32(16)
        if held_hour.size and (int(held_hour.min()) < hi16 - (_HOUR_WRAP >> 1)
                               or int(held_hour.max()) >= lo16 + (_HOUR_WRAP >> 1)):
            return False
        value = (hour.astype(np.uint32) << np.uint32(16)) | (region + 1).astype(np.uint32)
        np.maximum.at(self.day_slot, rows, value)
        return True

    def _merge_day_in_place(self, rows: np.ndarray, hour: np.ndarray, region: np.ndarray,
                            base: int) -> None:
        """:meth:`_update_day`'s merge for a batch spanning fewer than 2**14 hours, in
        ``day_slot`` itself (no sort, no per-device scratch): the touched slots are rewritten
        as hours after ``base`` (0: older than the batch, it loses to any of its pings), the
        pings merged by ``np.maximum.at``, and the winners written back in the slot layout.
        Each held slot is unwrapped against the hour of a ping of its device, as before."""
        held = self.day_slot[rows].astype(np.int64)
        held_after = hour + _signed16((held >> 16) - hour) - base
        held_key = np.where((held != 0) & (held_after > 0),
                            (np.minimum(held_after, 0xFFFF) << 16) | (held & 0xFFFF), 0)
        self.day_slot[rows] = held_key.astype(np.uint32)
        np.maximum.at(self.day_slot, rows,
                      (((hour - base) << 16) | (region.astype(np.int64) + 1)).astype(np.uint32))
        best = self.day_slot[rows].astype(np.int64)
        self.day_slot[rows] = ((np.mod((best >> 16) + base, _HOUR_WRAP) << 16)
                               | (best & 0xFFFF)).astype(np.uint32)

    def day_region(self, at_ms: int, max_age_ms: int, rows: np.ndarray | None = None
                   ) -> np.ndarray:
        """Each device's region in its latest day window, if that ping is less than
        ``max_age_ms`` old (and not after ``at_ms``) at ``at_ms``; else -1. int64[n_devices],
        or of the devices ``rows`` only (int64 row numbers)."""
        held = self.day_slot[: self.n_devices]
        slot = (held if rows is None else held[rows]).astype(np.int64)
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
        loc_mask = np.uint64(MAX_LOCATIONS)
        winning = self.stamp[rows]
        latest = (stamp ^ winning) <= loc_mask  # pings at their device's latest time
        if not latest.any():
            return
        w_rows = rows[latest]
        self.opclass[w_rows] = opclass[latest]
        old_tie = (latest & ((before ^ winning) <= loc_mask) & (before != 0)
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
        # the home summary of night C is advanced before any ping of night C + 2 is merged:
        # those pings may overwrite the ring slot of the night leaving its span
        while self.home_sum_night is not None and int(night.max()) > self.home_sum_night + 1:
            now = night <= self.home_sum_night + 1
            if now.any():
                self._merge_nights(rows[now], night[now], into[now], region[now])
                rest = ~now
                rows, night, into, region = rows[rest], night[rest], into[rest], region[rest]
            if int(night.min()) - 1 - self.home_sum_night > _MAX_STEP_NIGHTS:
                self.home_sum_night = None  # a gap of nights: rebuilt at the next home()
            else:
                self._advance_home_sum()
        self._merge_nights(rows, night, into, region)

    def _merge_nights(self, rows: np.ndarray, night: np.ndarray, into: np.ndarray,
                      region: np.ndarray) -> None:
        """Merge in-night pings into the night ring (and mark the home summaries they touch)."""
        if rows.size == 0:
            return
        c = self.home_sum_night
        if c is not None:  # a late ping in a summarized night: recount that device
            late = (night >= c - self.window.nights + 2) & (night <= c)
            if late.any():
                self.home_sum[rows[late]] |= np.uint32(_SUM_STALE)
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

    def home(self, night_now: int, min_nights: int = 1) -> np.ndarray:
        """:meth:`home_region` (int64[n_devices], same values) from the kept home summaries.

        For night ``C + 1``, where ``C`` is the summary night, each device's home is its summary
        combined with its ring slot of night ``C + 1``; devices whose summary cannot say (a tie
        within one vote, or stale) are recounted. The summary is built at the first call and
        moved on a night at a time (:meth:`update` does it as nights begin); a call for a night
        before the summary's, or with pings of a later night already merged, is answered by
        :meth:`home_region`.
        """
        n = self.n_devices
        c = self.home_sum_night
        if c is not None and night_now - 1 - c > _MAX_STEP_NIGHTS:
            c = self.home_sum_night = None
        if c is None:
            if n and int(self.last_night[:n].max()) > night_now:
                return self.home_region(night_now, min_nights)
            self._build_home_sum(night_now - 1)
        elif night_now - 1 < c:
            return self.home_region(night_now, min_nights)
        while self.home_sum_night is not None and self.home_sum_night < night_now - 1:
            self._advance_home_sum()
        stale = np.flatnonzero(self.home_sum[:n] & np.uint32(_SUM_STALE))
        if stale.size:  # summaries a late ping has touched: recounted
            self._build_home_sum(night_now - 1, stale)
        out = np.empty(n, dtype=np.int64)
        for lo in range(0, n, self.chunk):
            hi = min(n, lo + self.chunk)
            out[lo:hi] = self._home_part(lo, hi, night_now, max(min_nights, 1))
        return out

    def _home_part(self, lo: int, hi: int, night_now: int, min_nights: int) -> np.ndarray:
        """:meth:`home` of rows ``lo:hi`` (summaries of night ``night_now - 1``, none stale)."""
        s = self.home_sum[lo:hi]
        h = (s & np.uint32(_SUM_REGION)).astype(np.int32)
        seen = ((s >> np.uint32(_SUM_SEEN_SHIFT)) & np.uint32(63)).astype(np.int32)
        held = ((s >> np.uint32(_SUM_HELD_SHIFT)) & np.uint32(63)).astype(np.int32)
        b, valid = self._night_vote(night_now, lo, hi)
        other = valid & (b != h) & (h != 0)
        # tonight's vote is the most recent: a region with one vote loses to it; one with
        # every vote, or leading by two, keeps its place
        take = (valid & (h == 0)) | (other & (held == 1))
        unsure = other & (held > 1) & (held != seen) & ((s & np.uint32(_SUM_DECISIVE)) == 0)
        home = np.where(take, b, h)
        seen = seen + valid
        redo = np.flatnonzero(unsure)
        if redo.size:
            nights = night_now - np.arange(self.window.nights)
            reg, cnt, _, _ = self._votes_rows(lo + redo, nights)
            home[redo] = reg + 1
            seen[redo] = cnt
        home -= 1
        home[seen < min_nights] = -1
        return home

    def _night_vote(self, night: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Vote of rows ``lo:hi`` for one night: (region + 1 or 0, valid) int32/bool."""
        v = self.ring[lo:hi, night % self.ring_nights].astype(np.int32)
        last = self.last_night[lo:hi]
        valid = (v != 0) & (last >= night) & (last < night + self.ring_nights)
        v &= (1 << self._region_bits) - 1
        v[~valid] = 0
        return v, valid

    def _votes_rows(self, rows: np.ndarray, nights: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Votes of ``rows`` over ``nights`` (most recent first): (region or -1, nights seen,
        nights of the region, nights of the best other region), int64 each, as
        :meth:`night_votes` counts them."""
        k = nights.size
        m = rows.size
        if k == 0:
            z = np.zeros(m, dtype=np.int64)
            return z - 1, z, z, z
        cols = np.mod(nights, self.ring_nights)
        v = self.ring[rows][:, cols].astype(np.int32)
        last = self.last_night[rows].astype(np.int64)[:, None]
        valid = (v != 0) & (last >= nights[None, :]) & (last < nights[None, :] + self.ring_nights)
        region = np.where(valid, v & ((1 << self._region_bits) - 1), 0) - 1
        if k <= 16:  # compare every slot with every other: cheaper than sorting rows
            votes = (region[:, :, None] == region[:, None, :]).sum(axis=2, dtype=np.int32)
        else:
            votes = _slot_votes(region)
        recency = k - np.arange(k, dtype=np.int32)[None, :]
        score = np.where(valid, votes * (k + 1) + recency, -1)
        best = np.argmax(score, axis=1)
        idx = np.arange(m)
        pick = region[idx, best].astype(np.int64)
        seen = valid.sum(axis=1)
        held = votes[idx, best].astype(np.int64) * (seen > 0)
        other = np.where(valid & (region != pick[:, None]), votes, 0).max(axis=1).astype(np.int64)
        return np.where(seen > 0, pick, -1), seen, held, other

    def _pack_sum(self, region: np.ndarray, seen: np.ndarray, held: np.ndarray,
                  other: np.ndarray) -> np.ndarray:
        decisive = (seen > 0) & (held - other >= 2)
        return ((region + 1) | (seen << _SUM_SEEN_SHIFT) | (held << _SUM_HELD_SHIFT)
                | (decisive * _SUM_DECISIVE)).astype(np.uint32)

    def _span(self, c: int) -> np.ndarray:
        """The summarized nights of summary night ``c``, most recent first."""
        return c - np.arange(self.window.nights - 1)

    def _build_home_sum(self, c: int, rows: np.ndarray | None = None) -> None:
        """Summaries of night ``c`` counted from the ring (all devices, or ``rows``)."""
        if rows is None:
            self.home_sum_night = c
            rows = np.arange(self.n_devices)
        span = self._span(c)
        for lo in range(0, rows.size, self.chunk):
            part = rows[lo:lo + self.chunk]
            self.home_sum[part] = self._pack_sum(*self._votes_rows(part, span))

    def _advance_home_sum(self) -> None:
        """Move the summaries from night ``C`` to ``C + 1``: the oldest night leaves the span,
        night ``C + 1`` joins it (exact rules below; devices they cannot decide are recounted).
        The ring must still hold night ``C - nights + 2`` (no ping of night ``C + 2`` merged)."""
        c = self.home_sum_night
        assert c is not None
        n = self.n_devices
        w = self.window.nights
        self.home_sum_night = c + 1
        if w == 1 or n == 0:
            return
        stale = [lo + self._advance_part(c, lo, min(n, lo + self.chunk))
                 for lo in range(0, n, self.chunk)]
        redo = np.concatenate(stale)
        if redo.size:
            self._build_home_sum(c + 1, redo)

    def _advance_part(self, c: int, lo: int, hi: int) -> np.ndarray:
        """:meth:`_advance_home_sum` of rows ``lo:hi``; returns the rows (from ``lo``) it
        cannot decide."""
        n = hi - lo
        w = self.window.nights
        s = self.home_sum[lo:hi].astype(np.int64)
        h = s & _SUM_REGION
        seen = (s >> _SUM_SEEN_SHIFT) & 63
        held = (s >> _SUM_HELD_SHIFT) & 63
        decisive = (s & _SUM_DECISIVE) != 0
        stale = (s & _SUM_STALE) != 0
        # the oldest night leaves: a vote for another region never unseats the winner; one for
        # the winner does not when all votes were its own or it led by 2 or more
        r, r_valid = self._night_vote(c - w + 2, lo, hi)
        if w == 2:  # the span held that one night only
            h, seen, held = (np.zeros(n, dtype=np.int64) for _ in range(3))
            decisive = np.zeros(n, dtype=bool)
        else:
            own = r_valid & (r == h)
            pure = held == seen
            stale |= own & ~pure & ~decisive
            decisive = np.where(own & ~pure, False, decisive)
            held = held - own
            seen = seen - r_valid
            h = np.where(seen > 0, h, 0)
            decisive = np.where(own & pure, held >= 2, decisive) & (seen > 0)
        # night C + 1 joins as the most recent vote: it wins ties
        b, b_valid = self._night_vote(c + 1, lo, hi)
        pure = (held == seen) & (seen > 0)
        first = b_valid & (seen == 0)
        same = b_valid & (seen > 0) & (b == h)
        other = b_valid & (seen > 0) & (b != h)
        # a winner with one vote loses to it (the summary knows the new count only when that
        # was the one vote of the span); one with every vote, or leading by 2, keeps its place
        take = other & pure & (held == 1)
        stale |= other & ~pure & ~decisive  # (decisive implies 2 votes or more)
        h = np.where(first | take, b, h)
        decisive = np.where(same & pure, held + 1 >= 2,
                            np.where(other & pure, held >= 3, decisive & ~other))
        decisive &= ~(first | take)
        held = np.where(first | take, 1, held + same)
        seen = seen + b_valid
        self.home_sum[lo:hi] = ((h | (seen << _SUM_SEEN_SHIFT) | (held << _SUM_HELD_SHIFT)
                              | (decisive * _SUM_DECISIVE) | (stale * _SUM_STALE))
                             .astype(np.uint32))
        return np.flatnonzero(stale)

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
        self.home_sum = take(self.home_sum)
        return kept

    def export(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (one row per device) for checkpoints."""
        n = self.n_devices
        return {"key": self.index.keys[:n].copy(), "stamp": self.stamp[:n].copy(),
                "opclass": self.opclass[:n].copy(), "last_night": self.last_night[:n].copy(),
                "ring": self.ring[:n].copy(), "day_slot": self.day_slot[:n].copy(),
                "home_sum": self.home_sum[:n].copy(),
                "home_sum_night": np.array([-1 if self.home_sum_night is None
                                            else self.home_sum_night], dtype=np.int64),
                "home_sum_nights": np.array([self.window.nights], dtype=np.int64)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Load rows written by :meth:`export` into this (empty) state, in their order.

        ``stamp`` locations must already be in this state's location numbering. Raises
        ``ValueError`` for a state that is not empty, a ring of another region count, or a
        device key that repeats.
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
        rows = self.index.load(keys)  # row i is the checkpoint's row i
        self._fit_capacity()
        self.stamp[rows] = arrays["stamp"]
        self.opclass[rows] = arrays["opclass"]
        self.last_night[rows] = arrays["last_night"]
        self.ring[rows] = ring
        if "day_slot" in arrays:  # absent in checkpoints written before it existed
            self.day_slot[rows] = np.asarray(arrays["day_slot"], dtype=np.uint32)
        # home summaries: kept when written for this night window (else, and in checkpoints
        # written before they existed, rebuilt from the ring at the next home())
        night = int(np.asarray(arrays.get("home_sum_night", [-1])).reshape(-1)[0])
        nights = int(np.asarray(arrays.get("home_sum_nights", [-1])).reshape(-1)[0])
        if "home_sum" in arrays and night >= 0 and nights == self.window.nights:
            self.home_sum[rows] = np.asarray(arrays["home_sum"], dtype=np.uint32)
            self.home_sum_night = night


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
