"""Device index and presence state: correctness against plain Python, order independence."""

from __future__ import annotations

import numpy as np

from estimators.device_index import DeviceIndex
from estimators.presence import NightWindow, PresenceState, night_of
from estimators.units import DAY_MS

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z


def test_index_matches_a_dict_through_growth_and_duplicates() -> None:
    rng = np.random.default_rng(3)
    idx = DeviceIndex(capacity=4)
    reference: dict[int, int] = {}
    universe = rng.integers(1, 2**64 - 1, size=5000, dtype=np.uint64)
    for _ in range(30):
        keys = universe[rng.integers(0, len(universe), size=rng.integers(1, 700))]
        rows, n_before = idx.rows(keys)
        for k, r in zip(keys.tolist(), rows.tolist(), strict=True):
            assert reference.setdefault(k, r) == r
        assert idx.n == len(reference)
        assert np.array_equal(np.unique(rows[rows >= n_before]), np.arange(n_before, idx.n))
        assert np.array_equal(idx.keys[rows], keys)
    assert sorted(reference.values()) == list(range(len(reference)))


def test_rows_number_new_keys_by_key_whatever_the_order_and_slot_layout() -> None:
    """A batch's new keys get rows in ascending key order, whatever their order in the batch,
    their repeats and the slot layout (a long chain of keys sharing their low bits, a table
    that grows in the middle of the batch)."""
    rng = np.random.default_rng(11)
    held = rng.integers(1, 2**63, size=40, dtype=np.uint64)
    new = np.concatenate([rng.integers(1, 2**40, size=300, dtype=np.uint64) << np.uint64(20),
                          rng.integers(1, 2**63, size=300, dtype=np.uint64)])
    new = np.unique(new[~np.isin(new, held)])
    for seed in range(3):
        idx = DeviceIndex(capacity=4)
        idx.rows(held[np.random.default_rng(seed).permutation(held.size)])
        batch = np.concatenate([new, new[::3], held[:5]])
        batch = batch[np.random.default_rng(seed).permutation(batch.size)]
        rows, n_before = idx.rows(batch)
        assert n_before == held.size and rows.dtype == np.int64
        assert np.array_equal(idx.keys[rows], batch)
        assert np.array_equal(idx.lookup(new), np.arange(held.size, held.size + new.size))


def test_lookup_finds_held_keys_and_only_those_through_probe_chains() -> None:
    """Keys sharing their low bits (long probe chains), repeated, absent and present: ``lookup``
    gives each held key's row and -1 otherwise, and inserts nothing."""
    rng = np.random.default_rng(5)
    idx = DeviceIndex(capacity=64)
    held = np.concatenate([rng.integers(1, 2**40, size=300, dtype=np.uint64) << np.uint64(20),
                           rng.integers(1, 2**63, size=300, dtype=np.uint64)])
    rows, _ = idx.rows(held)
    absent = np.concatenate([rng.integers(1, 2**40, size=300, dtype=np.uint64) << np.uint64(20),
                             np.zeros(1, dtype=np.uint64)])
    absent = absent[~np.isin(absent, held)]
    query = np.concatenate([held, absent, held[::-7]])
    want = np.concatenate([rows, np.full(absent.size, -1), rows[::-7]]).astype(np.int64)
    n = idx.n
    order = rng.permutation(query.size)
    got = idx.lookup(query[order])
    assert got.dtype == np.int64 and np.array_equal(got, want[order])
    assert idx.n == n


def test_insert_numbers_new_keys_in_order_and_lookup_finds_them_through_growth() -> None:
    """Keys inserted in batches (sharing low bits, so they race for slots and probe far) get
    rows in their order and are all found again, through the table's growth."""
    rng = np.random.default_rng(9)
    idx = DeviceIndex(capacity=4)
    keys = np.unique(np.concatenate([rng.integers(1, 2**40, size=2000, dtype=np.uint64)
                                     << np.uint64(24),
                                     rng.integers(1, 2**63, size=2000, dtype=np.uint64)]))
    keys = keys[rng.permutation(keys.size)]
    for lo in range(0, keys.size, 611):
        rows = idx.insert(keys[lo:lo + 611])
        assert np.array_equal(rows, np.arange(lo, min(lo + 611, keys.size)))
        assert np.array_equal(idx.lookup(keys[:lo + 611]), np.arange(min(lo + 611, keys.size)))
    assert idx.n == keys.size and (idx.lookup(keys + np.uint64(1)) == -1).sum() > 0.9 * keys.size


def _random_pings(rng: np.random.Generator, n: int, n_dev: int, days: int
                  ) -> tuple[np.ndarray, ...]:
    keys = rng.integers(1, 2**63, size=n_dev, dtype=np.uint64)
    dev = keys[rng.integers(0, n_dev, size=n)]
    ts = T0 + rng.integers(0, days * DAY_MS, size=n)
    loc = rng.integers(0, 300, size=n)
    opc = (dev % np.uint64(3)).astype(np.uint8)
    return dev, ts, opc, loc


