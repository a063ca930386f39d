"""Cell footprints: the regions a serving cell covers, and which of them a device there is in.

A cell-id operator reports the serving cell, not the device's position; the plan gives the
cell's site (or sector centre). A cell whose coverage straddles a region border serves devices
on both sides, so placing all of them in the region holding the site moves a slice of each
side's population to the other (METHOD.md §1). Following the ESSnet Big Data / Eurostat
multimno practice (cell footprints from the plan; a prior density to spread a cell's devices;
REFERENCE.md "How others estimate population"), this module:

- tessellates each operator's sites into footprints (:func:`footprint_weights`): the Voronoi
  cell of each distinct site (``shapely.voronoi_polygons``, planar in a local equirectangular
  projection in km), bounded by a disc of :data:`REACH_FACTOR` times the distance to the
  operator's nearest other site (sites at the edge of a network have unbounded cells);
- intersects each footprint with each region's own part (the points :meth:`RegionSet.locate`
  gives that region: its polygon minus the deeper regions') and weighs each piece by its area
  times a prior density of its region (``density``, people per km²: uniform by area, or from
  the calibration's independent reference population, :func:`population_density`; never from
  the registry, which is what the estimates are compared with); the part of a footprint outside
  every region is ``unassigned`` at the density of the site's region;
- gives each device at a border cell one region (:func:`choose`): an unkeyed hash of the
  device's operator and id (:func:`device_draw_hashes`, public salt: it does not depend on the
  pseudonymization key, so replays under different keys agree) mixed with the plan row, against
  the row's cumulative weights, so the same device at the same cell always lands in the same
  region (counts stay integers, live = replay, no per-device state), and a cell's devices are
  spread over its regions in the proportions of the weights. The hash is a uniform draw, not a
  pseudonym: it only picks the piece and is never stored.

Pure numpy + shapely; no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely

from estimators.device_index import mix64
from estimators.regions import RegionSet

if TYPE_CHECKING:  # estimators.engine imports this module (through estimators.cells)
    from estimators.engine import Engine

RULES = ("reference", "site", "area")
"""How the devices of a cell whose footprint straddles a region border are placed
(``--footprints``): ``reference``: spread over the regions its footprint covers by area times
each region's people per km² in the calibration's reference population (``site`` without one);
``site``: all in the region holding the cell's site (or sector centre); ``area``: spread by
area alone."""

KM_PER_DEG = 111.195
"""Kilometres per degree of latitude (mean Earth radius 6,371.0 km)."""
REACH_FACTOR = 2.0
"""A footprint reaches at most this many times the distance from its site to the operator's
nearest other site: bounds the open Voronoi cells at a network's edge (an interior cell lies
well within it: its farthest vertex is about 0.7 spacing away on a regular grid)."""
MIN_SHARE = 0.005
"""Pieces of a footprint carrying less than this share of its weight are dropped (and the rest
renormalized): slivers along a border that only add alternatives."""
WEIGHT_DIGITS = 6
"""Weights are rounded to this many decimals before their cumulative thresholds are taken, so
the last bits of a geometry library's arithmetic do not move a device across a threshold."""
_SCALE = 1 << 32
_ROW_SHIFT = 33
_SALT = np.uint64(0x5F3759DF2B7E1516)
DRAW_SALT = 0x6465666163746F21
"""The public salt of :func:`device_draw_hashes` (``b"defacto!"`` as a big-endian word): fixed,
so a draw does not depend on any key or deployment secret."""


