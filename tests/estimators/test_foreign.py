"""Stays of foreign SIMs, night by night: arrivals, departures, nights, classes, flags, stock
revisions; order, batch, partition and checkpoint independence; the published figures."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estimators.engine import Engine, EngineConfig
from estimators.foreign import (
    ALL,
    CLASSES,
    CUBE_FIELDS,
    OTHER,
    PLANE_FIELDS,
    CountryFactor,
    ForeignConfig,
    ForeignFigureConfig,
    ForeignPeriod,
    ForeignState,
    ForeignTally,
    ZoneClock,
    _rollup,
    estimate_foreign,
    fit_country_factors,
    merge_foreign,
    shown_countries,
    stay_class,
)
from estimators.mcc import CountryTable
from estimators.migration import period_nights, period_of
from estimators.regions import regions_from_geojson
from estimators.units import DAY_MS, HOUR_MS

TABLE = CountryTable.from_pairs([401, 434, 437, 250, 310, 311, 460],
                                ["KZ", "UZ", "KG", "RU", "US", "US", "CN"])
DAY0 = 1_772_409_600_000 // DAY_MS  # 2026-03-02, a Monday (local date, Asia/Almaty UTC+5)
OFFSET_S = 5 * 3600
N_REGIONS = 4
UZ, RU, US = TABLE.countries.index("UZ"), TABLE.countries.index("RU"), TABLE.countries.index("US")


def ts(day: float, hour: float) -> int:
    """UTC ms of local ``hour`` (may exceed 24) on day ``day`` after 2026-03-02."""
    return int((DAY0 + day) * DAY_MS + (hour - 5) * HOUR_MS)


def state(config: ForeignConfig | None = None, record: bool = True) -> ForeignState:
    return ForeignState(N_REGIONS, TABLE, ZoneClock("Asia/Almaty"), config, record=record)


def feed(s: ForeignState, pings: list[tuple[int, int, int, int]], until_ms: int | None = None,
         chunk: int = 1_000_000) -> None:
    """Ingest (device, ts, mcc, region) rows in time order, ``chunk`` at a time, then evaluate
    the nights closed by ``until_ms``."""
    rows = np.array(sorted(pings, key=lambda p: p[1]), dtype=np.int64).reshape(-1, 4)
    for lo in range(0, len(rows), chunk):
        c = rows[lo:lo + chunk]
        s.ingest(c[:, 0].astype(np.uint64), c[:, 1], c[:, 2], c[:, 3], OFFSET_S)
    if until_ms is not None:
        s.evaluate_until(until_ms)


def month(s: ForeignState | ForeignTally, label: str) -> ForeignPeriod:
    t = s.tally() if isinstance(s, ForeignState) else s
    return next(p for p in t.periods if p.kind == "month" and p.label == label)


def test_stay_classes_by_nights() -> None:
    assert stay_class(np.array([0, 1, 29, 30, 89, 90, 400])).tolist() == [0, 1, 1, 2, 2, 3, 3]
    assert CLASSES == ("same_day", "short", "medium", "long")


def test_a_day_trip_is_a_same_day_stay_dated_and_final_72h_later() -> None:
    s = state()
    feed(s, [(1, ts(0, 9), 434, 1), (1, ts(0, 18), 434, 2)])
    s.evaluate_until(ts(3, 17))  # 71 h after the last ping: still here as far as we know
    assert s.events()["departure"]["key"].size == 0
    m = month(s, "2026-03")
    assert m.arrivals[UZ].tolist() == [0, 0, 1, 0]  # the region of the day's latest ping
    assert m.stock.sum() == 1 and m.nights.sum() == 3  # provisional: nights 0, 1 and 2
    s.evaluate_until(ts(4, 7))  # night 3 closes more than 72 h after the last ping
    dep = s.events()["departure"]
    assert dep["day"].tolist() == [DAY0] and dep["nights"].tolist() == [0]
    assert dep["detected"].tolist() == [DAY0 + 3]
    m = month(s, "2026-03")
    assert m.departures[UZ, 2].tolist() == [1, 0, 0, 0]
    assert m.stock.sum() == 0 and m.nights.sum() == 0  # the provisional nights are taken back
    assert not m.balance_error().any()


def test_nights_count_when_the_phone_is_quiet_at_night() -> None:
    """Seen every afternoon for 10 days, never at night: 9 nights spent, 0 seen."""
    s = state()
    feed(s, [(2, ts(d, 14), 250, 3) for d in range(10)], until_ms=ts(20, 12))
    dep = s.events()["departure"]
    assert dep["nights"].tolist() == [9] and dep["seen"].tolist() == [0]
    m = month(s, "2026-03")
    assert m.nights[RU, 3].tolist() == [0, 9, 0, 0]
    assert m.departures[RU, 3, 1] == 1


def test_72_hours_of_silence_split_stays() -> None:
    s = state()
    pings = [(3, ts(0, 12), 434, 0), (3, ts(3, 11.99), 434, 0),  # 71.99 h: the same stay
             (3, ts(6, 12), 434, 1)]                               # 72.01 h: a new one
    feed(s, pings, until_ms=ts(12, 12))
    ev = s.events()
    assert ev["arrival"]["day"].tolist() == [DAY0, DAY0 + 6]
    assert ev["departure"]["day"].tolist() == [DAY0 + 3, DAY0 + 6]
    assert ev["departure"]["nights"].tolist() == [3, 0]
    assert ev["departure"]["detected"].tolist() == [DAY0 + 6, DAY0 + 9]
    exactly = state()
    feed(exactly, [(3, ts(0, 12), 434, 0), (3, ts(3, 12), 434, 0)], until_ms=ts(9, 12))
    assert exactly.events()["arrival"]["key"].size == 2  # >= 72 h starts a stay


def test_region_of_stay_is_the_modal_night_region_of_this_stay() -> None:
    s = state()
    first = [(4, ts(d, 23), 434, 1) for d in range(5)]  # a first stay in region 1
    second = ([(4, ts(d, 23), 434, 2) for d in range(10, 15)]
              + [(4, ts(d, 23), 434, 3) for d in range(15, 18)]
              + [(4, ts(d, 13), 434, 0) for d in range(18, 22)])  # days in region 0
    feed(s, first + second, until_ms=ts(30, 12))
    dep = s.events()["departure"]
    assert dep["region"].tolist() == [1, 2]  # not 1: the first stay's nights are forgotten
    assert dep["seen"].tolist() == [5, 8]


def test_classes_flags_and_stock_night_by_night() -> None:
    """A SIM seen every night for 200 nights: its class and flags in the open week's stock."""
    s = state()
    pings = [(5, ts(d, 23), 460, 2) for d in range(200)]
    rows = np.array(pings, dtype=np.int64)
    cn = TABLE.countries.index("CN")
    for d in range(200):
        s.ingest(rows[d:d + 1, 0].astype(np.uint64), rows[d:d + 1, 1], rows[d:d + 1, 2],
                 rows[d:d + 1, 3], OFFSET_S)
        s.evaluate_until(ts(d + 1, 7))
        week = next(p for p in s.tally().periods  # the week of night d: its stock as of d
                    if p.kind == "week" and p.number == period_of(DAY0 + d, "week"))
        nights = d + 1
        assert week.stock[cn, 2].tolist() == np.eye(4, dtype=int)[stay_class(nights)].tolist()
        assert week.long_stay[cn, 2] == (nights >= 90)
        assert week.usual_resident[cn, 2] == (nights >= 183)


