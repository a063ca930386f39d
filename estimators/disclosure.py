"""Disclosure control of the present table: primary and complementary suppression.

The finest units are *parts*: the devices of one (H3 cell at the engine's resolution, region)
pair; a cell a region border crosses has one part per region it holds devices of. Parts are
never published. Every published present figure is a sum of parts: a cell at any published
resolution (the parts under it) and a region (the parts of its whole subtree). Counts are
additive, so an attacker can form any linear combination of the published figures.

*Primary* suppression hides every cell and region resting on fewer than ``k`` devices.
*Complementary* suppression then enforces one rule, stated on *classes*: the parts that enter
exactly the same visible figures. As cells nest and regions nest, a part's class is fixed by
its key (V, R): the finest visible cell over it and the deepest visible region over it (either
may be none, written ⊥). Draw a graph whose vertices are the visible cells, the visible regions
and one vertex ⊥, and whose edges are the classes, class (V, R) joining V and R. A class is
*large* when it holds at least ``k`` devices. **Rule: the two ends of every small class are
joined by a path of large classes.**

Proof that no set of fewer than ``k`` devices (a hidden cell, a hidden region, a part, or any
union of parts) has a count derivable from the published figures: a combination of published
figures gives each class one coefficient, and it is ``y(V, R) = c(V) + c(R)`` with ``c(⊥) = 0``
(``c(V)`` sums the coefficients of V and its visible ancestors, likewise ``c(R)``); any ``c`` is
reachable. Suppose the combination counts a set of parts (``y`` is 0 or 1 on every class)
holding fewer than ``k`` devices. Then ``y = 0`` on every large class, so ``c`` flips sign
along large classes. On a component of large classes through ⊥, ``c = 0``; on one without ⊥
(visible cells and regions only, alternating), ``c = t`` on its cells and ``-t`` on its regions.
Either way ``y = 0`` on a small class whose ends the component holds: the set is empty. So
every figure an attacker can compute exactly (region minus cells, cell minus another region's
part, parent minus children, coarse minus fine, or any chain of them) is 0 or rests on at
least ``k`` devices. It does not cover bounds from non-negativity (interval disclosure).

Repair is deterministic (live and replay hide the same figures) and only ever hides more:

1. Regions (the region tree alone): while a visible region's *residual* (its parts keyed to
   it: its own and those of its hidden descendants) holds 1 to ``k - 1`` devices, hide its
   nearest visible descendant region with the fewest devices (ties: lowest index), or the
   region itself if it has none. The rule needs this (such a region has no large class), and
   afterwards every region's residual is 0 or at least ``k``.
2. Cells: while a small class (V, R) breaks the rule, hide the visible cell W with the fewest
   devices (ties: finest resolution, lowest id) whose nearest visible ancestor is V (or none)
   and that is the key of parts keyed to R: they join the class. If there is none, hide the
   smallest such W that merely holds parts keyed to R (its visible cells come under V), and
   if there is none either, hide V (the class joins its nearest visible ancestor's). Hiding
   a cell merges its vertex into its visible ancestor's, so large paths survive and a class
   once safe stays safe. With every cell hidden each class is (⊥, R), a region's residual,
   large after step 1: so step 2 never hides a region and always ends (each pass hides at
   least one cell).

The unresolved count is kept for the interface; it is 0 by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from estimators.h3vec import cell_to_parent


@dataclass
class CellLevel:
    """Cells at one H3 resolution with their unsuppressed present population and devices;
    ``parent`` indexes each cell's parent in the next coarser level (None for the coarsest)."""

    res: int
    cell_id: np.ndarray
    present: np.ndarray
    devices: np.ndarray
    parent: np.ndarray | None = None


def cell_levels(res: int, cell_id: np.ndarray, present: np.ndarray, devices: np.ndarray,
                coarser: tuple[int, ...]) -> list[CellLevel]:
    """The finest level (``res``) and its sums at each coarser resolution, finest first (each
    level's ``cell_id`` sorted; sorted ids of one resolution have sorted parents, which then
    need no sort)."""
    levels = [CellLevel(res, cell_id, present, devices)]
    for r in sorted({c for c in coarser if c < res}, reverse=True):
        fine = levels[-1]
        ids, parent = unique_inverse(cell_to_parent(fine.cell_id, r))
        fine.parent = parent
        levels.append(CellLevel(r, ids, np.bincount(parent, fine.present, ids.size),
                                np.bincount(parent, fine.devices, ids.size)))
    return levels


def unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` of a 1-D integer array, the inverse
    ``int64[n]``: by runs when ``values`` is sorted already, else, for non-negative values
    small enough, by one plain sort of the values packed with their positions (a value in the
    high bits, its position in the low ones: several times faster than the argsort
    ``np.unique`` does); else by ``np.unique``."""
    n = values.size
    if n == 0 or n > 1 << 30:
        ids, inverse = np.unique(values, return_inverse=True)
        return ids, inverse.reshape(-1).astype(np.int64, copy=False)
    new = np.empty(n, dtype=bool)
    new[0] = True
    if (values[1:] >= values[:-1]).all():
        np.not_equal(values[1:], values[:-1], out=new[1:])
        return values[new], np.cumsum(new, dtype=np.int64) - 1
    bits = (n - 1).bit_length()
    if values.dtype.kind not in "iu" or int(values.min()) < 0 \
            or int(values.max()) >= 1 << (62 - bits):
        ids, inverse = np.unique(values, return_inverse=True)
        return ids, inverse.reshape(-1).astype(np.int64, copy=False)
    packed = np.sort((values.astype(np.int64) << bits) | np.arange(n, dtype=np.int64))
    sorted_values = packed >> bits
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new[1:])
    inverse = np.empty(n, dtype=np.int64)
    inverse[packed & ((1 << bits) - 1)] = np.cumsum(new, dtype=np.int64) - 1
    return sorted_values[new].astype(values.dtype, copy=False), inverse


def _region_keys(parent: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Deepest visible region at or above each region (-1: none)."""
    n = parent.size
    key = np.where(visible, np.arange(n), -1)
    has_parent = parent >= 0
    for _ in range(n):  # the tree depth bounds the passes
        up = np.where(has_parent, key[np.maximum(parent, 0)], -1)
        new = np.where(visible, key, up)
        if np.array_equal(new, key):
            break
        key = new
    return key


def _region_devices(parent: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Devices of each region's whole subtree from its own devices."""
    total = own.astype(np.float64).copy()
    node = np.arange(parent.size)
    cur = parent.copy()
    for _ in range(parent.size):
        live = cur >= 0
        if not live.any():
            break
        np.add.at(total, cur[live], own[node[live]])
        cur = np.where(live, parent[np.maximum(cur, 0)], -1)
    return total


def _components(n_cells: int, n_hubs: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A label per vertex (``int64[n_cells + n_hubs]``), equal exactly within the components of
    the edges u-v, where every edge has a *hub* end ``v`` (vertices ``n_cells..``: the visible
    regions and ⊥) and ``u`` is a cell (``< n_cells``) or a hub.

    Cells only touch hubs, so a cell with edges is in its hubs' component (any one of them
    stands for the cell) and one without is alone: the components come from the hub graph,
    of ``n_hubs`` vertices only, an edge per hub pair joined through a cell or directly.
    """
    hub_v = v - n_cells
    via = np.full(n_cells, -1, dtype=np.int64)
    cell = u < n_cells
    via[u[cell]] = hub_v[cell]  # any of a cell's hubs
    hub_u = u - n_cells
    hub_u[cell] = via[u[cell]]
    hub_label = _hub_components(n_hubs, hub_u, hub_v)
    label = np.arange(n_cells + n_hubs)
    label[n_cells:] = n_cells + hub_label
    has = via >= 0
    label[:n_cells][has] = n_cells + hub_label[via[has]]
    return label


def _hub_components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A label per vertex (of ``n``, few), equal exactly within the components of the edges
    u-v."""
    code = np.minimum(u, v) * n + np.maximum(u, v)
    code = np.flatnonzero(np.bincount(code, minlength=n * n)) if n * n <= 8 * code.size + 4096 \
        else np.unique(code)
    u, v = code // n, code % n
    label = np.arange(n)
    for _ in range(n + 1):  # hook roots to the lower label, then compress: O(log n) rounds
        lu, lv = label[u], label[v]
        low = np.minimum(lu, lv)
        new = label.copy()
        np.minimum.at(new, lu, low)
        np.minimum.at(new, lv, low)
        for _ in range(n + 1):
            nxt = new[new]
            if np.array_equal(nxt, new):
                break
            new = nxt
        if np.array_equal(new, label):
            break
        label = new
    return label


def _finest_visible(anc: list[np.ndarray], visible: np.ndarray) -> np.ndarray:
    """The finest visible cell over each part (-1: none) from its cells at every level
    (``anc``, finest first; a cell -1 is looked up as ``visible[-1]``, which must be False)."""
    key = np.full(anc[0].size, -1, dtype=np.int64)
    for node in reversed(anc):  # coarsest first: the finest visible one wins
        key = np.where(visible[node], node, key)
    return key


def _visible_above(parent: np.ndarray, offs: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """The nearest visible proper ancestor of every cell (-1: none), cells numbered level by
    level finest first (level ``i``: ``offs[i]:offs[i + 1]``), ``parent`` a coarser cell or -1
    (looked up as ``visible[-1]``, which must be False, when ``visible`` is one longer)."""
    above = np.full(visible.size, -1, dtype=np.int64)
    for i in range(offs.size - 3, -1, -1):  # coarsest first (the coarsest have none)
        p = parent[offs[i]:offs[i + 1]]
        above[offs[i]:offs[i + 1]] = np.where(visible[p], p, above[p])
    return above


def _sorted_isin(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_set)`` for a sorted ``sorted_set``, by binary search."""
    if not sorted_set.size:
        return np.zeros(values.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, values), sorted_set.size - 1)
    return sorted_set[pos] == values


def region_tree_suppression(region_parent: np.ndarray, own_devices: np.ndarray,
                            published: np.ndarray, k: int) -> np.ndarray:
    """Hidden regions of a table of region figures that are subtree sums (step 1 of the module
    text): a region's figure counts its own devices (``own_devices``, float or int
    ``[n_regions]``, the devices keyed to the region itself, not its descendants) and those
    of its whole subtree. ``region_parent``: int64 parent index, -1 for a root;
    ``published``: bool, the regions primary suppression left visible. Returns bool
    ``[n_regions]``, True where hidden (the primary ones included).

    Repair: while a visible region's *residual* (its own devices and those of its hidden
    descendants) holds 1 to ``k - 1`` devices, hide its nearest visible descendant region with
    the fewest devices (ties: lowest index), or the region itself if it has none. Afterwards
    every residual is 0 or at least ``k``, which is the module's rule for a table without
    cells: no set of fewer than ``k`` devices has a count that a linear combination of the
    published figures gives (parent minus children at any depth included). Deterministic."""
    region_parent = np.asarray(region_parent, dtype=np.int64)
    own = np.asarray(own_devices, dtype=np.float64)
    n_reg = region_parent.size
    reg_devices = _region_devices(region_parent, own)
    r_visible = np.asarray(published, dtype=bool).copy()
    regions = np.arange(n_reg)
    for _ in range(n_reg + 1):
        key = _region_keys(region_parent, r_visible)
        keyed = key >= 0
        residual = np.bincount(key[keyed], own[regions[keyed]], n_reg)
        bad = r_visible & (residual > 0) & (residual < k)
        if not bad.any():
            break
        up = np.where(region_parent >= 0, key[np.maximum(region_parent, 0)], -1)
        cand = np.flatnonzero(r_visible & (up >= 0))
        cand = cand[bad[up[cand]]]
        order = np.lexsort((cand, reg_devices[cand], up[cand]))
        cand = cand[order]
        first = np.ones(cand.size, dtype=bool)
        first[1:] = up[cand[1:]] != up[cand[:-1]]
        r_visible[cand[first]] = False
        lift = bad.copy()
        lift[up[cand]] = False
        r_visible[lift] = False
    return ~r_visible


def complementary_suppression(levels: list[CellLevel], part_cell: np.ndarray,
                              part_region: np.ndarray, part_devices: np.ndarray,
                              region_parent: np.ndarray, region_published: np.ndarray, k: int
                              ) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Hidden cells per level (finest first), hidden regions, and the unresolved groups (0).

    ``levels`` from :func:`cell_levels`; one entry per part (an (H3 cell, region) pair with
    devices): ``part_cell`` int index into ``levels[0]``, ``part_region`` int region index,
    ``part_devices`` its devices (> 0). ``region_parent`` int64[n_regions]: parent index, -1
    for a root; ``region_published``: bool[n_regions], the regions primary suppression left
    visible (a region's devices are its subtree's parts). The returned region mask includes
    the primary ones. Implements the rule and repair of the module docstring.
    """
    devices_part = np.asarray(part_devices, dtype=np.float64)
    part_region = np.asarray(part_region, dtype=np.int64)
    region_parent = np.asarray(region_parent, dtype=np.int64)
    n_reg = region_parent.size
    # 1. the region tree
    own = np.bincount(part_region, devices_part, n_reg)
    r_visible = ~region_tree_suppression(region_parent, own, region_published, k)
    key = _region_keys(region_parent, r_visible)
    rkey = key[part_region]

    # 2. cells: node numbers over all levels, finest first
    sizes = np.array([lvl.cell_id.size for lvl in levels], dtype=np.int64)
    offs = np.concatenate([[0], np.cumsum(sizes)])
    devices = np.concatenate([lvl.devices for lvl in levels]).astype(np.float64)
    n_cells = int(offs[-1])
    parent = np.full(n_cells, -1, dtype=np.int64)
    anc = [np.asarray(part_cell, dtype=np.int64)]
    for i, lvl in enumerate(levels[:-1]):
        assert lvl.parent is not None
        parent[offs[i]:offs[i + 1]] = offs[i + 1] + lvl.parent
        anc.append(parent[anc[-1]])
    primary = devices >= k
    stride = n_reg + 1
    # Repair only ever hides cells, so the cells hidden now stay hidden: it runs on the cells
    # visible now (renumbered in the same order, -1 for a hidden one) and on the parts'
    # present classes, whose parts all have the same visible cells over them (those over
    # their class's cell) and so always stay in one class
    shown = np.flatnonzero(primary)
    n_shown = shown.size
    number = np.full(n_cells, -1, dtype=np.int64)
    number[shown] = np.arange(n_shown)
    group, part_group = unique_inverse((_finest_visible(anc, primary) + 1) * stride + (rkey + 1))
    group_devices = np.bincount(part_group, devices_part, group.size)
    member = np.empty(group.size, dtype=np.int64)
    member[part_group] = np.arange(part_group.size)  # any part of each class
    g_anc = [number[node[member]] for node in anc]
    g_rkey = group % stride - 1
    g_parent = np.full(n_shown, -1, dtype=np.int64)  # nearest visible proper ancestor
    node = shown
    for _ in levels[1:]:
        node = np.where(node >= 0, parent[np.maximum(node, 0)], -1)
        first = (g_parent < 0) & (node >= 0) & primary[np.maximum(node, 0)]
        g_parent[first] = number[node[first]]
    g_offs = np.searchsorted(shown, offs)
    g_cell_devices = devices[shown]
    visible = np.ones(n_shown + 1, dtype=bool)
    visible[n_shown] = False  # index -1: no cell
    ground = n_shown + n_reg  # the vertex of "no visible cell" and "no visible region"
    unresolved = 0
    for _ in range(n_shown + 1):  # each pass hides a cell, so the loop ends by a break
        ckey = _finest_visible(g_anc, visible)
        codes, inverse = unique_inverse((ckey + 1) * stride + (g_rkey + 1))
        weight = np.bincount(inverse, group_devices, codes.size)
        a = codes // stride - 1
        b = codes % stride - 1
        a = np.where(a >= 0, a, ground)
        b = np.where(b >= 0, n_shown + b, ground)
        big = weight >= k
        comp = _components(n_shown, n_reg + 1, a[big], b[big])
        bad = codes[~big & (comp[a] != comp[b])]
        if not bad.size:
            break
        vp = _visible_above(g_parent, g_offs, visible)
        # candidates: visible cells under V (nearest visible ancestor V) holding parts keyed
        # to R; "direct" ones are those parts' own key, so hiding them moves the parts in
        c_code, c_node, c_far = [], [], []
        for node in g_anc:
            sel = visible[node]
            c_node.append(node[sel])
            c_code.append((vp[node[sel]] + 1) * stride + g_rkey[sel] + 1)
            c_far.append(node[sel] != ckey[sel])
        c_code, c_node = np.concatenate(c_code), np.concatenate(c_node)
        c_far = np.concatenate(c_far)
        keep = _sorted_isin(c_code, bad)
        c_code, c_node, c_far = c_code[keep], c_node[keep], c_far[keep]
        order = np.lexsort((c_node, g_cell_devices[c_node], c_far, c_code))  # ties: finest first
        c_code, c_node = c_code[order], c_node[order]
        first = np.ones(c_code.size, dtype=bool)
        first[1:] = c_code[1:] != c_code[:-1]
        lift = bad[~_sorted_isin(bad, c_code)] // stride - 1
        hide = np.concatenate([c_node[first], lift[lift >= 0]])
        if not hide.size:
            unresolved = int(bad.size)
            break
        visible[hide] = False
    primary[shown[~visible[:n_shown]]] = False
    masks = [~primary[offs[i]:offs[i + 1]] for i in range(len(levels))]
    return masks, ~r_visible, unresolved
