"""``unique_inverse`` is ``np.unique(values, return_inverse=True)`` on every path it takes
(sorted runs, a packed plain sort, numpy's own for negative, huge or non-integer values)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators.disclosure import unique_inverse


def _check(values: np.ndarray) -> None:
    ids, inverse = unique_inverse(values)
    want_ids, want_inverse = np.unique(values, return_inverse=True)
    assert ids.dtype == want_ids.dtype
    np.testing.assert_array_equal(ids, want_ids)
    assert inverse.dtype == np.int64
    np.testing.assert_array_equal(inverse, want_inverse.reshape(-1))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**62), max_size=300), st.sampled_from([np.int64, np.uint64]),
       st.booleans())
def test_non_negative(values: list[int], dtype: type, presorted: bool) -> None:
    a = np.array(values, dtype=dtype)
    _check(np.sort(a) if presorted else a)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-50, 50), max_size=200))
def test_negative_and_small(values: list[int]) -> None:
    _check(np.array(values, dtype=np.int64))


def test_h3_cells_and_large_arrays() -> None:
    rng = np.random.default_rng(1)
    cells = rng.integers(0x880000000000000, 0x890000000000000, 5000).astype(np.uint64)
    _check(cells)
    _check(np.sort(cells))
    _check(rng.integers(0, 70_000, 100_000))
    _check(np.array([2**63 - 1, 0, 2**63 - 1], dtype=np.int64))
    _check(np.zeros(0, dtype=np.int64))
