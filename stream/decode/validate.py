"""Validation: ping columns or records → validated, pseudonymized, binned :class:`PingBatch`.

:class:`PingDecoder` checks pings against the contract's ranges and the reference data (cell plan,
operators, clock), turns each device pseudonym into a keyed 64-bit hash (the pseudonym goes no
further) and bins each location into the engine's cell table. Every check is vectorized; each
bad ping becomes a :class:`~stream.contract.Reject` with its reason code.

Rows parsed from files (:meth:`PingDecoder.decode_rows`) stay polars columns: the contract's type
rules are checked on them by :func:`contract_certain`, which only ever vouches for rows
:func:`~stream.contract.check_ping` accepts (any other row is checked, and its reject worded, by
``check_ping`` on its record); the cell plan is joined once per chunk, operator codes are looked
up per distinct operator, and device keys are the SipHash of :mod:`estimators.pseudonym` computed
on words laid out by polars (:func:`text_device_keys`) or numpy (:func:`fast_device_keys`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl

from estimators.engine import MAX_OPERATORS, Engine
from estimators.pseudonym import device_key_secret, siphash24
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
    ``row`` int64[n] the input row each ping came from; ``rejects`` the input set aside;
    ``home_mcc`` int16[n] the SIM's home MCC (-1 unknown; None when built: all unknown), which
    the engine's foreign stays need.
    """

    device_key: np.ndarray
    ts_ms: np.ndarray
    opclass: np.ndarray
    loc: np.ndarray
    rejects: list[Reject] = field(default_factory=list)
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    home_mcc: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.home_mcc is None:
            self.home_mcc = np.full(len(self.ts_ms), -1, dtype=np.int16)
        else:
            self.home_mcc = np.asarray(self.home_mcc, dtype=np.int16)
            if len(self.home_mcc) != len(self.ts_ms):
                raise ValueError("home_mcc must have one value per ping")

    def __len__(self) -> int:
        return len(self.ts_ms)

    def select(self, mask: np.ndarray) -> PingBatch:
        """The pings where ``mask`` is true (rejects are not carried over)."""
        return PingBatch(self.device_key[mask], self.ts_ms[mask], self.opclass[mask],
                         self.loc[mask], row=self.row[mask] if len(self.row) else self.row,
                         home_mcc=self.home_mcc[mask])


class ParsedRows(Protocol):
    """Rows read from files as :class:`~stream.sources.columnar_files.PingRows` gives them: the
    rows a parser read into ``columns`` (polars; ``device``, ``ts``, ``operator``, ``home_mcc``,
    ``cell``, ``lat``, ``lon`` as Python's ``json`` or the CSV rules read them) and records of
    the rest (``parsed`` false), with each row's source."""

    columns: pl.DataFrame
    parsed: np.ndarray

    def __len__(self) -> int: ...

    def source(self, i: int) -> str: ...

    def record(self, i: int) -> Record: ...


