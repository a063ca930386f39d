"""Decoding without per-batch string work (issue 14) gives exactly what the text path gave.

The cell-plan table (:class:`PlanTable`) finds the rows the plan's own dictionary and the polars
join find, byte for byte; the operator table (:class:`OperatorTable`) the engine's codes; device
keys laid out by whole-column shifts are the SipHash of ``operator || 0x1F || device``
(checked against the ``siphashc`` C implementation); the frame's operator rule on 64-bit words is
the byte rule; and :meth:`PingDecoder.decode_columns` gives the same batch, rejects (reason,
detail, record) and operator registrations as the same decoder with the tables turned off (the
polars join, the per-batch distinct operators and ``np.strings.isdigit``, as before), on random
columns full of bad rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
import siphashc
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators.engine import MAX_OPERATORS, Engine, EngineConfig
from estimators.pseudonym import device_key_secret, device_keys, siphash24
from estimators.regions import regions_from_geojson
from stream.decode.frame import _operator_ok
from stream.decode.validate import OperatorTable, PingDecoder, PlanTable, fast_device_keys

SECRET = b"fast-decode-secret-0123456789abcdef"
T0 = 1_772_409_600_000
FAST = settings(max_examples=150, deadline=None, database=None)

OPS = ["40101", "40102", "401011", "40177", "25001", "4010", "4010x", "", "٤٠١٠١", "4010111"]
CELLS = ["A", "B-7", "c" * 8, "c" * 9, "U396-247", "é", "ü-12", "a\x00b", "x" * 64, "12345678901234567"]


def _bytes_text(draw: Any) -> bytes:
    """Bytes as frames carry them: text (maybe not ASCII), NULs inside, or not UTF-8 at all."""
    kind = draw(st.sampled_from(["plan", "plan", "text", "raw", "near"]))
    if kind == "plan":
        return draw(st.sampled_from(CELLS)).encode()
    if kind == "text":
        return draw(st.text(st.characters(codec="utf-8"), max_size=20)).encode()
    if kind == "near":
        base = draw(st.sampled_from(CELLS)).encode()
        return base + draw(st.sampled_from([b"0", b"\x00", b" "])) if base else b"x"
    return draw(st.binary(max_size=20))


@given(data=st.data())
@FAST
def test_the_plan_table_finds_what_the_plan_dictionary_finds(data: st.DataObject) -> None:
    plan_keys = data.draw(st.lists(st.tuples(st.sampled_from(OPS[:6] + ["4" * 9]),
                                             st.sampled_from(CELLS + ["", "z\x00"]) | st.text(max_size=30)),
                                   max_size=60, unique=True))
    rows = {k: i * 3 + 1 for i, k in enumerate(plan_keys)}
    table = PlanTable(rows)
    n = data.draw(st.integers(0, 80))
    ops, cells = [], []
    for _ in range(n):
        if plan_keys and data.draw(st.booleans()):
            op, cell = data.draw(st.sampled_from(plan_keys))
            ops.append(op.encode())
            cells.append(cell.encode())
        else:
            ops.append(data.draw(st.sampled_from(OPS)).encode())
            cells.append(data.draw(st.composite(lambda d: _bytes_text(d))()))
    op_col = np.array(ops, dtype=f"S{max([len(o) for o in ops], default=0) or 1}")
    cell_col = np.array(cells, dtype=f"S{max([len(c) for c in cells], default=0) or 1}")

    def expected(op: bytes, cell: bytes) -> int:
        try:
            key = (op.decode("utf-8"), cell.decode("utf-8"))
        except UnicodeDecodeError:
            return -1
        return rows.get(key, -1) if cell else -1

    want = [expected(o, c) for o, c in zip(op_col.tolist(), cell_col.tolist(), strict=True)]
    assert table.rows(op_col, cell_col).tolist() == want
    has = np.strings.str_len(cell_col) > 0
    assert table.rows(op_col, cell_col, has).tolist() == want


def test_the_plan_table_leaves_out_keys_no_bytes_can_equal() -> None:
    """Lone surrogates (not UTF-8), an empty cell and text ending in NUL find nothing; the
    other keys keep their rows, the widest kept key sets the width."""
    rows = {("40101", "a\udc80"): 1, ("40101", ""): 2, ("40101", "b\x00"): 3, ("4\x00", "c"): 4,
            ("40102", "d\x00e"): 5, ("40177", "\u00fc" * 5): 6, ("\udc81", "f"): 7}
    table = PlanTable(rows)
    assert (table.m, table.op_blocks, table.cell_blocks) == (2, 1, 2)
    op_col = np.array([b"40101", b"40101", b"40102", b"40177", b"4", b"40101"], dtype="S5")
    cell_col = np.array([b"a\xed\xb2\x80", b"b", b"d\x00e", "\u00fc".encode() * 5, b"c", b""],
                        dtype="S10")
    assert table.rows(op_col, cell_col).tolist() == [-1, -1, 5, 6, -1, -1]


def test_the_plan_table_probes_past_collisions() -> None:
    """Thousands of keys differing in one byte: many share a home slot's neighbourhood."""
    rows = {(op, f"{i:06d}"): 2 * i for i, op in enumerate(["40101", "40102"] * 3000)}
    table = PlanTable(rows)
    assert table.max_probe >= 1
    keys = list(rows) + [("40101", "999999"), ("40103", "000001")]
    op_col = np.array([k[0].encode() for k in keys], dtype="S6")
    cell_col = np.array([k[1].encode() for k in keys], dtype="S6")
    assert table.rows(op_col, cell_col).tolist() == [rows.get(k, -1) for k in keys]


