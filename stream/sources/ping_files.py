"""Ping files as chunks of records: JSON Lines or CSV, optionally gzipped.

This module states what a ping file may hold and reads it row by row; ``defacto replay`` and
``calibrate`` read files with :mod:`stream.sources.columnar_files`, which gives the same rows and
values as columns and hands the rows it cannot vouch for to the per-line code here
(:func:`jsonl_line`, :class:`CsvRows`). ``defacto produce`` forwards records as they are.

One file is read in file order; several files given together are one input, merged by event
time (:mod:`stream.sources.merged_files`). Files are read as people save them
(:mod:`stream.sources.text_files`: BOM, CRLF/CR, gzip). A row that cannot be parsed still becomes
a :class:`~stream.contract.Record` (with ``fields`` None and ``error`` saying why in one line, never
quoting the row), so the decoder rejects it with its line number instead of losing it; nothing in
a row stops the reading. Row rules:

- a row (line) may hold at most :data:`MAX_ROW_CHARS` characters; a longer one is one bad row
  (``malformed_json`` / ``malformed_csv``), never held in memory whole;
- bytes that are not UTF-8 make their row bad (``malformed_json`` / ``malformed_csv``);
- JSON Lines: one JSON object per line; blank lines are skipped; a line that is not JSON
  (including numbers of more than 4,300 digits and nesting deeper than Python's recursion limit)
  or not an object is bad;
- CSV: a header line naming at least ``device``, ``ts`` and ``operator`` (other columns
  ignored), RFC 4180 quoting (a quoted field may span lines); blank lines and repeats of the
  header line (files joined with ``cat``) are skipped; a row with another number of columns is
  bad. ``ts`` and ``home_mcc`` are integers only when written with ASCII digits (an optional
  ``-``, at most :data:`MAX_CSV_DIGITS` digits), ``lat``/``lon`` numbers only when ASCII decimal
  notation; anything else stays text and the contract rejects it (``bad_ts``, ...).

Whole-file problems (unknown file type, missing file, a header without the needed columns, a
truncated or corrupt gzip stream, a file named twice) raise :class:`~stream.contract.InputError`
``FILE[:LINE]: what``, after the rows before the problem were yielded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stream.contract import PING_FIELDS, InputError, Record
from stream.sources.merged_files import merge_by_event_time
from stream.sources.text_files import (
    LongLine,
    TextInput,
    invalid_utf8,
    open_text,
    separator_hint,
)

MAX_ROW_CHARS = 65_536
"""Longest row of a ping file, in characters, its final line end not counted (64 Ki; a CSV row
spanning lines counts all of them). A ping row takes 60..400."""
MAX_CSV_DIGITS = 32
"""Longest integer (``ts``, ``home_mcc``) converted from a CSV cell; a longer one stays text."""
CHUNK_CHARS = 1 << 25
"""A chunk of records holds about this many characters of rows at most (32 Mi; 100,000 rows of a
usual file take 10 Mi), which bounds memory even for rows near :data:`MAX_ROW_CHARS`."""
REQUIRED_COLUMNS = ("device", "ts", "operator")


def ping_format(path: str | Path) -> str:
    """``jsonl`` or ``csv`` from a file name (``.gz`` allowed on either)."""
    name = str(path).lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if Path(path).is_dir():
        raise InputError(f"{path}: a folder; give the ping files in it (e.g. {path}/*.jsonl)")
    raise InputError(f"{path}: unknown ping file type (use .jsonl, .ndjson or .csv, "
                     "optionally .gz)")


def ping_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The ping files of one input, checked: each of a known type (:func:`ping_format`) and
    named once. Raises :class:`~stream.contract.InputError` ``FILE: given twice ...``."""
    files = [Path(p) for p in paths]
    seen: dict[Path, Path] = {}
    for path in files:
        ping_format(path)
        key = path.resolve()
        if key in seen:
            also = "" if str(seen[key]) == str(path) else f" (also as {seen[key]})"
            raise InputError(f"{path}: given twice{also}; its pings would count twice")
        seen[key] = path
    return files


def file_records(path: str | Path) -> Iterator[Record]:
    """The records of one ping file, in file order (``source`` is ``FILE:LINE``).

    Raises :class:`~stream.contract.InputError` for whole-file problems (see the module
    docstring), after the records before the problem.
    """
    kind = ping_format(path)
    with open_text(path) as text:
        yield from (_jsonl_records(text) if kind == "jsonl" else _csv_records(text))


