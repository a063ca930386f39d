"""``defacto replay`` and ``calibrate`` (and simulating to files): typed run functions, parsers.

``run_replay``, ``run_calibrate`` and ``run_simulate`` take frozen configs and do the work (the
demo and ``defacto simulate`` call them); the ``add_*_parser`` functions and ``cmd_*`` wrappers
turn argv into those configs. Input problems raise :class:`~stream.contract.InputError`; bad
*rows* never stop a run: they are counted, written to the reject file and summarized in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

import numpy as np
import orjson
from tqdm import tqdm

from estimators.calibration import FactorRow, shrink_factors
from estimators.engine import Engine
from estimators.estimate import Estimate
from estimators.footprints import Footprints, apply_footprints, plan_footprints
from estimators.foreign import CLASSES, ForeignEstimate, estimate_foreign
from estimators.migration import PeriodCounts
from estimators.regions import UNASSIGNED
from estimators.tally import Tally
from estimators.units import HOUR_MS, SECOND_MS
from stream.cli import options
from stream.contract import InputError, Reject
from stream.decode.child_start import PROCESS_MIN_BYTES, drop_spare, usable_cores
from stream.decode.prepare_process import PreparingProcess
from stream.decode.validate import PingDecoder
from stream.estimate.engine_options import (
    WINDOW_LIMITS,
    EngineOptions,
    Limit,
    build_engine,
    check_limits,
    check_window_settings,
    footprint_prior,
)
from stream.estimate.footprint_cache import cached_weights
from stream.estimate.windows import EventTimeWindows, WindowSettings
from stream.gc_tuning import batch_gc_threshold
from stream.publish.background import InOrderThread
from stream.publish.flows import flows_table, period_flows
from stream.publish.foreign import (
    BY_CLASS,
    SNAPSHOT_FIELD,
    add_foreign_line,
    foreign_table,
    period_foreign,
)
from stream.publish.snapshot import compact_json, engine_snapshot
from stream.publish.table import region_table
from stream.simulator import Simulation, load_scenario, simulate, write_simulation
from stream.sources.columnar_files import Period, ReadAhead, read_prepared, start_reading
from stream.sources.file_outcomes import FileOutcomes
from stream.sources.key_file import load_pseudonym_key
from stream.sources.reference_files import (
    Reference,
    ReferencePaths,
    load_population,
    load_reference,
    load_truth,
    write_calibration,
)
from stream.sources.text_files import open_output

Snapshot = dict[str, Any]
T = TypeVar("T")
Reader = Literal["auto", "process", "thread"]
"""Where ping files are read, parsed and prepared: ``process``, a second process
(:mod:`stream.decode.prepare_process`; the engine's process keeps a core of its own),
``thread``, threads of the engine's process, ``auto``, a process for inputs of
:data:`PROCESS_MIN_BYTES` or more on a machine with two cores or more."""
READERS: tuple[Reader, ...] = ("auto", "process", "thread")


@dataclass(frozen=True)
class ReplayConfig:
    """A replay: ping files, reference files, engine and window settings, where output goes.

    ``out``: snapshots JSON Lines (None: none written); ``flows_out``: migration flows and
    foreign-SIM figures, JSON Lines, one object per period (``schemas/flows.schema.json``);
    ``rejects``: reject file (default ``OUT.rejects.jsonl`` or ``rejects.jsonl``);
    ``start_ms``/``end_ms``: only pings in between; ``reader``: see :data:`Reader`.
    """

    pings: tuple[Path, ...]
    reference: ReferencePaths
    engine: EngineOptions = field(default_factory=EngineOptions)
    windows: WindowSettings = field(default_factory=WindowSettings)
    key_file: Path | None = None
    out: Path | None = None
    flows_out: Path | None = None
    rejects: Path | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    reader: Reader = "auto"

    def __post_init__(self) -> None:
        check_window_settings(self.windows)
        _check_reader(self.reader)

    @property
    def rejects_path(self) -> Path:
        """Where rejected rows are written."""
        if self.rejects is not None:
            return self.rejects
        return Path(f"{self.out}.rejects.jsonl") if self.out else Path("rejects.jsonl")


@dataclass
class ReplayResult:
    """What a replay did: the last snapshot, how many were written, the input counts."""

    last_snapshot: Snapshot | None
    snapshots: int
    summary: str
    rejected: int
    period: str
    uncalibrated: list[tuple[str, str]]
    flows: list[dict[str, Any]] = field(default_factory=list)
    flows_written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    foreign: list[dict[str, Any]] = field(default_factory=list)
    foreign_written: list[str] = field(default_factory=list)
    accepted: int = 0
    file_warnings: list[str] = field(default_factory=list)
    """Files with a noticeable share of their rows rejected (:meth:`FileOutcomes.warnings`)."""
    files_all_rejected: list[str] = field(default_factory=list)


def json_line(doc: dict[str, Any]) -> str:
    """One JSON Lines line of a document (:func:`~stream.publish.snapshot.compact_json`)."""
    return compact_json(doc) + "\n"


class RejectFile:
    """Writes rejects to a JSON Lines file, opened on the first reject only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: TextIO | None = None

    def __call__(self, reject: Reject) -> None:
        if self._fh is None:
            self._fh = open_output(self.path)
        self._fh.write(reject.to_json() + "\n")

    def close(self) -> None:
        """Close the file (if a reject opened it)."""
        if self._fh is not None:
            self._fh.close()


PARTIAL_INPUT = 3
"""Exit code of a replay or calibrate that wrote its outputs without an input file rejected whole
(1: no snapshot at all; 2: an input problem stopped it)."""
STARTUP_CHUNKS = 8
"""Chunks (of 100,000 rows) a replay or calibrate reads and parses ahead while it loads the
reference files and builds its engine (a core otherwise idle then; bounded memory: they are
taken once the engine is built, and one chunk is read ahead from then on)."""
SNAPSHOT_QUEUE = 8
"""Window tallies (a copy of the counts: ~0.3-1 MB each on a 6.5 M-ping country file) that may
wait for the snapshot thread: windows closing in a burst do not hold up the next pings."""
HELD_CHUNKS = 8
"""Chunks (of 100,000 rows) read ahead and held while a thread computes the cell plan's
footprint weights (:func:`_engine_for_calibration`): reading overlaps the tessellation, in
bounded memory."""
HELD_PREPARED = 32
"""The same for chunks prepared by a second process (``--reader process``): ~5 MB each (columns,
no text), so more of them may wait (~160 MB), and the other core keeps reading and preparing
until the weights are in force."""


def _check_reader(reader: str) -> None:
    if reader not in READERS:
        raise InputError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")


def _in_process(reader: Reader, pings: Sequence[Path]) -> bool:
    """Whether ``reader`` reads ``pings`` in a second process (see :data:`Reader`). The process
    opens the files itself: a pipe (``<(zcat ...)``) is this process's only, so ``auto`` reads
    it in threads and ``process`` refuses it (:class:`~stream.contract.InputError`)."""
    if reader == "thread":
        return False
    if reader == "process":
        for p in pings:
            with contextlib.suppress(OSError):  # a missing file: the reader words it
                if not stat.S_ISREG(p.stat().st_mode):
                    raise InputError(f"{p}: --reader process reads regular files only (this "
                                     "one is a pipe or a device); use --reader thread or auto")
        return True
    if usable_cores() < 2:
        return False
    try:
        if not all(stat.S_ISREG(p.stat().st_mode) for p in pings):
            return False
        size = sum(p.stat().st_size for p in pings)
    except OSError:  # a missing file: the reader words it
        return False
    return size >= PROCESS_MIN_BYTES


Reading = ReadAhead | PreparingProcess
"""Ping files being read: by a thread of this process, or by a second process."""


def _feed_files(windows: EventTimeWindows, decoder: PingDecoder, pings: Sequence[Path],
                period: Period | None = None, footprints: PendingFootprints | None = None,
                reading: Reading | None = None, outcomes: FileOutcomes | None = None) -> None:
    """Read (as columns), decode and feed ping files with a progress bar on stderr; with
    ``footprints`` (weights being computed), the first chunks are read while they are, and
    decoding starts once they are in force; ``reading``: the chunks of ``pings`` being read
    already (:func:`~stream.sources.columnar_files.start_reading`, or a
    :class:`~stream.decode.prepare_process.PreparingProcess`, which also prepares them);
    ``outcomes``: counts each file's rows read."""
    with tqdm(desc="pings", unit=" rows", unit_scale=True, file=sys.stderr, disable=None) as bar:
        in_process = isinstance(reading, PreparingProcess)
        if in_process:
            chunks = reading.prepared(decoder, draws=footprints is not None)
        else:
            chunks = read_prepared(pings, decoder.prepare_rows, period=period, reading=reading)
        if footprints is not None:
            chunks = _held_until(footprints, chunks, HELD_PREPARED if in_process else HELD_CHUNKS)
        for chunk, prepared in chunks:
            batch = decoder.decode_prepared(prepared)
            windows.feed(batch, chunk.source, rows_read=len(chunk))
            if outcomes is not None:
                outcomes.count_read(chunk.file, len(chunk))
                if windows.start_ms is not None or windows.end_ms is not None:
                    outcomes.count_outside(chunk.file, batch.row[~windows.in_period(batch.ts_ms)])
            bar.update(len(chunk))
            bar.set_postfix(windows=windows.stats.windows, refresh=False)


class PendingFootprints:
    """The border-cell footprint weights of an engine's cell plan
    (:func:`~estimators.footprints.plan_footprints`, through the disk cache
    :func:`~stream.estimate.footprint_cache.cached_weights`), computed by a thread started
    here; in force once :meth:`finish` ran (in the engine's thread, before any ping is
    decoded)."""

    def __init__(self, engine: Engine, rule: str, people: Mapping[str, float] | None) -> None:
        self.engine = engine
        self._result: tuple[str, Footprints | None] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._compute, args=(rule, people),
                                        name="defacto-footprints", daemon=True)
        self._thread.start()

    def _compute(self, rule: str, people: Mapping[str, float] | None) -> None:
        try:
            self._result = plan_footprints(self.engine, rule, people, cached_weights)
        except BaseException as exc:  # raised in the engine's thread by finish()
            self._error = exc

    def done(self) -> bool:
        """Whether the weights are computed (or failed)."""
        return not self._thread.is_alive()

    def finish(self) -> None:
        """Wait for the weights and put them in force (once; again: nothing). Raises what
        computing or applying them raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._result is not None:
            _rule, fp = self._result
            self._result = None
            if fp is not None:
                apply_footprints(self.engine, fp)


def _held_until(footprints: PendingFootprints, chunks: Iterator[T], hold: int) -> Iterator[T]:
    """``chunks``, of which up to ``hold`` are read while ``footprints`` are computed, and all
    handed out once they are in force. An error of the reader comes after the chunks before it
    (as :func:`~stream.sources.columnar_files.read_prepared`), once the footprints are in force."""
    held: list[T] = []
    error: BaseException | None = None
    try:
        for item in chunks:
            held.append(item)
            if len(held) >= hold or footprints.done():
                break
    except BaseException as exc:
        error = exc
    footprints.finish()
    yield from held
    if error is not None:
        raise error
    yield from chunks


def _engine_for_calibration(options: EngineOptions, reference: Reference,
                            people: Mapping[str, float]) -> tuple[Engine, PendingFootprints | None]:
    """:func:`~stream.estimate.engine_options.build_engine` for ``defacto calibrate`` (no
    calibration, border cells spread by ``people``), its footprint weights left to a thread
    (None: nothing to compute, no cell plan): the same engine once
    :meth:`PendingFootprints.finish` ran. With ``people`` at hand the rule in force is the
    option's, so build_engine has nothing to warn about."""
    rule, prior = footprint_prior(options, reference, calibrated=False, people=people)
    engine = build_engine(replace(options, footprints="site"), reference, calibrated=False,
                          people=people)
    if reference.cell_plan is None or rule == "site":
        return engine, None
    return engine, PendingFootprints(engine, rule, prior)


