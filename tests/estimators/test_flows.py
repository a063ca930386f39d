"""Flows in people: the cohort rate, crossing sums for parents, rural balance, disclosure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from estimators.flows import FlowConfig, estimate_flows
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
