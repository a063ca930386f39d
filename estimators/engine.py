"""The estimation engine: one object that takes ping batches and answers population questions.

It owns the cell table, the device state and the resolved calibration; it does no I/O and knows
nothing of files, Kafka or Redis. Callers (``stream.estimate.windows`` for both ``defacto replay``
and the live worker's partitions) hand it columnar batches that the decoder has already
validated, and ask for a :class:`~estimators.tally.Tally` or an :class:`Estimate` at the instants
they publish.

State is bounded by what the figures can still use: devices are *evicted* (their rows dropped)
once no figure can read them any more, at fixed event-time points, so an engine fed the same
pings holds the same devices whatever the batching (see :meth:`Engine.evict_quiet`), and cells no
device references are reclaimed (:class:`~estimators.cells.CellTable`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from estimators.calibration import Calibration, FactorMatrix, FactorRow, fit_factors
from estimators.cells import CellPlan, CellTable
from estimators.estimate import Estimate, EstimateConfig, class_coverage, estimate_from_tally, tally_state
from estimators.foreign import (
    CountryFactor,
    ForeignConfig,
    ForeignFigureConfig,
    ForeignState,
    ZoneClock,
)
from estimators.mcc import CountryTable
from estimators.migration import DEVICE_FIELDS as MIGRATION_DEVICE_FIELDS
from estimators.migration import MigrationConfig, MigrationState
from estimators.presence import (
    MAX_LOCATIONS,
    ROAMER,
    NightWindow,
    PresenceState,
    current_night,
    night_of,
)
from estimators.presence import (
    ROW_FIELDS as PRESENCE_ROW_FIELDS,
)
from estimators.regions import RegionSet
from estimators.tally import Tally
from estimators.units import DAY_MS, HOUR_MS, HOUR_S, SECOND_MS
from estimators.warmup import (
    WARMUP_NIGHTS,
    PeriodWarmUp,
    WarmUp,
    observation_start,
    period_warm_up,
    warm_up,
)

MAX_OPERATORS = 254


@dataclass(frozen=True)
class EngineConfig:
    """Static configuration of an engine (see ``docs/METHOD.md`` for the defaults)."""

    res: int = 8
    coarse_res: tuple[int, ...] = (6, 7)  # also published, summed from res (coarser ones only)
    timezone: str = "Asia/Almaty"
    home_mcc: int = 401
    night: NightWindow = field(default_factory=NightWindow)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    migration: MigrationConfig | None = field(default_factory=MigrationConfig)  # None: off
    foreign: ForeignConfig | None = None  # stays of foreign SIMs (None: off; needs countries)
    foreign_figures: ForeignFigureConfig = field(default_factory=ForeignFigureConfig)
    evict: bool = True  # forget devices no figure can use any more (Engine.evict_quiet)
    warmup_nights: int = WARMUP_NIGHTS  # whole nights observed before resident is warm (0: none)


class Engine:
    """Pings in, present and resident population out; deterministic and order-independent.

    With ``config.foreign``, the stays of foreign SIMs (``home_mcc`` known and not
    ``config.home_mcc``) are followed too (:class:`~estimators.foreign.ForeignState`, its own
    device rows keyed by device key, so the engine's device eviction does not touch it):
    ``countries`` is then the MCC table (required), ``country_factors`` the per-country people
    per device used when the figures are published (none: device counts only). Raises
    ``ValueError`` for foreign stays without a country table.
    """

    def __init__(self, regions: RegionSet, config: EngineConfig | None = None,
                 calibration: Calibration | None = None, record_migration: bool = False,
                 countries: CountryTable | None = None,
                 country_factors: Sequence[CountryFactor] = (),
                 record_foreign: bool = False) -> None:
        self.config = config or EngineConfig()
        self.regions = regions
        self.cells = CellTable(regions, self.config.res)
        self.cells.in_use = self._locations_in_use
        self._location_holders: list[Callable[[], np.ndarray]] = []
        self.evicted = 0  # devices evicted so far
        self.unplaced = 0  # pings ingested with no location (loc -1: the cell table was full)
        self._evicted_night: int | None = None  # without migration: the night last evicted at
        mig = self.config.migration
        ring = max(self.config.night.nights, mig.window_nights) if mig else None
        self.state = PresenceState(len(regions.ids), self.config.night, ring_nights=ring)
        self.migration = MigrationState(len(regions.ids), mig, record_migration) if mig else None
        self.countries = countries
        self.country_factors: tuple[CountryFactor, ...] = tuple(country_factors)
        self.foreign: ForeignState | None = None
        if self.config.foreign is not None:
            if countries is None:
                raise ValueError("foreign stays need an MCC table (countries)")
            self.foreign = ForeignState(len(regions.ids), countries,
                                        ZoneClock(self.config.timezone, self.config.night),
                                        self.config.foreign, self.config.night, record_foreign)
        self.calibration = calibration or Calibration()
        self.operators: list[str] = []
        self._operator_index: dict[str, int] = {}
        self._factors: FactorMatrix | None = None
        self._tally_factors: dict[tuple[str, ...], FactorMatrix] = {}
        self._tz = ZoneInfo(self.config.timezone)
        self._offset_cache: dict[int, int] = {}
        self.plan: CellPlan | None = None
        self.first_ping_ms: int | None = None  # earliest accepted ping: the observation start

    def load_cell_plan(self, operator: list[str], cell: list[str], lat: np.ndarray,
                       lon: np.ndarray, azimuth_deg: np.ndarray | None = None,
                       range_m: np.ndarray | None = None) -> CellPlan:
        """Bin an operator cell plan once; cell-id pings then resolve by plan row."""
        self.plan = CellPlan(operator, cell, lat, lon, self.cells, azimuth_deg, range_m)
        for op in dict.fromkeys(operator):
            self.operator_code(op)
        return self.plan

    def operator_code(self, operator: str) -> int:
        """Stable small integer for an operator (MCC+MNC), assigned on first sight."""
        code = self._operator_index.get(operator)
        if code is None:
            if len(self.operators) >= MAX_OPERATORS:
                raise ValueError(f"more than {MAX_OPERATORS} operators")
            code = len(self.operators)
            self.operators.append(operator)
            self._operator_index[operator] = code
            self._factors = None
        return code

    def operator_class(self, operator_code: np.ndarray, home_mcc: np.ndarray) -> np.ndarray:
        """Class per ping: its operator code for home SIMs, ``ROAMER`` for foreign SIMs.

        ``home_mcc`` < 0 means unknown and counts as a home SIM.
        """
        home = np.asarray(home_mcc)
        roamer = (home >= 0) & (home != self.config.home_mcc)
        return np.where(roamer, ROAMER, operator_code).astype(np.uint8)

    def utc_offset_s(self, ts_ms: np.ndarray) -> np.ndarray | int:
        """UTC offset of the configured time zone at each time (one value when constant)."""
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        if ts_ms.size == 0:
            return 0
        hours = ts_ms // HOUR_MS
        lo, hi = int(hours.min()), int(hours.max())
        off_lo, off_hi = self._offset_at_hour(lo), self._offset_at_hour(hi)
        if off_lo == off_hi and hi - lo < 24 * 30:
            return off_lo
        uniq, inverse = np.unique(hours, return_inverse=True)
        offs = np.array([self._offset_at_hour(int(h)) for h in uniq], dtype=np.int64)
        return offs[inverse.reshape(-1)]

    def _offset_at_hour(self, hour: int) -> int:
        off = self._offset_cache.get(hour)
        if off is None:
            when = datetime.fromtimestamp(hour * HOUR_S, tz=UTC).astimezone(self._tz)
            off = int(when.utcoffset().total_seconds())  # type: ignore[union-attr]
            self._offset_cache[hour] = off
        return off

    def ingest(self, device_key: np.ndarray, ts_ms: np.ndarray, opclass: np.ndarray,
               loc: np.ndarray, home_mcc: np.ndarray | None = None) -> None:
        """Merge validated pings into the device state (order and repetition do not matter).

        Parameters
        ----------
        device_key : uint64[n]
            Keyed device hashes (:func:`estimators.pseudonym.device_keys`).
        ts_ms : int64[n]
            Event times, UTC milliseconds since 1970, at least ``EPOCH_MS``.
        opclass : uint8[n]
            Operator classes (:meth:`operator_class`).
        loc : int64[n]
            Location indices into :attr:`cells` (:meth:`~estimators.cells.CellTable.locate_latlng`
            or a cell-plan row's ``loc``).
        home_mcc : int16[n], optional
            The SIMs' home MCC (-1 unknown); with foreign stays on, the pings of foreign SIMs
            (known and not ``config.home_mcc``) also go to :attr:`foreign`. None: all unknown.
        """
        if len(device_key) == 0:
            return
        self._observe(int(np.min(ts_ms)))
        loc = np.asarray(loc, dtype=np.int64)
        mcc = (np.full(len(device_key), -1, dtype=np.int16) if home_mcc is None
               else np.asarray(home_mcc))
        if loc.min() < 0:  # no room in the cell table: the windows reject these before
            placed = loc >= 0
            self.unplaced += int((~placed).sum())
            device_key, ts_ms, opclass, loc, mcc = (
                device_key[placed], np.asarray(ts_ms)[placed], opclass[placed], loc[placed],
                mcc[placed])
            if len(device_key) == 0:
                return
        if not self.nights_on:
            self._update(device_key, ts_ms, opclass, loc)
            return
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        if self.evaluated_night is None:
            self.start_nights(int(ts_ms.min()))
        top = int(ts_ms.max())
        if self.night_close_ms(self._next_night()) > top:  # no night closes in this batch
            self._update(device_key, ts_ms, opclass, loc, mcc)
            return
        done = np.zeros(len(ts_ms), dtype=bool)
        while (close := self.night_close_ms(self._next_night())) <= top:
            part = ~done & (ts_ms < close)
            self._update(device_key[part], ts_ms[part], opclass[part], loc[part], mcc[part])
            done |= part
            self._evaluate_night(self._next_night())
        rest = ~done
        self._update(device_key[rest], ts_ms[rest], opclass[rest], loc[rest], mcc[rest])

    def _observe(self, ts_ms: int) -> None:
        """Extend the observation back to ``ts_ms`` (a running minimum: any batching of the same
        pings gives the same start)."""
        if self.first_ping_ms is None or ts_ms < self.first_ping_ms:
            self.first_ping_ms = ts_ms

    def warm_up(self, at_ms: int) -> WarmUp:
        """Which of this engine's figures are still warming up at ``at_ms``
        (:mod:`estimators.warmup`)."""
        return self._warm_up(at_ms, self.first_ping_ms)

    def warm_up_tally(self, tally: Tally) -> WarmUp:
        """Warm-up state of a (possibly merged) tally's figures, judged by its
        ``observed_from_ms`` with this engine's settings."""
        return self._warm_up(tally.at_ms, tally.observed_from_ms)

    def _warm_up(self, at_ms: int, first_ping_ms: int | None) -> WarmUp:
        cfg = self.config
        return warm_up(at_ms, first_ping_ms, cfg.estimate.activity_ms, cfg.warmup_nights,
                       *self._night_functions())

    def period_warm_up(self, tally: Tally) -> PeriodWarmUp:
        """From which night a (possibly merged) tally's migration flows and foreign-SIM
        arrivals are warm (:func:`~estimators.warmup.period_warm_up`, judged by its
        ``observed_from_ms`` with this engine's settings)."""
        cfg = self.config
        mig = cfg.migration
        window, confirm = (mig.window_nights, mig.confirm_nights) if mig is not None else (0, 0)
        gap_ms = round(cfg.foreign.gap_h * HOUR_MS) if cfg.foreign is not None else 0
        return period_warm_up(tally.observed_from_ms, window, confirm, gap_ms,
                              *self._night_functions())

    def _night_functions(self) -> tuple[Callable[[int], int], Callable[[int], int],
                                        Callable[[int], int]]:
        """A night's start and close (UTC ms) and the night of an instant, for
        :mod:`estimators.warmup`."""
        return (self.night_start_ms,
                lambda t: (t + self._offset_at(t) * SECOND_MS) // DAY_MS,
                self.night_close_ms)

    def oldest_evidence_ms(self) -> int | None:
        """The earliest event time the device state still holds evidence of: the devices'
        latest pings and the closes of the nights in their night rings (None: no devices).
        Every ping it stands for came at or after the observation start, so the span from it
        never overstates how long a state restored without its observation start has observed
        (checkpoints of earlier versions, :meth:`restore_state`)."""
        st = self.state
        n = st.n_devices
        if n == 0:
            return None
        ts, _ = st.last_seen()
        oldest = int(ts.min())
        ring = st.ring[:n]
        held = ring != 0
        if held.any():
            slots = st.ring_nights
            last = st.last_night[:n].astype(np.int64)[:, None]
            night = last - np.mod(last - np.arange(slots)[None, :], slots)
            # a night slot says a ping fell before that night's close (not when): its close is
            # the latest such ping could be, so the span is never overstated
            oldest = min(oldest, self.night_close_ms(int(night[held].min())))
        return oldest

    @property
    def nights_on(self) -> bool:
        """Whether nights are evaluated one by one (migration or foreign stays on)."""
        return self.migration is not None or self.foreign is not None

    @property
    def evaluated_night(self) -> int | None:
        """The latest night evaluated (None: nights off or not started)."""
        if self.migration is not None:
            return self.migration.evaluated_night
        if self.foreign is not None:
            return self.foreign.evaluated_night
        return None

    def _next_night(self) -> int:
        night = self.evaluated_night
        assert night is not None
        return night + 1

    def start_nights(self, at_ms: int) -> None:
        """Evaluate nights (migration) from the night that ``at_ms`` falls in, unless started.

        Without it, the first :meth:`ingest` starts them at its earliest ping; the event-time
        windows call it with the stream's first accepted ping, so that where the nights start
        does not depend on how the input was batched. Migration and foreign stays start together.
        """
        if self.nights_on and self.evaluated_night is None:
            _, night, _ = night_of(np.array([at_ms]), self._offset_at(at_ms), self.config.night)
            if self.migration is not None:
                self.migration.evaluated_night = int(night[0]) - 1
            if self.foreign is not None:
                self.foreign.evaluated_night = int(night[0]) - 1

    def night_closes_until(self, limit_ms: int) -> list[int]:
        """The closes (UTC ms) of the nights not evaluated yet, up to ``limit_ms`` included, in
        order; empty without migration and foreign stays, or before the nights have started.

        Every ping before such a close must be ingested before any ping after it: the windows
        hold pings at these closes as they hold them at window ends.
        """
        if self.evaluated_night is None:
            return []
        out, night = [], self._next_night()
        while (close := self.night_close_ms(night)) <= limit_ms:
            out.append(close)
            night += 1
        return out

    def next_night_close_ms(self) -> int | None:
        """Close of the next night to evaluate (None without nights or before the start)."""
        if self.evaluated_night is None:
            return None
        return self.night_close_ms(self._next_night())

    def hold_locations(self, holder: Callable[[], np.ndarray]) -> None:
        """Register a holder of location numbers outside the device state (pings waiting in
        the event-time windows): the cell table never reclaims what ``holder()`` returns."""
        self._location_holders.append(holder)

    def _locations_in_use(self) -> np.ndarray:
        """Every location number referenced: devices' latest pings, the cell plan, holders."""
        _, loc = self.state.last_seen()
        parts = [loc]
        if self.plan is not None:
            parts.append(self.plan.loc)
        parts += [np.asarray(h(), dtype=np.int64) for h in self._location_holders]
        return np.concatenate(parts)

    def retention_nights(self) -> tuple[int, int | None]:
        """Nights of silence after which a device is evicted: (without a usual residence,
        with one); the second is None without migration. See :meth:`evict_quiet`."""
        ring = self.state.ring_nights
        mig = self.config.migration
        return ring, (None if mig is None else mig.lapse_nights + mig.window_nights)

    def evict_quiet(self, at_ms: int, night: int) -> int:
        """Forget the devices that no figure at ``at_ms`` or later can use; returns how many.

        ``night`` is the latest night evaluated (with migration) or begun (without) at
        ``at_ms``. A device is evicted when its latest ping is at least the activity window
        old (it is neither present nor active at any later instant), its latest night ping falls
        ``ring_nights`` or more nights before ``night`` (no later residence or usual-residence
        vote can read its night record: 7 nights, 28 with migration) and, with migration, it
        has no usual residence or has been silent for ``lapse_nights + window_nights`` nights
        (lapsed for a whole window). A forgotten device that pings again is a new device: the
        same figures as if it had been kept, except that a device with a usual residence back
        after that long silence is housed afresh (never reactivated, never a mover). The engine
        calls this at every night evaluation (migration) or at the first tally of each night
        (without), so the devices held are a function of the accepted pings and of event time.
        """
        st = self.state
        n = st.n_devices
        if not self.config.evict or n == 0 or (self.migration is not None
                                               and self.migration.recording):
            return 0
        ts, _ = st.last_seen()
        ring, with_ur = self.retention_nights()
        quiet = ((ts <= at_ms - self.config.estimate.activity_ms)
                 & (st.last_night[:n].astype(np.int64) <= night - ring))
        if self.migration is not None and with_ur is not None and quiet.any():
            _, ping_night, _ = night_of(ts, self.utc_offset_s(ts), self.config.night)
            ur = self.migration.usual_residence(n)
            quiet &= (ur < 0) | (ping_night <= night - with_ur)
        count = int(quiet.sum())
        if count:
            kept = st.evict(quiet)
            if self.migration is not None:
                self.migration.keep_rows(kept)
            self.evicted += count
        return count

    def _update(self, device_key: np.ndarray, ts_ms: np.ndarray, opclass: np.ndarray,
                loc: np.ndarray, home_mcc: np.ndarray | None = None) -> None:
        if len(device_key):
            offset = self.utc_offset_s(ts_ms)
            self.state.update(device_key, ts_ms, opclass, loc, self.cells.region,
                              offset, loc_rank=self.cells.rank,
                              class_rank=self._class_rank())
            if self.foreign is not None and home_mcc is not None:
                self._update_foreign(device_key, np.asarray(ts_ms, dtype=np.int64), loc,
                                     home_mcc, offset)

    def _update_foreign(self, device_key: np.ndarray, ts_ms: np.ndarray, loc: np.ndarray,
                        home_mcc: np.ndarray, offset: np.ndarray | int) -> None:
        """Merge the foreign SIMs' pings into :attr:`foreign`, by the region of their cell."""
        assert self.foreign is not None
        mcc = np.asarray(home_mcc, dtype=np.int64)
        roam = (mcc >= 0) & (mcc != self.config.home_mcc)
        if not roam.any():
            return
        if self.foreign.evaluated_night is None:  # a checkpoint of a version without them
            self.foreign.evaluated_night = self.evaluated_night
        off = offset if np.ndim(offset) == 0 else np.asarray(offset)[roam]
        self.foreign.update(device_key[roam], ts_ms[roam], mcc[roam],
                            self.cells.region[loc[roam]], off)

    def _class_rank(self) -> np.ndarray:
        """Tie-break rank of each class code: operators by name, then ``ROAMER`` (int64[256]);
        a foreign SIM code beats an unknown home code at the same millisecond."""
        rank = np.zeros(256, dtype=np.int64)
        by_name = sorted(range(len(self.operators)), key=lambda code: self.operators[code])
        rank[by_name] = np.arange(1, len(by_name) + 1)
        rank[ROAMER] = 256
        return rank

    def night_close_ms(self, night: int) -> int:
        """When ``night`` (days since 1970 of its local evening) ends, in UTC ms."""
        w = self.config.night
        return self._utc_of_local(round((night * 24 + w.start_h + w.length_h) * HOUR_MS))

    def night_start_ms(self, night: int) -> int:
        """When ``night`` begins, in UTC ms (its local start hour on its evening's day; on a
        night the clocks change, not its close minus its length)."""
        return self._utc_of_local(round((night * 24 + self.config.night.start_h) * HOUR_MS))

    def _utc_of_local(self, local_ms: int) -> int:
        """UTC ms of a local wall-clock time (ms since 1970 as if local were UTC)."""
        guess = local_ms - self._offset_at(local_ms) * SECOND_MS
        return local_ms - self._offset_at(guess) * SECOND_MS

    def _evaluate_night(self, night: int) -> None:
        """Usual residence, migration events and foreign stays of ``night`` (nights in order)."""
        if self.foreign is not None:
            if self.foreign.evaluated_night is None:  # a checkpoint of a version without them
                self.foreign.evaluated_night = night - 1
            self.foreign.evaluate(night)
        if self.migration is None:
            return
        st = self.state
        n = st.n_devices
        ts, _ = st.last_seen()
        _, last_night, _ = night_of(ts, self.utc_offset_s(ts), self.config.night)
        active = (last_night > night - self.migration.config.lapse_nights) & (n > 0)
        votes = st.night_votes(night, self.migration.config.window_nights)
        domestic = st.opclass[:n] != ROAMER
        self.migration.evaluate(night, n, domestic, active, votes.region, votes.nights,
                                votes.seen, votes.first)
        self.evict_quiet(self.night_close_ms(night), night)

    def evaluate_nights_until(self, at_ms: int) -> None:
        """Evaluate every night that has closed by ``at_ms`` (pings before it all ingested)."""
        if self.evaluated_night is None:
            return
        while self.night_close_ms(self._next_night()) <= at_ms:
            self._evaluate_night(self._next_night())

    def export_state(self) -> dict[str, np.ndarray]:
        """Device state as arrays in portable terms (H3 cells, operator names) for checkpoints."""
        return portable_state(self.capture_state())

    def capture_state(self) -> dict[str, np.ndarray]:
        """Copies of the device state with the location numbers as they are and a copy of the
        location table (``loc_cell``, ``loc_region``): ingest may go on while
        :func:`portable_state` turns them into :meth:`export_state`'s arrays (e.g. in a thread).
        Costs copies only (about 0.1 s per million devices; the rest is in
        :func:`portable_state`)."""
        arrays = self.state.export()
        arrays["loc_cell"] = self.cells.cell.copy()
        arrays["loc_region"] = self.cells.region.copy()
        arrays["operators"] = np.array(self.operators, dtype=str)
        arrays["evicted_night"] = np.array(
            [-1 if self._evicted_night is None else self._evicted_night], dtype=np.int64)
        arrays["observed_from"] = np.array(
            [-1 if self.first_ping_ms is None else self.first_ping_ms], dtype=np.int64)
        if self.migration is not None:
            arrays.update(self.migration.export(self.state.n_devices))
        if self.foreign is not None:
            arrays.update(self.foreign.export())
        return arrays

    def restore_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Load :meth:`export_state` output into this engine, which must hold no devices yet.

        A state without foreign stays (written with them off, or by an earlier version) leaves
        :attr:`foreign` empty: it starts at the next night. A state without its observation
        start (an earlier version) is taken as observed since its oldest evidence
        (:meth:`oldest_evidence_ms`): never longer than it was, so restored figures are never
        called warm too early, and a long-running state (devices kept for a week of nights)
        comes out warm. Raises ``ValueError`` when the foreign stays were written with another
        MCC table or region count."""
        # locations are (cell, region) pairs; a checkpoint without ``stamp_regions`` (written
        # before they were) places each cell in the region of its centre, as it was then
        regions = arrays.get("stamp_regions")
        locs = self.cells.locate(np.asarray(arrays["stamp_cells"], dtype=np.uint64),
                                 None if regions is None else np.asarray(regions, dtype=np.int64))
        codes = np.arange(256, dtype=np.int64)
        names = [str(o) for o in np.asarray(arrays["operators"]).tolist()]
        codes[: len(names)] = [self.operator_code(o) for o in names]
        stamp = np.asarray(arrays["stamp"], dtype=np.uint64)
        index = (stamp & np.uint64(MAX_LOCATIONS)).astype(np.int64)
        state = dict(arrays)
        state["stamp"] = (stamp & ~np.uint64(MAX_LOCATIONS)) | locs[index].astype(np.uint64)
        state["opclass"] = codes[np.asarray(arrays["opclass"], dtype=np.int64)].astype(np.uint8)
        self.state.restore(state)
        night = int(np.asarray(arrays.get("evicted_night", [-1])).reshape(-1)[0])
        self._evicted_night = None if night < 0 else night
        if self.migration is not None:
            rows, _ = self.state.index.rows(np.asarray(arrays["key"], dtype=np.uint64))
            self.migration.restore(arrays, rows)
        if self.foreign is not None and "fgn_countries" in arrays:
            self.foreign.restore({k: v for k, v in arrays.items() if k.startswith("fgn")})
        if "observed_from" in arrays:
            first = int(np.asarray(arrays["observed_from"]).reshape(-1)[0])
            self.first_ping_ms = None if first < 0 else first
        else:
            self.first_ping_ms = self.oldest_evidence_ms()

    def set_calibration(self, calibration: Calibration) -> None:
        """Replace the calibration (e.g. after fitting it on a reference period)."""
        self.calibration = calibration
        self._factors = None
        self._tally_factors = {}

    def factors(self) -> FactorMatrix:
        """Calibration resolved for the current regions and operators (cached)."""
        if self._factors is None:
            self._factors = self.calibration.resolve(self.regions, self.operators)
        return self._factors

    def _offset_at(self, at_ms: int) -> int:
        return int(np.asarray(self.utc_offset_s(np.array([at_ms]))).reshape(-1)[0])

    def tally(self, at_ms: int) -> Tally:
        """Canonical device counts at ``at_ms`` (pings after it must not be ingested).

        Tallies of engines fed disjoint devices add up (:func:`estimators.tally.merge_tallies`).
        """
        self.evaluate_nights_until(at_ms)
        tally = tally_state(self.state, self.cells.cell, self.cells.region, tuple(self.operators),
                            at_ms, self._offset_at(at_ms), self.config.estimate)
        if self.migration is not None:
            tally.migration = self.migration.tally(self.state.n_devices)
        if self.foreign is not None:
            tally.foreign = self.foreign.tally()
        tally.observed_from_ms = observation_start(self.first_ping_ms)  # its hour: see warmup
        if self.migration is None:
            night = current_night(at_ms, self._offset_at(at_ms), self.config.night)
            if self._evicted_night is None or night > self._evicted_night:
                self.evict_quiet(at_ms, night)
                self._evicted_night = night
        self.cells.maybe_reclaim()
        return tally.canonical()

    def estimate_tally(self, tally: Tally) -> Estimate:
        """Figures from a (canonical, possibly merged) tally with this engine's calibration."""
        factors = self._tally_factors.get(tally.operators)
        if factors is None:
            factors = self.calibration.resolve(self.regions, tally.operators)
            self._tally_factors[tally.operators] = factors
        return estimate_from_tally(tally, self.regions, factors, self.config.estimate,
                                   self.config.res, self.cell_resolutions[:-1])

    @property
    def cell_resolutions(self) -> tuple[int, ...]:
        """The H3 resolutions cells are published at, coarsest first (the engine's last)."""
        return (*sorted({r for r in self.config.coarse_res if 0 <= r < self.config.res}),
                self.config.res)

    def estimate(self, at_ms: int) -> Estimate:
        """Present and resident population at ``at_ms`` (pings after it must not be ingested)."""
        return self.estimate_tally(self.tally(at_ms))

    def fit_calibration(self, at_ms: int, reference: dict[str, float],
                        reference_rse: float = 0.0) -> list[FactorRow]:
        """Fit per-region factors against a reference population from the state at ``at_ms``."""
        ts, _ = self.state.last_seen()
        cls = self.state.opclass[: self.state.n_devices].astype(np.int64)
        age = at_ms - ts
        active = (age >= 0) & (age < self.config.estimate.activity_ms) & (cls != ROAMER)
        offset = self._offset_at(at_ms)
        home = self.state.home(current_night(at_ms, offset, self.config.night),
                               self.config.estimate.min_nights)
        has_home = home >= 0
        coverage = class_coverage(cls, active, has_home)
        pick = active & has_home
        return fit_factors(self.regions, reference, home[pick], 1.0 / coverage[cls[pick]],
                           reference_rse)


def portable_state(captured: dict[str, np.ndarray], compact: bool = True) -> dict[str, np.ndarray]:
    """:meth:`Engine.capture_state`'s arrays in portable terms: each device's location number
    replaced by an index into ``stamp_cells``/``stamp_regions``, the H3 cells and regions of
    the locations in use (``compact``), or kept as it is with the whole location table as
    ``stamp_cells``/``stamp_regions`` (``compact=False``: cheaper, for a caller that picks rows
    first and renumbers only theirs, as checkpoint deltas do). Pure: reads only ``captured``
    (whose arrays it may reuse)."""
    arrays = dict(captured)
    cell, region = arrays.pop("loc_cell"), arrays.pop("loc_region")
    if not compact:
        arrays["stamp_cells"], arrays["stamp_regions"] = cell, region
        return arrays
    loc = (arrays["stamp"] & np.uint64(MAX_LOCATIONS)).astype(np.int64)
    uniq, inverse = np.unique(loc, return_inverse=True)
    arrays["stamp"] = (arrays["stamp"] & ~np.uint64(MAX_LOCATIONS)) | inverse.reshape(-1).astype(
        np.uint64)
    arrays["stamp_cells"] = cell[uniq]
    arrays["stamp_regions"] = region[uniq]
    return arrays


def device_row_fields(state: dict[str, np.ndarray]) -> list[str]:
    """The names in ``state`` (:func:`portable_state`'s arrays) that hold one row per device,
    in the order of ``state["key"]``: the presence state's rows and, with migration, its
    per-device arrays (foreign SIMs have rows of their own and are not among them)."""
    names = [*PRESENCE_ROW_FIELDS, *(f"mig_{k}" for k in MIGRATION_DEVICE_FIELDS)]
    return [k for k in names if k in state]
