"""Opening text input files as people save them, the same way for every loader.

Every loader (ping files, reference CSVs, regions GeoJSON) opens its files with :func:`open_text`,
so all of them read text alike:

- **encoding**: UTF-8. A byte-order mark at the start of the file is dropped (Python's
  ``utf-8-sig``, what Excel's "CSV UTF-8" writes), and so is one at the start of any line (files
  joined with ``cat``). UTF-16/32 text (a UTF-16 byte-order mark) is refused with a hint. Bytes
  that are not UTF-8 are an :class:`~stream.contract.InputError` naming the line for the
  reference loaders; the ping reader rejects only the row that holds them (see
  :meth:`TextInput.raw_lines`).
- **compression**: gzip is recognized by its magic bytes, whatever the name; a truncated or
  corrupt gzip stream is an ``InputError`` naming the line where it broke (the lines before it
  were read).
- **line ends**: ``\\n``, ``\\r\\n`` or ``\\r`` (Python's universal newlines, kept untranslated
  as the ``csv`` module wants, so quoted fields may hold line breaks); a missing newline at the
  end of the file is fine.
- **line length**: a line of a reference file may hold at most :data:`MAX_LINE_CHARS`
  characters (a longer one is refused); the ping reader asks for its own, smaller limit per row
  (:meth:`TextInput.raw_lines`). A longer line is never held in memory whole.
"""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TextIO

from stream.contract import InputError

MAX_LINE_CHARS = 1 << 24
"""Longest line (without its line end) of a reference text file, in characters (16 Mi: a truth
line of a scenario with many regions, a one-line GeoJSON read by line would fit)."""

GZIP_MAGIC = b"\x1f\x8b"
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
BOM = "\ufeff"
LINE_ENDS = ("\n", "\r")

BYTE_ERRORS = (OSError, EOFError, zlib.error)
"""What reading bytes can raise: I/O errors, a truncated (EOFError) or corrupt gzip stream."""


class LongLine(str):
    """The first ``max_chars`` characters of a line that was longer (see
    :meth:`TextInput.raw_lines`; its rest was skipped, never held in memory)."""


def invalid_utf8(text: str) -> tuple[int, int] | None:
    """``(column, byte)`` of the first byte that was not UTF-8 in ``text`` (read with
    ``surrogateescape``: such a byte is the lone surrogate U+DC80..U+DCFF), None if there is none.

    ``column`` counts characters from 1.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start + 1, ord(text[exc.start]) - 0xDC00
    return None


def _line_ends(text: str) -> int:
    """How many line ends (``\\n``, ``\\r\\n`` or ``\\r``) ``text`` holds."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def read_problem(exc: BaseException) -> str:
    """One line about an exception raised while reading bytes (gzip, I/O)."""
    if isinstance(exc, EOFError):
        return "the compressed data ends early (truncated .gz file)"
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return f"corrupt gzip data ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read ({exc.strerror})"
    return f"cannot read ({type(exc).__name__}: {exc})"