def test_flags_count_nights_across_stays() -> None:
    """Two 50-night stays 10 nights apart: 100 of the last 180 nights, long-stay flagged."""
    s = state()
    pings = ([(6, ts(d, 23), 434, 0) for d in range(50)]
             + [(6, ts(d, 23), 434, 0) for d in range(60, 110)])
    feed(s, pings, until_ms=ts(110, 7))
    week = s.tally().published()["week"]
    assert week.stock[UZ, 0, 2] == 1  # medium: 50 nights in this stay
    assert week.long_stay[UZ, 0] == 1 and week.usual_resident[UZ, 0] == 0


def test_a_departure_at_a_period_end_revises_its_stock_and_flags() -> None:
    """Seen every night through 31 March (90+ nights), then silent: counted in March's end
    stock and long-stay flag at first, taken out when the departure is known."""
    s = state()
    first = -60  # 1 January
    last = period_nights("month", period_of(DAY0, "month"))[1] - DAY0  # 31 March
    feed(s, [(7, ts(d, 23), 434, 1) for d in range(first, last + 1)], until_ms=ts(last + 1, 7))
    m = month(s, "2026-03")
    assert m.closed and not m.settled
    assert m.stock[UZ, 1, 3] == 1 and m.long_stay[UZ, 1] == 1
    s.evaluate_until(ts(last + 6, 7))
    m, april = month(s, "2026-03"), month(s, "2026-04")
    assert m.settled
    assert m.stock.sum() == 0 and m.long_stay.sum() == 0
    assert m.departures[UZ, 1, 3] == 1 and m.nights.sum() == 31
    assert april.start_stock.sum() == 0 and april.nights.sum() == 0
    assert not m.balance_error().any() and not april.balance_error().any()


