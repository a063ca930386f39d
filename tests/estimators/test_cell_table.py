"""The cell table: bounded by the cells in use, reclaimed, and never raising on the hot path
(fault case 15: at 2^23 distinct res-10 cells ``PartitionState.process`` raised ValueError).
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import h3
import numpy as np
import pytest

from estimators.cells import CellTable, region_bits
from estimators.device_index import DeviceIndex
from estimators.engine import Engine, EngineConfig
from estimators.h3vec import latlng_to_cell
from estimators.presence import MAX_LOCATIONS
from estimators.regions import regions_from_geojson
from estimators.units import MINUTE_MS
from stream.decode.validate import PingDecoder
from stream.estimate.windows import EventTimeWindows, WindowSettings

T0 = 1_772_409_600_000
SECRET = b"cell-table-test-secret-012345678"


def test_index_lookup_and_compact_match_a_dict() -> None:
    rng = np.random.default_rng(8)
    idx = DeviceIndex(capacity=8)
    universe = rng.integers(1, 2**64 - 1, size=4000, dtype=np.uint64)
    ref: dict[int, int] = {}
    for step in range(40):
        keys = universe[rng.integers(0, len(universe), size=rng.integers(1, 500))]
        assert idx.lookup(keys).tolist() == [ref.get(k, -1) for k in keys.tolist()]
        rows, _ = idx.rows(keys)
        for k, r in zip(keys.tolist(), rows.tolist(), strict=True):
            ref.setdefault(k, r)
        if step % 7 == 6:  # drop a random third, renumbered in order
            keep = rng.random(idx.n) > 0.33
            old = idx.keys[: idx.n].copy()
            kept = idx.compact(keep)
            assert np.array_equal(kept, np.flatnonzero(keep))
            ref = {int(k): i for i, k in enumerate(old[keep].tolist())}
            assert idx.n == len(ref)
        assert np.array_equal(idx.lookup(np.array(list(ref), dtype=np.uint64)),
                              np.array(list(ref.values())))


def _stream(rng: np.random.Generator, n: int, n_dev: int) -> dict[str, np.ndarray]:
    """Devices seen all over a 100 km square at res 10 (cells about 65 m across), in order."""
    dev = rng.integers(0, n_dev, n)
    return {"device": np.array([f"w{d}".encode() for d in dev]),
            "ts": T0 + np.sort(rng.integers(0, 6 * 3_600_000, n)),
            "operator": np.full(n, b"40101", dtype="S6"), "home_mcc": np.full(n, 401, np.int16),
            "cell": np.zeros(n, dtype="S1"),
            "lat": rng.uniform(50.6, 51.6, n), "lon": rng.uniform(70.9, 72.0, n)}


def _replay(regions_doc: dict[str, Any], cols: dict[str, np.ndarray], capacity: int
            ) -> tuple[list[bytes], Counter[str], Engine]:
    engine = Engine(regions_from_geojson(regions_doc), EngineConfig(res=10))
    engine.cells.capacity = capacity
    tallies: list[bytes] = []
    rejects: Counter[str] = Counter()
    windows = EventTimeWindows(engine, WindowSettings(every_ms=30 * MINUTE_MS),
                               on_window=lambda b: tallies.append(engine.tally(b).to_bytes()),
                               on_reject=lambda r: rejects.update([r.reason]))
    decoder = PingDecoder(engine, SECRET, now_ms=int(cols["ts"].max()))
    for lo in range(0, len(cols["ts"]), 2_000):
        part = {k: v[lo:lo + 2_000] for k, v in cols.items()}
        windows.feed(decoder.decode_columns(part, str), str)
        assert len(engine.cells) <= capacity
    windows.finish()
    return tallies, rejects, engine


def test_cells_no_device_references_are_reclaimed(regions_doc: dict[str, Any]) -> None:
    """300 devices seen in 60 k distinct res-10 cells with room for 4,000: the table reuses the
    cells devices left, nothing is rejected and every figure is that of an unbounded table."""
    cols = _stream(np.random.default_rng(4), 60_000, 300)
    distinct = len(np.unique(latlng_to_cell(cols["lat"], cols["lon"], 10)))
    assert distinct > 50_000
    want, want_rejects, _ = _replay(regions_doc, cols, MAX_LOCATIONS)
    got, rejects, engine = _replay(regions_doc, cols, 4_000)
    assert rejects == want_rejects == Counter()
    assert got == want and len(got) >= 10
    assert engine.cells.reclaimed > distinct - 4_000


def test_more_cells_in_use_than_room_are_rejects_not_a_crash(regions_doc: dict[str, Any]) -> None:
    """Fault 15, scaled down: lat/lon pings spread uniformly over Kazakhstan at res 10, one
    device each, so every cell stays in use. Past the table's room the pings are rejected as
    ``too_many_cells`` (counted, kept) and the stream goes on; the table never exceeds it."""
    rng = np.random.default_rng(15)
    n = 30_000
    cols = {"device": np.array([f"u{i}".encode() for i in range(n)]),
            "ts": T0 + np.arange(n, dtype=np.int64) * 1_000,
            "operator": np.full(n, b"40101", dtype="S6"), "home_mcc": np.full(n, 401, np.int16),
            "cell": np.zeros(n, dtype="S1"),
            "lat": rng.uniform(47, 53, n), "lon": rng.uniform(66, 76, n)}
    tallies, rejects, engine = _replay(regions_doc, cols, 10_000)
    assert set(rejects) == {"too_many_cells"} and 19_000 <= rejects["too_many_cells"] <= 20_000
    assert len(engine.cells) == 10_000 and engine.cells.refused == rejects["too_many_cells"]
    assert engine.state.n_devices == n - rejects["too_many_cells"] and tallies


def test_the_default_room_is_the_stamp_s_location_bits(regions_doc: dict[str, Any]) -> None:
    table = CellTable(regions_from_geojson(regions_doc), 10)
    assert table.capacity == MAX_LOCATIONS == 2**23 - 1
    cells = latlng_to_cell(np.array([51.1, 51.1, 51.15]), np.array([71.4, 71.4, 71.45]), 10)
    locs = table.locate(cells)
    assert locs[0] == locs[1] != locs[2] and len(table) == 2
    table.in_use = lambda: np.array([locs[2]])
    assert table.reclaim() == 1 and len(table) == 1
    again = table.locate(cells)
    assert again[2] == locs[2] and again[0] == again[1] >= 0 and len(table) == 2
    assert np.array_equal(table.cell[again], cells)


def test_a_location_is_a_cell_and_a_region(regions_doc: dict[str, Any]) -> None:
    """One cell in two regions is two locations; each is reclaimed on its own; the rank orders
    by cell id, then region, and the key gives the pair back."""
    table = CellTable(regions_from_geojson(regions_doc), 8)
    cells = latlng_to_cell(np.array([51.1, 51.1, 51.1, 51.15]), np.array([71.4] * 4), 8)
    locs = table.locate(cells, np.array([1, 2, 1, 1]))
    assert locs[0] == locs[2] != locs[1] and len(table) == 3
    assert table.cell[locs].tolist() == cells.tolist()
    assert table.region[locs].tolist() == [1, 2, 1, 1]
    table.in_use = lambda: np.array([locs[1]])
    assert table.reclaim() == 2 and len(table) == 1
    assert table.locate(cells[:2], np.array([2, 2]))[0] == locs[1]

    rng = np.random.default_rng(3)
    many = latlng_to_cell(rng.uniform(-80, 80, 500), rng.uniform(-180, 180, 500), 8)
    region = rng.integers(0, 5, 500)
    keys = table.key(many, region)
    assert np.array_equal(np.argsort(keys, kind="stable"),
                          np.lexsort((region, many)))
    back_cells, back_region = table._unkey(keys)
    assert np.array_equal(back_cells, many) and np.array_equal(back_region, region)
    loc = table.locate(many, region)
    assert np.array_equal(table.rank[loc], keys)


def test_region_indices_are_checked_and_bounded(regions_doc: dict[str, Any]) -> None:
    table = CellTable(regions_from_geojson(regions_doc), 8)
    cells = latlng_to_cell(np.array([51.1]), np.array([71.4]), 8)
    with pytest.raises(ValueError, match="region indices"):
        table.locate(cells, np.array([5]))  # 4 regions + unassigned: 0..4
    assert (region_bits(8), region_bits(15)) == (33, 12)
    too_many = SimpleNamespace(ids=[f"r{i}" for i in range(4097)], n=4096)
    with pytest.raises(ValueError, match="4096 regions"):
        CellTable(too_many, 15)  # type: ignore[arg-type]
    CellTable(too_many, 14)  # type: ignore[arg-type]


def test_cells_without_a_region_take_their_centre_s(regions_doc: dict[str, Any]) -> None:
    """Old checkpoints hold cells only: each goes to the region of its centre, as before."""
    regions = regions_from_geojson(regions_doc)
    table = CellTable(regions, 8)
    cells = latlng_to_cell(np.array([51.1001, 51.0999, 51.15]), np.array([71.45] * 3), 8)
    centre = [h3.api.basic_int.cell_to_latlng(int(c)) for c in cells.tolist()]
    want = regions.locate(np.array([c[0] for c in centre]), np.array([c[1] for c in centre]))
    locs = table.locate(cells)
    assert table.region[locs].tolist() == want.tolist()