class TextInput:
    """A text input file opened by :func:`open_text`; a context manager.

    Iterating it (``csv.reader(fh)``) yields its lines with their line ends and ``read()``
    returns the whole text, both raising :class:`~stream.contract.InputError`
    ``FILE:LINE: what`` for bytes that are not UTF-8 (and iterating, for lines over
    :data:`MAX_LINE_CHARS`).
    :meth:`raw_lines` is the lenient form for readers that judge each line themselves.
    ``line_no`` is the number of the last line read (physical lines, from 1).
    """

    def __init__(self, path: Path, stream: IO[str], raw: IO[bytes]) -> None:
        self.path = path
        self.line_no = 0
        self._stream = stream
        self._raw = raw

    def __enter__(self) -> TextInput:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._stream.close()
        self._raw.close()

    def binary(self) -> IO[bytes]:
        """The file's bytes after the opener's checks (gzip already undone), for a reader that
        splits lines itself (:mod:`stream.sources.columnar_files`); never mix with the text reads
        above. Its ``read1`` raises what :func:`read_problem` describes."""
        return self._stream.buffer

    def _broken(self, exc: BaseException) -> InputError:
        """The byte-level error ``exc`` met reading the next line, as a one-line InputError."""
        return InputError(f"{self.path}:{self.line_no + 1}: {read_problem(exc)}; the lines "
                          "before it were read")

    def raw_lines(self, max_chars: int = MAX_LINE_CHARS) -> Iterator[str]:
        """Physical lines with their line ends (the last one may have none), a leading BOM
        dropped; :attr:`line_no` counts them.

        Bytes that are not UTF-8 come through as lone surrogates (U+DC80..U+DCFF, Python's
        ``surrogateescape``; find them with :func:`invalid_utf8`). A line longer than
        ``max_chars`` characters comes as a :class:`LongLine` of its first ``max_chars``; the
        rest is read and dropped piece by piece. Raises InputError for a truncated or corrupt
        gzip stream or an I/O error, after the lines before it.
        """
        limit = max_chars + 2  # room for the content and a "\r\n"
        readline = self._stream.readline
        skip_lf = False  # the last piece ended in "\r" at the limit: a lone "\n" completes it
        try:
            while True:
                line = readline(limit)
                if skip_lf:
                    skip_lf = False
                    if line == "\n":
                        continue
                if not line:
                    return
                self.line_no += 1
                if len(line) > max_chars:
                    line, skip_lf = self._long(line, max_chars, limit)
                if line[:1] == BOM:
                    line = type(line)(line[1:])
                yield line
        except BYTE_ERRORS as exc:
            raise self._broken(exc) from None

    def _long(self, line: str, max_chars: int, limit: int) -> tuple[str, bool]:
        """A line read with ``readline(limit)`` that holds more than ``max_chars`` characters:
        itself if only its line end is over, else a :class:`LongLine` (its rest read and
        dropped); and whether its last piece ended in a carriage return at the limit."""
        piece = line
        while len(piece) == limit and not piece.endswith(LINE_ENDS):
            piece = self._stream.readline(limit)
        cr_at_limit = len(piece) == limit and piece.endswith("\r")
        if piece is line and len(line.rstrip("\r\n")) <= max_chars:
            return line, cr_at_limit
        return LongLine(line[:max_chars]), cr_at_limit

    def __iter__(self) -> Iterator[str]:
        for line in self.raw_lines():
            if isinstance(line, LongLine):
                raise InputError(f"{self.path}:{self.line_no}: line longer than "
                                 f"{MAX_LINE_CHARS:,} characters")
            bad = invalid_utf8(line)
            if bad is not None:
                raise InputError(f"{self.path}:{self.line_no}: not UTF-8 text")
            yield line

    def read(self) -> str:
        """The whole (rest of the) text. Raises InputError for bytes that are not UTF-8."""
        try:
            text = self._stream.read()
        except BYTE_ERRORS as exc:
            raise self._broken(exc) from None
        bad = invalid_utf8(text)
        if bad is not None:
            line = self.line_no + _line_ends(text[:bad[0] - 1]) + 1
            raise InputError(f"{self.path}:{line}: not UTF-8 text")
        self.line_no += _line_ends(text)
        return text


def open_text(path: str | Path) -> TextInput:
    """Open a text input file for reading (see the module docstring for what is accepted).

    Raises :class:`~stream.contract.InputError` when the file does not exist or cannot be read,
    is a gzip stream broken at its start, or is UTF-16/32 text.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}:1: cannot read (a directory, not a file)")
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}:1: {read_problem(exc)}") from None
    try:
        binary: io.BufferedReader | gzip.GzipFile = \
            gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == GZIP_MAGIC else raw
        head = binary.peek(4)[:4]
    except BYTE_ERRORS as exc:
        raw.close()
        raise InputError(f"{path}:1: {read_problem(exc)}") from None
    if head.startswith(UTF16_BOMS):
        raw.close()
        raise InputError(f"{path}: UTF-16 text; save it as UTF-8 (in Excel: \"CSV UTF-8\")")
    stream = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
    return TextInput(path, stream, raw)


SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "bars"}
"""Column separators other than the comma that spreadsheets export (a CSV header read with commas
is then one column holding them)."""


def header_excerpt(header: list[str]) -> str:
    """A CSV header as an error quotes it: ``'a,b,c'`` (up to 200 characters), ``'{"type":...'``
    (60) for a JSON document read as a CSV, or ``empty``."""
    if not header:
        return "empty"
    text = ",".join(header)
    cut = 60 if _is_json(header) else 200
    return repr(text[:cut] + ("..." if len(text) > cut else ""))


def separator_hint(header: list[str],
                   json_fix: str = "a GeoJSON of regions goes to --regions") -> str:
    """For an error about a CSV header's columns: how to fix a file whose columns are separated
    by something other than commas (``header``: the names read with commas), or that is JSON
    (``json_fix``: what to do then; by default, for a reference file), else ``""``."""
    if _is_json(header):
        return f"; the file is JSON, not CSV ({json_fix})"
    if len(header) != 1:
        return ""
    for sep, name in SEPARATORS.items():
        if sep in header[0]:
            return (f"; its columns are separated by {name}: defacto reads comma-separated "
                    "files (export as \"CSV (comma delimited)\")")
    return ""


def _is_json(header: list[str]) -> bool:
    return bool(header) and header[0].lstrip().startswith(("{", "["))


def open_output(path: str | Path, newline: str | None = None) -> TextIO:
    """Open an output file for writing (UTF-8; ``newline`` as :func:`open`'s), making its
    folder; raises :class:`~stream.contract.InputError` ``PATH: cannot write (...)`` when it
    cannot be."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w", encoding="utf-8", newline=newline)
    except FileExistsError:
        raise InputError(f"{path}: cannot write (a file stands where its folder would be)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
