"""Binning: locations to H3 cells, H3 cells to compact location numbers and to regions.

The engine keys locations by a small integer ``loc`` (an index into :class:`CellTable`) so device
state stays compact. Two ways in:

- cell-id pings: the operator's cell plan is binned once when loaded (:class:`CellPlan`), so each
  ping is one array lookup ``plan_loc[plan_row]``;
- lat/lon pings: binned per batch with the vectorized H3 port (:mod:`estimators.h3vec`) and then
  mapped to ``loc`` with one ``np.unique`` over the batch's distinct cells.

Each new H3 cell gets its region from the region polygons at its centre (H3's polygon-fill rule).
"""

from __future__ import annotations

import h3
import numpy as np

from estimators.h3vec import latlng_to_cell
from estimators.presence import MAX_LOCATIONS
from estimators.regions import RegionSet

EARTH_RADIUS_M = 6_371_008.8


class CellTable:
    """The H3 cells seen so far at one resolution, with their region; grows as pings arrive."""

    def __init__(self, regions: RegionSet, res: int) -> None:
        if not 0 <= res <= 15:
            raise ValueError(f"H3 resolution must be 0..15, got {res}")
        self.regions = regions
        self.res = res
        self._index: dict[int, int] = {}
        self.cell = np.zeros(0, dtype=np.uint64)
        self.region = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._index)

    def locate(self, cells: np.ndarray) -> np.ndarray:
        """``loc`` of each H3 cell (uint64 at this table's resolution), adding unseen cells."""
        cells = np.asarray(cells, dtype=np.uint64)
        if cells.size == 0:
            return np.zeros(0, dtype=np.int64)
        uniq, inverse = np.unique(cells, return_inverse=True)
        get = self._index.get
        locs = np.fromiter((get(c, -1) for c in uniq.tolist()), dtype=np.int64, count=len(uniq))
        missing = locs < 0
        if missing.any():
            locs[missing] = self._add(uniq[missing])
        return locs[inverse.reshape(-1)]

    def _add(self, cells: np.ndarray) -> np.ndarray:
        start = len(self._index)
        if start + len(cells) > MAX_LOCATIONS:
            raise ValueError(
                f"more than {MAX_LOCATIONS} distinct H3 cells at res {self.res}: use a coarser --res")
        centres = np.array([h3.cell_to_latlng(h3.int_to_str(int(c))) for c in cells.tolist()],
                           dtype=np.float64).reshape(-1, 2)
        region = self.regions.locate(centres[:, 0], centres[:, 1])
        new = np.arange(start, start + len(cells), dtype=np.int64)
        self._index.update(zip(cells.tolist(), new.tolist(), strict=True))
        self.cell = np.concatenate([self.cell, cells])
        self.region = np.concatenate([self.region, region.astype(np.int32)])
        return new

    def locate_latlng(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``loc`` of each WGS84 position (validated beforehand), binned at this resolution."""
        return self.locate(latlng_to_cell(lat, lon, self.res))


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