@given(names=st.lists(st.sampled_from(OPS) | st.from_regex(r"[0-9]{5,6}", fullmatch=True),
                      max_size=40, unique=True),
       queries=st.lists(st.sampled_from(OPS) | st.binary(max_size=6), max_size=60))
@FAST
def test_the_operator_table_gives_the_engines_codes(names: list[str], queries: list[Any]) -> None:
    table = OperatorTable(names)
    q = [x.encode() if isinstance(x, str) else x for x in queries]
    q = [x for x in q if len(x) <= 6]
    col = np.array(q, dtype="S6")
    words = np.zeros((len(col), 8), dtype=np.uint8)
    words[:, :6] = col.view(np.uint8).reshape(len(col), 6)
    valid = {op: i for i, op in enumerate(names) if op.isascii() and op.isdigit() and 5 <= len(op) <= 6}
    want = [valid.get(x.decode("latin-1"), -1) if x.isascii() else -1 for x in col.tolist()]
    assert table.codes(words.view("<u8").reshape(len(col))).tolist() == want


def test_the_operator_table_holds_as_many_operators_as_the_engine() -> None:
    names = [f"{40000 + 7 * i}" for i in range(MAX_OPERATORS)]
    table = OperatorTable(names)
    col = np.array([n.encode() for n in names] + [b"39999"], dtype="S6")
    words = np.zeros((len(col), 8), dtype=np.uint8)
    words[:, :6] = col.view(np.uint8).reshape(len(col), 6)
    assert table.codes(words.view("<u8").reshape(len(col))).tolist() == [*range(MAX_OPERATORS), -1]


@given(rows=st.lists(st.tuples(st.binary(max_size=9).map(lambda b: b.rstrip(b"\x00")),
                               st.binary(min_size=1, max_size=40).map(lambda b: b.rstrip(b"\x00") or b"d")),
                     min_size=1, max_size=50),
       width=st.sampled_from([None, 6, 8, 9]))
@FAST
def test_device_keys_are_siphash_of_operator_separator_device(rows: list[tuple[bytes, bytes]],
                                                              width: int | None) -> None:
    if width is not None:
        rows = [(op[:width], dev) for op, dev in rows]
    ops = np.array([r[0] for r in rows], dtype=f"S{width}" if width else "S")
    devs = np.array([r[1] for r in rows], dtype="S")
    key = device_key_secret(SECRET)
    want = [siphashc.siphash(key, op + b"\x1f" + dev) or 1
            for op, dev in zip(ops.tolist(), devs.tolist(), strict=True)]
    assert device_keys(ops, devs, SECRET).tolist() == want
    assert fast_device_keys(ops, devs, SECRET).tolist() == want
    assert siphash24(key, np.array([op + b"\x1f" + dev for op, dev in rows], dtype="S")).tolist() \
        == [siphashc.siphash(key, op + b"\x1f" + dev) for op, dev in rows]


def test_the_frames_operator_rule_on_words_is_the_byte_rule() -> None:
    rng = np.random.default_rng(7)
    alphabet = np.array([0, 0x2F, 0x30, 0x35, 0x39, 0x3A, 0x41, 0x7F, 0x80, 0xB0, 0xBA, 0xC6, 0xFF],
                        dtype=np.uint8)
    raw = alphabet[rng.integers(0, len(alphabet), size=(200_000, 6))]
    raw[: len(raw) // 2, :5] = rng.integers(0x30, 0x3A, size=(len(raw) // 2, 5))  # mostly digits
    col = np.ascontiguousarray(raw).view("S6").reshape(-1)
    digit = (raw >= 0x30) & (raw <= 0x39)
    want = digit[:, :5].all(axis=1) & (digit[:, 5] | (raw[:, 5] == 0))
    assert (_operator_ok(col) == want).all()
    assert want.sum() > 1000


# ----------------------------------------------------------------------------------------------
# decode_columns: the tables against the text path


REGIONS = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"id": "city", "name": "City"},
     "geometry": {"type": "Polygon", "coordinates": [[[71.3, 51.0], [71.6, 51.0], [71.6, 51.3],
                                                       [71.3, 51.3], [71.3, 51.0]]]}}]}
