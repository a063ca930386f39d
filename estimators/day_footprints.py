"""Daytime weights for border cells' footprint pieces, learned from lat/lon-reporting devices.

:mod:`estimators.footprints` spreads a border cell's devices over the regions its footprint
covers by area times the *resident* density of each region (``--footprints reference``). By
day the people under a cell are not distributed like residents: a cell straddling a city's
border serves the city's workplaces on one side and a commuter belt's homes, emptied by day,
on the other, so the resident prior puts daytime workers on the residential side (METHOD.md
§1). Operators that report lat/lon show where their devices are: a position nearest to a
cell-id operator's site (its Voronoi footprint, within the footprint's reach) and in region
``r`` lies in that site's piece in ``r``. This module:

- finds, for positions, the pieces of every cell-id operator's border footprints they lie in
  (:class:`PieceLocator`: the nearest site in the same local projection the footprints were cut
  in, the point's exact region, within :data:`~estimators.footprints.REACH_FACTOR` times the
  site's nearest-neighbour distance);
- counts device-hours per piece in the local day and night windows (:func:`count_pieces`: one count per
  distinct (device, hour, piece) of a batch);
- rescales the resident prior of each piece by the change of its share of devices from the
  night window to the day window, each share shrunk toward the prior (:func:`day_footprints`),
  giving a second set of weights with the same pieces, used for pings in the day window
  (:func:`is_daytime`).

Not used by the engine, ``calibrate`` or replay: on the simulator it makes the ring around
Astana worse by day, because positions show where people are, not which tower serves them
(METHOD.md §1, "Border cells by day"; ``bench/day_footprints.py``). Kept, tested, for networks
whose footprints do describe their serving areas and for that benchmark.

Pure numpy + shapely; no I/O.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import shapely

from estimators.footprints import REACH_FACTOR, WEIGHT_DIGITS, Footprints, _project, _thresholds, start_rows

DAY_WINDOW_H = (9, 17)
"""Local hours ``[start, end)`` whose pings (cell-id and lat/lon alike) use the day weights."""
NIGHT_WINDOW_H = (0, 6)
"""Local hours ``[start, end)`` whose lat/lon pings measure where the people are at night."""
PRIOR_STRENGTH = 20.0
"""``a`` of :func:`day_footprints`: the resident prior counts as this many device-hours."""
HOUR_S = 3600
DAY_S = 86400


def is_daytime(ts_ms: np.ndarray, utc_offset_s: np.ndarray | int,
               window: tuple[int, int] = DAY_WINDOW_H) -> np.ndarray:
    """Whether each ping (``ts_ms``: int64 UTC ms; ``utc_offset_s``: the local offset, scalar or
    per ping, seconds) falls in local hours ``[window[0], window[1])`` (bool)."""
    local_s = np.floor_divide(np.asarray(ts_ms, dtype=np.int64), 1000) + np.asarray(utc_offset_s)
    hour = np.mod(local_s, DAY_S) // HOUR_S
    return (hour >= window[0]) & (hour < window[1])


class PieceLocator:
    """Which border-footprint pieces positions lie in, for every cell-id operator of a plan.

    ``fp``: the plan's :class:`~estimators.footprints.Footprints`; ``lat``/``lon``: the plan
    rows' points (float64 degrees, as given to :func:`~estimators.footprints.footprint_weights`);
    ``group``: each row's operator (int). Sites are the distinct points of a group rounded as
    the footprints round them (1e-6 km), so rows at one site share its pieces.
    """

    def __init__(self, fp: Footprints, lat: np.ndarray, lon: np.ndarray, group: np.ndarray,
                 n_regions: int, reach_factor: float = REACH_FACTOR) -> None:
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        group = np.asarray(group)
        self.fp, self.width = fp, n_regions + 1
        self._fwd = _project(float(np.mean(lat)), float(np.mean(lon)))[0] if lat.size else None
        self._piece_key = start_rows(fp.ptr) * self.width + fp.region  # ascending
        self._groups: list[tuple[shapely.STRtree, np.ndarray, np.ndarray, np.ndarray]] = []
        if self._fwd is None or fp.region.size == 0:
            return
        has_pieces = np.diff(fp.ptr) > 0
        xy = self._fwd(np.column_stack([lon, lat]))
        for g in np.unique(group):
            rows = np.flatnonzero(group == g)
            sites, inverse = np.unique(np.round(xy[rows], 6), axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            if len(sites) < 2 or not has_pieces[rows].any():
                continue
            points = shapely.points(sites)
            tree = shapely.STRtree(points)
            near = tree.query_nearest(points, exclusive=True, return_distance=True,
                                      all_matches=False)
            reach = np.zeros(len(sites))
            reach[near[0][0]] = reach_factor * near[1]
            border = rows[has_pieces[rows]]
            border_site = inverse[has_pieces[rows]]
            order = np.argsort(border_site, kind="stable")
            site_of_border = border_site[order]
            site_ptr = np.zeros(len(sites) + 1, dtype=np.int64)
            site_ptr[1:] = np.cumsum(np.bincount(site_of_border, minlength=len(sites)))
            self._groups.append((tree, reach, site_ptr, border[order]))

    def pieces(self, lat: np.ndarray, lon: np.ndarray, region: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """For positions (float64 degrees) and their exact regions (int region index,
        ``unassigned`` included), every (position, piece) pair where the position lies in a
        border row's piece: the row's site is the nearest of its operator's, within reach, and
        the row has a piece in the position's region. Returns (position index, piece index),
        both int64."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        region = np.asarray(region, dtype=np.int64)
        out_p, out_k = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        if not self._groups or lat.size == 0:
            return out_p[0], out_k[0]
        assert self._fwd is not None
        pts = shapely.points(self._fwd(np.column_stack([lon, lat])))
        for tree, reach, site_ptr, rows in self._groups:
            (qi, site), dist = tree.query_nearest(pts, return_distance=True, all_matches=False)
            n_rows = site_ptr[site + 1] - site_ptr[site]
            ok = (dist <= reach[site]) & (n_rows > 0)
            qi, site, n_rows = qi[ok], site[ok], n_rows[ok]
            p = np.repeat(qi, n_rows)
            first = np.repeat(site_ptr[site], n_rows)
            step = np.arange(p.size) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
            row = rows[first + step]
            key = row * self.width + region[p]
            at = np.searchsorted(self._piece_key, key)
            hit = at < self._piece_key.size
            hit[hit] = self._piece_key[at[hit]] == key[hit]
            out_p.append(p[hit])
            out_k.append(at[hit])
        return np.concatenate(out_p), np.concatenate(out_k)


