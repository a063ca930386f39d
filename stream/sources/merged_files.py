"""Several ping files given together, read as one input merged by event time, in bounded memory.

Operators deliver one file per operator, event type and day, each sorted by time (or nearly).
Read one after the other, the second file's first pings would arrive hours after the windows
covering them closed (``too_late``). Merged, they arrive as the engine expects them: nearly in
event-time order.

**The rule.** Each file's *progress* after a row is the latest event time the file has reached:
the running maximum of its ``ts`` values that are integers in the contract's range, where a
``ts`` more than ``max_jump_ms`` (the windows' ``ts_ahead_of_stream`` limit, 6 h) ahead of the
progress does not count unless :data:`~stream.estimate.windows.REANCHOR_PINGS` such rows come in a
row (the same rule as the event-time windows: one stray row does not drag a file ahead, a real
gap in its data does). A row without such a ``ts`` has the progress of the rows before it (or of
the file's first valid ``ts``). The merge always takes the next row of the file whose progress
is least (ties: the file named first); each file's rows keep their order.

**Why it is exact.** If every file is sorted within the windows' lateness ``L`` (no row more
than ``L`` behind an earlier row of its own file), every row of the merge is at most ``L``
behind every row before it: no row is ``too_late`` and the windows see exactly what they see for
one file holding all rows sorted by time. Whatever the files hold, a row is never behind the
rows merged before it by more than it is behind the progress of its own file (rows whose ``ts``
counts), so it is ``too_late`` in the merge only where it would be in a replay of its file alone.

**Bounded memory.** Files are read in blocks of at most :data:`BLOCK_ROWS` rows and
:data:`BLOCK_CHARS` characters (fewer rows when many files are given, :data:`BUFFER_ROWS` in
all; a file holds at most :data:`HELD_BLOCKS`); a file is opened only when the merge reaches
its first event time (a look at its first rows tells) and closed at its end, so a month of daily
files holds only the files of the current day open and buffered.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.contract import MAX_TS_MS, MIN_TS_MS, InputError, Record
from stream.estimate.windows import REANCHOR_PINGS, WindowSettings

BLOCK_ROWS = 8192
"""Rows read from one file at a time (at most) ..."""
BLOCK_CHARS = 1 << 22
"""... and characters of rows (about; 4 Mi: bounds memory for long rows)."""
BUFFER_ROWS = 1 << 17
"""With many files, a block holds ``BUFFER_ROWS / files`` rows, but at least
:data:`MIN_BLOCK_ROWS`."""
MIN_BLOCK_ROWS = 64
HELD_BLOCKS = 4
"""A file holds at most this many blocks read ahead (then a run of rows of one progress value
goes on before the files it ties with)."""
PEEK_ROWS = 10_000
"""A file's first event time is looked for in its first rows; without one there, it is opened
at the start of the merge."""
NO_TIME = np.iinfo(np.int64).min
END = np.iinfo(np.int64).max

FileRecords = Callable[[Path], Iterator[Record]]
"""Opens a ping file and yields its records in file order (closing it at the end)."""


def event_time(record: Record) -> int | None:
    """The record's ``ts`` if it is an integer in the contract's range, else None."""
    if record.fields is None:
        return None
    ts = record.fields.get("ts")
    if type(ts) is int and MIN_TS_MS <= ts <= MAX_TS_MS:
        return ts
    return None


def first_event_time(path: Path, records: FileRecords, rows: int = PEEK_ROWS) -> int | None:
    """The first event time among the first ``rows`` records of a file, None if there is none."""
    it = records(path)
    try:
        for r in itertools.islice(it, rows):
            ts = event_time(r)
            if ts is not None:
                return ts
        return None
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class FileProgress:
    """A file's progress (the rule of the module docstring), kept row after row across blocks."""

    def __init__(self, max_jump_ms: int = WindowSettings.max_jump_ms) -> None:
        self.max_jump_ms = max_jump_ms
        self.progress: int | None = None
        self.ahead_run = 0

    def keys(self, times: np.ndarray, start: int = NO_TIME) -> np.ndarray:
        """The progress after each row of the next block (``times``: each row's event time,
        :data:`NO_TIME` for none); ``start`` before the first event time. Vectorized unless a
        row jumps ahead."""
        times = np.asarray(times, dtype=np.int64)
        valid = times != NO_TIME
        out = np.empty(len(times), dtype=np.int64)
        if not valid.any():
            out[:] = start if self.progress is None else self.progress
            return out
        lead = 0
        if self.progress is None:
            lead = int(np.argmax(valid))
            out[:lead] = start
            self.progress = int(times[lead])
        top = np.maximum.accumulate(np.where(valid[lead:], times[lead:], NO_TIME))
        before = np.maximum(np.concatenate([[self.progress], top[:-1]]), self.progress)
        ahead = valid[lead:] & (times[lead:] > before + self.max_jump_ms)
        if not ahead.any():
            out[lead:] = np.maximum(top, self.progress)
            self.progress = int(out[-1])
            self.ahead_run = 0
            return out
        for i in range(lead, len(times)):  # a row ahead: the sequential rule
            ts = int(times[i])
            if ts != NO_TIME:
                if ts > self.progress + self.max_jump_ms:
                    self.ahead_run += 1
                    if self.ahead_run >= REANCHOR_PINGS:
                        self.ahead_run = 0
                        self.progress = ts
                else:
                    self.ahead_run = 0
                    self.progress = max(self.progress, ts)
            out[i] = self.progress
        return out


