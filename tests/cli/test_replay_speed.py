"""What makes replay fast gives what the slower way gave: the two-thread read-ahead pipeline,
operator indexes and snapshot cells by array (the foreign long-stayers line without the whole
foreign document: tests/publish/test_foreign_publish.py)."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from stream.contract import InputError
from stream.decode.validate import _few_distinct, operator_index
from stream.sources.columnar_files import ReadAhead, read_columns, read_prepared, start_reading

T0 = 1_772_409_600_000  # 2026-03-02T00:00Z


def _gz_file(tmp_path: Path, rows: int, cut: bool) -> Path:
    lines = "".join(json.dumps({"device": f"d{i}", "ts": T0 + i, "operator": "40101",
                                "cell": "A"}) + "\n" for i in range(rows))
    data = gzip.compress(lines.encode())
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(data[: len(data) * 2 // 3] if cut else data)
    return path


def test_the_prepare_pipeline_gives_the_chunks_in_order_then_the_error(tmp_path: Path) -> None:
    path = _gz_file(tmp_path, 30_000, cut=True)
    expected: list[int] = []
    with pytest.raises(InputError) as plain:
        for chunk in read_columns([path], chunk_rows=1000):
            expected.append(int(chunk.line[0]))
    got: list[tuple[int, int]] = []
    with pytest.raises(InputError) as piped:
        for chunk, first in read_prepared([path], lambda c: int(c.line[0]), chunk_rows=1000):
            got.append((int(chunk.line[0]), first))
    assert str(piped.value) == str(plain.value)
    assert [a for a, _ in got] == expected and all(a == b for a, b in got) and len(got) > 3


def test_an_error_of_prepare_comes_after_the_chunks_before_it(tmp_path: Path) -> None:
    path = _gz_file(tmp_path, 10_000, cut=False)

    def prepare(chunk: Any) -> int:
        if int(chunk.line[0]) > 5000:
            raise ValueError("prepare failed")
        return len(chunk)

    got = []
    with pytest.raises(ValueError, match="prepare failed"):
        for _chunk, n in read_prepared([path], prepare, chunk_rows=1000):
            got.append(n)
    assert got == [1000] * 5
    # both threads stopped (the reading one too, while the error is still held)
    assert not {"defacto-read", "defacto-prepare"} & {t.name for t in threading.enumerate()}


def test_closing_the_pipeline_early_stops_both_threads(tmp_path: Path) -> None:
    path = _gz_file(tmp_path, 30_000, cut=False)
    before = {t.name for t in threading.enumerate()}
    it = read_prepared([path], len, chunk_rows=1000)
    next(it)
    assert {"defacto-read", "defacto-prepare"} <= {t.name for t in threading.enumerate()}
    it.close()
    assert {t.name for t in threading.enumerate()} == before


def _poll(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_read_ahead_holds_up_to_hold_items_until_the_first_is_taken_then_one() -> None:
    made: list[int] = []

    def items() -> Any:
        for i in range(20):
            made.append(i)
            yield i

    ahead = ReadAhead(items(), "test-ahead", hold=4)
    assert _poll(lambda: len(made) == 5)  # 4 waiting, the 5th made and waiting for room
    taken = []
    for item in ahead:
        taken.append(item)
        if len(taken) >= 4:  # the items held at the start are taken: one waits, one is made
            assert len(made) - len(taken) <= 2
    assert taken == list(range(20)) and not ahead._thread.is_alive()


def test_chunks_read_already_give_the_same_chunks_and_error(tmp_path: Path) -> None:
    path = _gz_file(tmp_path, 30_000, cut=True)
    expected: list[int] = []
    with pytest.raises(InputError) as plain:
        for chunk in read_columns([path], chunk_rows=1000):
            expected.append(int(chunk.line[0]))
    reading = start_reading([path], chunk_rows=1000, hold=8)
    assert _poll(lambda: reading._out.qsize() == 8)  # read while nothing was taken
    got: list[int] = []
    with pytest.raises(InputError) as early:
        for chunk, first in read_prepared([], lambda c: int(c.line[0]), reading=reading):
            assert first == int(chunk.line[0])
            got.append(first)
    assert got == expected and str(early.value) == str(plain.value)
    assert "defacto-read" not in {t.name for t in threading.enumerate()}


@pytest.mark.parametrize("command", ["replay", "calibrate"])
def test_a_run_whose_reference_fails_stops_its_reading_thread(tmp_path: Path,
                                                              command: str) -> None:
    from stream.cli import offline
    from stream.sources.reference_files import ReferencePaths

    path = _gz_file(tmp_path, 30_000, cut=False)
    reference = ReferencePaths(regions=tmp_path / "missing.geojson")
    with pytest.raises(InputError, match=r"missing\.geojson"):
        if command == "replay":
            offline.run_replay(offline.ReplayConfig(pings=(path,), reference=reference,
                                                    key_file=None, out=tmp_path / "snaps.jsonl"))
        else:
            offline.run_calibrate(offline.CalibrateConfig(
                pings=(path,), reference_population=tmp_path / "reference.csv",
                out=tmp_path / "calibration.csv", reference=reference, key_file=None))
    assert "defacto-read" not in {t.name for t in threading.enumerate()}


@pytest.mark.parametrize("values", [["40101"], ["40101", None, "40102", "40101", None, ""],
                                    [f"4{i % 7:04d}" for i in range(1000)], []])
def test_operator_index_gives_each_rows_value_back(values: list[str | None]) -> None:
    distinct, index = operator_index(pl.Series(values, dtype=pl.String))
    assert len(distinct) == len(set(values)) and sorted(map(str, distinct)) == \
        sorted(map(str, set(values)))
    assert [distinct[i] for i in index.tolist()] == values and index.dtype == np.int64


@pytest.mark.parametrize("values", [[5], [3, 3, 1, 3, 2, 1], [9, 8, 7, 6, 5, 4, 3, 2, 1, 9, 1],
                                    list(range(12)), []])
def test_few_distinct_values_are_numpys_unique(values: list[int]) -> None:
    a = np.array(values, dtype=np.uint64)
    few = _few_distinct(a, most=9)
    if len(set(values)) > 9:
        assert few is None
        return
    assert few is not None
    _, first, inverse = np.unique(a, return_index=True, return_inverse=True)
    assert few[0].tolist() == first.tolist() and few[1].tolist() == inverse.reshape(-1).tolist()
    assert few[0].dtype == few[1].dtype == np.int64


def test_snapshot_counts_and_cell_ids_by_array_are_those_one_by_one(
        caplog: pytest.LogCaptureFixture) -> None:
    import h3

    from stream.publish.snapshot import cell_ids, count_or_null, counts_or_null

    values = np.array([0.5, 1.5, 2.5, -0.4, 3.49, np.nan, 7.0, np.inf, np.nan, -np.inf, 1e6])
    with caplog.at_level("WARNING", logger="defacto.publish"):
        got = counts_or_null(values)
    assert got == [count_or_null(float(x)) for x in values]
    assert got[:3] == [0, 2, 2] and got[5] is None and got[7] is None
    assert sum("non-finite" in r.message for r in caplog.records) == 4  # 2 here, 2 one by one
    assert counts_or_null(np.full(3, np.nan)) == [None] * 3
    cells = np.array([h3.str_to_int(h3.latlng_to_cell(51.1 + i / 10, 71.4, 8)) for i in range(5)]
                     + [0x8f2830828052d25], dtype=np.uint64)
    assert cell_ids(cells) == [h3.int_to_str(int(c)) for c in cells]


@pytest.mark.parametrize("res", [0, 8, 15])
def test_cells_json_by_array_is_the_dict_as_orjson_writes_it(
        res: int, caplog: pytest.LogCaptureFixture) -> None:
    import h3
    import orjson

    from stream.publish.snapshot import cell_ids, cells_json, compact_json, counts_or_null

    rng = np.random.default_rng(res)
    cells = np.unique(np.array([h3.str_to_int(h3.latlng_to_cell(lat, lon, res)) for lat, lon in
                                zip(rng.uniform(-80, 80, 300), rng.uniform(-179, 179, 300),
                                    strict=True)], dtype=np.uint64))
    values = rng.choice([np.nan, np.inf, -np.inf, 0.5, 1.5, 2.5, -0.5, -3.7, 12345.49, 1e9, 7.0],
                        len(cells))
    with caplog.at_level("WARNING", logger="defacto.publish"):
        for c, v in ((cells, values), (cells, np.full(len(cells), np.nan)), (cells, np.zeros(len(cells))),
                     (np.array([5, 0x8f2830828052d25], dtype=np.uint64), values[:2]),  # mixed
                     (np.zeros(0, np.uint64), np.zeros(0))):
            by_dict = dict(zip(cell_ids(c), counts_or_null(v), strict=True))
            text = cells_json(c, v)
            assert text == orjson.dumps(by_dict) and orjson.loads(text) == by_dict
            doc = {"at": "x", "cells": orjson.Fragment(text), "k": 10}
            assert compact_json(doc) == compact_json({"at": "x", "cells": by_dict, "k": 10})
    assert any("non-finite" in r.message for r in caplog.records)  # logged as one by one
