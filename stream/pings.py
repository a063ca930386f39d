"""Ping files in, validated columnar batches out; every bad row is kept with its reason.

Reading (:func:`read_records`) turns JSON Lines or CSV files (optionally gzipped) into chunks of
records; decoding (:class:`PingDecoder`) checks each record against the ping contract
(``schemas/ping.schema.json``), pseudonymizes the device, bins the location and returns numpy
columns for the engine plus a list of :class:`Reject`. Nothing is dropped silently: a reject names
its source line, a stable reason code and a human detail.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from estimators.engine import MAX_OPERATORS, Engine
from estimators.presence import EPOCH_MS, MAX_TS_REL_MS
from estimators.pseudonym import device_keys, siphash24
from stream.files import InputError, open_text

MAX_DEVICE_CHARS = 128
MIN_TS_MS = EPOCH_MS
MAX_TS_MS = EPOCH_MS + MAX_TS_REL_MS
RAW_KEEP_CHARS = 2000
PING_FIELDS = ("device", "ts", "operator", "home_mcc", "cell", "lat", "lon")


@dataclass
class Record:
    """One input row: where it came from, its parsed fields (None if unparsable), raw text."""

    source: str
    fields: dict[str, Any] | None
    raw: str
    error: str = ""


@dataclass
class Reject:
    """A row set aside: source (``file:line``), reason code, detail and the (redacted) row."""

    source: str
    reason: str
    detail: str
    record: str

    def to_json(self) -> str:
        """One JSON line for the reject file."""
        return json.dumps({"source": self.source, "reason": self.reason, "detail": self.detail,
                           "record": self.record}, ensure_ascii=False)


@dataclass
class PingBatch:
    """Validated pings as columns: keyed device hash, event time, operator class, location."""

    device_key: np.ndarray
    ts_ms: np.ndarray
    opclass: np.ndarray
    loc: np.ndarray
    rejects: list[Reject] = field(default_factory=list)
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ts_ms)

    def select(self, mask: np.ndarray) -> PingBatch:
        """The pings where ``mask`` is true (rejects are not carried over)."""
        return PingBatch(self.device_key[mask], self.ts_ms[mask], self.opclass[mask],
                         self.loc[mask], row=self.row[mask] if len(self.row) else self.row)


def ping_format(path: str | Path) -> str:
    """``jsonl`` or ``csv`` from a file name (``.gz`` allowed on either)."""
    name = str(path).lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise InputError(f"{path}: unknown ping file type (use .jsonl, .ndjson or .csv, "
                     "optionally .gz)")


def _csv_value(name: str, text: str | None) -> Any:
    if text is None or text == "":
        return None
    if name in ("ts", "home_mcc"):
        return int(text) if text.lstrip("-").isdigit() else text
    if name in ("lat", "lon"):
        try:
            return float(text)
        except ValueError:
            return text
    return text


def read_records(paths: Iterable[str | Path], chunk_rows: int = 100_000) -> Iterator[list[Record]]:
    """Yield chunks of records from ping files, in file order."""
    chunk: list[Record] = []
    for path in paths:
        kind = ping_format(path)
        with open_text(path) as fh:
            if kind == "jsonl":
                for line_no, line in enumerate(fh, start=1):
                    text = line.strip()
                    if not text:
                        continue
                    src = f"{path}:{line_no}"
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as exc:
                        chunk.append(Record(src, None, text, f"malformed JSON: {exc.msg}"))
                    else:
                        if isinstance(obj, dict):
                            chunk.append(Record(src, obj, text))
                        else:
                            chunk.append(Record(src, None, text, "not a JSON object"))
                    if len(chunk) >= chunk_rows:
                        yield chunk
                        chunk = []
            else:
                reader = csv.reader(fh)
                header = [h.strip() for h in next(reader, [])]
                missing = [c for c in ("device", "ts", "operator") if c not in header]
                if missing:
                    raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
                for line_no, row in enumerate(reader, start=2):
                    src = f"{path}:{line_no}"
                    if len(row) != len(header):
                        chunk.append(Record(src, None, ",".join(row),
                                            f"expected {len(header)} columns, got {len(row)}"))
                    else:
                        rec = {h: _csv_value(h, v.strip()) for h, v in zip(header, row, strict=True)
                               if h in PING_FIELDS}
                        chunk.append(Record(src, rec, ",".join(row)))
                    if len(chunk) >= chunk_rows:
                        yield chunk
                        chunk = []
    if chunk:
        yield chunk


def _redacted(fields: dict[str, Any]) -> str:
    shown = {k: ("<redacted>" if k == "device" else v) for k, v in fields.items()}
    return json.dumps(shown, ensure_ascii=False, default=str)[:RAW_KEEP_CHARS]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_ping(f: dict[str, Any]) -> tuple[str, str] | None:
    """Reason and detail if a ping object breaks the contract, else None (types only)."""
    device = f.get("device")
    if device is None:
        return "missing_device", "no device field"
    if not isinstance(device, str) or not device or len(device) > MAX_DEVICE_CHARS:
        return "bad_device", f"device must be a string of 1..{MAX_DEVICE_CHARS} characters"
    ts = f.get("ts")
    if ts is None:
        return "missing_ts", "no ts field"
    if not _is_int(ts):
        return "bad_ts", f"ts must be integer milliseconds since 1970, got {ts!r:.40}"
    if not MIN_TS_MS <= ts <= MAX_TS_MS:
        return "ts_out_of_range", "ts outside 2020-01-01..2089 (milliseconds since 1970 expected)"
    op = f.get("operator")
    if op is None:
        return "missing_operator", "no operator field"
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
        return "missing_location", "neither cell nor lat/lon"
    if not _is_num(lat) or not _is_num(lon) or not (abs(lat) <= 90 and abs(lon) <= 180):
        return "bad_coordinates", "lat must be in [-90, 90] and lon in [-180, 180]"
    return None


class PingDecoder:
    """Validates records against the ping contract and turns them into engine columns."""

    def __init__(self, engine: Engine, secret: bytes, max_future_s: int = 3600,
                 now_ms: int | None = None) -> None:
        self.engine = engine
        self.secret = secret
        self.max_future_s = max_future_s
        self.now_ms = now_ms
        self._plan_index: tuple[Any, dict[bytes, int]] | None = None

    def decode(self, records: list[Record]) -> PingBatch:
        """Validate a chunk of records and return the valid pings as columns plus rejects.

        ``PingBatch.row`` indexes ``records``.
        """
        rejects: list[Reject] = []
        rows: list[dict[str, Any]] = []
        kept: list[int] = []
        for i, r in enumerate(records):
            if r.fields is None:
                reason = "malformed_json" if r.error.startswith(("malformed", "not a")) \
                    else "malformed_csv"
                rejects.append(Reject(r.source, reason, r.error, r.raw[:RAW_KEEP_CHARS]))
                continue
            bad = check_ping(r.fields)
            if bad:
                rejects.append(Reject(r.source, bad[0], bad[1], _redacted(r.fields)))
            else:
                kept.append(i)
                rows.append(r.fields)
        batch = self.decode_columns(ping_columns(rows), lambda i: records[kept[i]].source)
        batch.row = np.asarray(kept, dtype=np.int64)[batch.row]
        batch.rejects = rejects + batch.rejects
        return batch

    def _plan_rows(self, operator: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """Cell-plan row of each (operator, cell id) pair, -1 when the plan does not know it."""
        plan = self.engine.plan
        if plan is None or len(cell) == 0:
            return np.full(len(cell), -1, dtype=np.int64)
        if self._plan_index is None or self._plan_index[0] is not plan:
            self._plan_index = (plan, {f"{op}\x1f{c}".encode(): r for (op, c), r in plan.row.items()})
        index = self._plan_index[1]
        uniq, inverse = unique_bytes(np.char.add(operator, np.char.add(b"\x1f", cell)))
        found = np.fromiter((index.get(u, -1) for u in uniq.tolist()), dtype=np.int64, count=len(uniq))
        return found[inverse]

    def _operator_codes(self, operator: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """Engine operator code per row (only rows in ``ok`` register new operators); -1 when
        the engine has no room for another operator."""
        out = np.full(len(operator), -1, dtype=np.int64)
        if not ok.any():
            return out
        uniq, inverse = unique_bytes(operator[ok])
        codes = np.empty(len(uniq), dtype=np.int64)
        for j, op in enumerate(uniq.tolist()):
            try:
                codes[j] = self.engine.operator_code(op.decode())
            except ValueError:
                codes[j] = -1
        out[ok] = codes[inverse]
        return out

    def decode_columns(self, cols: dict[str, np.ndarray], source: Callable[[int], str]) -> PingBatch:
        """Validate ping columns (see :func:`ping_columns`) and turn the valid ones into a batch.

        ``source(i)`` names input row ``i`` in a reject; ``PingBatch.row`` indexes the input rows.
        Every check is vectorized: this is the hot path of frame messages.
        """
        device, operator = cols["device"], cols["operator"]
        n = len(device)
        ts = np.asarray(cols["ts"], dtype=np.int64)
        mcc = np.asarray(cols["home_mcc"], dtype=np.int64)
        cell = cols.get("cell", np.zeros(n, dtype="S1"))
        lat = np.asarray(cols.get("lat", np.full(n, np.nan)), dtype=np.float64)
        lon = np.asarray(cols.get("lon", np.full(n, np.nan)), dtype=np.float64)
        is_cell = np.char.str_len(cell) > 0
        op_len = np.char.str_len(operator)
        dev_len = np.char.str_len(device)
        now_ms = self.now_ms if self.now_ms is not None else int(time.time() * 1000)
        plan_row = np.full(n, -1, dtype=np.int64)
        if is_cell.any():
            plan_row[is_cell] = self._plan_rows(operator[is_cell], cell[is_cell])
        checks = [
            # UTF-8 bytes here; the 128-character limit is checked on the text by check_ping/codec
            ((dev_len == 0) | (dev_len > 4 * MAX_DEVICE_CHARS), "bad_device"),
            (~np.char.isdigit(operator) | (op_len < 5) | (op_len > 6), "bad_operator"),
            ((mcc < -1) | (mcc > 999), "bad_home_mcc"),
            (~is_cell & np.isnan(lat) & np.isnan(lon), "missing_location"),
            ((ts < MIN_TS_MS) | (ts > MAX_TS_MS), "ts_out_of_range"),
            (ts > now_ms + self.max_future_s * 1000, "ts_in_future"),
            (~is_cell & ~((np.abs(lat) <= 90) & (np.abs(lon) <= 180)), "bad_coordinates"),
            (is_cell & (plan_row < 0), "unknown_cell"),
        ]
        reason = np.full(n, "", dtype=object)
        for mask, code in checks:
            reason[(reason == "") & mask] = code
        details = {
            "bad_device": f"device must be a string of 1..{MAX_DEVICE_CHARS} characters",
            "bad_operator": "operator must be an MCC+MNC string of 5-6 digits",
            "bad_home_mcc": "home_mcc must be null or an integer 0..999",
            "missing_location": "neither cell nor lat/lon",
            "ts_out_of_range": "ts outside 2020-01-01..2089 (milliseconds since 1970 expected)",
            "ts_in_future": f"ts more than {self.max_future_s} s ahead of the clock",
            "bad_coordinates": "lat must be in [-90, 90] and lon in [-180, 180]",
            "unknown_cell": "cell id not in the cell plan for this operator",
        }
        op_code = self._operator_codes(operator, reason == "")
        reason[(reason == "") & (op_code < 0)] = "too_many_operators"
        details["too_many_operators"] = f"more than {MAX_OPERATORS} distinct operators"
        idx = np.flatnonzero(reason == "")
        op_ok = operator[idx]
        op_codes = op_code[idx]
        rejects = [Reject(source(i), reason[i], details[reason[i]], _redacted(_row_fields(cols, i)))
                   for i in np.flatnonzero(reason != "").tolist()]
        loc = np.empty(len(idx), dtype=np.int64)
        cell_ok = is_cell[idx]
        if cell_ok.any():
            plan = self.engine.plan
            assert plan is not None
            loc[cell_ok] = plan.loc[plan_row[idx[cell_ok]]]
        if (~cell_ok).any():
            pick = idx[~cell_ok]
            loc[~cell_ok] = self.engine.cells.locate_latlng(lat[pick], lon[pick])
        return PingBatch(
            device_key=device_keys(op_ok, device[idx], self.secret),
            ts_ms=ts[idx],
            opclass=self.engine.operator_class(op_codes, mcc[idx]),
            loc=loc,
            rejects=rejects,
            row=idx,
        )


_UNIQUE_KEY = b"defacto unique\x00\x00"


def unique_bytes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct byte strings of a ``|S`` column and each row's index into them.

    Like ``np.unique(values, return_inverse=True)`` without sorting strings: rows are hashed to
    64-bit integers (SipHash) and those are sorted; a hash collision (checked) falls back to the
    string sort. The distinct values come in hash order, not lexical order.
    """
    if len(values) == 0:
        return values[:0], np.zeros(0, dtype=np.int64)
    h = siphash24(_UNIQUE_KEY, values)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    uniq = values[first]
    if not np.array_equal(uniq[inverse], values):
        uniq, inverse = np.unique(values, return_inverse=True)
        inverse = inverse.reshape(-1)
    return uniq, inverse


def _bytes_column(values: list[Any]) -> np.ndarray:
    """A ``|S`` column of UTF-8 strings (None becomes empty)."""
    return np.array([b"" if v is None else str(v).encode() for v in values], dtype=np.bytes_) \
        if values else np.zeros(0, dtype="S1")


def ping_columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Type-checked ping dicts (see :func:`check_ping`) as the columns the decoder validates."""
    n = len(rows)
    return {
        "device": _bytes_column([f["device"] for f in rows]),
        "ts": np.fromiter((f["ts"] for f in rows), dtype=np.int64, count=n),
        "operator": _bytes_column([f["operator"] for f in rows]),
        "home_mcc": np.fromiter((-1 if f.get("home_mcc") is None else f["home_mcc"] for f in rows),
                                dtype=np.int64, count=n),
        "cell": _bytes_column([f.get("cell") for f in rows]),
        "lat": np.fromiter((np.nan if f.get("cell") is not None else float(f["lat"]) for f in rows),
                           dtype=np.float64, count=n),
        "lon": np.fromiter((np.nan if f.get("cell") is not None else float(f["lon"]) for f in rows),
                           dtype=np.float64, count=n),
    }


def _row_fields(cols: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """One column row back as ping fields (for the text of a reject)."""
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
