"""Complementary suppression: no suppressed cell can be recovered by one subtraction."""

from __future__ import annotations

import numpy as np
import pytest

from estimators.disclosure import CellLevel, complementary_suppression
from estimators.engine import Engine, EngineConfig
from estimators.h3vec import cell_to_parent
from estimators.regions import regions_from_geojson
from stream.simulator import simulate
from stream.sources.simulation import SimulationFeed

K = 15


def _levels(fine: list[float], parent: list[int], coarse: list[float]) -> list[CellLevel]:
    f = np.array(fine)
    return [CellLevel(8, np.arange(f.size, dtype=np.uint64), f.copy(), f, np.array(parent)),
            CellLevel(7, np.arange(len(coarse), dtype=np.uint64), np.array(coarse), np.array(coarse))]


def test_a_lone_suppressed_child_gets_a_complement() -> None:
    # parent 0 = 3 + 40 + 20 devices: the 3 alone would be parent − visible; hide the 20 too
    levels = _levels([3, 40, 20, 50], [0, 0, 0, 1], [63, 50])
    masks, unresolved = complementary_suppression(levels, np.zeros(4, np.int64), np.array([False]), K)
    assert masks[0].tolist() == [True, False, True, False]
    assert masks[1].tolist() == [False, False] and unresolved == 0


def test_a_region_total_needs_two_hidden_cells_with_k_devices() -> None:
    levels = [CellLevel(8, np.arange(4, dtype=np.uint64), np.ones(4), np.array([5.0, 30, 50, 9]))]
    region = np.array([0, 0, 0, 1])
    masks, _ = complementary_suppression(levels, region, np.array([True, False]), K)
    assert masks[0].tolist() == [True, True, False, True]  # region 1 is not published: no equation
    masks, _ = complementary_suppression(levels, region, np.array([False, False]), K)
    assert masks[0].tolist() == [True, False, False, True]


def test_a_complement_cannot_be_rebuilt_from_its_children() -> None:
    # res 7 cells 5 (primary) and 30 share a visible res-6 parent, so 30 becomes 5's complement;
    # 30's own res-8 children must then not all be visible
    fine = np.array([5.0, 15, 15, 100])
    mid_parent = np.array([0, 1, 1, 2])
    mid = np.array([5.0, 30, 100])
    top_parent = np.array([0, 0, 0])
    levels = [CellLevel(8, np.arange(4, dtype=np.uint64), fine.copy(), fine, mid_parent),
              CellLevel(7, np.arange(3, dtype=np.uint64), mid.copy(), mid, top_parent),
              CellLevel(6, np.arange(1, dtype=np.uint64), np.array([135.0]), np.array([135.0]))]
    masks, unresolved = complementary_suppression(levels, np.zeros(4, np.int64), np.array([False]), K)
    assert masks[1].tolist() == [True, True, False]  # 5 is primary, 30 its complement
    # the complement's children 15 + 15 must not both be visible (30 would be their sum)
    assert masks[0][1] or masks[0][2]
    assert unresolved == 0


def test_lifts_the_parent_when_no_child_is_left() -> None:
    # one child of 20 devices under a visible parent: nothing to add, the child is visible, fine;
    # a hidden only child (complement of a region equation) makes the parent hide too
    fine = np.array([20.0, 4, 30])
    levels = [CellLevel(8, np.arange(3, dtype=np.uint64), fine.copy(), fine, np.array([0, 1, 1])),
              CellLevel(7, np.arange(2, dtype=np.uint64), np.array([20.0, 34]), np.array([20.0, 34]))]
    masks, unresolved = complementary_suppression(levels, np.array([0, 0, 1]), np.array([True, False]),
                                                  K)
    # region 0 = 20 + 4: the 4 needs the 20 hidden; the 20 is its parent's only child, so the
    # parent (20) is hidden as well; the 4's parent (34) then needs the 30 hidden
    assert masks[0].tolist() == [True, True, True]
    assert masks[1].tolist() == [True, False] and unresolved == 0


@pytest.fixture(scope="module")
def simulated() -> tuple[Engine, object]:
    sim = simulate("astana", scale=0.005, days=1, seed=4)
    engine = Engine(regions_from_geojson(sim.regions_geojson), EngineConfig(res=8))
    last = 0
    for h in SimulationFeed(sim, engine, b"disclosure-test-key-0123456789ab").hours():
        last = h.end_ms
    return engine, engine.tally(last)


def test_no_suppressed_cell_is_one_subtraction_away(simulated: tuple[Engine, object]) -> None:
    engine, tally = simulated
    est = engine.estimate_tally(tally)
    cells, inverse = np.unique(tally.present_cell, return_inverse=True)
    devices = np.bincount(inverse.reshape(-1), tally.present_count.astype(float))
    assert np.array_equal(cells, est.cell_id)
    published = {8: est.cell_present, **{r: p for r, (_, p) in est.coarse_cells.items()}}
    ids = {8: est.cell_id, **{r: i for r, (i, _) in est.coarse_cells.items()}}
    assert sorted(published) == [6, 7, 8]
    dev = {8: devices}
    for r in (7, 6):
        u, inv = np.unique(cell_to_parent(cells, r), return_inverse=True)
        assert np.array_equal(u, ids[r])
        dev[r] = np.bincount(inv.reshape(-1), devices)
    hidden_total = 0
    for fine, coarse in ((8, 7), (7, 6)):
        parent = np.searchsorted(ids[coarse], cell_to_parent(ids[fine], coarse))
        hidden = np.isnan(published[fine])
        n_hidden = np.bincount(parent[hidden], minlength=ids[coarse].size)
        d_hidden = np.bincount(parent[hidden], dev[fine][hidden], minlength=ids[coarse].size)
        visible_parent = ~np.isnan(published[coarse])
        bad = visible_parent & ((n_hidden == 1) | ((n_hidden > 1) & (d_hidden < K)))
        assert not bad.any(), f"res {coarse} parents expose a hidden child: {np.flatnonzero(bad)[:5]}"
        # the subtraction an attacker would do gives only sums of >= 2 hidden cells
        diff = np.bincount(parent[~hidden], published[fine][~hidden], minlength=ids[coarse].size)
        gap = published[coarse][visible_parent] - diff[visible_parent]
        assert np.allclose(gap[n_hidden[visible_parent] == 0], 0)
        hidden_total += int(hidden.sum())
    primary = int((devices < K).sum())
    assert int(np.isnan(est.cell_present).sum()) >= primary  # complements only add
    assert np.isnan(est.cell_present[devices < K]).all()
    assert hidden_total > 0 and est.unresolved_groups == 0
    again = engine.estimate_tally(tally)
    assert np.array_equal(np.isnan(again.cell_present), np.isnan(est.cell_present))  # deterministic
