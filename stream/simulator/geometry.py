"""Region shapes as polygons, point-in-polygon tests, point sampling and tower grids.

Shapes are deliberately approximate (circles, sectors, rings and coarse polygons around real
coordinates). Distances use a local equirectangular projection around each shape's centre
(km east/north), accurate to ~1 % over a city and a few % over an oblast, which is all a
synthetic scenario needs. Coordinates are stored in GeoJSON order: (lon, lat), WGS84 degrees.

A circle is the regular n-gon inscribed in it (``circle_vertices``, vertex at bearing 0); sectors
and rings reuse the same n-gon, so a city circle split into sectors, and the ring around it, share
boundaries exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from stream.simulator.scenario import Region, Scenario, ShapeSpec

KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON = 111.320
LAYOUT_SAMPLES = 300


@dataclass(frozen=True)
class Part:
    """A polar proposal area (annular sector around a centre) for sampling points in a shape."""

    lat: float
    lon: float
    r_min_km: float
    r_max_km: float
    from_deg: float
    span_deg: float

    @property
    def area_km2(self) -> float:
        """Area of the annular sector, used to weight parts when sampling."""
        return math.pi * (self.r_max_km**2 - self.r_min_km**2) * self.span_deg / 360.0


@dataclass(frozen=True)
class Shape:
    """Polygons (each ``[exterior, *holes]``, closed (k, 2) lon/lat rings) and sampling parts."""

    polygons: tuple[tuple[np.ndarray, ...], ...]
    parts: tuple[Part, ...]

    @property
    def rings(self) -> list[np.ndarray]:
        """All rings (exteriors and holes); even-odd parity over them gives containment."""
        return [ring for polygon in self.polygons for ring in polygon]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min_lon, min_lat, max_lon, max_lat) of the exteriors."""
        pts = np.concatenate([polygon[0] for polygon in self.polygons])
        return (float(pts[:, 0].min()), float(pts[:, 1].min()),
                float(pts[:, 0].max()), float(pts[:, 1].max()))

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Boolean mask of the points (lat, lon arrays) lying inside the shape."""
        return points_in_rings(np.asarray(lat, float), np.asarray(lon, float), self.rings)

    def geometry(self) -> dict:
        """GeoJSON geometry: Polygon, or MultiPolygon if the shape has several parts."""
        coords = [[ring.tolist() for ring in polygon] for polygon in self.polygons]
        if len(coords) == 1:
            return {"type": "Polygon", "coordinates": coords[0]}
        return {"type": "MultiPolygon", "coordinates": coords}

    def sample(self, n: int, concentration: float, rng: np.random.Generator,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Draw n points inside the shape, denser toward each part's centre.

        Radii are drawn so that r**p is uniform with p = 2 - concentration: concentration 0 is
        uniform by area, 1 gives a density falling like 1/r from the centre. Proposals outside
        the polygons are rejected, so every returned point lies inside the shape.
        """
        lat_out, lon_out = np.empty(n), np.empty(n)
        got, accept = 0, 0.5
        for _ in range(200):
            if got >= n:
                return lat_out, lon_out
            m = int((n - got) / accept * 1.2) + 32
            lat, lon = self._propose(m, 2.0 - concentration, rng)
            inside = self.contains(lat, lon)
            accept = max(float(inside.mean()), 0.01)
            take = np.flatnonzero(inside)[: n - got]
            lat_out[got:got + take.size] = lat[take]
            lon_out[got:got + take.size] = lon[take]
            got += take.size
        if got >= n:
            return lat_out, lon_out
        raise ValueError("cannot sample points inside the shape (is it empty?)")

    def _propose(self, m: int, power: float, rng: np.random.Generator,
                 ) -> tuple[np.ndarray, np.ndarray]:
        weights = np.array([p.area_km2 for p in self.parts])
        k = rng.choice(len(self.parts), size=m, p=weights / weights.sum())
        table = np.array([[p.lat, p.lon, p.r_min_km, p.r_max_km, p.from_deg, p.span_deg]
                          for p in self.parts])[k]
        lo, hi = table[:, 2] ** power, table[:, 3] ** power
        radius = (lo + rng.random(m) * (hi - lo)) ** (1.0 / power)
        bearing = table[:, 4] + table[:, 5] * rng.random(m)
        east, north = polar_to_km(radius, bearing)
        return km_to_lonlat(table[:, 0], table[:, 1], east, north)[::-1]


