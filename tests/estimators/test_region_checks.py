"""Regions GeoJSON checks: each kind of broken file refused with its reason, suspicious files
warned about, valid files (the project's scenarios) accepted, and the shapely lookup giving the
same regions as the even-odd rule it replaced, borders included.

Field cases 05 (unclosed ring, overlapping MultiPolygon parts) and 06 (EPSG:3857 metres, swapped
[lat, lon]) run through ``defacto replay`` with their files in ``tests/data/regions_0*``.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators.region_checks import region_warnings
from estimators.regions import RegionSet, regions_from_geojson
from stream.cli import main
from stream.simulator import load_scenario, simulate

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z


def box(lon0: float, lat0: float, lon1: float, lat1: float) -> list[list[float]]:
    """A closed counter-clockwise ring around a lon/lat box."""
    return [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]


def feat(rid: str, coordinates: Any, parent: str | None = None,
         kind: str = "Polygon") -> dict[str, Any]:
    props: dict[str, Any] = {"id": rid, "name": rid.upper()}
    if parent:
        props["parent"] = parent
    return {"type": "Feature", "properties": props,
            "geometry": {"type": kind, "coordinates": coordinates}}


def fc(*features: Any, **members: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features), **members}


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


SQ = box(70, 50, 73, 53)
BROKEN: dict[str, tuple[Callable[[], Any], str]] = {
    # structure
    "not an object": (lambda: [], r"^expected a GeoJSON FeatureCollection object, got a list$"),
    "a Feature": (lambda: feat("a", [SQ]),
                  r'^expected a GeoJSON FeatureCollection, got type "Feature"$'),
    "features an object": (lambda: {"type": "FeatureCollection", "features": {"a": 1}},
                           r"^'features' must be a list of Feature objects$"),
    "no features": (lambda: fc(), r"^the FeatureCollection has no features$"),
    "feature a string": (lambda: fc("x"), r"^feature #1: expected a GeoJSON Feature object$"),
    "no properties": (lambda: fc({"type": "Feature", "geometry": None}),
                      r"^feature #1: properties must be an object with id and name$"),
    "geometry null": (lambda: fc(feat("a", None) | {"geometry": None}),
                      r"^feature 'a' \(#1\): geometry must be Polygon or MultiPolygon, got null$"),
    "coordinates a number": (lambda: fc(feat("a", 5)),
                             r"^feature 'a' \(#1\): coordinates must be a list of rings \(lists of "
                             r"\[lon, lat\] positions\), got 5$"),
    "ring a string": (lambda: fc(feat("a", ["abc"])),
                      r"^feature 'a' \(#1\): ring 1 must be a list of \[lon, lat\] positions"),
    # positions
    "NaN vertex": (lambda: fc(feat("a", [[[70, 50], [math.nan, 50], [73, 53], [70, 50]]])),
                   r"^feature 'a' \(#1\): ring 1 position 2 is \[NaN, 50\], not finite"),
    "null vertex": (lambda: fc(feat("b", [[[None, 50], [73, 50], [73, 53], [None, 50]]])),
                    r"^feature 'b' \(#1\): ring 1 position 1 is \[null, 50\], not \[lon, lat\]"),
    "Infinity": (lambda: fc(feat("a", [[[70, 50], [73, 50], [73, math.inf], [70, 50]]])),
                 r"ring 1 position 3 is \[73, Infinity\], not finite"),
    "text number": (lambda: fc(feat("a", [[["70", 50], [73, 50], [73, 53], ["70", 50]]])),
                    r"ring 1 position 1 is \[\"70\", 50\], not \[lon, lat\] numbers"),
    "boolean": (lambda: fc(feat("a", [[[70, 50], [73, True], [73, 53], [70, 50]]])),
                r"ring 1 position 2 is \[73, true\]"),
    "lone number": (lambda: fc(feat("a", [[[70, 50], [73], [73, 53], [70, 50]]])),
                    r"ring 1 position 2 is \[73\], not \[lon, lat\] numbers"),
    "integer beyond float": (lambda: fc(feat("a", [[[70, 50], [10**400, 50], [73, 53],
                                                    [70, 50]]])),
                             r"ring 1 position 2 is \[1000.*, not finite"),
    "metres, no crs": (lambda: fc(feat("a", [[[7.9e6, 6.6e6], [8.0e6, 6.6e6], [8.0e6, 6.8e6],
                                                [7.9e6, 6.6e6]]])),
                       r"coordinates look like metres \(EPSG:3857\?\): \|x\| up to 8\.0e6; "
                       r"RFC 7946 requires WGS84 lon/lat degrees"),
    "lat beyond 90 (swapped)": (lambda: fc(feat("a", [[[50, 170], [53, 170], [53, 173],
                                                         [50, 170]]])),
                                r"position \[50\.0, 170\.0\] has latitude beyond ±90: are "
                                r"positions \[lat, lon\]\?"),
    "longitudes 0..360": (lambda: fc(feat("a", [box(179, 60, 181, 61)])),
                          r"position \[181\.0, 60\.0\] has longitude beyond ±180"),
    "coordinates x10": (lambda: fc(feat("a", [box(700, 500, 730, 530)])),
                        r"position \[700\.0, 500\.0\] is outside lon \[-180, 180\] / lat \[-90, 90\]"),
    # rings
    "unclosed": (lambda: fc(feat("east", [box(71.5, 51.1, 71.6, 51.2)[:-1]])),
                 r"^feature 'east' \(#1\): ring 1 is not closed \(first \[71\.5, 51\.1\], last "
                 r"\[71\.5, 51\.2\]\)"),
    "unclosed hole of the 2nd feature": (
        lambda: fc(feat("a", [SQ]), feat("b", [box(60, 40, 65, 45), box(61, 41, 62, 42)[:-1]])),
        r"^feature 'b' \(#2\): ring 2 is not closed"),
    "unclosed part of a MultiPolygon": (
        lambda: fc(feat("a", [[SQ], [box(75, 50, 76, 51)[:-1]]], kind="MultiPolygon")),
        r"^feature 'a' \(#1\): polygon 2 ring 1 is not closed"),
    "three positions": (lambda: fc(feat("a", [[[70, 50], [73, 50], [70, 50]]])),
                        r"ring 1 has 3 positions; a ring needs at least 4"),
    "antimeridian unsplit": (lambda: fc(feat("chukotka", [[[179, 65], [-179, 65], [-179, 66],
                                                           [179, 66], [179, 65]]])),
                             r"^feature 'chukotka' \(#1\): ring 1 crosses the antimeridian "
                             r"unsplit \(edge \[179\.0, 65\.0\] to \[-179\.0, 65\.0\]\)"),
    # polygons
    "bow tie": (lambda: fc(feat("a", [[[70, 50], [73, 53], [73, 50], [70, 53], [70, 50]]])),
                r"^feature 'a' \(#1\): self-intersection at \[71\.5, 51\.5\]"),
    "hole outside the exterior": (lambda: fc(feat("a", [SQ, box(74, 50, 75, 51)])),
                                  r"a hole lies outside its exterior ring at \[74\.0, 50\.0\]"),
    "hole splitting the polygon": (lambda: fc(feat("a", [SQ, box(70, 51, 73, 52)])),
                                   r"^feature 'a' \(#1\): (self-intersection|holes cut)"),
    "MultiPolygon parts overlapping": (
        lambda: fc(feat("a", [[box(71, 51, 72, 52)], [box(71.5, 51, 72.5, 52)]],
                        kind="MultiPolygon")),
        r"^feature 'a' \(#1\): polygons 1 and 2 overlap \(3,848 km², 50 % of the smaller\)"),
    "MultiPolygon part inside another": (
        lambda: fc(feat("a", [[SQ], [box(71, 51, 72, 52)]], kind="MultiPolygon")),
        r"polygons 1 and 2 overlap \(7,697 km², 100 % of the smaller\)"),
    # layout
    "siblings overlapping": (lambda: fc(feat("a", [SQ]), feat("b", [box(72, 50, 75, 53)])),
                             r"^features 'a' \(#1\) and 'b' \(#2\) overlap \([\d,]+ km², 33\.3 % "
                             r"of 'a'\)"),
    "identical siblings": (lambda: fc(feat("a", [SQ]), feat("b", [SQ])),
                           r"^features 'a' \(#1\) and 'b' \(#2\) overlap \([\d,]+ km², 100 %"),
    "children overlapping": (lambda: fc(feat("p", [SQ]), feat("c1", [box(70, 50, 72, 53)], "p"),
                                        feat("c2", [box(71, 50, 73, 53)], "p")),
                             r"^features 'c1' \(#2\) and 'c2' \(#3\) overlap"),
    "child 40 % outside its parent": (
        lambda: fc(feat("p", [box(70, 50, 71, 51)]), feat("c", [box(70.4, 50, 71.4, 51)], "p")),
        r"^feature 'c' \(#2\) lies 40 % outside its parent 'p' \(#1\) \(3,146 km²\)"),
    "child far from its parent": (
        lambda: fc(feat("p", [box(60, 40, 61, 41)]), feat("a", [SQ], "p")),
        r"^feature 'a' \(#2\) lies 100 % outside its parent 'p'"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_each_kind_of_broken_file_is_refused_in_one_line(kind: str) -> None:
    build, message = BROKEN[kind]
    with pytest.raises(ValueError, match=message) as err:
        regions_from_geojson(build())
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=message):  # the same answer from region_warnings
        region_warnings(build())


def test_hierarchy_errors_come_before_geometry_ones() -> None:
    with pytest.raises(ValueError, match="duplicate region ids: a"):
        regions_from_geojson(fc(feat("a", [SQ]), feat("a", [SQ])))
    with pytest.raises(ValueError, match="parent cycle"):
        regions_from_geojson(fc(feat("a", [SQ], "b"), feat("b", [SQ], "a")))


WARNED: dict[str, tuple[dict[str, Any], str]] = {
    "sliver between siblings": (
        fc(feat("a", [box(70, 50, 72.0001, 52)]), feat("b", [box(72, 50, 74, 52)])),
        r"^1 pair\(s\) of sibling regions overlap slightly \(largest: 'a' and 'b', 1\.\d+ km², "
        r"0\.00\d+ % of '[ab]'\); a cell there counts in the first of the two in file order$"),
    "child slightly beyond its parent": (
        fc(feat("p", [box(70, 50, 72, 52)]), feat("c", [box(71, 50, 72.0001, 52)], "p")),
        r"^1 region\(s\) extend slightly beyond their parent \(largest: 'c', 0\.01 % outside "
        r"'p'\)"),
    "ring touching itself": (fc(feat("a", [[[70, 50], [72, 50], [72, 52], [71, 50], [70, 52],
                                            [70, 50]]])),
                             r"^feature 'a' \(#1\): a ring touches itself at \[71\.0, 50\.0\]"),
    "crs other than WGS84": (fc(feat("a", [SQ]), crs={"type": "name", "properties": {
                                 "name": "urn:ogc:def:crs:EPSG::4258"}}),
                             r"^the file declares crs 'urn:ogc:def:crs:EPSG::4258'; RFC 7946 "
                             r"coordinates are always WGS84 lon/lat, so it is ignored$"),
    "larger than any country": (fc(feat("world", [box(-180, -85, 180, 85)])),
                                r"^feature 'world' \(#1\) covers [\d,]+ km², more than any "
                                r"country"),
    "[lat, lon] swapped": (load("regions_06_latlon_swapped.geojson"),
                           r"^every region lies beyond 60° latitude \(e\.g\. 'east' at 71\.5° N\)"
                           r".* are positions \[lat, lon\]\? RFC 7946 requires \[lon, lat\]$"),
}


@pytest.mark.parametrize("kind", sorted(WARNED))
def test_suspicious_files_load_with_one_warning(kind: str) -> None:
    doc, message = WARNED[kind]
    regions = regions_from_geojson(copy.deepcopy(doc))
    assert len(regions.warnings) == 1, regions.warnings
    assert regions.warnings[0] == region_warnings(regions)[0]
    assert region_warnings(copy.deepcopy(doc)) == list(regions.warnings)
    assert re.search(message, regions.warnings[0]), regions.warnings[0]


@pytest.mark.parametrize("crs", ["urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4326",
                                 "urn:ogc:def:crs:EPSG::4326"])
def test_wgs84_crs_members_and_altitudes_are_fine(crs: str) -> None:
    ring = [[70, 50, 350.0], [73, 50], [73, 53, 1.5], [70, 53], [70, 50, 350.0]]
    doc = fc(feat("a", [ring]), crs={"type": "name", "properties": {"name": crs}})
    regions = regions_from_geojson(doc)
    assert regions.warnings == ()
    assert regions.ids[int(regions.locate(np.array([51.0]), np.array([71.0]))[0])] == "a"


@pytest.mark.parametrize("east_edge", [71.0, 71.00001])  # parts touching; overlapping by <1 m
def test_multipolygon_parts_touching_or_overlapping_by_a_sliver_hold_every_point(
        east_edge: float) -> None:
    doc = fc(feat("a", [[box(70, 50, east_edge, 51)], [box(71, 50, 72, 51)]],
                  kind="MultiPolygon"))
    regions = regions_from_geojson(doc)
    assert regions.warnings == ()
    lat = np.full(4, 50.5)
    lon = np.array([71.000005, 71.0, 70.5, 71.5])  # sliver, shared edge, first, second part
    assert regions.locate(lat, lon).tolist() == [0, 0, 0, 0]


def test_bands_around_the_world_are_not_antimeridian_crossings() -> None:
    doc = fc(feat("south", [[[-180, -90], [180, -90], [180, -60], [-180, -60], [-180, -90]]]),
             feat("east", [box(170, 60, 180, 70)]), feat("west", [box(-180, 60, -170, 70)]))
    regions = regions_from_geojson(doc)
    got = regions.locate(np.array([-70.0, 65.0, 65.0]), np.array([0.0, 175.0, -175.0]))
    assert [regions.ids[i] for i in got] == ["south", "east", "west"]


# --- whatever the file holds: a RegionSet or one ValueError line -----------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**400, 10**400) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20)
NEST = fc(feat("p", [box(70, 50, 73, 53), box(71, 51, 71.5, 51.5)]),
          feat("c", [[box(70, 50, 71, 51)], [box(72, 52, 73, 53)]], "p", kind="MultiPolygon"))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        out += [p for k, v in value.items() for p in _paths(v, (*path, k))]
    elif isinstance(value, list):
        out += [p for k, v in enumerate(value) for p in _paths(v, (*path, k))]
    return out


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), JSON_VALUES), min_size=1, max_size=3))
def test_any_mutation_of_a_file_is_loaded_or_refused_in_one_line(
        edits: list[tuple[int, Any]]) -> None:
    doc: Any = copy.deepcopy(NEST)
    for where, value in edits:
        paths = _paths(doc)
        path = paths[where % len(paths)]
        if not path:
            doc = value
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    try:
        regions = regions_from_geojson(doc)
    except ValueError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
    else:
        assert all("\n" not in w and len(w) < 400 for w in regions.warnings)
        regions.locate(np.array([50.5, 51.2]), np.array([70.5, 71.2]))


# --- the project's own regions -------------------------------------------------------------

@pytest.fixture(scope="module", params=["astana", "kz"])
def scenario_regions(request: pytest.FixtureRequest) -> dict[str, Any]:
    return simulate(load_scenario(request.param), scale=0.0005, days=1 / 24,
                    seed=1).regions_geojson


def test_the_scenarios_load_without_warnings(scenario_regions: dict[str, Any]) -> None:
    regions = regions_from_geojson(scenario_regions)
    assert regions.warnings == ()
    assert region_warnings(scenario_regions) == []
    assert regions.n == len(scenario_regions["features"])


def even_odd_locate(regions: RegionSet, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """The lookup as it was before shapely: deepest region first, even-odd over all rings."""
    out = np.full(lat.shape, regions.unassigned, dtype=np.int32)
    todo = np.ones(lat.shape, dtype=bool)
    for i in sorted(range(regions.n), key=lambda i: -int(regions.depth[i])):
        inside = np.zeros(lat.shape, dtype=bool)
        for ring in regions.regions[i].rings:
            for a, b, c, d in zip(ring[:-1, 0], ring[:-1, 1], ring[1:, 0], ring[1:, 1],
                                  strict=True):
                if b == d:
                    continue
                crosses = (b > lat) != (d > lat)
                x_cross = a + (lat - b) * (c - a) / (d - b)
                inside ^= crosses & (lon < x_cross)
        hit = todo & inside
        out[hit] = i
        todo[hit] = False
    return out


def test_lookup_matches_the_even_odd_rule_it_replaced(scenario_regions: dict[str, Any]) -> None:
    regions = regions_from_geojson(scenario_regions)
    vertices = np.concatenate([ring[:-1] for r in regions.regions for ring in r.rings])
    rng = np.random.default_rng(7)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    scattered = lo + rng.random((4000, 2)) * (hi - lo)
    near = vertices[rng.integers(0, len(vertices), 2000)] + rng.normal(0, 1e-4, (2000, 2))
    points = np.concatenate([scattered, near])
    lat, lon = points[:, 1], points[:, 0]
    got = regions.locate(lat, lon)
    assert np.array_equal(got, even_odd_locate(regions, lat, lon))
    leaves = set(range(regions.n)) - set(regions.parent_index.tolist())
    assert leaves <= set(got.tolist())


def test_shared_borders_of_the_astana_districts_match_the_even_odd_rule() -> None:
    # the simulator's sectors and rings share their borders exactly: every vertex lies on one
    regions = regions_from_geojson(simulate("astana", scale=0.0005, days=1 / 24,
                                            seed=1).regions_geojson)
    vertices = np.concatenate([ring[:-1] for r in regions.regions for ring in r.rings])
    lat, lon = vertices[:, 1], vertices[:, 0]
    got = regions.locate(lat, lon)
    assert np.array_equal(got, even_odd_locate(regions, lat, lon))
    assert len(set(got.tolist())) >= 5


def test_points_on_both_sides_of_a_border_land_right() -> None:
    # west | east share lon 71.5; inside east, 'north' sits on 'south' along lat 51.5
    doc = fc(feat("west", [box(70.5, 51, 71.5, 52)]), feat("east", [box(71.5, 51, 72.5, 52)]),
             feat("south", [box(71.5, 51, 72.5, 51.5)], "east"),
             feat("north", [box(71.5, 51.5, 72.5, 52)], "east"))
    regions = regions_from_geojson(doc)
    eps = 1e-9
    cases = [
        (51.2, 71.5 - eps, "west"), (51.2, 71.5 + eps, "south"),
        (51.5 - eps, 72.0, "south"), (51.5 + eps, 72.0, "north"),
        (51.2, 71.5, "south"),           # on the west|east border: the region to its east
        (51.5, 72.0, "north"),           # on the south/north border: the region to its north
        (51.5, 71.5, "north"),           # on a corner shared by three regions
        (51.5, 70.5, "west"),            # on the west region's outer border (west side)
        (51.5, 72.5, "unassigned"),      # on the east region's outer border (east side)
        (52.0, 71.0, "unassigned"),      # on the top border
        (51.0, 71.0, "west"),            # on the bottom border
        (51.2, 70.4, "unassigned"),
    ]
    lat = np.array([c[0] for c in cases])
    lon = np.array([c[1] for c in cases])
    assert [regions.ids[i] for i in regions.locate(lat, lon)] == [c[2] for c in cases]
    assert np.array_equal(regions.locate(lat, lon), even_odd_locate(regions, lat, lon))


def test_a_boundary_of_200k_vertices_is_quick_to_query() -> None:
    th = np.linspace(0, 2 * np.pi, 200_000, endpoint=False)
    ring = np.c_[71.5 + np.cos(th), 51.5 + 0.7 * np.sin(th)]
    ring = np.vstack([ring, ring[:1]])
    regions = regions_from_geojson(fc(feat("a", [ring.tolist()])))
    rng = np.random.default_rng(3)
    lat, lon = 51.5 + rng.uniform(-0.8, 0.8, 20_000), 71.5 + rng.uniform(-1.1, 1.1, 20_000)
    start = time.perf_counter()
    got = regions.locate(lat, lon)
    took = time.perf_counter() - start
    r2 = (lon - 71.5) ** 2 + ((lat - 51.5) / 0.7) ** 2
    assert (got[r2 < 0.999] == 0).all() and (got[r2 > 1.001] == 1).all()
    assert took < 1.0  # ~10 ms; the even-odd loop over edges took ~0.9 s per point


# --- field cases 05 and 06 through `defacto replay` ----------------------------------------

def _pings(path: Path, spots: dict[str, tuple[float, float]], per_spot: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for k in range(per_spot):
            for name, (lat, lon) in spots.items():
                fh.write(json.dumps({"device": f"{name}{k:02d}", "ts": T0 + k * 1000,
                                     "operator": "40101", "home_mcc": 401, "lat": lat,
                                     "lon": lon}) + "\n")
    return path


def _replay(tmp_path: Path, pings: Path, regions: str, capsys: pytest.CaptureFixture[str],
            ) -> tuple[int, dict[str, Any] | None, list[str]]:
    out = tmp_path / f"{regions}.snap.jsonl"
    rc = main(["replay", str(pings), "--regions", str(DATA / regions), "--k", "1",
               "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("defacto: error")]
    errors += [line for line in err if line.startswith("defacto: warning") and "regions" in line]
    last = json.loads(out.read_text().splitlines()[-1])["regions"] if rc == 0 else None
    return rc, last, errors


def test_field_case_05_unclosed_ring_and_overlapping_parts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pings = _pings(tmp_path / "p.jsonl", {"in": (51.5, 71.5), "out": (51.5, 70.5)}, 20)
    rc, last, _ = _replay(tmp_path, pings, "regions_05_closed.geojson", capsys)
    assert rc == 0 and last is not None
    assert (last["east"]["present"], last["unassigned"]["present"]) == (20, 20)

    rc, _, errors = _replay(tmp_path, pings, "regions_05_unclosed.geojson", capsys)
    assert rc == 2 and len(errors) == 1
    assert errors[0].endswith("regions_05_unclosed.geojson: feature 'east' (#1): ring 1 is not "
                              "closed (first [72.0, 52.0], last [72.0, 51.0]); RFC 7946 §3.1.6: "
                              "a ring ends at its first position")

    three = _pings(tmp_path / "p3.jsonl", {"only1": (51.5, 71.25), "both": (51.5, 71.75),
                                           "only2": (51.5, 72.25)}, 10)
    rc, _, errors = _replay(tmp_path, three, "regions_05_overlapping_multipolygon.geojson",
                            capsys)
    assert rc == 2 and len(errors) == 1
    assert "feature 'a' (#1): polygons 1 and 2 overlap (3,848 km², 50 % of the smaller)" \
        in errors[0]


def test_field_case_06_projected_crs_and_swapped_axes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pings = _pings(tmp_path / "p.jsonl", {"in": (51.5, 71.5), "out": (51.5, 70.5)}, 20)
    rc, last, _ = _replay(tmp_path, pings, "regions_06_wgs84.geojson", capsys)
    assert rc == 0 and last is not None
    assert (last["east"]["present"], last["unassigned"]["present"]) == (20, 20)
    assert regions_from_geojson(load("regions_06_wgs84.geojson")).warnings == ()

    rc, _, errors = _replay(tmp_path, pings, "regions_06_epsg3857.geojson", capsys)
    assert rc == 2 and len(errors) == 1
    assert errors[0].endswith("regions_06_epsg3857.geojson: feature 'east' (#1): coordinates "
                              "look like metres (urn:ogc:def:crs:EPSG::3857): |x| up to 8.0e6; "
                              "RFC 7946 requires WGS84 lon/lat degrees (reproject to EPSG:4326)")

    # swapped [lat, lon] are valid degrees: loaded (everyone unassigned), with a warning
    rc, last, warned = _replay(tmp_path, pings, "regions_06_latlon_swapped.geojson", capsys)
    assert rc == 0 and last is not None and last["unassigned"]["present"] == 40
    assert len(warned) == 1 and "regions_06_latlon_swapped.geojson: every region lies" in warned[0]
    swapped = region_warnings(load("regions_06_latlon_swapped.geojson"))
    assert len(swapped) == 1 and "are positions [lat, lon]?" in swapped[0]
