"""Exact regions (issue 13): a ping's region is that of its own position, not of its H3 cell's
centre, for lat/lon pings and for cell-plan rows alike; the H3 cell stays for the map."""

from __future__ import annotations

import json
from typing import Any

import h3
import numpy as np
import pytest
import shapely

import estimators.cells as cells_mod
from estimators.cells import CellPlan, CellTable, sector_centre
from estimators.engine import Engine, EngineConfig
from estimators.h3vec import latlng_to_cell
from estimators.regions import RegionSet, regions_from_geojson

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
BORDER_LAT = 51.1  # north / south of the test city (tests/conftest.py)
METRE_DEG = 1.0 / 111_200.0  # about a metre of latitude


def _border_points(lons: np.ndarray, metres: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of points ``metres`` north and south of the north/south border, per longitude."""
    d = metres * METRE_DEG
    lat = np.concatenate([np.full(lons.size, BORDER_LAT + d), np.full(lons.size, BORDER_LAT - d)])
    return lat, np.concatenate([lons, lons])


def test_lat_lon_points_metres_apart_land_in_their_own_regions(regions_doc: dict[str, Any]
                                                               ) -> None:
    regions = regions_from_geojson(regions_doc)
    table = CellTable(regions, 8)
    lons = np.linspace(71.31, 71.59, 200)
    for metres in (1.0, 0.05, 30.0):
        lat, lon = _border_points(lons, metres)
        loc = table.locate_latlng(lat, lon)
        got = [regions.ids[r] for r in table.region[loc]]
        assert got == ["north"] * lons.size + ["south"] * lons.size, metres
        assert np.array_equal(table.cell[loc], latlng_to_cell(lat, lon, 8))  # the map's cell
    # one res-8 cell holds both sides: two locations, one per region
    lat, lon = _border_points(lons[:1], 1.0)
    loc = table.locate_latlng(lat, lon)
    assert table.cell[loc[0]] == table.cell[loc[1]] and loc[0] != loc[1]


def test_points_on_a_border_follow_the_half_open_rule(regions_doc: dict[str, Any]) -> None:
    """A point exactly on the shared edge belongs to the region an infinitesimal step north
    (then east) would put it in: north here, and the same answer whichever memo applies."""
    regions = regions_from_geojson(regions_doc)
    lon = np.linspace(71.31, 71.59, 50)
    lat = np.full(lon.size, BORDER_LAT)
    table = CellTable(regions, 8)
    for _ in range(2):  # first sight, then memoized
        loc = table.locate_latlng(lat, lon)
        assert {regions.ids[r] for r in table.region[loc]} == {"north"}


def test_cell_plan_rows_land_in_the_region_of_their_own_point(regions_doc: dict[str, Any]
                                                              ) -> None:
    regions = regions_from_geojson(regions_doc)
    table = CellTable(regions, 8)
    lons = np.linspace(71.31, 71.59, 40)
    lat, lon = _border_points(lons, 2.0)
    n = lat.size
    plan = CellPlan(["40101"] * n, [f"c{i}" for i in range(n)], lat, lon, table)
    assert [regions.ids[r] for r in table.region[plan.loc]] == ["north"] * 40 + ["south"] * 40
    assert np.array_equal(plan.region, table.region[plan.loc])
    # a sector whose antenna stands 5 m south of the border, pointing north 40 m: its footprint's
    # centre is 15 m north, in north, in the same res-8 cell as the antenna
    az, rng = np.full(40, 0.0), np.full(40, 40.0)
    s_lat, s_lon = lat[40:], lon[40:]
    s_lat = s_lat - 3.0 * METRE_DEG
    plan = CellPlan(["40101"] * 40, [f"s{i}" for i in range(40)], s_lat, s_lon, table, az, rng)
    c_lat, _ = sector_centre(s_lat, s_lon, az, rng)
    assert (c_lat > BORDER_LAT).all()
    assert {regions.ids[r] for r in table.region[plan.loc]} == {"north"}


def _districts(seed: int) -> tuple[dict[str, Any], list[shapely.Geometry]]:
    """A city of 12 Voronoi districts (irregular borders) inside a rural ring with a hole."""
    rng = np.random.default_rng(seed)
    box = shapely.box(71.2, 51.0, 71.7, 51.3)
    seeds = shapely.multipoints(np.column_stack([rng.uniform(71.2, 71.7, 12),
                                                 rng.uniform(51.0, 51.3, 12)]))
    cells = [shapely.intersection(p, box) for p in shapely.get_parts(
        shapely.voronoi_polygons(seeds, extend_to=box))]
    rural = shapely.Polygon(shapely.get_coordinates(shapely.box(70.5, 50.5, 72.5, 51.8)),
                            [shapely.get_coordinates(box)])

    def feat(fid: str, geom: shapely.Geometry, parent: str | None) -> dict[str, Any]:
        props: dict[str, Any] = {"id": fid, "name": fid}
        if parent:
            props["parent"] = parent
        return {"type": "Feature", "properties": props,
                "geometry": json.loads(shapely.to_geojson(shapely.set_precision(geom, 1e-9)))}

    features = [feat("city", box, None), feat("rural", rural, None)]
    features += [feat(f"d{i}", g, "city") for i, g in enumerate(cells)]
    return {"type": "FeatureCollection", "features": features}, [box, rural, *cells]


def _near_borders(shapes: list[shapely.Geometry], n: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points within 1 cm .. 50 m of a district border, and ``n // 4`` anywhere."""
    rng = np.random.default_rng(seed)
    lines = shapely.get_parts(shapely.boundary(shapes[2:]))
    pick = rng.integers(0, len(lines), n)
    where = shapely.line_interpolate_point(lines[pick], rng.uniform(0, 1, n), normalized=True)
    xy = shapely.get_coordinates(where)
    dist = 10.0 ** rng.uniform(-2, np.log10(50), n) * METRE_DEG
    angle = rng.uniform(0, 2 * np.pi, n)
    lon = np.concatenate([xy[:, 0] + dist * np.cos(angle) * 1.6, rng.uniform(70.6, 72.4, n // 4)])
    lat = np.concatenate([xy[:, 1] + dist * np.sin(angle), rng.uniform(50.6, 51.7, n // 4)])
    return lat, lon


def _reference(regions: RegionSet, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Deepest region containing each point, by an STRtree of the polygons (independent of
    :meth:`RegionSet.locate`); ``unassigned`` outside all. No point lies on a border."""
    shapes = [r.geometry for r in regions.regions]
    tree = shapely.STRtree(shapes)
    pt, shape = tree.query(shapely.points(lon, lat), predicate="within")
    out = np.full(lat.size, regions.unassigned, dtype=np.int64)
    depth = np.full(lat.size, -1, dtype=np.int64)
    for p, s in zip(pt.tolist(), shape.tolist(), strict=True):
        if regions.depth[s] > depth[p]:
            out[p], depth[p] = s, regions.depth[s]
    return out


def _present_by_region(engine: Engine, at_ms: int) -> np.ndarray:
    tally = engine.tally(at_ms)
    return np.bincount(tally.present_region, weights=tally.present_count,
                       minlength=len(engine.regions.ids)).astype(np.int64)


def test_district_counts_equal_an_exact_point_in_polygon_count() -> None:
    """40 k devices within 1 cm .. 50 m of irregular district borders (plus 10 k anywhere):
    per-district present devices equal the exact count, 0 devices off, for lat/lon pings and
    for cell-plan rows at the same points; binning at the res-8 centre would be far off."""
    doc, _ = _districts(3)
    regions = regions_from_geojson(doc)
    lat, lon = _near_borders([s for s in _districts(3)[1]], 40_000, 4)
    n = lat.size
    want = np.bincount(_reference(regions, lat, lon), minlength=len(regions.ids))
    keys = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    ts = T0 + np.arange(n, dtype=np.int64) % 3_600_000
    cls = np.zeros(n, dtype=np.uint8)

    by_latlng = Engine(regions, EngineConfig(res=8, migration=None))
    for lo in range(0, n, 7_000):  # several batches: the memos are met warm and cold
        s = slice(lo, lo + 7_000)
        by_latlng.ingest(keys[s], ts[s], cls[s], by_latlng.cells.locate_latlng(lat[s], lon[s]))
    assert np.array_equal(_present_by_region(by_latlng, T0 + 3_600_000), want)

    by_plan = Engine(regions, EngineConfig(res=8, migration=None))
    plan = by_plan.load_cell_plan(["40101"] * n, [f"c{i}" for i in range(n)], lat, lon)
    by_plan.ingest(keys, ts, cls, plan.loc[np.arange(n)])
    assert np.array_equal(_present_by_region(by_plan, T0 + 3_600_000), want)

    cells = latlng_to_cell(lat, lon, 8)
    centres = np.array([h3.api.basic_int.cell_to_latlng(int(c)) for c in cells.tolist()])
    at_centre = regions.locate(centres[:, 0], centres[:, 1])
    moved = int((at_centre != _reference(regions, lat, lon)).sum())
    off = int(np.abs(np.bincount(at_centre, minlength=len(regions.ids)) - want).sum())
    assert moved > 0.2 * n and off > 0.04 * n, (moved, off)  # what the centre rule did


def test_the_memo_never_changes_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same positions in other batches, other orders, with memos emptied every few cells: the
    same (cell, region) for every position."""
    doc, shapes = _districts(5)
    regions = regions_from_geojson(doc)
    lat, lon = _near_borders(shapes, 6_000, 6)
    lat = np.concatenate([lat, lat[::3]])  # repeated positions hit the memo
    lon = np.concatenate([lon, lon[::3]])
    want = _reference(regions, lat, lon)

    def run(order: np.ndarray, batch: int) -> np.ndarray:
        table = CellTable(regions, 8)
        out = np.empty(lat.size, dtype=np.int64)
        for lo in range(0, lat.size, batch):
            i = order[lo:lo + batch]
            loc = table.locate_latlng(lat[i], lon[i])
            out[i] = table.region[loc]
        return out

    rng = np.random.default_rng(7)
    assert np.array_equal(run(np.arange(lat.size), lat.size), want)
    assert np.array_equal(run(rng.permutation(lat.size), 997), want)
    monkeypatch.setattr(cells_mod, "MEMO_LIMIT", 50)
    assert np.array_equal(run(rng.permutation(lat.size), 301), want)


def test_points_outside_every_region_stay_unassigned(regions_doc: dict[str, Any]) -> None:
    regions = regions_from_geojson(regions_doc)
    table = CellTable(regions, 8)
    # just outside the rural ring's outer edge (lat 51.7 in tests/conftest.py), and far away
    lat = np.array([60.0, 40.0, 52.0])
    lon = np.array([71.0, 10.0, 71.4])
    loc = table.locate_latlng(lat, lon)
    assert set(table.region[loc].tolist()) == {regions.unassigned}


def test_checkpoint_round_trip_keeps_border_locations(regions_doc: dict[str, Any]) -> None:
    """Devices a metre either side of a border in one res-8 cell keep their regions through
    export/restore; a checkpoint without ``stamp_regions`` (older) still loads, at centres."""
    regions = regions_from_geojson(regions_doc)
    engine = Engine(regions, EngineConfig(res=8, migration=None))
    lat, lon = _border_points(np.linspace(71.31, 71.59, 30), 1.0)
    n = lat.size
    keys = np.arange(1, n + 1, dtype=np.uint64)
    engine.ingest(keys, np.full(n, T0), np.zeros(n, np.uint8), engine.cells.locate_latlng(lat, lon))
    before = _present_by_region(engine, T0 + 1)
    assert before[regions.index["north"]] == before[regions.index["south"]] == n // 2
    arrays = engine.export_state()
    again = Engine(regions, EngineConfig(res=8, migration=None))
    again.restore_state(arrays)
    assert np.array_equal(_present_by_region(again, T0 + 1), before)
    old = Engine(regions, EngineConfig(res=8, migration=None))
    old.restore_state({k: v for k, v in arrays.items() if k != "stamp_regions"})
    centre = _present_by_region(old, T0 + 1)
    assert centre.sum() == n and not np.array_equal(centre, before)


def test_the_map_counts_a_split_cell_once(regions_doc: dict[str, Any]) -> None:
    """Devices either side of a border inside one res-8 cell: two regions in the figures, one
    cell on the map (estimate cells, hence /api/cells and the snapshot, are per H3 cell)."""
    regions = regions_from_geojson(regions_doc)
    engine = Engine(regions, EngineConfig(res=8, migration=None))
    lat, lon = _border_points(np.full(40, 71.4), 2.0)
    keys = np.arange(1, 81, dtype=np.uint64)
    engine.ingest(keys, np.full(80, T0), np.zeros(80, np.uint8), engine.cells.locate_latlng(lat, lon))
    est = engine.estimate(T0 + 1)
    cell = int(latlng_to_cell(lat[:1], lon[:1], 8)[0])
    assert est.cell_id.tolist() == [cell] and est.cell_devices.tolist() == [80.0]
    assert est.present_devices[regions.index["north"]] == 40
    assert est.present_devices[regions.index["south"]] == 40
