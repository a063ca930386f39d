"""Binning: positions to H3 cells and regions, (cell, region) pairs to compact location numbers.

The engine keys locations by a small integer ``loc`` (an index into :class:`CellTable`) so device
state stays compact. A location is a pair: the H3 cell at the working resolution (for the map)
and the region of the ping's own position (for the region figures), so a cell a border crosses
holds one location per region its pings fall in. Two ways in:

- cell-id pings: the operator's cell plan is binned once when loaded (:class:`CellPlan`): each
  row's point (its site, or its sector's centre, :func:`sector_centre`) is tested against the
  region polygons exactly, so each ping is one array lookup ``plan_loc[plan_row]``;
- lat/lon pings: binned per batch with the vectorized H3 port (:mod:`estimators.h3vec`); the
  region of each position comes from :class:`PointRegions`, an exact point-in-polygon test
  memoized by H3 cell: a working cell no border crosses gives its region to every point in it,
  and only points in cells a border crosses are tested one by one. The memo never changes an
  answer, only its cost.

Cells no device references any more are reclaimed (:meth:`CellTable.reclaim`), so the table is
bounded by the locations in use; when even that exceeds ``MAX_LOCATIONS`` the pings that would
need another location get ``loc`` -1 (rejected as ``too_many_cells`` by the event-time windows).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from itertools import chain

import h3
import numpy as np
import shapely

from estimators.device_index import DeviceIndex, mix64
from estimators.footprints import Footprints, choose
from estimators.h3vec import hexagon_circumradius, is_pentagon, latlng_to_cell
from estimators.presence import MAX_LOCATIONS
from estimators.regions import RegionSet

EARTH_RADIUS_M = 6_371_008.8
RECLAIM_FLOOR = 1 << 16
MEMO_LIMIT = 1 << 20
"""Working cells held by the memo of :class:`PointRegions` before it is emptied (about 20 MB
at most; the memo only saves work, so emptying it never changes a result)."""
_EDGE_SLACK_DEG = 1e-6
"""Added to every distance in the border tests (about 0.1 m): covers the difference between a
cell's great-circle edges and the straight lon/lat segments tested, and rounding."""
_ROUNDING_DEG = 1e-9
"""Added to the reach of a cell's centre test (:meth:`PointRegions._near_centre`): far more
than the rounding of a planar distance between lon/lat points (~1e-13 degrees)."""
_KEY_HEAD_BITS = 12
"""H3 cell bits that are the same for every cell at one resolution (reserved bit, mode, reserved
edge bits, resolution): the location key puts region bits in their place."""
_CELL_BITS = np.uint64((1 << 52) - 1)


def region_bits(res: int) -> int:
    """Bits a location key has for the region index at working resolution ``res``: the 12 head
    bits of an H3 cell id plus the 3 bits of each unused digit below ``res`` (33 at res 8)."""
    return _KEY_HEAD_BITS + 3 * (15 - res)


