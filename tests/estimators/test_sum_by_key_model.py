"""``sum_by_key`` (packed sort keys) against a plain lexsort reference, on any integer keys."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators.tally import sum_by_key

DTYPES = (np.int32, np.uint8, np.int64, np.uint64)


def reference(keys: list[np.ndarray], counts: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    order = np.lexsort(tuple(reversed(keys)))
    rows: dict[tuple, int] = {}
    for i in order.tolist():
        k = tuple(int(key[i]) for key in keys)
        rows[k] = rows.get(k, 0) + int(counts[i])
    got = sorted(rows)
    return ([np.array([k[j] for k in got], dtype=keys[j].dtype) for j in range(len(keys))],
            np.array([rows[k] for k in got], dtype=np.int64))


@st.composite
def key_sets(draw: st.DrawFn) -> tuple[list[np.ndarray], np.ndarray]:
    n = draw(st.integers(1, 60))
    keys = []
    for _ in range(draw(st.integers(1, 5))):
        dtype = draw(st.sampled_from(DTYPES))
        info = np.iinfo(dtype)
        # narrow ranges (packed) and full ranges (not packed), offsets far from zero included
        base = draw(st.integers(int(info.min), int(info.max)))
        span = draw(st.sampled_from([1, 3, 255, 1 << 20, 1 << 40, 1 << 64]))
        lo, hi = max(int(info.min), base - span), min(int(info.max), base + span)
        keys.append(np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)),
                             dtype=dtype))
    counts = np.array(draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n)),
                      dtype=np.int64)
    return keys, counts


@settings(max_examples=300, deadline=None)
@given(key_sets())
def test_sum_by_key_matches_lexsort_reference(case: tuple[list[np.ndarray], np.ndarray]) -> None:
    keys, counts = case
    got_keys, got_counts = sum_by_key(keys, counts)
    want_keys, want_counts = reference(keys, counts)
    for g, w, k in zip(got_keys, want_keys, keys, strict=True):
        assert g.dtype == k.dtype
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got_counts, want_counts)


def test_sum_by_key_empty() -> None:
    keys, counts = sum_by_key([np.zeros(0, np.uint64), np.zeros(0, np.int32)], np.zeros(0, np.int64))
    assert [k.dtype for k in keys] == [np.uint64, np.int32] and counts.size == 0
