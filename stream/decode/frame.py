"""The batch frame: thousands of pings in one Kafka message, as a columnar binary layout.

Layout (``schemas/README.md``, section "Kafka messages"): the magic ``DFB1``, a 4-byte
little-endian header length, a JSON header ``{"n": rows, "columns": [{"name", "dtype"}, ...]}``
padded to a multiple of 8, then each column's ``n`` values back to back. Decoding gives read-only
numpy views of the message (no copies), after checking every size the header declares against the
message's length and every text column's width against its field's limit
(:data:`~stream.contract.MAX_TEXT_BYTES`): a frame never makes a column wider than the contract
allows, whatever its row count. :func:`check_frame_rows` applies the ping contract's type rules to
the rows, vectorized.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from stream.contract import (
    MAX_TEXT_BYTES,
    PING_DTYPES,
    CodecError,
    PingColumns,
    Reject,
    describe,
    field_name,
    redacted,
    row_fields,
)

FRAME_MAGIC = b"DFB1"
MAX_FRAME_HEADER = 1 << 20
"""Largest frame header (bytes) accepted; a real header is a few hundred bytes."""
MAX_ROWS_SHOWN = 1_000_000_000
MAX_COLUMNS_SHOWN = 20
_DTYPE_STR = re.compile(r"[<>|=]?[A-Za-z][0-9]{0,10}(\[[A-Za-z0-9]{1,8}\])?")
"""The form of ``numpy.dtype(...).str`` (``<i8``, ``|S6``, ``<M8[ms]``): the only dtype strings read."""

_FIXED = {name: PING_DTYPES[name] for name in ("ts", "operator", "home_mcc", "lat", "lon")}
_TEXT = ("device", "cell")
_KNOWN = (*_FIXED, *_TEXT)
# Encoder column order: 8-byte columns first so that, with the header padded to a multiple of 8,
# ts/lat/lon start 8-byte aligned inside the message (the decoder does not rely on it).
_ENCODE_ORDER = ("ts", "lat", "lon", "home_mcc", "operator", "device", "cell")
_UTF8_BLOCK_ROWS = 256


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


def encode_frame(columns: PingColumns) -> bytes:
    """Encode ping columns as one batch frame (layout in ``schemas/README.md``).

    Needs ``device``, ``ts``, ``operator`` and a location: ``cell`` (``""``/``None`` = none) and/or
    ``lat`` + ``lon`` (NaN = none). ``home_mcc`` (-1 = unknown) defaults to all -1. Text columns
    may be numpy ``U``, ``S`` or object arrays; they are written as UTF-8 ``S<w>`` padded to the
    widest value, which must fit :data:`~stream.contract.MAX_TEXT_BYTES` (a wider frame would be
    rejected whole by the decoder). Other columns are written as they are (any fixed-size,
    non-object dtype) and ignored by the decoder. Raises :class:`CodecError` (``bad_frame``) on
    bad columns.
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
            out[name] = np.full(n, -1, dtype=_FIXED["home_mcc"])
        elif name not in columns:
            continue
        elif name in _TEXT:
            out[name] = _text_column(name, columns[name], n)
            if out[name].dtype.itemsize > MAX_TEXT_BYTES[name]:
                raise CodecError("bad_frame", f"{name} values must be at most {MAX_TEXT_BYTES[name]} "
                                 "bytes of UTF-8 (see stream.contract.check_ping)")
        elif name == "operator":
            op = _text_column(name, columns[name], n)
            if op.dtype.itemsize > 6 and n and np.strings.str_len(op).max() > 6:
                raise CodecError("bad_frame", "operator values must be at most 6 bytes")
            out[name] = op.astype(_FIXED["operator"])
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


def _frame_fail(detail: str) -> CodecError:
    return CodecError("bad_frame", detail)


def _name(name: Any) -> str:
    """A column name for a detail: shown only where it cannot be data (see ``field_name``)."""
    return field_name(name) or "<name not shown>"


