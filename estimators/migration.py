"""Internal migration: usual residence with hysteresis, relocations and their tiers, lapse.

Method (reasons and measurements in ``docs/METHOD.md`` §9; sources in the project's method note):

- **Usual residence (UR).** At the close of night ``n``, over nights ``n-W+1..n`` (``W`` =
  ``window_nights``, 28): ``R`` is the region with most nights (ties: the most recent). ``R``
  *qualifies* when it holds more than half of the observed nights and at least ``min_nights``
  (10) of them: FlowKit's ``MajorityLocation`` and monthly home rule, the UN 50 %+1 principle.
  No UR yet and a qualifier → *housed* there (not a move). UR ``H`` and another qualifier ``R``
  → a **relocation** ``H→R``. Otherwise the UR is kept: quiet or split nights never remove one.
- **Dates and tiers.** ``detected`` is night ``n``; ``effective`` the first night in the window
  on which ``R`` was the night region. A relocation is **confirmed** once the UR has stayed ``R``
  for ``confirm_nights`` (90, the UN's 3-month boundary) after ``effective`` and ``R`` still
  qualifies that night (a device silent or split since keeps ``R`` but proves nothing); a relocation back
  to ``H`` before that is a **return** (and itself a relocation ``R→H``). Only a relocation
  from an *established* UR can be confirmed: one that still qualified ``window_nights`` or more
  after it was set. A UR set on a device's first nights (a SIM first seen on a holiday) or by a
  stay that then ended is provisional, and correcting it is no move.
- **Lapse.** A device without any ping for ``lapse_nights`` (30) nights is *lapsed*: it leaves
  the UR stock and is never an out-migrant; when it pings again it is *reactivated* with its UR.
  A new SIM enters as housed, never as an in-migrant (multimno and FlowKit drop both silently).
- **Determinism.** Every night is evaluated once, in night order, for every device, on the pings
  before the night's close only (:class:`~estimators.engine.Engine` splits its input there), so
  the results depend on the set of accepted pings alone: not on batching, window length,
  partitions or restarts.

Counts are kept per tumbling period (ISO week, calendar month), by the night an event is
detected on, in device units. The stock-flow identity holds exactly per region::

    end_stock - start_stock = in - out + housed - lapsed + reactivated
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Protocol, TypeVar

import numpy as np

PERIOD_KINDS = ("week", "month")


class _Period(Protocol):
    kind: str
    number: int

    @property
    def settled(self) -> bool: ...


_P = TypeVar("_P", bound=_Period)
_EPOCH = date(1970, 1, 1)
# the region-vector counters of a period, then its OD matrices (from region, to region)
VECTOR_FIELDS = ("start_stock", "end_stock", "cohort", "housed", "lapsed", "reactivated",
                 "end_observed")
MATRIX_FIELDS = ("relocations", "cohort_relocations", "confirmed", "returns",
                 "relocations_by_effective")
# per-device arrays: dtype and the value of a device without that state
DEVICE_FIELDS: dict[str, tuple[type, int | bool]] = {
    "ur": (np.int16, -1), "ur_since": (np.int32, -1), "lapsed": (np.bool_, False),
    "pend_from": (np.int16, -1),
    "pend_to": (np.int16, -1), "pend_effective": (np.int32, -1), "cohort_week": (np.int16, -1),
    "cohort_month": (np.int16, -1), "established": (np.bool_, False)}


@dataclass(frozen=True)
class MigrationConfig:
    """The usual-residence and tier rules (defaults and their reasons in ``docs/METHOD.md``).

    ``window_nights``: nights the majority is taken over; ``min_nights``: nights the majority
    region must hold; ``confirm_nights``: nights after ``effective`` that confirm a move;
    ``lapse_nights``: nights without any ping that lapse a device. Raises ``ValueError`` for
    ``min_nights`` outside 1..``window_nights``, a window outside 1..366 nights, or
    non-positive confirmation or lapse spans.
    """

    window_nights: int = 28
    min_nights: int = 10
    confirm_nights: int = 90
    lapse_nights: int = 30

    def __post_init__(self) -> None:
        if not 1 <= self.window_nights <= 366:
            raise ValueError("the migration window must be 1..366 nights")
        if not 1 <= self.min_nights <= self.window_nights:
            raise ValueError(f"--move-min-nights must be 1..{self.window_nights} (the window)")
        if self.confirm_nights < 1 or self.lapse_nights < 1:
            raise ValueError("confirmation and lapse spans must be at least one night")


def period_of(night: int, kind: str) -> int:
    """The period number of a night (days since 1970 of its evening, local): ISO weeks counted
    from the Monday 1969-12-29 (``week``), or months since January 1970 (``month``)."""
    if kind == "week":
        return (night + 3) // 7
    d = _EPOCH + timedelta(days=night)
    return (d.year - 1970) * 12 + d.month - 1


def periods_of(nights: np.ndarray, kind: str) -> np.ndarray:
    """:func:`period_of` for an int64 array of nights (int64 array)."""
    nights = np.asarray(nights, dtype=np.int64)
    if kind == "week":
        return (nights + 3) // 7
    return nights.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def period_nights(kind: str, number: int) -> tuple[int, int]:
    """``(first night, last night)`` of a period (days since 1970, inclusive)."""
    if kind == "week":
        first = number * 7 - 3
        return first, first + 6
    year, month = divmod(number, 12)
    start = date(1970 + year, month + 1, 1)
    end = date(1970 + year + (month == 11), (month + 1) % 12 + 1, 1)
    return (start - _EPOCH).days, (end - _EPOCH).days - 1


def period_label(kind: str, number: int) -> str:
    """``2026-W10`` (ISO week) or ``2026-03`` (month)."""
    first, _ = period_nights(kind, number)
    d = _EPOCH + timedelta(days=first)
    if kind == "week":
        year, week, _ = d.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{d.year}-{d.month:02d}"


@dataclass
class PeriodCounts:
    """Device counts of one period (``kind``, ``number``) over ``n`` regions (assignment index,
    ``unassigned`` included): int64 vectors ``[n]`` and OD matrices ``[n, n]`` (from, to).

    ``start_stock``/``end_stock``: UR stock (devices with that UR, not lapsed) at the period's
    start and end (end: so far, for an open period); ``cohort``: devices with that UR at the
    start and not lapsed at the end (the at-risk population of the cohort rate);
    ``end_observed``: the part of ``end_stock`` seen on at least ``min_nights`` nights of the
    window at the period's end (devices whose move could be detected: the flows' denominator);
    ``relocations``: all relocations; ``cohort_relocations``: those of cohort members, by their
    origin; ``confirmed``: moves confirmed in the period (by origin and destination);
    ``returns``: returns in the period, by the relocation they undo; ``housed``, ``lapsed``,
    ``reactivated``: by region. ``first_night``/``last_night``: the earliest and latest nights
    evaluated (the period is final once ``last_night`` is its last night, and complete when
    ``first_night`` is its first: data began before it).

    ``relocations_by_effective``: relocations whose ``effective`` night lies in this period,
    whenever detected; they keep arriving until ``settles_on`` (the period's last night plus
    the window less one: a relocation is detected at most that long after its effective night),
    and ``revised_night`` is the latest night evaluated for it. :meth:`by_effective` gives the
    period dated by effective night (``dating`` ``effective``), final once settled.
    """

    kind: str
    number: int
    n: int
    last_night: int = -1
    first_night: int = -1
    start_stock: np.ndarray = field(default=None)  # type: ignore[assignment]
    end_stock: np.ndarray = field(default=None)  # type: ignore[assignment]
    cohort: np.ndarray = field(default=None)  # type: ignore[assignment]
    housed: np.ndarray = field(default=None)  # type: ignore[assignment]
    lapsed: np.ndarray = field(default=None)  # type: ignore[assignment]
    reactivated: np.ndarray = field(default=None)  # type: ignore[assignment]
    end_observed: np.ndarray = field(default=None)  # type: ignore[assignment]
    relocations: np.ndarray = field(default=None)  # type: ignore[assignment]
    cohort_relocations: np.ndarray = field(default=None)  # type: ignore[assignment]
    confirmed: np.ndarray = field(default=None)  # type: ignore[assignment]
    returns: np.ndarray = field(default=None)  # type: ignore[assignment]
    relocations_by_effective: np.ndarray = field(default=None)  # type: ignore[assignment]
    settles_on: int = -1
    revised_night: int = -1
    dating: str = "detected"

    def __post_init__(self) -> None:
        for name in VECTOR_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.n, dtype=np.int64))
        for name in MATRIX_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, np.zeros((self.n, self.n), dtype=np.int64))

    @property
    def label(self) -> str:
        """``2026-W10`` or ``2026-03``."""
        return period_label(self.kind, self.number)

    @property
    def final(self) -> bool:
        """Whether its counts change no more: the period's last night has been evaluated (dated
        by detection), or it has settled (dated by effective night)."""
        if self.dating == "effective":
            return self.settled
        return self.last_night >= period_nights(self.kind, self.number)[1]

    @property
    def settled(self) -> bool:
        """Whether no more relocations can be dated into it (``revised_night >= settles_on``)."""
        return 0 <= self.settles_on <= self.revised_night

    def by_effective(self) -> PeriodCounts:
        """This period with its relocations dated by effective night: ``relocations`` and
        ``cohort_relocations`` (the flows' numerator) are ``relocations_by_effective``; the
        stocks, cohort and the other counts stay those of the period."""
        view = self.copy()
        view.relocations = view.relocations_by_effective.copy()
        view.cohort_relocations = view.relocations_by_effective.copy()
        view.dating = "effective"
        return view

    @property
    def complete(self) -> bool:
        """Whether its first night was evaluated too (the data did not begin inside it)."""
        return 0 <= self.first_night <= period_nights(self.kind, self.number)[0]

    def copy(self) -> PeriodCounts:
        """A deep copy."""
        return PeriodCounts(self.kind, self.number, self.n, self.last_night, self.first_night,
                            **{f: getattr(self, f).copy() for f in VECTOR_FIELDS + MATRIX_FIELDS},
                            settles_on=self.settles_on, revised_night=self.revised_night,
                            dating=self.dating)

    def balance_error(self) -> np.ndarray:
        """Per region, how far the stock-flow identity is off (zero when the books balance)."""
        flows = (self.relocations.sum(axis=0) - self.relocations.sum(axis=1) + self.housed
                 - self.lapsed + self.reactivated)
        return self.end_stock - self.start_stock - flows

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Flat arrays (OD matrices as sparse ``from, to, count`` triplets) under ``prefix``."""
        out = {f"{prefix}meta": np.array([PERIOD_KINDS.index(self.kind), self.number, self.n,
                                          self.last_night, self.first_night, self.settles_on,
                                          self.revised_night], dtype=np.int64)}
        for name in VECTOR_FIELDS:
            out[prefix + name] = getattr(self, name).copy()  # the ledger moves on at night
        for name in MATRIX_FIELDS:
            m = getattr(self, name)
            src, dst = np.nonzero(m)
            out[prefix + name] = np.stack([src, dst, m[src, dst]]).astype(np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> PeriodCounts:
        """Inverse of :meth:`to_arrays`."""
        meta = [int(v) for v in arrays[f"{prefix}meta"]] + [-1, -1]  # before settling: 5 values
        kind_i, number, n, last_night, first_night, settles_on, revised_night = meta[:7]
        fields = {name: (np.asarray(arrays[prefix + name], dtype=np.int64).copy()
                         if prefix + name in arrays else np.zeros(n, dtype=np.int64))
                  for name in VECTOR_FIELDS}
        for name in MATRIX_FIELDS:
            m = np.zeros((n, n), dtype=np.int64)
            if prefix + name in arrays:
                src, dst, count = np.asarray(arrays[prefix + name], dtype=np.int64).reshape(3, -1)
                np.add.at(m, (src, dst), count)
            fields[name] = m
        return cls(PERIOD_KINDS[kind_i], number, n, last_night, first_night, **fields,
                   settles_on=settles_on, revised_night=revised_night)


def merge_periods(periods: list[PeriodCounts]) -> PeriodCounts:
    """Sum the counts of one period from disjoint device sets (e.g. partitions).

    Raises ``ValueError`` when the periods or region counts differ.
    """
    first = periods[0]
    if any((p.kind, p.number, p.n) != (first.kind, first.number, first.n) for p in periods):
        raise ValueError("cannot merge counts of different periods or region sets")
    firsts = [p.first_night for p in periods if p.first_night >= 0]
    return PeriodCounts(first.kind, first.number, first.n, max(p.last_night for p in periods),
                        min(firsts) if firsts else -1,
                        **{f: sum(getattr(p, f) for p in periods)
                           for f in VECTOR_FIELDS + MATRIX_FIELDS},
                        settles_on=max(p.settles_on for p in periods),
                        revised_night=min(p.revised_night for p in periods))


def latest_periods(periods: Iterable[_P], closed: Callable[[_P], bool]
                   ) -> dict[str, tuple[_P | None, _P | None, _P | None]]:
    """Per period kind, the latest open, the latest closed (``closed(p)``) and the latest
    settled (closed and ``p.settled``) of ``periods`` (each None when there is none): what a
    tally publishes."""
    out = {}
    for kind in PERIOD_KINDS:
        mine = sorted((p for p in periods if p.kind == kind), key=lambda p: p.number)
        shut = [p for p in mine if closed(p)]
        open_ = [p for p in mine if not closed(p)]
        settled = [p for p in shut if p.settled]
        out[kind] = (open_[-1] if open_ else None, shut[-1] if shut else None,
                     settled[-1] if settled else None)
    return out


@dataclass
class MigrationTally:
    """The migration part of a tally: per period kind, the open period, the closed ones still
    settling (relocations dated by effective night may still arrive) and the latest settled one.

    Tallies of disjoint device sets at the same instant add up (:func:`merge_migration`).
    """

    periods: list[PeriodCounts]

    def published(self) -> dict[str, PeriodCounts]:
        """The periods defacto publishes, by field: ``week``/``month`` (open, dated by
        detection), ``week:closed``/``month:closed`` (the latest closed one, dated by
        detection), ``week:effective``/``month:effective`` (the latest settled one, dated by
        effective night: final, revised no more)."""
        out: dict[str, PeriodCounts] = {}
        for kind, (open_, closed, settled) in latest_periods(self.periods,
                                                             lambda p: p.final).items():
            if open_:
                out[kind] = open_
            if closed:
                out[f"{kind}:closed"] = closed
            if settled:
                out[f"{kind}:effective"] = settled.by_effective()
        return out

    def final_views(self) -> list[PeriodCounts]:
        """Every final view of the periods, in period order: each closed period dated by
        detection, then dated by effective night once settled. What ``replay --flows-out``
        writes once each and ``P:flows:history`` records."""
        return [view for p in self.periods if p.final
                for view in (p, p.by_effective()) if view.final]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for the tally's binary form."""
        out: dict[str, np.ndarray] = {"mig_count": np.array([len(self.periods)], dtype=np.int64)}
        for i, p in enumerate(self.periods):
            out.update(p.to_arrays(f"mig{i}_"))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> MigrationTally | None:
        """Inverse of :meth:`to_arrays`; None when the arrays hold no migration part."""
        if "mig_count" not in arrays:
            return None
        count = int(np.asarray(arrays["mig_count"])[0])
        return cls([PeriodCounts.from_arrays(arrays, f"mig{i}_") for i in range(count)])


def merge_migration(tallies: list[MigrationTally]) -> MigrationTally:
    """Sum migration tallies: each period summed over the tallies that hold it."""
    by_key: dict[tuple[str, int], list[PeriodCounts]] = {}
    for t in tallies:
        for p in t.periods:
            by_key.setdefault((p.kind, p.number), []).append(p)
    keys = sorted(by_key, key=lambda k: (PERIOD_KINDS.index(k[0]), k[1]))
    return MigrationTally([merge_periods(by_key[k]) for k in keys])


class MigrationState:
    """Per-device usual residence, pending relocation and lapse, plus the period ledgers.

    Rows are the presence state's device rows. Per device (18 bytes): ``ur`` int16 (region, -1
    none) and ``ur_since`` int32 (the night it was set), ``lapsed`` bool, the pending
    (unconfirmed) relocation ``pend_from``/``pend_to`` int16
    and ``pend_effective`` int32 (night), and the UR at the start of the current week and month
    (``cohort_week``/``cohort_month`` int16, -1 none or lapsed), ``established`` bool (the UR
    still qualified a full window after it was set).
    """

    def __init__(self, n_regions: int, config: MigrationConfig, record: bool = False) -> None:
        self.n = n_regions
        self.config = config
        self._log: list[tuple[np.ndarray, ...]] | None = [] if record else None
        self.arrays = {k: np.full(0, fill, dtype=dt) for k, (dt, fill) in DEVICE_FIELDS.items()}
        self.evaluated_night: int | None = None
        self.current: dict[str, PeriodCounts] = {}
        self.past: list[PeriodCounts] = []  # closed: settling, and the latest settled per kind
        self.observed_stock = np.zeros(n_regions, dtype=np.int64)  # as of the last night

    @property
    def nbytes(self) -> int:
        """Bytes of per-device state held."""
        return sum(a.nbytes for a in self.arrays.values())

    def _grow(self, n_devices: int) -> None:
        have = len(self.arrays["ur"])
        if n_devices > have:
            cap = max(n_devices, int(have * 1.25) + 1024)
            self.arrays = {k: np.concatenate([a, np.full(cap - have, DEVICE_FIELDS[k][1], dtype=a.dtype)])
                           for k, a in self.arrays.items()}

    @property
    def recording(self) -> bool:
        """Whether events are recorded (``record=True``): device rows must then stay put."""
        return self._log is not None

    def usual_residence(self, n_devices: int) -> np.ndarray:
        """Each device's usual residence region (int16[n_devices], -1: none)."""
        self._grow(n_devices)
        return self.arrays["ur"][:n_devices]

    def keep_rows(self, kept: np.ndarray) -> None:
        """Keep only the device rows ``kept`` (old row numbers, ascending), renumbered ``0..``:
        the presence state's :meth:`~estimators.presence.PresenceState.evict` did the same.
        Rows past them get the values of a device without state. Raises ``ValueError`` when
        events are being recorded (their rows would go stale)."""
        if self._log is not None:
            raise ValueError("cannot drop device rows while recording events")
        n = kept.size
        self._grow(int(kept.max()) + 1 if n else 0)
        cap = max(n + 1024, len(self.arrays["ur"]) if 2 * n >= len(self.arrays["ur"]) else 0)
        out = {}
        for k, a in self.arrays.items():
            fresh = np.full(cap, DEVICE_FIELDS[k][1], dtype=a.dtype)
            fresh[:n] = a[kept]
            out[k] = fresh
        self.arrays = out

    def stock(self, n_devices: int) -> np.ndarray:
        """UR stock per region now: devices with a UR that are not lapsed (int64[n])."""
        self._grow(n_devices)
        a = self.arrays
        ur, lapsed = a["ur"][:n_devices], a["lapsed"][:n_devices]
        return np.bincount(ur[(ur >= 0) & ~lapsed], minlength=self.n).astype(np.int64)

    def _cohort(self, kind: str, n_devices: int) -> np.ndarray:
        self._grow(n_devices)
        a = self.arrays
        start = a[f"cohort_{kind}"][:n_devices]
        member = (start >= 0) & ~a["lapsed"][:n_devices]
        return np.bincount(start[member], minlength=self.n).astype(np.int64)

    def _open(self, kind: str, night: int, n_devices: int) -> None:
        """Start the period of ``night``: its start stock and the cohort of its members."""
        a = self.arrays
        ur, lapsed = a["ur"][:n_devices], a["lapsed"][:n_devices]
        a[f"cohort_{kind}"][:n_devices] = np.where((ur >= 0) & ~lapsed, ur, -1)
        number = period_of(night, kind)
        self.current[kind] = PeriodCounts(kind, number, self.n, first_night=night,
                                          start_stock=self.stock(n_devices),
                                          settles_on=self._settles_on(kind, number))

    def _settles_on(self, kind: str, number: int) -> int:
        return period_nights(kind, number)[1] + self.config.window_nights - 1

    def _close(self, kind: str, n_devices: int) -> None:
        p = self.current.pop(kind)
        p.end_stock = self.stock(n_devices)
        p.end_observed = self.observed_stock.copy()
        p.cohort = self._cohort(kind, n_devices)
        self.past.append(p)

    def _ledger(self, kind: str, number: int) -> PeriodCounts:
        """The ledger of a period, for relocations dated into it: the open one, a closed one
        still settling, or (a relocation effective before the first evaluated night) a new,
        incomplete one."""
        if self.current[kind].number == number:
            return self.current[kind]
        for p in self.past:
            if (p.kind, p.number) == (kind, number):
                return p
        # closed before it was observed: final, and incomplete (no night of it was evaluated)
        p = PeriodCounts(kind, number, self.n, last_night=period_nights(kind, number)[1],
                         settles_on=self._settles_on(kind, number))
        self.past.append(p)
        return p

    def _date_by_effective(self, src: np.ndarray, dst: np.ndarray, effective: np.ndarray) -> None:
        """Count relocations into the ledgers of the periods of their effective nights."""
        for kind in PERIOD_KINDS:
            numbers = periods_of(effective, kind)
            for number in np.unique(numbers).tolist():
                sel = numbers == number
                np.add.at(self._ledger(kind, number).relocations_by_effective,
                          (src[sel], dst[sel]), 1)

    def _settle(self, night: int) -> None:
        """Mark every ledger revised through ``night``; keep the closed ones still settling and
        the latest settled one per kind."""
        for p in [*self.current.values(), *self.past]:
            p.revised_night = night
        keep = []
        for kind in PERIOD_KINDS:
            mine = sorted((p for p in self.past if p.kind == kind), key=lambda p: p.number)
            settled = [p for p in mine if p.settled]
            keep += [p for p in mine if not p.settled] + settled[-1:]
        self.past = sorted(keep, key=lambda p: (PERIOD_KINDS.index(p.kind), p.number))

    def evaluate(self, night: int, n_devices: int, domestic: np.ndarray, active: np.ndarray,
                 pick: np.ndarray, pick_nights: np.ndarray, seen: np.ndarray,
                 first: np.ndarray) -> None:
        """Apply the rules of the module docstring for ``night`` to devices ``0..n_devices-1``.

        ``domestic``/``active`` bool[n_devices] (active: a ping within ``lapse_nights``);
        ``pick``, ``pick_nights``, ``seen``, ``first`` int64[n_devices]: the night votes over
        the window ending with ``night`` (:meth:`estimators.presence.PresenceState.night_votes`).
        Nights must come in order, each once.
        """
        if self.evaluated_night is not None and night != self.evaluated_night + 1:
            raise ValueError(f"night {night} evaluated after night {self.evaluated_night}")
        self._grow(n_devices)
        for kind in PERIOD_KINDS:
            if kind not in self.current:
                self._open(kind, night, n_devices)
        cfg, a = self.config, self.arrays
        ur = a["ur"][:n_devices].astype(np.int64)
        lapsed = a["lapsed"][:n_devices]
        has_ur = ur >= 0
        react = has_ur & lapsed & active
        lapse = has_ur & ~lapsed & ~active
        qualify = (domestic & active & (pick >= 0) & (2 * pick_nights > seen)
                   & (pick_nights >= cfg.min_nights))
        housed = qualify & ~has_ur
        move = qualify & has_ur & (pick != ur)
        pend_from = a["pend_from"][:n_devices].astype(np.int64)
        pend_to = a["pend_to"][:n_devices].astype(np.int64)
        back = move & (pend_from >= 0) & (pick == pend_from)
        moved_ur = ur[move]
        if self._log is not None:
            self._record(night, housed, np.full(n_devices, -1), pick, first, 0)
            self._record(night, move, ur, pick, first, 1)
        for kind in PERIOD_KINDS:
            p = self.current[kind]
            np.add.at(p.reactivated, ur[react], 1)
            np.add.at(p.lapsed, ur[lapse], 1)
            np.add.at(p.housed, pick[housed], 1)
            np.add.at(p.relocations, (moved_ur, pick[move]), 1)
            member = move & (a[f"cohort_{kind}"][:n_devices] >= 0)
            np.add.at(p.cohort_relocations, (ur[member], pick[member]), 1)
            np.add.at(p.returns, (pend_from[back], pend_to[back]), 1)
        self._date_by_effective(moved_ur, pick[move], first[move])
        a["lapsed"][:n_devices] = ~active
        since = a["ur_since"][:n_devices].astype(np.int64)
        established = a["established"][:n_devices]
        established |= qualify & (pick == ur) & (night - since >= cfg.window_nights)
        stable = established.copy()
        new_ur = np.where(housed | move, pick, ur)
        a["ur"][:n_devices] = new_ur
        a["ur_since"][:n_devices][housed | move] = night
        established[housed | move] = False
        # pending relocations: a return clears one, a new switch from an established UR
        # replaces it, a switch from a provisional UR leaves none (it cannot be confirmed)
        opened = move & ~back & stable
        dropped = move & ~back & ~stable
        a["pend_from"][:n_devices][dropped] = -1
        a["pend_to"][:n_devices][dropped] = -1
        a["pend_from"][:n_devices][back] = -1
        a["pend_to"][:n_devices][back] = -1
        a["pend_from"][:n_devices][opened] = ur[opened]
        a["pend_to"][:n_devices][opened] = pick[opened]
        a["pend_effective"][:n_devices][opened] = first[opened]
        pend_from = a["pend_from"][:n_devices].astype(np.int64)
        pend_to = a["pend_to"][:n_devices].astype(np.int64)
        eff = a["pend_effective"][:n_devices].astype(np.int64)
        # confirmed on evidence: R still qualifies tonight (a device that went silent or split
        # its nights after a stay keeps its UR, but that is no proof of a move)
        confirm = ((pend_from >= 0) & (new_ur == pend_to) & (night - eff >= cfg.confirm_nights)
                   & qualify & (pick == pend_to))
        if self._log is not None:
            self._record(night, confirm, pend_from, pend_to, eff, 2)
        for kind in PERIOD_KINDS:
            np.add.at(self.current[kind].confirmed, (pend_from[confirm], pend_to[confirm]), 1)
            self.current[kind].last_night = night
        a["pend_from"][:n_devices][confirm] = -1
        a["pend_to"][:n_devices][confirm] = -1
        self.evaluated_night = night
        observed = (new_ur >= 0) & active & (seen >= cfg.min_nights)
        self.observed_stock = np.bincount(new_ur[observed], minlength=self.n).astype(np.int64)
        self._settle(night)
        for kind in PERIOD_KINDS:
            if night >= period_nights(kind, self.current[kind].number)[1]:
                self._close(kind, n_devices)

    def _record(self, night: int, mask: np.ndarray, src: np.ndarray, dst: np.ndarray,
                effective: np.ndarray, kind: int) -> None:
        rows = np.flatnonzero(mask)
        if rows.size and self._log is not None:
            self._log.append((rows, np.full(rows.size, night), np.full(rows.size, kind),
                              src[rows], dst[rows], effective[rows]))

    def events(self) -> dict[str, np.ndarray]:
        """Every event since the start, when created with ``record=True`` (benchmarks, tests):
        ``row`` (device row), ``night`` (detected), ``kind`` (0 housed, 1 relocation,
        2 confirmed), ``src``/``dst`` regions and ``effective`` night, all int64 arrays."""
        if self._log is None:
            raise ValueError("this migration state was created without record=True")
        names = ("row", "night", "kind", "src", "dst", "effective")
        if not self._log:
            return {n: np.zeros(0, dtype=np.int64) for n in names}
        return {n: np.concatenate([e[i] for e in self._log]).astype(np.int64)
                for i, n in enumerate(names)}

    def tally(self, n_devices: int) -> MigrationTally:
        """The open periods (counts so far, end stock and cohort as of now) and the closed ones
        kept (:class:`MigrationTally`), in a fixed order."""
        periods = []
        for kind in PERIOD_KINDS:
            periods += [p.copy() for p in self.past if p.kind == kind]
            if kind in self.current:
                p = self.current[kind].copy()
                p.end_stock = self.stock(n_devices)
                p.end_observed = self.observed_stock.copy()
                p.cohort = self._cohort(kind, n_devices)
                periods.append(p)
        return MigrationTally(periods)

    def export(self, n_devices: int) -> dict[str, np.ndarray]:
        """Per-device arrays (first ``n_devices`` rows) and ledgers as plain arrays."""
        self._grow(n_devices)
        out = {f"mig_{k}": a[:n_devices].copy() for k, a in self.arrays.items()}
        out["mig_evaluated"] = np.array([-1 if self.evaluated_night is None
                                         else self.evaluated_night], dtype=np.int64)
        out["mig_observed_stock"] = self.observed_stock.copy()
        for kind, p in self.current.items():
            out.update(p.to_arrays(f"migp_cur_{kind}_"))
        out["migp_past_count"] = np.array([len(self.past)], dtype=np.int64)
        for i, p in enumerate(self.past):
            out.update(p.to_arrays(f"migp_past{i}_"))
        return out

    def restore(self, arrays: dict[str, np.ndarray], rows: np.ndarray) -> None:
        """Load :meth:`export` output; ``rows`` maps exported row ``i`` to this state's row."""
        n = int(rows.max()) + 1 if rows.size else 0
        self._grow(n)
        for k in DEVICE_FIELDS:
            if f"mig_{k}" in arrays:
                self.arrays[k][rows] = arrays[f"mig_{k}"]
        night = int(np.asarray(arrays.get("mig_evaluated", [-1]))[0])
        if "mig_observed_stock" in arrays:
            self.observed_stock = np.asarray(arrays["mig_observed_stock"], dtype=np.int64).copy()
        self.evaluated_night = None if night < 0 else night
        for kind in PERIOD_KINDS:
            if f"migp_cur_{kind}_meta" in arrays:
                self.current[kind] = PeriodCounts.from_arrays(arrays, f"migp_cur_{kind}_")
            if f"migp_old_{kind}_meta" in arrays:  # a checkpoint from before settling
                self.past.append(PeriodCounts.from_arrays(arrays, f"migp_old_{kind}_"))
        count = int(np.asarray(arrays.get("migp_past_count", [0]))[0])
        self.past += [PeriodCounts.from_arrays(arrays, f"migp_past{i}_") for i in range(count)]
        for p in [*self.current.values(), *self.past]:
            if p.settles_on < 0:
                p.settles_on = self._settles_on(p.kind, p.number)