def polar_to_km(radius_km: np.ndarray, bearing_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) km offsets of points at a distance and compass bearing (clockwise from N)."""
    b = np.radians(bearing_deg)
    return radius_km * np.sin(b), radius_km * np.cos(b)


def km_to_lonlat(lat0: np.ndarray | float, lon0: np.ndarray | float, east_km: np.ndarray,
                 north_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) of km offsets from a centre, in the centre's equirectangular projection."""
    lat = lat0 + north_km / KM_PER_DEG_LAT
    lon = lon0 + east_km / (KM_PER_DEG_LON * np.cos(np.radians(lat0)))
    return lon, lat


def lonlat_to_km(lat0: float, lon0: float, lon: np.ndarray, lat: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) km of points relative to a centre (inverse of km_to_lonlat)."""
    east = (np.asarray(lon) - lon0) * KM_PER_DEG_LON * math.cos(math.radians(lat0))
    return east, (np.asarray(lat) - lat0) * KM_PER_DEG_LAT


def points_in_rings(lat: np.ndarray, lon: np.ndarray, rings: list[np.ndarray]) -> np.ndarray:
    """Even-odd point-in-polygon test of many points against closed (k, 2) lon/lat rings.

    Points are sorted by latitude once; each edge then only touches the points in its
    latitude band (a searchsorted slice), so the cost is ~ points x bands, not points x edges.
    """
    order = np.argsort(lat, kind="stable")
    ys, xs = lat[order], lon[order]
    inside = np.zeros(lat.size, dtype=bool)
    for ring in rings:
        x1, y1, x2, y2 = ring[:-1, 0], ring[:-1, 1], ring[1:, 0], ring[1:, 1]
        lo = np.searchsorted(ys, np.minimum(y1, y2), side="left")
        hi = np.searchsorted(ys, np.maximum(y1, y2), side="left")
        for e in np.flatnonzero(hi > lo):
            band = slice(lo[e], hi[e])
            x_cross = x1[e] + (ys[band] - y1[e]) * (x2[e] - x1[e]) / (y2[e] - y1[e])
            inside[band] ^= xs[band] < x_cross
    result = np.empty_like(inside)
    result[order] = inside
    return result


def _oriented(ring: np.ndarray, ccw: bool) -> np.ndarray:
    """Close the ring and orient it (RFC 7946: exteriors counter-clockwise, holes clockwise)."""
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    x, y = ring[:, 0], ring[:, 1]
    area2 = float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))
    return ring if (area2 > 0) == ccw else ring[::-1].copy()


def _ngon_radius(radius_km: float, bearing_deg: np.ndarray, n: int) -> np.ndarray:
    """Distance from the centre to the inscribed regular n-gon along each bearing."""
    half = math.pi / n
    offset = np.radians(np.mod(bearing_deg, 360.0 / n))
    return radius_km * math.cos(half) / np.cos(offset - half)


def _arc(lat: float, lon: float, radius_km: float, from_deg: float, span_deg: float,
         n: int) -> np.ndarray:
    """Points of the n-gon boundary from one bearing to another (clockwise), as (lon, lat)."""
    step = 360.0 / n
    k = np.arange(math.floor(from_deg / step), math.ceil((from_deg + span_deg) / step) + 1)
    inner = k * step
    inner = inner[(inner > from_deg + 1e-9) & (inner < from_deg + span_deg - 1e-9)]
    bearings = np.concatenate([[from_deg], inner, [from_deg + span_deg]])
    east, north = polar_to_km(_ngon_radius(radius_km, bearings, n), bearings)
    return np.column_stack(km_to_lonlat(lat, lon, east, north))


def circle_ring(lat: float, lon: float, radius_km: float, n: int) -> np.ndarray:
    """Closed counter-clockwise ring of the n-gon inscribed in a circle."""
    bearings = np.arange(n) * 360.0 / n
    east, north = polar_to_km(np.full(n, radius_km), bearings)
    return _oriented(np.column_stack(km_to_lonlat(lat, lon, east, north)), ccw=True)


def _circle(spec: ShapeSpec, n: int) -> Shape:
    ring = circle_ring(spec.lat, spec.lon, spec.radius_km, n)
    return Shape(((ring,),), (Part(spec.lat, spec.lon, 0.0, spec.radius_km, 0.0, 360.0),))


def _ring(spec: ShapeSpec, n: int) -> Shape:
    outer = circle_ring(spec.lat, spec.lon, spec.radius_km, n)
    hole = _oriented(circle_ring(spec.lat, spec.lon, spec.inner_km, n), ccw=False)
    part = Part(spec.lat, spec.lon, spec.inner_km, spec.radius_km, 0.0, 360.0)
    return Shape(((outer, hole),), (part,))


def _sector(spec: ShapeSpec, n: int) -> Shape:
    span = (spec.to_deg - spec.from_deg) % 360.0
    outer = _arc(spec.lat, spec.lon, spec.radius_km, spec.from_deg, span, n)
    if spec.inner_km > 0:
        inner = _arc(spec.lat, spec.lon, spec.inner_km, spec.from_deg, span, n)[::-1]
    else:
        inner = np.array([[spec.lon, spec.lat]])
    ring = _oriented(np.vstack([outer, inner]), ccw=True)
    part = Part(spec.lat, spec.lon, spec.inner_km, spec.radius_km, spec.from_deg, span)
    return Shape(((ring,),), (part,))


def _circles(spec: ShapeSpec, n: int, where: str) -> Shape:
    circles = spec.circles
    for i, (lat1, lon1, r1) in enumerate(circles):
        for lat2, lon2, r2 in circles[i + 1:]:
            east, north = lonlat_to_km(lat1, lon1, np.array(lon2), np.array(lat2))
            if math.hypot(float(east), float(north)) <= r1 + r2:
                raise ValueError(f"{where}.circles: circles at ({lat1}, {lon1}) and "
                                 f"({lat2}, {lon2}) overlap")
    polygons = tuple((circle_ring(lat, lon, r, n),) for lat, lon, r in circles)
    parts = tuple(Part(lat, lon, 0.0, r, 0.0, 360.0) for lat, lon, r in circles)
    return Shape(polygons, parts)


def _enclosing_part(lat: float, lon: float, ring: np.ndarray) -> Part:
    """A full disc around (lat, lon) that contains every vertex of the ring."""
    east, north = lonlat_to_km(lat, lon, ring[:, 0], ring[:, 1])
    return Part(lat, lon, 0.0, float(np.hypot(east, north).max()) * 1.0001, 0.0, 360.0)


def _polygon(spec: ShapeSpec) -> Shape:
    ring = _oriented(np.array(spec.points, dtype=float), ccw=True)
    lon, lat = spec.center if spec.center else ring[:-1].mean(axis=0)
    return Shape(((ring,),), (_enclosing_part(float(lat), float(lon), ring),))


def _clip_halfplane(poly: list[np.ndarray], normal: np.ndarray, offset: float,
                    ) -> list[np.ndarray]:
    """Sutherland-Hodgman: keep the part of an (open) polygon where point . normal <= offset."""
    out: list[np.ndarray] = []
    for i, a in enumerate(poly):
        b = poly[(i + 1) % len(poly)]
        da, db = float(a @ normal) - offset, float(b @ normal) - offset
        if da <= 0:
            out.append(a)
        if (da <= 0) != (db <= 0):
            out.append(a + (b - a) * (da / (da - db)))
    return out


def voronoi_cells(sites: list[tuple[float, float]], outline: np.ndarray) -> list[np.ndarray]:
    """Voronoi cells of (lat, lon) sites clipped to a closed lon/lat outline ring.

    Computed in an equirectangular plane (x = lon * cos(mean site lat)) by clipping the outline
    with the perpendicular bisector half-planes of every pair of sites.
    """
    scale = math.cos(math.radians(float(np.mean([s[0] for s in sites]))))
    to_xy = np.array([scale, 1.0])
    pts = np.array([[lon, lat] for lat, lon in sites]) * to_xy
    base = [p for p in outline[:-1] * to_xy]
    cells = []
    for i, site in enumerate(pts):
        poly = base
        for j, other in enumerate(pts):
            if j != i and poly:
                normal = other - site
                poly = _clip_halfplane(poly, normal, float(normal @ (site + other) / 2.0))
        if len(poly) < 3:
            cells.append(np.empty((0, 2)))
            continue
        cells.append(_oriented(np.array(poly) / to_xy, ccw=True))
    return cells


def subtract(shape: Shape, cutters: list[tuple[str, Shape]], where: str) -> Shape:
    """Cut the cutters' exteriors (named by region id) out of the shape as holes.

    Every cut-out must lie inside the shape; holes nested inside other holes are dropped and
    partially overlapping holes are an error.
    """
    exteriors = [polygon[0] for polygon in shape.polygons]
    holes = [ring for polygon in shape.polygons for ring in polygon[1:]]
    for name, cutter in cutters:
        for polygon in cutter.polygons:
            if not any(_ring_inside(polygon[0], exterior) for exterior in exteriors):
                raise ValueError(f"{where}: cut-out region {name!r} is not inside this shape")
            holes.append(_oriented(polygon[0], ccw=False))
    holes = _drop_nested(holes, where)
    polygons = tuple((ext, *[h for h in holes if _ring_inside(h, ext)]) for ext in exteriors)
    return Shape(polygons, shape.parts)


def _ring_inside(ring: np.ndarray, container: np.ndarray) -> bool:
    """True if every vertex of ring lies inside the container ring."""
    return bool(points_in_rings(ring[:, 1], ring[:, 0], [container]).all())


def _drop_nested(holes: list[np.ndarray], where: str) -> list[np.ndarray]:
    keep = []
    for i, hole in enumerate(holes):
        nested = False
        for j, other in enumerate(holes):
            if i == j:
                continue
            if np.array_equal(hole, other):
                nested = nested or j < i
                continue
            inside = points_in_rings(hole[:, 1], hole[:, 0], [other])
            if inside.all():
                nested = True
            elif inside.any():
                raise ValueError(f"{where}: cut-out regions overlap each other")
        if not nested:
            keep.append(hole)
    return keep


class _Builder:
    """Resolves region shapes in dependency order (minus, rest and voronoi refer to others)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.by_id = {r.id: r for r in scenario.regions}
        self.done: dict[str, Shape] = {}
        self.busy: set[str] = set()
        self.cells: dict[str | None, dict[str, Shape]] = {}

    def fail(self, region: Region, message: str) -> None:
        """Raise the one-line error for this region's shape."""
        raise ValueError(f"{self.scenario.source}: {region.path}.shape: {message}")

    def get(self, region_id: str) -> Shape:
        """The resolved shape of a region (a parent without a shape is its children's union)."""
        if region_id in self.done:
            return self.done[region_id]
        region = self.by_id[region_id]
        if region_id in self.busy:
            self.fail(region, "shapes refer to each other in a cycle")
        self.busy.add(region_id)
        shape = self._build(region)
        self.busy.discard(region_id)
        self.done[region_id] = shape
        return shape

    def _build(self, region: Region) -> Shape:
        spec = region.shape
        if spec is None:
            children = [self.get(r.id) for r in self.scenario.regions if r.parent == region.id]
            return Shape(tuple(p for c in children for p in c.polygons),
                         tuple(p for c in children for p in c.parts))
        n = self.scenario.circle_vertices
        where = f"{self.scenario.source}: {region.path}.shape"
        if spec.kind == "circle":
            shape = _circle(spec, n)
        elif spec.kind == "ring":
            shape = _ring(spec, n)
        elif spec.kind == "sector":
            shape = _sector(spec, n)
        elif spec.kind == "circles":
            shape = _circles(spec, n, where)
        elif spec.kind == "polygon":
            shape = _polygon(spec)
        elif spec.kind == "voronoi":
            shape = self._voronoi(region)
        else:
            shape = self._rest(region, where)
        if spec.minus:
            shape = subtract(shape, [(m, self.get(m)) for m in spec.minus], where)
        return shape

    def _parent_own_shape(self, region: Region, kind: str) -> Shape:
        if region.parent is None or self.by_id[region.parent].shape is None:
            self.fail(region, f"type '{kind}' needs a parent region with its own shape")
        return self.get(region.parent)

    def _rest(self, region: Region, where: str) -> Shape:
        parent = self._parent_own_shape(region, "rest")
        siblings = [r for r in self.scenario.regions
                    if r.parent == region.parent and r.id != region.id]
        if any(s.shape is not None and s.shape.kind == "rest" for s in siblings):
            self.fail(region, "only one child of a parent may have type 'rest'")
        return subtract(parent, [(s.id, self.get(s.id)) for s in siblings], where)

    def _voronoi(self, region: Region) -> Shape:
        if region.parent not in self.cells:
            self.cells[region.parent] = self._voronoi_group(region)
        return self.cells[region.parent][region.id]

    def _voronoi_group(self, region: Region) -> dict[str, Shape]:
        if region.parent is None:
            if not self.scenario.outline:
                self.fail(region, "type 'voronoi' at the top level needs the scenario 'outline'")
            container = _oriented(np.array(self.scenario.outline, dtype=float), ccw=True)
        else:
            parent = self._parent_own_shape(region, "voronoi")
            if len(parent.polygons) != 1 or len(parent.polygons[0]) != 1:
                self.fail(region, "type 'voronoi' needs a parent shape without holes")
            container = parent.polygons[0][0]
        group = [r for r in self.scenario.regions if r.parent == region.parent
                 and r.shape is not None and r.shape.kind == "voronoi"]
        cells = voronoi_cells([(r.shape.lat, r.shape.lon) for r in group], container)
        result = {}
        for r, cell in zip(group, cells, strict=True):
            if len(cell) < 4:
                self.fail(r, "the voronoi site lies outside the outline (empty cell)")
            part = _enclosing_part(r.shape.lat, r.shape.lon, cell)
            result[r.id] = Shape(((cell,),), (part,))
        return result


