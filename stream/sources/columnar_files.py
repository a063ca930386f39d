"""Ping files read as columns: the reader of ``defacto replay`` and ``calibrate``.

:mod:`stream.sources.ping_files` states what a ping file may hold and reads it row by row into
records. This module reads the same files with polars, block by block, and gives exactly what that
reader gives: the same rows with the same line numbers, in the same chunks, with the same values
(several files merged by event time in the same order, :mod:`stream.sources.merged_files`), while
holding one block of bytes per file and the chunk being built (and, reading ahead, the next one).
How:

- **Blocks of lines.** A file's bytes (after :func:`~stream.sources.text_files.open_text`'s
  checks; gzip recognized by content) are read in blocks of about :data:`BLOCK_BYTES`, cut at line
  ends (LF, CRLF or CR, as Python's universal newlines; a UTF-8 BOM at the start of the file
  dropped). A line longer than a block keeps only its first :data:`LONG_HEAD_BYTES` bytes (more
  than :data:`~stream.sources.ping_files.MAX_ROW_CHARS` characters); its rest is read and dropped.
- **Plain lines, parsed together.** A line is *plain* when it is ASCII without control
  characters, at most ``MAX_ROW_CHARS`` long and, in JSON Lines, one object ``{...}`` without a
  backslash; in CSV, without quotes, with the header's number of columns and not the header again.
  The plain lines of a block are parsed in one polars call with strict dtypes
  (:data:`JSON_SCHEMA`; CSV cells as text, then converted by the record reader's own rules, see
  :func:`_csv_columns`). A part polars refuses is split in two and retried; what it still refuses
  is read line by line.
- **Faithful values.** polars reads a number or ``true`` given for a text field as text, and of a
  key given twice the first value (Python's ``json`` keeps the last). In a plain JSON line a string
  cannot hold a ``"``, so ``":`` ends a key and nothing else: counting colons and quotes per block
  (or, when the totals differ, naming each line's keys) tells whether the parsed fields are what
  ``json`` reads. A line with a ping field twice, a text field given as a number, ``true``, a list
  or an object, any list or nested object, or a colon inside a string is read line by line
  instead; explicit nulls and other scalar fields are fine (:func:`_faithful`).
- **Everything else, line by line.** Blank, non-ASCII or unusual lines, and CSV rows spanning
  lines, go through the record reader's own code (:func:`~stream.sources.ping_files.jsonl_line`,
  :class:`~stream.sources.ping_files.CsvRows`), so a bad row is a
  :class:`~stream.contract.Record` with its line number and reason exactly as there.

:class:`PingRows` holds a chunk: the parsed rows as polars columns, the rest as records, and where
every row came from. :class:`~stream.decode.validate.PingDecoder.decode_rows` turns it into a
:class:`~stream.decode.validate.PingBatch`. With a :class:`Period` (``--from``/``--to``), a file
sorted within the lateness is read only where it can hold pings of the period (see
:class:`Period`).
"""

from __future__ import annotations

import codecs
import gzip
import io
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from stream.contract import MAX_TS_MS, MIN_TS_MS, InputError, Record
from stream.estimate.windows import WindowSettings
from stream.sources.merged_files import (
    BLOCK_CHARS,
    NO_TIME,
    PEEK_ROWS,
    FileProgress,
    RowsCursor,
    event_time,
    merge_cursors,
)
from stream.sources.ping_files import (
    CHUNK_CHARS,
    MAX_ROW_CHARS,
    CsvRows,
    csv_fields,
    json_record,
    jsonl_line,
    ping_format,
    ping_paths,
)
from stream.sources.text_files import BOM, BYTE_ERRORS, LongLine, open_text, read_problem

T = TypeVar("T")

BLOCK_BYTES = 1 << 23
"""Bytes of a file parsed at a time (8 Mi: about 80,000 rows of a usual file)."""
FIRST_BLOCK_BYTES = 1 << 20
"""The first block of a file is smaller (a quick look at its first event time, a first chunk
soon)."""
LONG_HEAD_BYTES = 4 * MAX_ROW_CHARS + 8
"""What is kept of a line longer than a block: enough bytes for its first ``MAX_ROW_CHARS``
characters (a character takes at most 4 bytes)."""
GZIP_PIECE = 8192
"""A gzip stream is read in pieces of this size, as the text reader does, so that a stream broken
half-way gives the same lines before the error."""
PLAIN_PIECE = 1 << 20
MIN_PARSE_LINES = 16
"""A part polars refuses is split until it holds this many lines; then it is read line by line."""
UTF8_BOM = codecs.BOM_UTF8

JSON_SCHEMA: dict[str, Any] = {"device": pl.String, "ts": pl.Int64, "operator": pl.String,
                               "home_mcc": pl.Int64, "cell": pl.String, "lat": pl.Float64,
                               "lon": pl.Float64}
"""The ping fields as polars reads them (strict: a JSON value of another type fails the parse,
except that any value is read as text for a text field, which :func:`_faithful` catches)."""
TEXT_FIELDS = ("device", "operator", "cell")

_INT18 = r"^-?[0-9]{1,18}$"
"""An integer as a CSV cell that the record reader converts (ASCII digits, optional ``-``) and
that fits 64 bits; a longer one is left to the record reader."""
_DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
"""A number as a CSV cell that Python's ``float`` and polars read alike (others, such as
``nan`` or ``1_0``, are left to the record reader)."""


# ----------------------------------------------------------------------------------------------
# Bytes to blocks of lines


@dataclass
class _Block:
    """Whole lines of a file: ``data`` holds them with their line ends; line ``i`` is
    ``data[starts[i]:ends[i]]`` and its line end runs to ``nexts[i]``; ``first`` is the number of
    line 0. ``long``: one line longer than a block, of which ``data`` holds the first
    :data:`LONG_HEAD_BYTES` bytes (and its line end). ``ctl``: positions of control characters
    other than line ends. ``cr``: False when no line end holds a CR."""

    data: bytes
    starts: np.ndarray
    ends: np.ndarray
    nexts: np.ndarray
    first: int
    ctl: np.ndarray
    long: bool = False
    cr: bool = True

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=np.uint8)

    def line_of(self, positions: np.ndarray) -> np.ndarray:
        """The line holding each byte position."""
        return np.searchsorted(self.starts, positions, side="right") - 1

    def text(self, i: int) -> str:
        """Line ``i`` as :meth:`~stream.sources.text_files.TextInput.raw_lines` gives it: with
        its line end, a leading BOM dropped, a :class:`LongLine` of its first ``MAX_ROW_CHARS``
        characters when longer (non-UTF-8 bytes as lone surrogates)."""
        line = self.data[self.starts[i]:self.nexts[i]].decode("utf-8", "surrogateescape")
        chars = len(line) - (int(self.nexts[i]) - int(self.ends[i]))
        if self.long or chars > MAX_ROW_CHARS:
            line = LongLine(line[:MAX_ROW_CHARS])
        if line[:1] == BOM:
            line = type(line)(line[1:])
        return line


