"""Migration flows in people: the cohort rate, intervals and disclosure control.

From a period's device counts (:class:`~estimators.migration.PeriodCounts`), flows in people by
the **cohort rate** (``docs/METHOD.md`` §9): origin ``r``'s relocating devices ``m_rs`` times the
people each of ``r``'s devices stands for::

    F_rs = m_rs * R_r / U_r

``R_r`` is the calibrated resident estimate of ``r`` (by home region, before the subtree sums)
and ``U_r`` the *observed* usual-residence stock of ``r`` at the period's end: devices with that
UR, not lapsed, and seen on at least ``min_nights`` nights of the window (``end_observed``), the
devices whose move could be detected at all. Both are taken at the same time, so SIMs per person
and churn cancel: a person with two SIMs adds two to ``m`` and to ``U``, a lapsed SIM leaves
``U`` and never moves. Dividing by the whole stock instead would count the moves of devices
seen too rarely to qualify anywhere as no moves (on the simulator: net migration 20-30 % low).
The binomial part of the interval treats ``m_rs`` as drawn from the at-risk cohort ``N_r`` (UR
``r`` at the period start, not lapsed at its end). A region's inflow and outflow sum the flows
that cross its boundary, so moves inside a parent cancel in the parent. The rural balance is the
net migration of the regions flagged ``urban: false`` with those flagged ``urban: true``.

**Interval** (90 % at ``z`` = 1.645): per cell, binomial variance ``R² p(1-p)/N`` with
``p = m/N``, the origin's calibration error ``(rse_r F)²`` (shared by all flows out of ``r``, so
it is added once per origin to sums), and a model term ``(model_rse_flow * gross)²`` that scales
with the gross flows (in + out), not the net.

**Disclosure**: a cell, inflow, outflow or rural flow is published only when it rests on at
least ``k`` devices (devices, never scaled people: a one-device cell must never pass); a net
only when both its inflow and outflow are published, and the net per 1,000 residents only where
the resident figure itself is published. Complementary suppression: in a leaf region's out-row
(in-column) whose margin is published, the margin minus the shown cells gives the sum of the
hidden ones, so the smallest published cell of that row (column) is hidden too, until the
hidden cells of every such row and column hold 0 or at least ``k`` devices. The per-region
device bookkeeping is protected in :mod:`stream.publish.flows`; what these rules do not cover
is listed in ``docs/METHOD.md`` §9.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from estimators.disclosure import region_tree_suppression
from estimators.migration import PeriodCounts
from estimators.regions import RegionSet


@dataclass(frozen=True)
class FlowConfig:
    """Disclosure threshold ``k`` (devices), interval ``z`` and the model error term.

    ``model_rse_flow`` (0.1) was chosen on the simulator (``bench/migration.py``, five variants):
    the 90 % interval of settled monthly and weekly net migration then holds the truth in 85 %
    of region-periods at the median of the variants with migration and in 89–100 % without.

    Raises ``ValueError`` for k < 1 or a negative model term.
    """

    k: int = 15
    z: float = 1.645
    model_rse_flow: float = 0.1

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k (disclosure threshold) must be >= 1")
        if self.model_rse_flow < 0:
            raise ValueError("the flow model error must not be negative")


@dataclass
class FlowEstimate:
    """A period's flows in people (NaN = suppressed), with 90 % intervals and device counts.

    OD (origin × destination, assignment regions, ``float64[n, n]``): ``od``, ``od_lo``,
    ``od_hi`` people and ``od_devices`` (cohort relocations). Per region (subtree sums,
    ``float64[n]``): ``inflow``, ``outflow``, ``net`` (``net_lo``/``net_hi``) and
    ``net_per_1000`` (per 1,000 residents, with ``net_per_1000_lo``/``_hi``), with
    ``in_devices``/``out_devices``. Rural
    balance (people): ``rural_to_urban``, ``urban_to_rural``, ``rural_balance`` =
    urban→rural − rural→urban (negative when rural regions lose people), its interval and
    device counts.
    """

    period: PeriodCounts
    od: np.ndarray
    od_lo: np.ndarray
    od_hi: np.ndarray
    od_devices: np.ndarray
    inflow: np.ndarray
    outflow: np.ndarray
    net: np.ndarray
    net_lo: np.ndarray
    net_hi: np.ndarray
    net_per_1000: np.ndarray
    net_per_1000_lo: np.ndarray
    net_per_1000_hi: np.ndarray
    in_devices: np.ndarray
    out_devices: np.ndarray
    rural_to_urban: float
    urban_to_rural: float
    rural_balance: float
    rural_balance_lo: float
    rural_balance_hi: float
    rural_to_urban_devices: float
    urban_to_rural_devices: float


def _complementary(hidden: np.ndarray, devices: np.ndarray, row_published: np.ndarray,
                   col_published: np.ndarray, leaf: np.ndarray, k: int) -> np.ndarray:
    """Hide more cells until the hidden cells of every published leaf margin hold 0 or at
    least ``k`` devices (the margin minus its shown cells gives their sum)."""
    hidden = hidden.copy()
    while True:
        changed = False
        for axis, published in ((1, row_published), (0, col_published)):
            lines = np.flatnonzero(leaf & published)
            for i in lines.tolist():
                line_hidden = hidden[i] if axis == 1 else hidden[:, i]
                line_dev = devices[i] if axis == 1 else devices[:, i]
                held = float(line_dev[line_hidden].sum())
                if held <= 0 or held >= k:
                    continue
                shown = np.flatnonzero(~line_hidden & (line_dev > 0))
                if shown.size == 0:
                    continue
                j = int(shown[np.argmin(line_dev[shown])])
                if axis == 1:
                    hidden[i, j] = True
                else:
                    hidden[j, i] = True
                changed = True
        if not changed:
            return hidden


def part_labels(regions: RegionSet, parent: int) -> np.ndarray:
    """For a region ``parent``, the part of it each region is in (int64[n]): the index of the
    child whose subtree holds it, ``parent`` itself for its own territory, -1 outside it."""
    n = len(regions.ids)
    label = np.full(n, -1, dtype=np.int64)
    label[regions.subtree[parent]] = parent
    for child in np.flatnonzero(regions.parent_index == parent).tolist():
        label[regions.subtree[child]] = child
    return label


def _between(regions: RegionSet, parent: int) -> np.ndarray:
    """The OD cells (bool ``[n, n]``) from one part of ``parent`` to another
    (:func:`part_labels`)."""
    label = part_labels(regions, parent)
    inside = label >= 0
    return inside[:, None] & inside[None, :] & (label[:, None] != label[None, :])


def _parents(regions: RegionSet) -> list[int]:
    """The regions that have children."""
    return np.unique(regions.parent_index[regions.parent_index >= 0]).tolist()


def between_parts(regions: RegionSet, od: np.ndarray) -> np.ndarray:
    """Per region, the OD count (``[n, n]``, assignment regions) between its different parts
    (:func:`part_labels`): what its children's crossing sums minus its own give. 0 for a
    leaf."""
    out = np.zeros(len(regions.ids), dtype=np.float64)
    for g in _parents(regions):
        out[g] = float(od[_between(regions, g)].sum())
    return out


def _parents_between(hidden: np.ndarray, devices: np.ndarray, regions: RegionSet,
                     in_ok: np.ndarray, out_ok: np.ndarray, k: int) -> bool:
    """The parents' crossing sums against their children's: a parent's inflow (outflow) and
    its children's give the sum of the cells between its parts, so with the shown ones the sum
    of the hidden ones. Where a parent's margins are shown and those hidden cells hold 1 to
    ``k - 1`` devices, hide the smallest shown cell between its parts, or else the parent's
    margins. Changes ``hidden``, ``in_ok`` and ``out_ok`` in place; True if it did."""
    changed = False
    for g in _parents(regions):
        if not (in_ok[g] or out_ok[g]):
            continue
        between = _between(regions, g)
        held = float(devices[between & hidden].sum())
        if held <= 0 or held >= k:
            continue
        shown = np.argwhere(between & ~hidden & (devices > 0))
        if shown.size:
            i, j = min(shown.tolist(), key=lambda ij: (devices[ij[0], ij[1]], ij[0], ij[1]))
            hidden[i, j] = True
        else:
            in_ok[g] = out_ok[g] = False
        changed = True
    return changed


SUBTREE_TERMS = ("stock_start", "stock_end", "housed", "lapsed", "reactivated", "cohort")
"""Per-region device counts that are subtree sums of counts per assignment region."""
IDENTITY_TERMS = ("stock_start", "stock_end", "in_devices", "out_devices", "housed", "lapsed",
                  "reactivated")
"""The terms of the stock-flow identity per region (``stock_end − stock_start = in − out +
housed − lapsed + reactivated``)."""


def bookkeeping_suppression(regions: RegionSet, own: dict[str, np.ndarray],
                            totals: dict[str, np.ndarray], k: int,
                            between: dict[str, np.ndarray] | None = None
                            ) -> dict[str, np.ndarray]:
    """Hidden regions (bool[n] per term) of the per-region device bookkeeping.

    ``totals``: each term's published figure per region (``n`` = ``len(regions.ids)``): the
    :data:`IDENTITY_TERMS`, ``cohort`` and any other crossing sums (confirmed moves,
    returns); ``own``: for the :data:`SUBTREE_TERMS`, the counts per assignment region that
    the totals sum over subtrees; ``between``: for the crossing sums, the count between each
    region's parts (:func:`between_parts`), which its children's sums minus its own give: a
    parent's is hidden where that count is 1 to ``k - 1``. Primary: a figure under ``k``
    devices. Then, until nothing changes (each step only hides more):

    - each subtree term is a region table on its own
      (:func:`~estimators.disclosure.region_tree_suppression`): a parent minus its shown
      children gives no count of 1 to ``k - 1`` devices;
    - in each region's identity, the other terms give the signed sum of the hidden ones: when
      the hidden terms hold 1 to ``k - 1`` devices, the smallest shown non-zero term is hidden
      too.
    """
    parent = regions.parent_index
    hidden = {name: np.asarray(v) < k for name, v in totals.items()}
    for name, count in (between or {}).items():
        hidden[name] = hidden[name] | ((count > 0) & (count < k))
    terms = [t for t in IDENTITY_TERMS if t in totals]
    values = np.array([np.asarray(totals[t], dtype=np.float64) for t in terms])  # [terms, n]
    changed = True
    while changed:
        changed = False
        for name in SUBTREE_TERMS:
            if name in own and name in hidden:
                tree = region_tree_suppression(parent, own[name], ~hidden[name], k)
                if (tree & ~hidden[name]).any():
                    hidden[name] = hidden[name] | tree
                    changed = True
        mask = np.array([hidden[t] for t in terms])
        held = np.where(mask, values, 0.0).sum(axis=0)
        for i in np.flatnonzero((held > 0) & (held < k)).tolist():
            shown = [j for j in range(len(terms)) if not mask[j, i] and values[j, i] > 0]
            if shown:
                j = min(shown, key=lambda j: (values[j, i], j))
                hidden[terms[j]] = hidden[terms[j]].copy()
                hidden[terms[j]][i] = True
                changed = True
    return hidden


def crossing(regions: RegionSet, od: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per region ``g``, the sums of an OD matrix (``[n, n]``, from × to, assignment regions)
    over the cells that cross ``g``'s boundary: ``(into g's subtree from outside it, out of it
    to outside)``, in ``od``'s dtype. Moves inside a subtree count in neither."""
    sub = regions.subtree.astype(od.dtype)  # sub[g, j]: j in the subtree of g
    out_of = 1 - sub
    return (np.einsum("gs,st,gt->g", out_of, od, sub), np.einsum("gs,st,gt->g", sub, od, out_of))


