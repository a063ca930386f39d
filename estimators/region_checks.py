"""Checks of a regions GeoJSON file: RFC 7946 structure and the geometry of every region.

A regions file decides where every person is counted, so a broken one is refused with one line
(a ``ValueError`` naming the feature by its id and its number, counted from 1 in file order)
rather than silently moving people to ``unassigned`` or to the wrong region. Refused:

* structure: not a FeatureCollection of Feature objects; missing or non-string ``properties.id``
  / ``name``; ``parent`` not a string, ``urban`` not a boolean; a geometry that is not a Polygon
  or MultiPolygon, or whose ``coordinates`` do not nest as polygons > rings > positions;
* positions: not ``[lon, lat]`` numbers (``null``, text, a lone number), not finite (NaN,
  Infinity), outside lon [-180, 180] / lat [-90, 90] (the message says when they look like metres
  of a projected CRS such as EPSG:3857, like ``[lat, lon]``, or like 0..360 longitudes);
* rings: fewer than 4 positions, not closed (first position != last, RFC 7946 §3.1.6), an edge
  spanning more than 180° of longitude (a ring crossing the antimeridian without being split,
  §3.1.9);
* polygons: invalid in OGC Simple Features (``shapely.is_valid_reason``: self-intersection,
  a hole outside its exterior, nested holes, holes cutting the interior in pieces, too few
  distinct points), with the place;
* layout: two parts of one MultiPolygon, or two sibling regions (same parent, or both top-level),
  overlapping by more than :data:`SHARE_TOLERANCE` of the smaller one; a region lying more than
  :data:`SHARE_TOLERANCE` outside its parent.

Warned (strings for the caller to print; the file is used as it is): overlaps and parts outside
the parent above :data:`NOISE_KM2` but within the tolerance (digitization slivers; one line per
kind); a ring that touches itself at a point (invalid in OGC terms, unambiguous for counting);
every region poleward of :data:`POLAR_LAT` while every longitude is within ±90 (positions may be
``[lat, lon]``); a region larger than :data:`LARGEST_REGION_KM2`; a legacy ``crs`` member that is
not WGS84 (ignored: RFC 7946 coordinates are always WGS84 lon/lat).

Areas are km² on a sphere of radius :data:`EARTH_RADIUS_KM` (sinusoidal equal-area projection
of the vertices). Geometry work is shapely's (GEOS); the loaders' I/O stays in ``stream``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

if TYPE_CHECKING:
    from estimators.regions import RegionSet

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), for areas."""
SHARE_TOLERANCE = 0.01
"""Overlap (of the smaller region) or part outside the parent (of the child) refused above this."""
NOISE_KM2 = 1e-4
"""Overlaps and parts outside the parent up to 100 m² are rounding noise: neither refused nor warned."""
LARGEST_REGION_KM2 = 2.0e7
"""A region larger than this (Russia, the largest country, is 1.7e7 km²) is warned about."""
POLAR_LAT = 60.0
"""All regions poleward of this latitude, with every |lon| <= 90, suggests swapped [lat, lon]."""
METRES_ABOVE = 1000.0
"""A coordinate beyond this magnitude is taken for metres of a projected CRS, not degrees."""
_NUMBER_TYPES = {int, float}
_GEOS_REASON = re.compile(r"^(?P<kind>[^\[]*)\[(?P<x>\S+) (?P<y>[^\]]+)\]$")
_REASON_TEXT = {
    "Self-intersection": "self-intersection",
    "Hole lies outside shell": "a hole lies outside its exterior ring",
    "Nested holes": "a hole lies inside another hole",
    "Interior is disconnected": "holes cut the polygon into pieces",
    "Too few points": "a ring has fewer than 3 distinct positions",
    "Duplicate Rings": "a ring is repeated",
    "Nested shells": "a part lies inside another part",
}
_SELF_TOUCH = "Ring Self-intersection"


