"""Day weights of border cells' footprint pieces learned from lat/lon positions (issue 13):
positions fall in the right pieces, the shares move toward what the positions show and stay
at the prior with few of them, and without day weights nothing changes."""

from __future__ import annotations

import numpy as np
import pytest

from estimators.day_footprints import PieceLocator, count_pieces, day_footprints, is_daytime
from estimators.footprints import Footprints, _thresholds
from tests.estimators.test_footprints import BORDER_LON, DX, border_plan


def _setup():
    regions, lat, lon, table, plan, fp = border_plan()
    locator = PieceLocator(fp, lat, lon, np.zeros(lat.size, int), regions.n)
    row = int(np.flatnonzero(np.isclose(lon, BORDER_LON) & np.isclose(lat, 51.0))[0])
    return regions, lat, lon, table, plan, fp, locator, row


def _counts(regions, locator, fp, lat, lon, device, hour):
    counts = np.zeros(fp.weight.size)
    pos, piece = locator.pieces(lat, lon, regions.locate(lat, lon))
    count_pieces(counts, device, hour, pos, piece)
    return counts


def test_positions_fall_in_the_piece_of_their_nearest_site_and_region() -> None:
    regions, _, _, _, _, fp, locator, row = _setup()
    # a few metres west and east of the border, next to the middle site: its two pieces
    plat = np.array([51.0, 51.0, 51.0 + 3 * 0.0125])
    plon = np.array([BORDER_LON - 0.001, BORDER_LON + 0.001, BORDER_LON - 3 * DX])
    pos, piece = locator.pieces(plat, plon, regions.locate(plat, plon))
    assert pos.tolist() == [0, 1]  # the third lies at an interior site: no piece
    assert (piece >= fp.ptr[row]).all() and (piece < fp.ptr[row + 1]).all()
    assert fp.region[piece].tolist() == [0, 1]


def test_day_weights_follow_where_the_day_positions_are() -> None:
    regions, _, _, _, _, fp, locator, row = _setup()
    rng = np.random.default_rng(3)
    n = 400
    # night: devices on both sides alike; day: nearly all on the east side
    night_lon = BORDER_LON + rng.uniform(-0.4, 0.4, n) * DX
    day_lon = BORDER_LON + rng.uniform(-0.05, 0.4, n) * DX
    plat = 51.0 + rng.uniform(-0.3, 0.3, n) * 0.0125
    dev = np.arange(n, dtype=np.uint64)
    hour = np.zeros(n, dtype=np.int64)
    night = _counts(regions, locator, fp, plat, night_lon, dev, hour)
    day = _counts(regions, locator, fp, plat, day_lon, dev, hour)
    assert night[fp.ptr[row]:fp.ptr[row + 1]].sum() == n
    east = fp.ptr[row] + int(np.flatnonzero(fp.region[fp.ptr[row]:fp.ptr[row + 1]] == 1)[0])
    prior = fp.weight[east]
    strong = day_footprints(fp, day, night, strength=1.0)
    assert strong.weight[east] > 0.85 > prior + 0.3
    # a weaker signal stays nearer the prior, and the weights of each row sum to 1
    weak = day_footprints(fp, day, night, strength=1000.0)
    assert prior < weak.weight[east] < strong.weight[east]
    sums = np.add.reduceat(strong.weight, fp.ptr[:-1][np.diff(fp.ptr) > 0])
    assert np.allclose(sums, 1.0, atol=1e-5)
    # rows without positions keep their weights bit for bit; pieces and points are the same
    others = np.ones(fp.weight.size, bool)
    others[fp.ptr[row]:fp.ptr[row + 1]] = False
    assert np.array_equal(strong.weight[others], fp.weight[others])
    assert np.array_equal(strong.region, fp.region) and np.array_equal(strong.lat, fp.lat)
    # a few positions move the weights little: shrinkage toward the prior
    few = day_footprints(fp, np.where(day > 0, np.minimum(day, 2), 0),
                         np.where(night > 0, np.minimum(night, 2), 0), strength=20.0)
    assert abs(few.weight[east] - prior) < 0.05


def test_a_device_hour_counts_once_per_piece() -> None:
    regions, _, _, _, _, fp, locator, _ = _setup()
    plat = np.full(6, 51.0)
    plon = np.full(6, BORDER_LON + 0.001)
    counts = _counts(regions, locator, fp, plat, plon, np.array([1, 1, 1, 2, 2, 1], np.uint64),
                     np.array([5, 5, 5, 5, 6, 6]))
    assert counts.sum() == 4  # (1, 5), (2, 5), (2, 6), (1, 6)


def test_without_day_weights_locations_are_unchanged() -> None:
    _, _, _, table, plan, fp, _, row = _setup()
    keys = np.random.default_rng(9).integers(0, 2**63, 5000, dtype=np.int64).astype(np.uint64)
    rows = np.full(keys.size, row)
    daytime = np.ones(keys.size, bool)
    before = plan.locations(rows, keys)
    assert np.array_equal(plan.locations(rows, keys, daytime), before)
    same = day_footprints(fp, np.zeros(fp.weight.size), np.zeros(fp.weight.size))
    assert np.array_equal(same.weight, fp.weight) and np.array_equal(same.thr, fp.thr)
    plan.apportion_day(same)
    assert np.array_equal(plan.locations(rows, keys, daytime), before)
    # day weights all on the east: day pings go east, the others as before
    moved = fp.weight.copy()
    moved[fp.ptr[row]:fp.ptr[row + 1]] = (fp.region[fp.ptr[row]:fp.ptr[row + 1]] == 1)
    plan.apportion_day(Footprints(fp.ptr, fp.region, moved, fp.lat, fp.lon,
                                  _thresholds(fp.ptr, moved)))
    half = np.arange(keys.size) % 2 == 0
    got = plan.locations(rows, keys, half)
    assert (table.region[got[half]] == 1).all()
    assert np.array_equal(got[~half], before[~half])
    plan.apportion(fp, table)  # new footprints drop the day weights
    assert plan.day_footprints is None
    with pytest.raises(ValueError):
        plan.apportion_day(Footprints(fp.ptr[:-1], fp.region, fp.weight, fp.lat, fp.lon,
                                      fp.thr))


def test_daytime_is_the_local_hour_window() -> None:
    hour_ms = 3_600_000
    ts = np.arange(24, dtype=np.int64) * hour_ms + 1
    day = is_daytime(ts, 5 * 3600, (9, 17))
    assert np.flatnonzero(day).tolist() == list(range(4, 12))  # 09-17 at UTC+5
