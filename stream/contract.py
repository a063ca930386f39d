"""The ping contract in code: fields, column dtypes, limits, rejects and their reason codes.

``schemas/ping.schema.json`` and ``schemas/README.md`` state the contract for people; this module
states it once for the code. Every reader (ping files, Kafka messages of any encoding) turns its
input into :data:`PingColumns` with the dtypes of :data:`PING_DTYPES`, and every input that breaks
the contract becomes a :class:`Reject` with one of the codes of :data:`REJECT_REASONS`: counted,
kept (reject file or dead-letter topic) and explained in one line, never dropped silently.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from estimators.presence import MAX_TS_REL_MS
from estimators.units import DAY_MS, EPOCH_MS, SECOND_MS

PING_FIELDS = ("device", "ts", "operator", "home_mcc", "cell", "lat", "lon")
"""The fields of a ping, in file column order."""

PING_DTYPES: dict[str, np.dtype[Any]] = {
    "device": np.dtype("S"),      # UTF-8 pseudonym, 1..MAX_DEVICE_BYTES bytes
    "ts": np.dtype("<i8"),        # event time, UTC ms since 1970
    "operator": np.dtype("S6"),   # MCC+MNC, 5-6 ASCII digits
    "home_mcc": np.dtype("<i2"),  # SIM's home MCC, -1 = unknown
    "cell": np.dtype("S"),        # UTF-8 cell id, 1..MAX_CELL_BYTES bytes, b"" = none
    "lat": np.dtype("<f8"),       # degrees, NaN = none (then cell)
    "lon": np.dtype("<f8"),       # degrees, NaN = none (then cell)
}
"""Column dtypes of :data:`PingColumns` (``S`` without a width: as wide as the widest value, at
most :data:`MAX_TEXT_BYTES` of that field)."""

PingColumns = dict[str, np.ndarray]
"""Pings as columns, one array of length n per field of :data:`PING_DTYPES`."""

MAX_DEVICE_BYTES = 128
"""Longest device pseudonym, in bytes of UTF-8 (128 ASCII characters: a hex SHA-256 takes 64, a
UUID 36). ``schemas/ping.schema.json`` says ``maxLength`` 128, which counts characters."""
MAX_CELL_BYTES = 64
"""Longest cell id, in bytes of UTF-8: real ids (CGI/ECGI/NCGI ``401-01-65535-268435455``, hex
ECIs, ``operator-lac-ci``) take 8..25; 64 leaves room for any operator's own format."""
MAX_TEXT_BYTES = {"device": MAX_DEVICE_BYTES, "cell": MAX_CELL_BYTES, "operator": 6}
"""Widest value of each text column, in bytes: no column of :data:`PingColumns` is ever wider,
and a frame header declaring a wider column is rejected before anything is read."""
MIN_TS_MS = EPOCH_MS
MAX_TS_MS = EPOCH_MS + MAX_TS_REL_MS

REJECT_REASONS: dict[str, str] = {
    # reading
    "malformed_json": "the line or message is not a JSON object",
    "malformed_csv": "the CSV row does not have the header's columns",
    "not_a_ping_object": "JSON that is not a ping object (or an unknown control message)",
    "empty_message": "empty message value",
    "unknown_encoding": "the message is neither a frame, Avro nor JSON",
    "bad_frame": "the batch frame's layout is broken (or declares a column wider than its field)",
    "bad_avro": "the Avro message does not decode with schemas/ping.avsc",
    "bad_watermark": "the watermark control message is invalid or far ahead",
    # the ping's fields
    "missing_device": "no device field",
    "bad_device": f"device must be text of 1..{MAX_DEVICE_BYTES} bytes of UTF-8, not ending in NUL",
    "missing_ts": "no ts field",
    "bad_ts": "ts must be integer milliseconds since 1970",
    "ts_out_of_range": "ts outside 2020-01-01..2089 (milliseconds since 1970 expected)",
    "missing_operator": "no operator field",
    "bad_operator": "operator must be an MCC+MNC string of 5-6 digits",
    "bad_home_mcc": "home_mcc must be null or an integer 0..999",
    "bad_cell": f"cell must be text of 1..{MAX_CELL_BYTES} bytes of UTF-8",
    "missing_location": "neither cell nor lat/lon",
    "bad_coordinates": "lat must be in [-90, 90] and lon in [-180, 180]",
    # against reference data and the stream
    "unknown_cell": "cell id not in the cell plan for this operator",
    "too_many_operators": "more distinct operators than the engine holds",
    "ts_in_future": "ts too far ahead of the clock",
    "ts_ahead_of_stream": "ts too far ahead of the stream",
    "too_late": "arrived after the watermark passed a window end or night close before its time",
    "too_many_cells": "more distinct H3 cells in use at once than a partition holds (8,388,607): "
                      "use a coarser --res",
}
"""Every reject reason code with its meaning (the detail of a reject may say more)."""