def test_a_stay_going_on_past_a_period_end_is_in_its_final_stock() -> None:
    s = state()
    last = period_nights("month", period_of(DAY0, "month"))[1] - DAY0
    feed(s, [(8, ts(d, 13), 250, 0) for d in range(last - 3, last + 2)], until_ms=ts(last + 9, 7))
    m, april = month(s, "2026-03"), month(s, "2026-04")
    assert m.settled and m.stock[RU, 0, 1] == 1  # 4 nights through 31 March: short
    assert april.start_stock[RU] == 1 and april.departures[RU, 0, 1] == 1
    assert not april.balance_error().any()


def test_nights_must_be_evaluated_in_order() -> None:
    s = state()
    s.evaluate(100)
    with pytest.raises(ValueError, match="evaluated after"):
        s.evaluate(100)
    with pytest.raises(ValueError, match="evaluated after"):
        s.evaluate(102)
    with pytest.raises(ValueError, match="region outside"):
        s.update(np.array([1], dtype=np.uint64), np.array([ts(0, 1)]), np.array([434]),
                 np.array([N_REGIONS]), OFFSET_S)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"gap_h": 0}, "gap"), ({"gap_h": float("nan")}, "gap"), ({"region_nights": 0}, "region"),
    ({"visa": (91, 90)}, "visa flag"), ({"resident": (183, 400)}, "resident flag"),
])
def test_bad_stay_rules_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ForeignConfig(**kwargs)
    with pytest.raises(ValueError, match="regions"):
        ForeignState(0, TABLE, ZoneClock("Asia/Almaty"))
    with pytest.raises(ValueError, match="k"):
        ForeignFigureConfig(k=0)


def test_zone_clock_closes_nights_like_the_engine(regions_doc: dict[str, Any]) -> None:
    engine = Engine(regions_from_geojson(regions_doc), EngineConfig(timezone="Europe/Berlin"))
    clock = ZoneClock("Europe/Berlin")
    for night in range(DAY0 - 40, DAY0 + 250, 7):  # across both daylight-saving changes
        assert clock.close_ms(night) == engine.night_close_ms(night)


# ---- determinism: order, batches, partitions, restarts ----