def read_records(paths: Iterable[str | Path], chunk_rows: int = 100_000,
                 chunk_chars: int = CHUNK_CHARS) -> Iterator[list[Record]]:
    """Yield chunks of at most ``chunk_rows`` records (and about ``chunk_chars`` characters of
    rows) from ping files.

    One file comes in file order; several are merged by event time
    (:func:`~stream.sources.merged_files.merge_by_event_time`). Raises
    :class:`~stream.contract.InputError` for an unknown file type, a file named twice, a missing
    file (before any record), a CSV header without ``device``, ``ts`` and ``operator`` or a
    broken gzip stream (after the records read before it); bad rows are records, never errors.
    """
    files = ping_paths(paths)
    if len(files) == 1:
        rows = file_records(files[0])
    else:
        rows = (r for block in merge_by_event_time(files, file_records) for r in block)
    chunk: list[Record] = []
    chars = 0
    try:
        for r in rows:
            chunk.append(r)
            chars += len(r.raw)
            if len(chunk) >= chunk_rows or chars >= chunk_chars:
                yield chunk
                chunk, chars = [], 0
    except InputError:
        if chunk:  # what was read before the problem goes on first
            yield chunk
        raise
    if chunk:
        yield chunk


def _escaped(text: str) -> str:
    """``text`` read with ``surrogateescape``, its non-UTF-8 bytes as ``\\xNN`` (encodable)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_JSON = json.JSONDecoder()


def json_record(src: str, body: str, long: bool) -> Record:
    """One JSON Lines line (stripped, not blank; ``long``: only its start) as a record."""
    if long:
        return Record(src, None, _escaped(body), f"malformed JSON: line longer than "
                                                 f"{MAX_ROW_CHARS:,} characters")
    bad = invalid_utf8(body)
    if bad is not None:
        return Record(src, None, _escaped(body),
                      f"malformed JSON: not UTF-8 (byte 0x{bad[1]:02x} at column {bad[0]})")
    try:
        obj, end = _JSON.raw_decode(body)
    except json.JSONDecodeError as exc:
        return Record(src, None, body, f"malformed JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return Record(src, None, body, "malformed JSON: nested too deeply")
    except ValueError:  # an integer over Python's 4,300-digit conversion limit
        return Record(src, None, body, "malformed JSON: a number with too many digits")
    if end != len(body):
        column = len(body) - len(body[end:].lstrip()) + 1
        return Record(src, None, body, f"malformed JSON: Extra data (column {column})")
    if not isinstance(obj, dict):
        return Record(src, None, body, "not a JSON object")
    return Record(src, obj, body)


def jsonl_line(src: str, line: str) -> Record | None:
    """One JSON Lines line as :meth:`~stream.sources.text_files.TextInput.raw_lines` gives it
    (a :class:`~stream.sources.text_files.LongLine` if cut) as a record; None if blank."""
    body = line.strip()
    return json_record(src, body, type(line) is LongLine) if body else None


def _jsonl_records(text: TextInput) -> Iterator[Record]:
    path = text.path
    for line in text.raw_lines(MAX_ROW_CHARS):
        record = jsonl_line(f"{path}:{text.line_no}", line)
        if record is not None:
            yield record


def _csv_int(text: str) -> Any:
    """``text`` (stripped, not empty) as an int if it is ASCII digits with an optional ``-``
    (at most :data:`MAX_CSV_DIGITS`), else as it is. (``"²".isdigit()`` is true but ``int()``
    fails on it; ``int()`` takes ``"١٢"``, ``"1_2"``, ``"+12"``; and refuses 4,301 digits.)"""
    digits = text[1:] if text[0] == "-" else text
    if digits.isascii() and digits.isdigit() and len(digits) <= MAX_CSV_DIGITS:
        return int(text)
    return text


def _csv_float(text: str) -> Any:
    """``text`` (stripped, not empty) as a float if it is ASCII decimal notation, else as it is
    (``float()`` also takes ``"1_0"`` and non-ASCII digits)."""
    if text.isascii() and "_" not in text:
        try:
            return float(text)
        except ValueError:
            pass
    return text


def _csv_str(text: str) -> str:
    return text


_CSV_CONVERT = {"ts": _csv_int, "home_mcc": _csv_int, "lat": _csv_float, "lon": _csv_float}


def csv_fields(columns: list[tuple[int, str, Any]], row: list[str]) -> dict[str, Any]:
    """A CSV row's ping fields: each of ``columns`` ``(index, name, convert)``, empty as None."""
    fields: dict[str, Any] = {}
    for i, name, convert in columns:
        v = row[i].strip()
        fields[name] = convert(v) if v else None
    return fields


class _RowTooLongError(Exception):
    """A CSV row over :data:`MAX_ROW_CHARS` (raised out of the ``csv`` reader's line feed)."""


