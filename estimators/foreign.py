"""Arrivals from abroad: stays of foreign SIMs, their length classes and the period ledgers.

Method (sources in the project's method note, ``MIGRATION-METHOD.md`` §12; multimno's tourism
module is the anchor):

- **Day.** Events are dated by *day*: day ``n`` runs from the close of night ``n-1`` to the close
  of night ``n`` (06:00 to 06:00 local with the default 22:00-06:00 night), so night ``n`` is the
  end of day ``n`` and everything of day ``n`` is known when night ``n`` is evaluated.
- **Stay.** A stay starts at a foreign SIM's first ping after at least ``gap_h`` (72) hours of
  silence, or its first ping ever, and ends after ``gap_h`` hours of silence (multimno's
  ``max_time_missing_abroad_s``). Its *arrival* is dated at its first ping's day; its
  *departure* at its last ping's day, known ``gap_h`` later (so a period's departures are final
  :attr:`ForeignConfig.lag_nights` nights after it ends).
- **Nights of a stay** are the nights whose window (22:00-06:00) the stay overlaps, from its
  first to its last ping: a SIM seen in the evening and again the next morning spent the night,
  whether its phone pinged at night or not (gaps shorter than ``gap_h`` are presence, as the stay
  rule itself assumes). A same-day stay has 0 nights. *Nights seen* (nights with a ping in the
  night window) are kept too; they give the **region of stay**: the modal night region over the
  stay's last ``region_nights`` (28) nights (ties: the most recent), or the region of the latest
  ping while no night was seen.
- **Classes** by nights so far: ``same_day`` 0, ``short`` 1-29, ``medium`` 30-89, ``long`` 90+.
  **Flags** on the nights spent in stays over a trailing window: ``long_stay`` = at least 90 of
  the last 180 nights (Kazakhstan's visa-free limit), ``usual_resident`` = at least 183 of the
  last 365 (the UN's usual resident, with a foreign SIM).
- **Stock.** The stock at the end of day ``d`` is the stays with first day ``<= d`` and last day
  ``> d``, classed by their nights through ``d``. At the close of night ``d`` a stay whose last
  ping is recent is still open: it is counted, and taken out again (with its nights of ``d`` and
  later) once its departure is known. So, per country and period,
  ``stock_end - start_stock = arrivals - departures`` exactly (at any evaluation, and final once
  the period has settled).

**Determinism.** Every update is an order-independent merge (min/max per device), and every night
is evaluated once, in order, on the pings before its close only (:meth:`ForeignState.ingest`
splits its input there, as :meth:`estimators.engine.Engine.ingest` does), so the results depend
on the set of pings alone: not on their order, batching, partitions or restarts.

**State per foreign SIM** (fixed size, about 160 B at the default 28-night region window;
164-188 B measured with the arrays' growth slack): the
:class:`~estimators.presence.PresenceState` of its pings (latest ping, night-region ring: 67 B,
plus 14-19 B of hash index), and 75 B of stay state: ``mcc`` int16, ``prev_last``/``new_first``
int64 (latest ping as of the last evaluation, earliest ping since), ``open`` bool,
``first_day`` int32, ``region`` int16, ``seen`` uint16 and a 384-night record of the nights
spent in stays (6 x uint64). A SIM whose stay has ended and that spent no night within the
record is forgotten (it can change no figure; if it comes back it is an arrival either way).

Counts are kept per tumbling period (ISO week, calendar month) in device units: arrivals by
(country, region of the first day's latest ping), departures, nights spent and stock by
(country, region of stay, class), the two flags among the stock by (country, region).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np

from estimators.calibration import factor_problem, rse_problem
from estimators.disclosure import region_tree_suppression
from estimators.mcc import CountryTable
from estimators.migration import (
    PERIOD_KINDS,
    latest_periods,
    period_label,
    period_nights,
    period_of,
    periods_of,
)
from estimators.presence import NightWindow, PresenceState, night_of
from estimators.regions import RegionSet
from estimators.units import HOUR_MS, HOUR_S, SECOND_MS

CLASSES = ("same_day", "short", "medium", "long")
"""Stay classes by nights so far: 0, 1-29, 30-89, 90 or more."""
CLASS_EDGES = (1, 30, 90)
BITMAP_NIGHTS = 384
"""Nights of the per-SIM record of nights spent in stays (6 x 64 bits)."""
NO_PING = np.iinfo(np.int64).max
CUBE_FIELDS = ("departures", "stock", "nights")
"""Per period, int64[country, region, class]."""
PLANE_FIELDS = ("arrivals", "long_stay", "usual_resident")
"""Per period, int64[country, region]."""
VECTOR_FIELDS = ("start_stock",)
"""Per period, int64[country]."""
OTHER = "other"
ALL = "*"
DEVICE_FIELDS: dict[str, tuple[type, int | bool]] = {
    "mcc": (np.int16, -1), "prev_last": (np.int64, -1), "new_first": (np.int64, NO_PING),
    "open": (np.bool_, False), "first_day": (np.int32, -1), "region": (np.int16, -1),
    "seen": (np.uint16, 0)}


def stay_class(nights: np.ndarray | int) -> np.ndarray:
    """Class index (into :data:`CLASSES`) of stays with these nights (int64 array)."""
    return np.searchsorted(np.array(CLASS_EDGES), np.asarray(nights, dtype=np.int64), side="right")


@dataclass(frozen=True)
class ForeignConfig:
    """The stay rules (defaults and their reasons in the module docstring).

    ``gap_h``: hours of silence that end a stay (and start the next); ``region_nights``: nights
    the region of stay is the mode of; ``visa``/``resident``: (nights, of the last N nights) of
    the two flags. Raises ``ValueError`` for a gap outside (0, 720] hours, a region window
    outside 1..366 nights, or a flag whose window is not 1..(384 - lag) nights or whose nights
    exceed it.
    """

    gap_h: float = 72.0
    region_nights: int = 28
    visa: tuple[int, int] = (90, 180)
    resident: tuple[int, int] = (183, 365)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gap_h) and 0 < self.gap_h <= 720):
            raise ValueError("the stay gap must be in (0, 720] hours")
        if not 1 <= self.region_nights <= 366:
            raise ValueError("the region-of-stay window must be 1..366 nights")
        for name, (need, window) in (("visa", self.visa), ("resident", self.resident)):
            if not (1 <= window <= BITMAP_NIGHTS - self.lag_nights and 1 <= need <= window):
                raise ValueError(f"{name} flag: need 1 <= nights <= window <= "
                                 f"{BITMAP_NIGHTS - self.lag_nights}, got {need} of {window}")

    @property
    def gap_ms(self) -> int:
        """The stay gap in milliseconds."""
        return round(self.gap_h * HOUR_MS)

    @property
    def lag_nights(self) -> int:
        """Nights after night ``d`` until nothing dated ``d`` can change: a departure is known
        ``gap_h`` after its last ping, one more night for days of 23 h (daylight saving)."""
        return math.ceil(self.gap_h / 24) + 1


class NightClock(Protocol):
    """When nights close and the UTC offset at given times (see :class:`ZoneClock`)."""

    def close_ms(self, night: int) -> int:
        """UTC ms at which ``night`` (days since 1970 of its local evening) ends."""
        ...

    def offset_s(self, ts_ms: np.ndarray) -> np.ndarray:
        """UTC offset in seconds at each time (int64 array of the same shape)."""
        ...


class ZoneClock:
    """:class:`NightClock` of an IANA time zone and a night window (offsets cached per hour);
    the same closes as :meth:`estimators.engine.Engine.night_close_ms`."""

    def __init__(self, timezone: str, window: NightWindow | None = None) -> None:
        self.window = window or NightWindow()
        self._tz = ZoneInfo(timezone)
        self._cache: dict[int, int] = {}

    def _at_hour(self, hour: int) -> int:
        off = self._cache.get(hour)
        if off is None:
            when = datetime.fromtimestamp(hour * HOUR_S, tz=UTC).astimezone(self._tz)
            off = int(when.utcoffset().total_seconds())  # type: ignore[union-attr]
            self._cache[hour] = off
        return off

    def offset_s(self, ts_ms: np.ndarray) -> np.ndarray:
        """UTC offset in seconds at each time."""
        hours = np.asarray(ts_ms, dtype=np.int64) // HOUR_MS
        uniq, inverse = np.unique(hours, return_inverse=True)
        offs = np.array([self._at_hour(int(h)) for h in uniq.tolist()], dtype=np.int64)
        return offs[inverse.reshape(hours.shape)] if hours.size else hours.copy()

    def close_ms(self, night: int) -> int:
        """When ``night`` ends, in UTC ms."""
        w = self.window
        local_ms = round((night * 24 + w.start_h + w.length_h) * HOUR_MS)
        guess = local_ms - self._at_hour(local_ms // HOUR_MS) * SECOND_MS
        return local_ms - self._at_hour(guess // HOUR_MS) * SECOND_MS


@dataclass
class ForeignPeriod:
    """Device counts of one period (``kind``, ``number``) over ``n_countries`` countries (a
    :class:`~estimators.mcc.CountryTable`'s order) and ``n_regions`` regions (assignment index,
    ``unassigned`` included).

    ``arrivals`` [country, region]: stays whose first ping is in the period, by the region of
    the latest ping of that day; ``departures`` [country, region, class]: stays whose last ping
    is in the period, by region of stay and final class; ``nights`` [country, region, class]:
    nights spent in stays during the period, by the class the stay had reached that night;
    ``stock`` [country, region, class]: stays at the end of the period (so far, for an open
    one) and ``long_stay``/``usual_resident`` [country, region] the flagged ones among them;
    ``start_stock`` [country]: the stock at the end of the previous period. ``first_night``/
    ``last_night``: earliest and latest nights evaluated; the counts may change until
    ``settles_on`` (the period's last night plus the lag), ``revised_night`` is the latest
    night evaluated for it.
    """

    kind: str
    number: int
    n_countries: int
    n_regions: int
    last_night: int = -1
    first_night: int = -1
    settles_on: int = -1
    revised_night: int = -1
    arrivals: np.ndarray = field(default=None)  # type: ignore[assignment]
    departures: np.ndarray = field(default=None)  # type: ignore[assignment]
    stock: np.ndarray = field(default=None)  # type: ignore[assignment]
    nights: np.ndarray = field(default=None)  # type: ignore[assignment]
    long_stay: np.ndarray = field(default=None)  # type: ignore[assignment]
    usual_resident: np.ndarray = field(default=None)  # type: ignore[assignment]
    start_stock: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        c, r, k = self.n_countries, self.n_regions, len(CLASSES)
        for name, shape in ([(f, (c, r, k)) for f in CUBE_FIELDS] + [(f, (c, r)) for f in PLANE_FIELDS]
                            + [(f, (c,)) for f in VECTOR_FIELDS]):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape, dtype=np.int64))

    @property
    def label(self) -> str:
        """``2026-W10`` or ``2026-03``."""
        return period_label(self.kind, self.number)

    @property
    def nights_range(self) -> tuple[int, int]:
        """``(first night, last night)`` of the period."""
        return period_nights(self.kind, self.number)

    @property
    def closed(self) -> bool:
        """Whether its last night has been evaluated (arrivals are final)."""
        return self.last_night >= self.nights_range[1]

    @property
    def settled(self) -> bool:
        """Whether no count of it can change any more (``revised_night >= settles_on``)."""
        return 0 <= self.settles_on <= self.revised_night

    @property
    def complete(self) -> bool:
        """Whether its first night was evaluated too (the data did not begin inside it)."""
        return 0 <= self.first_night <= self.nights_range[0]

    @property
    def nights_evaluated(self) -> int:
        """Nights of the period evaluated so far (the most nights one SIM can spend in it)."""
        lo, hi = self.nights_range
        if self.last_night < 0:
            return 0
        return max(0, min(hi, self.last_night) - max(lo, self.first_night) + 1)

    def copy(self) -> ForeignPeriod:
        """A deep copy."""
        return ForeignPeriod(self.kind, self.number, self.n_countries, self.n_regions,
                             self.last_night, self.first_night, self.settles_on, self.revised_night,
                             **{f: getattr(self, f).copy() for f in _ALL_FIELDS})

    def balance_error(self) -> np.ndarray:
        """Per country, how far ``stock - start_stock = arrivals - departures`` is off."""
        return (self.stock.sum(axis=(1, 2)) - self.start_stock - self.arrivals.sum(axis=1)
                + self.departures.sum(axis=(1, 2)))

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Flat int64 arrays under ``prefix``: cubes and planes as sparse index/count rows."""
        out = {f"{prefix}meta": np.array([PERIOD_KINDS.index(self.kind), self.number,
                                          self.n_countries, self.n_regions, self.last_night,
                                          self.first_night, self.settles_on, self.revised_night],
                                         dtype=np.int64)}
        for name in CUBE_FIELDS + PLANE_FIELDS:
            a = getattr(self, name)
            idx = np.nonzero(a)
            out[prefix + name] = np.stack([*idx, a[idx]]).astype(np.int64)
        for name in VECTOR_FIELDS:
            out[prefix + name] = getattr(self, name).astype(np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> ForeignPeriod:
        """Inverse of :meth:`to_arrays`."""
        kind_i, number, c, r, last, first, settles, revised = (
            int(v) for v in arrays[f"{prefix}meta"])
        p = cls(PERIOD_KINDS[kind_i], number, c, r, last, first, settles, revised)
        for name in CUBE_FIELDS + PLANE_FIELDS:
            a = getattr(p, name)
            rows = np.asarray(arrays[prefix + name], dtype=np.int64).reshape(a.ndim + 1, -1)
            np.add.at(a, tuple(rows[:-1]), rows[-1])
        for name in VECTOR_FIELDS:
            getattr(p, name)[:] = np.asarray(arrays[prefix + name], dtype=np.int64)
        return p


_ALL_FIELDS = CUBE_FIELDS + PLANE_FIELDS + VECTOR_FIELDS


def merge_foreign_periods(periods: Sequence[ForeignPeriod]) -> ForeignPeriod:
    """Sum the counts of one period from disjoint device sets (e.g. partitions).

    A single period comes back with its own arrays (no copy: tallies are values, never changed
    in place). Raises ``ValueError`` when the periods, country or region counts differ.
    """
    first = periods[0]
    key = (first.kind, first.number, first.n_countries, first.n_regions)
    if any((p.kind, p.number, p.n_countries, p.n_regions) != key for p in periods):
        raise ValueError("cannot merge foreign counts of different periods, countries or regions")
    firsts = [p.first_night for p in periods if p.first_night >= 0]
    return ForeignPeriod(first.kind, first.number, first.n_countries, first.n_regions,
                         max(p.last_night for p in periods), min(firsts) if firsts else -1,
                         max(p.settles_on for p in periods),
                         min(p.revised_night for p in periods),
                         **{f: getattr(first, f) if len(periods) == 1
                            else sum(getattr(p, f) for p in periods) for f in _ALL_FIELDS})


@dataclass
class ForeignTally:
    """The foreign-SIM part of a tally: the country codes of the count axes and, per period
    kind, the open period, the closed ones still settling and the latest settled one.

    Tallies of disjoint device sets at the same instant add up (:func:`merge_foreign`).
    """

    countries: tuple[str, ...]
    periods: list[ForeignPeriod]

    def published(self) -> dict[str, ForeignPeriod]:
        """The periods to publish, by field: ``week``/``month`` (the open one: counts so far,
        stock as of the latest night), ``week:closed``/``month:closed`` (the latest closed one,
        final once ``settled``) and ``week:settled``/``month:settled`` (the latest settled one)."""
        out: dict[str, ForeignPeriod] = {}
        for kind, (open_, closed, settled) in latest_periods(self.periods,
                                                             lambda p: p.closed).items():
            if open_:
                out[kind] = open_
            if closed:
                out[f"{kind}:closed"] = closed
            if settled:
                out[f"{kind}:settled"] = settled
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays (prefix ``fgn``) for the tally's binary form."""
        out: dict[str, np.ndarray] = {"fgn_count": np.array([len(self.periods)], dtype=np.int64),
                                      "fgn_countries": np.array(self.countries, dtype=str)}
        for i, p in enumerate(self.periods):
            out.update(p.to_arrays(f"fgn{i}_"))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ForeignTally | None:
        """Inverse of :meth:`to_arrays`; None when the arrays hold no foreign part."""
        if "fgn_count" not in arrays:
            return None
        count = int(np.asarray(arrays["fgn_count"])[0])
        return cls(tuple(str(c) for c in np.asarray(arrays["fgn_countries"]).tolist()),
                   [ForeignPeriod.from_arrays(arrays, f"fgn{i}_") for i in range(count)])


def merge_foreign(tallies: Sequence[ForeignTally]) -> ForeignTally:
    """Sum foreign tallies: each period summed over the tallies that hold it. Raises
    ``ValueError`` when their country axes differ (workers with different MCC tables)."""
    if any(t.countries != tallies[0].countries for t in tallies):
        raise ValueError("cannot merge foreign counts over different country tables")
    by_key: dict[tuple[str, int], list[ForeignPeriod]] = {}
    for t in tallies:
        for p in t.periods:
            by_key.setdefault((p.kind, p.number), []).append(p)
    keys = sorted(by_key, key=lambda k: (PERIOD_KINDS.index(k[0]), k[1]))
    return ForeignTally(tallies[0].countries, [merge_foreign_periods(by_key[k]) for k in keys])


def _window_count(bits: np.ndarray, offset: int, length: int) -> np.ndarray:
    """Per row of ``bits`` (uint64[n, 6], bit ``j`` = ``j`` nights ago), the nights set among
    bits ``offset .. offset+length-1`` (int64[n])."""
    mask = ((1 << length) - 1) << offset
    total = np.zeros(bits.shape[0], dtype=np.int64)
    for w in range(bits.shape[1]):
        word = (mask >> (64 * w)) & ((1 << 64) - 1)
        if word:
            total += np.bitwise_count(bits[:, w] & np.uint64(word)).astype(np.int64)
    return total


class ForeignState:
    """Per foreign SIM: its pings' presence state, the current stay and the nights spent in
    stays; plus the period ledgers. Feed it foreign SIMs' pings only.

    ``countries`` maps ``home_mcc`` to countries (the ledgers' country axis); ``clock`` says when
    nights close (a :class:`ZoneClock` of the engine's time zone and night window); ``night``
    the night window (default 22:00 for 8 h). With ``record`` every arrival and departure is
    kept for :meth:`events` (benchmarks, tests). Raises ``ValueError`` for more than 32767
    regions.
    """

    def __init__(self, n_regions: int, countries: CountryTable, clock: NightClock,
                 config: ForeignConfig | None = None, night: NightWindow | None = None,
                 record: bool = False) -> None:
        if not 1 <= n_regions <= np.iinfo(np.int16).max:
            raise ValueError(f"foreign stays support 1..{np.iinfo(np.int16).max} regions")
        self.n_regions = n_regions
        self.countries = countries
        self.config = config or ForeignConfig()
        self.clock = clock
        w = night or NightWindow()
        self.window = NightWindow(w.start_h, w.length_h, nights=1)
        self.presence = PresenceState(n_regions, self.window, capacity=256,
                                      ring_nights=self.config.region_nights)
        self._identity = np.arange(n_regions, dtype=np.int64)
        self.arrays = {k: np.full(0, fill, dtype=dt) for k, (dt, fill) in DEVICE_FIELDS.items()}
        self.bits = np.zeros((0, BITMAP_NIGHTS // 64), dtype=np.uint64)
        self.evaluated_night: int | None = None
        self.current: dict[str, ForeignPeriod] = {}
        self.past: list[ForeignPeriod] = []
        self._log: dict[str, list[tuple[np.ndarray, ...]]] | None = (
            {"arrival": [], "departure": []} if record else None)

    @property
    def n_devices(self) -> int:
        """Foreign SIMs tracked."""
        return self.presence.n_devices

    @property
    def nbytes(self) -> int:
        """Bytes of per-SIM state held (presence state and index included)."""
        return int(self.presence.nbytes + sum(a.nbytes for a in self.arrays.values())
                   + self.bits.nbytes)

    def _grow(self, n_devices: int) -> None:
        have = len(self.arrays["open"])
        if n_devices > have:
            cap = max(n_devices, int(have * 1.25) + 256)
            self.arrays = {k: np.concatenate([a, np.full(cap - have, DEVICE_FIELDS[k][1],
                                                         dtype=a.dtype)])
                           for k, a in self.arrays.items()}
            self.bits = np.concatenate([self.bits, np.zeros((cap - have, self.bits.shape[1]),
                                                            dtype=np.uint64)])

    # ---- pings in ----

    def update(self, device_key: np.ndarray, ts_ms: np.ndarray, home_mcc: np.ndarray,
               region: np.ndarray, utc_offset_s: np.ndarray | int) -> None:
        """Merge a batch of foreign pings (parallel arrays) without evaluating any night.

        ``device_key`` uint64, ``ts_ms`` int64 (UTC ms, at least ``EPOCH_MS``), ``home_mcc``
        (the SIM's MCC), ``region`` (assignment region index, 0..n_regions-1), ``utc_offset_s``
        at each ping (or one value). Every ping must be later than the close of the last
        evaluated night and before the close of the next (:meth:`ingest` ensures it). Raises
        ``ValueError`` for a region outside 0..n_regions-1.
        """
        if len(device_key) == 0:
            return
        region = np.asarray(region, dtype=np.int64)
        if region.min() < 0 or region.max() >= self.n_regions:
            raise ValueError(f"foreign ping region outside 0..{self.n_regions - 1}")
        ts = np.asarray(ts_ms, dtype=np.int64)
        keys = np.asarray(device_key, dtype=np.uint64)
        self.presence.update(keys, ts, np.zeros(len(ts), dtype=np.uint8), region,
                             self._identity, utc_offset_s)
        rows, _ = self.presence.index.rows(keys)
        self._grow(self.presence.n_devices)
        mcc = np.clip(np.asarray(home_mcc, dtype=np.int64), -1, 999).astype(np.int16)
        np.maximum.at(self.arrays["mcc"], rows, mcc)
        np.minimum.at(self.arrays["new_first"], rows, ts)

    def day_of(self, ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(day, in the night window)`` of instants: day ``n`` runs from the close of night
        ``n-1`` to the close of night ``n`` (int64 and bool arrays)."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        in_night, night, _ = night_of(ts, self.clock.offset_s(ts), self.window)
        return night + ~in_night, in_night

    def ingest(self, device_key: np.ndarray, ts_ms: np.ndarray, home_mcc: np.ndarray,
               region: np.ndarray, utc_offset_s: np.ndarray | int) -> None:
        """Merge a batch of foreign pings, evaluating every night that closes within it, in
        order, on the pings before its close (so batching does not matter). Pings must not be
        older than the close of the last evaluated night (the event-time windows guarantee it)."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        if ts.size == 0:
            return
        offset = np.broadcast_to(np.asarray(utc_offset_s, dtype=np.int64), ts.shape)
        if self.evaluated_night is None:
            day, _ = self.day_of(ts.min(keepdims=True))
            self.evaluated_night = int(day[0]) - 1
        done = np.zeros(ts.size, dtype=bool)
        top = int(ts.max())
        while (close := self.clock.close_ms(self.evaluated_night + 1)) <= top:
            part = ~done & (ts < close)
            self._update_part(part, device_key, ts, home_mcc, region, offset)
            done |= part
            self.evaluate(self.evaluated_night + 1)
        self._update_part(~done, device_key, ts, home_mcc, region, offset)

    def _update_part(self, part: np.ndarray, device_key: np.ndarray, ts: np.ndarray,
                     home_mcc: np.ndarray, region: np.ndarray, offset: np.ndarray) -> None:
        if part.any():
            self.update(np.asarray(device_key)[part], ts[part], np.asarray(home_mcc)[part],
                        np.asarray(region)[part], offset[part])

    def evaluate_until(self, at_ms: int) -> None:
        """Evaluate every night that has closed by ``at_ms`` (pings before it all merged)."""
        if self.evaluated_night is None:
            return
        while self.clock.close_ms(self.evaluated_night + 1) <= at_ms:
            self.evaluate(self.evaluated_night + 1)

    # ---- ledgers ----

    def _settles_on(self, kind: str, number: int) -> int:
        return period_nights(kind, number)[1] + self.config.lag_nights

    def _new_period(self, kind: str, number: int, **kw: int) -> ForeignPeriod:
        return ForeignPeriod(kind, number, len(self.countries.countries), self.n_regions,
                             settles_on=self._settles_on(kind, number), **kw)

    def _open(self, kind: str, night: int) -> None:
        number = period_of(night, kind)
        p = self._new_period(kind, number, first_night=night)
        before = [q for q in self.past if q.kind == kind and q.number == number - 1]
        if before:
            p.start_stock = before[0].stock.sum(axis=(1, 2))
        self.current[kind] = p

    def _ledger(self, kind: str, number: int) -> ForeignPeriod:
        """The ledger of a period: the open one or a closed one still settling (a period
        closed before the first evaluated night gets a new, incomplete one)."""
        cur = self.current.get(kind)
        if cur is not None and cur.number == number:
            return cur
        for p in self.past:
            if (p.kind, p.number) == (kind, number):
                return p
        p = self._new_period(kind, number, last_night=period_nights(kind, number)[1])
        self.past.append(p)
        return p

    def _add(self, field_name: str, kind: str, numbers: np.ndarray, index: tuple[np.ndarray, ...],
             value: int = 1) -> None:
        """Add ``value`` to ``field_name`` at ``index`` in the ledger of each row's period."""
        for number in np.unique(numbers).tolist():
            sel = numbers == number
            np.add.at(getattr(self._ledger(kind, number), field_name),
                      tuple(i[sel] for i in index), value)

    # ---- the rules, night by night ----

    def evaluate(self, night: int) -> None:
        """Apply the stay rules for ``night`` to every tracked SIM. Nights must come in order,
        each once (raises ``ValueError`` otherwise)."""
        if self.evaluated_night is not None and night != self.evaluated_night + 1:
            raise ValueError(f"night {night} evaluated after night {self.evaluated_night}")
        n = self.n_devices
        self._grow(n)
        for kind in PERIOD_KINDS:
            if kind not in self.current:
                self._open(kind, night)
        a, cfg = self.arrays, self.config
        bits = self.bits[:n]
        carry = bits >> np.uint64(63)
        bits <<= np.uint64(1)
        bits[:, 1:] |= carry[:, :-1]
        close = self.clock.close_ms(night)
        last, latest_region = self.presence.last_seen()
        prev = a["prev_last"][:n]
        new_first = a["new_first"][:n]
        has_new = new_first != NO_PING
        country = self.countries.index_of(a["mcc"][:n]).astype(np.int64)
        gap = cfg.gap_ms
        silent_for = np.where(has_new, new_first, close) - prev
        depart = a["open"][:n] & (silent_for >= gap)
        if depart.any():
            self._depart(np.flatnonzero(depart), night, country)
        arrive = has_new & ((prev < 0) | (new_first - prev >= gap))
        if arrive.any():
            self._arrive(np.flatnonzero(arrive), night, country, latest_region)
        is_open = a["open"][:n]
        moved = np.flatnonzero(has_new & is_open)
        if moved.size:
            self._locate(moved, night, latest_region)
        stay = np.flatnonzero(is_open)
        cls = stay_class(night - a["first_day"][stay].astype(np.int64) + 1)
        at = (country[stay], a["region"][stay].astype(np.int64), cls)
        bits[stay, 0] |= np.uint64(1)
        flags = self._flags(stay, 0)
        for kind in PERIOD_KINDS:
            p = self.current[kind]
            np.add.at(p.nights, at, 1)
            p.stock[:] = 0
            np.add.at(p.stock, at, 1)
            p.long_stay[:] = 0
            p.usual_resident[:] = 0
            np.add.at(p.long_stay, (at[0][flags[0]], at[1][flags[0]]), 1)
            np.add.at(p.usual_resident, (at[0][flags[1]], at[1][flags[1]]), 1)
            p.last_night = night
        prev[has_new] = last[has_new]
        new_first[:] = NO_PING
        self.evaluated_night = night
        self._settle(night)
        self._evict()

    def _evict(self) -> None:
        """Forget SIMs whose stay has ended and that spent no night in a stay within the
        record (:data:`BITMAP_NIGHTS`): no figure can change through them any more, and one that
        pings again is an arrival exactly as it would have been (its old stay is over, its
        nights too old to count). Done when they are at least an eighth of the SIMs, so that
        rows are rarely renumbered; the results do not depend on when."""
        n = self.n_devices
        a = self.arrays
        drop = (~a["open"][:n] & (a["prev_last"][:n] >= 0) & (a["new_first"][:n] == NO_PING)
                & ~self.bits[:n].any(axis=1))
        if not drop.any() or int(drop.sum()) < n // 8:
            return
        kept = self.presence.evict(drop)
        cap = len(self.presence.stamp)
        for k, arr in a.items():
            out = np.full(cap, DEVICE_FIELDS[k][1], dtype=arr.dtype)
            out[:kept.size] = arr[kept]
            a[k] = out
        bits = np.zeros((cap, self.bits.shape[1]), dtype=np.uint64)
        bits[:kept.size] = self.bits[kept]
        self.bits = bits

    def _flags(self, rows: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """``(long_stay, usual_resident)`` of ``rows`` as of ``offset`` nights ago (bool)."""
        bits = self.bits[rows]
        (v_need, v_win), (r_need, r_win) = self.config.visa, self.config.resident
        return (_window_count(bits, offset, v_win) >= v_need,
                _window_count(bits, offset, r_win) >= r_need)

    def _depart(self, rows: np.ndarray, night: int, country: np.ndarray) -> None:
        """End the stays of ``rows`` (silent for the gap): count the departure on its last
        ping's day, and take back what was counted for them since on the belief they stayed
        (nights not spent, the stock at period ends after their last day)."""
        a = self.arrays
        d_last, in_night = self.day_of(a["prev_last"][rows])
        first = a["first_day"][rows].astype(np.int64)
        c, r = country[rows], a["region"][rows].astype(np.int64)
        final = stay_class(d_last - first + in_night)
        for kind in PERIOD_KINDS:
            self._add("departures", kind, periods_of(d_last, kind), (c, r, final))
        if self._log is not None:
            self._log["departure"].append((
                self.presence.index.keys[rows].astype(np.int64), np.full(rows.size, night), d_last, first,
                d_last - first + in_night, a["seen"][rows].astype(np.int64), r, c))
        for j in range(1, night - int(d_last.min()) + 1):
            e = night - j  # a night the stays were counted on as still here
            held = e >= d_last
            if not held.any():
                continue
            sub = np.flatnonzero(held)
            cls = stay_class(e - first[sub] + 1)
            at = (c[sub], r[sub], cls)
            flags = self._flags(rows[sub], j)
            for kind in PERIOD_KINDS:
                number = period_of(e, kind)
                if e == period_nights(kind, number)[1]:  # a period-end stock held them
                    p = self._ledger(kind, number)
                    np.add.at(p.stock, at, -1)
                    np.add.at(p.long_stay, (at[0][flags[0]], at[1][flags[0]]), -1)
                    np.add.at(p.usual_resident, (at[0][flags[1]], at[1][flags[1]]), -1)
                    np.add.at(self._ledger(kind, number + 1).start_stock, at[0], -1)
            spent = (e == d_last[sub]) & in_night[sub]  # night of the last ping, really spent
            back = ~spent
            if back.any():
                for kind in PERIOD_KINDS:
                    np.add.at(self._ledger(kind, period_of(e, kind)).nights,
                              (at[0][back], at[1][back], at[2][back]), -1)
                self.bits[rows[sub][back], 0 + j // 64] &= ~np.uint64(1 << (j % 64))
        a["open"][rows] = False

    def _arrive(self, rows: np.ndarray, night: int, country: np.ndarray,
                latest_region: np.ndarray) -> None:
        """Start stays on ``night``'s day: count the arrival by the region of the day's latest
        ping, and forget the night regions of earlier stays."""
        a = self.arrays
        region = latest_region[rows].astype(np.int64)
        a["open"][rows] = True
        a["first_day"][rows] = night
        a["seen"][rows] = 0
        a["region"][rows] = region
        for kind in PERIOD_KINDS:
            np.add.at(self.current[kind].arrivals, (country[rows], region), 1)
        if self._log is not None:
            self._log["arrival"].append((self.presence.index.keys[rows].astype(np.int64),
                                         np.full(rows.size, night), region, country[rows].copy()))
        ring, slot = self.presence.ring, night % self.presence.ring_nights
        tonight = self.presence.last_night[rows].astype(np.int64) == night
        kept = np.where(tonight, ring[rows, slot], 0).astype(ring.dtype)
        ring[rows] = 0
        ring[rows, slot] = kept

    def _locate(self, rows: np.ndarray, night: int, latest_region: np.ndarray) -> None:
        """Nights seen and region of stay of open stays with new pings."""
        a, pres = self.arrays, self.presence
        slot = night % pres.ring_nights
        tonight = (pres.last_night[rows].astype(np.int64) == night) & (pres.ring[rows, slot] != 0)
        a["seen"][rows[tonight]] += np.uint16(1)
        votes = pres.night_votes(night, pres.ring_nights)
        a["region"][rows] = np.where(votes.seen[rows] > 0, votes.region[rows],
                                     latest_region[rows]).astype(np.int16)

    def _settle(self, night: int) -> None:
        """Mark ledgers revised through ``night``; close the periods ending tonight; keep the
        closed ones still settling and the latest settled one per kind."""
        for p in [*self.current.values(), *self.past]:
            p.revised_night = night
        for kind in PERIOD_KINDS:
            p = self.current[kind]
            if night >= p.nights_range[1]:
                self.past.append(self.current.pop(kind))
        keep = []
        for kind in PERIOD_KINDS:
            mine = sorted((p for p in self.past if p.kind == kind), key=lambda p: p.number)
            settled = [p for p in mine if p.settled]
            # the previous period is kept until the next one opens (its start stock)
            keep += [p for p in mine if not p.settled] + settled[-1:]
        self.past = sorted(keep, key=lambda p: (PERIOD_KINDS.index(p.kind), p.number))

    # ---- out ----

    def tally(self) -> ForeignTally:
        """The ledgers kept (closed ones still settling, the latest settled one, the open one),
        as copies, in a fixed order."""
        periods = []
        for kind in PERIOD_KINDS:
            periods += [p.copy() for p in self.past if p.kind == kind]
            if kind in self.current:
                periods.append(self.current[kind].copy())
        return ForeignTally(self.countries.countries, periods)

    def events(self) -> dict[str, dict[str, np.ndarray]]:
        """Every arrival and departure since the start, when created with ``record=True``:
        ``arrival`` (``key``, ``day``, ``region``, ``country``) and ``departure`` (``key``,
        ``detected`` night, ``day`` of the last ping, ``first_day``, ``nights``, ``seen``,
        ``region``, ``country``), int64 arrays; ``key`` is the SIM's device key (its uint64
        bits as int64)."""
        if self._log is None:
            raise ValueError("this foreign state was created without record=True")
        names = {"arrival": ("key", "day", "region", "country"),
                 "departure": ("key", "detected", "day", "first_day", "nights", "seen", "region",
                               "country")}
        return {kind: {name: (np.concatenate([e[i] for e in self._log[kind]]).astype(np.int64)
                              if self._log[kind] else np.zeros(0, dtype=np.int64))
                       for i, name in enumerate(cols)}
                for kind, cols in names.items()}

    def export(self) -> dict[str, np.ndarray]:
        """The whole state as plain arrays (prefix ``fgn_``) for checkpoints."""
        n = self.n_devices
        self._grow(n)
        out = {f"fgn_p_{k}": v for k, v in self.presence.export().items()}
        out.update({f"fgn_{k}": a[:n].copy() for k, a in self.arrays.items()})
        out["fgn_bits"] = self.bits[:n].copy()
        out["fgn_evaluated"] = np.array([-1 if self.evaluated_night is None
                                         else self.evaluated_night], dtype=np.int64)
        out["fgn_countries"] = np.array(self.countries.countries, dtype=str)
        for kind, p in self.current.items():
            out.update(p.to_arrays(f"fgnl_cur_{kind}_"))
        out["fgnl_past_count"] = np.array([len(self.past)], dtype=np.int64)
        for i, p in enumerate(self.past):
            out.update(p.to_arrays(f"fgnl_past{i}_"))
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Load :meth:`export` output into this (empty) state. Raises ``ValueError`` when the
        checkpoint's country table or region count differs from this state's."""
        if self.n_devices:
            raise ValueError("restore needs an empty foreign state")
        countries = tuple(str(c) for c in np.asarray(arrays["fgn_countries"]).tolist())
        if countries != self.countries.countries:
            raise ValueError("checkpoint was written with another MCC table")
        self.presence.restore({k[len("fgn_p_"):]: v for k, v in arrays.items()
                               if k.startswith("fgn_p_")})
        keys = np.asarray(arrays["fgn_p_key"], dtype=np.uint64)
        rows, _ = self.presence.index.rows(keys)
        self._grow(self.n_devices)
        for k in DEVICE_FIELDS:
            self.arrays[k][rows] = arrays[f"fgn_{k}"]
        self.bits[rows] = arrays["fgn_bits"]
        night = int(np.asarray(arrays["fgn_evaluated"])[0])
        self.evaluated_night = None if night < 0 else night
        for kind in PERIOD_KINDS:
            if f"fgnl_cur_{kind}_meta" in arrays:
                p = ForeignPeriod.from_arrays(arrays, f"fgnl_cur_{kind}_")
                if p.n_regions != self.n_regions:
                    raise ValueError("checkpoint was written for another region set")
                self.current[kind] = p
        count = int(np.asarray(arrays["fgnl_past_count"])[0])
        self.past = [ForeignPeriod.from_arrays(arrays, f"fgnl_past{i}_") for i in range(count)]


# ---- figures: disclosure control, people, intervals ----


@dataclass(frozen=True)
class CountryFactor:
    """People per counted foreign-SIM device of a country (``ISO2``, ``other`` for the
    rolled-up countries, or ``*`` for any country without its own row), with its relative
    standard error. Such factors come from an outside source, e.g. border statistics (arrivals
    of a country's citizens over the devices of that country arriving, same period). Raises
    ``ValueError`` for a factor or rse out of the calibration's plausible ranges."""

    country: str
    factor: float
    rse: float = 0.0

    def __post_init__(self) -> None:
        problem = factor_problem(self.factor) or rse_problem(self.rse)
        if problem is not None:
            raise ValueError(f"country factor {self.country}: {problem}")


def fit_country_factors(device_arrivals: dict[str, int], people_arrivals: dict[str, float],
                        rse: float = 0.0) -> list[CountryFactor]:
    """Factors ``people / devices`` per country from counted device arrivals and an outside
    count of people arriving over the same period (countries with no device are skipped); the
    rse is the binomial error of the device count plus ``rse`` in quadrature."""
    out = []
    for country, people in sorted(people_arrivals.items()):
        devices = device_arrivals.get(country, 0)
        if devices > 0 and people > 0:
            out.append(CountryFactor(country, people / devices,
                                     math.sqrt(1.0 / devices + rse ** 2)))
    return out


@dataclass(frozen=True)
class ForeignFigureConfig:
    """How foreign-SIM counts are published.

    ``k``: devices a published figure must rest on (15, as elsewhere); ``z`` and ``model_rse``:
    the 90 % interval and its model term (as for flows). ``model_rse`` (0.05) was chosen on the
    simulator (``bench/foreign.py``, astana seeds 1-3 and kz): the interval of monthly arrivals
    and departures per country then holds the truth in 92-100 % of cells (0.03: 75-94 %), where
    a visitor is one SIM; ``top_countries`` and
    ``min_country_devices`` (default ``5 k``): a country keeps its own rows in a period only
    when it is among the ``top_countries`` largest by devices (arrivals plus stock at the end)
    and has at least ``min_country_devices`` of them, others are summed into ``other`` before
    any k test; ``countries``: a fixed list instead of the ranking (a stable label set for
    metrics). Raises ``ValueError`` for k < 1, a negative model term or top_countries < 0.
    """

    k: int = 15
    z: float = 1.645
    model_rse: float = 0.05
    top_countries: int = 10
    min_country_devices: int | None = None
    countries: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k (disclosure threshold) must be >= 1")
        if self.model_rse < 0:
            raise ValueError("the model error must not be negative")
        if self.top_countries < 0:
            raise ValueError("top_countries must be >= 0")

    @property
    def min_devices(self) -> int:
        """Devices a country needs to keep its own rows."""
        return 5 * self.k if self.min_country_devices is None else self.min_country_devices


@dataclass
class Figure:
    """One published table: device counts and people with 90 % interval (float64, NaN =
    suppressed, or no factor for people), axes (country, region[, class]) as in
    :class:`ForeignEstimate`."""

    devices: np.ndarray
    people: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@dataclass
class ForeignEstimate:
    """A period's published foreign-SIM figures.

    Axes: ``countries`` (the shown ones, then ``other``, then ``*`` = all countries),
    ``regions`` (the region set's ids, parents as subtree sums, then ``*`` = the whole country)
    and, for ``departures``, ``stock`` and ``nights``, ``classes`` (:data:`CLASSES`, then ``*``).
    ``figures`` maps the six measures to :class:`Figure`; ``nights`` counts device-nights and
    is published only where it exceeds ``k`` times the nights of the period (so it rests on at
    least ``k`` devices).
    """

    period: ForeignPeriod
    countries: tuple[str, ...]
    regions: tuple[str, ...]
    classes: tuple[str, ...]
    figures: dict[str, Figure]


def shown_countries(period: ForeignPeriod, codes: Sequence[str],
                    config: ForeignFigureConfig) -> tuple[str, ...]:
    """The countries with rows of their own in a period (the rest go to ``other``): the fixed
    list when configured, else the ``top_countries`` largest by arrivals plus stock (ties: by
    code) with at least ``min_devices`` devices."""
    if config.countries is not None:
        return tuple(c for c in config.countries if c in codes)
    size = period.arrivals.sum(axis=1) + period.stock.sum(axis=(1, 2))
    ranked = sorted((c for c in range(len(codes)) if size[c] >= config.min_devices),
                    key=lambda c: (-int(size[c]), codes[c]))
    return tuple(codes[c] for c in ranked[:config.top_countries])


def _rollup(period: ForeignPeriod, codes: Sequence[str], shown: Sequence[str],
            measures: Sequence[str] = CUBE_FIELDS + PLANE_FIELDS
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Country-row map (shown countries, ``other``) and each of ``measures`` summed into those
    rows (``int64[n_shown + 1, ...]``: a shown country's row is its own, ``other`` the sum of
    the rest)."""
    row = np.full(len(codes), len(shown), dtype=np.int64)
    own = np.array([codes.index(c) for c in shown], dtype=np.int64)
    row[own] = np.arange(len(shown))
    other = row == len(shown)
    out = {}
    for name in measures:
        a = getattr(period, name)
        summed = np.empty((len(shown) + 1, *a.shape[1:]), dtype=np.int64)
        summed[:-1] = a[own]
        summed[-1] = a[other].sum(axis=0, dtype=np.int64)
        out[name] = summed
    return row, out


def _complement(devices: np.ndarray, hidden: np.ndarray, axis: int, total: int,
                need: int) -> bool:
    """Along ``axis`` (members ``0..total-1``, the margin at ``total``): where the margin is
    shown and its hidden members hold 1 to ``need - 1`` (the margin minus the shown members
    would give them), hide the smallest shown non-zero member too (ties: the lowest index), or
    the margin when there is none. Changes ``hidden`` in place; True if it did."""
    dev = np.moveaxis(devices, axis, -1)
    hid = np.moveaxis(hidden, axis, -1)  # a view: writes go through
    members, m_hid = dev[..., :total], hid[..., :total]
    hidden_sum = np.where(m_hid, members, 0).sum(axis=-1)
    lone = ~hid[..., total] & (hidden_sum > 0) & (hidden_sum < need)
    if not lone.any():
        return False
    candidates = ~m_hid & (members > 0)
    pick = np.argmin(np.where(candidates, members, np.iinfo(np.int64).max), axis=-1)
    pick = np.where(candidates.any(axis=-1), pick, total)
    idx = np.nonzero(lone)
    hid[(*idx, pick[idx])] = True
    return True


def _suppress_cube(full: np.ndarray, base: np.ndarray, hidden: np.ndarray, regions: RegionSet,
                   leaf: np.ndarray, n_rows: int, classes: bool, need: int) -> np.ndarray:
    """Complementary suppression of one measure's table (``full``: countries + all ×
    regions (subtree sums) + all × classes + all; ``base``: the counts per assignment region
    the region columns sum; ``hidden``: primary), repeated until nothing changes (each step
    only hides more, so it ends):

    - **lines** at leaf level (:func:`_complement`): over classes, over leaf regions and over
      countries, a shown margin's hidden members hold 0 or at least ``need``;
    - **the region tree** per country row and class (:func:`~estimators.disclosure.
      region_tree_suppression`, the whole country as the root above the top-level regions):
      a shown region's own devices and its hidden descendants' hold 0 or at least ``need``,
      so a parent minus its shown children gives no small count.
    """
    n_reg = len(regions.ids)
    parent = np.r_[np.where(regions.parent_index >= 0, regions.parent_index, n_reg), -1]
    own = np.zeros((n_rows + 1, n_reg + 1, full.shape[2]))
    own[:n_rows, :n_reg] = base
    own[n_rows, :n_reg] = base.sum(axis=0)
    cols = np.flatnonzero(np.r_[leaf, True])
    changed = True
    while changed:
        changed = False
        view_dev = full[:, cols]
        view_hid = hidden[:, cols].copy()
        last = view_dev.ndim - 1
        step = True
        while step:
            step = False
            if classes:
                step |= _complement(view_dev, view_hid, last, view_dev.shape[last] - 1, need)
            step |= _complement(view_dev, view_hid, 1, view_dev.shape[1] - 1, need)
            step |= _complement(view_dev, view_hid, 0, n_rows, need)
        hidden[:, cols] = view_hid
        for row in range(n_rows + 1):
            for cls in range(full.shape[2]):
                tree = region_tree_suppression(parent, own[row, :, cls], ~hidden[row, :, cls],
                                               need)
                if (tree & ~hidden[row, :, cls]).any():
                    hidden[row, :, cls] |= tree
                    changed = True
    return hidden


def estimate_foreign(period: ForeignPeriod, codes: Sequence[str], regions: RegionSet,
                     factors: Sequence[CountryFactor] = (),
                     config: ForeignFigureConfig | None = None,
                     measures: Sequence[str] = CUBE_FIELDS + PLANE_FIELDS) -> ForeignEstimate:
    """A period's figures: device counts with disclosure control, and people with a 90 %
    interval where a country factor is configured; ``figures`` holds ``measures`` (default:
    all six; each measure's figures are computed on their own, so a subset is the same).

    Small countries are summed into ``other`` first (:func:`shown_countries`). A figure is
    suppressed (NaN) when it rests on fewer than ``k`` devices (device-nights: fewer than ``k``
    times the period's nights evaluated). Complementary suppression (:func:`_suppress_cube`):
    within a (country, leaf region) line over classes, a country's line over leaf regions, and a
    region's line over countries, the hidden members of a shown margin hold 0 or at least the
    measure's threshold (``k`` devices; ``k`` times the period's nights for device-nights); and
    per country row and class, no shown region minus its shown children (nor the whole country
    minus its shown regions) gives less. These close those direct differences only; combinations
    of lines can still isolate small counts (``docs/METHOD.md`` §10).

    People: ``devices x factor``, with ``sd² = devices f (f-1)`` (counting) ``+ (rse x people)²``
    (the factor, shared by a country's cells) ``+ (model_rse x people)²``; the all-countries row
    has people only when every country in it has a factor.
    """
    cfg = config or ForeignFigureConfig()
    codes = list(codes)
    shown = shown_countries(period, codes, cfg)
    _, rolled = _rollup(period, codes, shown, measures)
    names = (*shown, OTHER)
    n_rows = len(names)
    n_reg = len(regions.ids)
    sub = regions.subtree.astype(np.int64)  # sub[g, j]: j in g's subtree
    leaf = ~(regions.subtree & ~np.eye(n_reg, dtype=bool)).any(axis=1)
    by_code = {f.country: f for f in factors}
    fallback = by_code.get(ALL)
    factor = np.full(n_rows, np.nan)
    rse = np.zeros(n_rows)
    for i, name in enumerate(names):
        f = by_code.get(name, fallback)
        if f is not None:
            factor[i], rse[i] = f.factor, f.rse
    figures = {}
    nights_cap = max(period.nights_evaluated, 1)
    for name, counts in rolled.items():
        cube = counts if counts.ndim == 3 else counts[:, :, None]
        # country rows + all; regions (subtree sums) + all; classes + all
        full = np.zeros((n_rows + 1, n_reg + 1, cube.shape[2] + (counts.ndim == 3)), dtype=np.int64)
        base = cube
        if counts.ndim == 3:
            base = np.concatenate([cube, cube.sum(axis=2, keepdims=True)], axis=2)
        full[:n_rows, :n_reg] = np.einsum("gj,cjk->cgk", sub, base)
        full[:n_rows, n_reg] = base.sum(axis=1)
        full[n_rows] = full[:n_rows].sum(axis=0)
        need = cfg.k * (nights_cap if name == "nights" else 1)
        hidden = _suppress_cube(full, base, full < need, regions, leaf, n_rows,
                                counts.ndim == 3, need)
        if counts.ndim != 3:
            full, hidden = full[:, :, 0], hidden[:, :, 0]
        people, lo, hi = _people(full, hidden, factor, rse, cfg)
        figures[name] = Figure(np.where(hidden, np.nan, full.astype(np.float64)), people, lo, hi)
    return ForeignEstimate(period, (*names, ALL), (*regions.ids, ALL), (*CLASSES, ALL), figures)


def _people(devices: np.ndarray, hidden: np.ndarray, factor: np.ndarray, rse: np.ndarray,
            cfg: ForeignFigureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(people, lo, hi)`` of a device table whose first axis is (countries, all)."""
    n = factor.size
    shape = (n,) + (1,) * (devices.ndim - 1)
    f, r = factor.reshape(shape), rse.reshape(shape)
    dev = devices[:n].astype(np.float64)
    people = dev * f
    var = dev * f * np.maximum(f - 1.0, 0.0) + (r * people) ** 2
    all_people = np.where(np.isnan(factor).any(), np.nan, np.nansum(people, axis=0))[None]
    all_var = np.nansum(var, axis=0)[None]
    people = np.concatenate([people, all_people])
    var = np.concatenate([var, all_var]) + (cfg.model_rse * people) ** 2
    sd = np.sqrt(var)
    ok = ~hidden & np.isfinite(people)
    return (np.where(ok, people, np.nan), np.where(ok, np.maximum(people - cfg.z * sd, 0.0), np.nan),
            np.where(ok, people + cfg.z * sd, np.nan))