class CellTable:
    """The (H3 cell, region) locations in use at one resolution; bounded and never raising.

    A location gets a number ``loc`` on first sight; :attr:`cell` and :attr:`region` give its
    H3 cell (at this table's resolution) and its region index. A cell a border crosses has one
    location per region its pings fall in (the region of each ping's own position, see
    :class:`PointRegions`); cells given without a region (:meth:`locate` without ``region``:
    checkpoints written before locations had regions) take the region at the cell's centre,
    H3's polygon-fill rule. Numbers stay with their location while anything references it;
    :meth:`reclaim` frees the locations that nothing references any more (no device's latest
    ping, no held ping, no cell-plan row: :attr:`in_use` says which) and reuses their numbers,
    so the table holds the locations in use, not every one ever seen. At most ``capacity``
    (``MAX_LOCATIONS``, the location bits of a device stamp) are held at once: when a batch
    brings more new locations than there is room for even after reclaiming, they get ``-1``
    (the positions are counted in :attr:`refused`) and the caller rejects those pings.

    The numbers never decide a figure (ties are settled by :attr:`rank`, the (cell, region)
    order; tallies are keyed by cell id and region), so which number a location gets does not
    matter. Raises ``ValueError`` for a resolution outside 0..15 or more regions than a key
    holds (:func:`region_bits`: 4,096 at res 15, 32,768 at res 14, no practical limit below).
    """

    def __init__(self, regions: RegionSet, res: int, capacity: int = MAX_LOCATIONS) -> None:
        if not 0 <= res <= 15:
            raise ValueError(f"H3 resolution must be 0..15, got {res}")
        if len(regions.ids) > 1 << region_bits(res):
            raise ValueError(f"{regions.n} regions: at H3 resolution {res} a location holds at "
                             f"most {(1 << region_bits(res)) - 1}")
        self.regions = regions
        self.res = res
        self.capacity = capacity
        self.in_use: Callable[[], np.ndarray] | None = None
        self.refused = 0
        self.reclaimed = 0
        self.points = PointRegions(regions, res)
        self._low = 3 * (15 - res)  # unused digit bits of a cell id at ``res`` (all ones)
        self._head = np.uint64((1 << 59) | (res << 52))  # mode 1 (cell), resolution
        self._index = DeviceIndex(1024)  # mixed location key -> index row
        self._loc_of_row = np.zeros(len(self._index.keys), dtype=np.int64)
        self._cell = np.zeros(1024, dtype=np.uint64)  # by loc, ``_top`` of them used
        self._region = np.zeros(1024, dtype=np.int32)
        self._key = np.zeros(1024, dtype=np.uint64)
        self._top = 0
        self._free = np.zeros(0, dtype=np.int64)  # numbers below ``_top`` not in use, ascending
        self._live_after_reclaim = 0

    def __len__(self) -> int:
        return self._index.n

    @property
    def cell(self) -> np.ndarray:
        """H3 cell of each location number (uint64; stale for free numbers)."""
        return self._cell[: self._top]

    @property
    def region(self) -> np.ndarray:
        """Region index of each location number (int32; stale for free numbers)."""
        return self._region[: self._top]

    @property
    def rank(self) -> np.ndarray:
        """Order of each location number (uint64; stale for free numbers): by H3 cell id, then
        by region index. The tie-break between a device's pings at one millisecond."""
        return self._key[: self._top]

    @property
    def nbytes(self) -> int:
        """Bytes held by the table and its region memos."""
        return int(self._index.nbytes + self._loc_of_row.nbytes + self._cell.nbytes
                   + self._region.nbytes + self._key.nbytes + self._free.nbytes
                   + self.points.nbytes)

    def key(self, cells: np.ndarray, region: np.ndarray) -> np.ndarray:
        """The location key of (cell, region) pairs (uint64, ordered by cell then region): the
        cell's varying bits above the region index's :func:`region_bits`."""
        cells = np.asarray(cells, dtype=np.uint64)
        body = (cells & _CELL_BITS) >> np.uint64(self._low)
        return ((body << np.uint64(_KEY_HEAD_BITS + self._low))
                | np.asarray(region, dtype=np.int64).astype(np.uint64))

    def _unkey(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bits = np.uint64(_KEY_HEAD_BITS + self._low)
        low = np.uint64((1 << self._low) - 1)
        cells = self._head | ((keys >> bits) << np.uint64(self._low)) | low
        return cells, (keys & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int32)

    def locate(self, cells: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
        """``loc`` of each H3 cell (uint64 at this table's resolution) in ``region`` (region
        indices, int, same shape), adding unseen locations; without ``region``, in the region
        of the cell's centre. ``-1`` for new locations beyond :attr:`capacity` (after
        reclaiming what is free)."""
        cells = np.asarray(cells, dtype=np.uint64).reshape(-1)
        if cells.size == 0:
            return np.zeros(0, dtype=np.int64)
        if region is None:
            uniq, inverse = np.unique(cells, return_inverse=True)
            keys = self.key(uniq, self.points.centre_regions(uniq))
            return self._counted(self._locate_keys(keys)[inverse.reshape(-1)])
        region = np.asarray(region, dtype=np.int64).reshape(-1)
        if region.size != cells.size or region.min() < 0 or region.max() > self.regions.unassigned:
            raise ValueError(f"region indices must be 0..{self.regions.unassigned}, one per cell")
        uniq, inverse = np.unique(self.key(cells, region), return_inverse=True)
        return self._counted(self._locate_keys(uniq)[inverse.reshape(-1)])

    def locate_latlng(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``loc`` of each WGS84 position (validated beforehand): its H3 cell at this
        resolution and the region holding the position itself (:class:`PointRegions`);
        ``-1`` when the table is full (see :meth:`locate`). The same as
        :meth:`locate_point_keys` of :meth:`point_keys`."""
        return self.locate_point_keys(*self.point_keys(lat, lon))

    def point_keys(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The location key (uint64, :meth:`key`) of each WGS84 position (validated
        beforehand), and whether a region border crosses its cell (bool), without adding
        anything to the table: the part of :meth:`locate_latlng` that only reads the regions
        (and fills the :class:`PointRegions` memo), so a reader thread may run it while
        another thread uses the table (one thread at a time per table's memo)."""
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        if lat.size == 0:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool)
        cells = latlng_to_cell(lat, lon, self.res)
        region = self.points.cell_regions(cells)  # region, or -1 where a border crosses
        border = region < 0
        if border.any():
            at = np.flatnonzero(border)
            region[at] = self.points.point_regions(lat[at], lon[at])
        return self.key(cells, region), border

    def locate_point_keys(self, keys: np.ndarray, border: np.ndarray) -> np.ndarray:
        """``loc`` of each location key of :meth:`point_keys` (adding unseen ones; ``-1``
        beyond :attr:`capacity`). New keys are numbered in the order of whole cells' keys, then
        border cells' keys, each ascending. Each key is looked up in the table's hash index
        as it comes (no sort); only the unseen ones are sorted."""
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        if keys.size == 0:
            return np.zeros(0, dtype=np.int64)
        rows = self._index.lookup(mix64(keys))
        found = rows >= 0
        locs = self._loc_of_row.take(rows)
        locs[~found] = -1
        miss = np.flatnonzero(~found)
        if miss.size:
            by_border = np.asarray(border, dtype=bool).reshape(-1)[miss]
            w_miss, b_miss = miss[~by_border], miss[by_border]
            w_keys, w_inverse = np.unique(keys[w_miss], return_inverse=True)
            b_keys, b_inverse = np.unique(keys[b_miss], return_inverse=True)
            new = self._add_missing(np.concatenate([w_keys, b_keys]), locs[found])
            locs[w_miss] = new[w_inverse.reshape(-1)]
            locs[b_miss] = new[w_keys.size + b_inverse.reshape(-1)]
        return self._counted(locs)

    def _counted(self, locs: np.ndarray) -> np.ndarray:
        """``locs``, with its refused positions (-1) added to :attr:`refused`."""
        self.refused += int(np.count_nonzero(locs < 0))
        return locs

    def _locate_keys(self, keys: np.ndarray) -> np.ndarray:
        """``loc`` of distinct location keys, adding the unseen ones (``-1`` beyond capacity)."""
        mixed = mix64(keys)
        rows = self._index.lookup(mixed)
        locs = np.where(rows >= 0, self._loc_of_row[np.maximum(rows, 0)], -1)
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            locs[missing] = self._add_missing(keys[missing], locs[rows >= 0], mixed[missing])
        return locs

    def _add_missing(self, keys: np.ndarray, found: np.ndarray,
                     mixed: np.ndarray | None = None) -> np.ndarray:
        """``loc`` of distinct location keys not in the table, added in their order (uint64;
        ``mixed``: their :func:`mix64`): when they do not all fit, the table is first reclaimed
        (keeping ``found``, the batch's other locations), then the ones beyond
        :attr:`capacity` get -1."""
        locs = np.full(keys.size, -1, dtype=np.int64)
        if keys.size == 0:
            return locs
        if keys.size > self.capacity - len(self):
            self.reclaim(also=found)
        take = max(min(self.capacity - len(self), keys.size), 0)
        if take:
            locs[:take] = self._add(keys[:take], mix64(keys[:take]) if mixed is None
                                    else mixed[:take])
        return locs

    def _add(self, keys: np.ndarray, mixed: np.ndarray) -> np.ndarray:
        n = len(keys)
        reuse = self._free[:n]
        self._free = self._free[n:]
        new = np.concatenate([reuse, np.arange(self._top, self._top + n - reuse.size,
                                               dtype=np.int64)])
        self._top += n - reuse.size
        if self._top > len(self._cell):
            size = max(self._top, 2 * len(self._cell))
            grow = size - len(self._cell)
            self._cell = np.concatenate([self._cell, np.zeros(grow, np.uint64)])
            self._region = np.concatenate([self._region, np.zeros(grow, np.int32)])
            self._key = np.concatenate([self._key, np.zeros(grow, np.uint64)])
        cells, region = self._unkey(keys)
        self._cell[new] = cells
        self._region[new] = region
        self._key[new] = keys
        rows = self._index.insert(mixed)
        if len(self._index.keys) > len(self._loc_of_row):
            self._loc_of_row = np.concatenate(
                [self._loc_of_row,
                 np.zeros(len(self._index.keys) - len(self._loc_of_row), dtype=np.int64)])
        self._loc_of_row[rows] = new
        return new

    def reclaim(self, also: np.ndarray | None = None) -> int:
        """Free every location that :attr:`in_use` (and ``also``, location numbers) does not
        reference; returns how many were freed. Without :attr:`in_use` nothing is freed."""
        if self.in_use is None:
            return 0
        used = np.zeros(self._top + 1, dtype=bool)
        refs = self.in_use()
        used[refs[(refs >= 0) & (refs < self._top)]] = True
        if also is not None and also.size:
            used[also[(also >= 0) & (also < self._top)]] = True
        n = len(self)
        loc = self._loc_of_row[:n]
        keep = used[loc]
        freed = loc[~keep]
        kept = self._index.compact(keep)
        loc_of_row = np.zeros(len(self._index.keys), dtype=np.int64)
        loc_of_row[: kept.size] = loc[kept]
        self._loc_of_row = loc_of_row
        self._top = int(loc_of_row[: kept.size].max()) + 1 if kept.size else 0
        free = np.concatenate([self._free, freed])
        self._free = np.sort(free[free < self._top])
        if 4 * self._top < len(self._cell) and len(self._cell) > 1024:
            size = max(2 * self._top, 1024)
            self._cell, self._region, self._key = (self._cell[:size].copy(),
                                                   self._region[:size].copy(),
                                                   self._key[:size].copy())
        self.reclaimed += freed.size
        self._live_after_reclaim = kept.size
        return int(freed.size)

    def maybe_reclaim(self, floor: int = RECLAIM_FLOOR) -> int:
        """:meth:`reclaim` once the table has doubled since the last time (and holds more than
        ``floor`` locations): amortized, the table stays within twice the locations in use."""
        if len(self) > max(2 * self._live_after_reclaim, floor):
            return self.reclaim()
        return 0


class PointRegions:
    """The region of positions by an exact point-in-polygon test, memoized by H3 cell.

    :meth:`RegionSet.locate` decides (the deepest region holding the point; a point on a border
    by the half-open rule; ``unassigned`` outside every region). The memo only saves work: per
    working cell (resolution ``res``), its region when no region border comes within
    :data:`_EDGE_SLACK_DEG` of its outline (every point in it then has the region of its
    centre), else -1 (crossed: :meth:`point_regions` tests its points one by one). A new cell
    is tested on its centre first, against a proven bound on how far its outline reaches
    (:meth:`_far_by_bound`, then :meth:`_near_centre`); only cells a border may come near are
    tested on their outline: the same answer, at a fraction of the cost.

    Distances are planar in lon/lat degrees, as the region polygons are (RFC 7946 edges are
    straight in lon/lat). A full memo (:data:`MEMO_LIMIT`) is emptied.
    """

    def __init__(self, regions: RegionSet, res: int) -> None:
        self.regions = regions
        self.res = res
        self.tested = 0  # positions tested one by one (for benchmarks)
        self._whole = _Memo(lambda: MEMO_LIMIT)  # working cell -> region or -1

    @property
    def nbytes(self) -> int:
        """Bytes held by the memo."""
        return self._whole.nbytes

    def centre_regions(self, cells: np.ndarray) -> np.ndarray:
        """Region index at each H3 cell's centre (int32): H3's polygon-fill rule."""
        centres = np.array([h3.api.basic_int.cell_to_latlng(int(c)) for c in cells.tolist()],
                           dtype=np.float64).reshape(-1, 2)
        return self.regions.locate(centres[:, 0], centres[:, 1]).astype(np.int32)

    def cell_regions(self, cells: np.ndarray) -> np.ndarray:
        """Region of each working cell (uint64, cells may repeat), or -1 where a border crosses
        it (int32, a new array). Each cell is looked up in the memo as it comes; the cells not
        in it are classified once each (:meth:`_classify_cells`) and added."""
        region = self._whole.get(cells)
        new = np.flatnonzero(region == _Memo.MISSING)
        if new.size:
            uniq, inverse = np.unique(cells[new], return_inverse=True)
            got = self._classify_cells(uniq)
            self._whole.put(uniq, got)
            region[new] = got[inverse.reshape(-1)]
        return region

    def _classify_cells(self, cells: np.ndarray) -> np.ndarray:
        """Region, or -1 where a border comes near, of new distinct working cells (int32).

        A cell whose centre is far from every border by :meth:`_far_by_bound` is whole; the
        others are tested on their outline (:meth:`_crossed`). The region of a whole cell is
        the region of its centre."""
        centre = np.array([h3.api.basic_int.cell_to_latlng(c) for c in cells.tolist()],
                          dtype=np.float64).reshape(-1, 2)  # lat, lon
        crossed = np.zeros(cells.size, dtype=bool)
        rest = np.flatnonzero(~self._far_by_bound(cells, centre))
        if rest.size:
            crossed[rest] = self._crossed(cells[rest], centre[rest])
        region = np.full(cells.size, -1, dtype=np.int32)
        keep = np.flatnonzero(~crossed)
        if keep.size:
            region[keep] = self.regions.locate(centre[keep, 0], centre[keep, 1])
        return region

    def _far_by_bound(self, cells: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Cells that :meth:`_crossed` would find whole, proven from their centre alone (bool;
        false: not proven, the caller tests the outline). ``centre``: float64[n, 2] (lat, lon)
        of each cell's H3 centre.

        The bound: at a resolution of Class II (even), H3 lays each face of the icosahedron out
        in a plane tangent to the sphere at the face's centre (gnomonic projection) and a cell
        is a regular hexagon there, of circumradius ``u / (sqrt(3) * sqrt(7)**res)`` (tangent
        units of a unit sphere, ``u`` H3's res-0 unit:
        :func:`~estimators.h3vec.hexagon_circumradius`). Going back to the sphere shrinks
        every length (the inverse projection's scale factors are ``cos(a)**2`` and ``cos(a)``
        at angle ``a`` from the face centre), also across a face edge, where two faces' planes
        unfold into one: so each corner of the outline lies within ``d``, that many radians
        plus a millionth (for the rounding of H3's arithmetic and this one's), of the cell's
        centre along the great circle. Near a vertex of the icosahedron the unfolding does not
        hold: cells whose centre comes within ``4 d`` of one are not proven. A great-circle
        distance of at most ``d`` from a centre at latitude ``lat`` means a latitude difference
        of at most ``d`` and, by the haversine formula, a longitude difference of at most
        ``dlon = 2 asin(sin(d/2) / sqrt(cos(lat) cos(|lat| + d)))``; so every corner lies
        within ``reach = hypot(d, dlon)`` (in degrees) of the centre in the lon/lat plane, the
        corners are not spread across the antimeridian when ``|lon| + dlon < 180``, and a
        hexagon (not a pentagon) of a Class II resolution has six corners (H3 adds corners
        where an edge crosses a face edge only at Class III resolutions). When no border comes
        within ``reach + slack`` of the centre, :meth:`_near_centre`'s argument applies: the
        outline test finds the cell whole too. (Checked against H3 on 740,000 cells of
        resolutions 4 to 12: the farthest corner lies at most 1.0000000001 circumradii away.)
        """
        n = cells.size
        if self.res % 2 or n == 0:
            return np.zeros(n, dtype=bool)
        d = hexagon_circumradius(self.res) * (1.0 + 1e-6)  # a millionth for rounding
        lat = np.radians(centre[:, 0])
        lon = centre[:, 1]
        top = np.abs(lat) + d
        ok = (top < np.radians(89.0)) & ~is_pentagon(cells)
        ok &= _icosahedron_vertex_cos(np.cos(lat), lat, np.radians(lon)) < np.cos(4.0 * d)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.sin(d / 2.0) / np.sqrt(np.cos(lat) * np.cos(np.minimum(top, np.pi / 2)))
            ok &= ratio < 1.0
            dlon = 2.0 * np.arcsin(np.minimum(ratio, 1.0))
            ok &= np.abs(lon) + np.degrees(dlon) < 180.0
        at = np.flatnonzero(ok)
        if at.size == 0:
            return ok
        reach = np.degrees(np.sqrt(d * d + dlon[at] * dlon[at]))
        ok[at] = ~self.regions.near_border(shapely.points(lon[at], centre[at, 0]),
                                           reach + (_EDGE_SLACK_DEG + _ROUNDING_DEG))
        return ok

    def _crossed(self, cells: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Whether a border comes within :data:`_EDGE_SLACK_DEG` of each cell's outline, or the
        cell is odd (bool): its H3 outline (``h3.cell_to_boundary``, straight lon/lat edges)
        tested against the region borders. ``centre``: float64[n, 2] (lat, lon)."""
        rings = [h3.api.basic_int.cell_to_boundary(c) for c in cells.tolist()]
        # pentagons and cells distorted across an icosahedron edge (not 6 vertices) or lying
        # across the antimeridian are taken as crossed: their points are tested one by one
        six = np.array([len(r) == 6 for r in rings], dtype=bool)
        outline = np.zeros((cells.size, 7, 2), dtype=np.float64)  # lon, lat, closed
        if six.any():
            flat = chain.from_iterable(chain.from_iterable(
                r for r, ok in zip(rings, six, strict=True) if ok))
            outline[six, :6] = np.fromiter(flat, dtype=np.float64, count=12 * int(six.sum())
                                           ).reshape(-1, 6, 2)[:, :, ::-1]
        outline[:, 6] = outline[:, 0]
        odd = ~six | (np.ptp(outline[:, :6, 0], axis=1) > 180.0)
        crossed = odd.copy()
        even = np.flatnonzero(~odd)
        if even.size:
            near = self._near_centre(centre[even], outline[even, :6])
            crossed[even[near]] = self.regions.near_border(shapely.polygons(outline[even[near]]),
                                                           _EDGE_SLACK_DEG)
        return crossed

    def _near_centre(self, centre: np.ndarray, corners: np.ndarray) -> np.ndarray:
        """Whether a border may come within :data:`_EDGE_SLACK_DEG` of each cell's outline (bool
        per cell), by a cheap first test on its centre; where true the caller tests the outline
        itself. ``centre``: float64[n, 2] (lat, lon); ``corners``: float64[n, 6, 2] (lon, lat).

        The test is conservative: a cell is called far from every border only when the border
        is farther from its centre than ``reach + slack``, ``reach`` being the largest planar
        distance from the centre to a corner (plus :data:`_ROUNDING_DEG`). The disc of radius
        ``reach`` about the centre holds every corner, so (a disc being convex) the convex hull
        of the corners and with it the whole outline; every point of the outline is then at
        least ``slack`` from the border (the triangle inequality), which is what the outline
        test (``shapely.dwithin`` of the outline, ``slack``) says of that cell too. The margin
        covers the rounding of the two distance computations (~1e-13 degrees at |lon| <= 180).
        A point test costs a fifth of an outline test, and few cells are near a border.
        """
        reach = np.sqrt(np.square(corners - centre[:, None, ::-1]).sum(axis=2)).max(axis=1)
        return self.regions.near_border(shapely.points(centre[:, 1], centre[:, 0]),
                                        reach + (_EDGE_SLACK_DEG + _ROUNDING_DEG))

    def point_regions(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Region of each position (in crossed working cells), exactly (int32): tested one by
        one (:meth:`RegionSet.locate`, an indexed point-in-area test: a few hundred ns a
        point, less than looking the point up in a memo by a finer cell would cost)."""
        return self._test(lat, lon)

    def _test(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        self.tested += lat.size
        return self.regions.locate(lat, lon).astype(np.int32)


@cache
def _icosahedron_vertices() -> np.ndarray:
    """Unit vectors (float64[12, 3]) of the icosahedron's vertices: the centres of H3's
    resolution-0 pentagons."""
    ll = np.radians([h3.api.basic_int.cell_to_latlng(c)
                     for c in h3.api.basic_int.get_pentagons(0)])
    return np.stack([np.cos(ll[:, 0]) * np.cos(ll[:, 1]), np.cos(ll[:, 0]) * np.sin(ll[:, 1]),
                     np.sin(ll[:, 0])], axis=1)


def _icosahedron_vertex_cos(cos_lat: np.ndarray, lat: np.ndarray, lon: np.ndarray
                            ) -> np.ndarray:
    """Cosine of the angle from each point (radians) to the nearest icosahedron vertex."""
    xyz = np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=1)
    return (xyz @ _icosahedron_vertices().T).max(axis=1)


class _Memo:
    """H3 cell -> int32 value, emptied when it would hold more than ``limit()`` cells."""

    MISSING = -2

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._clear()

    def _clear(self) -> None:
        self._index = DeviceIndex(1024)
        self._value = np.zeros(1024, dtype=np.int32)

    @property
    def nbytes(self) -> int:
        return int(self._index.nbytes + self._value.nbytes)

    def get(self, cells: np.ndarray) -> np.ndarray:
        """Value of each cell (cells may repeat), :attr:`MISSING` where none (int32, new)."""
        rows = self._index.lookup(mix64(cells))
        value = self._value.take(rows)
        value[rows < 0] = self.MISSING
        return value

    def put(self, cells: np.ndarray, value: np.ndarray) -> None:
        """Add distinct cells not held yet, with their values."""
        if self._index.n + cells.size > self._limit():
            self._clear()
        rows = self._index.insert(mix64(cells))
        if len(self._index.keys) > len(self._value):
            grow = len(self._index.keys) - len(self._value)
            self._value = np.concatenate([self._value, np.zeros(grow, np.int32)])
        self._value[rows] = value


def sector_centre(lat: np.ndarray, lon: np.ndarray, azimuth_deg: np.ndarray, range_m: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Move each antenna half its range along its azimuth: the centre of a sector's footprint.

    Rows with a missing (NaN) azimuth or range stay at the antenna (omni cells). The centre
    stays a WGS84 position: latitude held within [-90, 90] (a sector reaching past a pole ends at
    it), longitude wrapped into [-180, 180) across the antimeridian.
    """
    d = np.where(np.isfinite(azimuth_deg) & np.isfinite(range_m), range_m / 2.0, 0.0)
    az = np.radians(np.nan_to_num(azimuth_deg))
    dlat = np.degrees(d * np.cos(az) / EARTH_RADIUS_M)
    coslat = np.maximum(np.cos(np.radians(lat)), 1e-9)  # at a pole every direction is south/north
    dlon = np.where(d > 0, np.degrees(d * np.sin(az) / (EARTH_RADIUS_M * coslat)), 0.0)
    lon = lon + dlon
    lon = np.where((lon < -180.0) | (lon > 180.0), (lon + 180.0) % 360.0 - 180.0, lon)
    return np.clip(lat + dlat, -90.0, 90.0), lon


class CellPlan:
    """An operator cell plan binned once: ``(operator, cell id)`` -> row -> ``loc``.

    Each row's point is its antenna, or its sector's centre when azimuth and range are given
    (:func:`sector_centre`); ``loc`` is that point's H3 cell at the table's resolution and the
    region holding the point itself (:meth:`RegionSet.locate`, exact), tested once here.
    ``region`` keeps each row's region index (int32); ``lat``/``lon`` each row's point.

    :meth:`apportion` spreads the devices of border cells over the regions their footprints
    cover (:mod:`estimators.footprints`); :meth:`locations` then gives each (device, row) its
    location. Without it, every device at a row is at ``loc[row]``.
    """

    def __init__(self, operator: list[str], cell: list[str], lat: np.ndarray, lon: np.ndarray,
                 table: CellTable, azimuth_deg: np.ndarray | None = None,
                 range_m: np.ndarray | None = None) -> None:
        n = len(cell)
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        if azimuth_deg is not None and range_m is not None:
            lat, lon = sector_centre(lat, lon, np.asarray(azimuth_deg, np.float64),
                                     np.asarray(range_m, np.float64))
        self.row: dict[tuple[str, str], int] = {}
        for i, key in enumerate(zip(operator, cell, strict=True)):
            if key in self.row:
                raise ValueError(f"cell plan: duplicate cell {key[1]!r} for operator {key[0]!r}")
            self.row[key] = i
        self.lat, self.lon = lat, lon
        self.operator = list(operator)
        self.footprints: Footprints | None = None
        self.day_footprints: Footprints | None = None
        self.piece_loc = np.zeros(0, dtype=np.int64)
        if n:
            self.region = table.regions.locate(lat, lon).astype(np.int32)
            self.loc = table.locate(latlng_to_cell(lat, lon, table.res), self.region)
        else:
            self.region = np.zeros(0, dtype=np.int32)
            self.loc = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.loc)

    def apportion(self, footprints: Footprints | None, table: CellTable) -> None:
        """Spread the devices of the rows with pieces (border cells) over those pieces: each
        piece is a location (the H3 cell of its point, its region) in ``table``, held in
        :attr:`piece_loc` (the caller keeps them from being reclaimed). None: back to every
        device at its row's site. Raises ``ValueError`` when ``footprints`` describes another
        number of rows, or ``RuntimeError`` when the table cannot hold the pieces."""
        self.day_footprints = None
        if footprints is None or footprints.region.size == 0:
            self.footprints, self.piece_loc = None, np.zeros(0, dtype=np.int64)
            return
        if footprints.n_rows != len(self):
            raise ValueError(f"footprints of {footprints.n_rows} rows for a plan of {len(self)}")
        locs = table.locate(latlng_to_cell(footprints.lat, footprints.lon, table.res),
                            footprints.region)
        if (locs < 0).any():
            raise RuntimeError("the cell table cannot hold the cell plan's footprint pieces")
        self.footprints, self.piece_loc = footprints, locs

    def apportion_day(self, day: Footprints | None) -> None:
        """Weights for pings in the local day window (:mod:`estimators.day_footprints`): the
        same pieces as :attr:`footprints` (so the same locations), other weights. None: every
        ping by :attr:`footprints`. Raises ``ValueError`` when ``day`` has other pieces."""
        if day is not None:
            fp = self.footprints
            if fp is None or not (np.array_equal(day.ptr, fp.ptr)
                                  and np.array_equal(day.region, fp.region)):
                raise ValueError("day footprints must have the plan's footprint pieces")
        self.day_footprints = day

    def locations(self, plan_row: np.ndarray, device_hash: np.ndarray | None,
                  daytime: np.ndarray | None = None) -> np.ndarray:
        """Location of each (plan row, device) pair (int64): the row's site location, or for a
        border row the piece the device lands in (:func:`estimators.footprints.choose`: the same
        device at the same row always gets the same piece). ``device_hash``: each pair's
        unkeyed :func:`~estimators.footprints.device_draw_hashes` (uint64; None: every device
        at its row's site). ``daytime``: which pings are in the local day window (bool,
        :func:`estimators.day_footprints.is_daytime`); those choose by :attr:`day_footprints`
        when set (None, or no day weights: every ping by :attr:`footprints`)."""
        loc = self.loc[plan_row]
        if self.footprints is None or device_hash is None:
            return loc
        piece = choose(self.footprints, device_hash, plan_row)
        if self.day_footprints is not None and daytime is not None and daytime.any():
            piece[daytime] = choose(self.day_footprints, np.asarray(device_hash)[daytime],
                                    np.asarray(plan_row)[daytime])
        spread = piece >= 0
        loc[spread] = self.piece_loc[piece[spread]]
        return loc
