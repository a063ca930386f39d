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
When the cell plan spreads border cells' devices over their footprints, an unkeyed hash of the
same words (:func:`~estimators.footprints.device_draw_hashes`: independent of the key, so replays
under different keys agree) picks each border-cell ping's piece and is then dropped.

Numpy columns (frames, records) do no per-batch string work: the cell plan is a hash table of
its ``(operator, cell)`` bytes built once per plan (:class:`PlanTable`), operator codes come from
a table of the engine's operators as 64-bit words (rebuilt when the engine registers one), and
reasons are small integer codes until a row is rejected.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl

from estimators.engine import MAX_OPERATORS, Engine
from estimators.footprints import device_draw_hashes
from estimators.pseudonym import (
    device_key_secret,
    device_words,
    siphash24,
    siphash_words,
    text_words,
)
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

REASONS = ("", "bad_device", "bad_operator", "bad_home_mcc", "bad_cell", "missing_location",
           "ts_out_of_range", "ts_in_future", "bad_coordinates", "unknown_cell",
           "too_many_operators")
"""Reason codes of the reference checks (0: none failed), in the order the checks apply."""
_CODE = {reason: code for code, reason in enumerate(REASONS)}


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


@dataclass(frozen=True)
class PreparedRows:
    """Rows of files checked and keyed ahead by :meth:`PingDecoder.prepare_rows`, for
    :meth:`PingDecoder.decode_prepared`."""

    groups: list[_Group]
    source: Callable[[int], str]
    rejects: list[Reject]
    now_ms: int


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
        self.bin_points = True
        """Whether :meth:`prepare_rows` bins lat/lon pings (else :meth:`decode_prepared` does):
        False in a reading process, which is the busier of the two (measured: BENCHMARKS)."""
        self._plan_index: tuple[Any, pl.DataFrame] | None = None
        self._plan_table: tuple[Any, PlanTable] | None = None
        self._operator_table: tuple[int, OperatorTable] | None = None

    def _now(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * SECOND_MS)

    def spreads(self) -> bool:
        """Whether the engine's cell plan spreads border cells' devices over their footprints
        (:meth:`~estimators.cells.CellPlan.apportion`): pings then need a draw hash. Fixed once
        the engine is built, so a reader thread may ask."""
        plan = self.engine.plan
        return plan is not None and plan.footprints is not None

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
        checks is rejected for the first, in the order of :class:`_NumpyGroup`.
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
        The same as :meth:`decode_prepared` of :meth:`prepare_rows`.
        """
        return self.decode_prepared(self.prepare_rows(rows))

    def prepare_rows(self, rows: ParsedRows) -> PreparedRows:
        """The part of :meth:`decode_rows` that reads no engine state that ingesting changes:
        the contract's checks, cell-plan rows, device keys and the location keys of lat/lon
        pings (:meth:`~estimators.cells.CellTable.point_keys`). A reader thread may run it
        ahead while the engine ingests earlier rows (one thread at a time per decoder);
        :meth:`decode_prepared` finishes in the engine's thread."""
        now_ms = self._now()
        cols = rows.columns
        parsed = np.flatnonzero(rows.parsed)
        operators = operator_index(cols["operator"])
        certain = contract_certain(cols, operators)
        others = np.sort(np.concatenate([np.flatnonzero(~rows.parsed), parsed[~certain]]))
        rejects, kept, fields = self._check_records([(i, rows.record(i)) for i in others.tolist()])
        groups: list[_Group] = []
        if certain.any():
            every = bool(certain.all())
            good = cols if every else cols.filter(pl.Series(certain))
            groups.append(_PolarsGroup(self, good, parsed[certain], now_ms, rows.record,
                                       (operators[0], operators[1] if every
                                        else operators[1][certain])))
        if kept:
            groups.append(_NumpyGroup(self, ping_columns(fields), np.asarray(kept, np.int64), now_ms))
        for g in groups:
            g.prepare()
        return PreparedRows(groups, rows.source, rejects, now_ms)

    def decode_prepared(self, prepared: PreparedRows) -> PingBatch:
        """The batch of rows :meth:`prepare_rows` made ready: operator codes (registering new
        operators) and cell-table locations, in the engine's thread."""
        return self._finish(prepared.groups, prepared.source, prepared.rejects, prepared.now_ms)

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
        op_code = self._operator_codes(groups)
        spread = self.spreads()
        ok = [g.reason == 0 for g in groups]
        if not all(m.all() for m in ok):
            self._rejects(groups, ok, source, rejects, now_ms)
        if len(groups) == 1:
            m = ok[0]
            every = bool(m.all())

            def joined(values: list[np.ndarray]) -> np.ndarray:
                return values[0] if every else values[0][m]

            row = joined([groups[0].rows])
            keys, draws = groups[0].hashes(m, spread)
            shared = every  # joined() hands out the group's own arrays: copy what is kept
        else:
            row = np.concatenate([g.rows[m] for g, m in zip(groups, ok, strict=True)])
            order = np.argsort(row, kind="stable")
            row = row[order]

            def joined(values: list[np.ndarray]) -> np.ndarray:
                return np.concatenate([v[m] for v, m in zip(values, ok, strict=True)])[order]

            hashes = [g.hashes(m, spread) for g, m in zip(groups, ok, strict=True)]
            keys = np.concatenate([k for k, _ in hashes])[order]
            draws = np.concatenate([d for _, d in hashes if d is not None])[order] \
                if spread else None
            shared = False
        mcc = joined([g.mcc for g in groups])
        ts = joined([g.ts for g in groups])
        is_cell = joined([g.is_cell for g in groups])
        if all(g.point_key is not None for g in groups):  # binned ahead: no lat/lon needed
            point = (joined([g.point_key for g in groups]), joined([g.point_border for g in groups]))
            lat = lon = None
        else:
            point = None
            lat, lon = joined([g.lat for g in groups]), joined([g.lon for g in groups])
        return PingBatch(
            device_key=keys,
            ts_ms=ts.copy() if shared else ts,
            opclass=self.engine.operator_class(joined(op_code), mcc),
            loc=self._locations(is_cell, joined([g.plan_row for g in groups]), lat, lon, point,
                                draws),
            rejects=rejects,
            row=row.copy() if shared else row,
            home_mcc=mcc.astype(np.int16),
        )

    def _operator_codes(self, groups: list[_Group]) -> list[np.ndarray]:
        """Each group's engine operator codes (valid where ``reason`` is 0).

        Frames and records whose operators are all registered already (the usual case) take
        their codes from :meth:`_known_operators`. Otherwise the distinct operators of the rows
        that passed every check are registered (:meth:`_register`) and rows of an operator the
        engine has no room for are set aside as ``too_many_operators``.
        """
        if all(isinstance(g, _NumpyGroup) and not ((g.reason == 0) & (g.op_code < 0)).any()
               for g in groups):
            return [g.op_code for g in groups]
        codes = self._register([op for g in groups for op in g.operators(g.reason == 0)])
        op_code = [g.operator_codes(codes) for g in groups]
        for g, c in zip(groups, op_code, strict=True):
            g.reason[(g.reason == 0) & (c < 0)] = _CODE["too_many_operators"]
        return op_code

    def _rejects(self, groups: list[_Group], ok: list[np.ndarray], source: Callable[[int], str],
                 rejects: list[Reject], now_ms: int) -> None:
        """A reject for each row of ``groups`` that failed a check, in input order."""
        details = {**REJECT_REASONS,
                   "ts_in_future": f"ts more than {self.max_future_ms // SECOND_MS} s ahead of the clock",
                   "too_many_operators": f"more than {MAX_OPERATORS} distinct operators"}
        bad = sorted((int(g.rows[j]), k, j) for k, (g, m) in enumerate(zip(groups, ok, strict=True))
                     for j in np.flatnonzero(~m).tolist())
        for i, k, j in bad:
            g = groups[k]
            reason = REASONS[g.reason[j]]
            rejects.append(Reject(source(i), reason, details[reason],
                                  redacted(g.fields(j), known_cell=bool(g.plan_row[j] >= 0),
                                           now_ms=now_ms)))

    def _register(self, operators: list[bytes]) -> dict[bytes, int]:
        """Engine code of each distinct operator of the pings that passed the other checks,
        registering new ones in the order of :func:`unique_bytes` (as the engine has always
        seen them); -1 when the engine has no room for another."""
        distinct = list(dict.fromkeys(operators))
        if not distinct:
            return {}
        known = self.engine.operators
        if all(op.isascii() and op.decode() in known for op in distinct):  # the usual case
            return {op: self.engine.operator_code(op.decode()) for op in distinct}
        uniq, _ = unique_bytes(np.array(distinct, dtype="S6"))
        codes: dict[bytes, int] = {}
        for op in uniq.tolist():
            try:
                codes[op] = self.engine.operator_code(op.decode())
            except ValueError:
                codes[op] = -1
        return codes

    def _known_operators(self, operator: np.ndarray, words: np.ndarray | None = None
                         ) -> np.ndarray:
        """Engine code (int64) of each operator of a ``|S`` column that is registered and valid
        (5-6 ASCII digits); -1 for any other. ``words``: the column as 64-bit words
        (``text_words(operator, 1)[0]``), if already made.

        The operators are looked up as 64-bit words in an :class:`OperatorTable` of the
        engine's operators, rebuilt when the engine has registered more (a code never changes
        once given).
        """
        names = self.engine.operators
        if self._operator_table is None or self._operator_table[0] != len(names):
            self._operator_table = (len(names), OperatorTable(names))
        n = len(operator)
        if operator.dtype.kind != "S" or operator.dtype.itemsize > 8 or n == 0:
            return np.full(n, -1, dtype=np.int64)
        return self._operator_table[1].codes(text_words(operator, 1)[0] if words is None else words)

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

    def plan_table(self) -> PlanTable | None:
        """The cell plan as a :class:`PlanTable` (built once per plan); None without a plan."""
        plan = self.engine.plan
        if plan is None:
            return None
        if self._plan_table is None or self._plan_table[0] is not plan:
            self._plan_table = (plan, PlanTable(plan.row))
        return self._plan_table[1]

    def _plan_rows(self, operator: pl.Series, cell: pl.Series) -> np.ndarray:
        """Cell-plan row of each (operator, cell id) pair (text), -1 when the plan does not know it
        (a null cell included)."""
        table = self.plan_table()
        if table is None or len(cell) == 0:
            return np.full(len(cell), -1, dtype=np.int64)
        op_b, cell_b = _text_bytes(operator), _text_bytes(cell)
        if op_b is not None and cell_b is not None:
            out = table.rows(op_b, cell_b)
            out[cell.str.ends_with("\x00").fill_null(True).to_numpy()] = -1  # |S drops it
            return out
        index = self.plan_index()
        assert index is not None
        query = pl.DataFrame({"operator": operator, "cell": cell})
        found = query.join(index, on=["operator", "cell"], how="left", maintain_order="left")
        return found["_row"].fill_null(-1).to_numpy().astype(np.int64, copy=False)

    def _plan_rows_of_index(self, operators: list[str], which: np.ndarray, cell: pl.Series
                            ) -> np.ndarray:
        """:meth:`_plan_rows` of the operators ``operators[which[i]]`` (a few distinct ones),
        whose bytes and 64-bit words are laid out once per distinct operator, not per row."""
        table = self.plan_table()
        if table is None or len(cell) == 0:
            return np.full(len(cell), -1, dtype=np.int64)
        raw = [op.encode() for op in operators]
        length = cell.str.len_bytes().to_numpy() if not cell.null_count() else None
        cell_b = None if length is None else _text_bytes(cell, length)
        if cell_b is None or not all(0 < len(op) <= 8 and op.isascii() and not op.endswith(b"\x00")
                                     for op in raw):
            return self._plan_rows(pl.Series(operators, dtype=pl.String).gather(which), cell)
        ops = np.array(raw, dtype=f"S{max(map(len, raw))}")
        out = table.rows(ops[which], cell_b, None, text_words(ops, 1)[0][which])
        out[np.strings.str_len(cell_b) < length] = -1  # ends in NUL: |S drops it
        return out

    def _plan_rows_of_bytes(self, operator: np.ndarray, cell: np.ndarray,
                            has_cell: np.ndarray | None = None, op_word: np.ndarray | None = None
                            ) -> np.ndarray:
        """Cell-plan row of each (operator, cell id) pair of two ``|S`` columns, -1 when the plan
        does not know it (an empty cell included): :meth:`_plan_rows` without text columns.
        ``has_cell``, ``op_word``: see :meth:`PlanTable.rows`."""
        table = self.plan_table()
        if table is None:
            return np.full(len(cell), -1, dtype=np.int64)
        if operator.dtype.kind != "S" or cell.dtype.kind != "S":
            out = np.full(len(cell), -1, dtype=np.int64)
            has = np.strings.str_len(cell) > 0
            if has.any():
                out[has] = self._plan_rows(_text(operator[has]), _text(cell[has]))
            return out
        return table.rows(operator, cell, has_cell, op_word)

    def _locations(self, is_cell: np.ndarray, plan_row: np.ndarray, lat: np.ndarray | None,
                   lon: np.ndarray | None, point: tuple[np.ndarray, np.ndarray] | None = None,
                   draw: np.ndarray | None = None) -> np.ndarray:
        """Cell-table location of each valid ping: its plan row's (for a border cell, the
        footprint piece its device lands in: :meth:`~estimators.cells.CellPlan.locations`, by
        ``draw``, the pings' unkeyed :func:`~estimators.footprints.device_draw_hashes`), or its
        lat/lon binned (``point``: the location keys and border flags of
        :meth:`_Group.prepare`, if made; else ``lat``/``lon``)."""
        plan = self.engine.plan
        if plan is not None and len(plan.loc):
            loc = plan.locations(np.maximum(plan_row, 0), draw)  # lat/lon pings: set below
        else:
            loc = np.empty(len(is_cell), dtype=np.int64)
        if not is_cell.all():
            by_point = ~is_cell
            if point is None:
                assert lat is not None and lon is not None
                loc[by_point] = self.engine.cells.locate_latlng(lat[by_point], lon[by_point])
            else:
                loc[by_point] = self.engine.cells.locate_point_keys(point[0][by_point],
                                                                    point[1][by_point])
        return loc


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9),
        np.uint64(0xD6E8FEB86659FD93))

