"""Border cells (issue 13): a cell whose footprint straddles a region border spreads its devices
over the regions it covers, by an unkeyed hash of (device, plan row); interior cells are
unchanged."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import shapely

from estimators.calibration import ANY, Calibration, FactorRow, fit_factors
from estimators.cells import CellPlan, CellTable
from estimators.engine import Engine, EngineConfig
from estimators.footprints import (
    Footprints,
    _borders,
    _project,
    apportion_plan,
    choose,
    device_draw_hashes,
    draw,
    footprint_polygons,
    footprint_weights,
    population_density,
    region_parts,
)
from estimators.pseudonym import device_words
from estimators.regions import Region, RegionSet
from stream.decode.validate import fast_device_hashes, text_device_hashes

BORDER_LON = 71.5
DX, DY = 0.02, 0.0125  # about 1.4 km by 1.4 km at 51 N


def _two_regions() -> RegionSet:
    """West and east of lon 71.5, from 50.5 to 51.5 N and 71.0 to 72.0 E."""
    def box(lon0: float, lon1: float) -> np.ndarray:
        return np.array([[lon0, 50.5], [lon1, 50.5], [lon1, 51.5], [lon0, 51.5], [lon0, 50.5]])
    return RegionSet([Region("west", "West", None, True, (box(71.0, BORDER_LON),)),
                      Region("east", "East", None, True, (box(BORDER_LON, 72.0),))])


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """A regular 7 x 7 grid of sites centred on the border: the middle column stands on it."""
    k, j = np.meshgrid(np.arange(-3, 4), np.arange(-3, 4))
    return 51.0 + j.ravel() * DY, BORDER_LON + k.ravel() * DX


def test_a_footprint_half_in_each_region_gives_half_each() -> None:
    regions = _two_regions()
    lat, lon = _grid()
    fp = footprint_weights(lat, lon, np.zeros(lat.size, int), regions)
    w = fp.matrix(regions.n + 1)
    on_border = np.isclose(lon, BORDER_LON)
    # the middle column's footprints are cut in two by the border: about half each
    assert np.allclose(w[on_border, 0], 0.5, atol=0.02)
    assert np.allclose(w[on_border, 1], 0.5, atol=0.02)
    # every other footprint lies in one region: no pieces, the site's region as before
    assert set(fp.border_rows().tolist()) == set(np.flatnonzero(on_border).tolist())
    assert np.allclose(w.sum(axis=1)[on_border], 1.0)


def test_a_density_prior_weighs_the_denser_side() -> None:
    regions = _two_regions()
    lat, lon = _grid()
    fp = footprint_weights(lat, lon, np.zeros(lat.size, int), regions,
                           density=np.array([3.0, 1.0, 1.0]))
    w = fp.matrix(regions.n + 1)[np.isclose(lon, BORDER_LON)]
    assert np.allclose(w[:, 0], 0.75, atol=0.02)  # 3 x half the area against 1 x half


def test_population_density_is_own_people_per_km2() -> None:
    regions = _two_regions()
    d = population_density(regions, {"west": 1000, "east": 4000})
    assert d[1] / d[0] == pytest.approx(4.0, rel=1e-6)
    # a region the register lacks takes the overall density
    d = population_density(regions, {"west": 1000})
    assert d[1] == pytest.approx(d[0])


def border_plan() -> tuple[RegionSet, np.ndarray, np.ndarray, CellTable, CellPlan, Footprints]:
    """The two regions, a grid of sites across their border as one operator's plan, and its
    footprints in force: ``(regions, lat, lon, table, plan, footprints)``."""
    regions = _two_regions()
    lat, lon = _grid()
    table = CellTable(regions, 8)
    plan = CellPlan(["40101"] * lat.size, [f"c{i}" for i in range(lat.size)], lat, lon, table)
    fp = footprint_weights(lat, lon, np.zeros(lat.size, int), regions, site_region=plan.region)
    plan.apportion(fp, table)
    return regions, lat, lon, table, plan, fp


def test_the_same_device_at_the_same_cell_lands_in_the_same_region() -> None:
    _, _, lon, table, plan, fp = border_plan()
    row = int(np.flatnonzero(np.isclose(lon, BORDER_LON))[0])
    keys = np.random.default_rng(7).integers(0, 2**63, 20_000, dtype=np.int64).astype(np.uint64)
    rows = np.full(keys.size, row)
    first = plan.locations(rows, keys)
    # again, in another order and in small batches: the same location for every device
    order = np.random.default_rng(8).permutation(keys.size)
    again = np.concatenate([plan.locations(rows[order][i:i + 97], keys[order][i:i + 97])
                            for i in range(0, keys.size, 97)])
    assert np.array_equal(again, first[order])
    region = table.region[first]
    assert set(region.tolist()) == {0, 1}
    assert np.mean(region == 0) == pytest.approx(0.5, abs=0.02)  # the weights' proportions
    # the map cell of each piece lies in its region
    assert (shapely.contains_xy(shapely.box(71.0, 50.5, BORDER_LON, 51.5),
                                fp.lon[fp.region == 0], fp.lat[fp.region == 0])).all()
    # draws are a function of (device, row) only
    assert np.array_equal(draw(keys[:5], rows[:5]), draw(keys[:5].copy(), rows[:5].copy()))
    assert not np.array_equal(draw(keys[:50], rows[:50]), draw(keys[:50], rows[:50] + 1))


def test_interior_cells_are_unchanged() -> None:
    regions = _two_regions()
    lat, lon = _grid()
    table = CellTable(regions, 8)
    plan = CellPlan(["40101"] * lat.size, [f"c{i}" for i in range(lat.size)], lat, lon, table)
    before = plan.loc.copy()
    fp = footprint_weights(lat, lon, np.zeros(lat.size, int), regions, site_region=plan.region)
    plan.apportion(fp, table)
    interior = np.flatnonzero(~np.isclose(lon, BORDER_LON))
    keys = np.arange(1, 1001, dtype=np.uint64)
    for row in interior.tolist():
        got = plan.locations(np.full(keys.size, row), keys)
        assert (got == before[row]).all()
    assert np.array_equal(plan.loc, before)
    assert (choose(fp, keys[: interior.size], interior) == -1).all()
    plan.apportion(None, table)  # back to the site rule
    border = int(np.flatnonzero(np.isclose(lon, BORDER_LON))[0])
    assert (plan.locations(np.full(keys.size, border), keys) == before[border]).all()


def test_operators_are_tessellated_apart() -> None:
    """Another operator's site next to the border does not shrink this operator's footprint."""
    regions = _two_regions()
    lat, lon = _grid()
    lat2 = np.concatenate([lat, [51.0]])
    lon2 = np.concatenate([lon, [BORDER_LON + 0.001]])
    group = np.concatenate([np.zeros(lat.size, int), [1]])
    with pytest.raises(ValueError):
        footprint_weights(lat2, lon2, group[:-1], regions)
    fp = footprint_weights(lat2, lon2, group, regions)
    centre = int(np.flatnonzero(np.isclose(lon, BORDER_LON) & np.isclose(lat, 51.0))[0])
    assert fp.matrix(regions.n + 1)[centre, 0] == pytest.approx(0.5, abs=0.02)


def test_draw_hashes_do_not_depend_on_the_key_nor_on_the_batch() -> None:
    """The draw hash is the same under any key, from either word layout, whatever the longest
    device of the batch; the keyed device keys differ by key."""
    ops = np.array([b"40101", b"40102", b"401011", b"40101"], dtype="S6")
    devs = np.array([b"d1", b"d1", b"a-longer-device-id", b"d2"], dtype=np.bytes_)
    k1, d1 = fast_device_hashes(ops, devs, b"k" * 32, True)
    k2, d2 = fast_device_hashes(ops, devs, b"j" * 32, True)
    assert d1 is not None and d2 is not None
    assert np.array_equal(d1, d2) and not np.array_equal(k1, k2)
    assert len(set(d1.tolist())) == 4  # the operator is part of the message
    # alone in a batch (fewer blocks of words): the same draw hashes
    _, alone = fast_device_hashes(ops[[0, 3]], devs[[0, 3]], b"k" * 32, True)
    assert alone is not None and np.array_equal(alone, d1[[0, 3]])
    # the polars text path lays the same words out another way
    distinct = ["40101", "40102", "401011"]
    which = np.array([0, 1, 2, 0])
    tk, td = text_device_hashes(distinct, which, pl.Series([d.decode() for d in devs]),
                                b"k" * 32, True)
    assert np.array_equal(tk, k1) and td is not None and np.array_equal(td, d1)
    assert fast_device_hashes(ops, devs, b"k" * 32, False)[1] is None
    words, length = device_words(ops, devs)
    assert np.array_equal(device_draw_hashes(words, length), d1)


def test_reference_population_places_border_devices_and_fit_keeps_it() -> None:
    """``reference`` weighs by the calibration's people; without people it is the site rule;
    fitted factor rows carry the population they were fitted to."""
    regions = _two_regions()
    lat, lon = _grid()
    engine = Engine(regions, EngineConfig(res=8))
    engine.load_cell_plan(["40101"] * lat.size, [f"c{i}" for i in range(lat.size)], lat, lon)
    assert apportion_plan(engine, "reference", None) == "site"
    assert engine.plan is not None and engine.plan.footprints is None
    assert apportion_plan(engine, "reference", {"west": 3000, "east": 1000}) == "reference"
    fp = engine.plan.footprints
    assert fp is not None
    w = fp.matrix(regions.n + 1)[np.isclose(lon, BORDER_LON)]
    assert np.allclose(w[:, 0], 0.75, atol=0.02)
    with pytest.raises(ValueError, match="unknown footprint rule"):
        apportion_plan(engine, "registry", {"west": 1})
    rows = fit_factors(regions, {"west": 3000, "east": 1000}, np.array([0, 0, 1]),
                       np.ones(3))
    assert Calibration(rows).people() == {"west": 3000.0, "east": 1000.0}
    assert Calibration([FactorRow("west", ANY, 2.0)]).people() == {}
    with pytest.raises(ValueError, match=r"people is allowed only on REGION,\* rows"):
        FactorRow(ANY, ANY, 2.0, 0.0, 10.0)
    with pytest.raises(ValueError, match="people must be > 0"):
        FactorRow("west", ANY, 2.0, 0.0, 0.0)


def test_sites_whose_footprint_meets_no_border_are_skipped_without_changing_a_polygon() -> None:
    regions = _two_regions()
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(50.6, 51.4, 400), rng.uniform(71.1, 71.9, 400)
    group = rng.integers(0, 2, 400)
    fwd, _ = _project(float(lat.mean()), float(lon.mean()))
    parts = region_parts(regions, fwd)
    full = footprint_polygons(lat, lon, group, fwd)
    skipped = footprint_polygons(lat, lon, group, fwd, border=_borders(parts))
    kept = skipped != None  # noqa: E711 (elementwise)
    assert 0 < kept.sum() < len(lat)  # some sites are near the border, most are not
    assert all(shapely.equals(a, b) for a, b in zip(full[kept], skipped[kept], strict=True))
    for poly in full[~kept]:  # each skipped footprint lies within a single region's part
        assert sum(shapely.intersects(poly, p) and shapely.area(shapely.intersection(poly, p)) > 0
                   for p in parts) == 1


def test_skipping_footprints_off_every_border_changes_no_weight() -> None:
    """Sites spread over nested regions, across the outer edge (unassigned) and at one site's
    row twice: the weights, points and thresholds are the same bits whether the footprints
    away from every border are cut by the regions or set aside unread."""
    def box(lon0: float, lat0: float, lon1: float, lat1: float) -> np.ndarray:
        return np.array([[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]])
    regions = RegionSet([
        Region("west", "West", None, True, (box(71.0, 50.5, BORDER_LON, 51.5),)),
        Region("east", "East", None, True, (box(BORDER_LON, 50.5, 72.0, 51.5),)),
        Region("town", "Town", "east", True, (box(71.7, 50.9, 71.8, 51.0),))])
    rng = np.random.default_rng(11)
    lat, lon = rng.uniform(50.4, 51.6, 900), rng.uniform(70.9, 72.1, 900)
    lat[1], lon[1] = lat[0], lon[0]  # two rows (sectors) at one site
    group = rng.integers(0, 3, 900)
    for density in (None, np.array([2.0, 1.0, 5.0, 0.5])):
        fast = footprint_weights(lat, lon, group, regions, density)
        full = footprint_weights(lat, lon, group, regions, density, skip_interior=False)
        assert 0 < len(fast.border_rows()) < 900
        for name in ("ptr", "region", "weight", "lat", "lon", "thr"):
            assert np.array_equal(getattr(fast, name), getattr(full, name), equal_nan=True), name