def _random_pings(seed: int, devices: int = 12, days: int = 50) -> list[tuple[int, int, int, int]]:
    """Visits with gaps of all lengths, pings at any hour, same-ms duplicates."""
    rng = np.random.default_rng(seed)
    out = []
    mccs = [434, 437, 250, 310, 311, 460, 999]
    for dev in range(devices):
        mcc = mccs[dev % len(mccs)]
        t = rng.uniform(0, 5)
        while t < days:
            stay = rng.choice([0.3, 2.0, 8.0, 40.0])
            end = t + rng.uniform(0, stay)
            for when in np.sort(rng.uniform(t, max(end, t + 0.01), rng.integers(1, 40))):
                out.append((dev, ts(when, 0), mcc, int(rng.integers(0, N_REGIONS))))
            out.append(out[-1])  # a duplicate
            t = end + rng.choice([0.5, 2.9, 3.1, 6.0])
    return out


def _run_chunked(pings: list[tuple[int, int, int, int]], cuts: list[int], rng: np.random.Generator,
                 until: int) -> ForeignState:
    """Ingest time-ordered pings cut at ``cuts``, each part shuffled (batches are unordered)."""
    s = state()
    rows = np.array(sorted(pings, key=lambda p: p[1]), dtype=np.int64)
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(rows)}), len(rows)]
    for lo, hi in itertools.pairwise(bounds):
        part = rows[lo:hi][rng.permutation(hi - lo)]
        s.ingest(part[:, 0].astype(np.uint64), part[:, 1], part[:, 2], part[:, 3], OFFSET_S)
        if rng.random() < 0.3:  # a tally in between evaluates the nights closed by then
            s.evaluate_until(int(part[:, 1].max()))
    s.evaluate_until(until)
    return s


def _same(a: ForeignTally, b: ForeignTally) -> None:
    assert [(p.kind, p.number) for p in a.periods] == [(p.kind, p.number) for p in b.periods]
    for p, q in zip(a.periods, b.periods, strict=True):
        assert p.to_arrays("x").keys() == q.to_arrays("x").keys()
        for k, v in p.to_arrays("x").items():
            assert np.array_equal(v, q.to_arrays("x")[k]), (p.label, k)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(0, 4000), max_size=12),
       shuffle_seed=st.integers(0, 10_000))
def test_results_depend_on_the_set_of_pings_only(seed: int, cuts: list[int], shuffle_seed: int) -> None:
    pings = _random_pings(seed)
    until = ts(60, 7)
    one = _run_chunked(pings, [], np.random.default_rng(0), until)
    other = _run_chunked(pings, cuts, np.random.default_rng(shuffle_seed), until)
    _same(one.tally(), other.tally())
    for p in one.tally().periods:
        assert not p.balance_error().any(), p.label


def test_partitions_add_up_and_checkpoints_resume() -> None:
    pings = _random_pings(7, devices=30, days=70)
    until = ts(80, 7)
    whole = state()
    feed(whole, pings, until_ms=until, chunk=500)
    parts = [state(), state()]
    for i, part in enumerate(parts):
        feed(part, [p for p in pings if p[0] % 2 == i], until_ms=until, chunk=333)
    _same(whole.tally(), merge_foreign([p.tally() for p in parts]))
    # a restart halfway through: export, restore into a new state, go on
    rows = sorted(pings, key=lambda p: p[1])
    half = len(rows) // 2
    before = state(record=False)
    feed(before, rows[:half], chunk=700)
    saved = before.export()
    after = state(record=False)
    after.restore({k: v.copy() for k, v in saved.items()})
    feed(after, rows[half:], until_ms=until, chunk=900)
    _same(whole.tally(), after.tally())
    # tallies round-trip through their arrays, and only merge over one country table
    t = whole.tally()
    _same(t, ForeignTally.from_arrays(t.to_arrays()))  # type: ignore[arg-type]
    assert ForeignTally.from_arrays({}) is None
    with pytest.raises(ValueError, match="country tables"):
        merge_foreign([t, ForeignTally(("XX",), [])])
    other = ForeignState(N_REGIONS, CountryTable.from_pairs([250], ["RU"]), ZoneClock("Asia/Almaty"))
    with pytest.raises(ValueError, match="another MCC table"):
        other.restore(saved)


