"""Reading, parsing and preparing ping files in a second process, for replay and calibrate.

In one process the stages of a file run share one interpreter lock: the engine's thread, the
reading thread (blocks, checks) and the preparing thread (contract checks, cell-plan rows,
device keys, lat/lon binning) take turns, and only polars' parse runs beside them. Here a child
process reads, parses and prepares the chunks exactly as
:func:`~stream.sources.columnar_files.read_prepared` would with the parent's decoder, and hands
each chunk's prepared columns to the parent, which finishes them
(:meth:`~stream.decode.validate.PingDecoder.decode_prepared`: operator codes, cell-table
locations) and ingests them. The child is a fresh interpreter (``python -c``, importing from the
parent's ``sys.path``): nothing of the parent's threads is inherited, and unlike
``multiprocessing``'s spawn it never runs the caller's main module again.

What crosses the pipe: per chunk, its row count, each row's file and line (for the sources of
rejects, compressed when lines follow each other), the rejects found while preparing, and the
prepared groups with their arrays (pickle protocol 5, the arrays as out-of-band buffers, received
into writable memory); the fields of a row only where the parent may reject it
(:meth:`~stream.decode.validate._Group.detach`). Not the input text: a row's own text is needed
only for its reject, and those are worded in the child.

Lifecycle: :class:`PreparingProcess` takes the child the ``defacto`` command started at its
entry, or starts one (:mod:`stream.decode.child_start`), and gives it its job at once (it reads
and parses ahead, up to ``hold`` chunks, while the parent loads its reference files and builds
its engine);
:meth:`PreparingProcess.prepared` sends the decoder's settings (:class:`PrepareSpec`) and yields
the chunks; :meth:`PreparingProcess.close` stops the child however the run ends (it ignores
SIGINT: Ctrl-C reaches the parent, which stops it). An error of the child's reading or preparing
comes after the chunks before it, as in one process: an :class:`~stream.contract.InputError`
with its message, anything else as a ``RuntimeError`` with the child's traceback; a child that
dies (killed, out of memory) ends the run with a ``RuntimeError`` naming its exit code.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import subprocess
import threading
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from estimators.engine import MAX_OPERATORS
from stream.contract import InputError
from stream.decode.child_start import start_child, take_spare
from stream.decode.validate import PingDecoder, PreparedRows, _Group
from stream.gc_tuning import batch_gc_threshold
from stream.sources.columnar_files import CHUNK_CHARS, Period, ReadAhead, read_prepared, start_reading

_STOP_WAIT_S = 2.0
"""How long :meth:`PreparingProcess.close` waits for the child to end by itself before it is
terminated (and as long again before it is killed)."""


@dataclass(frozen=True)
class PrepareSpec:
    """What the child needs to prepare rows as the parent's decoder would: the cell plan's keys
    (``plan_rows``: ``(operator, cell) -> row``; the child builds its
    :class:`~stream.decode.validate.PlanTable`), the operators registered so far, the decoder's
    key and clock settings, and whether device draw hashes are needed (``draws``: the plan
    spreads border cells, now or once footprints are in force). Not the regions: lat/lon pings
    are binned by the parent."""

    plan_rows: dict[tuple[str, str], int] | None
    operators: tuple[str, ...]
    secret: bytes = field(repr=False)
    max_future_ms: int
    now_ms: int | None
    draws: bool

    @classmethod
    def of(cls, decoder: PingDecoder, draws: bool = False) -> PrepareSpec:
        """The spec of ``decoder`` (``draws`` or its plan spreading border cells already)."""
        engine = decoder.engine
        plan = engine.plan
        return cls(plan.row if plan is not None else None, tuple(engine.operators),
                   decoder.secret, decoder.max_future_ms, decoder.now_ms,
                   draws or decoder.spreads())

    def decoder(self) -> PingDecoder:
        """A decoder whose :meth:`~PingDecoder.prepare_rows` gives what the parent's would, but
        for the lat/lon binning, left to the parent's
        :meth:`~PingDecoder.decode_prepared` (the same locations)."""
        view = _EngineView(None if self.plan_rows is None
                           else _PlanView(self.plan_rows, self.draws), self.operators)
        decoder = PingDecoder(view, self.secret, self.max_future_ms, self.now_ms)  # type: ignore[arg-type]
        decoder.bin_points = False  # the parent bins lat/lon: this process is the busier one
        return decoder


@dataclass
class _PlanView:
    """The part of a cell plan that preparing reads: its keys, and whether it spreads."""

    row: dict[tuple[str, str], int]
    spreads: bool

    @property
    def footprints(self) -> object | None:
        return True if self.spreads else None


@dataclass
class _EngineView:
    """The part of an engine that preparing reads (:meth:`PingDecoder.prepare_rows`, which
    bins no lat/lon ping here: no cell table)."""

    plan: _PlanView | None
    operators: tuple[str, ...]


@dataclass
class ShippedChunk:
    """A chunk prepared in the child, as the parent's run needs it beside its prepared rows:
    its length and each row's ``FILE:LINE`` (:meth:`source`)."""

    paths: list[str]
    n: int
    file: np.ndarray | int
    line: np.ndarray | int

    def __len__(self) -> int:
        return self.n

    def source(self, i: int) -> str:
        """``FILE:LINE`` of row ``i``."""
        file = self.file if isinstance(self.file, int) else int(self.file[i])
        line = self.line + i if isinstance(self.line, int) else int(self.line[i])
        return f"{self.paths[file]}:{line}"


