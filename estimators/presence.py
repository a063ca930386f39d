"""Per-device presence state: last location, operator class and a ring of night locations.

State per device (33 bytes plus ~8-11 bytes of index, see :mod:`estimators.device_index`):

- ``stamp`` (uint64): ``(ts_ms - EPOCH_MS) << LOC_BITS | loc`` of the device's latest ping.
  Updating it is a scatter-``max``, so the result is the last ping by event time whatever the
  order or repetition of the input (last-writer-wins; equal times tie-break on the location).
- ``opclass`` (uint8): operator index for domestic SIMs, ``ROAMER`` for foreign SIMs.
- ``last_night`` (uint16): the latest night (days since 1970 of the evening it starts) that the
  device was seen in, and ``ring`` (``nights`` x uint16/uint32): for each of the last ``nights``
  nights, ``(time-in-night bucket, region + 1)`` of the device's last ping in that night, again
  merged with ``max``. A slot is cleared before a newer night reuses it, which keeps the whole
  state independent of arrival order (see ``docs/METHOD.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from estimators.device_index import DeviceIndex
from estimators.units import DAY_S, EPOCH_MS, HOUR_S, SECOND_MS

LOC_BITS = 23
MAX_LOCATIONS = (1 << LOC_BITS) - 1
MAX_TS_REL_MS = (1 << (64 - LOC_BITS)) - 1
ROAMER = 255


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


class PresenceState:
    """The mutable state of all tracked devices; every update is an order-independent merge."""

    def __init__(self, n_regions: int, window: NightWindow, capacity: int = 1024) -> None:
        self.window = window
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
        self.ring = np.zeros((cap, window.nights), dtype=self.ring_dtype)

    @property
    def n_devices(self) -> int:
        """Number of devices tracked."""
        return self.index.n

    @property
    def nbytes(self) -> int:
        """Bytes of state held, index included."""
        return int(self.index.nbytes + self.stamp.nbytes + self.opclass.nbytes
                   + self.last_night.nbytes + self.ring.nbytes)

    def _fit_capacity(self) -> None:
        cap = len(self.index.keys)
        if cap == len(self.stamp):
            return
        n = len(self.stamp)
        self.stamp = np.concatenate([self.stamp, np.zeros(cap - n, dtype=np.uint64)])
        self.opclass = np.concatenate([self.opclass, np.zeros(cap - n, dtype=np.uint8)])
        self.last_night = np.concatenate([self.last_night, np.zeros(cap - n, dtype=np.uint16)])
        self.ring = np.concatenate(
            [self.ring, np.zeros((cap - n, self.window.nights), dtype=self.ring_dtype)])

    def update(self, device_key: np.ndarray, ts_ms: np.ndarray, opclass: np.ndarray,
               loc: np.ndarray, loc_region: np.ndarray, utc_offset_s: np.ndarray | int) -> None:
        """Merge a batch of pings (parallel arrays) into the state.

        ``loc`` indexes the cell table (``< 2**23``), ``loc_region`` maps a location to its region
        index, ``ts_ms`` must be >= ``EPOCH_MS`` (the decoder rejects older pings).
        """
        if len(device_key) == 0:
            return
        rows, n_before = self.index.rows(device_key)
        self._fit_capacity()
        ts = np.asarray(ts_ms, dtype=np.int64)
        stamp = ((ts - EPOCH_MS).astype(np.uint64) << np.uint64(LOC_BITS)) | loc.astype(np.uint64)
        np.maximum.at(self.stamp, rows, stamp)
        new = rows >= n_before
        if new.any():
            self.opclass[rows[new]] = opclass[new]
        self._update_nights(rows, ts, loc_region[loc], utc_offset_s)

    def _update_nights(self, rows: np.ndarray, ts_ms: np.ndarray, region: np.ndarray,
                       utc_offset_s: np.ndarray | int) -> None:
        in_night, night, into = night_of(ts_ms, utc_offset_s, self.window)
        if not in_night.any():
            return
        sel = np.flatnonzero(in_night)
        rows, night, into, region = rows[sel], night[sel], into[sel], region[sel]
        n_slots = self.window.nights
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

    def home_region(self, night_now: int, min_nights: int = 1, chunk: int = 1 << 20) -> np.ndarray:
        """Modal night region over the last ``nights`` nights up to ``night_now``, or -1.

        Ties go to the region of the most recent night among the tied ones; devices seen on fewer
        than ``min_nights`` of those nights get -1 (no home).
        """
        n = self.n_devices
        n_slots = self.window.nights
        out = np.full(n, -1, dtype=np.int64)
        region_mask = (1 << self._region_bits) - 1
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            ring = self.ring[lo:hi].astype(np.int64)
            last = self.last_night[lo:hi].astype(np.int64)[:, None]
            slots = np.arange(n_slots)[None, :]
            slot_night = last - np.mod(last - slots, n_slots)
            region = (ring & region_mask) - 1
            valid = (ring != 0) & (slot_night > night_now - n_slots) & (slot_night <= night_now)
            region = np.where(valid, region, -1)
            nights_seen = valid.sum(axis=1)
            recency = n_slots - (night_now - slot_night)
            latest = np.argmax(np.where(valid, recency, -1), axis=1)
            rows = np.arange(hi - lo)
            pick = region[rows, latest]
            # most devices sleep in one region every night: only the others need a vote
            mixed = np.flatnonzero((valid & (region != pick[:, None])).any(axis=1))
            if mixed.size:
                reg, val, rec = region[mixed], valid[mixed], recency[mixed]
                same = (reg[:, :, None] == reg[:, None, :]) & val[:, None, :]
                votes = same.sum(axis=2)
                score = np.where(val, votes * (n_slots + 1) + rec, -1)
                pick[mixed] = reg[np.arange(mixed.size), np.argmax(score, axis=1)]
            out[lo:hi] = np.where(nights_seen >= max(min_nights, 1), pick, -1)
        return out

    def export(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (one row per device) for checkpoints."""
        n = self.n_devices
        return {"key": self.index.keys[:n].copy(), "stamp": self.stamp[:n].copy(),
                "opclass": self.opclass[:n].copy(), "last_night": self.last_night[:n].copy(),
                "ring": self.ring[:n].copy()}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Load rows written by :meth:`export` into this (empty) state.

        ``stamp`` locations must already be in this state's location numbering.
        """
        if self.n_devices:
            raise ValueError("restore needs an empty state")
        keys = np.asarray(arrays["key"], dtype=np.uint64)
        ring = np.asarray(arrays["ring"])
        if ring.shape[1:] != (self.window.nights,) or ring.dtype != self.ring_dtype:
            raise ValueError("checkpoint ring does not match this night window / region count")
        if keys.size == 0:
            return
        rows, _ = self.index.rows(keys)
        self._fit_capacity()
        self.stamp[rows] = arrays["stamp"]
        self.opclass[rows] = arrays["opclass"]
        self.last_night[rows] = arrays["last_night"]
        self.ring[rows] = ring