def _period(start_ms: int | None, end_ms: int | None, lateness_ms: int,
            skipped: list[str]) -> Period | None:
    """What a run with ``--from``/``--to`` need not read (see
    :class:`~stream.sources.columnar_files.Period`); notes of what was skipped go to ``skipped``."""
    if start_ms is None and end_ms is None:
        return None

    def note(path: str, first: int, last: int | None) -> None:
        if last is None:
            skipped.append(f"{path}: not read from line {first:,} on (past --to + lateness)")
        else:
            skipped.append(f"{path}: lines {first:,}..{last:,} not read (before --from - lateness)")

    return Period(start_ms, end_ms, lateness_ms, note)


def _while_reading(pings: Sequence[Path], start_ms: int | None, end_ms: int | None,
                   lateness_ms: int, run: Callable[[Period | None, list[str], Reading], T],
                   reader: Reader = "auto") -> T:
    """``run(period, skipped, reading)`` with the ping files being read from the start (by a
    thread, or a second process: ``reader``): the first chunks are read and parsed while ``run``
    loads the reference files and builds the engine; the reading thread or process is stopped
    however ``run`` ends. The garbage collector is tuned for batches meanwhile
    (:func:`~stream.gc_tuning.batch_gc_threshold`)."""
    skipped: list[str] = []
    period = _period(start_ms, end_ms, lateness_ms, skipped)
    with batch_gc_threshold():
        if _in_process(reader, pings):
            reading: Reading = PreparingProcess(pings, period, hold=STARTUP_CHUNKS)
        else:
            drop_spare()  # the process the command started in case: not needed
            reading = start_reading(pings, period=period, hold=STARTUP_CHUNKS)
        try:
            return run(period, skipped, reading)
        finally:
            reading.close()