@dataclass(frozen=True)
class RegionFeature:
    """One feature of a regions file, read and checked.

    ``polygons`` holds, per polygon, its closed (k, 2) float64 lon/lat rings (exterior first,
    then holes) exactly as written; ``geometry`` is the shapely Polygon or MultiPolygon of those
    polygons (their union when parts overlap within the tolerance), used for lookups.
    """

    number: int
    id: str
    name: str
    parent: str | None
    urban: bool | None
    polygons: tuple[tuple[np.ndarray, ...], ...] = field(repr=False)
    geometry: shapely.Geometry = field(repr=False)

    @property
    def label(self) -> str:
        """How messages name the feature: ``feature 'east' (#2)``."""
        return f"feature {_id(self.id)} (#{self.number})"

    @property
    def rings(self) -> tuple[np.ndarray, ...]:
        """Every ring of every polygon, in file order."""
        return tuple(ring for polygon in self.polygons for ring in polygon)


def read_features(doc: Any) -> tuple[list[RegionFeature], list[str]]:
    """Read and check every feature of a parsed regions FeatureCollection on its own.

    Returns the features and the warnings found so far; raises ``ValueError`` (one line) for the
    first broken feature. Checks between features are :func:`check_layout`'s.
    """
    if not isinstance(doc, Mapping):
        raise ValueError(f"expected a GeoJSON FeatureCollection object, got a "
                         f"{type(doc).__name__}")
    if doc.get("type") != "FeatureCollection":
        raise ValueError(f"expected a GeoJSON FeatureCollection, got type {_show(doc.get('type'))}")
    items = doc.get("features")
    if not isinstance(items, list):
        raise ValueError("'features' must be a list of Feature objects")
    if not items:
        raise ValueError("the FeatureCollection has no features")
    crs = _crs_name(doc)
    raw = [_read_feature(k, item) for k, item in enumerate(items, start=1)]
    _check_degrees(raw, crs)
    warnings: list[str] = []
    if crs is not None and not _is_wgs84(crs):
        warnings.append(f"the file declares crs {crs!r}; RFC 7946 coordinates are always WGS84 "
                        "lon/lat, so it is ignored")
    features = [_checked(f, warnings) for f in raw]
    return features, warnings


def check_layout(features: Sequence[RegionFeature]) -> list[str]:
    """Check regions against each other: sibling overlaps, children inside parents, plausibility.

    Raises ``ValueError`` for an overlap or a part outside the parent beyond
    :data:`SHARE_TOLERANCE`; returns the warnings. Parents unknown to the set are skipped (the
    region set reports them).
    """
    geoms = np.array([f.geometry for f in features], dtype=object)
    areas = _km2(geoms)
    warnings = _sibling_overlaps(features, geoms, areas) + _outside_parents(features, geoms, areas)
    warnings += [f"{f.label} covers {_area(a)}, more than any country: are the coordinates "
                 "WGS84 degrees?" for f, a in zip(features, areas, strict=True)
                 if a > LARGEST_REGION_KM2]
    swap = _swap_warning(features, geoms)
    return warnings + ([swap] if swap else [])


def region_warnings(regions: Mapping[str, Any] | RegionSet) -> list[str]:
    """The warnings about a regions file: plausible but suspicious content, one line each.

    ``regions`` is a parsed GeoJSON document (checked here; raises ``ValueError`` if broken) or a
    :class:`~estimators.regions.RegionSet` built by ``regions_from_geojson`` (its stored
    warnings, no recomputation).
    """
    if isinstance(regions, Mapping) or not hasattr(regions, "warnings"):
        features, warnings = read_features(regions)
        return warnings + check_layout(features)
    return list(regions.warnings)