@dataclass(frozen=True)
class Footprints:
    """Per plan row, the regions its footprint covers and their weights (CSR layout).

    Row ``i``'s pieces are ``ptr[i]:ptr[i+1]`` (int64[n+1]); a row with no pieces keeps its
    site's region (an interior cell, or one whose footprint missed every region). Per piece:
    ``region`` (int32 region index, ``unassigned`` included), ``weight`` (float64, summing to 1
    per row), ``lat``/``lon`` (float64 WGS84 degrees: a point of the piece, for its map cell;
    the site itself for the piece in the site's region) and ``thr`` (int64: the row times
    2**33 plus the piece's cumulative threshold in 0..2**32, the last of each row exactly 2**32;
    ascending, for :func:`choose`).
    """

    ptr: np.ndarray
    region: np.ndarray
    weight: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    thr: np.ndarray

    @property
    def n_rows(self) -> int:
        """Plan rows described."""
        return len(self.ptr) - 1

    def border_rows(self) -> np.ndarray:
        """Rows whose devices are spread over pieces (int64 row indices)."""
        return np.flatnonzero(np.diff(self.ptr) > 0)

    def matrix(self, n_regions: int) -> np.ndarray:
        """Dense (rows, n_regions) weights (float64; rows without pieces are all zero)."""
        out = np.zeros((self.n_rows, n_regions), dtype=np.float64)
        np.add.at(out, (start_rows(self.ptr), self.region), self.weight)
        return out


def _project(lat0: float, lon0: float):
    coslat = float(np.cos(np.radians(lat0)))

    def fwd(xy: np.ndarray) -> np.ndarray:  # lon, lat -> x, y km
        return np.column_stack([(xy[:, 0] - lon0) * coslat * KM_PER_DEG,
                                (xy[:, 1] - lat0) * KM_PER_DEG])

    def back(xy: np.ndarray) -> np.ndarray:  # x, y km -> lon, lat
        return np.column_stack([xy[:, 0] / (coslat * KM_PER_DEG) + lon0,
                                xy[:, 1] / KM_PER_DEG + lat0])
    return fwd, back


def region_parts(regions: RegionSet, fwd=None) -> list[shapely.Geometry]:
    """Each region's own part (the points :meth:`RegionSet.locate` gives it: its polygon
    minus the regions looked up before it, i.e. the deeper ones), one per region index
    (``unassigned`` excluded), optionally transformed by ``fwd`` ((k, 2) lon/lat -> (k, 2))."""
    shapes = [r.geometry if r.geometry is not None
              else shapely.Polygon(r.rings[0], r.rings[1:]) for r in regions.regions]
    if fwd is not None:
        shapes = [shapely.transform(s, fwd) for s in shapes]
    order = sorted(range(regions.n), key=lambda i: -int(regions.depth[i]))
    parts: list[shapely.Geometry] = [shapely.Polygon()] * regions.n
    taken = shapely.Polygon()
    for i in order:
        parts[i] = shapely.make_valid(shapely.difference(shapes[i], taken))
        taken = shapely.union(taken, shapes[i])
    return parts


def population_density(regions: RegionSet, people: Mapping[str, float]) -> np.ndarray:
    """People per km² of each region's own part (float64[n+1], ``unassigned`` last) from a
    population count (region id -> people; a parent's count includes its children's: the
    calibration's reference population, :meth:`Calibration.people`).

    A region's own people are its count minus its direct children's; regions the count
    lacks, or whose own count is not positive while their part has area, take the overall
    density (all own people over all own area). The ``unassigned`` entry is the overall
    density too. Areas are planar in a local equirectangular projection (km²).
    """
    lat0 = float(np.mean([np.mean(r.rings[0][:, 1]) for r in regions.regions])) if regions.n else 0.0
    fwd, _ = _project(lat0, 0.0)
    area = np.array([shapely.area(p) for p in region_parts(regions, fwd)], dtype=np.float64)
    own = np.full(regions.n, np.nan)
    for i, rid in enumerate(regions.ids[: regions.n]):
        if rid in people:
            children = np.flatnonzero(regions.parent_index[: regions.n] == i)
            kids = [people.get(regions.ids[c]) for c in children]
            if all(k is not None for k in kids):
                own[i] = float(people[rid]) - float(sum(kids))  # type: ignore[arg-type]
    ok = np.isfinite(own) & (own > 0) & (area > 0)
    overall = own[ok].sum() / area[ok].sum() if ok.any() else 1.0
    out = np.full(regions.n + 1, overall, dtype=np.float64)
    out[: regions.n][ok] = own[ok] / area[ok]
    return out