def run_replay(config: ReplayConfig) -> ReplayResult:
    """Replay ping files in event-time order, writing a snapshot at every window end.

    Raises :class:`~stream.contract.InputError` for bad files or options.
    """
    return _while_reading(config.pings, config.start_ms, config.end_ms,
                          config.windows.lateness_ms,
                          lambda period, skipped, reading: _replay(config, period, skipped, reading),
                          config.reader)


def _replay(config: ReplayConfig, period: Period | None, skipped: list[str],
            reading: Reading) -> ReplayResult:
    """:func:`run_replay` once its ping files are being read (``reading``)."""
    reference = load_reference(config.reference)
    engine = build_engine(config.engine, reference)
    secret = load_pseudonym_key(config.key_file)
    out_fh = open_output(config.out) if config.out else None
    flows = FlowsWriter(config.flows_out, engine, config.engine.k)
    reject_file = RejectFile(config.rejects_path)
    outcomes = FileOutcomes(config.pings)
    last: list[Snapshot] = []

    def write(boundary_ms: int, tally: Tally) -> None:
        estimate = engine.estimate_tally(tally)
        snap = engine_snapshot(engine, boundary_ms, reference.registry, estimate, tally,
                               cells_as_json=True)
        add_foreign_line(snap, flows.foreign_line(tally))
        last[:] = [snap]
        if out_fh is not None:
            out_fh.write(json_line(snap))
        flows.add(tally, estimate)

    try:
        # the tally (a copy of the counts) is taken here, at the window's close; estimating,
        # building and writing its snapshot overlap the next pings' reading and ingest
        with InOrderThread("defacto-snapshots", SNAPSHOT_QUEUE) as writer:
            def publish(boundary_ms: int) -> None:
                tally = engine.tally(boundary_ms)
                writer.submit(lambda: write(boundary_ms, tally))

            windows = EventTimeWindows(engine, config.windows, on_window=publish,
                                       on_reject=outcomes.wrap(reject_file),
                                       start_ms=config.start_ms, end_ms=config.end_ms)
            _feed_files(windows, PingDecoder(engine, secret, config.windows.max_future_ms),
                        config.pings, period, reading=reading, outcomes=outcomes)
            windows.finish()
    finally:
        reject_file.close()
        flows.close()
        if out_fh is not None:
            out_fh.close()
    if last:  # the last snapshot as a plain document (its cells were written as JSON text)
        last[0]["cells"] = orjson.loads(orjson.dumps(last[0]["cells"]))
    stats = windows.stats
    return ReplayResult(last[0] if last else None, stats.windows, stats.summary(),
                        sum(stats.rejected.values()), windows.describe_period(),
                        engine.factors().uncalibrated if reference.calibration else [],
                        flows.latest(), flows.written(), skipped, flows.latest_foreign(),
                        flows.written_foreign(), stats.accepted, outcomes.warnings(),
                        outcomes.all_rejected())