_MULTIPLIERS = [np.uint64((0x9E3779B97F4A7C15 * (2 * i + 1)) % (1 << 64) | 1) for i in range(16)]


def _word(text: bytes) -> int:
    """Up to 8 bytes as a little-endian 64-bit word (zero-padded): ``text_words``' layout."""
    return int.from_bytes(text.ljust(8, b"\x00"), "little")


class OperatorTable:
    """The engine's valid operators (5-6 ASCII digits) by their 64-bit word, each in a slot of
    its own: ``slot = (word * multiplier) >> shift``, the smallest table and a multiplier chosen
    when it is built so that no two operators share a slot (a perfect hash of at most
    ``MAX_OPERATORS`` words)."""

    def __init__(self, names: list[str]) -> None:
        found = {_word(op.encode()): code for code, op in enumerate(names)
                 if op.isascii() and op.isdigit() and 5 <= len(op) <= 6}
        words = np.array(list(found), dtype=np.uint64)
        for bits, mult in ((b, m) for b in range(max(1, len(found)).bit_length(), 21)
                           for m in _MULTIPLIERS):
            slot = (words * mult) >> np.uint64(64 - bits)
            if len(np.unique(slot)) == len(words):
                break
        else:  # pragma: no cover - 255 words spread over 2**20 slots by one of 16 multipliers
            raise RuntimeError("no perfect hash for the operators")
        self.mult, self.shift = mult, np.uint64(64 - bits)
        self.word = np.zeros(1 << bits, dtype=np.uint64)  # an empty slot: word 0, code -1
        self.code = np.full(1 << bits, -1, dtype=np.int64)
        self.word[slot.astype(np.int64)] = words
        self.code[slot.astype(np.int64)] = list(found.values())

    def codes(self, words: np.ndarray) -> np.ndarray:
        """The code of each operator word (uint64[n]); -1 for words of no valid operator."""
        slot = ((words * self.mult) >> self.shift).view(np.int64)
        return np.where(self.word[slot] == words, self.code[slot], -1)