def build_shapes(scenario: Scenario) -> dict[str, Shape]:
    """Resolve the shape of every region of a scenario, keyed by region id."""
    builder = _Builder(scenario)
    return {r.id: builder.get(r.id) for r in scenario.regions}


def check_layout(scenario: Scenario) -> None:
    """Check by sampling that children lie inside their parents and leaves don't overlap.

    A fixed number of points is drawn uniformly in each region; any point of a child outside
    its parent's own shape, or of a leaf inside another leaf, raises a ValueError.
    """
    rng = np.random.default_rng(20260302)
    shapes = scenario.shapes
    by_id = {r.id: r for r in scenario.regions}
    samples = {}
    for r in scenario.regions:
        try:
            samples[r.id] = shapes[r.id].sample(LAYOUT_SAMPLES, 0.0, rng)
        except ValueError as exc:
            raise ValueError(f"{scenario.source}: {r.path}.shape: {exc}") from None
    for r in scenario.regions:
        if r.parent is not None and by_id[r.parent].shape is not None:
            lat, lon = samples[r.id]
            if not shapes[r.parent].contains(lat, lon).all():
                raise ValueError(f"{scenario.source}: {r.path}.shape: region {r.id!r} is not "
                                 f"inside its parent {r.parent!r}")
    _check_leaf_overlaps(scenario, samples)