def usual_residents_doc(fe: ForeignEstimate, region_ids: Sequence[str]) -> dict[str, Any]:
    """The part of a period's published document (:func:`~stream.publish.foreign.period_foreign`)
    that a snapshot's long-stayers line reads (:func:`~stream.publish.foreign.add_foreign_line`):
    per region, all countries' ``usual_resident`` devices and people, rounded as there (None
    where not finite). The same values without building the whole document (every country,
    measure and stay class of every region), which a replay would throw away at every snapshot."""
    figure = fe.figures["usual_resident"]
    all_countries = len(fe.countries) - 1
    by_class = (len(CLASSES),) if "usual_resident" in BY_CLASS else ()

    def counts(values: np.ndarray) -> list[int | None]:
        line = np.asarray(values)[(all_countries, slice(None), *by_class)][:len(region_ids)]
        finite = np.isfinite(line)
        out: list[int | None] = np.where(finite, np.rint(line), 0).astype(np.int64).tolist()
        for i in np.flatnonzero(~finite).tolist():
            out[i] = None
        return out

    devices, people = counts(figure.devices), counts(figure.people)
    return {"regions": {rid: {"usual_resident": {"devices": d, "people": p}}
                        for rid, d, p in zip(region_ids, devices, people, strict=True)}}


class FlowsWriter:
    """Writes each period's flows once per dating: dated by detection at the first snapshot
    after the period closed, dated by effective night at the first snapshot after it settled;
    at the end, what is still open or revisable (``final: false``). Foreign-SIM periods
    (``topic: "foreign"``) likewise, once settled, and at the end those still open or
    settling. Without a path it only keeps the latest ones."""

    def __init__(self, path: Path | None, engine: Engine, k: int) -> None:
        self.engine = engine
        self.k = k
        self._fh = open_output(path) if path else None
        self._docs: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._last: tuple[Tally, Estimate] | None = None
        self._foreign: dict[tuple[str, int], dict[str, Any]] = {}
        self._foreign_last: Tally | None = None

    def _foreign_doc(self, tally: Tally, index: int) -> dict[str, Any]:
        cfg = self.engine.config
        assert tally.foreign is not None and cfg.foreign is not None
        return period_foreign(tally.foreign.periods[index], tally.foreign.countries,
                              self.engine.regions, tally.at_ms, cfg.foreign_figures,
                              cfg.foreign, self.engine.period_warm_up(tally),
                              self.engine.country_factors)

    def foreign_line(self, tally: Tally) -> dict[str, dict[str, Any]] | None:
        """The foreign documents a snapshot's long-stayers line comes from (None: foreign stays
        off); also writes the foreign periods settled since the last snapshot."""
        cfg = self.engine.config
        if tally.foreign is None or cfg.foreign is None:
            return None
        self._foreign_last = tally
        for i, p in enumerate(tally.foreign.periods):
            key = (p.kind, p.number)
            if p.settled and key not in self._foreign:
                self._write_foreign(key, self._foreign_doc(tally, i))
        period = tally.foreign.published().get(SNAPSHOT_FIELD)
        if period is None:
            return {}
        return {SNAPSHOT_FIELD: usual_residents_doc(
            estimate_foreign(period, tally.foreign.countries, self.engine.regions,
                             self.engine.country_factors, cfg.foreign_figures,
                             measures=("usual_resident",)),
            self.engine.regions.ids)}

    def _write_foreign(self, key: tuple[str, int], doc: dict[str, Any]) -> None:
        self._foreign[key] = doc
        if self._fh is not None:
            self._fh.write(json_line(doc))

    def written_foreign(self) -> list[str]:
        """Labels of the foreign-SIM periods written, in order."""
        return [doc["period"] for doc in self._foreign.values()]

    def latest_foreign(self) -> list[dict[str, Any]]:
        """The newest foreign-SIM period of each kind (week, month)."""
        newest: dict[str, dict[str, Any]] = {}
        for (kind, _number), doc in sorted(self._foreign.items(), key=lambda kv: kv[0][1]):
            newest[kind] = doc
        return list(newest.values())

    def _doc(self, period: PeriodCounts, tally: Tally, estimate: Estimate) -> dict[str, Any]:
        assert self.engine.config.migration is not None
        return period_flows(period, estimate, self.engine.regions, self.k,
                            self.engine.config.migration, self.engine.period_warm_up(tally))

    def add(self, tally: Tally, estimate: Estimate) -> None:
        """A snapshot's tally and estimate: write what closed or settled since the last one."""
        if tally.migration is None:
            return
        self._last = (tally, estimate)
        for view in tally.migration.final_views():
            key = (view.dating, view.kind, view.number)
            if key not in self._docs:
                self._write(key, self._doc(view, tally, estimate))

    def _write(self, key: tuple[str, str, int], doc: dict[str, Any]) -> None:
        self._docs[key] = doc
        if self._fh is not None:
            self._fh.write(json_line(doc))

    def close(self) -> None:
        """Write the periods still open or revisable at the last snapshot, then close the file."""
        last = self._foreign_last
        if last is not None and last.foreign is not None:
            for i, p in enumerate(last.foreign.periods):
                if (p.kind, p.number) not in self._foreign:
                    self._write_foreign((p.kind, p.number), self._foreign_doc(last, i))
        if self._last is not None:
            tally, estimate = self._last
            assert tally.migration is not None
            for p in tally.migration.periods:
                for view in (p, p.by_effective()):
                    key = (view.dating, view.kind, view.number)
                    if key not in self._docs:
                        self._write(key, self._doc(view, tally, estimate))
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def written(self) -> list[str]:
        """Labels of the periods written, in order (``2026-W10``, ``2026-03 by effective``)."""
        return [doc["period"] + (" by effective" if doc["dating"] == "effective" else "")
                for doc in self._docs.values()]

    def latest(self) -> list[dict[str, Any]]:
        """The newest period of each kind (week, month) dated by detection."""
        newest: dict[str, dict[str, Any]] = {}
        for (dating, kind, _number), doc in sorted(self._docs.items(), key=lambda kv: kv[0][2]):
            if dating == "detected":
                newest[kind] = doc
        return list(newest.values())


