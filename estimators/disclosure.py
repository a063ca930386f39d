"""Disclosure control of the published H3 cells: primary and complementary suppression.

A cell resting on fewer than ``k`` devices is suppressed (*primary*). That alone is not enough
once several linked tables are published: present population is additive, so a visible parent
cell minus its visible children gives the sum of its suppressed children, and a region's figure
minus its visible cells gives the sum of its suppressed cells. If that sum covers a single cell,
or fewer than ``k`` devices, the suppressed figure is disclosed by subtraction.

Complementary suppression closes these equations. Groups are (parent cell, its children) for each
pair of consecutive published resolutions and (region, its cells at the finest resolution). In
every group whose total is visible, the suppressed members must be none, or at least two that
together hold at least ``k`` devices. A suppressed cell that holds ``k`` devices or more (a
complement) must not be recoverable from its children either, so its children's suppressed
members must also be at least ``k`` devices. While a group breaks the rule, its visible member
with the fewest devices is suppressed too (ties: lowest cell id). If no member is left to
suppress, the parent is suppressed instead; a region's own figure is never suppressed here, and
such a group is reported as unresolved.

The rule is deterministic, so live and replay suppress the same cells. It closes differencing
along single equations (one parent, one region); like any heuristic it does not claim to defeat
every combination of equations (see ``docs/METHOD.md`` §6).
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
    """The finest level (``res``) and its sums at each coarser resolution, finest first."""
    levels = [CellLevel(res, cell_id, present, devices)]
    for r in sorted({c for c in coarser if c < res}, reverse=True):
        fine = levels[-1]
        ids, parent = np.unique(cell_to_parent(fine.cell_id, r), return_inverse=True)
        parent = parent.reshape(-1)
        fine.parent = parent
        levels.append(CellLevel(r, ids, np.bincount(parent, fine.present, ids.size),
                                np.bincount(parent, fine.devices, ids.size)))
    return levels


def complementary_suppression(levels: list[CellLevel], cell_region: np.ndarray,
                              region_published: np.ndarray, k: int
                              ) -> tuple[list[np.ndarray], int]:
    """Suppressed masks per level (finest first) and the number of unresolved groups.

    ``cell_region`` is the region index of each finest cell and ``region_published`` whether
    each region's own figure is published (then its cells' total is known).
    """
    sizes = np.array([lvl.cell_id.size for lvl in levels], dtype=np.int64)
    offs = np.concatenate([[0], np.cumsum(sizes)])
    n_nodes = int(offs[-1])
    n_groups = n_nodes + len(region_published)
    devices = np.concatenate([lvl.devices for lvl in levels]).astype(np.float64)
    member_parts, group_parts = [], []
    for i, lvl in enumerate(levels[:-1]):
        assert lvl.parent is not None
        member_parts.append(offs[i] + np.arange(sizes[i]))
        group_parts.append(offs[i + 1] + lvl.parent.astype(np.int64))
    member_parts.append(np.arange(sizes[0]))
    group_parts.append(n_nodes + np.asarray(cell_region, dtype=np.int64))
    members = np.concatenate(member_parts)
    groups = np.concatenate(group_parts)

    suppressed = devices < k
    has_children = np.arange(n_nodes) >= offs[1]  # the finest cells have none
    region_open = np.asarray(region_published, dtype=bool)
    stuck = np.zeros(n_groups, dtype=bool)
    while True:
        hidden = suppressed[members]
        count = np.bincount(groups[hidden], minlength=n_groups)
        total = np.bincount(groups[hidden], weights=devices[members[hidden]], minlength=n_groups)
        visible = np.concatenate([~suppressed, region_open])
        complement = np.concatenate([suppressed & (devices >= k) & has_children,
                                     np.zeros(len(region_open), bool)])
        need = ((visible & ((count == 1) | ((count >= 2) & (total < k))))
                | (complement & (total < k))) & ~stuck
        if not need.any():
            break
        cand = need[groups] & ~suppressed[members]
        c_group, c_member = groups[cand], members[cand]
        order = np.lexsort((c_member, devices[c_member], c_group))
        c_group, c_member = c_group[order], c_member[order]
        first = np.ones(c_group.size, dtype=bool)
        first[1:] = c_group[1:] != c_group[:-1]
        suppressed[c_member[first]] = True
        has_candidate = np.zeros(n_groups, dtype=bool)
        has_candidate[c_group] = True
        empty = need & ~has_candidate
        lift = np.flatnonzero(empty[:n_nodes] & ~suppressed)
        suppressed[lift] = True
        empty[lift] = False
        stuck |= empty
    masks = [suppressed[offs[i]:offs[i + 1]] for i in range(len(levels))]
    return masks, int(stuck.sum())