def test_state_size_per_sim_and_eviction() -> None:
    """Day-trippers are forgotten once their nights in stays are out of the 384-night record;
    one that comes back is an arrival as it would have been."""
    s = state(record=False)
    pings = [(d, ts(0, 12), 434, 0) for d in range(20_000)]
    feed(s, pings, until_ms=ts(1, 7))
    per_sim = s.nbytes / s.n_devices
    assert per_sim < 200, per_sim
    s.evaluate_until(ts(3, 7))
    assert s.n_devices == 20_000  # still here, as far as anyone knows
    s.evaluate_until(ts(4, 7))
    assert s.n_devices == 0  # left: nights 0-2 were counted, then taken back, none spent
    keep = state(record=False)
    feed(keep, pings + [(20_000, ts(0, 23), 434, 1)], until_ms=ts(300, 7))
    assert keep.n_devices == 1  # spent the night of 2 March
    keep.evaluate_until(ts(400, 7))
    assert keep.n_devices == 0  # that night is out of the record
    back = [(7, ts(420, 12), 434, 2)]
    feed(s, back, until_ms=ts(430, 7))
    fresh = state(record=False)
    feed(fresh, back, until_ms=ts(430, 7))
    mine = {(p.kind, p.number): p for p in s.tally().periods}
    common = [p for p in fresh.tally().periods if (p.kind, p.number) in mine]
    assert len(common) >= 2
    for p in common:
        q = mine[(p.kind, p.number)]
        for name in ("arrivals", "departures", "stock", "nights", "start_stock"):
            assert np.array_equal(getattr(p, name), getattr(q, name)), (p.label, name)
    assert month(s, "2027-04").arrivals.sum() == 1


# ---- figures ----

def _period(counts: dict[str, dict[tuple[int, ...], int]], n_regions: int = 5) -> ForeignPeriod:
    """A March ledger (30 nights evaluated) over the fixture's 5 regions."""
    p = ForeignPeriod("month", period_of(DAY0, "month"), len(TABLE.countries), n_regions,
                      last_night=DAY0 + 29, first_night=DAY0 - 1)
    for name, cells in counts.items():
        for idx, v in cells.items():
            getattr(p, name)[idx] = v
    return p


def _regions(regions_doc: dict[str, Any]) -> Any:
    return regions_from_geojson(regions_doc)


def test_small_countries_roll_into_other_before_the_k_test(regions_doc: dict[str, Any]) -> None:
    regions = _regions(regions_doc)
    north, south = regions.index["north"], regions.index["south"]
    kg, cn = TABLE.countries.index("KG"), TABLE.countries.index("CN")
    p = _period({"arrivals": {(UZ, north): 200, (UZ, south): 40, (kg, north): 9, (cn, north): 8,
                              (RU, south): 90}})
    est = estimate_foreign(p, TABLE.countries, regions, config=ForeignFigureConfig(top_countries=1))
    assert est.countries == ("UZ", OTHER, ALL)
    arr = est.figures["arrivals"].devices
    other, total = est.countries.index(OTHER), est.countries.index(ALL)
    assert arr[other, north] == 17 and arr[other, south] == 90  # KG + CN together pass k
    assert arr[0, regions.index["city"]] == 240  # parents are subtree sums
    assert arr[total, -1] == 347
    assert np.isnan(est.figures["arrivals"].people).all()  # no factor: devices only
    by_rule = estimate_foreign(p, TABLE.countries, regions)
    assert by_rule.countries == ("UZ", "RU", OTHER, ALL)  # KG and CN are under 5 k devices