CALIBRATE_LIMITS: dict[str, Limit] = {
    "lateness_ms": WINDOW_LIMITS["lateness_ms"],
    "reference_rse": Limit("--reference-rse", "relative standard error of the reference figures",
                           0, 1, open_hi=True),
}
"""The range of the numeric :class:`CalibrateConfig` fields."""


@dataclass(frozen=True)
class CalibrateConfig:
    """A calibration: pings of a reference period against a reference population."""

    pings: tuple[Path, ...]
    reference_population: Path
    out: Path
    reference: ReferencePaths
    engine: EngineOptions = field(default_factory=EngineOptions)
    lateness_ms: int = WindowSettings.lateness_ms
    reference_rse: float = 0.0
    pool_siblings: bool = True
    """Shrink sibling regions' factors toward their pooled factor by how much of their spread
    ``reference_rse`` explains (:func:`~estimators.calibration.shrink_factors`; nothing moves
    with ``reference_rse`` 0)."""
    key_file: Path | None = None
    rejects: Path | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    reader: Reader = "auto"
    """See :data:`Reader`."""

    def __post_init__(self) -> None:
        check_limits(self, CALIBRATE_LIMITS)
        _check_reader(self.reader)


@dataclass
class CalibrateResult:
    """The fitted factors and what the input gave."""

    rows: list[FactorRow]
    summary: str
    period: str
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files_all_rejected: list[str] = field(default_factory=list)


def run_calibrate(config: CalibrateConfig) -> CalibrateResult:
    """Fit people-per-device factors per region at the end of the reference period.

    The file keeps each region's reference population (``people``): with ``--footprints
    reference`` it spreads border cells' devices here and in the runs that use the file.

    Raises :class:`~stream.contract.InputError` for bad files or options, or when the period
    holds no accepted ping.
    """
    return _while_reading(config.pings, config.start_ms, config.end_ms, config.lateness_ms,
                          lambda period, skipped, reading: _calibrate(config, period, skipped,
                                                                      reading),
                          config.reader)