def _borders(parts: list[shapely.Geometry]) -> shapely.Geometry:
    """Every boundary line of the regions' own parts, as one prepared geometry (km)."""
    todo, polygons = list(parts), []
    while todo:
        g = todo.pop()
        kind = shapely.get_type_id(g)
        if kind == 3:  # Polygon
            polygons.append(g)
        elif kind in (6, 7):  # MultiPolygon, GeometryCollection
            todo.extend(shapely.get_parts(g).tolist())
    lines = shapely.boundary(np.asarray(polygons, dtype=object)) if polygons else []
    border = shapely.union_all(lines) if len(lines) else shapely.LineString()
    shapely.prepare(border)
    return border


def _segments(lines: shapely.Geometry) -> np.ndarray:
    """The straight segments of ``lines`` (a (multi)line geometry) as two-point linestrings:
    a tree of them has tight boxes, so testing thousands of polygons against a country's
    borders touches only the few segments near each."""
    coords, index = shapely.get_coordinates(shapely.get_parts(lines), return_index=True)
    same = index[1:] == index[:-1]
    return shapely.linestrings(np.stack([coords[:-1][same], coords[1:][same]], axis=1))


def footprint_polygons(lat: np.ndarray, lon: np.ndarray, group: np.ndarray,
                       fwd, reach_factor: float = REACH_FACTOR,
                       border: shapely.Geometry | None = None) -> np.ndarray:
    """Footprint of each row (shapely polygons in the projected plane, km): the Voronoi cell of
    its site among the distinct sites of its ``group`` (operator), within ``reach_factor``
    times the distance to the group's nearest other site (object array). Rows at one site share
    a footprint; a group's lone site has nothing to bound it and gets None (it keeps its site's
    region). With ``border`` (the regions' boundary lines, :func:`_borders`), a site whose
    footprint does not meet any border gets None as well: its footprint lies within one
    region's part, the one holding its site, so it has nothing to spread (only the sites at a
    border, under a tenth of a national plan, get polygons). The sites whose Voronoi cell meets no
    border are set aside before any reach is measured; the others' polygons are the same as
    without ``border``."""
    xy = fwd(np.column_stack([lon, lat]))
    out = np.full(len(lat), None, dtype=object)
    segments = None if border is None else shapely.STRtree(_segments(border))

    def meets_border(shapes: np.ndarray) -> np.ndarray:
        """Which of ``shapes`` (polygons) intersect a border segment (bool)."""
        assert segments is not None
        hit = np.zeros(len(shapes), dtype=bool)
        hit[segments.query(shapes, predicate="intersects")[0]] = True
        return hit

    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        sites, inverse = np.unique(np.round(xy[rows], 6), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        if len(sites) < 2:
            continue
        points = shapely.points(sites)
        cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(points),
                                                           ordered=True))
        # a footprint is within its Voronoi cell: a cell off every border has nothing to spread
        todo = np.arange(len(sites)) if border is None else np.flatnonzero(meets_border(cells))
        tree = shapely.STRtree(points)
        near = tree.query_nearest(points[todo], exclusive=True, return_distance=True,
                                  all_matches=False)
        dist = np.zeros(len(todo))
        dist[near[0][0]] = near[1]
        reach = reach_factor * dist
        polys = np.full(len(sites), None, dtype=object)
        polys[todo] = shapely.intersection(
            cells[todo], shapely.buffer(points[todo], reach, quad_segs=16))
        if border is not None:  # cut by its reach, it may no longer meet a border
            off = todo[~meets_border(polys[todo])]
            polys[off] = None
        out[rows] = polys[inverse]
    return out