class InputError(ValueError):
    """A user-facing problem with an input (file, option): the message says where and what."""


class CodecError(ValueError):
    """A message (or column set) that cannot be encoded or decoded.

    ``reason`` is a code of :data:`REJECT_REASONS` (``bad_frame``, ``bad_avro``,
    ``malformed_json``, ``not_a_ping_object``, ``unknown_encoding``, ``empty_message``,
    ``bad_watermark``); ``detail`` is one line.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Record:
    """One input row: where it came from, its parsed fields (None if unparsable), raw text.

    ``raw`` is the row as read, for forwarding it as it is (``defacto produce``); it never goes
    into a reject, which keeps only :func:`unparsable` of it. ``error`` says in one line why
    ``fields`` is None and must not quote the row.
    """

    source: str
    fields: dict[str, Any] | None
    raw: str
    error: str = ""


@dataclass(slots=True)
class Reject:
    """Input set aside: ``source`` (``file:line`` or ``topic[partition]@offset``), ``reason`` (a
    code of :data:`REJECT_REASONS`), one-line ``detail`` and ``record``, what is kept of the
    input: the fields of :func:`redacted`, :func:`unparsable`, or a description of a binary
    message. Neither ``detail`` nor ``record`` ever holds an input value that the contract does
    not know to be non-identifying; the reject file and the dead-letter topic get exactly them.
    """

    source: str
    reason: str
    detail: str
    record: str

    def to_json(self) -> str:
        """One JSON line for the reject file (always encodable as UTF-8)."""
        obj = {"source": self.source, "reason": self.reason, "detail": self.detail,
               "record": self.record}
        text = json.dumps(obj, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (e.g. in a file name): escape it
            text = json.dumps(obj)
        return text


SHOWN_FIELDS = ("ts", "operator", "home_mcc", "cell", "lat", "lon")
"""Ping fields whose values a reject record may show, each only where its value cannot be a
pseudonym or another identifier (a feed with a renamed or shifted column puts them anywhere):
``operator``, ``home_mcc``, ``lat``, ``lon`` when valid for their field; ``ts`` when valid and
not over :data:`SHOWN_TS_AHEAD_MS` ahead of the clock (a later one could be a 13-digit phone
number); ``cell`` only where the cell plan knows it (any text could be a pseudonym)."""
SHOWN_TS_AHEAD_MS = DAY_MS
MAX_SHOWN_NAMES = 10
"""At most this many names of unknown fields are listed in a reject record."""
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z_.-]{0,31}")


def describe(v: Any) -> str:
    """What kind of value ``v`` is, never the value itself: ``<text, 11 characters>``,
    ``<integer, 10 digits>``, ``<number>``, ``<null>``, ... (how rejects speak of a value they do
    not show)."""
    if v is None:
        return "<null>"
    if isinstance(v, bool):
        return "<true>" if v else "<false>"
    if isinstance(v, int):
        digits = len(str(abs(v))) if v.bit_length() < 10_000 else "over 3000"
        return f"<{'negative ' if v < 0 else ''}integer, {digits} digits>"
    if isinstance(v, float):
        return "<number>" if math.isfinite(v) else "<number, not finite>"
    if isinstance(v, str):
        nbytes = _utf8_len(v)
        if nbytes is None:
            return "<text, not valid Unicode>"
        return f"<text, {len(v)} characters>" if nbytes == len(v) else \
            f"<text, {len(v)} characters, {nbytes} bytes of UTF-8>"
    if isinstance(v, bytes):
        return f"<{len(v)} bytes, not UTF-8>"
    if isinstance(v, list):
        return f"<list, {len(v)} items>"
    if isinstance(v, dict):
        return f"<object, {len(v)} fields>"
    return f"<{type(v).__name__}>"


def field_name(name: Any) -> str | None:
    """``name`` if it may be shown as the name of an unknown field or column: 1..32 ASCII letters,
    ``_``, ``-``, ``.`` (a name with digits or other characters could itself be a pseudonym)."""
    return name if isinstance(name, str) and _FIELD_NAME.fullmatch(name) else None


def _valid(name: str, v: Any) -> bool:
    """Whether ``v`` is a valid value of the shown ping field ``name`` (null is: it shows nothing)."""
    if v is None:
        return True
    if name == "ts":
        return _is_int(v) and MIN_TS_MS <= v <= MAX_TS_MS
    if name == "operator":
        return isinstance(v, str) and v.isascii() and v.isdigit() and 5 <= len(v) <= 6
    if name == "home_mcc":
        return _is_int(v) and 0 <= v <= 999
    if name == "cell":
        return _text_problem(v, MAX_CELL_BYTES) is None
    limit = 90 if name == "lat" else 180
    return _is_num(v) and abs(v) <= limit


def redacted(fields: dict[str, Any], known_cell: bool = False, now_ms: int | None = None) -> str:
    """The record of a rejected ping object: the one rule for reject files and dead letters.

    JSON text built by allow-list: ``device`` is ``"<redacted>"`` (null when null); each field
    of :data:`SHOWN_FIELDS` keeps its value where that rule allows (``known_cell``: the caller
    found ``(operator, cell)`` in the cell plan; ``now_ms``: the clock, default the wall clock)
    and is :func:`describe`-d otherwise; any other field appears by name only, in
    ``other_fields`` (names that fail :func:`field_name` are counted, not shown). At most a few
    hundred characters whatever the input.
    """
    if now_ms is None:
        now_ms = int(time.time() * SECOND_MS)
    shown: dict[str, Any] = {}
    if "device" in fields:
        shown["device"] = None if fields["device"] is None else "<redacted>"
    for name in SHOWN_FIELDS:
        if name in fields:
            v = fields[name]
            ok = v is None or (_valid(name, v) and (name != "cell" or known_cell)
                               and (name != "ts" or v <= now_ms + SHOWN_TS_AHEAD_MS))
            shown[name] = v if ok else describe(v)
    others = [k for k in fields if k != "device" and k not in SHOWN_FIELDS]
    if others:
        names = [n for n in map(field_name, others) if n is not None][:MAX_SHOWN_NAMES]
        if len(others) > len(names):
            names.append(f"<{len(others) - len(names)} more, names not shown>")
        shown["other_fields"] = names
    return json.dumps(shown, ensure_ascii=False)


def unparsable(kind: str, size: int) -> str:
    """The record of input that did not parse as a ping object (``kind`` ``row`` or
    ``message``): its size only, since its text could hold a pseudonym in any shape."""
    return f"<unparsable {kind}, {size} bytes; content not shown>"


def row_fields(cols: PingColumns, i: int) -> dict[str, Any]:
    """Row ``i`` of ping columns back as ping fields (for the record of a reject): text as str,
    ``bytes`` where it is not UTF-8; empty text, NaN and a ``home_mcc`` of -1 as None."""
    out: dict[str, Any] = {}
    for name in PING_FIELDS:
        if name not in cols:
            continue
        v = cols[name][i].item()
        if isinstance(v, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                v = v.decode("utf-8") or None
        elif (isinstance(v, float) and v != v) or (name == "home_mcc" and v == -1):
            v = None
        out[name] = v
    return out


def empty_ping_columns() -> PingColumns:
    """Zero pings as :data:`PingColumns`."""
    return {name: np.empty(0, dtype="S1" if dt == np.dtype("S") else dt)
            for name, dt in PING_DTYPES.items()}


_ISO_TIME = re.compile(r"\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2})?")


def ts_hint(ts: Any) -> str:
    """For a rejected ``ts``: what it looks like when a feed wrote times another common way
    (``": seconds since 1970? ..."``), else ``""``. Says only the kind of the value, never it."""
    if isinstance(ts, float) and math.isfinite(ts):
        ts = int(ts)
        if MIN_TS_MS <= ts * SECOND_MS <= MAX_TS_MS:
            return ": seconds since 1970 with a fraction? defacto reads integer milliseconds"
    if _is_int(ts):
        if MIN_TS_MS <= ts * SECOND_MS <= MAX_TS_MS:
            return ": seconds since 1970? defacto reads milliseconds (multiply by 1000)"
        if MIN_TS_MS <= ts // 1000 <= MAX_TS_MS:
            return ": microseconds since 1970? defacto reads milliseconds (divide by 1000)"
    if isinstance(ts, str):
        if ts.strip().isdigit():
            return ": a number written as text (in quotes)? defacto reads a JSON integer"
        if _ISO_TIME.match(ts):
            return (": a date and time as text? defacto reads integer milliseconds since 1970 "
                    "(UTC)")
    return ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _utf8_len(text: str) -> int | None:
    """Length of ``text`` in UTF-8 bytes; None if it is not valid Unicode (a lone surrogate,
    which JSON can hold)."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _text_problem(v: Any, max_bytes: int) -> str | None:
    """None if ``v`` is text of 1..``max_bytes`` bytes of UTF-8, else what it is instead (see
    :func:`describe`)."""
    if isinstance(v, str) and 0 < len(v) <= max_bytes:  # characters <= bytes: cheap test first
        nbytes = _utf8_len(v)
        if nbytes is not None and nbytes <= max_bytes:
            return None
    return describe(v)