def _mix(words: list[np.ndarray]) -> np.ndarray:
    """A 64-bit hash of each row of ``words`` (uint64 columns): the xor of each column times
    an odd constant; its top bits place a key in a table (multiplicative hashing). Not keyed,
    not for privacy: a cell plan is trusted and a query only ever probes a bounded distance."""
    h = words[0] * _MIX[0]
    for j in range(1, len(words)):
        h ^= words[j] * _MIX[j % len(_MIX)]
    return h


def _plan_keys(rows: dict[tuple[str, str], int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The keys of ``rows`` that a ``|S`` pair can equal, in the dict's order: operators' and
    cell ids' UTF-8 bytes (``|S`` arrays as wide as the widest kept) and their rows (int64).
    Left out: an empty cell id, text ending in NUL (``|S`` drops trailing NULs: such bytes are
    shorter there than they are) and text that is not UTF-8 (lone surrogates)."""
    ops, cells = [k[0] for k in rows], [k[1] for k in rows]
    row = np.fromiter(rows.values(), dtype=np.int64, count=len(rows))
    good = np.ones(len(rows), dtype=bool)
    try:
        op_enc, cell_enc = [o.encode("utf-8") for o in ops], [c.encode("utf-8") for c in cells]
    except UnicodeEncodeError:
        good = np.array([_utf8(o) and _utf8(c) for o, c in rows], dtype=bool)
        op_enc = [o.encode("utf-8", "surrogatepass") for o in ops]
        cell_enc = [c.encode("utf-8", "surrogatepass") for c in cells]
    op_b = np.array(op_enc, dtype=np.bytes_).reshape(-1)
    cell_b = np.array(cell_enc, dtype=np.bytes_).reshape(-1)
    op_len = np.fromiter(map(len, op_enc), np.int64, len(op_enc))
    cell_len = np.fromiter(map(len, cell_enc), np.int64, len(cell_enc))
    keep = (good & (cell_len > 0) & (op_len == np.strings.str_len(op_b))
            & (cell_len == np.strings.str_len(cell_b)))
    width = (max(1, int(op_len[keep].max(initial=0))), max(1, int(cell_len[keep].max(initial=0))))
    return op_b[keep].astype(f"S{width[0]}"), cell_b[keep].astype(f"S{width[1]}"), row[keep]


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class PlanTable:
    """A cell plan's ``(operator, cell id)`` keys in an open-addressing hash table, built once:
    the row of each pair of ``|S`` columns without making text of them.

    A key is its operator's and its cell id's UTF-8 bytes as little-endian 64-bit words, zero
    padded (``op_blocks`` + ``cell_blocks`` words: enough for the plan's widest), kept in
    ``key_words`` with its plan row in ``key_row`` (entry ``m``, past the last key: no key, row
    -1). ``slot_key`` (int32, at most a quarter full, linear probing) holds key indices by the
    top bits of :func:`_mix`; ``max_probe`` is the longest distance of a key from its home
    slot. A query row is compared word by word with the keys from its home slot on, so a match
    is exact, byte for byte. Keys that no ``|S`` value can equal (an empty cell, text ending in
    NUL, text that is not UTF-8) are left out, so such rows find nothing, as with the text join
    of :meth:`PingDecoder._plan_rows`.
    """

    def __init__(self, rows: dict[tuple[str, str], int]) -> None:
        op_b, cell_b, key_row = _plan_keys(rows)
        m = len(key_row)
        self.op_blocks = -(-op_b.dtype.itemsize // 8)
        self.cell_blocks = -(-cell_b.dtype.itemsize // 8)
        ops = np.concatenate([op_b, [b""]]).astype(f"S{8 * self.op_blocks}")
        cells = np.concatenate([cell_b, [b""]]).astype(f"S{8 * self.cell_blocks}")
        self.key_words = [*text_words(ops, self.op_blocks), *text_words(cells, self.cell_blocks)]
        self.key_row = np.concatenate([key_row, [-1]]).astype(np.int64)
        bits = max(6, int(4 * m - 1).bit_length())
        self.size = 1 << bits
        self.shift = np.uint64(64 - bits)
        self.empty_slot = self.size  # one more slot, always empty: where rows without a cell look
        # linear probing, all keys at once: at step p every key not placed yet tries slot
        # home + p, and the first of the keys trying a free slot takes it; a key sits p slots
        # from its home only when the slots before were taken, as lookups need
        slot_key = np.full(self.size + 1, m, dtype=np.int32)
        home = (_mix([w[:m] for w in self.key_words]) >> self.shift).astype(np.int64)
        todo = np.arange(m, dtype=np.int64)
        probe = 0
        while len(todo):
            slot = (home[todo] + probe) % self.size
            free = slot_key[slot] == m
            first = np.unique(slot[free], return_index=True)[1]
            won = np.flatnonzero(free)[first]
            slot_key[slot[won]] = todo[won]
            placed = np.zeros(len(todo), dtype=bool)
            placed[won] = True
            todo = todo[~placed]
            probe += 1 if len(todo) else 0
        self.max_probe = probe
        self.slot_key = slot_key
        self.m = m

    def rows(self, operator: np.ndarray, cell: np.ndarray, has_cell: np.ndarray | None = None,
             op_word: np.ndarray | None = None) -> np.ndarray:
        """Plan row (int64) of each (operator, cell) of two ``|S`` columns; -1 when unknown.

        ``has_cell`` (bool, optional): the rows with a non-empty cell; the others find nothing
        without probing. ``op_word`` (optional): ``text_words(operator, 1)[0]``, if made already.
        """
        n = len(cell)
        if n == 0:
            return np.full(n, -1, dtype=np.int64)
        ops = [op_word] if op_word is not None and self.op_blocks == 1 \
            else list(text_words(operator, self.op_blocks))
        query = [*ops, *text_words(cell, self.cell_blocks)]
        home = (_mix(query) >> self.shift).view(np.int64)
        if has_cell is not None and not has_cell.all():
            home = np.where(has_cell, home, self.empty_slot)
        key = self.slot_key[home]
        same = self.key_words[0][key] == query[0]
        for j in range(1, len(query)):
            same &= self.key_words[j][key] == query[j]
        out = np.where(same, self.key_row[key], -1)
        if self.max_probe:
            todo = np.flatnonzero((key != self.m) & ~same)  # home taken by another key: probe on
            for probe in range(1, self.max_probe + 1):
                if len(todo) == 0:
                    break
                key = self.slot_key[(home[todo] + probe) % self.size]
                hit = self.key_words[0][key] == query[0][todo]
                for j in range(1, len(query)):
                    hit &= self.key_words[j][key] == query[j][todo]
                out[todo[hit]] = self.key_row[key[hit]]
                todo = todo[(key != self.m) & ~hit]
        if operator.dtype.itemsize > 8 * self.op_blocks:  # wider than the plan's widest key
            out[np.strings.str_len(operator) > 8 * self.op_blocks] = -1
        if cell.dtype.itemsize > 8 * self.cell_blocks:
            out[np.strings.str_len(cell) > 8 * self.cell_blocks] = -1
        return out


def _text_bytes(text: pl.Series, length: np.ndarray | None = None) -> np.ndarray | None:
    """A polars text column without nulls as a ``|S`` column of its UTF-8 bytes, made by
    polars (NUL padding) without a Python object per row; None when it has nulls or text that
    is not ASCII (its padding is counted in characters: the caller takes the text path).
    ``length``: the column's ``str.len_bytes()`` (integers), if made already. Text all of one
    byte length (device pseudonyms, often) needs no padding: its UTF-8 bytes are read as they
    are, whatever its characters."""
    if text.null_count():
        return None
    if len(text) == 0:
        return np.zeros(0, dtype="S1")
    if length is None:
        length = text.str.len_bytes().to_numpy()
    width, shortest = max(1, int(length.max())), int(length.min())
    if shortest == width:
        raw = text.cast(pl.Binary).bin.reinterpret(dtype=pl.Array(pl.UInt8, width))
    else:
        raw = text.str.pad_end(width, "\x00").cast(pl.Binary) \
            .bin.reinterpret(dtype=pl.Array(pl.UInt8, width))
    if raw.null_count():
        return None
    return np.ascontiguousarray(raw.to_numpy()).view(f"S{width}").ravel()


def _text(values: np.ndarray) -> pl.Series:
    """A ``|S`` column as polars text (bytes that are not UTF-8 become null: they match no plan
    key)."""
    return pl.Series(values, dtype=pl.Binary).cast(pl.String, strict=False)


class _Group:
    """Rows of one decode that passed the contract's type rules, as the reference checks and the
    batch need them: ``rows`` (input row of each), ``reason`` (int8: 0, or the code in
    :data:`REASONS` of the first failed check), ``plan_row``, ``is_cell``, ``ts``, ``mcc``
    (-1 = null), ``lat``, ``lon``."""

    rows: np.ndarray
    reason: np.ndarray
    plan_row: np.ndarray
    is_cell: np.ndarray
    ts: np.ndarray
    mcc: np.ndarray
    lat: np.ndarray
    lon: np.ndarray

    point_key: np.ndarray | None = None
    point_border: np.ndarray | None = None

    def prepare(self) -> None:
        """Compute ahead what needs no engine state that ingesting changes (see
        :meth:`PingDecoder.prepare_rows`): the location keys (``point_key``, uint64, 0 where
        unused) and border flags (``point_border``) of the lat/lon rows that passed so far; none
        when the decoder does not bin ahead (:attr:`PingDecoder.bin_points`)."""
        if not self.decoder.bin_points:
            return
        todo = ~self.is_cell & (self.reason == 0)
        self.point_key = np.zeros(len(self.rows), dtype=np.uint64)
        self.point_border = np.zeros(len(self.rows), dtype=bool)
        if todo.any():
            cells = self.decoder.engine.cells
            self.point_key[todo], self.point_border[todo] = cells.point_keys(self.lat[todo],
                                                                             self.lon[todo])

    def operators(self, mask: np.ndarray) -> list[bytes]:
        """The distinct operators (ASCII bytes) of the rows in ``mask``."""
        raise NotImplementedError

    def operator_codes(self, codes: dict[bytes, int]) -> np.ndarray:
        """Each row's operator code where ``reason`` is empty (-1 elsewhere or unknown)."""
        raise NotImplementedError

    def hashes(self, mask: np.ndarray, draws: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Device keys (keyed) of the rows in ``mask`` and, with ``draws``, their unkeyed draw
        hashes (:func:`~estimators.footprints.device_draw_hashes`; else None)."""
        raise NotImplementedError

    def fields(self, j: int) -> dict[str, Any]:
        """Row ``j`` as ping fields, for the record of a reject (:func:`row_fields`)."""
        raise NotImplementedError

    def detach(self, keep: np.ndarray, draws: bool) -> None:
        """Make this prepared group picklable, for :meth:`PingDecoder.decode_prepared` in another
        process: its decoder is dropped (:meth:`attach` gives it the other process's), and so is
        anything resting on the input's text, except the fields of rows ``keep`` (bool per row:
        those that may be rejected there). Device keys (and, with ``draws``, draw hashes) are
        made first. The positions go too once binned (``point_key``); ``plan_row`` and
        ``mcc`` travel as int32 and int16 (their ranges), ``rows`` as None when they are
        ``0..n-1`` (:meth:`attach` restores both)."""
        self.decoder = None  # type: ignore[assignment]
        if self.point_key is not None:
            self.lat = self.lon = None  # type: ignore[assignment]
        self.plan_row = self.plan_row.astype(np.int32)
        self.mcc = self.mcc.astype(np.int16)
        n = len(self.rows)
        self._n = n
        if n and int(self.rows[0]) == 0 and int(self.rows[-1]) == n - 1:  # ascending, distinct
            self.rows = None  # type: ignore[assignment]

    def attach(self, decoder: PingDecoder) -> None:
        """Give a group that :meth:`detach` made picklable the decoder that finishes it."""
        self.decoder = decoder
        if self.rows is None:
            self.rows = np.arange(self._n, dtype=np.int64)
        self.plan_row = self.plan_row.astype(np.int64)
        self.mcc = self.mcc.astype(np.int64)


class _NumpyGroup(_Group):
    """Rows as numpy :data:`~stream.contract.PingColumns` (frames, records), with every check.

    The checks, in order (a row failing several is rejected for the first): ``bad_device``
    (1..128 bytes; the character limits are checked on the text by ``check_ping``/the frame
    decoder), ``bad_operator`` (5-6 ASCII digits), ``bad_home_mcc`` (-1..999), ``bad_cell``
    (at most 64 bytes), ``missing_location``, ``ts_out_of_range``, ``ts_in_future``,
    ``bad_coordinates`` (lat/lon pings within ±90/±180), ``unknown_cell`` (not in the cell
    plan). ``op_code``: each row's engine operator code when registered already, else -1.
    """

    def __init__(self, decoder: PingDecoder, cols: PingColumns, rows: np.ndarray, now_ms: int) -> None:
        self.decoder = decoder
        self.cols = cols
        self.rows = rows
        device, operator = cols["device"], cols["operator"]
        n = len(device)
        ts = self.ts = np.asarray(cols["ts"], dtype=np.int64)
        mcc = np.asarray(cols["home_mcc"])
        self.mcc = mcc = mcc if mcc.dtype.kind == "i" else mcc.astype(np.int64)
        cell = cols.get("cell", np.zeros(n, dtype="S1"))
        lat = self.lat = np.asarray(cols.get("lat", np.full(n, np.nan)), dtype=np.float64)
        lon = self.lon = np.asarray(cols.get("lon", np.full(n, np.nan)), dtype=np.float64)
        cell_len = np.strings.str_len(cell)
        is_cell = self.is_cell = cell_len > 0
        dev_len = np.strings.str_len(device)
        op_word = text_words(operator, 1)[0] \
            if operator.dtype.kind == "S" and operator.dtype.itemsize <= 8 else None
        self.op_code = decoder._known_operators(operator, op_word)
        self.plan_row = decoder._plan_rows_of_bytes(operator, cell, is_cell, op_word)
        bad_op = self.op_code < 0  # a registered operator is a valid one; check the others
        if bad_op.any():
            some = np.flatnonzero(bad_op)
            op, op_len = operator[some], np.strings.str_len(operator[some])
            bad_op[some] = ~np.strings.isdigit(op) | (op_len < 5) | (op_len > 6)
        by_point = ~is_cell
        with np.errstate(invalid="ignore"):
            checks = (
                lambda: (dev_len == 0) | (dev_len > MAX_TEXT_BYTES["device"]),
                lambda: bad_op,
                lambda: (mcc < -1) | (mcc > 999),
                lambda: cell_len > MAX_TEXT_BYTES["cell"],
                lambda: by_point & np.isnan(lat) & np.isnan(lon),
                lambda: (ts < MIN_TS_MS) | (ts > MAX_TS_MS),
                lambda: ts > now_ms + decoder.max_future_ms,
                lambda: by_point & ~((np.abs(lat) <= 90) & (np.abs(lon) <= 180)),
                lambda: is_cell & (self.plan_row < 0),
            )
            failed = [(code, mask) for code, check in enumerate(checks, start=1)
                      if (mask := check()).any()]
        self.reason = np.zeros(n, dtype=np.int8)
        for code, mask in reversed(failed):  # the first failed check wins
            self.reason[mask] = code

    def operators(self, mask: np.ndarray) -> list[bytes]:
        return unique_bytes(self.cols["operator"][mask])[0].tolist()

    def operator_codes(self, codes: dict[bytes, int]) -> np.ndarray:
        ok = self.reason == 0
        out = np.full(len(self.rows), -1, dtype=np.int64)
        if ok.any():
            uniq, inverse = unique_bytes(self.cols["operator"][ok])
            out[ok] = np.array([codes.get(op, -1) for op in uniq.tolist()], dtype=np.int64)[inverse]
        return out

    def hashes(self, mask: np.ndarray, draws: bool) -> tuple[np.ndarray, np.ndarray | None]:
        op, dev = self.cols["operator"], self.cols["device"]
        if not mask.all():
            op, dev = op[mask], dev[mask]
        return fast_device_hashes(op, dev, self.decoder.secret, draws)

    def fields(self, j: int) -> dict[str, Any]:
        return row_fields(self.cols, j)


class _PolarsGroup(_Group):
    """Parsed rows that :func:`contract_certain` vouched for (polars columns): only the checks
    against the clock and the cell plan are left."""

    def __init__(self, decoder: PingDecoder, cols: pl.DataFrame, rows: np.ndarray, now_ms: int,
                 record: Callable[[int], Record],
                 operators: tuple[list[str | None], np.ndarray] | None = None) -> None:
        self.decoder = decoder
        self.cols = cols
        self.rows = rows
        self.record = record
        # the distinct operators (a few) and each row's index into them (``operators``: made
        # already, by :func:`operator_index` of these rows), kept to those the rows have
        distinct, index = operator_index(cols["operator"]) if operators is None else operators
        seen = np.flatnonzero(np.bincount(index, minlength=len(distinct)))
        if len(seen) < len(distinct):
            remap = np.full(len(distinct), -1, dtype=np.int64)
            remap[seen] = np.arange(len(seen))
            distinct, index = [distinct[i] for i in seen.tolist()], remap[index]
        self.op_distinct: list[str] = distinct  # type: ignore[assignment]  # (no nulls here)
        self.op_index = index
        cell = cols["cell"]
        self.is_cell = cell.is_not_null().to_numpy()
        self.ts = cols["ts"].to_numpy().astype(np.int64, copy=False)
        self.mcc = cols["home_mcc"].fill_null(-1).to_numpy().astype(np.int64, copy=False)
        # positions of the lat/lon pings, NaN for cell pings (no nulls left: a column without
        # nulls reaches numpy without a copy)
        by_point = pl.col("cell").is_null()
        pos = cols.select(pl.when(by_point).then(pl.col(name).cast(pl.Float64))
                          .fill_null(np.nan) for name in ("lat", "lon"))
        self.lat = pos["lat"].to_numpy()
        self.lon = pos["lon"].to_numpy()
        self.plan_row = np.full(len(rows), -1, dtype=np.int64)
        if self.is_cell.any():
            if self.is_cell.all():
                self.plan_row[:] = decoder._plan_rows_of_index(self.op_distinct, self.op_index,
                                                               cell)
            else:
                on = pl.Series(self.is_cell)
                self.plan_row[self.is_cell] = decoder._plan_rows_of_index(
                    self.op_distinct, self.op_index[self.is_cell], cell.filter(on))
        self.reason = np.zeros(len(rows), dtype=np.int8)
        self.reason[self.ts > now_ms + decoder.max_future_ms] = _CODE["ts_in_future"]
        self.reason[(self.reason == 0) & self.is_cell & (self.plan_row < 0)] = _CODE["unknown_cell"]
        self._keys: np.ndarray | None = None
        self._draws: np.ndarray | None = None
        self._kept_fields: dict[int, dict[str, Any]] = {}

    def operators(self, mask: np.ndarray) -> list[bytes]:
        seen = np.bincount(self.op_index[mask], minlength=len(self.op_distinct)) > 0
        return [op.encode() for op, s in zip(self.op_distinct, seen.tolist(), strict=True) if s]

    def operator_codes(self, codes: dict[bytes, int]) -> np.ndarray:
        table = np.array([codes.get(op.encode(), -1) for op in self.op_distinct], dtype=np.int64)
        return np.where(self.reason == 0, table[self.op_index], -1)

    def prepare(self) -> None:
        super().prepare()
        self._keys, self._draws = text_device_hashes(self.op_distinct, self.op_index,
                                                     self.cols["device"], self.decoder.secret,
                                                     self.decoder.spreads())

    def hashes(self, mask: np.ndarray, draws: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self._keys is not None and (self._draws is not None or not draws):
            every = bool(mask.all())
            d = self._draws if draws else None
            return ((self._keys, d) if every
                    else (self._keys[mask], None if d is None else d[mask]))
        if self.cols is None:
            raise RuntimeError("a detached group has no draw hashes: detach it with draws=True")
        devices = self.cols["device"] if mask.all() else self.cols["device"].filter(pl.Series(mask))
        return text_device_hashes(self.op_distinct, self.op_index[mask], devices,
                                  self.decoder.secret, draws)

    def fields(self, j: int) -> dict[str, Any]:
        if self.record is None:  # detached: the fields kept for the rows that may be rejected
            if j not in self._kept_fields:
                raise RuntimeError(f"prepared row {int(self.rows[j])}: its fields were not kept "
                                   "when the group was detached")
            return self._kept_fields[j]
        fields = self.record(int(self.rows[j])).fields
        assert fields is not None
        return row_fields(ping_columns([fields]), 0)

    def detach(self, keep: np.ndarray, draws: bool) -> None:
        if self._keys is None or (draws and self._draws is None):
            self._keys, self._draws = self.hashes(np.ones(len(self.rows), dtype=bool), draws)
        self._kept_fields = {j: self.fields(j) for j in np.flatnonzero(keep).tolist()}
        self.record = None  # type: ignore[assignment]
        self.cols = None  # type: ignore[assignment]
        if len(self.op_distinct) <= 256:
            self.op_index = self.op_index.astype(np.uint8)
        super().detach(keep, draws)


def operator_index(operators: pl.Series) -> tuple[list[str | None], np.ndarray]:
    """The distinct values of a text column with a few of them (a chunk's operators; None for
    null) and each row's index into them (int64), without a Python object per row: the rows'
    polars hashes made distinct by numpy, then checked value for value (a hash collision falls
    back to a dict). Distinct values in no particular order."""
    n = len(operators)
    if n == 0:
        return [], np.zeros(0, dtype=np.int64)
    hashes = operators.hash(seed=0).to_numpy()
    few = _few_distinct(hashes)
    if few is None:
        _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int64, copy=False)
    else:
        first, inverse = few
    distinct = operators.gather(first)
    if distinct.gather(inverse).eq_missing(operators).all():
        return distinct.to_list(), inverse
    seen: dict[str | None, int] = {}  # pragma: no cover - a 64-bit collision among a few values
    index = [seen.setdefault(v, len(seen)) for v in operators.to_list()]
    return list(seen), np.array(index, dtype=np.int64)


def _few_distinct(values: np.ndarray, most: int = 8) -> tuple[np.ndarray, np.ndarray] | None:
    """``np.unique(values, return_index=True, return_inverse=True)[1:]`` (first index, int64,
    and inverse, int64[n]) of a 1-d array with at most ``most`` distinct values, by a few
    comparisons per value instead of a sort of every value; None when it has more (then
    the caller sorts)."""
    if not len(values):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    first: list[int] = []
    equal: list[np.ndarray] = []
    other = np.ones(len(values), dtype=bool)  # not equal to any value found so far
    at = 0
    while True:
        if len(first) == most:
            return None
        first.append(at)
        equal.append(values == values[at])
        other &= ~equal[-1]
        at = int(np.argmax(other))
        if not other[at]:
            break
    rank = np.argsort(values[first], kind="stable")
    inverse = np.zeros(len(values), dtype=np.int64)
    for r, i in enumerate(rank.tolist()):
        if r:
            inverse += equal[i] * np.int64(r)
    return np.asarray(first, dtype=np.int64)[rank], inverse


_OPERATOR = re.compile(r"[0-9]{5,6}")
"""A valid operator code: 5 or 6 ASCII digits."""


def contract_certain(cols: pl.DataFrame,
                     operators: tuple[list[str | None], np.ndarray] | None = None) -> np.ndarray:
    """Parsed rows that :func:`~stream.contract.check_ping` certainly accepts (bool per row).

    The same rules on columns, for values read faithfully (text as text, integers as integers):
    ``device`` text of 1..128 bytes not ending in NUL, ``ts`` in the contract's range, ``operator`` 5-6 ASCII
    digits, ``home_mcc`` null or 0..999, and ``cell`` text of 1..64 bytes or else both ``lat`` and
    ``lon`` within ±90/±180. A row not certain here is checked by ``check_ping`` itself (on its
    record), which words the reject; so this function may only ever say less.
    """
    if cols.height == 0:
        return np.zeros(0, dtype=bool)
    dev = pl.col("device").str.len_bytes()
    cell = pl.col("cell").str.len_bytes()
    # operators: a few distinct values, checked once each (``operators``: their
    # :func:`operator_index`, if made already)
    distinct, index = operator_index(cols["operator"]) if operators is None else operators
    good_op = np.array([op is not None and _OPERATOR.fullmatch(op) is not None
                        for op in distinct], dtype=bool)
    ok = (dev.is_between(1, MAX_TEXT_BYTES["device"]) & ~pl.col("device").str.ends_with("\x00")
          & pl.col("ts").is_between(MIN_TS_MS, MAX_TS_MS)
          & (pl.col("home_mcc").is_null() | pl.col("home_mcc").is_between(0, 999))
          & pl.when(pl.col("cell").is_not_null())
          .then(cell.is_between(1, MAX_TEXT_BYTES["cell"]))
          .otherwise((pl.col("lat").abs() <= 90) & (pl.col("lon").abs() <= 180)))
    return cols.select(ok.fill_null(False).alias("ok"))["ok"].to_numpy() & good_op[index]


# ----------------------------------------------------------------------------------------------
# Device keys, computed without per-row Python (the keys of estimators.pseudonym.device_keys)

def _finish_keys(h: np.ndarray) -> np.ndarray:
    h[h == 0] = 1  # key 0 is the device index's "empty"
    return h


def fast_device_keys(operators: np.ndarray, devices: np.ndarray, secret: bytes) -> np.ndarray:
    """:func:`estimators.pseudonym.device_keys` of ``|S`` columns: the messages
    ``operator || 0x1F || device`` laid out in 64-bit words by whole-column shifts
    (:func:`~estimators.pseudonym.device_words`), then SipHash on all rows at once."""
    return fast_device_hashes(operators, devices, secret, False)[0]


def fast_device_hashes(operators: np.ndarray, devices: np.ndarray, secret: bytes, draws: bool,
                       repeats: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`fast_device_keys` and, with ``draws``, the unkeyed draw hashes of the same
    message words (:func:`~estimators.footprints.device_draw_hashes`; else None).
    ``repeats``: devices often repeat in the batch (a chunk of a file; not a frame's few
    repeats): each distinct message is keyed once."""
    n = len(devices)
    if n == 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64) if draws else None
    words, length = device_words(np.asarray(operators, dtype=np.bytes_),
                                 np.asarray(devices, dtype=np.bytes_))
    return _hashes_of_words(words, length, secret, draws, repeats)


def _hashes_of_words(words: np.ndarray, length: np.ndarray, secret: bytes, draws: bool,
                     repeats: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Device keys and draw hashes (see :func:`fast_device_hashes`) of message words;
    ``repeats``: messages often repeat (see :func:`~estimators.pseudonym.siphash_words`)."""
    keys = _finish_keys(siphash_words(device_key_secret(secret), words, length, repeats))
    return keys, device_draw_hashes(words, length) if draws else None


def text_device_keys(operators: list[str], which: np.ndarray, devices: pl.Series,
                     secret: bytes) -> np.ndarray:
    """:func:`estimators.pseudonym.device_keys` of a text column of devices (polars; no nulls)
    and their operators (``operators[which[i]]``: a few distinct ones): each device padded by
    polars and read as bytes without a Python object per row, its operator and the separator
    laid in front with numpy slices."""
    return text_device_hashes(operators, which, devices, secret, False)[0]


def text_device_hashes(operators: list[str], which: np.ndarray, devices: pl.Series,
                       secret: bytes, draws: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`text_device_keys` and, with ``draws``, the unkeyed draw hashes of the same
    message words (:func:`~estimators.footprints.device_draw_hashes`; else None)."""
    n = len(devices)
    if n == 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64) if draws else None
    op_raw = [op.encode() for op in operators]
    dev_len = devices.str.len_bytes().to_numpy().astype(np.int64)
    dev_b = _text_bytes(devices, dev_len) if max(map(len, op_raw)) <= 6 else None
    if dev_b is not None and np.array_equal(np.strings.str_len(dev_b), dev_len):
        # ASCII devices as one |S column (none lost a trailing NUL): the words of
        # :func:`fast_device_hashes`, laid by whole-column shifts
        return fast_device_hashes(np.array(op_raw, dtype="S6")[which], dev_b, secret, draws,
                                  repeats=True)
    width = max(1, int(dev_len.max()))
    dev = devices.str.pad_end(width, "\x00").cast(pl.Binary) \
        .bin.reinterpret(dtype=pl.Array(pl.UInt8, width))
    if dev.null_count() or max(map(len, op_raw)) > 6:  # text that is not ASCII: the byte path
        return fast_device_hashes(np.array(op_raw, dtype="S6")[which],
                                  np.array([d.encode() for d in devices.to_list()],
                                           dtype=np.bytes_), secret, draws)
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
    words = np.ascontiguousarray(msg.view("<u8").T)
    return _hashes_of_words(words, length, secret, draws, repeats=True)


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