def _bbox_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _check_leaf_overlaps(scenario: Scenario, samples: dict) -> None:
    shapes = scenario.shapes
    leaves = scenario.leaf_ids
    boxes = {leaf: shapes[leaf].bbox for leaf in leaves}
    for a in leaves:
        lat, lon = samples[a]
        for b in leaves:
            if a == b or not _bbox_overlap(boxes[a], boxes[b]):
                continue
            if shapes[b].contains(lat, lon).any():
                path = scenario.region(a).path
                raise ValueError(f"{scenario.source}: {path}.shape: region {a!r} overlaps "
                                 f"region {b!r}")


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixed hash of uint64 values."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def unit_float(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats uniform in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class TowerGrid:
    """Towers of one operator and one layer (urban or rural) on a jittered grid.

    Rows are ``spacing_km`` apart in latitude; columns are ``spacing_km`` apart in longitude at
    each row's latitude. A position is served by the tower of the grid cell containing it
    (grid snapping: close to, and much cheaper than, the true nearest tower). Tower positions are
    the cell centres moved by a deterministic hash-based jitter of up to ``jitter`` x spacing.
    """

    spacing_km: float
    lat0: float
    lon0: float
    phase_y: float
    phase_x: float
    jitter: float
    salt: int

    @property
    def dlat(self) -> float:
        """Row height in degrees of latitude."""
        return self.spacing_km / KM_PER_DEG_LAT

    def _row_lat(self, iy: np.ndarray) -> np.ndarray:
        return self.lat0 + (iy + self.phase_y + 0.5) * self.dlat

    def _dlon(self, iy: np.ndarray) -> np.ndarray:
        return self.spacing_km / (KM_PER_DEG_LON * np.cos(np.radians(self._row_lat(iy))))

    def snap(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid cell (row iy, column ix) containing each position."""
        iy = np.floor((np.asarray(lat) - self.lat0) / self.dlat - self.phase_y).astype(np.int64)
        ix = np.floor((np.asarray(lon) - self.lon0) / self._dlon(iy) - self.phase_x)
        return iy, ix.astype(np.int64)

    def towers(self, iy: np.ndarray, ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) of the towers of grid cells (iy, ix)."""
        key = (iy.astype(np.uint64) << np.uint64(21)) | ix.astype(np.uint64)
        h1 = mix64(key ^ np.uint64(self.salt))
        h2 = mix64(h1)
        dlon = self._dlon(iy)
        lat = self._row_lat(iy) + (unit_float(h1) - 0.5) * 2 * self.jitter * self.dlat
        lon = self.lon0 + (ix + self.phase_x + 0.5) * dlon
        return lat, lon + (unit_float(h2) - 0.5) * 2 * self.jitter * dlon

    def cells_covering(self, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        """Grid cells whose centre lies inside the shape (its coverage towers)."""
        min_lon, min_lat, max_lon, max_lat = shape.bbox
        rows = np.arange(self.snap(min_lat, min_lon)[0], self.snap(max_lat, min_lon)[0] + 1)
        lo = self.snap(self._row_lat(rows), np.full(rows.size, min_lon))[1]
        hi = self.snap(self._row_lat(rows), np.full(rows.size, max_lon))[1]
        counts = hi - lo + 1
        iy = np.repeat(rows, counts)
        ix = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts)
                                                                         - counts, counts))
        lat = self._row_lat(iy)
        lon = self.lon0 + (ix + self.phase_x + 0.5) * self._dlon(iy)
        keep = shape.contains(lat, lon)
        return iy[keep], ix[keep]
