"""Flows in people: the cohort rate, crossing sums for parents, rural balance, disclosure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import feature, square

from estimators.flows import (
    IDENTITY_TERMS,
    FlowConfig,
    between_parts,
    bookkeeping_suppression,
    estimate_flows,
)
from estimators.migration import PeriodCounts
from estimators.regions import regions_from_geojson


def _period(n: int) -> PeriodCounts:
    return PeriodCounts("week", 2944, n, last_night=20611, first_night=20600)


def test_cohort_rate_parents_and_rural_balance(regions_doc: dict[str, Any]) -> None:
    rs = regions_from_geojson(regions_doc)
    n = len(rs.ids)
    city, north, south, rural = (rs.index[r] for r in ("city", "north", "south", "rural"))
    p = _period(n)
    p.cohort[[north, south, rural]] = [1000, 800, 2000]
    p.end_stock[[north, south, rural]] = [1000, 800, 2000]
    p.cohort_relocations[rural, north] = 40   # rural -> city
    p.cohort_relocations[north, south] = 30   # inside the city
    p.cohort_relocations[south, rural] = 20   # city -> rural
    resident = np.zeros(n)
    resident[[north, south, rural]] = [5000.0, 4000.0, 6000.0]  # 5, 5 and 3 people per device
    fe = estimate_flows(p, rs, resident, np.zeros(n), FlowConfig(k=15, model_rse_flow=0.0))
    assert fe.od[rural, north] == pytest.approx(120.0)  # 40 of 2000 -> 2 % of 6000
    assert fe.od[north, south] == pytest.approx(150.0)
    assert fe.inflow[north] == pytest.approx(120.0) and fe.outflow[north] == pytest.approx(150.0)
    # the city: moves inside it cancel
    assert fe.inflow[city] == pytest.approx(120.0) and fe.outflow[city] == pytest.approx(100.0)
    assert fe.net[city] == pytest.approx(20.0) and fe.net[rural] == pytest.approx(-20.0)
    assert fe.net_lo[city] < 20.0 < fe.net_hi[city]
    assert fe.rural_to_urban == pytest.approx(120.0) and fe.urban_to_rural == pytest.approx(100.0)
    assert fe.rural_balance == pytest.approx(-20.0)
    assert fe.net_per_1000[rural] == pytest.approx(-20.0 / 6.0)


def test_small_flows_are_suppressed_on_devices_with_complements(regions_doc: dict[str, Any]) -> None:
    rs = regions_from_geojson(regions_doc)
    n = len(rs.ids)
    north, south, rural = (rs.index[r] for r in ("north", "south", "rural"))
    p = _period(n)
    p.cohort[[north, south, rural]] = [1000, 1000, 1000]
    p.end_stock[[north, south, rural]] = [1000, 1000, 1000]
    p.cohort_relocations[rural, north] = 30
    p.cohort_relocations[rural, south] = 5  # one small cell in a published out-row
    resident = np.full(n, 100.0)  # few people per device: scaled people never decide
    fe = estimate_flows(p, rs, resident, np.zeros(n))
    assert np.isnan(fe.od[rural, south])
    # rural's outflow (35 devices) is published, so rural->north would reveal rural->south
    assert not np.isnan(fe.outflow[rural])
    assert np.isnan(fe.od[rural, north])
    assert np.isnan(fe.net[south])  # south's inflow rests on 5 devices


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="k"):
        FlowConfig(k=0)


def test_a_margin_minus_its_shown_cells_gives_no_small_sum() -> None:
    """Two small cells in one row: A's outflow (57) minus its shown cell (50) would give their
    sum (3 + 4 = 7 < k); the rule that only looked for a single hidden cell published 50.
    Now the hidden cells of every published row and column hold 0 or at least k."""
    doc = {"type": "FeatureCollection", "features": [
        feature(r, [square(50 + i * 0.1, 50.1 + i * 0.1, 70.0, 70.1)], urban=True)
        for i, r in enumerate("ABCD")]}
    rs = regions_from_geojson(doc)
    n = len(rs.ids)
    a, b, c, d = (rs.index[r] for r in "ABCD")
    p = _period(n)
    p.cohort[[a, b, c, d]] = 1000
    p.end_stock[[a, b, c, d]] = 1000
    m = p.cohort_relocations
    m[a, b], m[a, c], m[a, d] = 50, 3, 4
    m[b, c], m[b, d] = 40, 40
    m[c, d], m[c, b], m[c, a] = 5, 7, 40
    m[d, c], m[d, b], m[d, a] = 5, 6, 40
    fe = estimate_flows(p, rs, np.full(n, 1000.0), np.zeros(n), FlowConfig(k=15))
    assert fe.out_devices[a] == 57 and np.isnan(fe.od_devices[a, b])
    leaf = [a, b, c, d]
    for i in leaf:
        for margin, line, cells in ((fe.out_devices[i], m[i, leaf], fe.od_devices[i, leaf]),
                                    (fe.in_devices[i], m[leaf, i], fe.od_devices[leaf, i])):
            if np.isnan(margin):
                continue
            held = line[np.isnan(cells)].sum()
            assert held == 0 or held >= 15


def test_net_per_1000_only_where_the_resident_figure_is_shown(regions_doc: dict[str, Any]
                                                              ) -> None:
    rs = regions_from_geojson(regions_doc)
    n = len(rs.ids)
    north, south = rs.index["north"], rs.index["south"]
    p = _period(n)
    p.cohort[[north, south]] = 1000
    p.end_stock[[north, south]] = 1000
    p.cohort_relocations[north, south], p.cohort_relocations[south, north] = 40, 20
    shown = np.ones(n, dtype=bool)
    shown[south] = False  # its resident figure is suppressed: net / per 1,000 would give it
    fe = estimate_flows(p, rs, np.full(n, 1000.0), np.zeros(n), FlowConfig(k=15),
                        resident_shown=shown)
    assert np.isfinite(fe.net[south]) and np.isnan(fe.net_per_1000[south])
    assert np.isnan(fe.net_per_1000_lo[south]) and np.isnan(fe.net_per_1000_hi[south])
    assert np.isfinite(fe.net_per_1000[north])


def test_bookkeeping_parent_minus_children_and_the_identity(regions_doc: dict[str, Any]) -> None:
    """Subtree terms: city - north must not give south's 9 devices; north's identity
    (stock_end - stock_start = in - out + housed - lapsed + reactivated) must not give its
    hidden housed (3) and reactivated (4) devices as their sum."""
    regions = regions_from_geojson(regions_doc)
    n = len(regions.ids)
    city, north, south, rural = (regions.index[r] for r in ("city", "north", "south", "rural"))

    def per_region(values: dict[int, int]) -> np.ndarray:
        out = np.zeros(n, dtype=np.int64)
        for i, v in values.items():
            out[i] = v
        return out

    own = {"stock_start": per_region({north: 1000, south: 9, rural: 1000}),
           "stock_end": per_region({north: 1000, south: 9, rural: 1000}),
           "housed": per_region({north: 3}), "lapsed": per_region({north: 30}),
           "reactivated": per_region({north: 4}),
           "cohort": per_region({north: 1000, south: 9, rural: 1000})}
    sub = regions.subtree.astype(np.int64)
    totals = {name: sub @ v for name, v in own.items()}
    totals["in_devices"] = per_region({north: 40, city: 40})
    totals["out_devices"] = per_region({north: 17, city: 17})
    hidden = bookkeeping_suppression(regions, own, totals, 15)
    for name in ("cohort", "stock_start", "stock_end"):
        assert hidden[name][south] and (hidden[name][north] or hidden[name][city])
    for i in range(n):
        held = sum(int(totals[t][i]) for t in IDENTITY_TERMS if hidden[t][i])
        assert held == 0 or held >= 15, regions.ids[i]
    assert hidden["housed"][north] and hidden["reactivated"][north]


def test_a_parent_against_its_children_gives_no_small_count(regions_doc: dict[str, Any]) -> None:
    """north + south inflow minus the city's is the moves between the districts (5 + 20):
    with south -> north (20) shown, north -> south's 5 would follow. The shown cell between the
    parts is hidden too (or the city's margins)."""
    rs = regions_from_geojson(regions_doc)
    n = len(rs.ids)
    city, north, south, rural = (rs.index[r] for r in ("city", "north", "south", "rural"))
    p = _period(n)
    p.cohort[[north, south, rural]] = 1000
    p.end_stock[[north, south, rural]] = 1000
    m = p.cohort_relocations
    m[rural, north], m[north, rural], m[south, rural], m[rural, south] = 40, 30, 40, 40
    m[north, south], m[south, north] = 5, 20
    assert between_parts(rs, m)[city] == 25 and between_parts(rs, m)[north] == 0
    fe = estimate_flows(p, rs, np.full(n, 1000.0), np.zeros(n), FlowConfig(k=15))
    kids_and_city = [fe.in_devices[north], fe.in_devices[south], fe.in_devices[city]]
    if not np.isnan(kids_and_city).any():
        # the attacker's difference, less the shown cells between the districts
        between = kids_and_city[0] + kids_and_city[1] - kids_and_city[2]
        shown = np.nansum([fe.od_devices[north, south], fe.od_devices[south, north]])
        assert between - shown == 0 or between - shown >= 15
    assert np.isnan(fe.od_devices[south, north]) or np.isnan(fe.in_devices[city])