@dataclass(frozen=True)
class _Raw:
    number: int
    id: str
    name: str
    parent: str | None
    urban: bool | None
    multi: bool
    polygons: tuple[tuple[np.ndarray, ...], ...]

    @property
    def label(self) -> str:
        return f"feature {_id(self.id)} (#{self.number})"

    def where(self, polygon: int, ring: int | None = None) -> str:
        """``feature 'a' (#1): polygon 2 ring 1`` (the polygon only for a MultiPolygon)."""
        parts = ([f"polygon {polygon}"] if self.multi else []) + \
                ([f"ring {ring}"] if ring is not None else [])
        return f"{self.label}: {' '.join(parts)}" if parts else self.label


def _read_feature(k: int, item: Any) -> _Raw:
    if not isinstance(item, Mapping) or item.get("type") != "Feature":
        raise ValueError(f"feature #{k}: expected a GeoJSON Feature object")
    props = item.get("properties")
    if not isinstance(props, Mapping):
        raise ValueError(f"feature #{k}: properties must be an object with id and name")
    rid = props.get("id")
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"feature #{k} has no string properties.id")
    label = f"feature {_id(rid)} (#{k})"
    name = props.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{label}: properties.name must be a non-empty string")
    parent = props.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise ValueError(f"{label}: properties.parent must be a region id string")
    urban = props.get("urban")
    if urban is not None and not isinstance(urban, bool):
        raise ValueError(f"{label}: properties.urban must be true or false")
    geometry = item.get("geometry")
    kind = geometry.get("type") if isinstance(geometry, Mapping) else None
    if kind not in ("Polygon", "MultiPolygon"):
        shown = kind if isinstance(geometry, Mapping) else geometry
        raise ValueError(f"{label}: geometry must be Polygon or MultiPolygon, got {_show(shown)}")
    coords = geometry.get("coordinates")
    multi = kind == "MultiPolygon"
    polygons = coords if multi else [coords]
    if not isinstance(polygons, list) or not polygons:
        raise ValueError(f"{label}: coordinates must be a list of polygons, got {_show(coords)}")
    raw = _Raw(k, rid, name, parent, urban, multi, ())
    read = []
    for p, polygon in enumerate(polygons, start=1):
        if not isinstance(polygon, list) or not polygon:
            raise ValueError(f"{raw.where(p)}: coordinates must be a list of rings (lists of "
                             f"[lon, lat] positions), got {_show(polygon)}")
        read.append(tuple(_read_ring(ring, raw.where(p, r))
                          for r, ring in enumerate(polygon, start=1)))
    return _Raw(k, rid, name, parent, urban, multi, tuple(read))


def _read_ring(ring: Any, where: str) -> np.ndarray:
    """A closed ring of >= 4 finite [lon, lat] positions as a (k, 2) float64 array."""
    arr = None
    if isinstance(ring, list):
        try:  # fast path: every element of every position is a JSON number
            if set(map(type, chain.from_iterable(ring))) <= _NUMBER_TYPES:
                arr = np.array(ring, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # ragged, or an integer beyond float
            arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] < 2:
        if not isinstance(ring, list):
            raise ValueError(f"{where} must be a list of [lon, lat] positions, got {_show(ring)}")
        for j, pos in enumerate(ring, start=1):
            if not (isinstance(pos, list | tuple) and len(pos) >= 2
                    and all(_is_number(v) for v in pos)):
                raise ValueError(f"{where} position {j} is {_show(pos)}, not [lon, lat] numbers")
        arr = np.array([[_float(pos[0]), _float(pos[1])] for pos in ring],
                       dtype=np.float64).reshape(-1, 2)
    arr = np.ascontiguousarray(arr[:, :2])
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise ValueError(f"{where} position {bad[0] + 1} is {_show(ring[bad[0]])}, "
                         "not finite [lon, lat] numbers")
    if arr.shape[0] < 4:
        raise ValueError(f"{where} has {arr.shape[0]} positions; a ring needs at least 4 "
                         "(RFC 7946 §3.1.6)")
    if not np.array_equal(arr[0], arr[-1]):
        raise ValueError(f"{where} is not closed (first {_pos(arr[0])}, last {_pos(arr[-1])}); "
                         "RFC 7946 §3.1.6: a ring ends at its first position")
    return arr