def _compact_rows(file: np.ndarray, line: np.ndarray) -> tuple[np.ndarray | int, np.ndarray | int]:
    """``file`` as one number when every row has it; ``line`` as the first when they follow."""
    n = len(line)
    one_file: np.ndarray | int = int(file[0]) if n and (file == file[0]).all() else file
    follow = n and int(line[-1]) - int(line[0]) == n - 1 and (np.diff(line) == 1).all()
    return one_file, (int(line[0]) if follow else line)


# -- pipe framing ------------------------------------------------------------------------------


def _send(conn: Connection, item: Any) -> None:
    """Pickle ``item`` (protocol 5) and send it: the pickle, then each out-of-band buffer."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(item, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    conn.send((head, [v.nbytes for v in views]))
    for v in views:
        conn.send_bytes(v)


def _recv(conn: Connection) -> Any:
    """What :func:`_send` sent, its buffers received into writable memory."""
    head, sizes = conn.recv()
    buffers = []
    for size in sizes:
        buf = np.empty(size, dtype=np.uint8)  # (not zero-filled, as a bytearray would be)
        if size:
            conn.recv_bytes_into(buf)
        else:
            conn.recv_bytes()
        buffers.append(buf)
    return pickle.loads(head, buffers=buffers)


# -- the child -----------------------------------------------------------------------------------


class _OperatorWatch:
    """Which rows the parent might reject as ``too_many_operators``: none while the operators
    registered (``known``) and seen since stay within ``MAX_OPERATORS``; past that, every row
    of an operator not known at the start (their fields are then kept for the reject)."""

    def __init__(self, known: Sequence[str]) -> None:
        self.initial = {op.encode() for op in known}
        self.seen = set(self.initial)

    def at_risk(self, group: _Group) -> np.ndarray:
        ok = group.reason == 0
        self.seen.update(group.operators(ok))
        if len(self.seen) <= MAX_OPERATORS:
            return np.zeros(len(group.rows), dtype=bool)
        codes = group.operator_codes({op: 0 for op in self.initial})
        return ok & (codes < 0)


def _ship(prepared: PreparedRows, watch: _OperatorWatch, draws: bool) -> list[_Group]:
    """``prepared``'s groups, detached (see :meth:`_Group.detach`)."""
    for g in prepared.groups:
        g.detach((g.reason != 0) | watch.at_risk(g), draws)
    return prepared.groups