def footprint_weights(lat: np.ndarray, lon: np.ndarray, group: np.ndarray, regions: RegionSet,
                      density: np.ndarray | None = None, site_region: np.ndarray | None = None,
                      reach_factor: float = REACH_FACTOR, min_share: float = MIN_SHARE,
                      skip_interior: bool = True) -> Footprints:
    """The regions each plan row's footprint covers, weighted by area times ``density``.

    ``lat``/``lon``: the rows' points (float64 degrees: site, or sector centre); ``group``: the
    operator of each row (int; one tessellation per operator); ``density``: people per km² per
    region index (float64[n+1], ``unassigned`` last; None: uniform, weights by area);
    ``site_region``: each row's region by the exact rule (int32; computed when None). The part
    of a footprint outside every region counts as ``unassigned`` at its site region's density.
    Rows whose only piece is their site's region get no pieces (interior cells). The footprints
    of sites whose Voronoi cell (or whose footprint) meets no region border are not cut by the
    regions at all (``skip_interior``; False cuts every footprint, the same result, slower: for
    checks). Raises ``ValueError`` when the arrays' lengths differ.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    group = np.asarray(group)
    n = len(lat)
    if len(lon) != n or len(group) != n:
        raise ValueError("lat, lon and group must have one value per plan row")
    un = regions.unassigned
    if density is None:
        density = np.ones(regions.n + 1, dtype=np.float64)
    density = np.asarray(density, dtype=np.float64)
    if site_region is None:
        site_region = regions.locate(lat, lon).astype(np.int32)
    empty = Footprints(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0),
                       np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
    if n == 0 or regions.n == 0:
        return empty
    lat0, lon0 = float(np.mean(lat)), float(np.mean(lon))
    fwd, back = _project(lat0, lon0)
    parts = region_parts(regions, fwd)
    polys = footprint_polygons(lat, lon, group, fwd, reach_factor,
                               _borders(parts) if skip_interior else None)
    has = np.flatnonzero(polys != None)  # noqa: E711 (elementwise)
    tree = shapely.STRtree(parts)
    fp_idx, reg_idx = tree.query(polys[has].astype(object), predicate="intersects")
    pieces = shapely.intersection(polys[has][fp_idx], np.asarray(parts, dtype=object)[reg_idx])
    piece_area = shapely.area(pieces)
    rows = has[fp_idx]
    total = shapely.area(polys[has])
    inside = np.bincount(fp_idx, weights=piece_area, minlength=has.size)
    outside = np.maximum(total - inside, 0.0)
    # every piece: (row, region, weight, point)
    p_row = np.concatenate([rows, has])
    p_region = np.concatenate([reg_idx.astype(np.int32), np.full(has.size, un, np.int32)])
    p_raw = np.concatenate([piece_area * density[reg_idx],
                            outside * density[site_region[has]]])
    pts = shapely.point_on_surface(np.concatenate([pieces, np.full(has.size, None, object)]))
    keep = p_raw > 0
    p_row, p_region, p_raw, pts = p_row[keep], p_region[keep], p_raw[keep], pts[keep]
    order = np.lexsort((p_region, p_row))
    p_row, p_region, p_raw, pts = p_row[order], p_region[order], p_raw[order], pts[order]
    row_sum = np.bincount(p_row, weights=p_raw, minlength=n)
    share = p_raw / row_sum[p_row]
    keep = share >= min_share
    p_row, p_region, share, pts = p_row[keep], p_region[keep], share[keep], pts[keep]
    row_sum = np.bincount(p_row, weights=share, minlength=n)
    weight = np.round(share / row_sum[p_row], WEIGHT_DIGITS)
    # interior rows (one piece, the site's own region) keep the site: no pieces
    count = np.bincount(p_row, minlength=n)
    interior = (count[p_row] == 1) & (p_region == site_region[p_row])
    p_row, p_region, weight, pts = (p_row[~interior], p_region[~interior], weight[~interior],
                                    pts[~interior])
    ptr = np.zeros(n + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(p_row, minlength=n))
    xy = np.full((p_row.size, 2), np.nan)
    got = ~shapely.is_missing(pts)
    if got.any():
        xy[got] = back(shapely.get_coordinates(pts[got]))
    at_site = (p_region == site_region[p_row]) | ~got
    lat_p = np.where(at_site, lat[p_row], xy[:, 1])
    lon_p = np.where(at_site, lon[p_row], xy[:, 0])
    return Footprints(ptr, p_region, weight, lat_p, lon_p, _thresholds(ptr, weight))


def _thresholds(ptr: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each piece's row times 2**33 plus its row's cumulative weight up to it as an integer in
    0..2**32 (int64), the last of each row exactly 2**32."""
    cum = np.cumsum(weight)
    start = np.repeat(ptr[:-1], np.diff(ptr))
    before = np.concatenate([[0.0], cum])[start]
    out = np.rint((cum - before) * _SCALE).astype(np.int64)
    last = ptr[1:][np.diff(ptr) > 0] - 1
    out[last] = _SCALE
    return (start_rows(ptr) << _ROW_SHIFT) + np.minimum(out, _SCALE)