def check_ping(f: dict[str, Any]) -> tuple[str, str] | None:
    """``(reason, detail)`` if a parsed ping object breaks the contract's type rules, else None.

    Text fields must be valid Unicode (no lone surrogate) within their length in UTF-8 bytes
    (:data:`MAX_TEXT_BYTES`): a row that passes encodes into columns no wider than that. The
    detail never quotes a value (see
    :func:`describe`). Ranges that need reference data or the stream (unknown cell, too late,
    ...) are checked by the decoder and the event-time windows.
    """
    device = f.get("device")
    if device is None:
        return "missing_device", REJECT_REASONS["missing_device"]
    problem = _text_problem(device, MAX_DEVICE_BYTES)
    if problem is None and device.endswith("\x00"):  # (as fixed-width bytes: another device)
        problem = "<text ending in NUL>"
    if problem:
        return "bad_device", f"{REJECT_REASONS['bad_device']}, got {problem}"
    ts = f.get("ts")
    if ts is None:
        return "missing_ts", REJECT_REASONS["missing_ts"]
    if not _is_int(ts):
        return "bad_ts", f"{REJECT_REASONS['bad_ts']}, got {describe(ts)}{ts_hint(ts)}"
    if not MIN_TS_MS <= ts <= MAX_TS_MS:
        return "ts_out_of_range", (f"{REJECT_REASONS['ts_out_of_range']}, got {describe(ts)}"
                                   f"{ts_hint(ts)}")
    op = f.get("operator")
    if op is None:
        return "missing_operator", REJECT_REASONS["missing_operator"]
    if not _valid("operator", op):
        return "bad_operator", f"{REJECT_REASONS['bad_operator']}, got {describe(op)}"
    mcc = f.get("home_mcc")
    if not _valid("home_mcc", mcc):
        return "bad_home_mcc", f"{REJECT_REASONS['bad_home_mcc']}, got {describe(mcc)}"
    cell = f.get("cell")
    if cell is not None:
        problem = _text_problem(cell, MAX_CELL_BYTES)
        if problem:
            return "bad_cell", f"{REJECT_REASONS['bad_cell']}, got {problem}"
        return None
    lat, lon = f.get("lat"), f.get("lon")
    if lat is None and lon is None:
        return "missing_location", REJECT_REASONS["missing_location"] + _field_hint(f)
    if lat is None or lon is None:
        return "bad_coordinates", (f"lat and lon must both be given: {'lon' if lon is None else 'lat'}"
                                   f" is missing{_field_hint(f)}")
    for name, v in (("lat", lat), ("lon", lon)):
        if not _is_num(v):
            comma = "; a decimal comma? defacto reads a point" if isinstance(v, str) and \
                re.fullmatch(r"\s*-?\d+,\d+\s*", v) else ""
            return "bad_coordinates", f"{name} must be a number, got {describe(v)}{comma}"
    if not (abs(lat) <= 90 and abs(lon) <= 180):
        return "bad_coordinates", REJECT_REASONS["bad_coordinates"]
    return None


_OTHER_NAMES = {"lng": "lon", "long": "lon", "longitude": "lon", "latitude": "lat",
                "cell_id": "cell", "cellid": "cell", "cgi": "cell", "ecgi": "cell"}
"""Field names feeds use for the location fields, and the name defacto reads instead."""


def _field_hint(f: dict[str, Any]) -> str:
    """For a reject about a missing location field: the usual other name that ``f`` has, if
    any (``"; a 'lng' field? defacto reads 'lon'"``), else ``""``. Names only, from a fixed
    list: never a value."""
    for other, ours in _OTHER_NAMES.items():
        if other in f and ours not in f:
            return f"; a {other!r} field? defacto reads {ours!r}"
    return ""