def count_pieces(counts: np.ndarray, device: np.ndarray, hour: np.ndarray,
                 position: np.ndarray, piece: np.ndarray) -> None:
    """Add one to ``counts[piece]`` (float64[n_pieces], in place) per distinct (device, hour,
    piece) among the pairs (``position``: index into ``device``/``hour``, uint64 device keys and
    int64 hour numbers; ``piece``: :meth:`PieceLocator.pieces`). A device seen in a piece in
    several pings of one hour counts once, so a device's weight does not grow with its ping
    rate; the same device-hour in two batches counts twice (batches are an hour or more)."""
    if piece.size == 0:
        return
    triples = np.stack([np.asarray(device, dtype=np.uint64)[position].view(np.int64),
                        np.asarray(hour, dtype=np.int64)[position], piece], axis=1)
    uniq = np.unique(triples, axis=0)
    counts += np.bincount(uniq[:, 2], minlength=counts.size)[: counts.size]


def day_footprints(fp: Footprints, day: np.ndarray, night: np.ndarray,
                   strength: float = PRIOR_STRENGTH) -> Footprints:
    """Day weights of ``fp``'s pieces: each resident weight ``w`` times the change from night
    to day of the lat/lon devices' share of its row, each share shrunk toward ``w``::

        s_day = (n_day + a * w) / (n_day_row + a),  s_night likewise,
        w_day ∝ w * s_day / s_night  (renormalized per row)

    (``day``, ``night``: float64[n_pieces] device-hours in the day and night windows,
    :func:`count_pieces`; ``a``: ``strength`` > 0). The prior's serving model stays (a cell's
    footprint need not be where its devices are, e.g. layered networks); only the change of the
    people there between night and day, which the resident prior does not know, is taken from
    the positions. Rounded like ``fp``'s weights; rows without counts keep ``fp``'s weights bit
    for bit; pieces, regions and points are ``fp``'s. Raises ``ValueError`` when the counts do
    not match the pieces or ``strength`` is not > 0."""
    day = np.asarray(day, dtype=np.float64)
    night = np.asarray(night, dtype=np.float64)
    if day.shape != fp.weight.shape or night.shape != fp.weight.shape:
        raise ValueError(f"{day.size}/{night.size} counts for {fp.weight.size} footprint pieces")
    if not strength > 0:
        raise ValueError(f"prior strength must be > 0, got {strength}")
    row = start_rows(fp.ptr)

    def shrunk(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = np.bincount(row, weights=n, minlength=fp.n_rows)[row]
        return (n + strength * fp.weight) / (total + strength), total

    s_day, n_day = shrunk(day)
    s_night, n_night = shrunk(night)
    raw = fp.weight * s_day / s_night
    share = raw / np.bincount(row, weights=raw, minlength=fp.n_rows)[row]
    weight = np.where((n_day > 0) | (n_night > 0), np.round(share, WEIGHT_DIGITS), fp.weight)
    return replace(fp, weight=weight, thr=_thresholds(fp.ptr, weight))