def _calibrate(config: CalibrateConfig, period: Period | None, skipped: list[str],
               reading: Reading) -> CalibrateResult:
    """:func:`run_calibrate` once its ping files are being read (``reading``)."""
    reference = load_reference(config.reference)
    population = load_population(config.reference_population, reference.regions, minimum=1)
    # border cells spread by the reference population at hand (written with the factors); the
    # footprints are computed while the first chunks are read
    engine, footprints = _engine_for_calibration(config.engine, reference, population)
    secret = load_pseudonym_key(config.key_file)
    settings = WindowSettings(every_ms=HOUR_MS, lateness_ms=config.lateness_ms)
    reject_file = RejectFile(config.rejects or Path(f"{config.out}.rejects.jsonl"))
    outcomes = FileOutcomes(config.pings)
    windows = EventTimeWindows(engine, settings, on_window=lambda _at: None,
                               on_reject=outcomes.wrap(reject_file), start_ms=config.start_ms,
                               end_ms=config.end_ms)
    try:
        _feed_files(windows, PingDecoder(engine, secret, settings.max_future_ms), config.pings,
                    period, footprints, reading, outcomes)
    finally:
        reject_file.close()
        if footprints is not None:
            footprints.finish()  # (an error of the reader first: wait for the thread)
    windows.apply_all()
    last_ms = windows.stats.last_ts_ms
    if last_ms is None:
        stats = windows.stats
        where = " in --from/--to" if config.start_ms is not None or config.end_ms is not None \
            else ""
        kept = f" -> {reject_file.path}" if stats.rejected else ""
        why = outcomes.main_reason()
        raise InputError(f"no accepted pings{where} ({stats.summary()}{kept})"
                         + (f"; {why}" if why else ""))
    at_ms = last_ms + 1 if config.end_ms is None else min(config.end_ms, last_ms + 1)
    warnings = _short_period(windows.stats.first_ts_ms, at_ms, config.engine)
    try:
        rows = engine.fit_calibration(at_ms, population, config.reference_rse)
        if config.pool_siblings:
            rows = shrink_factors(engine.regions, rows, config.reference_rse)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if reference.cell_plan is not None:  # the rule places border cells' devices: record it
        rule, _ = footprint_prior(config.engine, reference, calibrated=False, people=population)
        rows = [replace(r, footprints=rule) for r in rows]
    write_calibration(config.out, rows)
    summary = windows.stats.summary()
    if windows.stats.rejected:
        summary += f" -> {reject_file.path}"
    return CalibrateResult(rows, summary, windows.describe_period(), skipped,
                           outcomes.warnings() + warnings, outcomes.all_rejected())


def _short_period(first_ms: int | None, at_ms: int, options: EngineOptions) -> list[str]:
    """Why a calibration period is too short for its factors to hold (empty: it is not): the
    factors count the devices active at its end (seen within ``--activity``) with a home (a
    night seen); a period shorter than that misses devices that are there but were not seen yet,
    so its factors come out too high."""
    if first_ms is None:
        return []
    covered_ms = at_ms - first_ms
    activity_ms = options.activity_ms
    if covered_ms + HOUR_MS > activity_ms:  # within the hour: a day of pings from 00:00:04
        return []
    return [f"the calibration period's pings span {covered_ms / HOUR_MS:.1f} h, less than "
            f"--activity ({activity_ms / HOUR_MS:g} h): devices that are there but did not ping "
            "yet are missing from the counts, so the factors come out too high; calibrate over "
            "at least --activity (a day or more, with whole nights)"]


SIMULATE_LIMITS: dict[str, Limit] = {
    "scale": Limit("--scale", "fraction of the real population", 0, 10, open_lo=True),
    "days": Limit("--days", "days to simulate", 0, 366, open_lo=True),
    "seed": Limit("--seed", "random seed", 0, (1 << 63) - 1, integer=True),
}
"""The range of the numeric :class:`SimulateConfig` fields (the demo's too)."""

SPEED = Limit("--speed", "simulated seconds per second, 0 = as fast as possible", 0, 1_000_000)
"""``--speed`` of ``simulate --kafka`` and the live demo."""


@dataclass(frozen=True)
class SimulateConfig:
    """A simulation: scenario (name or TOML path), size, length, seed, and where it goes.

    Ranges: :data:`SIMULATE_LIMITS` (raises :class:`~stream.contract.InputError`)."""

    scenario: str
    scale: float = 0.01
    days: float = 3.0
    seed: int = 1
    out: Path | None = None
    file_format: str = "jsonl"
    gz: bool = False

    def __post_init__(self) -> None:
        check_limits(self, SIMULATE_LIMITS)


