"""The decoder's columnar entry point (issue 14): device keys computed from columns are the keyed
hashes of :func:`estimators.pseudonym.device_keys`, the contract filter never vouches for a row
``check_ping`` rejects, and :meth:`PingDecoder.decode_rows` gives what :meth:`PingDecoder.decode`
gives for the same rows (operators registered in the same order, the engine's operator limit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators.engine import MAX_OPERATORS, Engine, EngineConfig
from estimators.pseudonym import device_keys
from stream.contract import check_ping
from stream.decode.validate import (
    PingDecoder,
    contract_certain,
    fast_device_keys,
    text_device_keys,
)
from stream.sources.columnar_files import JSON_SCHEMA, read_columns
from stream.sources.ping_files import read_records
from stream.sources.reference_files import load_regions

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_772_409_600_000
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=130)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.sampled_from(["40101", "401011", "25001", "4"]), min_size=1, max_size=40),
       devices=st.data())
def test_device_keys_from_columns_are_the_keyed_hashes(ops: list[str], devices: st.DataObject) -> None:
    devs = devices.draw(st.lists(TEXT, min_size=len(ops), max_size=len(ops)))
    expected = device_keys(np.array(ops), np.array(devs), SECRET)
    as_bytes = fast_device_keys(np.array([o.encode() for o in ops], dtype="S6"),
                                np.array([d.encode() for d in devs], dtype=np.bytes_), SECRET)
    distinct = sorted(set(ops))
    which = np.array([distinct.index(o) for o in ops])
    as_text = text_device_keys(distinct, which, pl.Series(devs, dtype=pl.String), SECRET)
    assert as_bytes.tolist() == expected.tolist()
    assert as_text.tolist() == expected.tolist()


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "device": st.one_of(st.none(), TEXT, st.just(""), st.just("x" * 128), st.just("é" * 64),
                        st.just("é" * 65)),
    "ts": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(T0 - 5, T0 + 5),
                    st.sampled_from([1_577_836_800_000, 1_577_836_799_999, 3_776_860_055_551,
                                     3_776_860_055_552])),
    "operator": st.one_of(st.none(), st.sampled_from(["40101", "401011", "4010", "4010111", "4010x",
                                                      "", "٤٠١٠١", "+4010", " 40101"])),
    "home_mcc": st.one_of(st.none(), st.integers(-5, 1005)),
    "cell": st.one_of(st.none(), TEXT, st.just(""), st.just("c" * 64), st.just("c" * 65)),
    "lat": st.one_of(st.none(), st.floats(-100, 100), st.sampled_from([90.0, -90.0, 90.0001])),
    "lon": st.one_of(st.none(), st.floats(-200, 200), st.sampled_from([180.0, -180.0, 180.0001])),
}


@settings(max_examples=500, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries(VALUES), min_size=1, max_size=30))
def test_the_contract_filter_never_vouches_for_a_row_check_ping_rejects(
        rows: list[dict[str, Any]]) -> None:
    good = {"device": "d1", "ts": T0, "operator": "40101", "home_mcc": None, "cell": None,
            "lat": 51.1, "lon": 71.4}
    cols = pl.DataFrame([*rows, good], schema=JSON_SCHEMA)
    certain = contract_certain(cols)
    assert certain[-1]  # a plainly valid row is vouched for
    for row, ok in zip(rows, certain.tolist(), strict=False):
        if ok:
            assert check_ping({k: v for k, v in row.items() if v is not None}) is None, row


def _engine(regions_file: Path, operators: list[str]) -> Engine:
    engine = Engine(load_regions(regions_file), EngineConfig(res=8))
    engine.load_cell_plan(operators, ["A"] * len(operators), np.full(len(operators), 51.15),
                          np.full(len(operators), 71.45))
    return engine


def _both(engine_of: Any, path: Path) -> list[tuple[Any, ...]]:
    out = []
    for columnar in (True, False):
        engine = engine_of()
        decoder = PingDecoder(engine, SECRET, now_ms=T0 + 3_600_000)
        batches = [decoder.decode_rows(r) for r in read_columns([path])] if columnar else \
            [decoder.decode(r) for r in read_records([path])]
        out.append(([(b.device_key.tolist(), b.opclass.tolist(), b.loc.tolist(),
                      [(r.source, r.reason, r.detail, r.record) for r in b.rejects]) for b in batches],
                    list(engine.operators)))
    return out


def test_new_operators_are_registered_in_the_same_order(regions_file: Path, tmp_path: Path) -> None:
    """Operators not in the cell plan appear with lat/lon pings, several in one chunk, some only
    in rows the per-line path reads: the engine numbers them as the record reader's decoder did."""
    rows = []
    for i in range(600):
        op = f"4{(i * 37) % 50:02d}{i % 7:02d}"
        row = {"device": f"d{i}", "ts": T0 + i, "operator": op, "lat": 51.15, "lon": 71.45}
        if i % 5 == 0:
            row["x"] = "é"  # not ASCII: read line by line
        rows.append(json.dumps(row, ensure_ascii=False))
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(rows) + "\n")
    columnar, records = _both(lambda: _engine(regions_file, ["40101"]), path)
    assert columnar == records
    assert len(columnar[1]) > 100


def test_the_engines_operator_limit_rejects_alike(regions_file: Path, tmp_path: Path) -> None:
    full = [f"{40000 + i}" for i in range(MAX_OPERATORS)]
    rows = [json.dumps({"device": f"d{i}", "ts": T0 + i, "operator": op,
                        **({"cell": "A"} if op in full else {"lat": 51.15, "lon": 71.45})})
            for i, op in enumerate(["40101", "40999", full[3], "41001"] * 3)]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(rows) + "\n")
    columnar, records = _both(lambda: _engine(regions_file, full), path)
    assert columnar == records
    reasons = [r[1] for batch in columnar[0] for r in batch[3]]
    assert reasons == ["too_many_operators"] * 6
