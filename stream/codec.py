"""Kafka message values: the four encodings accepted on the ping topic, decoded into columns.

One topic carries, in any mix (layouts in ``schemas/README.md``, section "Kafka messages"):

* **JSON** -- one ping per message, a UTF-8 JSON object (one line of a ``.jsonl`` ping file);
* **Avro** -- one ping per message in the Confluent wire format: ``0x00``, a 4-byte big-endian
  schema id, then the schemaless Avro body per ``schemas/ping.avsc``;
* **batch frame** -- thousands of pings per message in a columnar binary layout
  (:func:`encode_frame` / :func:`decode_frame`), decoded as zero-copy numpy views;
* **control** -- ``{"control": "watermark", "ts_ms": W, "final": bool}``: the producer promises no
  more pings with ``ts < W`` on this partition; ``final`` marks the end of its input.

:func:`decode_messages` turns a batch of message values into ONE set of ping columns, a map from
each ping row back to its message, the rejects and the watermarks. It never raises on bad input:
a bad message (or a bad row inside a frame) becomes a reject. JSON and Avro pings go through the
same type rules as ping files (:func:`stream.pings.check_ping`), and frame rows through a
vectorized equivalent; range checks (ts range, coordinate range, unknown cell) are left to the
downstream validator.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import numpy as np

from stream.pings import (
    MAX_DEVICE_CHARS,
    MAX_TS_MS,
    MIN_TS_MS,
    RAW_KEEP_CHARS,
    _redacted,
    _row_fields,
    check_ping,
)

FRAME_MAGIC = b"DFB1"
CONTENT_TYPES = {
    "application/x-defacto-frame": "frame",
    "application/vnd.defacto.ping+avro": "avro",
    "application/json": "json",
}
MAX_FRAME_HEADER = 1 << 20
"""Largest frame header (bytes) accepted; a real header is a few hundred bytes."""
AVRO_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "ping.avsc"

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_FIXED = {"ts": np.dtype("<i8"), "operator": np.dtype("S6"), "home_mcc": np.dtype("<i2"),
          "lat": np.dtype("<f8"), "lon": np.dtype("<f8")}
_TEXT = ("device", "cell")
_KNOWN = (*_FIXED, *_TEXT)
# Encoder column order: 8-byte columns first so that, with the header padded to a multiple of 8,
# ts/lat/lon start 8-byte aligned inside the message (the decoder does not rely on it).
_ENCODE_ORDER = ("ts", "lat", "lon", "home_mcc", "operator", "device", "cell")
_UTF8_BLOCK_ROWS = 256
_WS = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
_CONTROL_PREFIX = re.compile(rb'\{\s*"control"\s*:')
_json_decode = json.JSONDecoder().decode


class CodecError(ValueError):
    """A message (or column set) that cannot be encoded or decoded.

    ``reason`` is a stable code (``bad_frame``, ``bad_avro``, ``malformed_json``,
    ``not_a_ping_object``, ``unknown_encoding``, ``empty_message``); ``detail`` is one line.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Decoded:
    """Pings of a batch of messages as columns, plus rejects and watermarks.

    ``columns``: ``device`` (``S``, UTF-8), ``ts`` (``i8``), ``operator`` (``S6``), ``home_mcc``
    (``i2``, -1 = unknown), ``cell`` (``S``, ``b""`` = none), ``lat``/``lon`` (``f8``, NaN = none);
    a row has either a cell or lat/lon, never both (a cell wins, as for ping files). Arrays may
    be read-only views of the message bytes. ``source_rows[i]`` is the index of the message
    ping row ``i`` came from; rows keep message order, so it is non-decreasing. ``rejects``
    holds ``(message index, reason, detail, redacted raw)`` and ``watermarks``
    ``(message index, ts_ms, final)``, both in message order.
    """

    columns: dict[str, np.ndarray]
    source_rows: np.ndarray
    rejects: list[tuple[int, str, str, str]] = field(default_factory=list)
    watermarks: list[tuple[int, int, bool]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Encoding


def _text_column(name: str, values: Any, n: int) -> np.ndarray:
    """A ``S<w>`` UTF-8 column (width >= 1) from str, bytes or object (str/bytes/None) values."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise CodecError("bad_frame", f"column {name} has shape {arr.shape}, expected ({n},)")
    if n == 0:
        out = np.empty(0, dtype="S1")
    elif arr.dtype.kind == "U":
        try:
            out = arr.astype("S")  # ASCII (the usual case): no per-value work
        except UnicodeEncodeError:
            out = np.array([v.encode("utf-8") for v in arr.tolist()], dtype="S")
    elif arr.dtype.kind == "S":
        out = arr
    elif arr.dtype.kind == "O":
        items = [b"" if v is None else v if isinstance(v, bytes) else str(v).encode("utf-8")
                 for v in arr.tolist()]
        out = np.array(items, dtype="S") if items else np.empty(0, dtype="S1")
    else:
        raise CodecError("bad_frame", f"column {name} must hold strings, got dtype {arr.dtype}")
    if out.dtype.itemsize == 0:
        out = out.astype("S1")
    return np.ascontiguousarray(out)


def _numeric_column(name: str, values: Any, n: int, kinds: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise CodecError("bad_frame", f"column {name} has shape {arr.shape}, expected ({n},)")
    if arr.dtype.kind not in kinds:
        raise CodecError("bad_frame", f"column {name} has dtype {arr.dtype}")
    dt = _FIXED[name]
    if dt.kind == "i" and n and arr.dtype.itemsize >= dt.itemsize:
        info = np.iinfo(dt)
        if arr.min() < info.min or arr.max() > info.max:
            raise CodecError("bad_frame", f"column {name} has values outside {dt.str}")
    return np.ascontiguousarray(arr, dtype=dt)


def encode_frame(columns: dict[str, np.ndarray]) -> bytes:
    """Encode ping columns as one batch frame (layout in ``schemas/README.md``).

    Needs ``device``, ``ts``, ``operator`` and a location: ``cell`` (``""``/``None`` = none) and/or
    ``lat`` + ``lon`` (NaN = none). ``home_mcc`` (-1 = unknown) defaults to all -1. Text columns
    may be numpy ``U``, ``S`` or object arrays; they are written as UTF-8 ``S<w>`` padded to the
    widest value. Other columns are written as they are (any fixed-size, non-object dtype) and
    ignored by the decoder. Raises :class:`CodecError` (``bad_frame``) on bad columns.
    """
    missing = [c for c in ("device", "ts", "operator") if c not in columns]
    if "cell" not in columns and not ("lat" in columns and "lon" in columns):
        missing.append("cell or lat+lon")
    if ("lat" in columns) != ("lon" in columns):
        missing.append("lon" if "lat" in columns else "lat")
    if missing:
        raise CodecError("bad_frame", f"missing column(s): {', '.join(missing)}")
    ts_shape = np.shape(columns["ts"])
    if len(ts_shape) != 1:
        raise CodecError("bad_frame", f"column ts has shape {ts_shape}, expected (n,)")
    n = ts_shape[0]
    out: dict[str, np.ndarray] = {}
    for name in _ENCODE_ORDER:
        if name == "home_mcc" and name not in columns:
            out[name] = np.full(n, -1, dtype="<i2")
        elif name not in columns:
            continue
        elif name in _TEXT:
            out[name] = _text_column(name, columns[name], n)
        elif name == "operator":
            op = _text_column(name, columns[name], n)
            if op.dtype.itemsize > 6 and n and np.strings.str_len(op).max() > 6:
                raise CodecError("bad_frame", "operator values must be at most 6 bytes")
            out[name] = op.astype("S6")
        else:
            out[name] = _numeric_column(name, columns[name], n, "iuf" if name in ("lat", "lon") else "iu")
    for name, values in columns.items():
        if name in out:
            continue
        arr = np.ascontiguousarray(values)
        if arr.shape != (n,) or arr.dtype.hasobject or arr.dtype.itemsize == 0:
            raise CodecError("bad_frame", f"extra column {name} must be 1-D, length {n}, fixed-size dtype")
        out[name] = arr
    header = json.dumps({"n": n, "columns": [{"name": k, "dtype": a.dtype.str} for k, a in out.items()]},
                        separators=(",", ":")).encode()
    header += b" " * (-(len(FRAME_MAGIC) + 4 + len(header)) % 8)
    return b"".join([FRAME_MAGIC, len(header).to_bytes(4, "little"), header, *out.values()])


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
        raise CodecError("bad_avro", f"ping does not fit ping.avsc: {exc}") from exc
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


def _frame_fail(detail: str) -> CodecError:
    return CodecError("bad_frame", detail)


def decode_frame(data: bytes) -> dict[str, np.ndarray]:
    """The known columns of a batch frame as read-only numpy views of ``data`` (no copies).

    Returns ``device``, ``ts``, ``operator``, ``home_mcc`` and whichever of ``cell``, ``lat``,
    ``lon`` the frame has; unknown columns are skipped. Raises :class:`CodecError` (``bad_frame``)
    on a bad magic or header, a missing or mistyped required column, or data that is shorter or
    longer than the header says. Row contents are not checked here (see :func:`decode_messages`).
    """
    mv = memoryview(data).cast("B")
    size = len(mv)
    if size < 8 or mv[:4] != FRAME_MAGIC:
        raise _frame_fail("not a batch frame (no DFB1 magic)")
    hlen = int.from_bytes(mv[4:8], "little")
    if hlen > MAX_FRAME_HEADER or 8 + hlen > size:
        raise _frame_fail(f"header length {hlen} exceeds the message ({size} bytes) or {MAX_FRAME_HEADER}")
    try:
        header = json.loads(bytes(mv[8:8 + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _frame_fail(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _frame_fail("header is not a JSON object")
    n, cols = header.get("n"), header.get("columns")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise _frame_fail(f"header n must be a non-negative integer, got {n!r:.40}")
    if not isinstance(cols, list):
        raise _frame_fail("header columns must be a list")
    out: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    offset = 8 + hlen
    for col in cols:
        if not isinstance(col, dict) or not isinstance(col.get("name"), str) \
                or not isinstance(col.get("dtype"), str):
            raise _frame_fail(f"bad column entry {col!r:.80}")
        name = col["name"]
        if name in seen:
            raise _frame_fail(f"duplicate column {name}")
        seen.add(name)
        try:
            dt = np.dtype(col["dtype"])
        except Exception:
            raise _frame_fail(f"column {name}: unknown dtype {col['dtype']!r:.40}") from None
        if dt.hasobject or dt.itemsize == 0:
            raise _frame_fail(f"column {name}: dtype {col['dtype']!r:.40} is not a fixed-size plain type")
        want = _FIXED.get(name)
        if (want is not None and dt != want) or (name in _TEXT and dt.kind != "S"):
            raise _frame_fail(f"column {name}: dtype {dt.str}, expected "
                              f"{want.str if want is not None else '|S<w>'}")
        nbytes = n * dt.itemsize
        if offset + nbytes > size:
            raise _frame_fail(f"truncated: column {name} needs {nbytes} bytes at offset {offset}, "
                              f"message has {size}")
        if name in _KNOWN:
            out[name] = np.frombuffer(data, dtype=dt, count=n, offset=offset)
        offset += nbytes
    if offset != size:
        raise _frame_fail(f"{size - offset} bytes after the last column")
    missing = [c for c in ("device", "ts", "operator", "home_mcc") if c not in out]
    if ("lat" in out) != ("lon" in out):
        missing.append("lon" if "lat" in out else "lat")
    elif "cell" not in out and "lat" not in out:
        missing.append("cell or lat+lon")
    if missing:
        raise _frame_fail(f"missing column(s): {', '.join(missing)}")
    return out


def _utf8_bad(col: np.ndarray) -> np.ndarray:
    """Rows of an ``S`` column that are not valid UTF-8 (checked in blocks; ASCII is free)."""
    n, w = len(col), col.dtype.itemsize
    bad = np.zeros(n, dtype=bool)
    if n == 0:
        return bad
    u8 = np.ascontiguousarray(col).view(np.uint8).reshape(n, w)
    if u8.max() < 0x80:
        return bad
    rows = np.flatnonzero((u8 >= 0x80).any(axis=1))
    for start in range(0, len(rows), _UTF8_BLOCK_ROWS):
        block = rows[start:start + _UTF8_BLOCK_ROWS]
        padded = np.zeros((len(block), w + 1), dtype=np.uint8)  # a NUL after every row keeps
        padded[:, :w] = u8[block]                                # sequences from spanning rows
        try:
            padded.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            for r in block.tolist():
                try:
                    bytes(col[r]).decode("utf-8")
                except UnicodeDecodeError:
                    bad[r] = True
    return bad


def _row_raw(cols: dict[str, np.ndarray], i: int) -> str:
    """One frame row as the reject file's redacted JSON text."""
    return _redacted(_row_fields(cols, i))


def _check_frame(cols: dict[str, np.ndarray], msg: int,
                 rejects: list[tuple[int, str, str, str]]) -> dict[str, np.ndarray]:
    """Apply the ping-file type rules to frame rows (vectorized); bad rows go to ``rejects``.

    Returns the good rows with all seven columns; the frame's views are kept when nothing has to
    change. An empty device or operator counts as missing (a frame cannot hold null).
    """
    dev, op, mcc = cols["device"], cols["operator"], cols["home_mcc"]
    n = len(dev)
    has_cell = cols["cell"] != b"" if "cell" in cols else np.zeros(n, dtype=bool)
    lat = cols.get("lat", np.full(n, np.nan))
    lon = cols.get("lon", np.full(n, np.nan))

    dev_len = np.strings.str_len(dev)
    dev_bad = _utf8_bad(dev)
    if dev.dtype.itemsize > MAX_DEVICE_CHARS:
        long = np.flatnonzero(dev_len > MAX_DEVICE_CHARS)
        if len(long):
            u8 = np.ascontiguousarray(dev[long]).view(np.uint8).reshape(len(long), -1)
            chars = dev_len[long] - ((u8 & 0xC0) == 0x80).sum(axis=1)
            dev_bad[long[chars > MAX_DEVICE_CHARS]] = True
    op8 = np.ascontiguousarray(op).view(np.uint8).reshape(n, 6)
    digit = (op8 >= 0x30) & (op8 <= 0x39)
    op_ok = digit[:, :5].all(axis=1) & (digit[:, 5] | (op8[:, 5] == 0))
    cell_bad = _utf8_bad(cols["cell"]) & has_cell if "cell" in cols else has_cell
    lat_nan, lon_nan = np.isnan(lat), np.isnan(lon)

    conditions = [
        (dev_len == 0, "missing_device", "empty device"),
        (dev_bad, "bad_device", f"device must be a UTF-8 string of 1..{MAX_DEVICE_CHARS} characters"),
        (op8[:, 0] == 0, "missing_operator", "empty operator"),
        (~op_ok, "bad_operator", "operator must be an MCC+MNC string of 5-6 digits"),
        ((mcc < -1) | (mcc > 999), "bad_home_mcc", "home_mcc must be -1 (unknown) or 0..999"),
        (cell_bad, "bad_cell", "cell must be a UTF-8 string"),
        (~has_cell & lat_nan & lon_nan, "missing_location", "neither cell nor lat/lon"),
        (~has_cell & (lat_nan != lon_nan), "bad_coordinates", "lat and lon must both be numbers"),
    ]
    reason = np.zeros(n, dtype=np.int8)  # 0 = good, else 1 + index of the first failed check
    for k in range(len(conditions) - 1, -1, -1):
        reason[conditions[k][0]] = k + 1
    bad = np.flatnonzero(reason)
    for i in bad.tolist():
        _, code, detail = conditions[reason[i] - 1]
        rejects.append((msg, code, f"row {i}: {detail}", _row_raw(cols, i)))

    out = {"device": dev, "ts": cols["ts"], "operator": op, "home_mcc": mcc,
           "cell": cols["cell"] if "cell" in cols else np.zeros(n, dtype="S1"), "lat": lat, "lon": lon}
    if "cell" in cols and "lat" in cols and (has_cell & ~lat_nan).any():
        out["lat"] = np.where(has_cell, np.nan, lat)
    if "cell" in cols and "lon" in cols and (has_cell & ~lon_nan).any():
        out["lon"] = np.where(has_cell, np.nan, lon)
    if len(bad):
        keep = reason == 0
        out = {k: v[keep] for k, v in out.items()}
    return out


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

    def add(self, f: dict[str, Any], msg: int) -> tuple[str, str] | None:
        """Append a ping that passed the type rules; (reason, detail) if it cannot be represented."""
        ts = f["ts"]
        if not _INT64_MIN <= ts <= _INT64_MAX:
            return "ts_out_of_range", "ts does not fit 64 bits (milliseconds since 1970 expected)"
        try:
            device = f["device"].encode("utf-8")
        except UnicodeEncodeError:
            return "bad_device", "device is not encodable as UTF-8"
        cell = f.get("cell")
        if cell is not None:
            try:
                cell_b, lat, lon = cell.encode("utf-8"), np.nan, np.nan
            except UnicodeEncodeError:
                return "bad_cell", "cell is not encodable as UTF-8"
        else:
            try:
                cell_b, lat, lon = b"", float(f["lat"]), float(f["lon"])
            except OverflowError:
                return "bad_coordinates", "lat and lon must be finite numbers"
        if not f["operator"].isascii():
            return "bad_operator", "operator must be an MCC+MNC string of 5-6 ASCII digits"
        mcc = f.get("home_mcc")
        self.device.append(device)
        self.ts.append(ts)
        self.operator.append(f["operator"].encode("ascii"))
        self.home_mcc.append(-1 if mcc is None else mcc)
        self.cell.append(cell_b)
        self.lat.append(lat)
        self.lon.append(lon)
        self.src.append(msg)
        return None

    def flush(self, parts: list[tuple[dict[str, np.ndarray], np.ndarray]]) -> None:
        """Turn the gathered pings into one block of columns and start over."""
        if not self.src:
            return
        cols = {
            "device": np.array(self.device, dtype="S"),
            "ts": np.array(self.ts, dtype=np.int64),
            "operator": np.array(self.operator, dtype="S6"),
            "home_mcc": np.array(self.home_mcc, dtype=np.int16),
            "cell": np.array(self.cell, dtype="S"),
            "lat": np.array(self.lat, dtype=np.float64),
            "lon": np.array(self.lon, dtype=np.float64),
        }
        parts.append((cols, np.array(self.src, dtype=np.int64)))
        self.clear()


def _text_raw(data: bytes) -> str:
    """What a reject keeps of text that is not a ping object: a description, never the text.

    Unparsable text can hold a device pseudonym in any shape (a CSV row, a Python dict), and
    rejects leave the worker (dead-letter topic), so the text itself is not kept.
    """
    return f"<unparsable message, {len(data)} bytes; content not shown>"


def _binary_raw(data: bytes, kind: str) -> str:
    """What a reject file keeps of a binary message: a description, never the Avro body."""
    if kind == "avro":
        sid = int.from_bytes(data[1:5], "big") if len(data) >= 5 else None
        return f"<avro message, {len(data)} bytes, schema id {sid}; body not shown>"
    head = ""
    if len(data) >= 8 and data[:4] == FRAME_MAGIC:
        hlen = int.from_bytes(data[4:8], "little")
        head = " header " + bytes(data[8:8 + min(hlen, 1000)]).decode("utf-8", "backslashreplace").rstrip()
    return f"<batch frame, {len(data)} bytes; columns not shown>{head}"[:RAW_KEEP_CHARS]


def _read_avro(data: bytes) -> dict[str, Any]:
    if len(data) < 5 or data[0] != 0:
        raise CodecError("bad_avro", "not Confluent Avro (needs 0x00 and a 4-byte schema id)")
    body = io.BytesIO(data[5:])
    try:
        rec = fastavro.schemaless_reader(body, _avro_schema(), None)
    except Exception as exc:
        raise CodecError("bad_avro", f"Avro body does not decode with ping.avsc: "
                         f"{type(exc).__name__}: {exc}".splitlines()[0][:200]) from None
    left = len(data) - 5 - body.tell()
    if left:
        raise CodecError("bad_avro", f"{left} bytes after the Avro record")
    if not isinstance(rec, dict):
        raise CodecError("bad_avro", "Avro body is not a record")
    return rec


def _watermark(obj: dict[str, Any]) -> tuple[int, bool]:
    ts, final = obj.get("ts_ms"), obj.get("final", False)
    if obj.get("control") != "watermark":
        raise CodecError("not_a_ping_object", f"unknown control message {obj.get('control')!r:.40}")
    if isinstance(ts, bool) or not isinstance(ts, int) or not MIN_TS_MS <= ts <= MAX_TS_MS:
        raise CodecError("bad_watermark", "watermark ts_ms must be integer ms since 1970 within "
                         f"2020-01-01..2089, got {ts!r:.40}")
    if not isinstance(final, bool):
        raise CodecError("bad_watermark", f"watermark final must be true or false, got {final!r:.40}")
    return ts, final


def _empty_columns() -> dict[str, np.ndarray]:
    return {"device": np.empty(0, dtype="S1"), "ts": np.empty(0, dtype=np.int64),
            "operator": np.empty(0, dtype="S6"), "home_mcc": np.empty(0, dtype=np.int16),
            "cell": np.empty(0, dtype="S1"), "lat": np.empty(0, dtype=np.float64),
            "lon": np.empty(0, dtype=np.float64)}


def decode_messages(values: list[bytes], content_types: list[str | None] | None = None) -> Decoded:
    """Decode a batch of Kafka message values (in order) into one set of ping columns.

    JSON and Avro pings are gathered into columns, frames are appended as blocks; row order
    follows message order. ``content_types[i]`` (the message's ``content-type`` header, if any)
    overrides sniffing for message ``i``. Never raises on bad input: a bad message, or a bad row
    in a frame, becomes a reject with the same reason codes as ping files (type rules only; ranges
    and cell-plan lookups are checked downstream) or one of the :class:`CodecError` codes.
    """
    if content_types is not None and len(content_types) != len(values):
        raise ValueError(f"{len(content_types)} content types for {len(values)} messages")
    parts: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    rows = _Rows()
    rejects: list[tuple[int, str, str, str]] = []
    watermarks: list[tuple[int, int, bool]] = []
    for i, data in enumerate(values):
        kind = "unknown"
        fields: dict[str, Any] | None = None
        try:
            ct = content_types[i] if content_types is not None else None
            kind = "json" if ct is None and data and data[:1] == b"{" else sniff(data, ct)
            if kind == "frame":
                cols = decode_frame(data)
                rows.flush(parts)
                block = _check_frame(cols, i, rejects)
                parts.append((block, np.full(len(block["ts"]), i, dtype=np.int64)))
                continue
            if kind == "avro":
                fields = _read_avro(data)
            else:
                try:
                    obj = _json_decode(data.decode("utf-8").lstrip().removeprefix("\ufeff"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise CodecError("malformed_json", f"malformed JSON: {exc}".splitlines()[0][:200]) from None
                if not isinstance(obj, dict):
                    raise CodecError("not_a_ping_object", f"JSON {type(obj).__name__}, not an object")
                fields = obj
                if "control" in obj:
                    ts_ms, final = _watermark(obj)
                    watermarks.append((i, ts_ms, final))
                    continue
            bad = check_ping(fields) or rows.add(fields, i)
            if bad:
                rejects.append((i, bad[0], bad[1], _redacted(fields)))
        except Exception as exc:  # a message must never break the batch
            if isinstance(exc, CodecError):
                reason, detail = exc.reason, exc.detail
            else:
                reason = {"frame": "bad_frame", "avro": "bad_avro", "unknown": "unknown_encoding"}.get(
                    kind, "malformed_json")
                detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            if fields is not None:
                raw = _redacted(fields)
            elif kind in ("frame", "avro"):
                raw = _binary_raw(data or b"", kind)
            else:
                raw = _text_raw(data or b"")
            rejects.append((i, reason, detail, raw))
    rows.flush(parts)
    if not parts:
        return Decoded(_empty_columns(), np.empty(0, dtype=np.int64), rejects, watermarks)
    if len(parts) == 1:
        return Decoded(parts[0][0], parts[0][1], rejects, watermarks)
    columns = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    return Decoded(columns, np.concatenate([p[1] for p in parts]), rejects, watermarks)