def run_simulate(config: SimulateConfig) -> Simulation:
    """Simulate a scenario; with ``out``, write its files (names printed to stderr).

    Returns the :class:`~stream.simulator.Simulation`. Raises
    :class:`~stream.contract.InputError` for an unknown or invalid scenario.
    """
    try:
        scenario = load_scenario(config.scenario)
        sim = simulate(scenario, scale=config.scale, days=config.days, seed=config.seed)
    except (OSError, ValueError) as exc:
        raise InputError(str(exc)) from None
    if config.out:
        try:
            paths = write_simulation(sim, config.out, fmt=config.file_format, gz=config.gz,
                                     progress=True)
        except OSError as exc:
            raise InputError(f"{config.out}: cannot write ({exc.strerror or exc})") from None
        for name, path in paths.items():
            print(f"{name:>10}: {path}", file=sys.stderr)
        rse = sim.scenario.reference_rse
        if rse > 0 and "reference" in paths:
            print(f"defacto: {paths['reference']} carries the scenario's census error, "
                  f"{rse:.1%} per region (reference_rse): calibrate --reference-rse {rse:g} "
                  "states it", file=sys.stderr)
    return sim


# ----------------------------------------------------------------------------------------------
# Command line


def add_simulation_options(p: argparse.ArgumentParser) -> None:
    """``--scale``, ``--days`` and ``--seed`` (``defacto simulate`` and ``demo``)."""
    lim = SIMULATE_LIMITS
    p.add_argument("--scale", type=lim["scale"].arg, default=SimulateConfig.scale,
                   help="fraction of real size, in (0, 10] (default %(default)s)")
    p.add_argument("--days", type=lim["days"].arg, default=SimulateConfig.days,
                   help=f"days to simulate, {lim['days'].allowed()} (default %(default)g)")
    p.add_argument("--seed", type=lim["seed"].arg, default=SimulateConfig.seed,
                   help=f"random seed, {lim['seed'].allowed()} (default %(default)s)")


def _key_file(args: argparse.Namespace) -> Path | None:
    return Path(args.key_file) if args.key_file else None


def warn_uncalibrated(pairs: list[tuple[str, str]]) -> None:
    """Warn (stderr) about region/operator pairs that had no calibration factor. The pings
    outside every region (``unassigned``) have no reference population to be fitted to: they
    count devices unless the file names them (README, calibration), and are not warned about."""
    pairs = [(r, o) for r, o in pairs if r != UNASSIGNED]
    if pairs:
        shown = ", ".join(f"{r}/{o}" for r, o in pairs[:5])
        print(f"defacto: warning: {len(pairs)} region/operator pair(s) have no calibration factor "
              f"and count 1 person per device (e.g. {shown})", file=sys.stderr)


def _hint_cells(cells: Path | None, summary: str) -> None:
    """Say why cell-id pings were all unknown when no cell plan was given."""
    if cells is None and "unknown_cell" in summary:
        print("defacto: hint: no --cells given: cell-id pings are placed through the operators' "
              "cell plan (--cells FILE); without it only lat/lon pings count", file=sys.stderr)


