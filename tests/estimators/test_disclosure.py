"""Complementary suppression over (cell, region) parts: nothing under k devices is derivable.

Two attackers check it: ``simple_differences`` does what a person with a spreadsheet would
(region minus its visible cells, cell minus other regions' parts, parent minus children, coarse
minus fine cells, and chains of these), and ``derivable_small_sets`` is exact linear algebra
over every set of parts (small cases only).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators.disclosure import CellLevel, complementary_suppression, region_tree_suppression
from estimators.engine import Engine, EngineConfig
from estimators.h3vec import cell_to_parent
from estimators.regions import regions_from_geojson
from stream.simulator import simulate
from stream.sources.simulation import SimulationFeed

K = 15


@dataclass
class Case:
    """A small configuration: parts (fine cell, region, devices), the cell tree above the fine
    cells (``cell_parents[i]``: parent index of each level-i cell in level i+1) and the region
    tree (``region_parent``, -1 for a root)."""

    part_cell: np.ndarray
    part_region: np.ndarray
    part_devices: np.ndarray
    cell_parents: list[np.ndarray]
    region_parent: np.ndarray

    def levels(self) -> list[CellLevel]:
        n_fine = int(self.cell_parents[0].size) if self.cell_parents else int(self.part_cell.max()) + 1
        dev = np.bincount(self.part_cell, self.part_devices, n_fine)
        levels = []
        for i, res in enumerate(range(8, 8 - len(self.cell_parents) - 1, -1)):
            parent = self.cell_parents[i] if i < len(self.cell_parents) else None
            levels.append(CellLevel(res, np.arange(dev.size, dtype=np.uint64), dev.copy(), dev, parent))
            if parent is not None:
                dev = np.bincount(parent, dev, int(parent.max()) + 1)
        return levels

    def region_devices(self) -> np.ndarray:
        n = self.region_parent.size
        out = np.zeros(n)
        for p, r in enumerate(self.part_region):
            while r >= 0:
                out[r] += self.part_devices[p]
                r = self.region_parent[r]
        return out

    def suppress(self, k: int = K) -> tuple[list[np.ndarray], np.ndarray, int]:
        """Primary then complementary suppression, as ``estimate_from_tally`` runs it."""
        return complementary_suppression(self.levels(), self.part_cell, self.part_region,
                                         self.part_devices, self.region_parent,
                                         self.region_devices() >= k, k)

    def figures(self, cell_masks: list[np.ndarray], region_hidden: np.ndarray
                ) -> list[tuple[str, frozenset[int], float, bool]]:
        """Every figure as (name, its parts, true devices, published)."""
        out = []
        chain = self.part_cell.copy()
        for i, hidden in enumerate(cell_masks):
            for c in range(hidden.size):
                members = frozenset(np.flatnonzero(chain == c).tolist())
                if members:
                    out.append((f"cell{i}:{c}", members,
                                float(self.part_devices[list(members)].sum()), not hidden[c]))
            if i < len(self.cell_parents):
                chain = self.cell_parents[i][chain]
        for r in range(self.region_parent.size):
            inside = [p for p in range(self.part_region.size) if self._under(self.part_region[p], r)]
            members = frozenset(inside)
            out.append((f"region:{r}", members, float(self.part_devices[inside].sum()),
                        not region_hidden[r]))
        return out

    def _under(self, r: int, top: int) -> bool:
        while r >= 0:
            if r == top:
                return True
            r = int(self.region_parent[r])
        return False


def simple_differences(figures: list[tuple[str, frozenset[int], float, bool]], devices: np.ndarray,
                       k: int = K, rounds: int = 6) -> list[tuple[frozenset[int], float]]:
    """Sets of parts under k devices an attacker recovers by subtraction.

    Starts from the published figures (as sets of parts, with their values) and, for a few
    rounds, subtracts from every known set each known proper subset, and the union of a
    greedy family of disjoint known proper subsets (region minus its visible cells, parent minus
    visible children, cell minus the other regions' parts once those are known).
    """
    known: dict[frozenset[int], float] = {s: v for _, s, v, pub in figures if pub and s}
    for _ in range(rounds):
        new: dict[frozenset[int], float] = {}
        sets = sorted(known, key=len, reverse=True)
        for s in sets:
            subs = [t for t in sets if t < s]
            for t in subs:
                new.setdefault(s - t, known[s] - known[t])
            used: set[int] = set()
            total = 0.0
            for t in subs:  # largest first
                if not (t & used):
                    used |= t
                    total += known[t]
            if used:
                new.setdefault(s - frozenset(used), known[s] - total)
        added = {s: v for s, v in new.items() if s and s not in known}
        if not added:
            break
        known.update(added)
        if len(known) > 20000:
            break
    for s, v in known.items():
        assert v == pytest.approx(float(devices[list(s)].sum()))  # the attacker's sums are right
    return [(s, v) for s, v in known.items() if 0 < v < k]


def derivable_small_sets(figures: list[tuple[str, frozenset[int], float, bool]],
                         devices: np.ndarray, k: int = K) -> list[frozenset[int]]:
    """Every set of parts with 1..k-1 devices whose count is a linear combination of the
    published figures (exact: the set's indicator is orthogonal to the null space of the
    published figures' matrix). Enumerates all 2^n sets: small cases only."""
    n = devices.size
    rows = [np.isin(np.arange(n), list(s)).astype(float) for _, s, _, pub in figures if pub]
    m = np.array(rows) if rows else np.zeros((0, n))
    _, sing, vt = np.linalg.svd(m) if m.size else (None, np.zeros(0), np.eye(n))
    rank = int((sing > 1e-9).sum())
    null = vt[rank:].T  # (n, n - rank)
    subsets = np.array(list(itertools.product([0.0, 1.0], repeat=n)))
    derivable = np.abs(subsets @ null).max(axis=1, initial=0.0) < 1e-9
    small = (subsets @ devices > 0) & (subsets @ devices < k)
    return [frozenset(np.flatnonzero(s).tolist()) for s in subsets[derivable & small]]


def _case(parts: list[tuple[int, int, float]], cell_parents: list[list[int]],
          region_parent: list[int]) -> Case:
    c, r, d = zip(*parts, strict=True)
    return Case(np.array(c), np.array(r), np.array(d, dtype=float),
                [np.array(p) for p in cell_parents], np.array(region_parent))


# fine cell 0 is split by the border of regions A (0) and B (1): 3 devices in A, 40 in B;
# cells 1 (30, A) and 2 (30, B) are whole; all three share one res-7 parent
SPLIT = _case([(0, 0, 3), (0, 1, 40), (1, 0, 30), (2, 1, 30)], [[0, 0, 0]], [-1, -1])


def test_the_old_rule_leaked_a_split_cells_small_part_and_the_new_one_does_not() -> None:
    # the old rule gave each cell one region (the last tally row: cell 0 to B) and, every cell
    # and region being over k, published all of them (checked against the old code): then
    # region A minus cell 1 is the 3 devices of A in cell 0
    old = SPLIT.figures([np.zeros(3, bool), np.zeros(1, bool)], np.zeros(2, bool))
    leaked = simple_differences(old, SPLIT.part_devices)
    assert (frozenset({0}), 3.0) in leaked
    assert frozenset({0}) in derivable_small_sets(old, SPLIT.part_devices)

    masks, region_hidden, unresolved = SPLIT.suppress()
    new = SPLIT.figures(masks, region_hidden)
    assert simple_differences(new, SPLIT.part_devices) == []
    assert derivable_small_sets(new, SPLIT.part_devices) == []
    # cell 0 cannot stay (its A part has no large path to A), then A's 3 devices under the
    # res-7 cell need a complement: the smallest visible cell holding A devices, cell 1
    assert masks[0].tolist() == [True, True, False] and masks[1].tolist() == [False]
    assert not region_hidden.any() and unresolved == 0


def test_a_second_split_cell_protects_a_small_part_without_hiding_it() -> None:
    # cells 0 and 1 both straddle the A|B border; cell 0's A part is small, but A - cell-0-part
    # is tied to B through cell 1 (both parts large): no combination isolates the 3 devices
    case = _case([(0, 0, 3), (0, 1, 40), (1, 0, 20), (1, 1, 25), (2, 0, 30), (3, 1, 30)],
                 [[0, 0, 0, 0]], [-1, -1])
    masks, region_hidden, _ = case.suppress()
    assert not masks[0].any() and not masks[1].any() and not region_hidden.any()
    figures = case.figures(masks, region_hidden)
    assert derivable_small_sets(figures, case.part_devices) == []
    assert simple_differences(figures, case.part_devices) == []


def _tree_figures(parent: np.ndarray, own: np.ndarray, hidden: np.ndarray
                  ) -> list[tuple[str, frozenset[int], float, bool]]:
    """A region tree's figures: each region's subtree sum over the parts (one per region, its
    own devices)."""
    n = parent.size
    out = []
    for r in range(n):
        members = []
        for p in range(n):
            q = p
            while q >= 0 and q != r:
                q = int(parent[q])
            if q == r:
                members.append(p)
        out.append((f"region:{r}", frozenset(members), float(own[members].sum()), not hidden[r]))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-1, 7), min_size=2, max_size=8),
       st.lists(st.sampled_from([0, 1, 3, 9, 14, 15, 16, 20, 40]), min_size=8, max_size=8))