class _CsvFeed:
    """The lines of a CSV file for ``csv.reader``, watching the row being read: its first line,
    its lines (``parts``), its size (over :data:`MAX_ROW_CHARS`: :class:`_RowTooLongError`) and
    its first non-UTF-8 byte."""

    def __init__(self, text: TextInput) -> None:
        self.text = text
        self.lines = text.raw_lines(MAX_ROW_CHARS)
        self.start = 1
        self.chars = 0
        self.parts: list[str] = []
        self.bad: tuple[int, int] | None = None

    def next_row(self) -> None:
        """The next row starts at the next line."""
        self.start = self.text.line_no + 1
        self.chars = 0
        self.parts = []
        self.bad = None

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.chars += len(line)
            self.parts.append(line)
            if type(line) is LongLine or (self.chars > MAX_ROW_CHARS and  # its end not counted
                                          self.chars - len(line) + len(line.rstrip("\r\n")) > MAX_ROW_CHARS):
                raise _RowTooLongError
            if self.bad is None:
                self.bad = invalid_utf8(line)
            yield line

    def text_read(self) -> str:
        """What was read of the row (at most :data:`MAX_ROW_CHARS` characters, encodable)."""
        return _escaped("".join(self.parts)[:MAX_ROW_CHARS])


def _csv_header(feed: _CsvFeed, row: list[str]) -> list[str]:
    """The header's column names (stripped). Raises InputError when it lacks a required column,
    names one twice or is not UTF-8 (the header line is never quoted: it may be a data row)."""
    where = f"{feed.text.path}:{feed.start}"
    if feed.bad is not None:
        raise InputError(f"{where}: the header line is not UTF-8 text")
    header = [h.strip() for h in row]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{where}: missing column(s) {', '.join(missing)} (the first line must "
                         f"be a header naming the columns, at least {', '.join(REQUIRED_COLUMNS)})"
                         f"{separator_hint(header, 'JSON Lines pings: name the file .jsonl')}")
    twice = sorted({h for h in header if h in PING_FIELDS and header.count(h) > 1})
    if twice:
        raise InputError(f"{where}: column(s) {', '.join(twice)} named twice in the header")
    return header


class CsvRows:
    """The rows of a CSV ping file as records, read from its lines one row at a time.

    ``text`` gives the lines (:meth:`~stream.sources.text_files.TextInput.raw_lines`), its
    ``path`` and the number of the last line read (``line_no``); it may be a
    :class:`~stream.sources.text_files.TextInput` or any reader that keeps those (the columnar
    reader hands rows spanning lines and unusual lines to this one). After the header row,
    :attr:`header` holds its column names and :attr:`columns` the ping fields among them as
    ``(index, name, convert)``.
    """

    def __init__(self, text: TextInput) -> None:
        self.text = text
        self.feed = _CsvFeed(text)
        self.header: list[str] | None = None
        self.header_row: list[str] = []
        self.columns: list[tuple[int, str, Any]] = []

    def records(self) -> Iterator[Record]:
        """The records of the rows still to come (raises InputError for a bad header)."""
        text, feed = self.text, self.feed
        while True:  # a new csv reader after each row too long (its line feed raised)
            reader = csv.reader(feed)
            feed.next_row()
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except _RowTooLongError:
                    src = f"{text.path}:{feed.start}"
                    yield Record(src, None, feed.text_read(),
                                 f"row longer than {MAX_ROW_CHARS:,} characters")
                    break
                except csv.Error as exc:
                    yield Record(f"{text.path}:{feed.start}", None, feed.text_read(),
                                 f"unreadable CSV row ({exc})")
                    feed.next_row()
                    continue
                if not row or (len(row) == 1 and not row[0].strip()):
                    feed.next_row()
                    continue
                src = f"{text.path}:{feed.start}"
                if self.header is None:
                    self.header, self.header_row = _csv_header(feed, row), row
                    self.columns = [(i, h, _CSV_CONVERT.get(h, _csv_str))
                                    for i, h in enumerate(self.header) if h in PING_FIELDS]
                elif row == self.header_row:
                    pass  # the header again: files joined with `cat`
                elif feed.bad is not None:
                    yield Record(src, None, _escaped(",".join(row)),
                                 f"invalid UTF-8 (byte 0x{feed.bad[1]:02x})")
                elif len(row) != len(self.header):
                    yield Record(src, None, ",".join(row),
                                 f"expected {len(self.header)} columns, got {len(row)}")
                else:
                    yield Record(src, csv_fields(self.columns, row), ",".join(row))
                feed.next_row()


def _csv_records(text: TextInput) -> Iterator[Record]:
    yield from CsvRows(text).records()