def _state_by_key(st: PresenceState, keys: np.ndarray, night_now: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    rows, _ = st.index.rows(keys)
    return st.stamp[rows], st.home_region(night_now)[rows]


def test_state_is_independent_of_order_batching_and_repetition() -> None:
    rng = np.random.default_rng(7)
    dev, ts, opc, loc = _random_pings(rng, 60_000, 2_000, 10)
    loc_region = rng.integers(0, 6, size=300).astype(np.int32)
    window = NightWindow(22, 8, 7)
    a = PresenceState(6, window)
    a.update(dev, ts, opc, loc, loc_region, 18_000)
    b = PresenceState(6, window)
    order = rng.permutation(len(dev))
    for part in np.array_split(order, 13):
        b.update(dev[part], ts[part], opc[part], loc[part], loc_region, 18_000)
    b.update(dev[:5000], ts[:5000], opc[:5000], loc[:5000], loc_region, 18_000)
    keys = np.unique(dev)
    _, nights, _ = night_of(ts, 18_000, window)
    for night_now in range(int(nights.min()), int(nights.max()) + 2):
        sa, ha = _state_by_key(a, keys, night_now)
        sb, hb = _state_by_key(b, keys, night_now)
        assert np.array_equal(sa, sb)
        assert np.array_equal(ha, hb)


def test_last_ping_wins_and_home_is_the_modal_night_region() -> None:
    window = NightWindow(22, 8, 7)
    st = PresenceState(4, window)
    key = np.array([42], dtype=np.uint64)
    loc_region = np.array([0, 1, 2, 3], dtype=np.int32)
    # 23:00 local (UTC+5) = 18:00 UTC; nights 1-3 in region 1, night 4 in region 2, day pings in 3
    for day, loc in [(0, 1), (1, 1), (2, 1), (3, 2)]:
        t = np.array([T0 + day * DAY_MS + 18 * 3_600_000])
        st.update(key, t, np.array([0], np.uint8), np.array([loc]), loc_region, 18_000)
    day_ping = np.array([T0 + 4 * DAY_MS + 7 * 3_600_000])  # 12:00 local
    st.update(key, day_ping, np.array([0], np.uint8), np.array([3]), loc_region, 18_000)
    ts, loc = st.last_seen()
    assert ts[0] == day_ping[0] and loc[0] == 3
    _, night, _ = night_of(day_ping, 18_000, window)
    assert st.home_region(int(night[0]))[0] == 1
    # seven nights later the old nights have aged out: nothing left, no home
    assert st.home_region(int(night[0]) + 8)[0] == -1
    # an out-of-date ping (older than the ring) changes nothing
    before = st.ring.copy()
    old = np.array([T0 - 30 * DAY_MS + 18 * 3_600_000])
    st.update(key, old, np.array([0], np.uint8), np.array([0]), loc_region, 18_000)
    assert np.array_equal(before, st.ring)
    assert st.last_seen()[0][0] == day_ping[0]


def test_state_stays_compact() -> None:
    rng = np.random.default_rng(1)
    st = PresenceState(30, NightWindow())
    keys = rng.integers(1, 2**63, size=200_000, dtype=np.uint64)
    ts = T0 + rng.integers(0, DAY_MS, size=len(keys))
    st.update(keys, ts, np.zeros(len(keys), np.uint8), np.zeros(len(keys), np.int64),
              np.zeros(1, np.int32), 18_000)
    assert st.n_devices == 200_000
    assert st.nbytes / st.n_devices <= 64


def test_siphash24_matches_the_reference_implementation() -> None:
    import siphashc

    from estimators.pseudonym import device_keys, siphash24

    key = bytes(range(16))
    assert int(siphash24(key, np.array([bytes(range(15))]))[0]) == 0xA129CA6149BE45E5  # paper
    rng = np.random.default_rng(4)
    msgs = np.array([rng.bytes(int(n)).rstrip(b"\x00") for n in rng.integers(0, 70, 3000)],
                    dtype=np.bytes_)
    assert [int(h) for h in siphash24(key, msgs)] == [siphashc.siphash(key, m) for m in msgs.tolist()]
    same = device_keys(np.array(["40101", "40101"]), np.array(["dévice", "dévice"]), b"s" * 32)
    assert same[0] == same[1] == device_keys(np.array([b"40101"]), np.array(["dévice".encode()]),
                                             b"s" * 32)[0]


def test_a_longer_ring_keeps_residence_and_restores_a_shorter_one() -> None:
    rng = np.random.default_rng(11)
    dev, ts, opc, loc = _random_pings(rng, 40_000, 1_500, 30)
    loc_region = rng.integers(0, 6, size=300).astype(np.int32)
    window = NightWindow(22, 8, 7)
    short = PresenceState(6, window)
    short.update(dev, ts, opc, loc, loc_region, 18_000)
    long = PresenceState(6, window, ring_nights=28)
    long.update(dev, ts, opc, loc, loc_region, 18_000)
    restored = PresenceState(6, window, ring_nights=28)
    restored.restore(short.export())  # a checkpoint of the 7-night ring
    keys = np.unique(dev)
    _, nights, _ = night_of(ts, 18_000, window)
    # as the engine asks: for the current night (no ping of a later night ingested), and later
    for night_now in range(int(nights.max()), int(nights.max()) + 9):
        _, h_short = _state_by_key(short, keys, night_now)
        _, h_long = _state_by_key(long, keys, night_now)
        _, h_restored = _state_by_key(restored, keys, night_now)
        assert np.array_equal(h_short, h_long) and np.array_equal(h_short, h_restored)
    votes = long.night_votes(int(nights.max()), 28)
    assert (votes.seen > 7).any() and (votes.nights <= votes.seen).all()
    assert ((votes.first >= 0) == (votes.region >= 0)).all()