def _check_degrees(features: list[_Raw], crs: str | None) -> None:
    """Refuse coordinates outside WGS84 degrees, saying what they look like."""
    arrays = [(f, ring) for f in features for polygon in f.polygons for ring in polygon]
    top = max(float(np.abs(ring).max()) for _, ring in arrays)
    for f, ring in arrays:
        out = np.flatnonzero((np.abs(ring[:, 0]) > 180.0) | (np.abs(ring[:, 1]) > 90.0))
        if not out.size:
            continue
        x, y = ring[out[0]]
        if top > METRES_ABOVE:
            raise ValueError(f"{f.label}: coordinates look like metres ({crs or 'EPSG:3857?'}): "
                             f"|x| up to "
                             f"{_sci(top)}; RFC 7946 requires WGS84 lon/lat degrees (reproject "
                             "to EPSG:4326)")
        if abs(y) > 90.0 and abs(x) <= 90.0:
            raise ValueError(f"{f.label}: position {_pos(ring[out[0]])} has latitude beyond ±90: "
                             "are positions [lat, lon]? RFC 7946 requires [lon, lat]")
        if 180.0 < abs(x) <= 360.0 and abs(y) <= 90.0:
            raise ValueError(f"{f.label}: position {_pos(ring[out[0]])} has longitude beyond ±180; "
                             "use -180..180 and split rings at the antimeridian (RFC 7946 §3.1.9)")
        raise ValueError(f"{f.label}: position {_pos(ring[out[0]])} is outside lon [-180, 180] / "
                         "lat [-90, 90]; RFC 7946 requires WGS84 lon/lat degrees")


def _checked(f: _Raw, warnings: list[str]) -> RegionFeature:
    """Antimeridian edges and OGC validity of each polygon; overlaps between its parts."""
    parts = []
    for p, polygon in enumerate(f.polygons, start=1):
        for r, ring in enumerate(polygon, start=1):
            # an edge between two points on the antimeridian, or along a pole, is drawn on the
            # plate carrée map as written (e.g. a band around the world): not a crossing
            lon, lat = np.abs(ring[:, 0]), np.abs(ring[:, 1])
            jump = np.abs(np.diff(ring[:, 0])) > 180.0
            jump &= ~((lon[:-1] == 180.0) & (lon[1:] == 180.0))
            jump &= ~((lat[:-1] == 90.0) & (lat[1:] == 90.0))
            if jump.any():
                e = int(np.flatnonzero(jump)[0])
                raise ValueError(f"{f.where(p, r)} crosses the antimeridian unsplit (edge "
                                 f"{_pos(ring[e])} to {_pos(ring[e + 1])}); split it at ±180 "
                                 "into a MultiPolygon (RFC 7946 §3.1.9)")
        shape = shapely.Polygon(polygon[0], polygon[1:])
        reason = shapely.is_valid_reason(shape)
        if reason != "Valid Geometry":
            kind, at = _reason(reason)
            if kind == _SELF_TOUCH:
                warnings.append(f"{f.where(p)}: a ring touches itself at {at} (invalid in OGC "
                                "Simple Features; counted as drawn)")
            else:
                text = _REASON_TEXT.get(kind, kind.lower() or reason)
                raise ValueError(f"{f.where(p)}: {text} at {at}; repair the geometry (e.g. "
                                 "QGIS 'Fix geometries', shapely.make_valid)")
        parts.append(shape)
    geometry = _multipolygon(f, parts) if f.multi else parts[0]
    return RegionFeature(f.number, f.id, f.name, f.parent, f.urban, f.polygons, geometry)