def _line_ends(a: np.ndarray, final: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """``(ends, nexts, ctl, cr)`` of the lines complete in ``a``: where each line's content ends,
    where its line end ends, the control characters that are not line ends, and whether some
    line end holds a CR. A CR at the very end of ``a`` ends a line only when ``final`` (else a
    LF may follow)."""
    low = np.flatnonzero(a < 32)
    vals = a[low]
    is_end = (vals == 10) | (vals == 13)
    ctl = low[~is_end]
    pos, kind = low[is_end], vals[is_end]
    if not (kind == 13).any():
        return pos, pos + 1, ctl, False
    cr = kind == 13
    crlf = np.zeros(len(pos), dtype=bool)
    crlf[:-1] = cr[:-1] & (pos[1:] == pos[:-1] + 1) & (kind[1:] == 10)
    lf_of_crlf = np.zeros(len(pos), dtype=bool)
    lf_of_crlf[1:] = crlf[:-1]
    keep = ~lf_of_crlf
    ends, crlf = pos[keep], crlf[keep]
    nexts = ends + np.where(crlf, 2, 1)
    if not final and len(ends) and nexts[-1] == len(a) and a[-1] == 13:
        ends, nexts = ends[:-1], nexts[:-1]
    return ends, nexts, ctl, True


class LineSource:
    """One ping file's physical lines, as blocks (:meth:`next_block`) or one by one as text
    (:meth:`raw_lines`, for :class:`~stream.sources.ping_files.CsvRows`), sharing one position.

    ``line_no`` is the number of the last line consumed. A read error (a truncated or corrupt
    gzip stream, an I/O error) ends the blocks with the lines complete before it, then raises
    :class:`~stream.contract.InputError` ``FILE:LINE: what`` with the line the text reader names.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._text = open_text(path)
        self._binary = self._text.binary()
        self._piece = GZIP_PIECE if isinstance(self._binary, gzip.GzipFile) else PLAIN_PIECE
        self._buf = bytearray()  # read into in place; its first `_have` bytes are not handed out
        self._have = 0
        self._at_start = True
        self._eof = False
        self._exc: BaseException | None = None
        self._error: InputError | None = None
        self._handed = 0  # lines handed out in blocks
        self.block: _Block | None = None
        self.pos = 0  # next line of `block`
        self.line_no = 0

    def close(self) -> None:
        """Close the file."""
        self._text.close()

    # -- blocks --------------------------------------------------------------------------------

    def next_block(self) -> _Block | None:
        """The next block of lines (None at the end of the file); its lines count as consumed
        once the caller moves :attr:`pos` past them (:meth:`consume`)."""
        if self.block is not None:
            self.consume(len(self.block))
        self.block, self.pos = self._read_block(), 0
        return self.block

    def skim(self, look: int = 32) -> tuple[_Block, int, int, int] | None:
        """The next block without finding every line end: ``(tail, first, lines, cut)``, its
        last ``look`` lines as a :class:`_Block` (``tail.first`` their number), the number of
        its first line, how many it holds and its length in bytes. Nothing is consumed: then
        :meth:`skip_skimmed` drops the block, or :meth:`next_block` reads it as usual. For a
        reader deciding whether a block is before a period (a count of LF bytes instead of a
        pass over every byte). None when a block cannot be skimmed (the file's start, a CR or
        no LF in it, a read error, the end of the file): then :meth:`next_block`."""
        if self.block is not None:
            self.consume(len(self.block))
            self.block, self.pos = None, 0
        if self._at_start or self._error is not None:
            return None
        if not self._eof and self._exc is None:
            self._fill(BLOCK_BYTES)
        if self._eof or self._exc is not None:
            return None
        buf = self._buf
        cut = buf.rfind(b"\n", 0, self._have) + 1
        if cut == 0 or buf.find(b"\r", 0, self._have) >= 0:  # (a lone CR ends a line too)
            return None
        ends = [cut - 1]
        while len(ends) <= look and ends[-1] > 0:
            at = buf.rfind(b"\n", 0, ends[-1])
            if at < 0:
                break
            ends.append(at)
        lines = buf.count(b"\n", 0, cut)
        tail_ends = np.array(ends[:look][::-1], dtype=np.int64)
        tail_starts = np.array([e + 1 for e in ends[1:look + 1]][::-1], dtype=np.int64)
        if len(tail_starts) < len(tail_ends):  # the block's first line is in the tail
            tail_starts = np.concatenate([[0], tail_starts])
        lo = int(tail_starts[0])
        tail = _Block(bytes(buf[lo:cut]), tail_starts - lo, tail_ends - lo, tail_ends + 1 - lo,
                      self._handed + lines - len(tail_ends) + 1, np.zeros(0, np.int64), cr=False)
        return tail, self._handed + 1, lines, cut

    def skip_skimmed(self, lines: int, cut: int) -> None:
        """Drop the block :meth:`skim` looked at (``lines`` lines, ``cut`` bytes): consumed."""
        self._keep(cut)
        self._handed += lines
        self.line_no = self._handed

    def consume(self, upto: int) -> None:
        """Lines of the current block before ``upto`` are consumed."""
        assert self.block is not None
        self.pos = max(self.pos, upto)
        self.line_no = self.block.first + self.pos - 1

    def _fill(self, size: int) -> None:
        """Read until the buffer holds ``size`` bytes, the file ends or reading fails (into the
        buffer's room, grown only when too small: no bytes object per piece)."""
        gz = self._piece == GZIP_PIECE  # gzip: always pieces of GZIP_PIECE, as the text reader
        room = size + (GZIP_PIECE if gz else 0)
        if len(self._buf) < room:
            self._buf.extend(bytes(room - len(self._buf)))
        try:
            with memoryview(self._buf) as view:
                while self._have < size:
                    got = self._binary.readinto1(
                        view[self._have:self._have + (GZIP_PIECE if gz
                                                      else min(self._piece, size - self._have))])
                    if not got:
                        self._eof = True
                        return
                    self._have += got
        except BYTE_ERRORS as exc:
            self._exc = exc

    def _keep(self, lo: int, data: bytes = b"") -> None:
        """The buffer holds ``data`` followed by its bytes from ``lo`` on."""
        rest = self._buf[lo:self._have]
        self._have = len(data) + len(rest)
        if len(self._buf) < self._have:
            self._buf.extend(bytes(self._have - len(self._buf)))
        self._buf[:self._have] = data + rest

    def _broken(self, exc: BaseException, partial: bytes, lines: int = 0) -> InputError:
        """The error of a read that failed after the complete lines handed out and ``partial``,
        the start of the next line. The text reader reads a line in pieces of
        ``MAX_ROW_CHARS + 2`` characters and counts it at its first piece: a partial line that
        long was counted, and the error names the line after it. ``lines``: complete lines
        still to be handed out before the error."""
        decoded = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(partial)
        counted = len(decoded) >= MAX_ROW_CHARS + 2
        line = self._handed + lines + 1 + (1 if counted else 0)
        return InputError(f"{self.path}:{line}: {read_problem(exc)}; the lines before it were read")

    def _read_block(self) -> _Block | None:
        if self._error is not None:
            raise self._error
        size = FIRST_BLOCK_BYTES if self._at_start else BLOCK_BYTES
        if not self._eof and self._exc is None:
            self._fill(size)
            while (not self._eof and self._exc is None and self._have < LONG_HEAD_BYTES
                   and self._buf.find(b"\n", 0, self._have) < 0
                   and self._buf.rfind(b"\r", 0, max(self._have - 1, 0)) < 0):
                self._fill(self._have + size)  # no line end yet: a long line, or a small block
        if self._at_start and (self._have >= 3 or self._eof or self._exc is not None):
            if self._buf[:min(self._have, 3)] == UTF8_BOM:
                self._keep(3)
            self._at_start = False
        final = self._eof and self._exc is None
        a = np.frombuffer(self._buf, dtype=np.uint8, count=self._have)  # released before it moves
        ends, nexts, ctl, cr = _line_ends(a, final)
        size = len(a)
        cut = int(nexts[-1]) if len(nexts) else 0
        if final and cut < size:  # the last line, without a line end
            ends, nexts = np.append(ends, size), np.append(nexts, size)
            cut = size
        rest = a[cut:].tobytes() if self._exc is not None else b""
        del a
        if self._exc is not None:  # what follows the complete lines is lost, and names the error
            self._error = self._broken(self._exc, rest, len(ends))
            data = bytes(self._buf[:cut])
            self._have = 0
            if cut == 0:
                raise self._error
        elif cut == 0:
            if final:
                return None
            return self._long_line()  # no line end in LONG_HEAD_BYTES: longer than any row
        else:
            with memoryview(self._buf) as view:  # one copy of the block's bytes
                data = bytes(view[:cut])
            self._keep(cut)
        ctl = ctl[ctl < cut]
        starts = np.concatenate([[0], nexts[:-1]]).astype(np.int64)
        block = _Block(data, starts, ends.astype(np.int64), nexts.astype(np.int64),
                       self._handed + 1, ctl, cr=cr)
        self._handed += len(starts)
        return block

    def _long_line(self) -> _Block | None:
        """A line longer than a block: its first bytes and line end (its rest read and dropped)."""
        head = bytes(self._buf[:min(self._have, LONG_HEAD_BYTES)])
        self._have = 0
        end = b""
        try:
            while True:
                piece = self._binary.read1(self._piece)
                if not piece:
                    self._eof = True
                    break
                at = [p for p in (piece.find(b"\n"), piece.find(b"\r")) if p >= 0]
                if not at:
                    continue
                p = min(at)
                if piece[p:p + 1] == b"\r":
                    if p + 1 == len(piece):
                        more = self._binary.read1(self._piece)
                        piece += more
                        if not more:
                            self._eof = True
                    end = b"\r\n" if piece[p + 1:p + 2] == b"\n" else b"\r"
                else:
                    end = b"\n"
                self._keep(0, piece[p + len(end):])
                break
        except BYTE_ERRORS as exc:  # the text reader had counted the line, not handed it out
            self._handed += 1
            self._have = 0
            self._error = self._broken(exc, b"")
            raise self._error from None
        data = head + end
        block = _Block(data, np.zeros(1, np.int64), np.array([len(head)], np.int64),
                       np.array([len(data)], np.int64), self._handed + 1,
                       np.zeros(0, np.int64), long=True, cr=b"\r" in end)
        self._handed += 1
        return block

    # -- text lines (the record reader's per-line path) ---------------------------------------

    def next_text(self) -> str | None:
        """The next line as text (see :meth:`_Block.text`), None at the end of the file."""
        while self.block is None or self.pos >= len(self.block):
            if self.next_block() is None:
                return None
        assert self.block is not None
        line = self.block.text(self.pos)
        self.consume(self.pos + 1)
        return line

    def raw_lines(self, max_chars: int = MAX_ROW_CHARS) -> Iterator[str]:
        """The lines still to come, as :meth:`~stream.sources.text_files.TextInput.raw_lines`
        gives them (``max_chars`` must be ``MAX_ROW_CHARS``)."""
        assert max_chars == MAX_ROW_CHARS
        while True:
            line = self.next_text()
            if line is None:
                return
            yield line


# ----------------------------------------------------------------------------------------------
# Rows


@dataclass
class PingRows:
    """Rows of ping files in input order: the parsed ones as polars columns, the rest as records.

    Arrays of length n (rows): ``file`` (index into ``paths``), ``line`` (its line, from 1),
    ``chars`` (length of the row's text, as ``len(Record.raw)``), ``time`` (its event time:
    ``ts`` when an integer in the contract's range, else :data:`NO_TIME`), ``parsed`` (bool:
    the row is in ``columns``). ``columns`` holds the parsed rows' fields (:data:`JSON_SCHEMA`),
    in row order, exactly as the record reader would parse them; ``records`` the other rows'
    records, in row order. A parsed row's record is rebuilt on demand (:meth:`record`) from its
    text: block ``text_block[i]``, bytes ``text_start[i]:text_end[i]``.
    """

    paths: list[str]
    file: np.ndarray
    line: np.ndarray
    chars: np.ndarray
    time: np.ndarray
    parsed: np.ndarray
    columns: pl.DataFrame
    records: list[Record]
    text_block: np.ndarray
    text_start: np.ndarray
    text_end: np.ndarray
    blocks: list[_TextBlock] = field(default_factory=list)
    _record_index: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.line)

    def source(self, i: int) -> str:
        """``FILE:LINE`` of row ``i``."""
        return f"{self.paths[int(self.file[i])]}:{int(self.line[i])}"

    def record(self, i: int) -> Record:
        """Row ``i`` as the record reader gives it."""
        if not self.parsed[i]:
            if self._record_index is None:
                self._record_index = np.cumsum(~self.parsed) - 1
            return self.records[int(self._record_index[i])]
        block = self.blocks[int(self.text_block[i])]
        body = block.data[int(self.text_start[i]):int(self.text_end[i])].decode("ascii")
        return block.record(self.source(i), body)

    def slice(self, lo: int, hi: int) -> PingRows:
        """Rows ``lo..hi-1``."""
        p_lo = int(np.count_nonzero(self.parsed[:lo]))
        p_hi = p_lo + int(np.count_nonzero(self.parsed[lo:hi]))
        r_lo, r_hi = lo - p_lo, hi - p_hi
        return PingRows(self.paths, self.file[lo:hi], self.line[lo:hi], self.chars[lo:hi],
                        self.time[lo:hi], self.parsed[lo:hi],
                        self.columns.slice(p_lo, p_hi - p_lo), self.records[r_lo:r_hi],
                        self.text_block[lo:hi], self.text_start[lo:hi], self.text_end[lo:hi],
                        self.blocks)._compact()

    def _compact(self) -> PingRows:
        """Keep only the text blocks some row still refers to (so that rows taken from a long
        file do not hold all of its blocks)."""
        if len(self.blocks) <= 1:
            return self
        used = np.flatnonzero(np.bincount(self.text_block[self.text_block >= 0],
                                          minlength=len(self.blocks)))
        if len(used) == len(self.blocks):
            return self
        remap = np.full(len(self.blocks), -1, dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        self.text_block = np.where(self.text_block >= 0, remap[np.maximum(self.text_block, 0)], -1)
        self.blocks = [self.blocks[i] for i in used.tolist()]
        return self

    def take(self, order: np.ndarray) -> PingRows:
        """The rows in ``order`` (a permutation of some rows)."""
        before = np.concatenate([[0], np.cumsum(self.parsed)])[:-1]
        parsed = self.parsed[order]
        col_rows = before[order[parsed]]
        rec_before = np.arange(len(self)) - before
        rec_rows = rec_before[order[~parsed]].tolist()
        return PingRows(self.paths, self.file[order], self.line[order], self.chars[order],
                        self.time[order], parsed, self.columns[col_rows],
                        [self.records[i] for i in rec_rows], self.text_block[order],
                        self.text_start[order], self.text_end[order], self.blocks)._compact()

    @staticmethod
    def concat(parts: Sequence[PingRows]) -> PingRows:
        """The rows of ``parts``, one after the other (all of the same ``paths``)."""
        parts = [p for p in parts if len(p)] or list(parts[:1])
        if len(parts) == 1:
            return parts[0]
        blocks: list[_TextBlock] = []
        index: dict[int, int] = {}  # the same block may come with several parts: listed once
        text_block = []
        for p in parts:
            remap = np.array([index.setdefault(id(b), len(index)) for b in p.blocks] or [0],
                             dtype=np.int32)
            blocks.extend(b for b in p.blocks if index[id(b)] >= len(blocks))
            text_block.append(np.where(p.text_block >= 0, remap[np.maximum(p.text_block, 0)], -1))
        return PingRows(parts[0].paths, *(np.concatenate([getattr(p, f) for p in parts])
                                          for f in ("file", "line", "chars", "time", "parsed")),
                        pl.concat([p.columns for p in parts], how="vertical", rechunk=False),
                        [r for p in parts for r in p.records], np.concatenate(text_block),
                        np.concatenate([p.text_start for p in parts]),
                        np.concatenate([p.text_end for p in parts]), blocks)._compact()


@dataclass
class _TextBlock:
    """The bytes of parsed rows, to rebuild their records (:meth:`PingRows.record`)."""

    data: bytes
    kind: str
    csv_columns: list[tuple[int, str, Any]] = field(default_factory=list)

    def record(self, src: str, body: str) -> Record:
        if self.kind == "jsonl":
            return json_record(src, body, False)
        row = body.split(",")
        return Record(src, csv_fields(self.csv_columns, row), body)


def empty_rows(paths: list[str]) -> PingRows:
    """No rows."""
    e = np.zeros(0, dtype=np.int64)
    return PingRows(paths, e.astype(np.int32), e, e, e, np.zeros(0, dtype=bool),
                    pl.DataFrame(schema=JSON_SCHEMA), [], e.astype(np.int32), e, e, [])


def _event_time_column(ts: pl.Series) -> np.ndarray:
    """Event time of parsed rows: ``ts`` in the contract's range, else :data:`NO_TIME`."""
    t = ts.fill_null(NO_TIME).to_numpy().astype(np.int64, copy=False)
    return np.where((t >= MIN_TS_MS) & (t <= MAX_TS_MS), t, NO_TIME)


def _assemble(paths: list[str], file: int, line_parsed: np.ndarray, columns: pl.DataFrame,
              chars_parsed: np.ndarray, starts: np.ndarray, ends: np.ndarray,
              text_block: _TextBlock, line_records: list[int], records: list[Record]) -> PingRows:
    """Rows of one block in line order from its parsed rows and its records."""
    n_p, n_r = len(line_parsed), len(records)
    line = np.concatenate([line_parsed, np.asarray(line_records, dtype=np.int64)])
    parsed = np.concatenate([np.ones(n_p, bool), np.zeros(n_r, bool)])
    chars = np.concatenate([chars_parsed, np.fromiter((len(r.raw) for r in records),
                                                      dtype=np.int64, count=n_r)])
    time = np.concatenate([_event_time_column(columns["ts"]),
                           np.fromiter((NO_TIME if (t := event_time(r)) is None else t
                                        for r in records), dtype=np.int64, count=n_r)])
    t_start = np.concatenate([starts, np.zeros(n_r, np.int64)])
    t_end = np.concatenate([ends, np.zeros(n_r, np.int64)])
    t_block = np.concatenate([np.zeros(n_p, np.int32), np.full(n_r, -1, np.int32)])
    rows = PingRows(paths, np.full(n_p + n_r, file, np.int32), line, chars, time, parsed, columns,
                    records, t_block, t_start, t_end, [text_block])
    if n_r and n_p:
        rows = rows.take(np.argsort(line, kind="stable"))
    return rows


# ----------------------------------------------------------------------------------------------
# JSON Lines


def _gather_lines(block: _Block, idx: np.ndarray) -> bytes:
    """The lines ``idx`` (ascending) of a block, one per line of the result: runs of consecutive
    lines copied as they are (a LF or CRLF ends each), or, when some end in a lone CR, each line's
    content followed by a LF."""
    if not _lone_cr(block):
        if len(idx) == len(block) and len(block.data) == int(block.nexts[-1]):
            return block.data  # every line (usual): the block as it is, not a copy
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        firsts = np.concatenate([[0], breaks]).tolist()
        lasts = np.concatenate([breaks - 1, [len(idx) - 1]]).tolist()
        data, starts, nexts = block.data, block.starts, block.nexts
        return b"".join(data[int(starts[idx[f]]):int(nexts[idx[last]])]
                        for f, last in zip(firsts, lasts, strict=True))
    a = block.array
    starts, lens = block.starts[idx], block.ends[idx] - block.starts[idx]
    total = int(lens.sum())
    content_off = np.cumsum(lens) - lens
    src = np.repeat(starts - content_off, lens) + np.arange(total)
    out = np.empty(total + len(idx), dtype=np.uint8)
    nl = np.cumsum(lens + 1) - 1
    keep = np.ones(len(out), dtype=bool)
    keep[nl] = False
    out[nl] = 10
    out[keep] = a[src]
    return out.tobytes()


def _lone_cr(block: _Block) -> bool:
    """Some line of the block ends in a CR alone."""
    if not block.cr:
        return False
    single = (block.nexts - block.ends) == 1
    return bool((block.array[block.ends[single]] == 13).any())


def _plain_mask(block: _Block, first: bytes, last: bytes, forbid: bytes) -> np.ndarray:
    """Lines that are ASCII, without control characters or any byte of ``forbid``, of 2 to
    ``MAX_ROW_CHARS`` characters, beginning with ``first`` and ending with ``last`` (if given)."""
    n = len(block)
    if block.long or n == 0:
        return np.zeros(n, dtype=bool)
    a = block.array
    lens = block.ends - block.starts
    plain = (lens >= 2) & (lens <= MAX_ROW_CHARS)
    safe_s, safe_e = np.minimum(block.starts, len(a) - 1), np.maximum(block.ends - 1, 0)
    if first:
        plain &= a[safe_s] == first[0]
    if last:
        plain &= a[safe_e] == last[0]
    bad = [block.ctl]
    if not block.data.isascii():
        bad.append(np.flatnonzero(a >= 128))
    for byte in forbid:
        if block.data.find(bytes([byte])) >= 0:
            bad.append(np.flatnonzero(a == byte))
    bad_pos = np.concatenate(bad)
    if len(bad_pos):
        plain[block.line_of(bad_pos)] = False
    return plain


def _parse_json(buf: bytes) -> pl.DataFrame | None:
    """Parse JSON Lines with :data:`JSON_SCHEMA`; None if polars refuses any line."""
    try:
        return pl.read_ndjson(io.BytesIO(buf),
                              schema=JSON_SCHEMA)
    except Exception:
        return None
    except BaseException as exc:  # pyo3's PanicException derives from BaseException
        if type(exc).__name__ == "PanicException":
            return None
        raise


def _counts_per_line(buf: np.ndarray, byte: int, line_starts: np.ndarray) -> np.ndarray:
    """How many times ``byte`` occurs in each line of ``buf`` (lines start at ``line_starts``)."""
    pos = np.flatnonzero(buf == byte)
    edges = np.searchsorted(pos, np.append(line_starts, len(buf)))
    return np.diff(edges)


def _byte_counts(raw: bytes) -> tuple[int, int, int] | None:
    """``(braces, colons, quotes)``: how many ``{``, ``:`` and ``"`` bytes ``raw`` holds, None
    when it holds a ``[`` (for :func:`_faithful`; counted by polars, to a bit mask each)."""
    if raw.find(b"[") >= 0:
        return None
    byte = pl.Series(np.frombuffer(raw, dtype=np.uint8))  # the same memory
    return (byte == 123).sum(), (byte == 58).sum(), (byte == 34).sum()


def _faithful(df: pl.DataFrame, raw: bytes, counts: tuple[int, int, int] | None) -> np.ndarray:
    """Rows of ``df`` (parsed from the plain lines in ``raw``, one per line) whose parsed fields
    are exactly what Python's ``json`` reads for them.

    polars reads a number or ``true`` given for a text field as text, a list or an object as its
    JSON text, and of a key given twice the first value where Python keeps the last. In a plain
    line a string cannot hold a ``"`` (no backslash), so ``":`` ends a key and nothing else.

    - **At once** (a block written the usual way): as many colons in the block as non-null parsed
      fields, two quotes per such field and per text value, no ``[`` and one ``{`` per line: then
      every line has exactly its parsed fields as keys, each once, text as text.
    - **Line by line** otherwise (:func:`_faithful_lines`): explicit nulls and other scalar fields
      are allowed, but every colon must end a key, no ping field may be named twice, and a text
      field's value must begin with ``"``.

    ``counts``: :func:`_byte_counts` of ``raw`` (taken before the parse, while ``raw`` is still
    in the cache).
    """
    n = df.height
    nulls = df.null_count().row(0, named=True)
    fields = n * len(JSON_SCHEMA) - sum(nulls.values())
    texts = n * len(TEXT_FIELDS) - sum(nulls[c] for c in TEXT_FIELDS)
    if counts is not None and counts == (n, fields, 2 * (fields + texts)):
        return np.ones(n, dtype=bool)
    return _faithful_lines(df, np.frombuffer(raw, dtype=np.uint8))


_KEY_NAMES = [name.encode() for name in JSON_SCHEMA]


def _faithful_lines(df: pl.DataFrame, buf: np.ndarray) -> np.ndarray:
    """The line-by-line test of :func:`_faithful`: finds every key (a ``"`` followed by ``:``),
    names the ping fields among them and checks each line's keys against its parsed fields."""
    n = df.height
    nl = np.flatnonzero(buf == 10)
    line_starts = np.concatenate([[0], nl + 1])[:n]
    quote = buf == 34
    ok = _counts_per_line(buf, 123, line_starts) == 1  # only the line's own object ...
    ok &= _counts_per_line(buf, 91, line_starts) == 0  # ... and no list
    key_end = np.flatnonzero(quote[:-1] & (buf[1:] == 58))  # the closing quote of each key
    ok &= _counts_per_line(buf, 58, line_starts) == np.diff(
        np.searchsorted(key_end, np.append(line_starts, len(buf))))  # every colon ends a key
    qpos = np.flatnonzero(quote)
    key_start = qpos[np.searchsorted(qpos, key_end) - 1] + 1
    key_line = np.searchsorted(line_starts, key_end, side="right") - 1
    key_len = key_end - key_start
    after = key_end + 2  # the value's first byte, after one optional space
    after = np.where(buf[np.minimum(after, len(buf) - 1)] == 32, after + 1, after)
    value = buf[np.minimum(after, len(buf) - 1)]
    for name, raw in zip(JSON_SCHEMA, _KEY_NAMES, strict=True):
        cand = np.flatnonzero(key_len == len(raw))
        if len(cand) == 0:
            is_key = cand
        else:
            seg = buf[key_start[cand][:, None] + np.arange(len(raw))]
            is_key = cand[(seg == np.frombuffer(raw, dtype=np.uint8)).all(axis=1)]
        count = np.bincount(key_line[is_key], minlength=n)
        present = df[name].is_not_null().to_numpy()
        ok &= (count <= 1) & (~present | (count == 1))
        if name in TEXT_FIELDS and len(is_key):
            bad_text = is_key[present[key_line[is_key]] & (value[is_key] != 34)]
            ok[key_line[bad_text]] = False
    return ok


def _parse_plain_json(block: _Block, idx: np.ndarray
                      ) -> tuple[list[np.ndarray], list[pl.DataFrame], np.ndarray]:
    """Parse plain lines ``idx`` of a block: ``(parts, frames, refused)``, the lines of each part
    parsed with its frame (faithful rows only), and the lines left to the per-line path."""
    parts: list[np.ndarray] = []
    frames: list[pl.DataFrame] = []
    refused: list[np.ndarray] = []
    todo = [idx]
    while todo:
        part = todo.pop()
        if len(part) == 0:
            continue
        buf = _gather_lines(block, part)
        counts = _byte_counts(buf)  # before polars' threads take the cache
        df = _parse_json(buf)
        if df is None or len(df) != len(part):
            if len(part) <= MIN_PARSE_LINES:
                refused.append(part)
            else:
                half = len(part) // 2
                todo += [part[half:], part[:half]]
            continue
        ok = _faithful(df, buf, counts)
        if not ok.all():
            refused.append(part[~ok])
            df = df.filter(pl.Series(ok))
            part = part[ok]
        parts.append(part)
        frames.append(df)
    rest = np.sort(np.concatenate(refused)) if refused else np.zeros(0, np.int64)
    return parts, frames, rest


def _in_line_order(parts: list[np.ndarray], frames: list[pl.DataFrame]
                   ) -> tuple[np.ndarray, pl.DataFrame]:
    """Row indices parsed in several groups (``parts``, with their columns ``frames``) and
    their columns, back in line order (stable); empty when no group parsed."""
    if len(parts) > 1:
        order = np.argsort(np.concatenate(parts), kind="stable")
        return np.concatenate(parts)[order], pl.concat(frames, how="vertical")[order]
    if parts:
        return parts[0], frames[0]
    return np.zeros(0, np.int64), pl.DataFrame(schema=JSON_SCHEMA)


def _jsonl_rows(paths: list[str], file: int, block: _Block) -> PingRows:
    """The rows of a block of a JSON Lines file."""
    plain = _plain_mask(block, b"{", b"}", b"\\")
    parts, frames, refused = _parse_plain_json(block, np.flatnonzero(plain))
    slow = np.flatnonzero(~plain & (block.ends > block.starts))
    slow = np.union1d(slow, refused).astype(np.int64)
    path = paths[file]
    line_records: list[int] = []
    records: list[Record] = []
    for i in slow.tolist():
        r = jsonl_line(f"{path}:{block.first + i}", block.text(i))
        if r is not None:
            line_records.append(block.first + i)
            records.append(r)
    idx, columns = _in_line_order(parts, frames)
    starts, ends = block.starts[idx], block.ends[idx]
    return _assemble(paths, file, block.first + idx, columns, ends - starts, starts, ends,
                     _TextBlock(block.data, "jsonl"), line_records, records)


# ----------------------------------------------------------------------------------------------
# CSV


def _csv_columns(cells: pl.DataFrame, columns: list[tuple[int, str, Any]]) -> tuple[pl.DataFrame, np.ndarray]:
    """The ping fields of CSV rows (``cells``: every cell as text, ``c0``, ``c1``, ...) as the
    record reader converts them, and which rows it converts alike (the others are left to it).

    A cell is stripped and empty is null; ``ts`` and ``home_mcc`` are integers of ASCII digits,
    ``lat``/``lon`` ASCII decimals (:data:`_DECIMAL`); a cell these rules would keep as text (which
    the contract then rejects) makes its row the record reader's.
    """
    names = {name: f"c{i}" for i, name, _ in columns}
    exprs: list[pl.Expr] = []
    sure: list[pl.Expr] = []
    for name, dtype in JSON_SCHEMA.items():
        if name not in names:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
            continue
        v = pl.col(names[name]).str.strip_chars(" ")
        v = pl.when(v == "").then(None).otherwise(v)
        if dtype == pl.String:
            exprs.append(v.alias(name))
        elif dtype == pl.Int64:
            exprs.append(pl.when(v.str.contains(_INT18)).then(v).otherwise(None)
                         .cast(pl.Int64, strict=False).alias(name))
            sure.append(v.is_null() | v.str.contains(_INT18))
        else:
            exprs.append(pl.when(v.str.contains(_DECIMAL)).then(v).otherwise(None)
                         .cast(pl.Float64, strict=False).alias(name))
            if name in ("lat", "lon") and "cell" in names:  # lat/lon only count without a cell
                cell = pl.col(names["cell"]).str.strip_chars(" ")
                sure.append(cell.ne("") | v.is_null() | v.str.contains(_DECIMAL))
            else:
                sure.append(v.is_null() | v.str.contains(_DECIMAL))
    out = cells.select(*exprs, _sure=pl.all_horizontal(sure) if sure else pl.lit(True))
    ok = out["_sure"].fill_null(False).to_numpy()
    return out.drop("_sure"), ok


def _parse_csv(buf: bytes, width: int) -> pl.DataFrame | None:
    schema = {f"c{i}": pl.String for i in range(width)}
    try:
        return pl.read_csv(io.BytesIO(buf), has_header=False, schema=schema,
                           quote_char=None, separator=",", empty_string_is_null=False,
                           raise_if_empty=False, truncate_ragged_lines=False)
    except Exception:
        return None
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":
            return None
        raise


class _CsvFile:
    """A CSV ping file read block by block: runs of plain lines parsed by polars, the other rows
    by :class:`~stream.sources.ping_files.CsvRows` from the same lines (a row it reads may run on
    over lines and blocks; plain parsing resumes at the first plain line that starts a row)."""

    def __init__(self, paths: list[str], file: int, source: LineSource) -> None:
        self.paths = paths
        self.file = file
        self.source = source
        self.slow = CsvRows(source)  # type: ignore[arg-type]  # a TextInput-like line source
        self.records = self.slow.records()
        self._plain: tuple[_Block, np.ndarray] | None = None
        self._header_line = b""

    def _plain_lines(self, block: _Block) -> np.ndarray:
        if self._plain is not None and self._plain[0] is block:
            return self._plain[1]
        header = self.slow.header
        assert header is not None
        plain = _plain_mask(block, b"", b"", b'"')
        if plain.any():
            a = block.array
            commas = _counts_per_line(a, 44, block.starts)
            plain &= commas == len(header) - 1
            same = plain & (block.ends - block.starts == len(self._header_line))
            if same.any():
                rows = np.flatnonzero(same)
                seg = a[block.starts[rows][:, None] + np.arange(len(self._header_line))]
                plain[rows[(seg == np.frombuffer(self._header_line, np.uint8)).all(axis=1)]] = False
        self._plain = (block, plain)
        return plain

    def rows(self, period: Period | None = None) -> Iterator[PingRows]:
        """The rows, a block (and what the per-line reader read past it) at a time."""
        src = self.source
        pending: list[tuple[_Block, np.ndarray] | Record] = []
        start = None if period is None else period.start_ms
        skipping: int | None = None
        try:
            while True:  # the header (rows before it are the per-line reader's), then a row
                first = next(self.records, None)
                if first is None:
                    if pending:
                        yield self._flush(pending)
                    return
                pending.append(first)
                if self.slow.header is not None:
                    break
            self._header_line = ",".join(self.slow.header_row).encode("utf-8", "surrogateescape")
            while True:
                block = src.block
                if block is None or src.pos >= len(block):
                    if pending:
                        yield self._flush(pending)
                        pending = []
                    block = src.next_block()
                    if block is None:
                        if skipping is not None and period is not None:
                            period.skip(self.paths[self.file], skipping, src.line_no)
                        return
                    if start is not None and period is not None:
                        if self._before(block, start - period.lateness_ms):
                            skipping = block.first if skipping is None else skipping
                            src.consume(len(block))
                            continue
                        start = None
                        if skipping is not None:
                            period.skip(self.paths[self.file], skipping, block.first - 1)
                            skipping = None  # reported once
                    continue
                plain = self._plain_lines(block)
                p = src.pos
                nonplain = np.flatnonzero(~plain[p:])
                q = p + (int(nonplain[0]) if len(nonplain) else len(block) - p)
                if q > p:
                    pending.append((block, np.arange(p, q)))
                    src.consume(q)
                if q < len(block):
                    r = next(self.records, None)
                    if r is None:
                        break
                    pending.append(r)
        except InputError:
            if pending:  # the rows read before the problem go on first
                yield self._flush(pending)
            raise
        if pending:
            yield self._flush(pending)

    def _before(self, block: _Block, limit: int) -> bool:
        """Whether every row of a block (without quotes) is before ``limit`` in a sorted file:
        its last row with a valid ``ts`` is."""
        if block.data.find(b'"') >= 0 or block.long:
            return False
        header = self.slow.header
        assert header is not None
        for i in range(len(block) - 1, max(-1, len(block) - 33), -1):
            row = block.text(i).rstrip("\r\n").split(",")
            if len(row) == len(header):
                t = event_time(Record("", csv_fields(self.slow.columns, row), ""))
                if t is not None:
                    return t < limit
        return False

    def _flush(self, pending: list[tuple[_Block, np.ndarray] | Record]) -> PingRows:
        """Rows of ``pending`` (runs of plain lines and records), in line order."""
        runs: dict[int, tuple[_Block, list[np.ndarray]]] = {}
        recs: list[Record] = []
        for item in pending:
            if isinstance(item, Record):
                recs.append(item)
            else:
                runs.setdefault(id(item[0]), (item[0], []))[1].append(item[1])
        path = self.paths[self.file]
        pieces = [self._parse_block_lines(block, np.concatenate(idxs), path)
                  for block, idxs in runs.values()]
        if recs:
            e = np.zeros(0, np.int64)
            pieces.append(_assemble(self.paths, self.file, e, pl.DataFrame(schema=JSON_SCHEMA), e,
                                    e, e, _TextBlock(b"", "csv"),
                                    [int(r.source.rsplit(":", 1)[1]) for r in recs], recs))
        rows = PingRows.concat(pieces) if pieces else empty_rows(self.paths)
        if len(pieces) > 1:
            rows = rows.take(np.argsort(rows.line, kind="stable"))
        return rows

    def _parse_block_lines(self, block: _Block, idx: np.ndarray, path: str) -> PingRows:
        header = self.slow.header
        assert header is not None
        width = len(header)
        ok_parts: list[np.ndarray] = []
        frames: list[pl.DataFrame] = []
        refused: list[np.ndarray] = []
        todo = [idx]
        while todo:
            part = todo.pop()
            if len(part) == 0:
                continue
            cells = _parse_csv(_gather_lines(block, part), width)
            if cells is None or len(cells) != len(part):
                if len(part) <= MIN_PARSE_LINES:
                    refused.append(part)
                else:
                    half = len(part) // 2
                    todo += [part[half:], part[:half]]
                continue
            cols, ok = _csv_columns(cells, self.slow.columns)
            if not ok.all():
                refused.append(part[~ok])
                cols = cols.filter(pl.Series(ok))
                part = part[ok]
            ok_parts.append(part)
            frames.append(cols)
        good, columns = _in_line_order(ok_parts, frames)
        text_block = _TextBlock(block.data, "csv", self.slow.columns)
        line_records: list[int] = []
        records: list[Record] = []
        for i in (np.sort(np.concatenate(refused)).tolist() if refused else []):
            body = block.data[block.starts[i]:block.ends[i]].decode("ascii")
            line_records.append(block.first + i)
            records.append(text_block.record(f"{path}:{block.first + i}", body))
        starts, ends = block.starts[good], block.ends[good]
        return _assemble(self.paths, self.file, block.first + good, columns, ends - starts,
                         starts, ends, text_block, line_records, records)


# ----------------------------------------------------------------------------------------------
# Files, periods, chunks


@dataclass(frozen=True)
class Period:
    """The event-time period a run needs (``--from``/``--to``) and its lateness, in ms.

    For a file sorted within ``lateness_ms`` (no row more than that behind an earlier row), rows
    outside the period cannot be accepted, and the reader need not read them: a block whose last
    row with a valid ``ts`` is more than the lateness before ``start_ms`` holds only rows before
    it (skipped unparsed, its lines only counted), and once the file's progress (see
    :mod:`~stream.sources.merged_files`) reaches ``end_ms + lateness_ms`` every later row is after
    the period (the rest of the file is not read) -- unless a row read so far was further behind
    than the lateness (the file is not sorted so: it is read to its end). What was skipped is
    reported through ``on_skip(path, first_line, last_line)`` (``last_line`` None: to the end).
    """

    start_ms: int | None
    end_ms: int | None
    lateness_ms: int
    on_skip: Callable[[str, int, int | None], None] | None = None

    def skip(self, path: str, first: int, last: int | None) -> None:
        if self.on_skip is not None:
            self.on_skip(path, first, last)


def _last_event_time(block: _Block, path: str, look: int = 32) -> int | None:
    """The event time of the last JSON line of a block that has one (among its last ``look``)."""
    for i in range(len(block) - 1, max(-1, len(block) - 1 - look), -1):
        r = jsonl_line(f"{path}:{block.first + i}", block.text(i))
        t = event_time(r) if r is not None else None
        if t is not None:
            return t
    return None


def file_rows(paths: list[str], file: int, period: Period | None = None) -> Iterator[PingRows]:
    """The rows of one ping file (``paths[file]``), a block at a time, in file order.

    Raises :class:`~stream.contract.InputError` for whole-file problems (as
    :func:`~stream.sources.ping_files.file_records`), after the rows before them.
    """
    path = Path(paths[file])
    kind = ping_format(path)
    source = LineSource(path)
    progress = FileProgress()
    try:
        if kind == "jsonl":
            blocks = _jsonl_blocks(paths, file, source, period)
        else:
            blocks = _CsvFile(paths, file, source).rows(period)
        ordered = True  # no row so far further behind the file's progress than the lateness
        for rows in blocks:
            if period is not None and period.end_ms is not None and len(rows) and ordered:
                before = progress.progress
                keys = progress.keys(rows.time)
                prior = np.concatenate([[keys[0] if before is None else before], keys[:-1]])
                ordered = not ((rows.time != NO_TIME)
                               & (prior - rows.time > period.lateness_ms)).any()
                past = np.flatnonzero(keys >= period.end_ms + period.lateness_ms)
                if len(past) and ordered:
                    cut = int(past[0])
                    if cut:
                        yield rows.slice(0, cut)
                    period.skip(paths[file], int(rows.line[cut]), None)
                    return
            yield rows
    finally:
        source.close()


def _jsonl_blocks(paths: list[str], file: int, source: LineSource,
                  period: Period | None) -> Iterator[PingRows]:
    start = None if period is None else period.start_ms
    skipping: int | None = None
    while True:
        if start is not None and period is not None:
            skim = source.skim()
            if skim is not None:  # before the period, a block's lines are counted, not split
                tail, first, lines, cut = skim
                t = _last_event_time(tail, paths[file])
                if t is not None and t + period.lateness_ms < start:
                    skipping = first if skipping is None else skipping
                    source.skip_skimmed(lines, cut)
                    continue
        block = source.next_block()
        if block is None:
            if skipping is not None and period is not None:  # the whole file was before
                period.skip(paths[file], skipping, source.line_no)
            break
        if start is not None and period is not None:
            t = _last_event_time(block, paths[file])
            if t is not None and t + period.lateness_ms < start:
                skipping = block.first if skipping is None else skipping
                continue
            start = None  # the period has begun: read the rest
            if skipping is not None:
                period.skip(paths[file], skipping, block.first - 1)
                skipping = None  # reported once
        yield _jsonl_rows(paths, file, block)


def _cut_points(chars: np.ndarray, n0: int, c0: int, chunk_rows: int, chunk_chars: int) -> list[int]:
    """Where chunks end among rows of sizes ``chars``, a chunk already holding ``n0`` rows of
    ``c0`` characters: after the row that makes ``chunk_rows`` rows or ``chunk_chars``
    characters (the rule of :func:`~stream.sources.ping_files.read_records`)."""
    cuts = []
    cum = np.cumsum(chars)
    base_i, base_c = 0, 0
    n, c = n0, c0
    while True:
        by_rows = base_i + (chunk_rows - n) - 1
        by_chars = int(np.searchsorted(cum, base_c + (chunk_chars - c), side="left"))
        end = min(by_rows, by_chars)
        if end >= len(chars):
            return cuts
        cuts.append(end + 1)
        base_i, base_c = end + 1, int(cum[end])
        n, c = 0, 0


def _chunks(blocks: Iterable[PingRows], chunk_rows: int,
            chunk_chars: int) -> Iterator[PingRows]:
    """Rows cut into chunks exactly as :func:`~stream.sources.ping_files.read_records` cuts
    records; on an InputError the rows read before it come first."""
    held: list[PingRows] = []
    n, c = 0, 0
    try:
        for rows in blocks:
            lo = 0
            for cut in _cut_points(rows.chars, n, c, chunk_rows, chunk_chars):
                held.append(rows.slice(lo, cut))
                yield PingRows.concat(held)
                held, n, c, lo = [], 0, 0, cut
            if lo < len(rows):
                rest = rows.slice(lo, len(rows))
                held.append(rest)
                n += len(rest)
                c += int(rest.chars.sum())
    except InputError:
        if n:
            yield PingRows.concat(held)
        raise
    if n:
        yield PingRows.concat(held)


class _ColumnarCursor(RowsCursor):
    """A file being merged, read as :class:`PingRows` (the rows and blocks of the record
    reader's cursor, :class:`~stream.sources.merged_files.RowsCursor`)."""

    def __init__(self, index: int, path: Path, first_ts: int | None, max_jump_ms: int,
                 paths: list[str], period: Period | None) -> None:
        super().__init__(index, path, first_ts, max_jump_ms)
        self.paths = paths
        self.period = period
        self._stream: Iterator[PingRows] | None = None
        self._piece: PingRows | None = None
        self.rows: PingRows = empty_rows(paths)

    def open(self) -> None:
        self._stream = file_rows(self.paths, self.index, self.period)
        self.opened = True

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()
        self.done = True

    def read(self, rows: int) -> None:
        """Up to ``rows`` rows, or up to the row that brings them to ``BLOCK_CHARS``
        characters; :attr:`done` when the file ends before."""
        assert self._stream is not None
        got: list[PingRows] = []
        n, c = 0, 0
        try:
            while True:
                if self._piece is None or len(self._piece) == 0:
                    self._piece = next(self._stream, None)
                    if self._piece is None:
                        self.close()
                        break
                    continue
                piece = self._piece
                cum = np.cumsum(piece.chars)
                by_chars = int(np.searchsorted(cum, BLOCK_CHARS - c, side="left")) + 1
                take = min(rows - n, by_chars, len(piece))
                got.append(piece.slice(0, take))
                self._piece = piece.slice(take, len(piece))
                n += take
                c += int(cum[take - 1])
                if n >= rows or c >= BLOCK_CHARS:
                    break
        except InputError:  # the file broke: keep what was read of it
            self.done = True
            raise
        finally:
            if got:
                block = PingRows.concat(got)
                self._add(block, block.time)

    def held(self) -> int:
        return len(self.rows)

    def held_chars(self) -> int:
        return int(self.rows.chars.sum())

    def _append(self, block: PingRows) -> None:
        self.rows = PingRows.concat([self.rows, block])

    def _split(self, n: int) -> PingRows:
        head = self.rows.slice(0, n)
        self.rows = self.rows.slice(n, len(self.rows))
        return head


def _first_event_time(paths: list[str], file: int, period: Period | None,
                      look: int) -> int | None:
    """The first event time among a file's first ``look`` rows (after what the period skips)."""
    seen = 0
    it = file_rows(paths, file, Period(period.start_ms, None, period.lateness_ms)
                   if period is not None else None)
    try:
        for rows in it:
            valid = np.flatnonzero(rows.time[:look - seen] != NO_TIME)
            if len(valid):
                return int(rows.time[valid[0]])
            seen += len(rows)
            if seen >= look:
                return None
        return None
    finally:
        it.close()


def _join(parts: list[PingRows], keys: list[np.ndarray]) -> PingRows:
    """Rows of several files merged: by progress, then file, then row. When the parts follow
    each other in time (a chunk-level merge) they are only concatenated."""
    rows = PingRows.concat(parts)
    k = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    if len(k) > 1 and not (k[1:] >= k[:-1]).all():
        rows = rows.take(np.argsort(k, kind="stable"))
    return rows


def read_columns(paths: Iterable[str | Path], chunk_rows: int = 100_000,
                 chunk_chars: int = CHUNK_CHARS, period: Period | None = None,
                 ahead: bool = False) -> Iterator[PingRows]:
    """Chunks of rows of ping files: exactly the chunks of
    :func:`~stream.sources.ping_files.read_records` (the same rows in the same order, cut alike),
    as :class:`PingRows`. With a ``period``, rows a file sorted within the lateness cannot have in
    the period are skipped (see :class:`Period`). ``ahead``: read and parse the next chunk in a
    thread while the caller works on this one (one chunk more in memory).

    Raises :class:`~stream.contract.InputError` as ``read_records`` does.
    """
    chunks = _read_columns(paths, chunk_rows, chunk_chars, period)
    if ahead:
        yield from ReadAhead(chunks)
    else:
        yield from chunks


def read_prepared(paths: Iterable[str | Path], prepare: Callable[[PingRows], T],
                  chunk_rows: int = 100_000, chunk_chars: int = CHUNK_CHARS,
                  period: Period | None = None, reading: ReadAhead | None = None
                  ) -> Iterator[tuple[PingRows, T]]:
    """The chunks of :func:`read_columns`, each with ``prepare(chunk)``, made ahead by two
    threads, a pipeline: one reads and parses the next chunk while the other prepares the one
    before it (e.g. a decoder's checks and keys,
    :meth:`~stream.decode.validate.PingDecoder.prepare_rows`: ``prepare`` must touch nothing the
    caller changes meanwhile) and the caller works on the one before that (at most two chunks
    more in memory than the caller's). ``reading``: the chunks of ``paths`` being read already
    (:func:`start_reading`, e.g. while the caller loaded what ``prepare`` needs), used instead of
    reading them here (the other arguments are then not used). Raises what ``read_columns`` or
    ``prepare`` raise, after the chunks before."""
    chunks = reading if reading is not None else start_reading(paths, chunk_rows, chunk_chars,
                                                                period)

    def prepared() -> Iterator[tuple[PingRows, T]]:
        try:
            for chunk in chunks:
                yield chunk, prepare(chunk)
        finally:  # prepare failed, or the caller stopped: the reading thread stops too
            chunks.close()

    yield from ReadAhead(prepared(), "defacto-prepare")


def start_reading(paths: Iterable[str | Path], chunk_rows: int = 100_000,
                  chunk_chars: int = CHUNK_CHARS, period: Period | None = None,
                  hold: int = 1) -> ReadAhead:
    """The chunks of :func:`read_columns`, read and parsed by a thread that starts now (see
    :class:`ReadAhead`; up to ``hold`` chunks ahead until the first is taken, then one), for
    :func:`read_prepared`. Whoever starts it closes it (:meth:`ReadAhead.close`)."""
    return ReadAhead(_read_columns(paths, chunk_rows, chunk_chars, period), "defacto-read", hold)


_DONE = object()


_WAKE_S = 0.1
"""How often a :class:`ReadAhead`'s thread or its caller, waiting on the queue, checks that it was
not closed."""


def _put(out: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` into ``out`` unless ``stop`` is set first; whether it was put."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_WAKE_S)
            return True
        except queue.Full:
            continue
    return False


def _produce(chunks: Iterator[Any], out: queue.Queue[Any], stop: threading.Event) -> None:
    """The thread of a :class:`ReadAhead`: puts the items of ``chunks`` into ``out``, then
    :data:`_DONE` or the exception that ended them, until ``stop`` is set."""
    try:
        for chunk in chunks:
            if not _put(out, chunk, stop) or stop.is_set():
                return
        item: Any = _DONE
    except BaseException as exc:
        item = exc
    finally:
        if stop.is_set():
            chunks.close()
    _put(out, item, stop)


class ReadAhead(Iterator[Any]):
    """The items of ``chunks``, produced ahead by a thread started at once (polars and numpy
    release the GIL while parsing, so reading overlaps the caller's work): up to ``hold`` items
    wait until the caller takes the first (e.g. chunks read while the caller loads its
    reference data), then one (plus the one being made). The exception that ends ``chunks``
    comes after the items before it. :meth:`close` (also at the end of the items or on their
    error) stops the thread."""

    def __init__(self, chunks: Iterator[Any], name: str = "defacto-read-ahead",
                 hold: int = 1) -> None:
        if hold < 1:
            raise ValueError(f"hold must be at least 1, got {hold}")
        self._out: queue.Queue[Any] = queue.Queue(maxsize=hold)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=_produce, args=(chunks, self._out, self._stop),
                                        name=name, daemon=True)
        self._thread.start()

    def __next__(self) -> Any:
        if self._ended:
            raise StopIteration
        while True:  # woken by close() from another thread too (e.g. after an interrupt)
            try:
                item = self._out.get(timeout=_WAKE_S)
                break
            except queue.Empty:
                if self._stop.is_set():
                    self._ended = True
                    raise StopIteration from None
        if self._out.maxsize != 1:  # the first item taken: from now on, one waits
            with self._out.mutex:
                self._out.maxsize = 1
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (it ends the item it is making) and wait for it; no more items."""
        self._ended = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __del__(self) -> None:
        self._stop.set()


def _read_columns(paths: Iterable[str | Path], chunk_rows: int, chunk_chars: int,
                  period: Period | None) -> Iterator[PingRows]:
    files = ping_paths(paths)
    names = [str(p) for p in files]
    if len(files) == 1:
        blocks: Iterable[PingRows] = file_rows(names, 0, period)
    else:
        cursors = [_ColumnarCursor(i, p, _first_event_time(names, i, period, PEEK_ROWS),
                                   WindowSettings.max_jump_ms, names, period)
                   for i, p in enumerate(files)]
        blocks = merge_cursors(cursors, _join)
    yield from _chunks(blocks, chunk_rows, chunk_chars)