def estimate_flows(period: PeriodCounts, regions: RegionSet, resident: np.ndarray,
                   resident_rse: np.ndarray, config: FlowConfig | None = None,
                   resident_shown: np.ndarray | None = None) -> FlowEstimate:
    """Flows in people of one period.

    Parameters
    ----------
    period : PeriodCounts
        The period's device counts (summed over partitions), ``n`` = ``len(regions.ids)``.
    regions : RegionSet
        Subtrees (parents sum their children) and the ``urban`` flags.
    resident : float64[n]
        Resident people by home region (assignment level, not subtree sums), estimated at the
        time of ``period.end_stock``.
    resident_rse : float64[n]
        Relative standard error of ``resident`` (the calibration's).
    resident_shown : bool[n], optional
        The regions whose resident figure is published (the estimate's disclosure control):
        ``net_per_1000`` is published only there, since ``net / net_per_1000`` gives the
        resident figure it divides by. None: all.
    """
    cfg = config or FlowConfig()
    n = len(regions.ids)
    m = period.cohort_relocations.astype(np.float64)
    cohort = period.cohort.astype(np.float64)
    observed = period.end_observed if period.end_observed.any() else period.end_stock  # old tallies
    stock = observed.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_device = np.where(stock > 0, resident / stock, 0.0)
        share = np.where(cohort[:, None] > 0, np.minimum(m / cohort[:, None], 1.0), 0.0)
    per_device = np.nan_to_num(per_device)
    flow = m * per_device[:, None]
    binom = per_device[:, None] ** 2 * m * (1.0 - share)
    rse = np.nan_to_num(resident_rse)

    sub = regions.subtree.astype(np.float64)  # sub[g, j]: j in the subtree of g
    out_of = 1.0 - sub
    inflow, outflow = crossing(regions, flow)
    in_dev, out_dev = crossing(regions, m)
    var_in, var_out = crossing(regions, binom)
    # the origin's calibration error, once per origin: to g (origins outside), from g (inside)
    to_g = flow @ sub.T      # [s, g]: people from s into g's subtree
    from_g = flow @ out_of.T  # [s, g]: people from s out of g's subtree
    cal_in = ((rse[:, None] * to_g) ** 2 * out_of.T).sum(axis=0)
    cal_out = ((rse[:, None] * from_g) ** 2 * sub.T).sum(axis=0)
    model = cfg.model_rse_flow
    sd_net = np.sqrt(var_in + var_out + cal_in + cal_out + (model * (inflow + outflow)) ** 2)
    net = inflow - outflow

    k = cfg.k
    in_ok, out_ok = in_dev >= k, out_dev >= k
    leaf = ~(regions.subtree & ~np.eye(n, dtype=bool)).any(axis=1)
    hidden = (m < k) | (cohort[:, None] < k)
    while True:  # each pass only hides more, so it ends
        hidden = _complementary(hidden, m, out_ok, in_ok, leaf, k)
        if not _parents_between(hidden, m, regions, in_ok, out_ok, k):
            break
    sd_cell = np.sqrt(binom + (rse[:, None] * flow) ** 2 + (model * flow) ** 2)

    def shown(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return np.where(ok, values, np.nan)

    od_ok = ~hidden
    with np.errstate(divide="ignore", invalid="ignore"):
        resident_sub = sub @ np.nan_to_num(resident)
        per_resident = np.where(resident_sub > 0, 1000.0 / resident_sub, np.nan)
    both = in_ok & out_ok
    per_1000_ok = both if resident_shown is None else both & np.asarray(resident_shown, bool)
    rural_rows, urban_rows = rural_urban(regions)
    r2u, u2r = flow[np.ix_(rural_rows, urban_rows)].sum(), flow[np.ix_(urban_rows, rural_rows)].sum()
    r2u_dev = int(m[np.ix_(rural_rows, urban_rows)].sum())
    u2r_dev = int(m[np.ix_(urban_rows, rural_rows)].sum())
    var_bal = binom[np.ix_(rural_rows, urban_rows)].sum() + binom[np.ix_(urban_rows, rural_rows)].sum()
    cal_bal = (((rse * flow[:, urban_rows].sum(axis=1)) ** 2)[rural_rows].sum()
               + ((rse * flow[:, rural_rows].sum(axis=1)) ** 2)[urban_rows].sum())
    sd_bal = float(np.sqrt(var_bal + cal_bal + (model * (r2u + u2r)) ** 2))
    bal_ok = r2u_dev >= k and u2r_dev >= k
    balance = float(u2r - r2u)
    z = cfg.z
    return FlowEstimate(
        period=period,
        od=shown(flow, od_ok), od_lo=shown(np.maximum(flow - z * sd_cell, 0.0), od_ok),
        od_hi=shown(flow + z * sd_cell, od_ok), od_devices=np.where(od_ok, m, np.nan),
        inflow=shown(inflow, in_ok), outflow=shown(outflow, out_ok), net=shown(net, both),
        net_lo=shown(net - z * sd_net, both), net_hi=shown(net + z * sd_net, both),
        net_per_1000=shown(net * per_resident, per_1000_ok),
        net_per_1000_lo=shown((net - cfg.z * sd_net) * per_resident, per_1000_ok),
        net_per_1000_hi=shown((net + cfg.z * sd_net) * per_resident, per_1000_ok),
        in_devices=shown(in_dev, in_ok), out_devices=shown(out_dev, out_ok),
        rural_to_urban=float(r2u) if r2u_dev >= k else np.nan,
        urban_to_rural=float(u2r) if u2r_dev >= k else np.nan,
        rural_balance=balance if bal_ok else np.nan,
        rural_balance_lo=balance - z * sd_bal if bal_ok else np.nan,
        rural_balance_hi=balance + z * sd_bal if bal_ok else np.nan,
        rural_to_urban_devices=float(r2u_dev) if r2u_dev >= k else np.nan,
        urban_to_rural_devices=float(u2r_dev) if u2r_dev >= k else np.nan,
    )


def rural_urban(regions: RegionSet) -> tuple[np.ndarray, np.ndarray]:
    """Which regions are rural and which urban (bool[n] each; a region without a flag of its
    own or of an ancestor is neither): the sides of the rural balance."""
    urban = [_urban(regions, i) for i in range(len(regions.ids))]
    return (np.array([u is False for u in urban], dtype=bool),
            np.array([u is True for u in urban], dtype=bool))


def _urban(regions: RegionSet, i: int) -> bool | None:
    """A region's urban flag, inherited from the nearest ancestor that has one."""
    for j in regions.ancestors(i):
        if j < len(regions.regions) and regions.regions[j].urban is not None:
            return regions.regions[j].urban
    return None