def _header(data: bytes) -> dict[str, Any]:
    """The JSON header of a frame message. Raises :class:`CodecError` (``bad_frame``)."""
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
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, deep nesting
        raise _frame_fail(f"header is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise _frame_fail("header is not a JSON object")
    return header


def _column_dtype(col: Any) -> tuple[str, np.dtype[Any]]:
    """Name and dtype of a header column entry, checked against the contract before any byte is
    read: a dtype string of the form of ``numpy.dtype.str``, the known columns' dtypes, and text
    columns no wider than their field (:data:`~stream.contract.MAX_TEXT_BYTES`). Raises
    :class:`CodecError` (``bad_frame``)."""
    if not isinstance(col, dict) or not isinstance(col.get("name"), str) \
            or not isinstance(col.get("dtype"), str):
        raise _frame_fail(f"bad column entry {describe(col)}: needs name and dtype strings")
    name, dtype = col["name"], col["dtype"]
    if not _DTYPE_STR.fullmatch(dtype):
        raise _frame_fail(f"column {_name(name)}: dtype is not of the form '<i8' or '|S6'")
    try:
        dt = np.dtype(dtype)
    except Exception:
        raise _frame_fail(f"column {_name(name)}: unknown dtype {dtype}") from None
    if dt.hasobject or dt.itemsize == 0:
        raise _frame_fail(f"column {_name(name)}: dtype {dtype} is not a fixed-size plain type")
    want = _FIXED.get(name)
    if (want is not None and dt != want) or (name in _TEXT and dt.kind != "S"):
        raise _frame_fail(f"column {name}: dtype {dt.str}, expected "
                          f"{want.str if want is not None else '|S<w>'}")
    if name in _TEXT and dt.itemsize > MAX_TEXT_BYTES[name]:
        raise _frame_fail(f"column {name}: width {dt.itemsize} bytes exceeds the field's "
                          f"{MAX_TEXT_BYTES[name]}")
    return name, dt


def describe_frame(data: bytes) -> str:
    """What a reject keeps of a frame message: its size and, where the header reads, its row
    count and columns (names that could be data and odd dtypes are not shown); never values."""
    try:
        header = _header(data)
    except CodecError as exc:
        return f"<batch frame, {len(data)} bytes, {exc.detail.split(':')[0]}; values not shown>"
    n, cols = header.get("n"), header.get("columns")
    rows = n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_ROWS_SHOWN \
        else describe(n)
    shown = []
    for c in cols[:MAX_COLUMNS_SHOWN] if isinstance(cols, list) else []:
        name, dtype = (c.get("name"), c.get("dtype")) if isinstance(c, dict) else (None, None)
        ok = isinstance(dtype, str) and _DTYPE_STR.fullmatch(dtype)
        shown.append(f"{_name(name)} {dtype if ok else '?'}")
    if isinstance(cols, list) and len(cols) > MAX_COLUMNS_SHOWN:
        shown.append(f"+{len(cols) - MAX_COLUMNS_SHOWN} more")
    return (f"<batch frame, {len(data)} bytes, {rows} rows, columns: {', '.join(shown) or '?'}; "
            "values not shown>")


def decode_frame(data: bytes) -> PingColumns:
    """The known columns of a batch frame as read-only numpy views of ``data`` (no copies).

    Returns ``device``, ``ts``, ``operator``, ``home_mcc`` and whichever of ``cell``, ``lat``,
    ``lon`` the frame has; unknown columns are skipped. Raises :class:`CodecError` (``bad_frame``)
    on a bad magic or header, a missing or mistyped required column, a text column wider than its
    field allows (checked from the header, before any allocation: whatever ``n``, no column of
    the decoded batch is wider than :data:`~stream.contract.MAX_TEXT_BYTES`), or data that is
    shorter or longer than the header says. Row contents are not checked here (see
    :func:`check_frame_rows`). No detail quotes a value or a name that could be data.
    """
    header = _header(data)
    size = len(data)
    offset = 8 + int.from_bytes(data[4:8], "little")
    n, cols = header.get("n"), header.get("columns")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise _frame_fail(f"header n must be a non-negative integer, got {describe(n)}")
    if not isinstance(cols, list):
        raise _frame_fail("header columns must be a list")
    out: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for col in cols:
        name, dt = _column_dtype(col)
        if name in seen:
            raise _frame_fail(f"duplicate column {_name(name)}")
        seen.add(name)
        nbytes = n * dt.itemsize
        if offset + nbytes > size:
            raise _frame_fail(f"truncated: column {_name(name)} needs {nbytes} bytes at offset "
                              f"{offset}, message has {size}")
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


_HIGH = np.uint64(0x8080808080808080)
_FIVE = np.uint64(0x8080808080)


def _operator_ok(op: np.ndarray) -> np.ndarray:
    """Rows of an ``S6`` column that are 5-6 ASCII digits (NUL padded), as whole 64-bit words:
    a byte ``b`` below 0x80 is a digit when ``b + 0x50`` has its top bit set and ``b + 0x46``
    has not (no carry leaves such a byte; a byte from 0x80 up makes its row fail first)."""
    n = len(op)
    raw = np.zeros((n, 8), dtype=np.uint8)
    raw[:, :6] = np.ascontiguousarray(op).view(np.uint8).reshape(n, 6)
    w = raw.view("<u8").reshape(n)
    digit = (w + np.uint64(0x5050505050505050)) & ~(w + np.uint64(0x4646464646464646)) & ~w & _HIGH
    return ((digit & _FIVE) == _FIVE) & (((digit >> np.uint64(47)) != 0) | ((w >> np.uint64(40)) == 0))


def check_frame_rows(cols: PingColumns, source: Callable[[], str], rejects: list[Reject]
                     ) -> PingColumns:
    """Apply the ping contract's type rules to frame rows (vectorized); bad rows go to ``rejects``
    (``source()`` names the frame, the detail names the row).

    Returns the good rows with all seven columns; the frame's views are kept when nothing has to
    change. An empty device or operator counts as missing (a frame cannot hold null).
    """
    dev, op, mcc = cols["device"], cols["operator"], cols["home_mcc"]
    n = len(dev)
    has_cell = np.strings.str_len(cols["cell"]) > 0 if "cell" in cols else np.zeros(n, dtype=bool)
    lat = cols.get("lat", np.full(n, np.nan))
    lon = cols.get("lon", np.full(n, np.nan))
    lat_nan, lon_nan = np.isnan(lat), np.isnan(lon)

    conditions = [
        (lambda: np.strings.str_len(dev) == 0, "missing_device", "empty device"),
        (lambda: _utf8_bad(dev), "bad_device", "device must be UTF-8 text"),  # width capped
        (lambda: np.ascontiguousarray(op).view(np.uint8)[::6] == 0, "missing_operator",
         "empty operator"),
        (lambda: ~_operator_ok(op), "bad_operator", "operator must be an MCC+MNC string of 5-6 digits"),
        (lambda: (mcc < -1) | (mcc > 999), "bad_home_mcc", "home_mcc must be -1 (unknown) or 0..999"),
        (lambda: _utf8_bad(cols["cell"]) & has_cell if "cell" in cols else has_cell, "bad_cell",
         "cell must be UTF-8 text"),
        (lambda: ~has_cell & lat_nan & lon_nan, "missing_location", "neither cell nor lat/lon"),
        (lambda: ~has_cell & (lat_nan != lon_nan), "bad_coordinates", "lat and lon must both be numbers"),
    ]
    failed = [(k, mask) for k, (check, _, _) in enumerate(conditions) if (mask := check()).any()]
    reason = np.zeros(n, dtype=np.int8)  # 0 = good, else 1 + index of the first failed check
    for k, mask in reversed(failed):
        reason[mask] = k + 1
    bad = np.flatnonzero(reason) if failed else np.zeros(0, dtype=np.int64)
    src = source() if len(bad) else ""
    for i in bad.tolist():
        _, code, detail = conditions[reason[i] - 1]
        rejects.append(Reject(src, code, f"row {i}: {detail}", redacted(row_fields(cols, i))))

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