def _multipolygon(f: _Raw, parts: list[shapely.Polygon]) -> shapely.Geometry:
    """The parts as one MultiPolygon; their union if they overlap within the tolerance."""
    arr = np.array(parts, dtype=object)
    overlapping = False
    for i, j, km2 in _overlaps(arr, [(i, j) for i, j in _bbox_pairs(arr)]):
        overlapping = True
        smaller = min(_km2(arr[[i, j]]))
        if km2 > SHARE_TOLERANCE * smaller:
            raise ValueError(f"{f.label}: polygons {i + 1} and {j + 1} overlap ({_area(km2)}, "
                             f"{_share(km2 / smaller)} of the smaller); a MultiPolygon's parts "
                             "may only touch")
    if not overlapping:
        return shapely.MultiPolygon(parts)
    return _geos(f"{f.label}: its polygons", shapely.union_all, arr)


def _sibling_overlaps(features: Sequence[RegionFeature], geoms: np.ndarray,
                      areas: np.ndarray) -> list[str]:
    pairs = [(i, j) for i, j in _bbox_pairs(geoms) if features[i].parent == features[j].parent]
    slight = []
    for i, j, km2 in _overlaps(geoms, pairs):
        small = j if areas[j] <= areas[i] else i
        share = km2 / areas[small] if areas[small] > 0 else 1.0
        a, b = features[i], features[j]
        if share > SHARE_TOLERANCE:
            raise ValueError(f"features {_id(a.id)} (#{a.number}) and {_id(b.id)} (#{b.number}) "
                             f"overlap ({_area(km2)}, {_share(share)} of "
                             f"{_id(features[small].id)}); a cell there would count in one of them "
                             "only")
        slight.append((share, f"{_id(a.id)} and {_id(b.id)}, {_area(km2)}, {_share(share)} of "
                              f"{_id(features[small].id)}"))
    if not slight:
        return []
    return [f"{len(slight)} pair(s) of sibling regions overlap slightly (largest: "
            f"{max(slight)[1]}); a cell there counts in the first of the two in file order"]


def _outside_parents(features: Sequence[RegionFeature], geoms: np.ndarray,
                     areas: np.ndarray) -> list[str]:
    index = {f.id: i for i, f in enumerate(features)}
    slight = []
    for i, f in enumerate(features):
        p = index.get(f.parent) if f.parent is not None else None
        if p is None or p == i:
            continue
        what = f"{f.label} and its parent {_id(f.parent)}"
        if _geos(what, shapely.covers, geoms[p], geoms[i]):
            continue
        outside = _geos(what, shapely.difference, geoms[i], geoms[p])
        km2 = float(_km2(np.array([outside], dtype=object))[0])
        if km2 <= NOISE_KM2:
            continue
        share = km2 / areas[i] if areas[i] > 0 else 1.0
        if share > SHARE_TOLERANCE:
            raise ValueError(f"{f.label} lies {_share(share)} outside its parent {_id(f.parent)} "
                             f"(#{features[p].number}) ({_area(km2)}); people there would be "
                             f"counted in {_id(f.parent)} although outside it")
        slight.append((share, f"{_id(f.id)}, {_share(share)} outside {_id(f.parent)}"))
    if not slight:
        return []
    return [f"{len(slight)} region(s) extend slightly beyond their parent (largest: "
            f"{max(slight)[1]}); people there count in the parent all the same"]


def _swap_warning(features: Sequence[RegionFeature], geoms: np.ndarray) -> str | None:
    """A warning when every region is polar and a [lat, lon] reading would be valid too."""
    centre = shapely.get_coordinates(shapely.centroid(geoms))
    if not (np.abs(centre[:, 1]) > POLAR_LAT).all():
        return None
    if np.abs(shapely.get_coordinates(geoms)[:, 0]).max() > 90.0:
        return None
    k = int(np.argmin(np.abs(centre[:, 1])))
    lat = float(centre[k, 1])
    return (f"every region lies beyond {POLAR_LAT:g}° latitude (e.g. {_id(features[k].id)} at "
            f"{abs(lat):.1f}° {'N' if lat > 0 else 'S'}), where few people live, and every "
            "longitude is within ±90: are positions [lat, lon]? RFC 7946 requires [lon, lat]")