class RowsCursor:
    """One file being merged: its rows read ahead and each row's progress.

    Subclasses hold the rows (:class:`_FileCursor`: records; the columnar reader: columns) and
    implement :meth:`open`, :meth:`close`, :meth:`read`, :meth:`held`, :meth:`held_chars`,
    :meth:`_append` and :meth:`_split`.
    """

    def __init__(self, index: int, path: Path, first_ts: int | None, max_jump_ms: int) -> None:
        self.index = index
        self.path = path
        self.start = NO_TIME if first_ts is None else first_ts
        self.done = False
        self.opened = False
        self.keys = np.empty(0, dtype=np.int64)
        self._progress = FileProgress(max_jump_ms)

    def open(self) -> None:
        """Start reading the file."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading the file (at its end or when the merge stops early)."""
        raise NotImplementedError

    def read(self, rows: int) -> None:
        """Read up to ``rows`` more rows (and about :data:`BLOCK_CHARS` characters) with their
        progress; at the end of the file, :attr:`done`."""
        raise NotImplementedError

    def held(self) -> int:
        """Rows read and not yet taken."""
        raise NotImplementedError

    def held_chars(self) -> int:
        """Their characters."""
        raise NotImplementedError

    def _append(self, block: Any) -> None:
        raise NotImplementedError

    def _split(self, n: int) -> Any:
        """Remove and return the first ``n`` rows held."""
        raise NotImplementedError

    def _add(self, block: Any, times: np.ndarray) -> None:
        """Hold a block of rows read, with their event times."""
        self._append(block)
        self.keys = np.concatenate([self.keys, self._progress.keys(times, self.start)])

    @property
    def bound(self) -> int:
        """No row still to come from this file has a smaller progress (END once all is read)."""
        if self.done:
            return END
        if len(self.keys):
            return int(self.keys[-1])
        return self.start if not self.opened else NO_TIME

    def take(self, bound: int, inclusive: bool) -> tuple[Any, np.ndarray]:
        """Remove and return the rows whose progress is below ``bound`` (or equal, ``inclusive``)."""
        n = int(np.searchsorted(self.keys, bound, side="right" if inclusive else "left"))
        keys = self.keys[:n]
        self.keys = self.keys[n:]
        return self._split(n), keys


class _FileCursor(RowsCursor):
    """A file being merged, read as records."""

    def __init__(self, index: int, path: Path, first_ts: int | None, max_jump_ms: int,
                 records: FileRecords) -> None:
        super().__init__(index, path, first_ts, max_jump_ms)
        self.opener = records
        self.records: Iterator[Record] | None = None
        self.rows: list[Record] = []
        self.chars = 0

    def open(self) -> None:
        self.records = self.opener(self.path)
        self.opened = True

    def close(self) -> None:
        close = getattr(self.records, "close", None)
        if close is not None:
            close()
        self.done = True

    def read(self, rows: int) -> None:
        assert self.records is not None
        block: list[Record] = []
        chars = 0
        try:
            for r in self.records:
                block.append(r)
                chars += len(r.raw)
                if len(block) >= rows or chars >= BLOCK_CHARS:
                    break
            else:
                self.close()
        except InputError:  # the file broke: keep what was read of it
            self.done = True
            raise
        finally:
            if block:
                times = np.fromiter((NO_TIME if (t := event_time(r)) is None else t
                                     for r in block), dtype=np.int64, count=len(block))
                self._add(block, times)

    def held(self) -> int:
        return len(self.rows)

    def held_chars(self) -> int:
        return self.chars

    def _append(self, block: list[Record]) -> None:
        self.rows.extend(block)
        self.chars += sum(len(r.raw) for r in block)

    def _split(self, n: int) -> list[Record]:
        rows = self.rows[:n]
        self.chars -= sum(len(r.raw) for r in rows)
        del self.rows[:n]
        return rows