class PingDecoder:
    """Validates pings against the ping contract and the engine's reference data, and turns them
    into engine columns.

    ``max_future_ms``: pings further ahead of the clock (``now_ms``, default the wall clock) are
    rejected as ``ts_in_future``. ``secret`` keys the device hashes; the pseudonyms go no further.
    Three entry points give the same pings and rejects for the same input: :meth:`decode`
    (records), :meth:`decode_columns` (numpy columns: frames) and :meth:`decode_rows` (parsed
    files, without a Python object per good row).
    """

    def __init__(self, engine: Engine, secret: bytes, max_future_ms: int = HOUR_MS,
                 now_ms: int | None = None) -> None:
        self.engine = engine
        self.secret = secret
        self.max_future_ms = max_future_ms
        self.now_ms = now_ms
        self._plan_index: tuple[Any, pl.DataFrame] | None = None

    def _now(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * SECOND_MS)

    # -- entry points --------------------------------------------------------------------------

    def decode(self, records: list[Record]) -> PingBatch:
        """Validate a chunk of records and return the valid pings as columns plus rejects.

        ``PingBatch.row`` indexes ``records``. A reject keeps the :func:`~stream.contract.redacted`
        fields of a parsed row and only the size of an unparsable one (never ``Record.raw``).
        """
        now_ms = self._now()
        rejects, kept, fields = self._check_records(list(enumerate(records)))
        group = _NumpyGroup(self, ping_columns(fields), np.asarray(kept, dtype=np.int64), now_ms)
        return self._finish([group], lambda i: records[i].source, rejects, now_ms)

    def decode_columns(self, cols: PingColumns, source: Callable[[int], str]) -> PingBatch:
        """Validate ping columns (see :func:`ping_columns`) and turn the valid ones into a batch.

        ``source(i)`` names input row ``i`` in a reject; ``PingBatch.row`` indexes the input rows.
        Every check is vectorized: this is the hot path of frame messages. A row failing several
        checks is rejected for the first, in the order of :meth:`_column_reasons`.
        """
        now_ms = self._now()
        n = len(cols["device"])
        group = _NumpyGroup(self, cols, np.arange(n, dtype=np.int64), now_ms)
        return self._finish([group], source, [], now_ms)

    def decode_rows(self, rows: ParsedRows) -> PingBatch:
        """Validate rows read from files (:class:`ParsedRows`) and return the valid pings as
        columns plus rejects, exactly as :meth:`decode` would for the rows' records.

        Parsed rows that :func:`contract_certain` vouches for go on as columns (no Python object
        per row); every other row is turned into its record and checked by
        :func:`~stream.contract.check_ping`, which states the rules and words every reject.
        """
        now_ms = self._now()
        cols = rows.columns
        parsed = np.flatnonzero(rows.parsed)
        certain = contract_certain(cols)
        others = np.sort(np.concatenate([np.flatnonzero(~rows.parsed), parsed[~certain]]))
        rejects, kept, fields = self._check_records([(i, rows.record(i)) for i in others.tolist()])
        groups: list[_Group] = []
        if certain.any():
            good = cols if certain.all() else cols.filter(pl.Series(certain))
            groups.append(_PolarsGroup(self, good, parsed[certain], now_ms, rows.record))
        if kept:
            groups.append(_NumpyGroup(self, ping_columns(fields), np.asarray(kept, np.int64), now_ms))
        return self._finish(groups, rows.source, rejects, now_ms)

    # -- stages --------------------------------------------------------------------------------

    def _check_records(self, records: list[tuple[int, Record]]
                       ) -> tuple[list[Reject], list[int], list[dict[str, Any]]]:
        """The records' rejects by the contract's type rules (``check_ping``) and the rows (and
        fields) that pass, in order."""
        rejects: list[Reject] = []
        kept: list[int] = []
        fields: list[dict[str, Any]] = []
        for i, r in records:
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
                fields.append(r.fields)
        return rejects, kept, fields

    def _finish(self, groups: list[_Group], source: Callable[[int], str], rejects: list[Reject],
                now_ms: int) -> PingBatch:
        """Operator codes, rejects (in input order, after ``rejects``) and the batch of the pings
        of ``groups`` that passed every check."""
        groups = [g for g in groups if len(g.rows)]
        if not groups:
            return PingBatch(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8),
                             np.zeros(0, np.int64), rejects=rejects)
        codes = self._register([op for g in groups for op in g.operators(g.reason == "")])
        op_code = [g.operator_codes(codes) for g in groups]
        for g, c in zip(groups, op_code, strict=True):
            g.reason[(g.reason == "") & (c < 0)] = "too_many_operators"
        details = {**REJECT_REASONS,
                   "ts_in_future": f"ts more than {self.max_future_ms // SECOND_MS} s ahead of the clock",
                   "too_many_operators": f"more than {MAX_OPERATORS} distinct operators"}
        bad = sorted((int(g.rows[j]), k, j) for k, g in enumerate(groups)
                     for j in np.flatnonzero(g.reason != "").tolist())
        for i, k, j in bad:
            g = groups[k]
            rejects.append(Reject(source(i), g.reason[j], details[g.reason[j]],
                                  redacted(g.fields(j), known_cell=bool(g.plan_row[j] >= 0),
                                           now_ms=now_ms)))
        ok = [g.reason == "" for g in groups]
        row = np.concatenate([g.rows[m] for g, m in zip(groups, ok, strict=True)])
        order = np.argsort(row, kind="stable") if len(groups) > 1 else slice(None)

        def joined(values: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(values)[order]

        mcc = joined([g.mcc[m] for g, m in zip(groups, ok, strict=True)])
        is_cell = joined([g.is_cell[m] for g, m in zip(groups, ok, strict=True)])
        return PingBatch(
            device_key=joined([g.keys(m) for g, m in zip(groups, ok, strict=True)]),
            ts_ms=joined([g.ts[m] for g, m in zip(groups, ok, strict=True)]),
            opclass=self.engine.operator_class(
                joined([c[m] for c, m in zip(op_code, ok, strict=True)]), mcc),
            loc=self._locations(is_cell,
                                joined([g.plan_row[m] for g, m in zip(groups, ok, strict=True)]),
                                joined([g.lat[m] for g, m in zip(groups, ok, strict=True)]),
                                joined([g.lon[m] for g, m in zip(groups, ok, strict=True)])),
            rejects=rejects,
            row=row[order],
            home_mcc=mcc.astype(np.int16),
        )

    def _register(self, operators: list[bytes]) -> dict[bytes, int]:
        """Engine code of each distinct operator of the pings that passed the other checks,
        registering new ones in the order of :func:`unique_bytes` (as the engine has always
        seen them); -1 when the engine has no room for another."""
        distinct = list(dict.fromkeys(operators))
        if not distinct:
            return {}
        uniq, _ = unique_bytes(np.array(distinct, dtype="S6"))
        codes: dict[bytes, int] = {}
        for op in uniq.tolist():
            try:
                codes[op] = self.engine.operator_code(op.decode())
            except ValueError:
                codes[op] = -1
        return codes

    def plan_index(self) -> pl.DataFrame | None:
        """The cell plan's ``(operator, cell)`` pairs and rows as a polars frame (built once per
        plan); None without a plan."""
        plan = self.engine.plan
        if plan is None:
            return None
        if self._plan_index is None or self._plan_index[0] is not plan:
            keys = list(plan.row.items())
            frame = pl.DataFrame({"operator": [k[0] for k, _ in keys], "cell": [k[1] for k, _ in keys],
                                  "_row": np.array([r for _, r in keys], dtype=np.int64)},
                                 schema={"operator": pl.String, "cell": pl.String, "_row": pl.Int64})
            self._plan_index = (plan, frame)
        return self._plan_index[1]

    def _plan_rows(self, operator: pl.Series, cell: pl.Series) -> np.ndarray:
        """Cell-plan row of each (operator, cell id) pair (text), -1 when the plan does not know it
        (a null cell included)."""
        index = self.plan_index()
        if index is None or len(cell) == 0:
            return np.full(len(cell), -1, dtype=np.int64)
        query = pl.DataFrame({"operator": operator, "cell": cell})
        found = query.join(index, on=["operator", "cell"], how="left", maintain_order="left")
        return found["_row"].fill_null(-1).to_numpy().astype(np.int64, copy=False)

    def _column_reasons(self, cols: PingColumns, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """The first failed check of each row of numpy ping columns (``""`` if none) and its
        plan row. The checks, in order: ..."""
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
        plan_row = np.full(n, -1, dtype=np.int64)
        if is_cell.any():
            plan_row[is_cell] = self._plan_rows(_text(operator[is_cell]), _text(cell[is_cell]))
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
        return reason, plan_row

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


def _text(values: np.ndarray) -> pl.Series:
    """A ``|S`` column as polars text (bytes that are not UTF-8 become null: they match no plan
    key)."""
    return pl.Series(values, dtype=pl.Binary).cast(pl.String, strict=False)


class _Group:
    """Rows of one decode that passed the contract's type rules, as the reference checks and the
    batch need them: ``rows`` (input row of each), ``reason`` (object: ``""`` or the first failed
    check), ``plan_row``, ``is_cell``, ``ts``, ``mcc`` (-1 = null), ``lat``, ``lon``."""

    rows: np.ndarray
    reason: np.ndarray
    plan_row: np.ndarray
    is_cell: np.ndarray
    ts: np.ndarray
    mcc: np.ndarray
    lat: np.ndarray
    lon: np.ndarray

    def operators(self, mask: np.ndarray) -> list[bytes]:
        """The distinct operators (ASCII bytes) of the rows in ``mask``."""
        raise NotImplementedError

    def operator_codes(self, codes: dict[bytes, int]) -> np.ndarray:
        """Each row's operator code where ``reason`` is empty (-1 elsewhere or unknown)."""
        raise NotImplementedError

    def keys(self, mask: np.ndarray) -> np.ndarray:
        """Device keys of the rows in ``mask``."""
        raise NotImplementedError

    def fields(self, j: int) -> dict[str, Any]:
        """Row ``j`` as ping fields, for the record of a reject (:func:`row_fields`)."""
        raise NotImplementedError


class _NumpyGroup(_Group):
    """Rows as numpy :data:`~stream.contract.PingColumns` (frames, records): every check of
    :meth:`PingDecoder._column_reasons`."""

    def __init__(self, decoder: PingDecoder, cols: PingColumns, rows: np.ndarray, now_ms: int) -> None:
        self.decoder = decoder
        self.cols = cols
        self.rows = rows
        n = len(rows)
        self.reason, self.plan_row = decoder._column_reasons(cols, now_ms)
        self.ts = np.asarray(cols["ts"], dtype=np.int64)
        self.mcc = np.asarray(cols["home_mcc"], dtype=np.int64)
        self.is_cell = np.char.str_len(cols.get("cell", np.zeros(n, dtype="S1"))) > 0
        self.lat = np.asarray(cols.get("lat", np.full(n, np.nan)), dtype=np.float64)
        self.lon = np.asarray(cols.get("lon", np.full(n, np.nan)), dtype=np.float64)

    def operators(self, mask: np.ndarray) -> list[bytes]:
        return unique_bytes(self.cols["operator"][mask])[0].tolist()

    def operator_codes(self, codes: dict[bytes, int]) -> np.ndarray:
        ok = self.reason == ""
        out = np.full(len(self.rows), -1, dtype=np.int64)
        if ok.any():
            uniq, inverse = unique_bytes(self.cols["operator"][ok])
            out[ok] = np.array([codes.get(op, -1) for op in uniq.tolist()], dtype=np.int64)[inverse]
        return out

    def keys(self, mask: np.ndarray) -> np.ndarray:
        return fast_device_keys(self.cols["operator"][mask], self.cols["device"][mask],
                                self.decoder.secret)

    def fields(self, j: int) -> dict[str, Any]:
        return row_fields(self.cols, j)


class _PolarsGroup(_Group):
    """Parsed rows that :func:`contract_certain` vouched for (polars columns): only the checks
    against the clock and the cell plan are left."""

    def __init__(self, decoder: PingDecoder, cols: pl.DataFrame, rows: np.ndarray, now_ms: int,
                 record: Callable[[int], Record]) -> None:
        self.decoder = decoder
        self.cols = cols
        self.rows = rows
        self.record = record
        cell = cols["cell"]
        self.is_cell = cell.is_not_null().to_numpy()
        self.ts = cols["ts"].to_numpy().astype(np.int64, copy=False)
        self.mcc = cols["home_mcc"].fill_null(-1).to_numpy().astype(np.int64, copy=False)
        lat, lon = cols["lat"].to_numpy(), cols["lon"].to_numpy()
        self.lat = np.where(self.is_cell, np.nan, lat).astype(np.float64)
        self.lon = np.where(self.is_cell, np.nan, lon).astype(np.float64)
        self.plan_row = np.full(len(rows), -1, dtype=np.int64)
        if self.is_cell.any():
            if self.is_cell.all():
                self.plan_row[:] = decoder._plan_rows(cols["operator"], cell)
            else:
                on = pl.Series(self.is_cell)
                self.plan_row[self.is_cell] = decoder._plan_rows(cols["operator"].filter(on),
                                                                 cell.filter(on))
        self.reason = np.full(len(rows), "", dtype=object)
        self.reason[self.ts > now_ms + decoder.max_future_ms] = "ts_in_future"
        self.reason[(self.reason == "") & self.is_cell & (self.plan_row < 0)] = "unknown_cell"
        self.op_distinct = cols["operator"].unique().to_list()  # a few: each row's index into them
        self.op_index = _index_of(cols["operator"], self.op_distinct)

    def operators(self, mask: np.ndarray) -> list[bytes]:
        seen = np.bincount(self.op_index[mask], minlength=len(self.op_distinct)) > 0
        return [op.encode() for op, s in zip(self.op_distinct, seen.tolist(), strict=True) if s]

    def operator_codes(self, codes: dict[bytes, int]) -> np.ndarray:
        table = np.array([codes.get(op.encode(), -1) for op in self.op_distinct], dtype=np.int64)
        return np.where(self.reason == "", table[self.op_index], -1)

    def keys(self, mask: np.ndarray) -> np.ndarray:
        devices = self.cols["device"] if mask.all() else self.cols["device"].filter(pl.Series(mask))
        return text_device_keys(self.op_distinct, self.op_index[mask], devices, self.decoder.secret)

    def fields(self, j: int) -> dict[str, Any]:
        fields = self.record(int(self.rows[j])).fields
        assert fields is not None
        return row_fields(ping_columns([fields]), 0)


def contract_certain(cols: pl.DataFrame) -> np.ndarray:
    """Parsed rows that :func:`~stream.contract.check_ping` certainly accepts (bool per row).

    The same rules on columns, for values read faithfully (text as text, integers as integers):
    ``device`` text of 1..128 bytes, ``ts`` in the contract's range, ``operator`` 5-6 ASCII
    digits, ``home_mcc`` null or 0..999, and ``cell`` text of 1..64 bytes or else both ``lat`` and
    ``lon`` within ±90/±180. A row not certain here is checked by ``check_ping`` itself (on its
    record), which words the reject; so this function may only ever say less.
    """
    if cols.height == 0:
        return np.zeros(0, dtype=bool)
    dev = pl.col("device").str.len_bytes()
    cell = pl.col("cell").str.len_bytes()
    operators = cols["operator"].unique().drop_nulls()  # a few distinct values: checked once each
    good_ops = operators.filter(operators.str.contains(r"^[0-9]{5,6}$"))
    ok = (dev.is_between(1, MAX_TEXT_BYTES["device"])
          & pl.col("ts").is_between(MIN_TS_MS, MAX_TS_MS)
          & pl.col("operator").is_in(good_ops.implode())
          & (pl.col("home_mcc").is_null() | pl.col("home_mcc").is_between(0, 999))
          & pl.when(pl.col("cell").is_not_null())
          .then(cell.is_between(1, MAX_TEXT_BYTES["cell"]))
          .otherwise((pl.col("lat").abs() <= 90) & (pl.col("lon").abs() <= 180)))
    return cols.select(ok.fill_null(False).alias("ok"))["ok"].to_numpy()


# ----------------------------------------------------------------------------------------------
# Device keys, computed without per-row Python (the keys of estimators.pseudonym.device_keys)

_SIP_INIT = (0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573)
SIP_BATCH = 16384
"""Rows hashed at a time (the state of a batch stays in the CPU's cache)."""


def _rotl(x: np.ndarray, b: int, scratch: np.ndarray) -> None:
    np.left_shift(x, np.uint64(b), out=scratch)
    np.right_shift(x, np.uint64(64 - b), out=x)
    x |= scratch


def _sip_rounds(v0: np.ndarray, v1: np.ndarray, v2: np.ndarray, v3: np.ndarray,
                scratch: np.ndarray, rounds: int) -> None:
    for _ in range(rounds):
        v0 += v1
        _rotl(v1, 13, scratch)
        v1 ^= v0
        _rotl(v0, 32, scratch)
        v2 += v3
        _rotl(v3, 16, scratch)
        v3 ^= v2
        v0 += v3
        _rotl(v3, 21, scratch)
        v3 ^= v0
        v2 += v1
        _rotl(v1, 17, scratch)
        v1 ^= v2
        _rotl(v2, 32, scratch)


def siphash_words(key16: bytes, words: np.ndarray, length: np.ndarray) -> np.ndarray:
    """SipHash-2-4 (uint64) of messages given as little-endian 64-bit words, one row each
    (``words``: uint64[n, w], zero past each message's ``length`` bytes, ``w > length // 8``).

    The same function as :func:`estimators.pseudonym.siphash24`, computed in place on batches of
    :data:`SIP_BATCH` rows grouped by their number of blocks.
    """
    n = len(length)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    k0 = np.uint64(int.from_bytes(key16[:8], "little"))
    k1 = np.uint64(int.from_bytes(key16[8:], "little"))
    length = np.asarray(length, dtype=np.uint64)
    full = (length >> np.uint64(3)).astype(np.int64)
    tail = (length & np.uint64(0xFF)) << np.uint64(56)
    groups = [(int(full[0]), None)] if (full == full[0]).all() else \
        [(g, np.flatnonzero(full == g)) for g in np.unique(full).tolist()]
    with np.errstate(over="ignore"):
        for blocks, rows in groups:
            w = words if rows is None else words[rows]
            t = tail if rows is None else tail[rows]
            res = np.empty(len(w), dtype=np.uint64)
            for lo in range(0, len(w), SIP_BATCH):
                hi = min(lo + SIP_BATCH, len(w))
                m = hi - lo
                v0 = np.full(m, np.uint64(_SIP_INIT[0]) ^ k0)
                v1 = np.full(m, np.uint64(_SIP_INIT[1]) ^ k1)
                v2 = np.full(m, np.uint64(_SIP_INIT[2]) ^ k0)
                v3 = np.full(m, np.uint64(_SIP_INIT[3]) ^ k1)
                scratch = np.empty(m, dtype=np.uint64)
                for j in range(blocks + 1):
                    block = w[lo:hi, j] | t[lo:hi] if j == blocks else w[lo:hi, j].copy()
                    v3 ^= block
                    _sip_rounds(v0, v1, v2, v3, scratch, 2)
                    v0 ^= block
                v2 ^= np.uint64(0xFF)
                _sip_rounds(v0, v1, v2, v3, scratch, 4)
                v0 ^= v1
                v2 ^= v3
                v0 ^= v2
                res[lo:hi] = v0
            if rows is None:
                out = res
            else:
                out[rows] = res
    return out


def _finish_keys(h: np.ndarray) -> np.ndarray:
    h[h == 0] = 1  # key 0 is the device index's "empty"
    return h


def fast_device_keys(operators: np.ndarray, devices: np.ndarray, secret: bytes) -> np.ndarray:
    """:func:`estimators.pseudonym.device_keys` of ``|S`` columns: the message
    ``operator || 0x1F || device`` (each without its NUL padding) laid out in words with numpy
    slices, then :func:`siphash_words`."""
    n = len(devices)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    ops = np.ascontiguousarray(np.asarray(operators, dtype=np.bytes_))
    devs = np.ascontiguousarray(np.asarray(devices, dtype=np.bytes_))
    op_len = np.char.str_len(ops)
    dev_len = np.char.str_len(devs)
    length = op_len + 1 + dev_len
    width = (int(op_len.max()) + 1 + devs.dtype.itemsize) // 8 * 8 + 8
    msg = np.zeros((n, width), dtype=np.uint8)
    op_raw = np.frombuffer(ops.tobytes(), dtype=np.uint8).reshape(n, ops.dtype.itemsize)
    dev_raw = np.frombuffer(devs.tobytes(), dtype=np.uint8).reshape(n, devs.dtype.itemsize)
    for k in np.unique(op_len).tolist():
        rows = np.flatnonzero(op_len == k) if (op_len != k).any() else slice(None)
        msg[rows, :k] = op_raw[rows, :k]
        msg[rows, k] = 0x1F
        msg[rows, k + 1:k + 1 + devs.dtype.itemsize] = dev_raw[rows]
    h = siphash_words(device_key_secret(secret), msg.view("<u8"), length.astype(np.uint64))
    return _finish_keys(h)


def text_device_keys(operators: list[str], which: np.ndarray, devices: pl.Series,
                     secret: bytes) -> np.ndarray:
    """:func:`estimators.pseudonym.device_keys` of a text column of devices (polars; no nulls)
    and their operators (``operators[which[i]]``: a few distinct ones): each device padded by
    polars and read as bytes without a Python object per row, its operator and the separator
    laid in front with numpy slices."""
    n = len(devices)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    op_raw = [op.encode() for op in operators]
    dev_len = devices.str.len_bytes().to_numpy().astype(np.int64)
    width = max(1, int(dev_len.max()))
    dev = devices.str.pad_end(width, "\x00").cast(pl.Binary) \
        .bin.reinterpret(dtype=pl.Array(pl.UInt8, width))
    if dev.null_count() or max(map(len, op_raw)) > 6:  # text that is not ASCII: the byte path
        return fast_device_keys(np.array(op_raw, dtype="S6")[which],
                                np.array([d.encode() for d in devices.to_list()], dtype=np.bytes_),
                                secret)
    dev_bytes = dev.to_numpy()
    op_len = np.array([len(op) for op in op_raw], dtype=np.int64)[which]
    msg = np.zeros((n, (6 + 1 + width) // 8 * 8 + 8), dtype=np.uint8)
    table = np.zeros((len(op_raw), 6), dtype=np.uint8)
    for i, op in enumerate(op_raw):
        table[i, :len(op)] = np.frombuffer(op, dtype=np.uint8)
    for k in np.unique(op_len).tolist():
        rows = slice(None) if (op_len == k).all() else np.flatnonzero(op_len == k)
        msg[rows, :k] = table[which[rows], :k]
        msg[rows, k] = 0x1F
        msg[rows, k + 1:k + 1 + width] = dev_bytes[rows]
    length = (op_len + 1 + dev_len).astype(np.uint64)
    return _finish_keys(siphash_words(device_key_secret(secret), msg.view("<u8"), length))


def _index_of(values: pl.Series, distinct: list[str]) -> np.ndarray:
    """The index of each value in ``distinct`` (which holds them all)."""
    if len(distinct) == 1:
        return np.zeros(len(values), dtype=np.int64)
    return values.replace_strict({v: i for i, v in enumerate(distinct)}, return_dtype=pl.Int64) \
        .to_numpy()


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
