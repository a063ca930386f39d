"""Binning: locations to H3 cells, H3 cells to compact location numbers and to regions.

The engine keys locations by a small integer ``loc`` (an index into :class:`CellTable`) so device
state stays compact. Two ways in:

- cell-id pings: the operator's cell plan is binned once when loaded (:class:`CellPlan`), so each
  ping is one array lookup ``plan_loc[plan_row]``;
- lat/lon pings: binned per batch with the vectorized H3 port (:mod:`estimators.h3vec`) and then
  mapped to ``loc`` with one ``np.unique`` over the batch's distinct cells.

Each new H3 cell gets its region from the region polygons at its centre (H3's polygon-fill rule).
Cells no device references any more are reclaimed (:meth:`CellTable.reclaim`), so the table is
bounded by the cells in use; when even that exceeds ``MAX_LOCATIONS`` the pings that would need
another cell get ``loc`` -1 (rejected as ``too_many_cells`` by the event-time windows).
"""

from __future__ import annotations

from collections.abc import Callable

import h3
import numpy as np

from estimators.device_index import DeviceIndex
from estimators.h3vec import latlng_to_cell
from estimators.presence import MAX_LOCATIONS
from estimators.regions import RegionSet

EARTH_RADIUS_M = 6_371_008.8
RECLAIM_FLOOR = 1 << 16


class CellTable:
    """The H3 cells in use at one resolution, with their region; bounded and never raising.

    A cell gets a location number ``loc`` on first sight (its region is looked up once, at its
    centre). Numbers stay with their cell while anything references it; :meth:`reclaim` frees
    the cells that nothing references any more (no device's latest ping, no held ping, no
    cell-plan row: :attr:`in_use` says which) and reuses their numbers for new cells, so the
    table holds the cells in use, not every cell ever seen. At most ``capacity`` cells
    (``MAX_LOCATIONS``, the location bits of a device stamp) are held at once: when a batch
    brings more new cells than there is room for even after reclaiming, :meth:`locate` gives
    them ``-1`` (the positions are counted in :attr:`refused`) and the caller rejects those pings.

    The numbers never decide a figure (ties are settled by H3 cell id, tallies are keyed by
    cell id), so which number a cell gets does not matter.
    """

    def __init__(self, regions: RegionSet, res: int, capacity: int = MAX_LOCATIONS) -> None:
        if not 0 <= res <= 15:
            raise ValueError(f"H3 resolution must be 0..15, got {res}")
        self.regions = regions
        self.res = res
        self.capacity = capacity
        self.in_use: Callable[[], np.ndarray] | None = None
        self.refused = 0
        self.reclaimed = 0
        self._index = DeviceIndex(1024)  # mixed cell id -> index row
        self._loc_of_row = np.zeros(len(self._index.keys), dtype=np.int64)
        self._cell = np.zeros(1024, dtype=np.uint64)  # by loc, ``_top`` of them used
        self._region = np.zeros(1024, dtype=np.int32)
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
    def nbytes(self) -> int:
        """Bytes held by the table."""
        return int(self._index.nbytes + self._loc_of_row.nbytes + self._cell.nbytes
                   + self._region.nbytes + self._free.nbytes)

    def locate(self, cells: np.ndarray) -> np.ndarray:
        """``loc`` of each H3 cell (uint64 at this table's resolution), adding unseen cells;
        ``-1`` for new cells beyond :attr:`capacity` (after reclaiming what is free)."""
        cells = np.asarray(cells, dtype=np.uint64)
        if cells.size == 0:
            return np.zeros(0, dtype=np.int64)
        uniq, inverse = np.unique(cells, return_inverse=True)
        mixed = _mix(uniq)
        rows = self._index.lookup(mixed)
        locs = np.where(rows >= 0, self._loc_of_row[np.maximum(rows, 0)], -1)
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            if missing.size > self.capacity - len(self):
                self.reclaim(also=locs[rows >= 0])
            take = missing[: max(self.capacity - len(self), 0)]
            if take.size:
                locs[take] = self._add(uniq[take], mixed[take])
        out = locs[inverse.reshape(-1)]
        if missing.size:
            self.refused += int((out < 0).sum())
        return out

    def _add(self, cells: np.ndarray, mixed: np.ndarray) -> np.ndarray:
        n = len(cells)
        reuse = self._free[:n]
        self._free = self._free[n:]
        new = np.concatenate([reuse, np.arange(self._top, self._top + n - reuse.size,
                                               dtype=np.int64)])
        self._top += n - reuse.size
        if self._top > len(self._cell):
            size = max(self._top, 2 * len(self._cell))
            self._cell = np.concatenate([self._cell, np.zeros(size - len(self._cell), np.uint64)])
            self._region = np.concatenate(
                [self._region, np.zeros(size - len(self._region), np.int32)])
        centres = np.array([h3.cell_to_latlng(h3.int_to_str(int(c))) for c in cells.tolist()],
                           dtype=np.float64).reshape(-1, 2)
        self._cell[new] = cells
        self._region[new] = self.regions.locate(centres[:, 0], centres[:, 1]).astype(np.int32)
        rows, _ = self._index.rows(mixed)
        if len(self._index.keys) > len(self._loc_of_row):
            self._loc_of_row = np.concatenate(
                [self._loc_of_row,
                 np.zeros(len(self._index.keys) - len(self._loc_of_row), dtype=np.int64)])
        self._loc_of_row[rows] = new
        return new

    def reclaim(self, also: np.ndarray | None = None) -> int:
        """Free every cell that :attr:`in_use` (and ``also``, location numbers) does not
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
            self._cell, self._region = self._cell[:size].copy(), self._region[:size].copy()
        self.reclaimed += freed.size
        self._live_after_reclaim = kept.size
        return int(freed.size)

    def maybe_reclaim(self, floor: int = RECLAIM_FLOOR) -> int:
        """:meth:`reclaim` once the table has doubled since the last time (and holds more than
        ``floor`` cells): amortized, the table stays within twice the cells in use."""
        if len(self) > max(2 * self._live_after_reclaim, floor):
            return self.reclaim()
        return 0

    def locate_latlng(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``loc`` of each WGS84 position (validated beforehand), binned at this resolution
        (``-1`` when the table is full, see :meth:`locate`)."""
        return self.locate(latlng_to_cell(lat, lon, self.res))


def _mix(cells: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mix of H3 cell ids (murmur3's finalizer), so their low bits, which H3
    leaves constant below the resolution, spread over the hash table."""
    x = cells.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


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
    """An operator cell plan binned once: ``(operator, cell id)`` -> row -> ``loc``."""

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
        self.loc = table.locate_latlng(lat, lon) if n else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.loc)
