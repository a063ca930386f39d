"""Regions: the administrative units that population figures are published for.

A region set is read from a GeoJSON FeatureCollection (see ``schemas/regions.schema.json``),
checked by :mod:`estimators.region_checks` (broken geometry is refused, suspicious content
warned about). Regions may nest through ``properties.parent``; a location belongs to the
*deepest* region whose polygon contains it (so a city district wins over its city, the city over
the oblast), and a parent's figures are the sum over its whole subtree. A location outside every
polygon goes to the pseudo-region ``unassigned``, which is always the last index.

Containment is tested on points: each ping's own position (a lat/lon ping's, or its cell-plan
row's site or sector centre; :mod:`estimators.cells` memoizes the answer per H3 cell where no
border comes near, see :meth:`RegionSet.near_border`), and the H3 cell centre only for state
restored from checkpoints written before locations had regions (H3's polygon-fill rule). The
test is shapely's vectorized ``contains_xy`` on prepared geometries (an indexed point-in-area
locator: microseconds per point for a 10^6-vertex boundary). A point exactly on a border belongs
to the region it would be in after an infinitesimal step north, then east (the half-open
crossing rule): two regions sharing a border never both hold, nor both lose, a point on it. This
is the even-odd rule the lookup used before, so results are unchanged on valid files, except for
points within rounding error (~1e-12°) of a border that two regions do not share exactly (a
vertex of one lying on an edge of the other), which exact predicates may leave in the hairline
gap between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from estimators.region_checks import check_layout, read_features

UNASSIGNED = "unassigned"
_LOCATE_BLOCK = 8192
"""Points whose bounding-box tests :meth:`RegionSet.locate` makes at once (a table of regions x
points booleans: 0.6 MB for 70 regions)."""


@dataclass(frozen=True)
class Region:
    """One region: id, display name, optional parent id, urban flag and its polygon rings.

    ``rings`` are closed (k, 2) lon/lat arrays (every ring of every polygon, for drawing);
    ``geometry`` is the shapely Polygon or MultiPolygon that lookups use. Without it the region
    is one polygon: ``rings[0]`` its exterior, the other rings its holes.
    """

    id: str
    name: str
    parent: str | None
    urban: bool | None
    rings: tuple[np.ndarray, ...] = field(repr=False)
    geometry: shapely.Geometry | None = field(default=None, repr=False, compare=False)


def _half_open_inside(lat: np.ndarray, lon: np.ndarray, rings: Sequence[np.ndarray]) -> np.ndarray:
    """Even-odd crossing test with the half-open rule, for the few points lying on a border.

    A ring edge counts when it straddles the point's latitude (``(y1 > lat) != (y2 > lat)``) and
    crosses it east of the point (``lon < x``): a point on a border is treated as if it were an
    infinitesimal step north, then east. Vectorized over edges, one point at a time.
    """
    inside = np.zeros(lat.shape, dtype=bool)
    for ring in rings:
        x1, y1, x2, y2 = ring[:-1, 0], ring[:-1, 1], ring[1:, 0], ring[1:, 1]
        for k in range(lat.size):
            crosses = (y1 > lat[k]) != (y2 > lat[k])
            a, b, c, d = x1[crosses], y1[crosses], x2[crosses], y2[crosses]
            x_cross = a + (lat[k] - b) * (c - a) / (d - b)
            inside[k] ^= bool(np.count_nonzero(lon[k] < x_cross) % 2)
    return inside


class RegionSet:
    """An ordered set of regions with the hierarchy and the deepest-region lookup for points.

    Index ``i`` in ``0..n-1`` is ``regions[i]``; index ``n`` is ``unassigned``. ``subtree`` is a
    boolean (n+1, n+1) matrix: ``subtree[r, j]`` is true when region ``j`` is ``r`` or below it.
    ``warnings`` are the one-line remarks about the file it came from, set by
    :func:`regions_from_geojson` (see :func:`estimators.region_checks.region_warnings`).
    """

    def __init__(self, regions: Sequence[Region]) -> None:
        ids = [r.id for r in regions]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate region ids: {', '.join(dup)}")
        if UNASSIGNED in ids:
            raise ValueError(f"region id {UNASSIGNED!r} is reserved")
        self.regions: list[Region] = list(regions)
        self.warnings: tuple[str, ...] = ()
        self.ids: list[str] = ids + [UNASSIGNED]
        self.names: list[str] = [r.name for r in regions] + ["Unassigned"]
        self.index: dict[str, int] = {rid: i for i, rid in enumerate(self.ids)}
        n = len(regions)
        self.parent_index = np.full(n + 1, -1, dtype=np.int64)
        for i, r in enumerate(regions):
            if r.parent is not None:
                if r.parent not in self.index or r.parent == UNASSIGNED:
                    raise ValueError(f"region {r.id!r}: unknown parent {r.parent!r}")
                self.parent_index[i] = self.index[r.parent]
        self.depth = np.array([self._depth(i) for i in range(n + 1)], dtype=np.int64)
        self.subtree = np.zeros((n + 1, n + 1), dtype=bool)
        for j in range(n + 1):
            k = j
            while k >= 0:
                self.subtree[k, j] = True
                k = int(self.parent_index[k])
        self._shapes = [r.geometry if r.geometry is not None
                        else shapely.Polygon(r.rings[0], r.rings[1:]) for r in regions]
        bounds = shapely.bounds(self._shapes).tolist()
        for shape, (x0, y0, x1, y1) in zip(self._shapes, bounds, strict=True):
            shapely.prepare(shape)
            # GEOS answers the first query inside the envelope by a scan and builds its point
            # locator's index at the second: both now, not in the first batch meeting the region
            for _ in range(2):
                shapely.contains_xy(shape, (x0 + x1) / 2, (y0 + y1) / 2)
        # (min lat, max lat, min lon, max lon) per region, a cheap first filter
        self._bbox = [(b[1], b[3], b[0], b[2]) for b in bounds]
        self._border_rings: dict[int, list[np.ndarray]] = {}
        self._boundary: shapely.Geometry | None = None
        self._lookup_order = sorted(range(n), key=lambda i: -int(self.depth[i]))
        self._box = np.array([self._bbox[i] for i in self._lookup_order],
                             dtype=np.float64).reshape(n, 4).T.reshape(4, n, 1)

    def _depth(self, i: int) -> int:
        depth, k, seen = 0, i, set()
        while self.parent_index[k] >= 0:
            if k in seen:
                raise ValueError(f"region {self.ids[i]!r}: parent cycle")
            seen.add(k)
            k = int(self.parent_index[k])
            depth += 1
        return depth

    @property
    def n(self) -> int:
        """Number of real regions (``unassigned`` excluded)."""
        return len(self.regions)

    @property
    def unassigned(self) -> int:
        """Index of the ``unassigned`` pseudo-region."""
        return len(self.regions)

    def locate(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Deepest region index containing each point; ``unassigned`` where none does (int32,
        the shape of ``lat``).

        Regions are tried deepest first (a point found in one is not tried further), each on
        the points inside its bounding box, then by :meth:`_contains`. The bounding boxes of
        every region are tested for a block of points at once (a regions x points table):
        regions no point of the block falls near cost nothing more, so a few points cost
        little more than their own tests.
        """
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        out = np.full(lat.size, self.unassigned, dtype=np.int32)
        flat_lat, flat_lon = lat.reshape(-1), lon.reshape(-1)
        for lo in range(0, lat.size, _LOCATE_BLOCK):
            hi = min(lo + _LOCATE_BLOCK, lat.size)
            self._locate_block(flat_lat[lo:hi], flat_lon[lo:hi], out[lo:hi])
        return out.reshape(lat.shape)

    def _locate_block(self, lat: np.ndarray, lon: np.ndarray, out: np.ndarray) -> None:
        """:meth:`locate` of a block of points (float64[m] each), into ``out`` (int32[m], set
        to ``unassigned`` beforehand)."""
        box = self._box  # lat0, lat1, lon0, lon1 per region, in lookup order: float64[4, k, 1]
        near = (lat >= box[0]) & (lat <= box[1]) & (lon >= box[2]) & (lon <= box[3])
        todo: np.ndarray | None = None  # points not found in a region yet (None: all)
        for k in np.flatnonzero(near.any(axis=1)).tolist():
            i = self._lookup_order[k]
            cand = np.flatnonzero(near[k] if todo is None else near[k] & todo)
            if cand.size == 0:
                continue
            hit = cand[self._contains(i, lat[cand], lon[cand])]
            out[hit] = i
            if todo is None:
                todo = np.ones(lat.size, dtype=bool)
            todo[hit] = False

    def _contains(self, i: int, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Which points region ``i`` holds: its interior, plus border points by the half-open rule."""
        shape = self._shapes[i]
        inside = shapely.contains_xy(shape, lon, lat)
        rest = np.flatnonzero(~inside)
        if rest.size:
            border = rest[shapely.intersects_xy(shape, lon[rest], lat[rest])]
            if border.size:
                inside[border] = _half_open_inside(lat[border], lon[border], self._rings_of(i))
        return inside

    @property
    def boundary(self) -> shapely.Geometry:
        """Every ring of every region as one prepared MultiLineString (lon/lat; built once).
        A point farther from it than rounding lies in the same regions as its surroundings."""
        if self._boundary is None:
            lines = [shapely.linestrings(ring) for i in range(self.n) for ring in self._rings_of(i)]
            self._boundary = shapely.multilinestrings(lines)
            shapely.prepare(self._boundary)
        return self._boundary

    def near_border(self, geometries: np.ndarray, distance_deg: float | np.ndarray) -> np.ndarray:
        """Whether each shapely geometry comes within ``distance_deg`` (planar lon/lat degrees,
        scalar or per geometry) of any region's border (bool array). Where it does not, every
        point of the geometry lies in the same regions: :meth:`locate` gives them all one
        answer."""
        if self.n == 0:
            return np.zeros(np.shape(geometries), dtype=bool)
        return np.asarray(shapely.dwithin(self.boundary, geometries, distance_deg), dtype=bool)

    def _rings_of(self, i: int) -> list[np.ndarray]:
        """The lookup geometry's rings as (k, 2) lon/lat arrays (cached)."""
        if i not in self._border_rings:
            rings = shapely.get_rings(shapely.get_parts(self._shapes[i]))
            self._border_rings[i] = [shapely.get_coordinates(ring) for ring in rings]
        return self._border_rings[i]

    def ancestors(self, i: int) -> list[int]:
        """``i`` followed by its parent, grandparent, ... up to the top."""
        chain = [i]
        while self.parent_index[chain[-1]] >= 0:
            chain.append(int(self.parent_index[chain[-1]]))
        return chain


def regions_from_geojson(doc: Mapping[str, Any]) -> RegionSet:
    """Build a :class:`RegionSet` from a parsed GeoJSON FeatureCollection.

    Every feature and the layout are checked (:mod:`estimators.region_checks`): raises
    ``ValueError`` with one line naming the feature and what is wrong; the warnings are kept in
    ``RegionSet.warnings``.
    """
    features, warnings = read_features(doc)
    regions = RegionSet([Region(f.id, f.name, f.parent, f.urban, f.rings, f.geometry)
                         for f in features])
    regions.warnings = tuple(warnings + check_layout(features))
    return regions