def cmd_replay(args: argparse.Namespace) -> int:
    """``defacto replay``: snapshots over ping files."""
    start, end = options.period(args)
    config = ReplayConfig(
        pings=tuple(map(Path, args.pings)), reference=options.reference_paths(args),
        engine=options.engine_options(args), windows=options.window_settings(args),
        key_file=_key_file(args), out=Path(args.out) if args.out else None,
        flows_out=Path(args.flows_out) if args.flows_out else None,
        rejects=Path(args.rejects) if args.rejects else None, start_ms=start, end_ms=end,
        reader=args.reader)
    outputs = [path for path in (config.out, config.flows_out) if path is not None]
    before = {path: _stamp(path) for path in outputs}
    try:
        result = run_replay(config)
    except InputError as exc:  # outputs this run wrote (not an earlier run's) are incomplete
        partial = [f"{path} ({_lines(path):,} line(s))" for path in outputs
                   if _stamp(path) != before[path] and path.is_file() and path.stat().st_size]
        if partial:
            raise InputError(f"{exc}; written before it, incomplete: {', '.join(partial)}") \
                from None
        raise
    rej = f" -> {config.rejects_path}" if result.rejected else ""
    print(f"defacto: {result.summary}{rej}", file=sys.stderr)
    for warning in result.file_warnings:
        print(f"defacto: warning: {warning}", file=sys.stderr)
    _hint_cells(config.reference.cells, result.summary)
    for note in result.skipped:
        print(f"defacto: {note}", file=sys.stderr)
    print(f"defacto: {result.snapshots} snapshot(s) over {result.period}"
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    if args.flows_out:
        print(f"defacto: migration flows of {len(result.flows_written)} period(s) -> {args.flows_out}",
              file=sys.stderr)
        if result.foreign_written:
            print(f"defacto: foreign SIMs of {len(result.foreign_written)} period(s) -> "
                  f"{args.flows_out}", file=sys.stderr)
    warn_uncalibrated(result.uncalibrated)
    if result.accepted == 0 or result.last_snapshot is None:
        period = " in --from/--to" if start is not None or end is not None else ""
        print(f"defacto: no snapshot: the input has no accepted pings{period}", file=sys.stderr)
        return 1
    if not args.out or args.table:
        snap = result.last_snapshot
        truth = load_truth(args.truth).get(snap["at"]) if args.truth else None
        print(f"Snapshot at {snap['at']} (horizon {config.engine.horizon_ms // SECOND_MS} s, "
              f"k = {args.k})")
        print(region_table(snap, truth))
        if not args.flows_out:
            for doc in result.flows:
                print()
                print(flows_table(doc))
            for doc in result.foreign:
                print()
                print(foreign_table(doc))
    return _whole_files_rejected(result.files_all_rejected)


def _stamp(path: Path) -> tuple[int, int] | None:
    """A file's modification time and size (None: no such file): whether a run wrote it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _lines(path: Path) -> int:
    """Lines of a file (counted in blocks)."""
    with open(path, "rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))


def _whole_files_rejected(paths: list[str]) -> int:
    """Exit code :data:`PARTIAL_INPUT`, said in one line, when some input file had every row
    rejected (its pings are missing from every figure written); else 0."""
    if not paths:
        return 0
    print(f"defacto: exit code {PARTIAL_INPUT}: {len(paths)} input file(s) rejected whole "
          f"({', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''}); every output is "
          "written without their pings", file=sys.stderr)
    return PARTIAL_INPUT


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``defacto calibrate``: fit factors on a reference period against a reference population."""
    start, end = options.period(args)
    config = CalibrateConfig(
        pings=tuple(map(Path, args.pings)), reference_population=Path(args.reference),
        out=Path(args.out), reference=options.reference_paths(args),
        engine=options.engine_options(args), lateness_ms=args.lateness,
        reference_rse=args.reference_rse, pool_siblings=args.pool_siblings,
        key_file=_key_file(args),
        rejects=Path(args.rejects) if args.rejects else None, start_ms=start, end_ms=end,
        reader=args.reader)
    result = run_calibrate(config)
    print(f"defacto: {result.summary}", file=sys.stderr)
    _hint_cells(config.reference.cells, result.summary)
    for note in result.skipped:
        print(f"defacto: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"defacto: warning: {warning}", file=sys.stderr)
    print(f"defacto: {len(result.rows)} factor(s) fitted on {result.period} -> {args.out}",
          file=sys.stderr)
    return _whole_files_rejected(result.files_all_rejected)


def add_replay_parser(sub: Any) -> None:
    """``defacto replay``."""
    p = sub.add_parser("replay", help="run the engine over ping files and write snapshots",
                       description="Replay ping files in event-time order; write a snapshot "
                                   "at every --every boundary (UTC-aligned).")
    p.add_argument("pings", nargs="+", help="ping files (.jsonl/.csv, optionally .gz); several "
                   "files are one input, merged by event time")
    options.add_reference_options(p)
    options.add_every_option(p)
    p.add_argument("--out", help="snapshots JSON Lines file (default: print a region table)")
    p.add_argument("--flows-out", help="migration flows and foreign-SIM figures, JSON Lines, one "
                   "object per ISO week and month (default: print the latest week's and month's "
                   "with the table)")
    p.add_argument("--table", action="store_true", help="also print the table with --out")
    p.add_argument("--rejects", help="reject file (default OUT.rejects.jsonl or rejects.jsonl)")
    p.add_argument("--truth", help="truth.jsonl from `defacto simulate`: adds true columns")
    options.add_engine_options(p)
    _add_reader_option(p)
    p.set_defaults(func=cmd_replay)


def add_calibrate_parser(sub: Any) -> None:
    """``defacto calibrate``."""
    p = sub.add_parser("calibrate", help="fit calibration factors on a reference period",
                       description="Fit people-per-device factors per region from the pings "
                                   "of a reference period against a reference population.")
    p.add_argument("pings", nargs="+", help="ping files of the reference period (several files "
                   "are one input, merged by event time)")
    p.add_argument("--reference", required=True,
                   help="reference population CSV (region,registered): usual residents from a "
                        "source independent of the registry you compare with")
    p.add_argument("--reference-rse", type=CALIBRATE_LIMITS["reference_rse"].arg, default=0.0,
                   help="relative standard error of the reference figures (default 0); "
                        "a census office states it for its figures")
    p.add_argument("--pool-siblings", action=argparse.BooleanOptionalAction, default=True,
                   help="shrink sibling regions' factors toward their pooled factor by how much "
                        "of their spread --reference-rse explains (Fay-Herriot; default on, "
                        "a no-op with --reference-rse 0)")
    p.add_argument("--out", required=True, help="calibration CSV to write")
    p.add_argument("--rejects", help="reject file (default OUT.rejects.jsonl)")
    options.add_engine_options(p, calibrate=True)
    _add_reader_option(p)
    p.set_defaults(func=cmd_calibrate)


def _add_reader_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reader", choices=READERS, default="auto",
                   help="where the ping files are read, parsed and checked: in a second process "
                        "(the engine keeps a core of its own), in threads of this one, or auto "
                        f"(default: a process for {PROCESS_MIN_BYTES >> 20} MiB of input or more "
                        "on two cores or more)")