def test_region_tree_suppression_leaves_no_small_set_derivable(parents: list[int],
                                                               devices: list[int]) -> None:
    """A table of region figures alone (the resident table, flow and foreign stocks): after
    the region step, no set of regions' own devices under k is a combination of the published
    subtree sums (parent minus children at any depth included)."""
    n = len(parents)
    parent = np.array([p if 0 <= p < i else -1 for i, p in enumerate(parents)], dtype=np.int64)
    own = np.array(devices[:n], dtype=float)
    figures = _tree_figures(parent, own, np.zeros(n, dtype=bool))
    primary = np.array([v >= K for _, _, v, _ in figures])
    hidden = region_tree_suppression(parent, own, primary, K)
    assert hidden[~primary].all()  # the primary ones stay hidden
    assert derivable_small_sets(_tree_figures(parent, own, hidden), own) == []


def test_region_tree_suppression_hides_a_sibling_of_a_small_child() -> None:
    # city (0) = north (1) 1000 + south (2) 9: city - north would give south's 9 devices
    parent = np.array([-1, 0, 0])
    own = np.array([0.0, 1000.0, 9.0])
    hidden = region_tree_suppression(parent, own, np.array([True, True, False]), K)
    assert hidden.tolist() == [False, True, True]


def test_a_lone_suppressed_child_gets_a_complement() -> None:
    # parent 0 = 3 + 40 + 20 devices, all in one region: parent - visible children would be 3
    case = _case([(0, 0, 3), (1, 0, 40), (2, 0, 20), (3, 0, 50)], [[0, 0, 0, 1]], [-1])
    masks, region_hidden, unresolved = case.suppress()
    assert masks[0].tolist() == [True, False, True, False]
    assert masks[1].tolist() == [False, False] and unresolved == 0
    assert derivable_small_sets(case.figures(masks, region_hidden), case.part_devices) == []


