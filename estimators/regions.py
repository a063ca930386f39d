"""Regions: the administrative units that population figures are published for.

A region set is read from a GeoJSON FeatureCollection (see ``schemas/regions.schema.json``).
Regions may nest through ``properties.parent``; a location belongs to the *deepest* region whose
polygon contains it (so a city district wins over its city, the city over the oblast), and a
parent's figures are the sum over its whole subtree. A location outside every polygon goes to the
pseudo-region ``unassigned``, which is always the last index.

Containment is tested on points (H3 cell centres), which is exactly H3's polygon-fill rule
(a cell belongs to a polygon when its centre does), evaluated lazily for the cells that pings
actually touch instead of filling whole countries up front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNASSIGNED = "unassigned"


@dataclass(frozen=True)
class Region:
    """One region: id, display name, optional parent id, urban flag and its polygon rings."""

    id: str
    name: str
    parent: str | None
    urban: bool | None
    rings: tuple[np.ndarray, ...] = field(repr=False)


def _rings_of(geometry: Mapping[str, Any], region_id: str) -> list[np.ndarray]:
    """Return every ring (outer boundaries and holes) of a Polygon or MultiPolygon as (n, 2) lon/lat."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        polygons = [coords]
    elif kind == "MultiPolygon":
        polygons = coords
    else:
        raise ValueError(f"region {region_id!r}: geometry must be Polygon or MultiPolygon, got {kind!r}")
    rings: list[np.ndarray] = []
    for polygon in polygons or []:
        for ring in polygon:
            arr = np.asarray(ring, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[0] < 4 or arr.shape[1] < 2:
                raise ValueError(f"region {region_id!r}: a ring needs >= 4 [lon, lat] positions")
            rings.append(arr[:, :2])
    if not rings:
        raise ValueError(f"region {region_id!r}: empty geometry")
    return rings


def points_in_rings(lat: np.ndarray, lon: np.ndarray, rings: Sequence[np.ndarray]) -> np.ndarray:
    """Even-odd point-in-polygon test of many points against one region's rings (holes included).

    Vectorized over points, looping over polygon edges; rings are [lon, lat] as in GeoJSON.
    """
    inside = np.zeros(lat.shape, dtype=bool)
    for ring in rings:
        x1, y1 = ring[:-1, 0], ring[:-1, 1]
        x2, y2 = ring[1:, 0], ring[1:, 1]
        for a, b, c, d in zip(x1, y1, x2, y2, strict=True):
            if b == d:
                continue
            crosses = (b > lat) != (d > lat)
            x_cross = a + (lat - b) * (c - a) / (d - b)
            inside ^= crosses & (lon < x_cross)
    return inside


class RegionSet:
    """An ordered set of regions with the hierarchy and the deepest-region lookup for points.

    Index ``i`` in ``0..n-1`` is ``regions[i]``; index ``n`` is ``unassigned``. ``subtree`` is a
    boolean (n+1, n+1) matrix: ``subtree[r, j]`` is true when region ``j`` is ``r`` or below it.
    """

    def __init__(self, regions: Sequence[Region]) -> None:
        ids = [r.id for r in regions]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate region ids: {', '.join(dup)}")
        if UNASSIGNED in ids:
            raise ValueError(f"region id {UNASSIGNED!r} is reserved")
        self.regions: list[Region] = list(regions)
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
        self._bbox = [
            (
                min(float(ring[:, 1].min()) for ring in r.rings),
                max(float(ring[:, 1].max()) for ring in r.rings),
                min(float(ring[:, 0].min()) for ring in r.rings),
                max(float(ring[:, 0].max()) for ring in r.rings),
            )
            for r in regions
        ]
        self._lookup_order = sorted(range(n), key=lambda i: -int(self.depth[i]))

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
        """Deepest region index containing each point; ``unassigned`` where none does."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        out = np.full(lat.shape, self.unassigned, dtype=np.int32)
        todo = np.ones(lat.shape, dtype=bool)
        for i in self._lookup_order:
            lat0, lat1, lon0, lon1 = self._bbox[i]
            cand = np.flatnonzero(
                todo & (lat >= lat0) & (lat <= lat1) & (lon >= lon0) & (lon <= lon1)
            )
            if cand.size == 0:
                continue
            hit = cand[points_in_rings(lat[cand], lon[cand], self.regions[i].rings)]
            out[hit] = i
            todo[hit] = False
        return out

    def ancestors(self, i: int) -> list[int]:
        """``i`` followed by its parent, grandparent, ... up to the top."""
        chain = [i]
        while self.parent_index[chain[-1]] >= 0:
            chain.append(int(self.parent_index[chain[-1]]))
        return chain


def regions_from_geojson(doc: Mapping[str, Any]) -> RegionSet:
    """Build a :class:`RegionSet` from a parsed GeoJSON FeatureCollection, validating each feature."""
    if doc.get("type") != "FeatureCollection":
        raise ValueError("regions: expected a GeoJSON FeatureCollection")
    regions: list[Region] = []
    for k, feature in enumerate(doc.get("features") or []):
        props = feature.get("properties") or {}
        rid = props.get("id")
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"regions: feature #{k} has no string properties.id")
        name = props.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"region {rid!r}: properties.name must be a non-empty string")
        parent = props.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise ValueError(f"region {rid!r}: properties.parent must be a region id string")
        urban = props.get("urban")
        if urban is not None and not isinstance(urban, bool):
            raise ValueError(f"region {rid!r}: properties.urban must be true or false")
        geometry = feature.get("geometry") or {}
        regions.append(Region(rid, name, parent, urban, tuple(_rings_of(geometry, rid))))
    if not regions:
        raise ValueError("regions: the FeatureCollection has no features")
    return RegionSet(regions)
