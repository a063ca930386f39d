"""Regions: deepest-region lookup, holes, hierarchy and validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from estimators.regions import Region, RegionSet, regions_from_geojson


def test_deepest_region_wins_and_holes_are_respected(regions_doc: dict[str, Any]) -> None:
    rs = regions_from_geojson(regions_doc)
    lat = np.array([51.15, 51.05, 50.9, 51.15, 60.0])
    lon = np.array([71.4, 71.4, 71.0, 71.0, 71.0])
    got = [rs.ids[i] for i in rs.locate(lat, lon)]
    assert got == ["north", "south", "rural", "rural", "unassigned"]


def test_aggregate_sums_subtrees(regions_doc: dict[str, Any]) -> None:
    rs = regions_from_geojson(regions_doc)
    per = np.zeros(len(rs.ids))
    per[rs.index["north"]] = 3
    per[rs.index["south"]] = 4
    per[rs.index["city"]] = 1
    per[rs.index["rural"]] = 10
    total = rs.subtree.astype(per.dtype) @ per  # per-region totals over each subtree
    assert total[rs.index["city"]] == 8
    assert total[rs.index["north"]] == 3
    assert total[rs.index["rural"]] == 10
    assert rs.ancestors(rs.index["north"]) == [rs.index["north"], rs.index["city"]]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["features"][1]["properties"].update(parent="nowhere"), "unknown parent"),
        (lambda d: d["features"][1]["properties"].update(id="city"), "duplicate region ids"),
        (lambda d: d["features"][0]["properties"].pop("name"), "name"),
        (lambda d: d["features"][0]["geometry"].update(type="Point"), "Polygon or MultiPolygon"),
        (lambda d: d["features"][0]["properties"].update(id="unassigned"), "reserved"),
        (lambda d: d.update(type="Feature"), "FeatureCollection"),
    ],
)
def test_bad_region_files_are_explained(regions_doc: dict[str, Any], mutate: Any,
                                        message: str) -> None:
    mutate(regions_doc)
    with pytest.raises(ValueError, match=message):
        regions_from_geojson(regions_doc)


def test_regions_built_from_rings_alone_use_the_first_as_exterior() -> None:
    outer = np.array([[70.0, 50.0], [73.0, 50.0], [73.0, 53.0], [70.0, 53.0], [70.0, 50.0]])
    hole = np.array([[71.0, 51.0], [72.0, 51.0], [72.0, 52.0], [71.0, 52.0], [71.0, 51.0]])
    rs = RegionSet([Region("a", "A", None, None, (outer, hole))])
    got = rs.locate(np.array([50.5, 51.5, 54.0]), np.array([70.5, 71.5, 71.5]))
    assert [rs.ids[i] for i in got] == ["a", "unassigned", "unassigned"]
    assert rs.warnings == ()
