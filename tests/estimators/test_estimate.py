"""Calibration lookup and fitting, the estimate, its interval and disclosure control."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from estimators.calibration import Calibration, FactorMatrix, FactorRow, fit_factors
from estimators.estimate import Estimate, EstimateConfig, estimate_from_tally, tally_state
from estimators.presence import ROAMER, NightWindow, PresenceState
from estimators.regions import RegionSet, regions_from_geojson
from estimators.units import HOUR_MS


def estimate(state: PresenceState, loc_region: np.ndarray, regions: RegionSet,
             factors: FactorMatrix, at_ms: int, utc_offset_s: int,
             config: EstimateConfig) -> Estimate:
    """The estimate straight from a device state (the engine goes through a tally too);
    cells are reported by location number."""
    cells = np.arange(len(loc_region), dtype=np.uint64)
    t = tally_state(state, cells, loc_region, (), at_ms, utc_offset_s, config)
    return estimate_from_tally(t, regions, factors, config)

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z (05:00 local)


def test_most_specific_calibration_row_wins(regions_doc: dict[str, Any]) -> None:
    rs = regions_from_geojson(regions_doc)
    cal = Calibration([
        FactorRow("*", "*", 2.0),
        FactorRow("city", "*", 3.0, 0.1),
        FactorRow("north", "40102", 5.0),
        FactorRow("*", "roaming", 1.5),
    ])
    fm = cal.resolve(rs, ["40101", "40102"])
    i = rs.index
    assert fm.factor[i["north"], 1] == 5.0          # exact region + operator
    assert fm.factor[i["north"], 0] == 3.0          # parent's region-wide row
    assert fm.rse[i["north"], 0] == 0.1
    assert fm.factor[i["rural"], 0] == 2.0          # global default row
    assert fm.factor[i["rural"], ROAMER] == 1.5     # roaming row
    assert fm.uncalibrated == []
    bare = Calibration([FactorRow("city", "*", 3.0)]).resolve(rs, ["40101"])
    assert ("rural", "40101") in bare.uncalibrated and bare.factor[i["rural"], 0] == 1.0
    with pytest.raises(ValueError, match="duplicate"):
        Calibration([FactorRow("city", "*", 3.0), FactorRow("city", "*", 4.0)])
    with pytest.raises(ValueError, match="factor must be > 0"):
        FactorRow("city", "*", 0.0)


def test_fit_factors_divides_reference_by_weighted_homes(regions_doc: dict[str, Any]) -> None:
    rs = regions_from_geojson(regions_doc)
    home = np.array([rs.index["north"]] * 40 + [rs.index["south"]] * 60 + [-1] * 5)
    weight = np.full(len(home), 1.25)
    rows = {r.region: r for r in fit_factors(rs, {"city": 500, "north": 100}, home, weight)}
    assert rows["city"].factor == pytest.approx(500 / 125)
    assert rows["north"].factor == pytest.approx(100 / 50)
    assert rows["city"].rse > 0
    with pytest.raises(ValueError, match="no device has its home"):
        fit_factors(rs, {"rural": 10}, home, weight)


def _state_with(regions_doc: dict[str, Any], n_north: int, n_south: int, n_roamers: int,
                n_stale: int) -> tuple[Any, ...]:
    """Devices that slept in their district last night and pinged there 30 min ago."""
    rs = regions_from_geojson(regions_doc)
    loc_region = np.array([rs.index["north"], rs.index["south"]], dtype=np.int32)
    st = PresenceState(len(rs.ids), NightWindow())
    n = n_north + n_south + n_roamers + n_stale
    keys = np.arange(1, n + 1, dtype=np.uint64)
    loc = np.array([0] * n_north + [1] * n_south + [0] * n_roamers + [1] * n_stale)
    opc = np.array([0] * (n_north + n_south) + [ROAMER] * n_roamers + [1] * n_stale, np.uint8)
    night = np.full(n, T0 - 4 * HOUR_MS)  # 01:00 local
    st.update(keys, night, opc, loc, loc_region, 18_000)
    recent = n_north + n_south + n_roamers
    at = T0 + 10 * HOUR_MS
    st.update(keys[:recent], np.full(recent, at - HOUR_MS // 2), opc[:recent], loc[:recent],
              loc_region, 18_000)
    return rs, st, loc_region, at


def test_estimate_counts_weights_and_suppresses(regions_doc: dict[str, Any]) -> None:
    rs, st, loc_region, at = _state_with(regions_doc, 40, 10, 20, 10)
    cal = Calibration([FactorRow("*", "*", 2.0, 0.0)])
    fm = cal.resolve(rs, ["40101", "40102"])
    cfg = EstimateConfig(horizon_ms=3_600_000, k_anonymity=15, model_rse=0.0)
    est = estimate(st, loc_region, rs, fm, at, 18_000, cfg)
    i = rs.index
    # class 1 (10 stale devices) has coverage 0 within the horizon: nobody of it is seen; class 0
    # devices are all seen (coverage 1), roamers count 1 each.
    assert np.isnan(est.present[i["south"]])          # 10 devices < k: suppressed
    assert np.isnan(est.present_devices[i["south"]])
    # city - north would give south's 10 devices: north (40 * 2 + 20 * 1 people) is hidden as
    # south's complement (estimators/disclosure.py), and so is its cell (city - cell 0 too)
    assert np.isnan(est.present[i["north"]]) and np.isnan(est.present_devices[i["north"]])
    assert est.present[i["city"]] == pytest.approx(100 + 20)
    assert est.present_devices[i["city"]] == 70
    assert est.present_lo[i["city"]] < est.present[i["city"]] < est.present_hi[i["city"]]
    # residents: domestic devices with a home, corrected for the coverage of homes (all have one)
    assert est.resident[i["city"]] == pytest.approx((40 + 10) * 2 + 10 * 2)
    assert np.isnan(est.resident[i["rural"]])
    assert est.cell_id.tolist() == [0, 1]
    assert np.isnan(est.cell_devices[0]) and np.isnan(est.cell_present[0])
    assert np.isnan(est.cell_devices[1]) and np.isnan(est.cell_present[1])


def test_resident_parent_minus_children_reveals_no_small_district(regions_doc: dict[str, Any]
                                                                  ) -> None:
    # 40 homes in north, 5 in south: city (45) - north (40) would give south's 5 devices
    rs, st, loc_region, at = _state_with(regions_doc, 40, 5, 0, 0)
    cal = Calibration([FactorRow("*", "*", 2.0, 0.0)])
    est = estimate(st, loc_region, rs, cal.resolve(rs, ["40101"]), at, 18_000,
                   EstimateConfig(k_anonymity=15, model_rse=0.0))
    i = rs.index
    assert est.resident_devices[i["city"]] == 45 and est.resident[i["city"]] == pytest.approx(90)
    for district in ("north", "south"):  # south under k, north hidden as its complement
        for figure in (est.resident, est.resident_lo, est.resident_hi, est.resident_devices):
            assert np.isnan(figure[i[district]])


def test_interval_widens_with_model_error_and_calibration_error(regions_doc: dict[str, Any]
                                                                 ) -> None:
    rs, st, loc_region, at = _state_with(regions_doc, 200, 100, 0, 0)
    narrow = estimate(st, loc_region, rs, Calibration([FactorRow("*", "*", 3.0)]).resolve(
        rs, ["40101"]), at, 18_000, EstimateConfig(model_rse=0.0))
    wide = estimate(st, loc_region, rs, Calibration([FactorRow("*", "*", 3.0, 0.05)]).resolve(
        rs, ["40101"]), at, 18_000, EstimateConfig(model_rse=0.02))
    c = rs.index["city"]
    assert narrow.present[c] == wide.present[c] == pytest.approx(900)
    # binomial only: sd = sqrt(300 * 3 * 2)
    assert narrow.present_hi[c] - narrow.present[c] == pytest.approx(1.645 * np.sqrt(1800))
    # the calibration row is shared by the whole city; the model errors of north (600 people)
    # and south (300) are independent, so the city's is their sum in quadrature
    expected_sd = np.sqrt(1800 + (900 * 0.05) ** 2 + (600 * 0.02) ** 2 + (300 * 0.02) ** 2)
    assert wide.present_hi[c] - wide.present[c] == pytest.approx(1.645 * expected_sd)
    n = rs.index["north"]
    north_sd = np.sqrt(1200 + (600 * 0.05) ** 2 + (600 * 0.02) ** 2)
    assert wide.present_hi[n] - wide.present[n] == pytest.approx(1.645 * north_sd)


def test_people_away_in_a_sibling_district_carry_their_own_model_error(
        regions_doc: dict[str, Any]) -> None:
    """Homes north (100 devices), south (50) and rural (60); by day 40 of north's are in south
    and the 60 rural ones in north. Each region's model error is one draw: model_rse on those
    at home, sibling_away_rse on those from the other district, away_rse on those from rural;
    the city's is north's and south's in quadrature."""
    rs = regions_from_geojson(regions_doc)
    loc_region = np.array([rs.index[r] for r in ("north", "south", "rural")], dtype=np.int32)
    st = PresenceState(len(rs.ids), NightWindow())
    home = np.array([0] * 100 + [1] * 50 + [2] * 60)
    day = home.copy()
    day[:40], day[150:] = 1, 0
    keys = np.arange(1, home.size + 1, dtype=np.uint64)
    opc = np.zeros(home.size, np.uint8)
    st.update(keys, np.full(home.size, T0 - 4 * HOUR_MS), opc, home, loc_region, 18_000)
    at = T0 + 10 * HOUR_MS
    st.update(keys, np.full(home.size, at - HOUR_MS // 2), opc, day, loc_region, 18_000)
    fm = Calibration([FactorRow("*", "*", 1.0)]).resolve(rs, ["40101"])
    cfg = EstimateConfig(model_rse=0.01, sibling_away_rse=0.02, away_rse=0.05, transitions=False)
    est = estimate(st, loc_region, rs, fm, at, 18_000, cfg)
    north, south, city = (rs.index[r] for r in ("north", "south", "city"))
    assert (est.present[north], est.present[south], est.present[city]) == (120, 90, 210)
    north_sd = 60 * 0.01 + 60 * 0.05  # weight 1: no counting noise, no calibration error
    south_sd = 50 * 0.01 + 40 * 0.02
    assert est.present_hi[north] - est.present[north] == pytest.approx(1.645 * north_sd)
    assert est.present_hi[south] - est.present[south] == pytest.approx(1.645 * south_sd)
    assert est.present_hi[city] - est.present[city] == pytest.approx(
        1.645 * np.hypot(north_sd, south_sd))
    # a rural device in the city is away, not in a sibling: rural has no parent
    same = estimate(st, loc_region, rs, fm, at, 18_000,
                    EstimateConfig(model_rse=0.01, sibling_away_rse=0.05, away_rse=0.05,
                                   transitions=False))
    assert same.present_hi[north] == est.present_hi[north]
    assert same.present_hi[south] > est.present_hi[south]


def test_the_sibling_rate_covers_the_parent_region_at_every_depth() -> None:
    """Oblast K > city C > districts D1, D2 > quarters N1, N1b (in D1), N2 (in D2), and a
    region T beside K. Away from home within the counting region's parent (or within a
    top-level counting region) is the sibling rate; anything farther is away."""
    from estimators.estimate import present_model_rse
    from estimators.regions import Region

    square = (np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]),)
    tree = {"K": None, "C": "K", "D1": "C", "D2": "C", "N1": "D1", "N1b": "D1", "N2": "D2",
            "T": None}
    rs = RegionSet([Region(r, r, p, None, square) for r, p in tree.items()])
    cases = {("N1", "N1b"): "sibling", ("N1", "D1"): "sibling", ("D1", "C"): "sibling",
             ("D1", "N2"): "sibling", ("C", "D1"): "sibling", ("K", "N2"): "sibling",
             ("N2", "N1"): "away", ("D1", "T"): "away", ("T", "K"): "away",
             ("C", "T"): "away", ("N1", "N1"): "home", ("unassigned", "N1"): "away",
             ("unassigned", "unassigned"): "home"}
    idx = {**rs.index, "unassigned": rs.n}
    where = np.array([idx[w] for w, _ in cases], dtype=np.int64)
    home = np.array([idx[h] for _, h in cases], dtype=np.int64)
    cfg = EstimateConfig(model_rse=0.001, sibling_away_rse=0.002, away_rse=0.003)
    rate = {0.001: "home", 0.002: "sibling", 0.003: "away"}
    got = present_model_rse(rs, where, home, cfg)
    assert dict(zip(cases, (rate[float(r)] for r in got), strict=True)) == cases
