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


class _FileCursor:
    """One file being merged: its open records, the block read ahead and each row's progress."""

    def __init__(self, index: int, path: Path, first_ts: int | None, max_jump_ms: int) -> None:
        self.index = index
        self.path = path
        self.start = NO_TIME if first_ts is None else first_ts
        self.max_jump_ms = max_jump_ms
        self.records: Iterator[Record] | None = None
        self.done = False
        self.rows: list[Record] = []
        self.keys = np.empty(0, dtype=np.int64)
        self.chars = 0
        self._progress: int | None = None
        self._ahead_run = 0

    def open(self, records: FileRecords) -> None:
        """Start reading the file."""
        self.records = records(self.path)

    def close(self) -> None:
        """Stop reading the file (at its end or when the merge stops early)."""
        close = getattr(self.records, "close", None)
        if close is not None:
            close()
        self.done = True

    @property
    def bound(self) -> int:
        """No row still to come from this file has a smaller progress (END once all is read)."""
        if self.done:
            return END
        if len(self.keys):
            return int(self.keys[-1])
        return self.start if self.records is None else NO_TIME

    def _key(self, record: Record) -> int:
        ts = event_time(record)
        if ts is not None:
            if self._progress is None:
                self._progress = ts
            elif ts > self._progress + self.max_jump_ms:
                self._ahead_run += 1
                if self._ahead_run >= REANCHOR_PINGS:
                    self._ahead_run = 0
                    self._progress = ts
            else:
                self._ahead_run = 0
                self._progress = max(self._progress, ts)
        return self.start if self._progress is None else self._progress

    def read(self, rows: int) -> None:
        """Read up to ``rows`` more rows with their progress (at the end: :attr:`done`)."""
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
                self.rows.extend(block)
                self.chars += chars
                keys = np.fromiter(map(self._key, block), dtype=np.int64, count=len(block))
                self.keys = np.concatenate([self.keys, keys])

    def take(self, bound: int, inclusive: bool) -> tuple[list[Record], np.ndarray]:
        """Remove and return the rows whose progress is below ``bound`` (or equal, ``inclusive``)."""
        n = int(np.searchsorted(self.keys, bound, side="right" if inclusive else "left"))
        rows, keys = self.rows[:n], self.keys[:n]
        self.chars -= sum(len(r.raw) for r in rows)
        del self.rows[:n]
        self.keys = self.keys[n:]
        return rows, keys


def merge_by_event_time(paths: Sequence[Path], records: FileRecords,
                        max_jump_ms: int = WindowSettings.max_jump_ms) -> Iterator[list[Record]]:
    """The records of several ping files merged by event time (the rule of the module
    docstring), as blocks of records in merged order.

    ``records(path)`` opens one file and yields its records in file order. Raises
    :class:`~stream.contract.InputError` from the files (before any record for a missing file or
    a problem in a file's first rows).
    """
    block_rows = max(MIN_BLOCK_ROWS, min(BLOCK_ROWS, BUFFER_ROWS // max(1, len(paths))))
    cursors = [_FileCursor(i, p, first_event_time(p, records), max_jump_ms)
               for i, p in enumerate(paths)]
    waiting = sorted(cursors, key=lambda c: (c.start, c.index))
    active: list[_FileCursor] = []
    try:
        while waiting or active:
            out = _step(waiting, active, records, block_rows)
            if out:
                yield out
            active[:] = [c for c in active if not (c.done and not c.rows)]
    except InputError:
        rest = _take(active, END, inclusive=True)  # what was read before a file broke goes on
        if rest:
            yield rest
        raise
    finally:
        for c in cursors:
            if c.records is not None and not c.done:
                c.close()


def _step(waiting: list[_FileCursor], active: list[_FileCursor], records: FileRecords,
          block_rows: int) -> list[Record]:
    """One step of the merge: read what is due, return the rows now safe to pass on (maybe none)."""
    _open_due(waiting, active, records, block_rows)
    bound = min([c.bound for c in active] + [c.start for c in waiting[:1]], default=END)
    out = _take(active, bound, inclusive=bound == END)
    if not out:
        limiting = [c for c in active if not c.done and c.bound == bound]
        room = [c for c in limiting
                if len(c.rows) < HELD_BLOCKS * block_rows and c.chars < HELD_BLOCKS * BLOCK_CHARS]
        for c in room:
            c.read(block_rows)
        if not room:  # a run of one progress value longer than the blocks held: let it through
            out = _take(active, bound, inclusive=True)
    return out


def _open_due(waiting: list[_FileCursor], active: list[_FileCursor], records: FileRecords,
              block_rows: int) -> None:
    """Read a block of every active file that has none, and open each waiting file whose first
    event time the merge has reached."""
    for c in active:
        if not c.done and not c.rows:
            c.read(block_rows)
    while waiting and waiting[0].start <= min((c.bound for c in active), default=END):
        c = waiting.pop(0)
        active.append(c)
        active.sort(key=lambda a: a.index)
        c.open(records)
        c.read(block_rows)


def _take(active: list[_FileCursor], bound: int, inclusive: bool) -> list[Record]:
    """The rows of all active files with progress below ``bound`` (or equal), in merged order:
    by progress, then file, then row."""
    parts = [c.take(bound, inclusive) for c in active]
    rows: list[Record] = [r for part, _ in parts for r in part]
    if len(rows) == 0:
        return rows
    keys: Any = np.concatenate([k for _, k in parts])
    order = np.argsort(keys, kind="stable")
    return [rows[i] for i in order.tolist()]
