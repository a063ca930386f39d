"""Stale movers: the daytime slot, the mover counts and the transition shift with its variance."""

from __future__ import annotations

import numpy as np
import pytest

from estimators.estimate import EstimateConfig, tally_state
from estimators.presence import NightWindow, PresenceState
from estimators.routine import (
    AGE_STEP_MS,
    MOVER_FIELDS,
    move_shares,
    mover_rows,
    stayer_codes,
    stayer_columns,
    transition_shift,
    unhoused_codes,
    unhoused_columns,
)
from estimators.tally import ROUTINE_FIELDS, Tally, merge_tallies
from estimators.units import DAY_MS, EPOCH_MS, HOUR_MS, MINUTE_MS

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z (05:00 at UTC+5)
OFFSET_S = 5 * 3600
WINDOW = NightWindow(22, 8, 7)


def _pings(rng: np.random.Generator, n: int, n_dev: int, days: int) -> tuple[np.ndarray, ...]:
    keys = rng.integers(1, 2**63, size=n_dev, dtype=np.uint64)
    dev = keys[rng.integers(0, n_dev, size=n)]
    ts = T0 + rng.integers(0, days * DAY_MS, size=n)
    loc = rng.integers(0, 300, size=n)
    opc = (dev % np.uint64(3)).astype(np.uint8)
    return dev, ts, opc, loc


def _by_key(st: PresenceState, keys: np.ndarray) -> dict[str, np.ndarray]:
    rows, _ = st.index.rows(keys)
    return {"stamp": st.stamp[rows], "day_slot": st.day_slot[rows], "ring": st.ring[rows]}


