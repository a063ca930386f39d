"""Model tests: lat/lon binning without the fine-cell memo, the working-cell
memo and the location index looked up by hash. Each position's H3 cell and region must equal a
slow reference (h3.latlng_to_cell; the documented half-open rule on the conftest's boxes), however
the positions are batched, repeated or ordered."""

from __future__ import annotations

import itertools
from typing import Any

import h3
import numpy as np
from conftest import CITY, RURAL, two_district_city
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estimators.cells import CellTable
from estimators.regions import regions_from_geojson

DOC: dict[str, Any] = two_district_city()
REGIONS = regions_from_geojson(DOC)
LATS = [50.5, 51.0, 51.1, 51.2, 51.7]
LONS = [70.8, 71.3, 71.6, 72.1]
NUDGE = [0.0, 1e-12, -1e-12, 1e-9, -1e-9, 1e-7, -1e-7, 1e-6, -1e-6, 3e-5, -3e-5]


def _box(lat: float, lon: float, b: tuple[float, float, float, float]) -> bool:
    """Half-open: a point on a border counts as one step north, then east."""
    return b[0] <= lat < b[1] and b[2] <= lon < b[3]


def reference_region(lat: float, lon: float) -> int:
    idx = {rid: i for i, rid in enumerate(REGIONS.ids)}
    if _box(lat, lon, (51.1, 51.2, 71.3, 71.6)):
        return idx["north"]
    if _box(lat, lon, (51.0, 51.1, 71.3, 71.6)):
        return idx["south"]
    if _box(lat, lon, RURAL) and not _box(lat, lon, CITY):
        return idx["rural"]
    return REGIONS.unassigned


def _coord(edges: list[float], lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(lo, hi, allow_nan=False),
        st.tuples(st.sampled_from(edges), st.sampled_from(NUDGE)).map(lambda t: t[0] + t[1]),
    )


POINT = st.tuples(_coord(LATS, 50.3, 51.9), _coord(LONS, 70.6, 72.3))


def _region_of_locs(table: CellTable, locs: np.ndarray) -> tuple[list[int], list[int]]:
    return table.cell[locs].tolist(), table.region[locs].tolist()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=st.lists(POINT, min_size=1, max_size=120), repeat=st.integers(1, 3),
       cuts=st.lists(st.integers(0, 400), max_size=6), res=st.sampled_from([6, 8, 10]),
       seed=st.integers(0, 2**32 - 1))
def test_cell_and_region_match_reference_any_batching(points, repeat, cuts, res, seed) -> None:
    pts = points * repeat
    rng = np.random.default_rng(seed)
    rng.shuffle(pts)
    lat = np.array([p[0] for p in pts])
    lon = np.array([p[1] for p in pts])
    want_cell = [h3.latlng_to_cell(a, o, res) for a, o in zip(lat.tolist(), lon.tolist(), strict=True)]
    want_cell = [h3.str_to_int(c) for c in want_cell]
    want_region = [reference_region(a, o) for a, o in zip(lat.tolist(), lon.tolist(), strict=True)]

    one = CellTable(REGIONS, res)
    locs = one.locate_latlng(lat, lon)
    assert (locs >= 0).all()
    cell, region = _region_of_locs(one, locs)
    assert cell == want_cell
    assert region == want_region
    # one location per (cell, region): equal positions' keys give equal numbers
    pairs = dict(zip(zip(cell, region, strict=True), locs.tolist(), strict=True))
    assert len(set(pairs.values())) == len(pairs)
    assert len(one) == len(pairs)

    many = CellTable(REGIONS, res)
    bounds = sorted({min(c, lat.size) for c in cuts} | {0, lat.size})
    got = np.concatenate([many.locate_latlng(lat[a:b], lon[a:b])
                          for a, b in itertools.pairwise(bounds)])
    cell2, region2 = _region_of_locs(many, got)
    assert cell2 == want_cell and region2 == want_region
    # the same positions again (memo warm, every key held): the same numbers, nothing added
    n = len(many)
    assert np.array_equal(many.locate_latlng(lat, lon), got)
    assert len(many) == n


def test_new_locations_numbered_whole_then_border_ascending() -> None:
    """locate_point_keys' documented order for a fresh table: unseen whole cells' keys ascending,
    then unseen border cells' keys ascending, numbered 0.."""
    rng = np.random.default_rng(3)
    lat = np.concatenate([rng.uniform(50.4, 51.8, 3000), np.full(200, 51.1) + rng.normal(0, 1e-4, 200)])
    lon = np.concatenate([rng.uniform(70.7, 72.2, 3000), rng.uniform(71.2, 71.7, 200)])
    table = CellTable(REGIONS, 8)
    keys, border = table.point_keys(lat, lon)
    assert border.any() and (~border).any()
    locs = table.locate_point_keys(keys, border)
    order = np.concatenate([np.unique(keys[~border]), np.unique(keys[border])])
    want = {int(k): i for i, k in enumerate(order.tolist())}
    assert locs.tolist() == [want[int(k)] for k in keys.tolist()]