def test_a_region_total_minus_its_visible_cells() -> None:
    # region 0 holds cells 0 (5), 1 (30), 2 (50); region 1 holds cell 3 (9) and is itself
    # under k: the 5 needs the 30 hidden, region 1 (primary) is no equation
    case = _case([(0, 0, 5), (1, 0, 30), (2, 0, 50), (3, 1, 9)], [], [-1, -1])
    masks, region_hidden, _ = case.suppress()
    assert masks[0].tolist() == [True, True, False, True]
    assert region_hidden.tolist() == [False, True]
    assert derivable_small_sets(case.figures(masks, region_hidden), case.part_devices) == []


def test_coarse_minus_fine_cannot_isolate_a_small_cell() -> None:
    # res 7 cells 5 and 30 share a res 6 parent; the 5 is primary, so the 30 (its complement)
    # hides too; 30 = 15 + 15 at res 8 is then recoverable, but it is not under k
    case = _case([(0, 0, 5), (1, 0, 15), (2, 0, 15), (3, 0, 100)], [[0, 1, 1, 2], [0, 0, 0]], [-1])
    masks, region_hidden, unresolved = case.suppress()
    assert masks[1].tolist() == [True, True, False] and unresolved == 0
    figures = case.figures(masks, region_hidden)
    assert derivable_small_sets(figures, case.part_devices) == []
    assert simple_differences(figures, case.part_devices) == []


