"""The ping contract in code: fields, column dtypes, limits, rejects and their reason codes.

``schemas/ping.schema.json`` and ``schemas/README.md`` state the contract for people; this module
states it once for the code. Every reader (ping files, Kafka messages of any encoding) turns its
input into :data:`PingColumns` with the dtypes of :data:`PING_DTYPES`, and every input that breaks
the contract becomes a :class:`Reject` with one of the codes of :data:`REJECT_REASONS`: counted,
kept (reject file or dead-letter topic) and explained in one line, never dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from estimators.presence import MAX_TS_REL_MS
from estimators.units import EPOCH_MS

PING_FIELDS = ("device", "ts", "operator", "home_mcc", "cell", "lat", "lon")
"""The fields of a ping, in file column order."""

PING_DTYPES: dict[str, np.dtype[Any]] = {
    "device": np.dtype("S"),      # UTF-8 pseudonym, 1..MAX_DEVICE_CHARS characters
    "ts": np.dtype("<i8"),        # event time, UTC ms since 1970
    "operator": np.dtype("S6"),   # MCC+MNC, 5-6 ASCII digits
    "home_mcc": np.dtype("<i2"),  # SIM's home MCC, -1 = unknown
    "cell": np.dtype("S"),        # UTF-8 cell id, b"" = none (then lat/lon)
    "lat": np.dtype("<f8"),       # degrees, NaN = none (then cell)
    "lon": np.dtype("<f8"),       # degrees, NaN = none (then cell)
}
"""Column dtypes of :data:`PingColumns` (``S`` without a width: as wide as the widest value)."""

PingColumns = dict[str, np.ndarray]
"""Pings as columns, one array of length n per field of :data:`PING_DTYPES`."""

MAX_DEVICE_CHARS = 128
MIN_TS_MS = EPOCH_MS
MAX_TS_MS = EPOCH_MS + MAX_TS_REL_MS
RAW_KEEP_CHARS = 2000
"""At most this many characters of a rejected row are kept (device always redacted)."""

REJECT_REASONS: dict[str, str] = {
    # reading
    "malformed_json": "the line or message is not a JSON object",
    "malformed_csv": "the CSV row does not have the header's columns",
    "not_a_ping_object": "JSON that is not a ping object (or an unknown control message)",
    "empty_message": "empty message value",
    "unknown_encoding": "the message is neither a frame, Avro nor JSON",
    "bad_frame": "the batch frame's layout is broken",
    "bad_avro": "the Avro message does not decode with schemas/ping.avsc",
    "bad_watermark": "the watermark control message is invalid or far ahead",
    # the ping's fields
    "missing_device": "no device field",
    "bad_device": f"device must be a string of 1..{MAX_DEVICE_CHARS} characters",
    "missing_ts": "no ts field",
    "bad_ts": "ts must be integer milliseconds since 1970",
    "ts_out_of_range": "ts outside 2020-01-01..2089 (milliseconds since 1970 expected)",
    "missing_operator": "no operator field",
    "bad_operator": "operator must be an MCC+MNC string of 5-6 digits",
    "bad_home_mcc": "home_mcc must be null or an integer 0..999",
    "bad_cell": "cell must be a non-empty UTF-8 string",
    "missing_location": "neither cell nor lat/lon",
    "bad_coordinates": "lat must be in [-90, 90] and lon in [-180, 180]",
    # against reference data and the stream
    "unknown_cell": "cell id not in the cell plan for this operator",
    "too_many_operators": "more distinct operators than the engine holds",
    "ts_in_future": "ts too far ahead of the clock",
    "ts_ahead_of_stream": "ts too far ahead of the stream",
    "too_late": "arrived after the snapshot covering its time was published",
    "outside_period": "ts outside the requested --from/--to period",
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
    """One input row: where it came from, its parsed fields (None if unparsable), raw text."""

    source: str
    fields: dict[str, Any] | None
    raw: str
    error: str = ""


@dataclass
class Reject:
    """Input set aside: ``source`` (``file:line`` or ``topic[partition]@offset``), ``reason`` (a
    code of :data:`REJECT_REASONS`), one-line ``detail`` and ``record``, the row as redacted JSON
    text (see :func:`redacted`) or a description of a binary message."""

    source: str
    reason: str
    detail: str
    record: str

    def to_json(self) -> str:
        """One JSON line for the reject file."""
        return json.dumps({"source": self.source, "reason": self.reason, "detail": self.detail,
                           "record": self.record}, ensure_ascii=False)


def redacted(fields: dict[str, Any]) -> str:
    """A ping's fields as JSON text for a reject, the device pseudonym replaced by ``<redacted>``."""
    shown = {k: ("<redacted>" if k == "device" else v) for k, v in fields.items()}
    return json.dumps(shown, ensure_ascii=False, default=str)[:RAW_KEEP_CHARS]


def row_fields(cols: PingColumns, i: int) -> dict[str, Any]:
    """Row ``i`` of ping columns back as ping fields (for the text of a reject)."""
    out: dict[str, Any] = {}
    for name in PING_FIELDS:
        if name not in cols:
            continue
        v = cols[name][i].item()
        if isinstance(v, bytes):
            v = v.decode(errors="replace") or None
        elif (isinstance(v, float) and v != v) or (name == "home_mcc" and v == -1):
            v = None
        out[name] = v
    return out


def empty_ping_columns() -> PingColumns:
    """Zero pings as :data:`PingColumns`."""
    return {name: np.empty(0, dtype="S1" if dt == np.dtype("S") else dt)
            for name, dt in PING_DTYPES.items()}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_ping(f: dict[str, Any]) -> tuple[str, str] | None:
    """``(reason, detail)`` if a parsed ping object breaks the contract's type rules, else None.

    Ranges that need reference data or the stream (unknown cell, too late, ...) are checked by
    the decoder and the event-time windows.
    """
    device = f.get("device")
    if device is None:
        return "missing_device", REJECT_REASONS["missing_device"]
    if not isinstance(device, str) or not device or len(device) > MAX_DEVICE_CHARS:
        return "bad_device", REJECT_REASONS["bad_device"]
    ts = f.get("ts")
    if ts is None:
        return "missing_ts", REJECT_REASONS["missing_ts"]
    if not _is_int(ts):
        return "bad_ts", f"ts must be integer milliseconds since 1970, got {ts!r:.40}"
    if not MIN_TS_MS <= ts <= MAX_TS_MS:
        return "ts_out_of_range", REJECT_REASONS["ts_out_of_range"]
    op = f.get("operator")
    if op is None:
        return "missing_operator", REJECT_REASONS["missing_operator"]
    if not isinstance(op, str) or not (op.isascii() and op.isdigit()) or not 5 <= len(op) <= 6:
        return "bad_operator", f"operator must be an MCC+MNC string of 5-6 digits, got {op!r:.40}"
    mcc = f.get("home_mcc")
    if mcc is not None and (not _is_int(mcc) or not 0 <= mcc <= 999):
        return "bad_home_mcc", f"home_mcc must be null or an integer 0..999, got {mcc!r:.40}"
    cell = f.get("cell")
    if cell is not None:
        if not isinstance(cell, str) or not cell:
            return "bad_cell", "cell must be a non-empty string"
        return None
    lat, lon = f.get("lat"), f.get("lon")
    if lat is None and lon is None:
        return "missing_location", REJECT_REASONS["missing_location"]
    if not _is_num(lat) or not _is_num(lon) or not (abs(lat) <= 90 and abs(lon) <= 180):
        return "bad_coordinates", REJECT_REASONS["bad_coordinates"]
    return None