def merge_by_event_time(paths: Sequence[Path], records: FileRecords,
                        max_jump_ms: int = WindowSettings.max_jump_ms) -> Iterator[list[Record]]:
    """The records of several ping files merged by event time (the rule of the module
    docstring), as blocks of records in merged order.

    ``records(path)`` opens one file and yields its records in file order. Raises
    :class:`~stream.contract.InputError` from the files (before any record for a missing file or
    a problem in a file's first rows).
    """
    cursors = [_FileCursor(i, p, first_event_time(p, records), max_jump_ms, records)
               for i, p in enumerate(paths)]
    yield from merge_cursors(cursors, _join_records)


def _join_records(parts: list[list[Record]], keys: list[np.ndarray]) -> list[Record]:
    rows = [r for part in parts for r in part]
    if not rows:
        return rows
    order = np.argsort(np.concatenate(keys), kind="stable")
    return [rows[i] for i in order.tolist()]


Join = Callable[[list[Any], list[np.ndarray]], Any]
"""Rows taken from several files (in file order) and their progress -> the rows in merged order:
by progress, then file, then row."""


def merge_cursors(cursors: Sequence[RowsCursor], join: Join) -> Iterator[Any]:
    """The rows of the files of ``cursors`` merged by event time, as blocks in merged order
    (``join`` puts the rows taken at each step in order). Raises
    :class:`~stream.contract.InputError` from the files, after the rows read before it."""
    block_rows = max(MIN_BLOCK_ROWS, min(BLOCK_ROWS, BUFFER_ROWS // max(1, len(cursors))))
    waiting = sorted(cursors, key=lambda c: (c.start, c.index))
    active: list[RowsCursor] = []
    try:
        while waiting or active:
            out = _step(waiting, active, block_rows, join)
            if out is not None:
                yield out
            active[:] = [c for c in active if not (c.done and not c.held())]
    except InputError:
        rest = _take(active, END, True, join)  # what was read before a file broke goes on
        if rest is not None:
            yield rest
        raise
    finally:
        for c in cursors:
            if c.opened and not c.done:
                c.close()


def _step(waiting: list[RowsCursor], active: list[RowsCursor], block_rows: int,
          join: Join) -> Any:
    """One step of the merge: read what is due, return the rows now safe to pass on (or None)."""
    _open_due(waiting, active, block_rows)
    bound = min([c.bound for c in active] + [c.start for c in waiting[:1]], default=END)
    out = _take(active, bound, bound == END, join)
    if out is None:
        limiting = [c for c in active if not c.done and c.bound == bound]
        room = [c for c in limiting
                if c.held() < HELD_BLOCKS * block_rows and c.held_chars() < HELD_BLOCKS * BLOCK_CHARS]
        for c in room:
            c.read(block_rows)
        if not room:  # a run of one progress value longer than the blocks held: let it through
            out = _take(active, bound, True, join)
    return out


def _open_due(waiting: list[RowsCursor], active: list[RowsCursor], block_rows: int) -> None:
    """Read a block of every active file that has none, and open each waiting file whose first
    event time the merge has reached."""
    for c in active:
        if not c.done and not c.held():
            c.read(block_rows)
    while waiting and waiting[0].start <= min((c.bound for c in active), default=END):
        c = waiting.pop(0)
        active.append(c)
        active.sort(key=lambda a: a.index)
        c.open()
        c.opened = True
        c.read(block_rows)


def _take(active: list[RowsCursor], bound: int, inclusive: bool, join: Join) -> Any:
    """The rows of all active files with progress below ``bound`` (or equal), in merged order:
    by progress, then file, then row; None if there are none."""
    parts = [c.take(bound, inclusive) for c in active]
    taken = [(rows, keys) for rows, keys in parts if len(keys)]
    if not taken:
        return None
    return join([rows for rows, _ in taken], [keys for _, keys in taken])