def test_suppression_and_complements(regions_doc: dict[str, Any]) -> None:
    regions = _regions(regions_doc)
    north, south, rural = (regions.index[r] for r in ("north", "south", "rural"))
    p = _period({"stock": {(UZ, north, 1): 40, (UZ, north, 2): 5, (UZ, north, 3): 30,
                           (UZ, south, 1): 20, (UZ, rural, 1): 50}})
    est = estimate_foreign(p, TABLE.countries, regions, config=ForeignFigureConfig(countries=("UZ",)))
    dev = est.figures["stock"].devices
    uz = 0
    assert np.isnan(dev[uz, north, 2])  # 5 < k
    # the (UZ, north) total over classes is shown, so one more class cell is hidden with it
    assert dev[uz, north, 4] == 75 and np.isnan(dev[uz, north, 3])
    assert dev[uz, north, 1] == 40
    assert np.isnan(dev[uz, -1, 3])  # the national long stock would equal north's: hidden
    shown = ~np.isnan(dev)
    leaves = [north, south, rural, regions.index["unassigned"]]
    uz_counts = p.stock[TABLE.countries.index("UZ")]
    for g in leaves:  # no shown margin over classes misses exactly one non-zero cell
        if shown[uz, g, 4]:
            assert ((~shown[uz, g, :4]) & (uz_counts[g] > 0)).sum() != 1
    for k in range(5):  # nor the national figure over the leaf regions
        line = np.append(uz_counts[leaves].sum(axis=1) if k == 4 else uz_counts[leaves, k], 0)
        if shown[uz, -1, k]:
            assert ((~shown[uz, leaves, k]) & (line[:-1] > 0)).sum() != 1


def test_nights_need_k_devices_worth_of_nights(regions_doc: dict[str, Any]) -> None:
    """March with 31 nights evaluated: a SIM spends at most 31 nights in it."""
    regions = _regions(regions_doc)
    north = regions.index["north"]
    cfg = ForeignFigureConfig(countries=("UZ",))
    for nights, shown in ((14 * 31, False), (15 * 31, True)):
        p = _period({"nights": {(UZ, north, 1): nights}})
        assert p.nights_evaluated == 31
        dev = estimate_foreign(p, TABLE.countries, regions, config=cfg).figures["nights"].devices
        assert np.isnan(dev[0, north, 1]) != shown, nights


def test_people_where_a_country_factor_is_configured(regions_doc: dict[str, Any]) -> None:
    regions = _regions(regions_doc)
    north = regions.index["north"]
    p = _period({"arrivals": {(UZ, north): 100, (RU, north): 100}})
    cfg = ForeignFigureConfig(countries=("UZ", "RU"), model_rse=0.1)
    est = estimate_foreign(p, TABLE.countries, regions, [CountryFactor("UZ", 3.0, 0.2)], cfg)
    fig = est.figures["arrivals"]
    assert fig.people[0, north] == 300
    sd = np.sqrt(100 * 3 * 2 + (0.2 * 300) ** 2 + (0.1 * 300) ** 2)
    assert fig.lo[0, north] == pytest.approx(300 - 1.645 * sd)
    assert fig.hi[0, north] == pytest.approx(300 + 1.645 * sd)
    assert np.isnan(fig.people[1, north])  # RU has no factor
    assert np.isnan(fig.people[est.countries.index(ALL), north])  # so the total has none
    with_all = estimate_foreign(p, TABLE.countries, regions,
                                [CountryFactor("UZ", 3.0), CountryFactor(ALL, 2.0)], cfg)
    assert with_all.figures["arrivals"].people[-1, north] == 500
    with pytest.raises(ValueError, match="factor"):
        CountryFactor("UZ", 0.0)
    fitted = fit_country_factors({"UZ": 100, "RU": 0}, {"UZ": 450.0, "RU": 10.0}, rse=0.05)
    assert [(f.country, f.factor) for f in fitted] == [("UZ", 4.5)]
    assert fitted[0].rse == pytest.approx(np.sqrt(0.01 + 0.0025))


# ``estimate_foreign(..., measures=...)`` gives the same figures as the full estimate for the
# measures asked (a snapshot's long-stayers line asks for ``usual_resident`` only), and the
# country rollup sums exactly as adding every country into its row would.


