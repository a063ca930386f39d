"""Model tests: DeviceIndex.lookup / insert / rows / load / compact
against a plain dict model, on random batches with duplicates, edge keys (0, 2**64-1, ...),
keys sharing their low bits (long probe chains, windows running past the table's end) and
batches that trigger one or several rehashes."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estimators.device_index import DeviceIndex

U64 = (1 << 64) - 1
EDGE = [0, 1, 2, U64, U64 - 1, 1 << 63, (1 << 63) - 1, (1 << 32) - 1, 1 << 32, 0xFFFFFFFF_00000000]


def _clustered(low: int) -> st.SearchStrategy[int]:
    """Keys whose low 20 bits are ``low``: one home slot for any table up to 2**20 slots."""
    return st.integers(0, (1 << 44) - 1).map(lambda hi: (hi << 20) | low)


KEY = st.one_of(
    st.sampled_from(EDGE),
    st.integers(0, U64),
    _clustered((1 << 20) - 1),  # home = the last slot: chains wrap around the table's end
    _clustered((1 << 20) - 3),
    _clustered(0),
    st.integers(0, 40),  # small keys: many repeats across batches
)
BATCH = st.lists(KEY, max_size=300)
OP = st.one_of(
    st.tuples(st.just("rows"), BATCH),
    st.tuples(st.just("lookup"), BATCH),
    st.tuples(st.just("compact"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("reload"), st.integers(0, 2**32 - 1)),
)


class Model:
    def __init__(self) -> None:
        self.row: dict[int, int] = {}
        self.order: list[int] = []

    def rows(self, batch: list[int]) -> tuple[list[int], int]:
        n_before = len(self.order)
        for k in sorted(set(batch) - self.row.keys()):  # new keys in ascending key order
            self.row[k] = len(self.order)
            self.order.append(k)
        return [self.row[k] for k in batch], n_before

    def compact(self, keep: np.ndarray) -> np.ndarray:
        kept = np.flatnonzero(keep)
        self.order = [self.order[i] for i in kept]
        self.row = {k: i for i, k in enumerate(self.order)}
        return kept


def _check_whole(idx: DeviceIndex, model: Model) -> None:
    assert idx.n == len(model.order)
    assert idx.keys[: idx.n].tolist() == model.order
    if model.order:
        got = idx.lookup(np.array(model.order, dtype=np.uint64))
        assert got.tolist() == list(range(len(model.order)))
    # load factor kept: an empty slot always ends an absent key's probe
    assert (idx._slots != -1).sum() == idx.n
    assert idx.n <= 0.7 * len(idx._slots)
    # every held row sits in exactly one slot
    held = np.sort(idx._slots[idx._slots != -1])
    assert held.tolist() == list(range(idx.n))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.sampled_from([1, 4, 16, 100]), ops=st.lists(OP, max_size=12))
def test_device_index_matches_dict_model(capacity: int, ops: list) -> None:
    idx, model = DeviceIndex(capacity), Model()
    for kind, arg in ops:
        if kind == "rows":
            keys = np.array(arg, dtype=np.uint64)
            got, n_before = idx.rows(keys)
            want, want_before = model.rows(arg)
            assert got.dtype == np.int64
            assert n_before == want_before
            assert got.tolist() == want
        elif kind == "lookup":
            got = idx.lookup(np.array(arg, dtype=np.uint64))
            assert got.dtype == np.int64
            assert got.tolist() == [model.row.get(k, -1) for k in arg]
        elif kind == "compact":
            rng = np.random.default_rng(arg)
            keep = rng.random(idx.n) < 0.6
            kept = idx.compact(keep)
            assert kept.tolist() == model.compact(keep).tolist()
        else:  # a checkpoint restored: rows in the order written (any numbering)
            rng = np.random.default_rng(arg)
            perm = rng.permutation(len(model.order))
            keys = np.array(model.order, dtype=np.uint64)[perm]
            idx = DeviceIndex(max(len(keys), 1))
            rows = idx.load(keys)
            assert rows.tolist() == list(range(len(keys)))
            model = Model()
            model.rows([])
            model.order = keys.tolist()
            model.row = {k: i for i, k in enumerate(model.order)}
        _check_whole(idx, model)


def test_rows_one_batch_several_rehashes_clustered_and_wrapping() -> None:
    """One batch that grows a 16-slot table to 2**17 slots (several doublings), half of its keys
    homed at the table's last slot, each key four times, in shuffled order."""
    rng = np.random.default_rng(7)
    hi = rng.choice(1 << 40, size=30_000, replace=False).astype(np.uint64)
    keys = np.concatenate([(hi[:15_000] << np.uint64(20)) | np.uint64((1 << 20) - 1),
                           rng.integers(0, 2**63, size=15_000, dtype=np.uint64) * np.uint64(2)])
    keys = np.unique(keys)
    batch = np.repeat(keys, 4)
    rng.shuffle(batch)
    idx = DeviceIndex(1)
    got, n_before = idx.rows(batch)
    assert n_before == 0
    order = np.argsort(keys)
    want_row = np.empty(keys.size, dtype=np.int64)
    want_row[order] = np.arange(keys.size)
    assert np.array_equal(got, want_row[np.searchsorted(keys, batch)])
    assert np.array_equal(idx.lookup(keys), want_row)
    absent = (hi[15_000:] << np.uint64(20)) | np.uint64((1 << 20) - 1)
    absent = absent[~np.isin(absent, keys)]
    assert (idx.lookup(absent) == -1).all()
    again, n2 = idx.rows(batch[::-1])
    assert n2 == keys.size and np.array_equal(again, got[::-1])


def test_table_near_full_then_absent_lookups_end() -> None:
    """Fill just under the load limit (no rehash), then look up absent keys that collide."""
    idx = DeviceIndex(1000)
    slots = len(idx._slots)
    limit = int(0.7 * slots)
    keys = np.arange(1, limit + 1, dtype=np.uint64) * np.uint64(slots) + np.uint64(slots - 1)
    got, _ = idx.rows(keys)
    assert len(idx._slots) == slots  # no rehash: the table is as full as it gets
    assert got.tolist() == list(range(limit))
    absent = np.arange(limit + 1, limit + 500, dtype=np.uint64) * np.uint64(slots) + np.uint64(slots - 1)
    assert (idx.lookup(absent) == -1).all()
    assert idx.lookup(keys).tolist() == list(range(limit))
