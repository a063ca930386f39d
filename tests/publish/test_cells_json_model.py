"""Model tests: snapshot cells written as JSON text by array
(``cells_json``) must be the bytes the dict gave: NaN (suppressed) and +-inf as null, negative
zero and halves rounded as ``round``, cells of one resolution or mixed, empty."""

from __future__ import annotations

import logging

import h3
import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.publish.snapshot import (
    cell_ids,
    cells_json,
    compact_json,
    count_or_null,
    counts_or_null,
)

VALUE = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 0.5, 1.5, 2.5, -0.5,
                     -1.5, -2.5, 0.49999999999999994, 1e15, 2.0**53, 2.0**53 + 2, 1e18, -1e18]),
    st.floats(-1e9, 1e9),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not abs(x) >= 9e18),
)


def _cells(seed: int, n: int, resolutions: list[int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-89, 89, n)
    lon = rng.uniform(-180, 180, n)
    res = rng.choice(resolutions, n)
    ids = {h3.str_to_int(h3.latlng_to_cell(a, o, int(r)))
           for a, o, r in zip(lat.tolist(), lon.tolist(), res.tolist(), strict=True)}
    return np.array(sorted(ids), dtype=np.uint64)


def _old(cells: np.ndarray, present: np.ndarray) -> bytes:
    """What build_snapshot wrote before: the dict through compact_json."""
    return compact_json(dict(zip(cell_ids(cells), counts_or_null(present), strict=True))).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 60),
       resolutions=st.sampled_from([[0], [5], [8], [15], [7, 8], [0, 15]]), data=st.data())
def test_cells_json_bytes_equal_dict(seed, n, resolutions, data) -> None:
    cells = _cells(seed, n, resolutions)
    present = np.array(data.draw(st.lists(VALUE, min_size=len(cells), max_size=len(cells))),
                       dtype=np.float64)
    logging.disable(logging.WARNING)
    try:
        text = cells_json(cells, present)
        assert text == _old(cells, present)
        snap = {"at": "x", "cells": orjson.Fragment(text), "z": 1}
        assert compact_json(snap).encode() == _old(cells, present).join(
            [b'{"at":"x","cells":', b',"z":1}'])
        assert orjson.loads(text) == dict(zip(cell_ids(cells),
                                              [count_or_null(x) for x in present.tolist()],
                                              strict=True))
    finally:
        logging.disable(logging.NOTSET)


def test_cells_json_edge_ids() -> None:
    cells = np.array([0, 1, 15, 16, (1 << 64) - 1], dtype=np.uint64)
    present = np.array([1.0, float("nan"), -0.0, 2.5, 3.5])
    assert cells_json(cells, present) == _old(cells, present)
    same = np.array([0x10, 0x1F, 0xAB], dtype=np.uint64)
    assert cells_json(same, np.array([12345.0, 0.0, float("nan")])) == _old(
        same, np.array([12345.0, 0.0, float("nan")]))


def test_overflowing_figures_are_null_never_wrapped() -> None:
    """A figure of 2**63 or more is an overflow upstream: null (and logged) in every path, never
    an int64 cast that wraps it to -9223372036854775808."""
    values = np.array([1e19, -1e19, 2.0**63, 2.0**62, 7.0])
    expected = [None, None, None, 2**62, 7]
    assert [count_or_null(x) for x in values.tolist()] == expected
    assert counts_or_null(values) == expected
    cells = np.array([0x10, 0x1F, 0xAB, 0xAC, 0xAD], dtype=np.uint64)
    assert cells_json(cells, values) == _old(cells, values)
    assert b"-9223372036854775808" not in cells_json(cells, values)