def _bbox_pairs(geoms: np.ndarray) -> Iterable[tuple[int, int]]:
    """Index pairs (i < j) of geometries whose bounding boxes intersect."""
    if len(geoms) < 2:
        return []
    left, right = shapely.STRtree(geoms).query(geoms)
    keep = left < right
    return zip(left[keep].tolist(), right[keep].tolist(), strict=True)


def _overlaps(geoms: np.ndarray, pairs: Iterable[tuple[int, int]],
              ) -> Iterable[tuple[int, int, float]]:
    """(i, j, km²) for the pairs whose interiors overlap by more than :data:`NOISE_KM2`."""
    for i, j in pairs:
        what = f"geometries #{i + 1} and #{j + 1}"
        if not _geos(what, shapely.relate_pattern, geoms[i], geoms[j], "T********"):
            continue  # interiors apart: at most a shared border
        shared = _geos(what, shapely.intersection, geoms[i], geoms[j])
        km2 = float(_km2(np.array([shared], dtype=object))[0])
        if km2 > NOISE_KM2:
            yield i, j, km2


def _geos(what: str, operation: Any, *args: Any) -> Any:
    """A shapely operation whose GEOS failure (not expected on valid input) is a ValueError."""
    try:
        return operation(*args)
    except shapely.errors.GEOSException as exc:
        raise ValueError(f"{what} could not be compared ({exc})") from None


def _km2(geoms: np.ndarray) -> np.ndarray:
    """Areas in km²: edges cut to at most 1°, then the sinusoidal equal-area projection."""
    def sinusoidal(lonlat: np.ndarray) -> np.ndarray:
        lat = np.radians(lonlat[:, 1])
        return EARTH_RADIUS_KM * np.column_stack([np.radians(lonlat[:, 0]) * np.cos(lat), lat])
    fine = shapely.segmentize(geoms, 1.0)
    return np.asarray(shapely.area(shapely.transform(fine, sinusoidal)), dtype=np.float64)


def _crs_name(doc: Mapping[str, Any]) -> str | None:
    crs = doc.get("crs")
    if crs is None:
        return None
    props = crs.get("properties") if isinstance(crs, Mapping) else None
    name = props.get("name") if isinstance(props, Mapping) else None
    text = str(name) if name is not None else _show(crs)
    return text if text.isprintable() and len(text) <= 80 else _show(text)


def _is_wgs84(crs: str) -> bool:
    key = crs.strip().upper()
    return key.endswith(("CRS84", ":4326", "/4326"))


def _reason(reason: str) -> tuple[str, str]:
    m = _GEOS_REASON.match(reason)
    if not m:
        return reason, "an unknown place"
    return m["kind"].strip(), _pos((float(m["x"]), float(m["y"])))


def _float(v: Any) -> float:
    """A number as float; NaN for an integer too large for one (reported as not finite)."""
    try:
        return float(v)
    except OverflowError:
        return float("nan")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _id(rid: str | None) -> str:
    """A region id quoted for a message: one line, at most 60 characters."""
    text = repr(rid)
    return text if len(text) <= 60 else text[:56] + "...'"


def _pos(xy: Sequence[float] | np.ndarray) -> str:
    return f"[{round(float(xy[0]), 6)!r}, {round(float(xy[1]), 6)!r}]"


def _show(value: Any) -> str:
    """A value as JSON text (NaN, Infinity, null as in the file), cut to 60 characters."""
    try:
        text = json.dumps(value, default=repr)
    except (ValueError, RecursionError):  # an integer of over 4,300 digits, very deep nesting
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _sci(v: float) -> str:
    return f"{v:.1e}".replace("e+0", "e").replace("e+", "e")


def _area(km2: float) -> str:
    if km2 >= 100:
        return f"{km2:,.0f} km²"
    if km2 >= 0.01:
        return f"{km2:.3g} km²"
    return f"{km2 * 1e6:,.0f} m²"


def _share(share: float) -> str:
    return f"{share * 100:.3g} %"