def start_rows(ptr: np.ndarray) -> np.ndarray:
    """The row of each piece of a CSR layout ``ptr`` (int64)."""
    return np.repeat(np.arange(len(ptr) - 1, dtype=np.int64), np.diff(ptr))


def _word_multiplier(j: int) -> np.uint64:
    return np.uint64((0x9E3779B97F4A7C15 * (2 * j + 1) + DRAW_SALT) % (1 << 64) | 1)


def device_draw_hashes(words: np.ndarray, length: np.ndarray) -> np.ndarray:
    """An unkeyed 64-bit hash (uint64[n]) of each message ``operator || 0x1F || device`` as
    :func:`estimators.pseudonym.device_words` lays it out (``words``: uint64[b, n], zero past
    each message's ``length``, uint64[n] bytes), for :func:`draw`.

    Each block times an odd constant of its position, xored, with the length and the public
    :data:`DRAW_SALT`, then murmur3's finalizer twice: zero blocks past a message add nothing,
    so the hash does not depend on how many blocks the batch's longest message needed. Not
    keyed and not a pseudonym (anyone can compute it from a pseudonym): it only draws a border
    cell's piece (:func:`choose`) and is never stored, checkpointed or published.
    """
    length = np.asarray(length, dtype=np.uint64)
    h = length * np.uint64(0xD6E8FEB86659FD93) ^ np.uint64(DRAW_SALT)
    for j in range(words.shape[0]):
        h ^= words[j] * _word_multiplier(j)
    return mix64(mix64(h) ^ np.uint64(DRAW_SALT))


def draw(device_hash: np.ndarray, plan_row: np.ndarray) -> np.ndarray:
    """A uniform draw in 0..2**32-1 (int64) per (device, plan row), from the device's
    :func:`device_draw_hashes`: the same pair always gives the same draw; different rows give
    independent-looking draws for one device."""
    key = np.asarray(device_hash, dtype=np.uint64)
    row = np.asarray(plan_row, dtype=np.int64).astype(np.uint64)
    return (mix64(key ^ mix64(row + _SALT)) >> np.uint64(32)).astype(np.int64)


def choose(fp: Footprints, device_hash: np.ndarray, plan_row: np.ndarray) -> np.ndarray:
    """Index of the piece each (device, plan row) lands in (int64; -1 for rows without
    pieces): the first piece whose cumulative threshold exceeds the pair's :func:`draw`
    (``device_hash``: :func:`device_draw_hashes`, uint64)."""
    plan_row = np.asarray(plan_row, dtype=np.int64)
    out = np.full(plan_row.size, -1, dtype=np.int64)
    if plan_row.size == 0 or fp.region.size == 0:
        return out
    pieces = np.diff(fp.ptr)[plan_row] > 0
    if not pieces.any():
        return out
    rows = plan_row[pieces]
    at = (rows << _ROW_SHIFT) + draw(np.asarray(device_hash)[pieces], rows)
    out[pieces] = np.searchsorted(fp.thr, at, side="right")
    return out