def test_day_slot_is_the_latest_day_ping_whatever_the_batching() -> None:
    rng = np.random.default_rng(11)
    dev, ts, opc, loc = _pings(rng, 40_000, 1_500, 5)
    loc_region = rng.integers(0, 6, size=300).astype(np.int32)
    a = PresenceState(6, WINDOW)
    a.update(dev, ts, opc, loc, loc_region, OFFSET_S)
    b = PresenceState(6, WINDOW)
    order = rng.permutation(len(dev))
    for part in np.array_split(order, 17):
        b.update(dev[part], ts[part], opc[part], loc[part], loc_region, OFFSET_S)
    b.update(dev[:3000], ts[:3000], opc[:3000], loc[:3000], loc_region, OFFSET_S)  # repeats
    keys = np.unique(dev)
    for name, arr in _by_key(a, keys).items():
        assert np.array_equal(arr, _by_key(b, keys)[name]), name
    # against plain Python: the latest ping in 10:00-16:00 local, its hour and region
    local_h = ((ts // 1000 + OFFSET_S) % 86_400) // 3600
    in_day = (local_h >= 10) & (local_h < 16)
    expect: dict[int, tuple[int, int]] = {}
    for k, t, lc in zip(dev[in_day].tolist(), ts[in_day].tolist(), loc[in_day].tolist(),
                        strict=True):
        cand = ((t - EPOCH_MS) // HOUR_MS, int(loc_region[lc]))
        expect[k] = max(expect.get(k, cand), cand)
    at = T0 + 5 * DAY_MS
    day = a.day_region(at, 10 * DAY_MS)
    rows, _ = a.index.rows(keys)
    for k, r in zip(keys.tolist(), rows.tolist(), strict=True):
        assert day[r] == (expect[k][1] if k in expect else -1)


def test_day_slot_merges_agree_across_the_hour_wrap() -> None:
    """The day slot's merges (by number when nothing wraps, unwrapped in place, and for batches
    spanning 2**14 hours or more) give the latest day ping by event time, for batches before,
    across and after the 2**16-hour wrap of the slot's hour and held slots up to 32 000 hours
    older than the batch."""
    rng = np.random.default_rng(23)
    wrap_h = 1 << 16
    keys = rng.integers(1, 2**63, size=200, dtype=np.uint64)
    spans = [(wrap_h - 20_000, wrap_h - 19_900), (wrap_h - 300, wrap_h - 10),
             (wrap_h - 40, wrap_h + 40), (wrap_h + 10, wrap_h + 300), (wrap_h + 12_000, wrap_h + 12_100)]
    loc_region = rng.integers(0, 5, size=50).astype(np.int64)
    expect: dict[int, tuple[int, int]] = {}
    state = PresenceState(5, WINDOW)
    for lo, hi in spans:
        n = 3000
        dev = keys[rng.integers(0, keys.size, size=n)]
        ts = EPOCH_MS + rng.integers(lo * HOUR_MS, hi * HOUR_MS, size=n)
        loc = rng.integers(0, 50, size=n)
        for part in np.array_split(rng.permutation(n), 3):
            state.update(dev[part], ts[part], np.zeros(part.size, np.uint8), loc[part],
                         loc_region, OFFSET_S)
        local_h = ((ts // 1000 + OFFSET_S) % 86_400) // 3600
        for k, t, lc, d in zip(dev.tolist(), ts.tolist(), loc.tolist(),
                               ((local_h >= 10) & (local_h < 16)).tolist(), strict=True):
            if d:
                cand = ((t - EPOCH_MS) // HOUR_MS, int(loc_region[lc]))
                expect[k] = max(expect.get(k, cand), cand)
        rows, _ = state.index.rows(keys)
        want = [0 if k not in expect else (expect[k][0] % wrap_h) << 16 | (expect[k][1] + 1)
                for k in keys.tolist()]
        assert state.day_slot[rows].tolist() == want, (lo, hi)
    wide = PresenceState(5, WINDOW)  # one batch over 2**14 hours: the sorting merge
    dev = np.repeat(keys[:20], 2)
    noon = [(h // 24) * 24 + 7 for h in (wrap_h - 20_000, wrap_h + 100)]  # 12:00 local
    ts = EPOCH_MS + np.tile(noon, 20) * HOUR_MS
    wide.update(dev, ts, np.zeros(40, np.uint8), np.ones(40, np.int64), loc_region, OFFSET_S)
    rows, _ = wide.index.rows(keys[:20])
    assert (wide.day_slot[rows] >> 16).tolist() == [noon[1] % wrap_h] * 20


def test_day_region_expires_and_ignores_the_future() -> None:
    st = PresenceState(4, WINDOW)
    noon = T0 + 7 * HOUR_MS  # 12:00 local
    st.update(np.array([5], np.uint64), np.array([noon]), np.array([0], np.uint8),
              np.array([2]), np.array([0, 1, 3]), OFFSET_S)
    assert st.day_region(noon + HOUR_MS, DAY_MS)[0] == 3
    assert st.day_region(noon + 2 * DAY_MS, DAY_MS)[0] == -1  # too old
    assert st.day_region(noon - 3 * HOUR_MS, DAY_MS)[0] == -1  # not yet pinged


def test_export_restore_round_trip_keeps_the_day_slot() -> None:
    rng = np.random.default_rng(5)
    dev, ts, opc, loc = _pings(rng, 5_000, 300, 3)
    loc_region = rng.integers(0, 6, size=300).astype(np.int32)
    a = PresenceState(6, WINDOW)
    a.update(dev, ts, opc, loc, loc_region, OFFSET_S)
    b = PresenceState(6, WINDOW)
    b.restore(a.export())
    keys = np.unique(dev)
    assert a.day_slot[: a.n_devices].any()
    for name, arr in _by_key(a, keys).items():
        assert np.array_equal(arr, _by_key(b, keys)[name]), name
    old = {k: v for k, v in a.export().items() if k != "day_slot"}  # an older checkpoint
    c = PresenceState(6, WINDOW)
    c.restore(old)
    assert not c.day_slot.any()
    assert a.day_slot.nbytes == 4 * len(a.day_slot)  # 4 bytes per device row


def _tally(n_home: int, n_day: int, age_steps: int, at_day: bool) -> dict[str, np.ndarray]:
    """Mover rows: home 1, day 2, class 0; fresh ones (age step 0) at home and at work, 100
    more ``age_steps`` 10-minute steps old at work (``at_day``) or at home."""
    rows = {"mover_home": [], "mover_day": [], "mover_at_day": [], "mover_age_10min": [],
            "mover_cls": [], "mover_count": []}
    for where, count in ((0, n_home), (1, n_day)):
        rows["mover_home"].append(1)
        rows["mover_day"].append(2)
        rows["mover_at_day"].append(where)
        rows["mover_age_10min"].append(0)
        rows["mover_cls"].append(0)
        rows["mover_count"].append(count)
    rows["mover_home"].append(1)
    rows["mover_day"].append(2)
    rows["mover_at_day"].append(int(at_day))
    rows["mover_age_10min"].append(age_steps)
    rows["mover_cls"].append(0)
    rows["mover_count"].append(100)
    return {k: np.array(v) for k, v in rows.items()}


class _T:
    def __init__(self, **cols: np.ndarray) -> None:
        self.__dict__.update(cols)


def test_stale_movers_follow_the_fresh_ones_with_the_smallest_flow() -> None:
    # fresh movers: 900 of 1000 at their daytime region; 100 stale ones seen at home 30 min
    # ago, when nobody (of those seen) was at work: 90 % of them move
    t = _T(**_tally(100, 900, 3, at_day=False))
    m, up, _, p_now = move_shares(t, AGE_STEP_MS)
    assert p_now == pytest.approx(0.9)
    assert up[3] and m[3] == pytest.approx(0.9)
    subtree = np.eye(3)
    subtree[0, 1:] = 1  # region 0 is the parent of 1 and 2
    weight = np.full(3, 2.0)
    shift, var = transition_shift(t, weight, subtree, AGE_STEP_MS)
    assert shift.sum() == pytest.approx(0.0)
    assert shift[2] == pytest.approx(0.9 * 100 * 2) and shift[1] == pytest.approx(-180)
    assert var[0] == 0  # the parent holds both candidates
    assert var[1] == var[2] > 100 * 4 * 0.9 * 0.1  # Bernoulli draws plus the error of m
    # everyone fresh is at work and the stale ones were seen there: nobody moves
    t2 = _T(**_tally(0, 1000, 3, at_day=True))
    shift2, var2 = transition_shift(t2, weight, subtree, AGE_STEP_MS)
    assert not shift2.any() and not var2.any()
    # seen at work while 90 % are: 10 % of them go home
    t4 = _T(**_tally(100, 900, 3, at_day=True))
    shift4, _ = transition_shift(t4, weight, subtree, AGE_STEP_MS)
    assert shift4[1] == pytest.approx(0.1 * 100 * 2)
    # young enough to be fresh (30 min < stale_ms 40 min): nothing moves
    shift3, _ = transition_shift(t, weight, subtree, 4 * AGE_STEP_MS)
    assert not shift3.any()


def test_movers_silent_for_half_an_hour_are_replaced_by_default() -> None:
    # the fifth pass of issue 13: with whole-hour buckets a mover seen at home 30 min ago was
    # "fresh", never moved, and counted at home in p_now; in 10-minute steps it is stale
    rows = mover_rows(np.ones(3, bool), np.ones(3, np.int64), np.full(3, 2), np.array([1, 2, 1]),
                      np.array([30, 5, 9]) * MINUTE_MS, np.zeros(3, np.int64))
    assert list(zip(rows["mover_at_day"].tolist(), rows["mover_age_10min"].tolist(),
                    strict=True)) == [(0, 0), (0, 3), (1, 0)]  # rows sorted by key
    m, up, _, p_now = move_shares(_T(**rows), EstimateConfig().stale_ms)
    assert p_now == pytest.approx(0.5)  # the two fresh ones: one at home, one at work
    assert up[3] and m[3] == pytest.approx(0.5)
    assert EstimateConfig().stale_ms == AGE_STEP_MS == 10 * MINUTE_MS
    for bad in (5 * MINUTE_MS, 15 * MINUTE_MS, 0):
        with pytest.raises(ValueError, match="10-minute steps"):
            EstimateConfig(stale_ms=bad)
    assert EstimateConfig(stale_ms=HOUR_MS).stale_ms == HOUR_MS


def test_tallies_of_whole_hour_ages_are_read_in_steps() -> None:
    # a tally written before the 10-minute steps (field mover_age, whole hours) is read as six
    # steps an hour: its first hour stays fresh, as under the rule that wrote it
    t = Tally(at_ms=T0, operators=("a",), present_cell=np.zeros(0, np.uint64),
              present_region=np.zeros(0, np.int32), present_factor_region=np.zeros(0, np.int32),
              present_cls=np.zeros(0, np.uint8), present_count=np.zeros(0, np.int64),
              resident_region=np.zeros(0, np.int32), resident_cls=np.zeros(0, np.uint8),
              resident_count=np.zeros(0, np.int64), n_active=np.zeros(256, np.int64),
              n_present=np.zeros(256, np.int64), n_housed=np.zeros(256, np.int64),
              mover_home=np.array([1, 1, 1], np.int32), mover_day=np.array([2, 2, 2], np.int32),
              mover_at_day=np.array([0, 1, 0], np.uint8),
              mover_age_10min=np.array([0, 1, 50], np.uint8), mover_cls=np.zeros(3, np.uint8),
              mover_count=np.array([4, 5, 6], np.int64))
    with np.load(__import__("io").BytesIO(t.to_bytes())) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["mover_age"] = arrays.pop("mover_age_10min")  # as an older version wrote it
    buf = __import__("io").BytesIO()
    np.savez(buf, **arrays)
    old = Tally.from_bytes(buf.getvalue())
    assert old.mover_age_10min.tolist() == [0, 6, 255]
    assert old.mover_count.tolist() == [4, 5, 6]


def test_mover_rows_count_only_devices_between_home_and_day() -> None:
    cand = np.array([True, True, True, True, False])
    home = np.array([1, 1, 1, 1, 1])
    day = np.array([2, 1, 2, -1, 2])
    here = np.array([1, 1, 3, 1, 2])
    rows = mover_rows(cand, home, day, here, np.array([3, 0, 0, 0, 0]) * HOUR_MS,
                      np.zeros(5, np.int64))
    assert rows["mover_count"].tolist() == [1]
    assert rows["mover_age_10min"].tolist() == [18] and rows["mover_at_day"].tolist() == [0]


@pytest.mark.skipif(MOVER_FIELDS[0] not in Tally.__dataclass_fields__,
                    reason="needs the Tally mover fields (tally.py diff of issue 13)")
def test_mover_counts_of_partitions_add_up() -> None:
    rng = np.random.default_rng(2)
    dev, ts, opc, loc = _pings(rng, 30_000, 1_000, 3)
    # 200 devices never seen at night (no home yet): once in the local day window of the last
    # day (12:00 local), once in the last two hours before ``at`` (07:00-09:00 local)
    new = rng.integers(1, 2**63, size=200, dtype=np.uint64)
    day_ts = T0 + 2 * DAY_MS + 7 * HOUR_MS + rng.integers(0, HOUR_MS, 200)
    late_ts = T0 + 3 * DAY_MS + 2 * HOUR_MS + rng.integers(0, 2 * HOUR_MS, 200)
    dev = np.concatenate([dev, new, new])
    ts = np.concatenate([ts, day_ts, late_ts])
    opc = np.concatenate([opc, (new % np.uint64(3)).astype(np.uint8),
                          (new % np.uint64(3)).astype(np.uint8)])
    loc = np.concatenate([loc, rng.integers(0, 300, 400)])
    loc_region = rng.integers(0, 4, size=300).astype(np.int32)
    cells = np.arange(300, dtype=np.uint64) + np.uint64(1 << 40)
    at = T0 + 3 * DAY_MS + 4 * HOUR_MS
    whole = PresenceState(4, WINDOW)
    whole.update(dev, ts, opc, loc, loc_region, OFFSET_S)
    parts = []
    for p in range(3):
        sel = (dev % np.uint64(3)) == p
        st = PresenceState(4, WINDOW)
        st.update(dev[sel], ts[sel], opc[sel], loc[sel], loc_region, OFFSET_S)
        parts.append(tally_state(st, cells, loc_region, ("a", "b", "c"), at, OFFSET_S,
                                 EstimateConfig()))
    one = tally_state(whole, cells, loc_region, ("a", "b", "c"), at, OFFSET_S,
                      EstimateConfig()).canonical()
    merged = merge_tallies(parts)
    assert one.mover_count.sum() > 0
    assert one.stayer_count.sum() > 0 and one.unhoused_count.sum() > 0
    for f in ROUTINE_FIELDS:
        assert np.array_equal(getattr(one, f), getattr(merged, f)), f
    again = Tally.from_bytes(merged.to_bytes())
    for f in ROUTINE_FIELDS:
        assert np.array_equal(getattr(again, f), getattr(merged, f)), f


def test_tally_with_movers_is_batch_split_invariant() -> None:
    rng = np.random.default_rng(8)
    dev, ts, opc, loc = _pings(rng, 30_000, 800, 3)
    loc_region = rng.integers(0, 4, size=300).astype(np.int32)
    cells = np.arange(300, dtype=np.uint64) + np.uint64(1 << 40)
    at = T0 + 3 * DAY_MS + 4 * HOUR_MS
    a, b = PresenceState(4, WINDOW), PresenceState(4, WINDOW)
    a.update(dev, ts, opc, loc, loc_region, OFFSET_S)
    order = np.argsort(-ts, kind="stable")  # newest first, in 9 batches
    for part in np.array_split(order, 9):
        b.update(dev[part], ts[part], opc[part], loc[part], loc_region, OFFSET_S)
    cfg = EstimateConfig()
    ta = tally_state(a, cells, loc_region, ("a", "b", "c"), at, OFFSET_S, cfg).canonical()
    tb = tally_state(b, cells, loc_region, ("a", "b", "c"), at, OFFSET_S, cfg).canonical()
    for f in ("present_cell", "present_region", "present_count", "resident_count",
              *ROUTINE_FIELDS):
        assert np.array_equal(getattr(ta, f), getattr(tb, f)), f


def test_transition_model_error_scales_with_the_people_moved() -> None:
    # 90 % of 100 stale movers of weight 2 move from region 1 to region 2 (180 people): the
    # model term adds (rse * 180)^2 to both leaves, nothing to the parent holding both
    t = _T(**_tally(100, 900, 3, at_day=False))
    subtree = np.eye(3)
    subtree[0, 1:] = 1
    weight = np.full(3, 2.0)
    shift, var0 = transition_shift(t, weight, subtree, AGE_STEP_MS)
    shift_m, var_m = transition_shift(t, weight, subtree, AGE_STEP_MS, model_rse=0.5)
    np.testing.assert_array_equal(shift, shift_m)  # the term widens, it never moves anyone
    assert var_m[0] == var0[0] == 0
    assert var_m[1] - var0[1] == pytest.approx((0.5 * 180) ** 2)
    assert var_m[2] - var0[2] == pytest.approx((0.5 * 180) ** 2)
    # nobody moves: no model term either
    t2 = _T(**_tally(0, 1000, 3, at_day=True))
    _, var2 = transition_shift(t2, weight, subtree, AGE_STEP_MS, model_rse=0.5)
    assert not var2.any()


def test_transition_rse_must_not_be_negative() -> None:
    from estimators.estimate import EstimateConfig

    assert EstimateConfig().transition_rse > 0
    with pytest.raises(ValueError, match="model error"):
        EstimateConfig(transition_rse=-0.1)


def _with_unhoused(base: dict[str, np.ndarray], here: int, day: int, age_steps: int,
                   count: int, stayers: int) -> _T:
    """``base`` mover rows plus ``count`` devices without a home (seen at ``here``, daytime
    region ``day``) and ``stayers`` housed devices of home = daytime region 2 seen there, all
    ``age_steps`` old."""
    u = unhoused_columns(np.repeat(unhoused_codes(
        np.array([here]), np.array([day]), np.array([age_steps * AGE_STEP_MS]),
        np.array([0])), count))
    st = stayer_columns(np.repeat(stayer_codes(np.array([2]), np.array([2]), np.array([2]),
                                               np.array([age_steps * AGE_STEP_MS])), stayers))
    return _T(**base, **u, **st)


def test_devices_without_a_home_move_like_the_movers_seen_where_they_are() -> None:
    subtree = np.eye(3)
    subtree[0, 1:] = 1
    weight = np.full(3, 2.0)
    # morning: 90 % of fresh movers at work, the stale ones were at home -> m = 0.9; 50
    # devices without a home, of weight 3, seen in region 1 with daytime region 2: 90 % go
    t = _with_unhoused(_tally(100, 900, 3, at_day=False), here=1, day=2, age_steps=3, count=50,
                       stayers=0)
    base, _ = transition_shift(t, weight, subtree, AGE_STEP_MS)
    shift, var = transition_shift(t, weight, subtree, AGE_STEP_MS,
                                  unhoused_weight=np.full(1, 3.0))
    assert shift.sum() == pytest.approx(0.0)
    assert shift[2] - base[2] == pytest.approx(0.9 * 50 * 3)
    # evening: fresh movers 10 % at work, the stale ones (100) were at work -> m = 0.9;
    # 40 devices without a home seen at their daytime region 2, where 300 housed devices of
    # the same age live and work: of the 400 housed devices seen there, 100 are movers (homes:
    # region 1), so a quarter of the 40, times m, go to region 1
    t = _with_unhoused(_tally(900, 100, 3, at_day=True), here=2, day=2, age_steps=3, count=40,
                       stayers=300)
    base, base_var = transition_shift(t, weight, subtree, AGE_STEP_MS)
    shift, var = transition_shift(t, weight, subtree, AGE_STEP_MS,
                                  unhoused_weight=np.full(1, 3.0))
    assert shift[1] - base[1] == pytest.approx(0.9 * 0.25 * 40 * 3)
    assert shift[2] - base[2] == pytest.approx(-0.9 * 0.25 * 40 * 3)
    assert var[1] > base_var[1] and var[0] == base_var[0] == 0
    # seen away from the daytime region in the evening: already home, nothing moves
    t = _with_unhoused(_tally(900, 100, 3, at_day=True), here=1, day=2, age_steps=3, count=40,
                       stayers=300)
    base, _ = transition_shift(t, weight, subtree, AGE_STEP_MS)
    shift, _ = transition_shift(t, weight, subtree, AGE_STEP_MS, unhoused_weight=np.full(1, 3.0))
    np.testing.assert_array_equal(shift, base)


def test_unhoused_and_stayer_codes_pick_their_devices() -> None:
    here, day = np.array([1, 1, 2, 3]), np.array([2, -1, 2, 3])
    u = unhoused_columns(unhoused_codes(here, day, np.array([0, 0, 25, 5]) * MINUTE_MS,
                                        np.zeros(4, np.int64)))
    assert list(zip(u["unhoused_here"].tolist(), u["unhoused_day"].tolist(),
                    u["unhoused_age_10min"].tolist(), strict=True)) == [(1, 2, 0), (2, 2, 2),
                                                                        (3, 3, 0)]
    home = np.array([2, 2, 3, 3])
    s = stayer_columns(stayer_codes(home, np.array([2, 2, 3, 1]), np.array([2, 1, 3, 3]),
                                    np.array([0, 0, 70, 0]) * MINUTE_MS))
    assert s["stayer_region"].tolist() == [2, 3] and s["stayer_age_10min"].tolist() == [0, 7]