def test_a_small_region_gets_a_sibling_region_as_complement() -> None:
    # parent region 0 with children 1 (40), 2 (50) and 3 (5): 0 - 1 - 2 would be region 3's 5;
    # the smallest visible sibling (1) is hidden too, the region figures are not enough alone
    case = _case([(0, 1, 40), (1, 2, 50), (2, 3, 5)], [[0, 0, 0]], [-1, 0, 0, 0])
    masks, region_hidden, unresolved = case.suppress()
    assert region_hidden.tolist() == [False, True, False, True] and unresolved == 0
    figures = case.figures(masks, region_hidden)
    assert derivable_small_sets(figures, case.part_devices) == []
    assert simple_differences(figures, case.part_devices) == []


def test_lifts_the_parent_when_no_child_is_left() -> None:
    # region A (0) = cell 0 (20) + cell 1 (4); cell 1 shares its res-7 parent (34) with cell 2
    # (30, region B). The 4 (primary) is keyed to (res-7 cell 1, A), which has no visible child
    # holding A devices: that parent is lifted; the 4 is then keyed to (none, A) and must join
    # the 20, which needs both cell 0 and its res-7 parent hidden (A = 24 is all that is left)
    case = _case([(0, 0, 20), (1, 0, 4), (2, 1, 30)], [[0, 1, 1]], [-1, -1])
    masks, region_hidden, unresolved = case.suppress()
    assert masks[0].tolist() == [True, True, False]
    assert masks[1].tolist() == [True, True] and unresolved == 0
    figures = case.figures(masks, region_hidden)
    assert derivable_small_sets(figures, case.part_devices) == []
    assert simple_differences(figures, case.part_devices) == []


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Up to 11 parts on 2-6 fine cells under 1-3 res-7 cells and one res-6 cell, in 2-4
    regions (a random forest), devices mostly near k."""
    n_fine = draw(st.integers(2, 6))
    n_mid = draw(st.integers(1, 3))
    n_reg = draw(st.integers(2, 4))
    region_parent = [-1] + [draw(st.integers(-1, i - 1)) for i in range(1, n_reg)]
    mid = [draw(st.integers(0, n_mid - 1)) for _ in range(n_fine)]
    mid = np.unique(mid, return_inverse=True)[1].reshape(-1)  # every res-7 cell has a child
    parts = set()
    for c in range(n_fine):
        for r in draw(st.sets(st.integers(0, n_reg - 1), min_size=1, max_size=2)):
            parts.add((c, r))
    parts = sorted(parts)[:11]
    devices = [draw(st.integers(1, 40)) for _ in parts]
    cells = sorted({c for c, _ in parts})
    remap = {c: i for i, c in enumerate(cells)}
    fine_parent = np.array([mid[c] for c in cells])
    fine_parent = np.unique(fine_parent, return_inverse=True)[1].reshape(-1)
    top = np.zeros(int(fine_parent.max()) + 1, dtype=np.int64)
    return Case(np.array([remap[c] for c, _ in parts]), np.array([r for _, r in parts]),
                np.array(devices, dtype=float), [fine_parent, top], np.array(region_parent))


@settings(max_examples=150, deadline=None)
@given(cases())
def test_nothing_under_k_is_derivable_on_random_small_cases(case: Case) -> None:
    masks, region_hidden, unresolved = case.suppress()
    assert unresolved == 0
    figures = case.figures(masks, region_hidden)
    assert derivable_small_sets(figures, case.part_devices) == []
    # primary suppression holds, and the rule only adds to it
    for name, _, value, published in figures:
        assert not (published and value < K), name


def rule_breaches(part_cell: np.ndarray, part_region: np.ndarray, part_devices: np.ndarray,
                  cell_chain: list[np.ndarray], cell_visible: list[np.ndarray],
                  region_parent: np.ndarray, region_visible: np.ndarray, k: int = K) -> int:
    """Small classes whose ends no path of large classes joins (an independent check of the
    rule in plain Python: union-find over (level, cell), region and '-' vertices)."""
    keys = []
    for p in range(part_cell.size):
        v = "-"
        for lvl in range(len(cell_chain) - 1, -1, -1):  # coarsest first, the finest visible wins
            c = int(cell_chain[lvl][p])
            if cell_visible[lvl][c]:
                v = (lvl, c)
        r = int(part_region[p])
        while r >= 0 and not region_visible[r]:
            r = int(region_parent[r])
        keys.append((v, ("r", r) if r >= 0 else "-"))
    weight: dict[tuple, float] = {}
    for key, d in zip(keys, part_devices.tolist(), strict=True):
        weight[key] = weight.get(key, 0.0) + d
    up: dict = {}

    def find(x: object) -> object:
        while up.get(x, x) != x:
            x = up[x]
        return x

    for (a, b), w in weight.items():
        if w >= k:
            up[find(a)] = find(b)
    return sum(1 for (a, b), w in weight.items() if w < k and find(a) != find(b))


@pytest.fixture(scope="module")
def simulated() -> tuple[Engine, object]:
    sim = simulate("astana", scale=0.005, days=1, seed=4)
    engine = Engine(regions_from_geojson(sim.regions_geojson), EngineConfig(res=8))
    last = 0
    for h in SimulationFeed(sim, engine, b"disclosure-test-key-0123456789ab").hours():
        last = h.end_ms
    return engine, engine.tally(last)


def test_the_published_simulation_keeps_the_rule(simulated: tuple[Engine, object]) -> None:
    engine, tally = simulated
    est = engine.estimate_tally(tally)
    cells, inverse = np.unique(tally.present_cell, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_reg = len(engine.regions.ids)
    part, part_inv = np.unique(inverse * n_reg + tally.present_region, return_inverse=True)
    part_devices = np.bincount(part_inv.reshape(-1), tally.present_count.astype(float))
    part_cell, part_region = part // n_reg, part % n_reg
    assert (np.bincount(part_cell) > 1).any(), "the case needs cells a border crosses"
    assert np.array_equal(cells, est.cell_id)
    published = {8: est.cell_present, **{r: p for r, (_, p) in est.coarse_cells.items()}}
    ids = {8: est.cell_id, **{r: i for r, (i, _) in est.coarse_cells.items()}}
    assert sorted(published) == [6, 7, 8]
    chain = [part_cell] + [np.searchsorted(ids[r], cell_to_parent(cells[part_cell], r))
                           for r in (7, 6)]
    visible = [~np.isnan(published[r]) for r in (8, 7, 6)]
    region_visible = ~np.isnan(est.present_devices)
    assert rule_breaches(part_cell, part_region, part_devices, chain, visible,
                         engine.regions.parent_index, region_visible) == 0
    # without complements the rule breaks, so the check can fail
    primary = [np.bincount(c, part_devices) >= K for c in chain]
    assert rule_breaches(part_cell, part_region, part_devices, chain, primary,
                         engine.regions.parent_index, region_visible) > 0
    # primary suppression holds and complements only add
    devices = np.bincount(inverse, tally.present_count.astype(float))
    assert np.isnan(est.cell_present[devices < K]).all()
    assert int(np.isnan(est.cell_present).sum()) > int((devices < K).sum())
    assert est.unresolved_groups == 0
    again = engine.estimate_tally(tally)
    assert np.array_equal(np.isnan(again.cell_present), np.isnan(est.cell_present))  # deterministic
