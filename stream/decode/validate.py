"""Validation: ping columns or records → validated, pseudonymized, binned :class:`PingBatch`.

:class:`PingDecoder` checks pings against the contract's ranges and the reference data (cell plan,
operators, clock), turns each device pseudonym into a keyed 64-bit hash (the pseudonym goes no
further) and bins each location into the engine's cell table. Every check is vectorized; each
bad ping becomes a :class:`~stream.contract.Reject` with its reason code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from estimators.engine import MAX_OPERATORS, Engine
from estimators.pseudonym import device_keys, siphash24
from estimators.units import HOUR_MS, SECOND_MS
from stream.contract import (
    MAX_TEXT_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    PING_DTYPES,
    REJECT_REASONS,
    PingColumns,
    Record,
    Reject,
    check_ping,
    redacted,
    row_fields,
    unparsable,
)


@dataclass
class PingBatch:
    """Validated pings as columns, all of length n.

    ``device_key`` uint64[n] keyed device hashes; ``ts_ms`` int64[n] event times (UTC ms);
    ``opclass`` uint8[n] operator classes; ``loc`` int64[n] indices into the engine's cell table;
    ``row`` int64[n] the input row each ping came from; ``rejects`` the input set aside.
    """

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


class PingDecoder:
    """Validates pings against the ping contract and the engine's reference data, and turns them
    into engine columns.

    ``max_future_ms``: pings further ahead of the clock (``now_ms``, default the wall clock) are
    rejected as ``ts_in_future``. ``secret`` keys the device hashes; the pseudonyms go no further.
    """

    def __init__(self, engine: Engine, secret: bytes, max_future_ms: int = HOUR_MS,
                 now_ms: int | None = None) -> None:
        self.engine = engine
        self.secret = secret
        self.max_future_ms = max_future_ms
        self.now_ms = now_ms
        self._plan_index: tuple[Any, dict[bytes, int]] | None = None

    def decode(self, records: list[Record]) -> PingBatch:
        """Validate a chunk of records and return the valid pings as columns plus rejects.

        ``PingBatch.row`` indexes ``records``. A reject keeps the :func:`~stream.contract.redacted`
        fields of a parsed row and only the size of an unparsable one (never ``Record.raw``).
        """
        rejects: list[Reject] = []
        rows: list[dict[str, Any]] = []
        kept: list[int] = []
        for i, r in enumerate(records):
            if r.fields is None:
                reason = "malformed_json" if r.error.startswith(("malformed", "not a")) \
                    else "malformed_csv"
                size = len(r.raw.encode("utf-8", "surrogatepass"))
                detail = (r.error.splitlines() or [""])[0][:200]
                rejects.append(Reject(r.source, reason, detail, unparsable("row", size)))
                continue
            bad = check_ping(r.fields)
            if bad:
                rejects.append(Reject(r.source, bad[0], bad[1], redacted(r.fields, now_ms=self.now_ms)))
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

    def decode_columns(self, cols: PingColumns, source: Callable[[int], str]) -> PingBatch:
        """Validate ping columns (see :func:`ping_columns`) and turn the valid ones into a batch.

        ``source(i)`` names input row ``i`` in a reject; ``PingBatch.row`` indexes the input rows.
        Every check is vectorized: this is the hot path of frame messages. A row failing several
        checks is rejected for the first, in the order of the table below.
        """
        device, operator = cols["device"], cols["operator"]
        n = len(device)
        ts = np.asarray(cols["ts"], dtype=np.int64)
        mcc = np.asarray(cols["home_mcc"], dtype=np.int64)
        cell = cols.get("cell", np.zeros(n, dtype="S1"))
        lat = np.asarray(cols.get("lat", np.full(n, np.nan)), dtype=np.float64)
        lon = np.asarray(cols.get("lon", np.full(n, np.nan)), dtype=np.float64)
        cell_len = np.char.str_len(cell)
        is_cell = cell_len > 0
        op_len = np.char.str_len(operator)
        dev_len = np.char.str_len(device)
        now_ms = self.now_ms if self.now_ms is not None else int(time.time() * SECOND_MS)
        plan_row = np.full(n, -1, dtype=np.int64)
        if is_cell.any():
            plan_row[is_cell] = self._plan_rows(operator[is_cell], cell[is_cell])
        checks = [
            # UTF-8 bytes here; the character limits are checked on the text by check_ping/frame
            ((dev_len == 0) | (dev_len > MAX_TEXT_BYTES["device"]), "bad_device"),
            (~np.char.isdigit(operator) | (op_len < 5) | (op_len > 6), "bad_operator"),
            ((mcc < -1) | (mcc > 999), "bad_home_mcc"),
            (cell_len > MAX_TEXT_BYTES["cell"], "bad_cell"),
            (~is_cell & np.isnan(lat) & np.isnan(lon), "missing_location"),
            ((ts < MIN_TS_MS) | (ts > MAX_TS_MS), "ts_out_of_range"),
            (ts > now_ms + self.max_future_ms, "ts_in_future"),
            (~is_cell & ~((np.abs(lat) <= 90) & (np.abs(lon) <= 180)), "bad_coordinates"),
            (is_cell & (plan_row < 0), "unknown_cell"),
        ]
        reason = np.full(n, "", dtype=object)
        for mask, code in checks:
            reason[(reason == "") & mask] = code
        op_code = self._operator_codes(operator, reason == "")
        reason[(reason == "") & (op_code < 0)] = "too_many_operators"
        details = {**REJECT_REASONS,
                   "ts_in_future": f"ts more than {self.max_future_ms // SECOND_MS} s ahead of the clock",
                   "too_many_operators": f"more than {MAX_OPERATORS} distinct operators"}
        idx = np.flatnonzero(reason == "")
        rejects = [Reject(source(i), reason[i], details[reason[i]],
                          redacted(row_fields(cols, i), known_cell=bool(plan_row[i] >= 0), now_ms=now_ms))
                   for i in np.flatnonzero(reason != "").tolist()]
        return PingBatch(
            device_key=device_keys(operator[idx], device[idx], self.secret),
            ts_ms=ts[idx],
            opclass=self.engine.operator_class(op_code[idx], mcc[idx]),
            loc=self._locations(is_cell[idx], plan_row[idx], lat[idx], lon[idx]),
            rejects=rejects,
            row=idx,
        )

    def _locations(self, is_cell: np.ndarray, plan_row: np.ndarray, lat: np.ndarray,
                   lon: np.ndarray) -> np.ndarray:
        """Cell-table location of each valid ping: its plan row's, or its lat/lon binned."""
        loc = np.empty(len(is_cell), dtype=np.int64)
        if is_cell.any():
            plan = self.engine.plan
            assert plan is not None
            loc[is_cell] = plan.loc[plan_row[is_cell]]
        if (~is_cell).any():
            loc[~is_cell] = self.engine.cells.locate_latlng(lat[~is_cell], lon[~is_cell])
        return loc


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


def ping_columns(rows: list[dict[str, Any]]) -> PingColumns:
    """Type-checked ping dicts (see :func:`~stream.contract.check_ping`) as
    :data:`~stream.contract.PingColumns`."""
    n = len(rows)
    return {
        "device": _bytes_column([f["device"] for f in rows]),
        "ts": np.fromiter((f["ts"] for f in rows), dtype=PING_DTYPES["ts"], count=n),
        "operator": _bytes_column([f["operator"] for f in rows]).astype(PING_DTYPES["operator"]),
        "home_mcc": np.fromiter((-1 if f.get("home_mcc") is None else f["home_mcc"] for f in rows),
                                dtype=PING_DTYPES["home_mcc"], count=n),
        "cell": _bytes_column([f.get("cell") for f in rows]),
        "lat": np.fromiter((np.nan if f.get("cell") is not None else float(f["lat"]) for f in rows),
                           dtype=PING_DTYPES["lat"], count=n),
        "lon": np.fromiter((np.nan if f.get("cell") is not None else float(f["lon"]) for f in rows),
                           dtype=PING_DTYPES["lon"], count=n),
    }
