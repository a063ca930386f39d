"""The region memo's first test of a new working cell (:meth:`PointRegions._far_by_bound`):
the bound it rests on holds for H3's own outlines, and classifying cells with it gives exactly
what the outline test alone gives (the memo's answer never changes, only its cost)."""

from __future__ import annotations

import math

import h3
import numpy as np
import pytest
from conftest import two_district_city

from estimators.cells import PointRegions
from estimators.h3vec import hexagon_circumradius, is_pentagon, latlng_to_cell
from estimators.regions import Region, RegionSet, regions_from_geojson


def _great_circle(a: tuple[float, float], b: tuple[float, float]) -> float:
    (p1, l1), (p2, l2) = np.radians(a), np.radians(b)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin((l2 - l1) / 2) ** 2
    return 2 * math.asin(math.sqrt(h))


@pytest.mark.parametrize("res", [2, 6, 8, 10])
def test_corners_lie_within_the_circumradius_bound(res: int) -> None:
    rng = np.random.default_rng(res)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 3_000)))
    lon = rng.uniform(-180, 180, 3_000)
    cells = np.unique(latlng_to_cell(lat, lon, res))
    bound = hexagon_circumradius(res) * (1 + 1e-6)
    for c in cells.tolist():
        if h3.api.basic_int.is_pentagon(c):
            continue
        centre = h3.api.basic_int.cell_to_latlng(c)
        corners = h3.api.basic_int.cell_to_boundary(c)
        assert len(corners) == 6
        assert max(_great_circle(centre, v) for v in corners) <= bound


def test_pentagons_are_found_as_h3_finds_them() -> None:
    rng = np.random.default_rng(3)
    for res in range(16):
        cells = np.concatenate([np.array(sorted(h3.api.basic_int.get_pentagons(res)), np.uint64),
                                latlng_to_cell(rng.uniform(-90, 90, 500),
                                               rng.uniform(-180, 180, 500), res)])
        want = [h3.api.basic_int.is_pentagon(int(c)) for c in cells.tolist()]
        assert is_pentagon(cells).tolist() == want


def _outline_only(points: PointRegions, cells: np.ndarray) -> np.ndarray:
    centre = np.array([h3.api.basic_int.cell_to_latlng(c) for c in cells.tolist()]).reshape(-1, 2)
    crossed = points._crossed(cells, centre)
    region = np.full(cells.size, -1, dtype=np.int32)
    region[~crossed] = points.regions.locate(centre[~crossed, 0], centre[~crossed, 1])
    return region


def _world() -> RegionSet:
    """Regions across the antimeridian, near a pole and around an icosahedron vertex (the
    pentagon of base cell 4 at 64.7N 10.5E)."""
    def box(rid: str, lon0: float, lat0: float, lon1: float, lat1: float) -> Region:
        ring = np.array([[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]])
        return Region(rid, rid, None, None, (ring,))
    return RegionSet([box("east", 179.0, 10.0, 180.0, 11.0), box("west", -180.0, 10.0, -179.0, 11.0),
                      box("polar", -20.0, 87.0, 20.0, 89.5), box("vertex", 10.0, 64.0, 11.5, 65.5)])


@pytest.mark.parametrize("res", [5, 6, 8, 9])
def test_cells_are_classified_as_by_their_outlines(res: int) -> None:
    rng = np.random.default_rng(20 + res)
    city = regions_from_geojson(two_district_city())
    for regions, (lat0, lat1, lon0, lon1) in ((city, (50.3, 51.9, 70.6, 72.4)),
                                              (_world(), (9.5, 11.5, -180.0, 180.0)),
                                              (_world(), (85.0, 90.0, -30.0, 30.0)),
                                              (_world(), (63.0, 66.5, 8.0, 13.0))):
        lat = rng.uniform(lat0, lat1, 4_000)
        lon = rng.uniform(lon0, lon1, 4_000)
        if lon0 == -180.0:
            lon = np.where(rng.random(4_000) < 0.5, rng.uniform(178.5, 180.0, 4_000),
                           rng.uniform(-180.0, -178.5, 4_000))
        cells = np.unique(latlng_to_cell(lat, lon, res))
        points = PointRegions(regions, res)
        got = points._classify_cells(cells)
        assert np.array_equal(got, _outline_only(points, cells))
        if res % 2 == 0 and regions is city:  # most cells proven whole by the bound alone
            centre = np.array([h3.api.basic_int.cell_to_latlng(c) for c in cells.tolist()])
            assert points._far_by_bound(cells, centre).mean() > 0.5