PLAN_OPS = ["40101", "40101", "40102", "401011", "40177"]
PLAN_CELLS = ["A", "B-7", "U396-247", "é-1", "c" * 20]


def _engine(extra_operators: int = 0) -> Engine:
    engine = Engine(regions_from_geojson(REGIONS), EngineConfig(res=8))
    engine.load_cell_plan(PLAN_OPS, PLAN_CELLS, np.full(5, 51.15), np.linspace(71.35, 71.55, 5))
    for i in range(extra_operators):
        engine.operator_code(f"{30000 + i}")
    return engine


class _TextPath(PingDecoder):
    """The decoder with its tables turned off: the polars join, ``_register`` for every batch's
    operators and ``np.strings.isdigit`` for every row, as before the tables."""

    def _known_operators(self, operator: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
        return np.full(len(operator), -1, dtype=np.int64)

    def _plan_rows_of_bytes(self, operator: np.ndarray, cell: np.ndarray,
                            has_cell: np.ndarray | None = None, op_word: np.ndarray | None = None
                            ) -> np.ndarray:
        out = np.full(len(cell), -1, dtype=np.int64)
        has = np.strings.str_len(cell) > 0
        if has.any() and self.engine.plan is not None:
            text = [pl.Series(v, dtype=pl.Binary).cast(pl.String, strict=False)
                    for v in (operator[has], cell[has])]
            out[has] = self._plan_rows(*text)
        return out


@st.composite
def ping_columns(draw: Any) -> dict[str, np.ndarray]:
    n = draw(st.integers(1, 60))
    rows = []
    for _ in range(n):
        good = draw(st.integers(0, 3)) > 0
        op = draw(st.sampled_from(PLAN_OPS + ["40103", "41001", "4010", "4010x", "", "40a01"]
                                  if not good else PLAN_OPS + ["40103", "41001"]))
        cell = draw(st.sampled_from(PLAN_CELLS + ["", "", "unknown", "é"])) if good \
            else draw(st.one_of(st.sampled_from(PLAN_CELLS + ["", "x" * 65]),
                                st.text(max_size=10)))
        rows.append({
            "device": draw(st.sampled_from([b"d1", b"d2", "dé".encode(), b"x" * 40]) if good
                           else st.binary(max_size=130).map(lambda b: b.rstrip(b"\x00"))),
            "ts": draw(st.integers(T0 - 10**6, T0 + 10**6) if good
                       else st.sampled_from([T0, 0, T0 + 10 * 3_600_000, 2**62])),
            "operator": op.encode(),
            "home_mcc": draw(st.sampled_from([-1, 401, 250]) if good else st.integers(-3, 1002)),
            "cell": cell.encode(),
            "lat": draw(st.sampled_from([51.1, 51.2, 40.0]) if good
                        else st.sampled_from([np.nan, 91.0, 51.1, -90.0])),
            "lon": draw(st.sampled_from([71.4, 71.5]) if good
                        else st.sampled_from([np.nan, 181.0, 71.4])),
        })
    cols = {
        "device": np.array([r["device"] for r in rows], dtype="S"),
        "ts": np.array([r["ts"] for r in rows], dtype=np.int64),
        "operator": np.array([r["operator"][:6] for r in rows], dtype="S6"),
        "home_mcc": np.array([r["home_mcc"] for r in rows], dtype=np.int16),
        "cell": np.array([r["cell"] for r in rows], dtype="S"),
        "lat": np.array([np.nan if r["cell"] else r["lat"] for r in rows]),
        "lon": np.array([np.nan if r["cell"] else r["lon"] for r in rows]),
    }
    if cols["device"].dtype.itemsize == 0:
        cols["device"] = cols["device"].astype("S1")
    if cols["cell"].dtype.itemsize == 0:
        cols["cell"] = cols["cell"].astype("S1")
    return cols


def _decoded(decoder: PingDecoder, batches: list[dict[str, np.ndarray]]) -> list[Any]:
    out = []
    for cols in batches:
        b = decoder.decode_columns(cols, lambda i: f"row {i}")
        out.append((b.device_key.tolist(), b.ts_ms.tolist(), b.opclass.tolist(), b.loc.tolist(),
                    b.row.tolist(), b.home_mcc.tolist(),
                    [(r.source, r.reason, r.detail, r.record) for r in b.rejects]))
    return [out, list(decoder.engine.operators)]


@given(batches=st.lists(ping_columns(), min_size=1, max_size=3),
       extra=st.sampled_from([0, 0, MAX_OPERATORS - 6, MAX_OPERATORS - 4]))
@settings(max_examples=200, deadline=None, database=None)
def test_decode_columns_with_tables_is_the_text_path(batches: list[dict[str, np.ndarray]],
                                                     extra: int) -> None:
    """Same keys, times, classes, locations, rows and rejects (reason, detail, record), and the
    same operators registered in the same order (up to the engine's limit)."""
    fast = _decoded(PingDecoder(_engine(extra), SECRET, now_ms=T0 + 3_600_000), batches)
    text = _decoded(_TextPath(_engine(extra), SECRET, now_ms=T0 + 3_600_000), batches)
    assert fast == text


def test_decode_columns_covers_every_reason() -> None:
    """One row per check, in order, and good rows by cell and by lat/lon."""
    rows = [  # device, ts, operator, home_mcc, cell, lat, lon -> reason
        (b"", T0, b"40101", -1, b"A", np.nan, np.nan, "bad_device"),
        (b"d", T0, b"4010", -1, b"A", np.nan, np.nan, "bad_operator"),
        (b"d", T0, b"40101", 1000, b"A", np.nan, np.nan, "bad_home_mcc"),
        (b"d", T0, b"40101", -1, b"c" * 65, np.nan, np.nan, "bad_cell"),
        (b"d", T0, b"40101", -1, b"", np.nan, np.nan, "missing_location"),
        (b"d", 5, b"40101", -1, b"A", np.nan, np.nan, "ts_out_of_range"),
        (b"d", T0 + 5 * 3_600_000, b"40101", -1, b"A", np.nan, np.nan, "ts_in_future"),
        (b"d", T0, b"40101", -1, b"", 91.0, 71.4, "bad_coordinates"),
        (b"d", T0, b"40101", -1, b"Z", np.nan, np.nan, "unknown_cell"),
        (b"d", T0, b"40102", -1, b"A", np.nan, np.nan, "unknown_cell"),  # another operator's cell
        (b"d", T0, b"40101", -1, b"A", np.nan, np.nan, ""),
        (b"d", T0, b"41001", 250, b"", 51.1, 71.4, ""),
    ]
    cols = {
        "device": np.array([r[0] for r in rows], dtype="S8"),
        "ts": np.array([r[1] for r in rows], dtype=np.int64),
        "operator": np.array([r[2] for r in rows], dtype="S6"),
        "home_mcc": np.array([r[3] for r in rows], dtype=np.int16),
        "cell": np.array([r[4] for r in rows], dtype="S"),
        "lat": np.array([r[5] for r in rows]),
        "lon": np.array([r[6] for r in rows]),
    }
    engine = _engine()
    batch = PingDecoder(engine, SECRET, now_ms=T0 + 3_600_000).decode_columns(cols, str)
    assert [r.reason for r in batch.rejects] == [r[7] for r in rows if r[7]]
    assert [r.source for r in batch.rejects] == [str(i) for i, r in enumerate(rows) if r[7]]
    assert batch.row.tolist() == [10, 11]
    assert engine.plan is not None
    assert batch.loc[0] == engine.plan.loc[0]
    assert engine.operators[-1] == "41001"  # registered by its first good ping
    assert batch.device_key.tolist() == device_keys(np.array([b"40101", b"41001"]),
                                                    np.array([b"d", b"d"]), SECRET).tolist()


@pytest.mark.parametrize("n", [1, 40_000])
def test_decode_columns_of_a_large_batch_is_the_text_path(n: int) -> None:
    """Batches past one SipHash chunk, every row good or bad alike."""
    rng = np.random.default_rng(n)
    pick = rng.integers(0, 5, n)
    cols = {
        "device": np.array([b"dev%07d" % i for i in rng.integers(0, n // 3 + 1, n)], dtype="S10"),
        "ts": T0 - rng.integers(0, 10**6, n),
        "operator": np.array(PLAN_OPS, dtype="S6")[pick],
        "home_mcc": rng.choice(np.array([-1, 401, 250], dtype=np.int16), n),
        "cell": np.where(rng.random(n) < 0.7, np.array([c.encode() for c in PLAN_CELLS])[pick], b""),
        "lat": np.full(n, 51.15),
        "lon": np.full(n, 71.45),
    }
    cols["lat"][cols["cell"] != b""] = np.nan
    cols["lon"][cols["cell"] != b""] = np.nan
    fast = _decoded(PingDecoder(_engine(), SECRET, now_ms=T0), [cols])
    text = _decoded(_TextPath(_engine(), SECRET, now_ms=T0), [cols])
    assert fast == text
    assert len(fast[0][0][0]) == n
