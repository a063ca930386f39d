"""Kafka message values: the four encodings accepted on the ping topic, decoded into columns.

One topic carries, in any mix (layouts in ``schemas/README.md``, section "Kafka messages"):

* **JSON** -- one ping per message, a UTF-8 JSON object (one line of a ``.jsonl`` ping file);
* **Avro** -- one ping per message in the Confluent wire format: ``0x00``, a 4-byte big-endian
  schema id, then the schemaless Avro body per ``schemas/ping.avsc``;
* **batch frame** -- thousands of pings per message in a columnar binary layout
  (:mod:`stream.decode.frame`), decoded as zero-copy numpy views;
* **control** -- ``{"control": "watermark", "ts_ms": W, "final": bool}``: the producer promises no
  more pings with ``ts < W`` on this partition; ``final`` marks the end of its input.

:func:`decode_messages` turns a batch of message values into ONE set of ping columns, a map from
each ping row back to its message, the rejects and the watermarks. It never raises on bad input:
a bad message (or a bad row inside a frame) becomes a reject. JSON and Avro pings go through the
same type rules as ping files (:func:`stream.contract.check_ping`), and frame rows through a
vectorized equivalent; range checks (ts range, coordinate range, unknown cell) are left to the
downstream validator.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from itertools import repeat
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import orjson

from stream.contract import (
    MAX_CELL_BYTES,
    MAX_DEVICE_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    PING_DTYPES,
    CodecError,
    PingColumns,
    Reject,
    check_ping,
    describe,
    empty_ping_columns,
    field_name,
    redacted,
    unparsable,
)
from stream.decode.frame import FRAME_MAGIC, check_frame_rows, decode_frame, describe_frame

CONTENT_TYPES = {
    "application/x-defacto-frame": "frame",
    "application/vnd.defacto.ping+avro": "avro",
    "application/json": "json",
}
AVRO_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "ping.avsc"

_WS = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
_CONTROL_PREFIX = re.compile(rb'\{\s*"control"\s*:')
_json_decode = json.JSONDecoder().decode
FAST_CHUNK = 2048
"""JSON messages checked together by the fast path: one bad message sends at most this many
through the per-message path."""
FAST_MAX_BYTES = 4096
"""Longer JSON messages are decoded one by one (a ping takes ~150 bytes; a huge one must not
inflate a whole chunk's memory)."""
_STR, _INT, _NONE = str, int, type(None)
_CONTROL_KEY = b'"control"'
"""Bytes of every JSON control message (and of few pings): such a message is decoded on its own,
so a watermark between pings does not send their whole chunk through the per-message path."""
_BRACE = ord("{")


@dataclass
class Decoded:
    """Pings of a batch of messages as columns, plus rejects and watermarks.

    ``columns``: :data:`~stream.contract.PingColumns` (``device`` ``S``, ``ts`` ``i8``,
    ``operator`` ``S6``, ``home_mcc`` ``i2`` with -1 = unknown, ``cell`` ``S`` with ``b""`` = none,
    ``lat``/``lon`` ``f8`` with NaN = none); a row has either a cell or lat/lon, never both (a
    cell wins, as for ping files). Arrays may be read-only views of the message bytes.
    ``source_rows[i]`` (int64) is the index of the message ping row ``i`` came from; rows keep
    message order, so it is non-decreasing. ``rejects`` (named by the ``source`` given to
    :func:`decode_messages`) and ``watermarks`` ``(message index, ts_ms, final)`` are in message
    order. ``encodings`` counts the messages by :func:`sniff` kind (``unknown`` when none fits).
    """

    columns: PingColumns
    source_rows: np.ndarray
    rejects: list[Reject] = field(default_factory=list)
    watermarks: list[tuple[int, int, bool]] = field(default_factory=list)
    encodings: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Encoding


def encode_json(ping: dict[str, Any]) -> bytes:
    """One ping as a compact UTF-8 JSON object (the JSON Lines ping format, without newline)."""
    return json.dumps(ping, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _avro_schema_dict() -> dict[str, Any]:
    schema = json.loads(AVRO_SCHEMA_PATH.read_text(encoding="utf-8"))
    # ts is a plain long on the wire; without the logical type fastavro returns ints, not datetimes
    for f in schema["fields"]:
        if isinstance(f["type"], dict):
            f["type"] = {k: v for k, v in f["type"].items() if k != "logicalType"}
    return schema


@cache
def _avro_schema() -> Any:
    """``schemas/ping.avsc``, parsed once (timestamp logical type dropped: ts stays an int)."""
    return fastavro.parse_schema(_avro_schema_dict())


def encode_avro(ping: dict[str, Any], schema_id: int = 1) -> bytes:
    """One ping in the Confluent Avro wire format: ``0x00``, big-endian schema id, Avro body."""
    if not 0 <= schema_id <= 0xFFFFFFFF:
        raise CodecError("bad_avro", f"schema id {schema_id} does not fit 4 bytes")
    buf = io.BytesIO()
    buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
    try:
        fastavro.schemaless_writer(buf, _avro_schema(), ping)
    except Exception as exc:
        # fastavro's message quotes the whole ping (its pseudonym): only the kind of error
        raise CodecError("bad_avro", f"ping does not fit ping.avsc ({type(exc).__name__})") from None
    return buf.getvalue()


def encode_control(ts_ms: int, final: bool = False) -> bytes:
    """A watermark control message: no pings with ``ts < ts_ms`` follow on this partition."""
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int):
        raise CodecError("not_a_ping_object", f"watermark ts_ms must be an integer, got {ts_ms!r:.40}")
    return json.dumps({"control": "watermark", "ts_ms": ts_ms, "final": bool(final)},
                      separators=(",", ":")).encode()


# ----------------------------------------------------------------------------------------------
# Decoding


def sniff(data: bytes, content_type: str | None = None) -> str:
    """The encoding of a message value: ``frame``, ``avro``, ``json`` or ``control``.

    A known ``content_type`` header wins (parameters such as ``; charset=utf-8`` are ignored);
    otherwise, or for an unknown content type, the first bytes decide: ``DFB1`` is a frame,
    ``0x00`` Avro, ``{`` (after whitespace / a BOM) JSON. Only a prefix is looked at: a JSON
    object whose first key is ``"control"`` is reported as ``control``; :func:`decode_messages`
    decides from the parsed object either way. Raises :class:`CodecError` (``empty_message`` or
    ``unknown_encoding``).
    """
    if not data:
        raise CodecError("empty_message", "empty message value")
    kind = None
    if content_type:
        kind = CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if kind in ("frame", "avro"):
            return kind
    if kind is None:
        if data[:4] == FRAME_MAGIC:
            return "frame"
        if data[0] == 0:
            return "avro"
    head = bytes(data[:256]).lstrip(_WS)
    if head.startswith(_BOM):
        head = head[3:].lstrip(_WS)
    if head.startswith(b"{"):
        return "control" if _CONTROL_PREFIX.match(head) else "json"
    if kind == "json":
        return "json"
    if not head and len(data) <= 256:
        raise CodecError("empty_message", "message value is only whitespace")
    raise CodecError("unknown_encoding", f"no known encoding starts with {bytes(data[:4])!r}")


class _Rows:
    """JSON/Avro pings gathered one by one until the next frame (or the end of the batch)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget the gathered pings."""
        self.device: list[bytes] = []
        self.ts: list[int] = []
        self.operator: list[bytes] = []
        self.home_mcc: list[int] = []
        self.cell: list[bytes] = []
        self.lat: list[float] = []
        self.lon: list[float] = []
        self.src: list[int] = []

    def add(self, f: dict[str, Any], msg: int) -> None:
        """Append a ping that passed :func:`~stream.contract.check_ping` (which makes every
        value fit its column: ts within int64, text valid Unicode of bounded length)."""
        cell = f.get("cell")
        mcc = f.get("home_mcc")
        self.device.append(f["device"].encode("utf-8"))
        self.ts.append(f["ts"])
        self.operator.append(f["operator"].encode("ascii"))
        self.home_mcc.append(-1 if mcc is None else mcc)
        self.cell.append(b"" if cell is None else cell.encode("utf-8"))
        self.lat.append(np.nan if cell is not None else float(f["lat"]))
        self.lon.append(np.nan if cell is not None else float(f["lon"]))
        self.src.append(msg)

    def flush(self, parts: list[tuple[PingColumns, np.ndarray]]) -> None:
        """Turn the gathered pings into one block of columns and start over."""
        if not self.src:
            return
        cols = {
            name: np.array(getattr(self, name), dtype=dt) for name, dt in PING_DTYPES.items()
        }
        parts.append((cols, np.array(self.src, dtype=np.int64)))
        self.clear()


def _binary_raw(data: bytes, kind: str) -> str:
    """What a reject keeps of a binary message: a description, never the body."""
    if kind == "avro":
        sid = int.from_bytes(data[1:5], "big") if len(data) >= 5 else None
        return f"<avro message, {len(data)} bytes, schema id {sid}; body not shown>"
    return describe_frame(data)


def _read_avro(data: bytes) -> dict[str, Any]:
    if len(data) < 5 or data[0] != 0:
        raise CodecError("bad_avro", "not Confluent Avro (needs 0x00 and a 4-byte schema id)")
    body = io.BytesIO(data[5:])
    try:
        rec = fastavro.schemaless_reader(body, _avro_schema(), None)
    except Exception as exc:
        raise CodecError("bad_avro", "Avro body does not decode with ping.avsc "
                         f"({type(exc).__name__})") from None
    left = len(data) - 5 - body.tell()
    if left:
        raise CodecError("bad_avro", f"{left} bytes after the Avro record")
    if not isinstance(rec, dict):
        raise CodecError("bad_avro", "Avro body is not a record")
    return rec


def _watermark(obj: dict[str, Any]) -> tuple[int, bool]:
    ts, final = obj.get("ts_ms"), obj.get("final", False)
    if obj.get("control") != "watermark":
        control = obj.get("control")
        raise CodecError("not_a_ping_object",
                         f"unknown control message {field_name(control) or describe(control)}")
    if isinstance(ts, bool) or not isinstance(ts, int) or not MIN_TS_MS <= ts <= MAX_TS_MS:
        raise CodecError("bad_watermark", "watermark ts_ms must be integer ms since 1970 within "
                         f"2020-01-01..2089, got {describe(ts)}")
    if not isinstance(final, bool):
        raise CodecError("bad_watermark", f"watermark final must be true or false, got {describe(final)}")
    return ts, final


def _fast_json(values: list[bytes], idx: list[int]) -> tuple[PingColumns, np.ndarray] | None:
    """Messages ``values[i] for i in idx`` (each starting with ``{``) as ping columns, when every
    one of them is a valid ping object; None as soon as one is not (or is a control message):
    the caller then decodes them one by one, which names each reject.

    Parses each value with orjson (one C call per message, no text decoding in Python), then
    checks each field as a whole column. It accepts only what :func:`~stream.contract.check_ping`
    accepts and builds the same columns as the per-message path (tested side by side).
    """
    try:
        chunk = values[idx[0]:idx[-1] + 1] if idx[-1] - idx[0] + 1 == len(idx) \
            else list(map(values.__getitem__, idx))
        objs = list(map(orjson.loads, chunk))
    except (orjson.JSONDecodeError, RecursionError, ValueError):
        return None
    if set(map(type, objs)) != {dict} or any("control" in o for o in objs):
        return None
    try:
        device, ts, operator, mcc, cell = (list(map(dict.get, objs, repeat(name))) for name in
                                           ("device", "ts", "operator", "home_mcc", "cell"))
        if set(map(type, device)) != {_STR} or set(map(type, ts)) != {_INT} \
                or set(map(type, operator)) != {_STR} or not set(map(type, mcc)) <= {_INT, _NONE}:
            return None
        dev_b = list(map(str.encode, device))
        dev_len = max(map(len, dev_b))
        if min(map(len, dev_b)) < 1 or dev_len > MAX_DEVICE_BYTES \
                or b"\x00" in b"".join(dev_b):  # (one ending in NUL is rejected one by one)
            return None
        ts_a = np.array(ts, dtype=np.int64)
        if ts_a.min() < MIN_TS_MS or ts_a.max() > MAX_TS_MS:
            return None
        op_b = list(map(str.encode, operator, repeat("ascii")))
        if min(map(len, op_b)) < 5 or max(map(len, op_b)) > 6 or not b"".join(op_b).isdigit():
            return None
        mcc_a = np.array(mcc if _NONE not in set(map(type, mcc)) else
                         [-1 if m is None else m for m in mcc], dtype=np.int64)
        if (mcc_a[mcc_a != -1] < 0).any() or mcc_a.max() > 999 or \
                (mcc_a == -1).sum() != mcc.count(None):
            return None
        cell_types = set(map(type, cell))
        if not cell_types <= {_STR, _NONE}:
            return None
        cell_b = list(map(str.encode, cell)) if _NONE not in cell_types else \
            [b"" if c is None else c.encode("utf-8") for c in cell]
        cell_len = max(map(len, cell_b))
        if cell_len > MAX_CELL_BYTES or \
                cell_b.count(b"") != cell.count(None):
            return None
        n = len(objs)
        lat = np.full(n, np.nan)
        lon = np.full(n, np.nan)
        if _NONE in cell_types:
            where = [k for k, c in enumerate(cell) if c is None]
            la = [objs[k].get("lat") for k in where]
            lo = [objs[k].get("lon") for k in where]
            if not set(map(type, la)) | set(map(type, lo)) <= {_INT, float}:
                return None
            la_a, lo_a = np.array(la, dtype=np.float64), np.array(lo, dtype=np.float64)
            if not ((np.abs(la_a) <= 90).all() and (np.abs(lo_a) <= 180).all()):
                return None
            lat[where], lon[where] = la_a, lo_a
    except (UnicodeEncodeError, OverflowError):  # a lone surrogate, or an integer beyond int64
        return None
    # the widths PING_DTYPES' "S" would find, given: numpy then copies without measuring again
    cols = {"device": np.array(dev_b, dtype=f"S{dev_len}"), "ts": ts_a,
            "operator": np.array(op_b, dtype=PING_DTYPES["operator"]),
            "home_mcc": mcc_a.astype(PING_DTYPES["home_mcc"]),
            "cell": np.array(cell_b, dtype=f"S{max(cell_len, 1)}"), "lat": lat, "lon": lon}
    return cols, np.asarray(idx, dtype=np.int64)


def decode_messages(values: list[bytes], content_types: list[str | None] | None = None,
                    source: Callable[[int], str] = str) -> Decoded:
    """Decode a batch of Kafka message values (in order) into one set of ping columns.

    JSON and Avro pings are gathered into columns, frames are appended as blocks; row order
    follows message order. ``content_types[i]`` (the message's ``content-type`` header, if any)
    overrides sniffing for message ``i``. Never raises on bad input: a bad message, or a bad row
    in a frame, becomes a reject with the same reason codes as ping files (type rules only; ranges
    and cell-plan lookups are checked downstream) or one of the :class:`CodecError` codes.
    ``source(i)`` names message ``i`` in its rejects (default: the index as text). Raises
    ``ValueError`` only when ``content_types`` and ``values`` differ in length.

    Runs of JSON messages (starting with ``{``, no other content type, at most
    :data:`FAST_MAX_BYTES`, without the bytes ``"control"``) are decoded
    :data:`FAST_CHUNK` at a time by :func:`_fast_json`; a chunk holding anything but valid ping
    objects goes through the per-message path, so its rejects and watermarks are the same.
    """
    if content_types is not None and len(content_types) != len(values):
        raise ValueError(f"{len(content_types)} content types for {len(values)} messages")
    parts: list[tuple[PingColumns, np.ndarray]] = []
    rows = _Rows()
    rejects: list[Reject] = []
    watermarks: list[tuple[int, int, bool]] = []
    kinds: Counter[str] = Counter()
    run: list[int] = []

    def end_run() -> None:
        for at in range(0, len(run), FAST_CHUNK):
            chunk = run[at:at + FAST_CHUNK]
            fast = _fast_json(values, chunk)
            if fast is None:
                for i in chunk:
                    kinds[_decode_one(i, values[i], None, source, rows, parts, rejects,
                                      watermarks)] += 1
            else:
                rows.flush(parts)
                parts.append(fast)
                kinds["json"] += len(chunk)
        run.clear()

    if _all_plain_json(values, content_types):
        run.extend(range(len(values)))
        values_left: list[bytes] = []
    else:
        values_left = values
    for i, data in enumerate(values_left):
        ct = content_types[i] if content_types is not None else None
        if (ct is None or ct == "application/json") and data[:1] == b"{" \
                and len(data) <= FAST_MAX_BYTES and _CONTROL_KEY not in data:
            run.append(i)  # a control message (watermark) ends the run: only it goes alone
            continue
        if run:
            end_run()
        kinds[_decode_one(i, data, ct, source, rows, parts, rejects, watermarks)] += 1
    if run:
        end_run()
    rows.flush(parts)
    encodings = dict(kinds)
    if not parts:
        return Decoded(empty_ping_columns(), np.empty(0, dtype=np.int64), rejects, watermarks,
                       encodings)
    if len(parts) == 1:
        return Decoded(parts[0][0], parts[0][1], rejects, watermarks, encodings)
    columns = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    return Decoded(columns, np.concatenate([p[1] for p in parts]), rejects, watermarks, encodings)


def _all_plain_json(values: list[bytes], content_types: list[str | None] | None) -> bool:
    """Whether every message of a batch goes to the JSON fast path (what the per-message scan of
    :func:`decode_messages` would find, checked at once): no content type but JSON, every value
    1 to :data:`FAST_MAX_BYTES` bytes long and starting with ``{``, none holding ``"control"``
    (searched in the values joined by a newline, which no match can span)."""
    if not values or (content_types is not None
                      and not set(content_types) <= {None, "application/json"}):
        return False
    lens = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    if lens.min() < 1 or lens.max() > FAST_MAX_BYTES:
        return False
    blob = b"\n".join(values)
    if _CONTROL_KEY in blob:
        return False
    starts = np.zeros(len(values), dtype=np.int64)
    np.cumsum(lens[:-1] + 1, out=starts[1:])
    return bool((np.frombuffer(blob, dtype=np.uint8)[starts] == _BRACE).all())


def _decode_one(i: int, data: bytes, ct: str | None, source: Callable[[int], str], rows: _Rows,
                parts: list[tuple[PingColumns, np.ndarray]], rejects: list[Reject],
                watermarks: list[tuple[int, int, bool]]) -> str:
    """Decode message ``i`` on its own into ``rows``/``parts``/``rejects``/``watermarks``;
    returns its encoding (``unknown`` when none fits)."""
    kind = "unknown"
    fields: dict[str, Any] | None = None
    try:
        kind = "json" if ct is None and data and data[:1] == b"{" else sniff(data, ct)
        if kind == "frame":
            cols = decode_frame(data)
            rows.flush(parts)
            block = check_frame_rows(cols, lambda i=i: source(i), rejects)
            parts.append((block, np.full(len(block["ts"]), i, dtype=np.int64)))
            return kind
        if kind == "avro":
            fields = _read_avro(data)
        else:
            try:
                obj = _json_decode(data.decode("utf-8").lstrip().removeprefix("\ufeff"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise CodecError("malformed_json", f"malformed JSON: {exc}".splitlines()[0][:200]) from None
            except RecursionError:
                raise CodecError("malformed_json", "malformed JSON: nested too deeply") from None
            except ValueError:  # int() of a number with more than 4300 digits
                raise CodecError("malformed_json", "malformed JSON: a number of too many digits") from None
            if not isinstance(obj, dict):
                raise CodecError("not_a_ping_object", f"JSON {type(obj).__name__}, not an object")
            fields = obj
            if "control" in obj:
                kind = "control"
                ts_ms, final = _watermark(obj)
                watermarks.append((i, ts_ms, final))
                return kind
        bad = check_ping(fields)
        if bad:
            rejects.append(Reject(source(i), bad[0], bad[1], redacted(fields)))
        else:
            rows.add(fields, i)
    except Exception as exc:  # a message must never break the batch
        if isinstance(exc, CodecError):
            reason, detail = exc.reason, exc.detail
        else:
            reason = {"frame": "bad_frame", "avro": "bad_avro", "unknown": "unknown_encoding"}.get(
                kind, "malformed_json")
            detail = f"unexpected {type(exc).__name__}"  # its text could quote the input
        if fields is not None:
            raw = redacted(fields)
        elif kind in ("frame", "avro"):
            raw = _binary_raw(data or b"", kind)
        else:
            raw = unparsable("message", len(data or b""))
        rejects.append(Reject(source(i), reason, detail, raw))
    return kind