def main(data_fd: int, control_fd: int) -> None:
    """The child process's entry (see :class:`PreparingProcess`): its pipes' descriptors."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us
    data, control = Connection(data_fd, readable=False), Connection(control_fd, writable=False)
    try:
        paths, period, chunk_rows, chunk_chars, hold = control.recv()
    except (EOFError, OSError):
        return
    _child(data, control, paths, period, chunk_rows, chunk_chars, hold)


def _child(data: Connection, control: Connection, paths: list[str], period: tuple | None,
           chunk_rows: int, chunk_chars: int, hold: int) -> None:
    """Read and parse at once, prepare once the spec came, ship each chunk; then
    ``("done", skipped)`` or ``("error", ...)``."""
    skipped: list[tuple[str, int, int | None]] = []
    period_obj = None if period is None else Period(*period, lambda *a: skipped.append(a))
    try:
        with batch_gc_threshold():
            reading = start_reading(paths, chunk_rows, chunk_chars, period_obj, hold)
            try:
                spec = control.recv()
                if spec is None:
                    return
                decoder = spec.decoder()
                watch = _OperatorWatch(spec.operators)
                for chunk, prepared in read_prepared(paths, decoder.prepare_rows, reading=reading):
                    one_file, line = _compact_rows(chunk.file, chunk.line)
                    _send(data, ("chunk", chunk.paths, len(chunk), one_file, line,
                                 prepared.rejects, prepared.now_ms,
                                 _ship(prepared, watch, spec.draws)))
                    if control.poll():  # the parent stops early
                        return
            finally:
                reading.close()
        _send(data, ("done", skipped))
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return  # the parent went away
    except InputError as exc:
        _last_word(data, ("input_error", str(exc), skipped))
    except BaseException as exc:  # everything else reaches the parent, worded
        _last_word(data, ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def _last_word(data: Connection, item: tuple) -> None:
    """Send the error that ended the child, unless the parent is gone (nothing to tell)."""
    with contextlib.suppress(OSError):
        _send(data, item)


# -- the parent ----------------------------------------------------------------------------------


class PreparingProcess:
    """Ping files read, parsed and prepared by a child process: the spare the command started
    (:func:`~stream.decode.child_start.take_spare`), else one started now (see the module text).
    ``period``: rows a run need not read (its ``on_skip`` is called here, in the parent, once
    the child is done); ``hold``: chunks read ahead before :meth:`prepared` is called."""

    def __init__(self, paths: Sequence[str | Path], period: Period | None = None,
                 chunk_rows: int = 100_000, chunk_chars: int = CHUNK_CHARS, hold: int = 1) -> None:
        self.paths = [str(p) for p in paths]
        self._period = period
        child = take_spare() or start_child()
        self._proc = child.proc
        self._data = Connection(child.data_fd, writable=False)
        self._control = Connection(child.control_fd, readable=False)
        bounds = None if period is None else (period.start_ms, period.end_ms, period.lateness_ms)
        with contextlib.suppress(OSError):  # a child that died at once: receiving says how
            self._control.send((self.paths, bounds, chunk_rows, chunk_chars, hold))
        self._items: ReadAhead | None = None
        self._lock = threading.Lock()
        self._closed = False

    def prepared(self, decoder: PingDecoder, draws: bool = False
                 ) -> Iterator[tuple[ShippedChunk, PreparedRows]]:
        """The chunks with their rows prepared for ``decoder`` (its settings go to the child;
        ``draws``: device draw hashes will be needed though the plan does not spread yet, e.g.
        footprints still being computed), as :func:`read_prepared` yields them. Raises what
        reading or preparing raised in the child, after the chunks before."""
        with contextlib.suppress(OSError):  # the child is gone: receiving says how
            self._control.send(PrepareSpec.of(decoder, draws))
        self._items = ReadAhead(self._receive(decoder), "defacto-receive", 2)
        return self._items

    def _receive(self, decoder: PingDecoder) -> Iterator[tuple[ShippedChunk, PreparedRows]]:
        while True:
            try:
                item = _recv(self._data)
            except (EOFError, OSError):
                if self._closed:
                    return
                code = self._wait(_STOP_WAIT_S)
                raise RuntimeError(f"the preparing process ended without a word (exit code "
                                   f"{code}): killed, or out of memory?") from None
            kind = item[0]
            if kind == "chunk":
                _, paths, n, file, line, rejects, now_ms, groups = item
                for g in groups:
                    g.attach(decoder)
                chunk = ShippedChunk(paths, n, file, line)
                yield chunk, PreparedRows(groups, chunk.source, list(rejects), now_ms)
            elif kind == "done":
                self._report(item[1])
                return
            elif kind == "input_error":
                self._report(item[2])
                raise InputError(item[1])
            else:
                raise RuntimeError(f"preparing the ping files failed: {item[1]}\n"
                                   f"(in the preparing process)\n{item[2]}")

    def _report(self, skipped: list[tuple[str, int, int | None]]) -> None:
        if self._period is not None:
            for path, first, last in skipped:
                self._period.skip(path, first, last)

    def close(self) -> None:
        """Stop the child (if still running) and the receiving thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):  # before the spec: "stop"; after it: polled per chunk
            self._control.send(None)
        if self._wait(0.05) is None:
            self._proc.terminate()  # it may be blocked on a full pipe
            if self._wait(_STOP_WAIT_S) is None:
                self._proc.kill()
                self._wait(_STOP_WAIT_S)
        if self._items is not None:  # its thread, if it waits on the pipe, wakes: the child is gone
            self._items.close()
        self._data.close()
        self._control.close()

    def _wait(self, timeout_s: float) -> int | None:
        """The child's exit code once it ended within ``timeout_s``, else None."""
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> PreparingProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