def _random_period(n_regions: int, seed: int) -> ForeignPeriod:
    rng = np.random.default_rng(seed)
    p = ForeignPeriod("month", 2026 * 12 + 2, len(TABLE.countries), n_regions,
                      last_night=20_000 + 29, first_night=20_000 - 1)
    for name in CUBE_FIELDS + PLANE_FIELDS:
        a = getattr(p, name)
        a[...] = rng.integers(0, 40, a.shape) * (rng.random(a.shape) < 0.6)
    return p


@pytest.mark.parametrize("seed", range(6))
def test_a_subset_of_measures_is_the_full_estimate_restricted(regions_doc: dict[str, Any],
                                                               seed: int) -> None:
    regions = regions_from_geojson(regions_doc)
    p = _random_period(len(regions.ids), seed)
    config = ForeignFigureConfig(top_countries=1 + seed % 3)
    full = estimate_foreign(p, TABLE.countries, regions, config=config)
    for name in ("usual_resident", "stock"):
        part = estimate_foreign(p, TABLE.countries, regions, config=config, measures=(name,))
        assert set(part.figures) == {name}
        assert part.countries == full.countries
        for got, want in zip(vars(part.figures[name]).values(), vars(full.figures[name]).values(),
                             strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
def test_rollup_sums_every_country_into_its_row(seed: int) -> None:
    p = _random_period(5, seed)
    codes = list(TABLE.countries)
    shown = shown_countries(p, codes, ForeignFigureConfig(top_countries=seed))
    row, rolled = _rollup(p, codes, shown)
    for name in CUBE_FIELDS + PLANE_FIELDS:
        want = np.zeros((len(shown) + 1, *getattr(p, name).shape[1:]), dtype=np.int64)
        np.add.at(want, row, getattr(p, name))
        np.testing.assert_array_equal(rolled[name], want)
        assert rolled[name].dtype == np.int64


def test_parents_and_the_whole_country_give_no_small_difference(regions_doc: dict[str, Any]
                                                                ) -> None:
    """RU arrivals: north 30, south 4, rural 3 (k = 15). Before: the city (34) minus north gave
    south's 4, and the whole country (37) minus north the 7 of south and rural. Now, per
    country row, a shown region's own and hidden descendants' devices hold 0 or at least k
    (the whole country above the top-level regions), and so do a shown margin's hidden
    members."""
    regions = _regions(regions_doc)
    city, north, south, rural = (regions.index[r] for r in ("city", "north", "south", "rural"))
    codes = ["RU", "UZ"]
    p = ForeignPeriod("week", 2944, len(codes), len(regions.ids))
    p.arrivals[0, [north, south, rural]] = [30, 4, 3]
    p.arrivals[1, [north, south, rural]] = [40, 5, 6]
    fe = estimate_foreign(p, codes, regions, config=ForeignFigureConfig(countries=("RU", "UZ")))
    dev = fe.figures["arrivals"].devices
    subtree = regions.subtree
    for row in range(dev.shape[0]):
        shown = ~np.isnan(dev[row, :-1])
        own = np.zeros(len(regions.ids))
        own[[north, south, rural]] = (p.arrivals[0] if row == 0 else p.arrivals[1] if row == 1
                                      else p.arrivals.sum(axis=0) if row == dev.shape[0] - 1
                                      else np.zeros(len(regions.ids)))[[north, south, rural]]
        # every shown region minus its shown children, and the country minus its shown regions
        tops = [g for g in range(len(regions.ids)) if regions.parent_index[g] < 0]
        for g, kids in [(g, [c for c in range(len(regions.ids))
                             if regions.parent_index[c] == g]) for g in range(len(regions.ids))]:
            if shown[g] and kids:
                rest = own[subtree[g]].sum() - sum(own[subtree[c]].sum() for c in kids if shown[c])
                assert rest == 0 or rest >= 15, (row, regions.ids[g])
        if not np.isnan(dev[row, -1]):
            rest = own.sum() - sum(own[subtree[g]].sum() for g in tops if shown[g])
            assert rest == 0 or rest >= 15, row
    assert np.isnan(dev[0, city]) or np.isnan(dev[0, north])  # city - north = south's 4