_MEMO: dict[bytes, tuple[RegionSet, Footprints]] = {}
_MEMO_SIZE = 2


WeightsFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, RegionSet, "np.ndarray | None",
                            np.ndarray], Footprints]
"""``(lat, lon, group, regions, density, site_region) -> Footprints``: :func:`footprint_weights`
with those arguments, or what gives the same result (a cache of it)."""


def _weights(lat: np.ndarray, lon: np.ndarray, group: np.ndarray, regions: RegionSet,
             density: np.ndarray | None, site_region: np.ndarray) -> Footprints:
    return footprint_weights(lat, lon, group, regions, density, site_region)


def _memo_weights(lat: np.ndarray, lon: np.ndarray, group: np.ndarray, regions: RegionSet,
                  density: np.ndarray | None, site_region: np.ndarray,
                  compute: WeightsFunction = _weights) -> Footprints:
    """:func:`footprint_weights` (by ``compute``), computed once per process for the same plan,
    regions and density (a worker builds one engine per partition from one plan: seconds each
    for a national plan). Keyed by a digest of the arrays and the identity of ``regions``; the
    result is only read."""
    digest = hashlib.blake2b(digest_size=16)
    for a in (lat, lon, group, site_region, density if density is not None else np.zeros(0)):
        arr = np.ascontiguousarray(a)
        digest.update(str((arr.dtype.str, arr.shape)).encode())
        digest.update(arr.tobytes())
    digest.update(str(id(regions)).encode())
    key = digest.digest()
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is regions:
        return hit[1]
    fp = compute(lat, lon, group, regions, density, site_region)
    while len(_MEMO) >= _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = (regions, fp)
    return fp


def plan_footprints(engine: Engine, rule: str, people: Mapping[str, float] | None = None,
                    compute: WeightsFunction = _weights) -> tuple[str, Footprints | None]:
    """The rule in force (as :func:`apportion_plan`) and the footprint weights of ``engine``'s
    loaded plan it spreads border cells' devices by (None: nothing to spread: ``site``, or no
    plan), computed by ``compute`` (:data:`WeightsFunction`). Reads the plan and the regions and
    changes nothing: a thread may compute it while another reads pings;
    :func:`apply_footprints` then puts it in force. Raises ``ValueError`` for an unknown
    rule."""
    if rule not in RULES:
        raise ValueError(f"unknown footprint rule {rule!r} (one of {', '.join(RULES)})")
    if rule == "reference" and not people:
        rule = "site"
    plan = engine.plan
    if plan is None or rule == "site" or len(plan) == 0:
        return rule, None
    density = population_density(engine.regions, people) if rule == "reference" and people \
        else None
    _, group = np.unique(np.asarray(plan.operator, dtype=object).astype(str), return_inverse=True)
    return rule, _memo_weights(plan.lat, plan.lon, group.reshape(-1), engine.regions, density,
                               plan.region, compute)


def apply_footprints(engine: Engine, fp: Footprints) -> None:
    """Spread the devices of the border cells of ``engine``'s loaded plan by ``fp``
    (:func:`plan_footprints` of that plan): the pieces' locations are held in the engine's cell
    table for good. Raises ``RuntimeError`` when the table cannot hold them."""
    assert engine.plan is not None
    engine.plan.apportion(fp, engine.cells)
    plan = engine.plan
    engine.hold_locations(lambda: plan.piece_loc)


def apportion_plan(engine: Engine, rule: str, people: Mapping[str, float] | None = None) -> str:
    """Spread the devices of the border cells of ``engine``'s loaded plan over the regions their
    footprints cover, by ``rule`` (:data:`RULES`; ``people``: region id -> people of the
    reference population, for ``reference``). Returns the rule in force: ``site`` (every device
    at its cell's site) for ``reference`` without ``people``. The pieces' locations are held in
    the engine's cell table for good. Raises ``ValueError`` for an unknown rule."""
    rule, fp = plan_footprints(engine, rule, people)
    if fp is not None:
        apply_footprints(engine, fp)
    return rule
