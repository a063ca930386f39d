"""The vectorized population and ping model.

``simulate`` builds synthetic people (residents with 0-2 devices, foreign visitors with one
roaming device), their home and work points, migrations and the cell plan; ``Simulation.hours``
then generates pings lazily, one hour at a time, with the exact truth at every hour end.

Randomness comes from independent child streams of ``np.random.SeedSequence(seed)`` keyed by
purpose (and by hour or local day), so a given hour is identical however the run is consumed.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from estimators.units import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from stream.simulator.foreign import ForeignStays, draw_stays
from stream.simulator.geometry import TowerGrid, mix64
from stream.simulator.scenario import Migration, Scenario, load_scenario

YEAR_MS = 365.25 * DAY_MS
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON = 111_320.0
KZ_MCC = 401
DEFAULT_CONCENTRATION = {True: 0.8, False: 0.0}
_KEY_BITS = 21

(_HOMES, _DEVICES, _VISITORS, _MIGRATION, _NAMES, _REFERENCE, _DAY, _HOUR, _GRID, _TEMPORARY,
 _CHURN, _FOREIGN) = range(1, 13)


def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for one purpose (and hour/day) of a seeded run."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


@dataclass(frozen=True)
class HourChunk:
    """The pings of one simulated hour (in feed order) and the truth at the hour's end."""

    start_ms: int
    device: np.ndarray
    ts_ms: np.ndarray
    cell: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    truth_end: dict[str, dict[str, int]]

    def __len__(self) -> int:
        """Number of pings in the hour."""
        return int(self.device.size)


@dataclass
class People:
    """State of every simulated person at the start: residents first, then visitors (the
    ``[visitors]`` ones, then the last ``n_foreign``, of ``[foreign]``).

    Leaves are indices into ``Simulation.leaf_ids``. Non-workers have work = home. Visitors
    are present in [arrive_ms, depart_ms) (arrays indexed from the first visitor).
    """

    home_leaf: np.ndarray
    home_lat: np.ndarray
    home_lon: np.ndarray
    work_leaf: np.ndarray
    work_lat: np.ndarray
    work_lon: np.ndarray
    go_weekday: np.ndarray
    go_weekend: np.ndarray
    n_residents: int
    arrive_ms: np.ndarray
    depart_ms: np.ndarray
    n_foreign: int = 0

    @property
    def n_people(self) -> int:
        """Residents plus visitors (over the whole period)."""
        return int(self.home_leaf.size)


@dataclass
class Moves:
    """Home moves (migration), sorted by time: person, when, and the new home and work."""

    person: np.ndarray
    at_ms: np.ndarray
    home_leaf: np.ndarray
    home_lat: np.ndarray
    home_lon: np.ndarray
    work_leaf: np.ndarray
    work_lat: np.ndarray
    work_lon: np.ndarray


@dataclass
class Stays:
    """Temporary stays away from home (holidays, shift rotations): not moves. Sorted by start;
    ``start_ms``/``end_ms`` on whole hours; the person sleeps and spends the day at
    (``leaf``, ``lat``, ``lon``) in between. ``kind`` 0 = holiday, 1 = shift rotation."""

    person: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    leaf: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    kind: np.ndarray


@dataclass
class _Schedule:
    """One local day: who goes to work, departure and return (ms after local midnight)."""

    go: np.ndarray
    depart: np.ndarray
    back: np.ndarray


class _Leaves:
    """Per-leaf lookup tables derived from the scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self.ids = scenario.leaf_ids
        self.index = {leaf: i for i, leaf in enumerate(self.ids)}
        regions = [scenario.region(leaf) for leaf in self.ids]
        self.urban = np.array([r.urban for r in regions], dtype=bool)
        self.population = np.array([r.population for r in regions], dtype=np.float64)
        self.concentration = [r.concentration if r.concentration is not None
                              else DEFAULT_CONCENTRATION[r.urban] for r in regions]
        op_ids = [op.id for op in scenario.operators]
        self.market = np.array([[self._inherit(scenario, leaf, "market", scenario.market)[o]
                                 for o in op_ids] for leaf in self.ids])
        mixes = [self._inherit(scenario, leaf, "visitor_home_mcc", scenario.visitors.home_mcc)
                 for leaf in self.ids]
        self.visitor_mcc = [(np.array(list(m), np.int32), np.array(list(m.values())))
                            for m in mixes]
        self.region_ids = [r.id for r in scenario.regions]
        self.rollup = np.array([[region_id in scenario.ancestors(leaf) for leaf in self.ids]
                                for region_id in self.region_ids], dtype=np.int64)

    @staticmethod
    def _inherit(scenario: Scenario, leaf: str, field: str, default: dict) -> dict:
        for region_id in scenario.ancestors(leaf):
            value = getattr(scenario.region(region_id), field)
            if value is not None:
                return value
        return default

    def by_population(self, leaf_ids: list[str]) -> np.ndarray:
        """A probability vector over all leaves, spread over ``leaf_ids`` by population."""
        probs = np.zeros(len(self.ids))
        idx = [self.index[leaf] for leaf in leaf_ids]
        weights = self.population[idx]
        probs[idx] = weights / weights.sum() if weights.sum() > 0 else 1.0 / len(idx)
        return probs

    def totals(self, per_leaf: np.ndarray) -> dict[str, int]:
        """Roll leaf counts up to every region (parents = sum of their leaves)."""
        return dict(zip(self.region_ids, (self.rollup @ per_leaf).tolist(), strict=True))


def _choose(rng: np.random.Generator, probs: np.ndarray, size: int) -> np.ndarray:
    """Draw ``size`` indices from a probability vector (inverse CDF)."""
    cum = np.cumsum(probs)
    idx = np.searchsorted(cum, rng.random(size) * cum[-1], side="right")
    return np.minimum(idx, probs.size - 1)


def _sample_in_leaves(scenario: Scenario, leaves: _Leaves, leaf: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample one point per entry inside the leaf region given for it."""
    lat, lon = np.empty(leaf.size), np.empty(leaf.size)
    order = np.argsort(leaf, kind="stable")
    bounds = np.searchsorted(leaf[order], np.arange(len(leaves.ids) + 1))
    for i, leaf_id in enumerate(leaves.ids):
        idx = order[bounds[i]:bounds[i + 1]]
        if idx.size:
            lat[idx], lon[idx] = scenario.shapes[leaf_id].sample(
                idx.size, leaves.concentration[i], rng)
    return lat, lon


def _work_probs(scenario: Scenario, leaves: _Leaves, leaf_id: str) -> np.ndarray:
    """Where the workers living in a leaf work: commute flows, own leaf, urban sibling leaves.

    Commute flows take their shares first; of the rest, ``local_share`` work in their own leaf
    and the others in the urban leaves under the same parent (by population), if there are any.
    """
    region = scenario.region(leaf_id)
    chain = scenario.ancestors(leaf_id)
    probs = np.zeros(len(leaves.ids))
    remaining = 1.0
    for flow in scenario.commutes:
        if flow.from_id in chain:
            for to_id, weight in flow.to.items():
                probs += flow.share * weight * leaves.by_population(scenario.leaves_under(to_id))
            remaining -= flow.share
    mobility = scenario.mobility
    own = region.local_share if region.local_share is not None else (
        mobility.local_share_urban if region.urban else mobility.local_share_rural)
    siblings = [] if region.parent is None else [
        leaf for leaf in scenario.leaves_under(region.parent)
        if leaf != leaf_id and leaves.urban[leaves.index[leaf]]]
    if not siblings:
        own = 1.0
    probs[leaves.index[leaf_id]] += remaining * own
    if siblings:
        probs += remaining * (1.0 - own) * leaves.by_population(siblings)
    return probs


def _work_places(scenario: Scenario, leaves: _Leaves, home_leaf: np.ndarray,
                 worker: np.ndarray, rng: np.random.Generator,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Work leaf and point for each worker (non-workers get -1 / NaN, filled by the caller)."""
    work_leaf = np.full(home_leaf.size, -1, dtype=np.int16)
    for i, leaf_id in enumerate(leaves.ids):
        idx = np.flatnonzero(worker & (home_leaf == i))
        if idx.size:
            work_leaf[idx] = _choose(rng, _work_probs(scenario, leaves, leaf_id), idx.size)
    lat, lon = np.full(home_leaf.size, np.nan), np.full(home_leaf.size, np.nan)
    has = np.flatnonzero(worker)
    lat[has], lon[has] = _sample_in_leaves(scenario, leaves, work_leaf[has], rng)
    return work_leaf, lat, lon


def _residents(scenario: Scenario, leaves: _Leaves, scale: float, rng: np.random.Generator,
               ) -> dict[str, np.ndarray]:
    """Residents per leaf (population x scale), their homes, workplaces and daily habits."""
    counts = np.rint(leaves.population * scale).astype(np.int64)
    home_leaf = np.repeat(np.arange(len(leaves.ids), dtype=np.int16), counts)
    home_lat, home_lon = _sample_in_leaves(scenario, leaves, home_leaf, rng)
    mob = scenario.mobility
    urban = leaves.urban[home_leaf]
    worker = rng.random(home_leaf.size) < np.where(urban, mob.work_share_urban,
                                                   mob.work_share_rural)
    work_leaf, work_lat, work_lon = _work_places(scenario, leaves, home_leaf, worker, rng)
    return {"home_leaf": home_leaf, "home_lat": home_lat, "home_lon": home_lon,
            "work_leaf": work_leaf, "work_lat": work_lat, "work_lon": work_lon,
            "go_weekday": np.where(worker, mob.attendance_weekday, 0.0).astype(np.float32),
            "go_weekend": np.where(worker, mob.attendance_weekend, 0.0).astype(np.float32)}


def _visitor_stock(scenario: Scenario, leaves: _Leaves) -> np.ndarray:
    """Average number of visitors present per leaf at full scale."""
    stock = np.zeros(len(leaves.ids))
    for region in scenario.regions:
        if region.visitors:
            stock += region.visitors * leaves.by_population(scenario.leaves_under(region.id))
    return stock


def _visitor_stays(scenario: Scenario, leaves: _Leaves, scale: float, start_ms: int,
                   end_ms: int, rng: np.random.Generator,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visits as an alternating renewal process per slot: stay ~ Gamma(2), gap ~ Exp.

    Each slot starts in its stationary state (occupied with probability stay/(stay+gap), with
    the equilibrium residual time), so the expected stock is constant over the period.
    """
    params = scenario.visitors
    stay_ms, gap_ms = params.stay_days * DAY_MS, params.gap_days * DAY_MS
    occupied_p = stay_ms / (stay_ms + gap_ms)
    slots = np.rint(_visitor_stock(scenario, leaves) * scale / occupied_p).astype(np.int64)
    slot_leaf = np.repeat(np.arange(len(leaves.ids), dtype=np.int16), slots)
    n, theta = slot_leaf.size, stay_ms / 2.0
    occupied = rng.random(n) < occupied_p
    residual = np.where(rng.random(n) < 0.5, rng.exponential(theta, n), rng.gamma(2.0, theta, n))
    first = np.flatnonzero(occupied)
    leaf, arrive, depart = [slot_leaf[first]], [np.full(first.size, float(start_ms))], [
        start_ms + residual[first]]
    next_at = np.where(occupied, start_ms + residual, float(start_ms)) + rng.exponential(
        gap_ms, n)
    while (active := np.flatnonzero(next_at < end_ms)).size:
        at = next_at[active]
        until = at + rng.gamma(2.0, theta, active.size)
        leaf.append(slot_leaf[active])
        arrive.append(at)
        depart.append(until)
        next_at[active] = until + rng.exponential(gap_ms, active.size)
    return (np.concatenate(leaf), np.concatenate(arrive).astype(np.int64),
            np.ceil(np.concatenate(depart)).astype(np.int64))


def _visitors(scenario: Scenario, leaves: _Leaves, scale: float, start_ms: int, end_ms: int,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Foreign visitors: a stay point (home) and an outing point in the leaf they visit."""
    leaf, arrive, depart = _visitor_stays(scenario, leaves, scale, start_ms, end_ms, rng)
    home_lat, home_lon = _sample_in_leaves(scenario, leaves, leaf, rng)
    work_lat, work_lon = _sample_in_leaves(scenario, leaves, leaf, rng)
    go = np.full(leaf.size, scenario.visitors.day_out_share, dtype=np.float32)
    return {"home_leaf": leaf, "home_lat": home_lat, "home_lon": home_lon,
            "work_leaf": leaf.copy(), "work_lat": work_lat, "work_lon": work_lon,
            "go_weekday": go, "go_weekend": go.copy(), "arrive_ms": arrive,
            "depart_ms": depart}


def _foreign_visitors(scenario: Scenario, leaves: _Leaves, scale: float, start_ms: int,
                      end_ms: int, rng: np.random.Generator,
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ``[foreign]`` visitors as people columns (a lodging and an outing point in the leaf
    they stay in), and their stays (:func:`stream.simulator.foreign.draw_stays`)."""
    params = scenario.foreign
    assert params is not None
    if params.to is not None:
        dest = np.zeros(len(leaves.ids))
        for region_id, weight in params.to.items():
            dest += weight * leaves.by_population(scenario.leaves_under(region_id))
    else:
        dest = _visitor_stock(scenario, leaves)
    stays = draw_stays(params, dest, leaves.visitor_mcc, scale, start_ms, end_ms,
                       scenario.utc_offset_h, rng)
    leaf = stays["leaf"]
    home_lat, home_lon = _sample_in_leaves(scenario, leaves, leaf, rng)
    work_lat, work_lon = _sample_in_leaves(scenario, leaves, leaf, rng)
    seasonal = stays["kind"] == 2
    mob, out = scenario.mobility, scenario.visitors.day_out_share
    go_weekday = np.where(seasonal, mob.attendance_weekday, out).astype(np.float32)
    go_weekend = np.where(seasonal, mob.attendance_weekend, out).astype(np.float32)
    return ({"home_leaf": leaf, "home_lat": home_lat, "home_lon": home_lon,
             "work_leaf": leaf.copy(), "work_lat": work_lat, "work_lon": work_lon,
             "go_weekday": go_weekday, "go_weekend": go_weekend,
             "arrive_ms": stays["arrive_ms"], "depart_ms": stays["depart_ms"]}, stays)


def _people(scenario: Scenario, leaves: _Leaves, scale: float, seed: int, start_ms: int,
            end_ms: int) -> tuple[People, dict[str, np.ndarray] | None]:
    """Residents followed by visitors, with non-workers' work point set to their home; and the
    ``[foreign]`` stays (None without that section)."""
    res = _residents(scenario, leaves, scale, _stream(seed, _HOMES))
    vis = _visitors(scenario, leaves, scale, start_ms, end_ms, _stream(seed, _VISITORS))
    parts, stays = [res, vis], None
    if scenario.foreign is not None:
        fvis, stays = _foreign_visitors(scenario, leaves, scale, start_ms, end_ms,
                                        _stream(seed, _FOREIGN))
        parts.append(fvis)
    cols = {k: np.concatenate([part[k] for part in parts]) for k in res}
    idle = cols["work_leaf"] < 0
    for key in ("leaf", "lat", "lon"):
        cols[f"work_{key}"][idle] = cols[f"home_{key}"][idle]
    visits = parts[1:]
    return People(**cols, n_residents=int(res["home_leaf"].size),
                  arrive_ms=np.concatenate([v["arrive_ms"] for v in visits]),
                  depart_ms=np.concatenate([v["depart_ms"] for v in visits]),
                  n_foreign=0 if stays is None else int(stays["leaf"].size)), stays


def _flow_moves(scenario: Scenario, leaves: _Leaves, flow: Migration, home_leaf: np.ndarray,
                taken: np.ndarray, expected: float, span: tuple[int, int],
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One migration flow: who moves (not yet taken), when, and to which leaf."""
    sources = [leaves.index[leaf] for src in flow.from_ids for leaf in scenario.leaves_under(src)]
    pool = np.flatnonzero(np.isin(home_leaf, sources) & ~taken)
    count = min(int(rng.poisson(expected)), pool.size)
    chosen = rng.choice(pool, size=count, replace=False)
    taken[chosen] = True
    targets = np.zeros(len(leaves.ids))
    for to_id, weight in flow.to.items():
        targets += weight * leaves.by_population(scenario.leaves_under(to_id))
    at_ms = rng.integers(span[0], span[1], count)
    return chosen, at_ms, _choose(rng, targets, count).astype(np.int16)


def _moves(scenario: Scenario, leaves: _Leaves, people: People, scale: float, seed: int,
           start_ms: int, end_ms: int) -> Moves:
    """Migration: Poisson counts per flow over the period, movers drawn among residents.

    A person moves at most once; after the move their home and workplace are new points drawn
    in the destination leaf (workers get a workplace by the destination's commute pattern).
    """
    rng = _stream(seed, _MIGRATION)
    home_leaf = people.home_leaf[:people.n_residents]
    taken = np.zeros(home_leaf.size, dtype=bool)
    drawn = [_flow_moves(scenario, leaves, flow, home_leaf, taken,
                         flow.per_year * scale * (end_ms - start_ms) / YEAR_MS,
                         (start_ms, end_ms), rng) for flow in scenario.migrations]
    person = np.concatenate([d[0] for d in drawn] or [np.empty(0, np.int64)]).astype(np.int32)
    at_ms = np.concatenate([d[1] for d in drawn] or [np.empty(0, np.int64)]).astype(np.int64)
    dest = np.concatenate([d[2] for d in drawn] or [np.empty(0, np.int16)]).astype(np.int16)
    order = np.argsort(at_ms, kind="stable")
    person, at_ms, dest = person[order], at_ms[order], dest[order]
    home_lat, home_lon = _sample_in_leaves(scenario, leaves, dest, rng)
    worker = (people.go_weekday[person] > 0) | (people.go_weekend[person] > 0)
    work_leaf, work_lat, work_lon = _work_places(scenario, leaves, dest, worker, rng)
    return Moves(person, at_ms, dest, home_lat, home_lon,
                 np.where(worker, work_leaf, dest).astype(np.int16),
                 np.where(worker, work_lat, home_lat), np.where(worker, work_lon, home_lon))


def _stays(scenario: Scenario, leaves: _Leaves, people: People, moves: Moves, seed: int,
           start_ms: int, end_ms: int) -> Stays:
    """Holidays and shift rotations of residents who do not move (scenario ``[temporary]``).

    Holidays: Poisson many per resident-year, uniform whole-day lengths, starting at a uniform
    hour (also before the run, so the run can begin mid-holiday), in a leaf drawn by population.
    Shift workers: ``shift_days`` away then as many at home, each with a random phase, always at
    the same place. A stay that starts while its person is away is skipped at run time.
    """
    t = scenario.temporary
    rng = _stream(seed, _TEMPORARY)
    n_res = people.n_residents
    eligible = np.setdiff1d(np.arange(n_res), moves.person)
    span_days = (end_ms - start_ms) / DAY_MS
    lo_days, hi_days = t.holiday_days
    n_hol = int(rng.poisson(t.holidays_per_year * eligible.size * (span_days + hi_days) / 365.25))
    hol_person = rng.choice(eligible, n_hol) if eligible.size else np.zeros(0, dtype=np.int64)
    hol_len = rng.integers(lo_days, hi_days + 1, n_hol) * DAY_MS
    hol_start = (start_ms - hi_days * DAY_MS) + rng.integers(
        0, int((span_days + hi_days) * 24), n_hol).astype(np.int64) * HOUR_MS
    hol_leaf = _choose(rng, leaves.population, n_hol)
    n_shift = round(t.shift_share * eligible.size)
    shift_person = rng.choice(eligible, n_shift, replace=False) if n_shift else np.zeros(0, np.int64)
    cycle = 2 * t.shift_days * DAY_MS
    if t.shift_to:
        targets = np.zeros(len(leaves.ids))
        for to_id, weight in t.shift_to.items():
            targets += weight * leaves.by_population(scenario.leaves_under(to_id))
    else:
        targets = leaves.population
    shift_leaf_of = _choose(rng, targets, n_shift)
    phase = rng.integers(0, 2 * t.shift_days * 24, n_shift).astype(np.int64) * HOUR_MS
    reps = int((end_ms - start_ms) // cycle) + 2
    k = np.arange(reps, dtype=np.int64)
    sh_start = (start_ms - cycle + phase[:, None] + k[None, :] * cycle).ravel()
    sh_person = np.repeat(shift_person, reps)
    sh_leaf = np.repeat(shift_leaf_of, reps)
    person = np.concatenate([hol_person, sh_person]).astype(np.int32)
    start = np.concatenate([hol_start, sh_start]).astype(np.int64)
    end = np.concatenate([hol_start + hol_len, sh_start + t.shift_days * DAY_MS])
    leaf = np.concatenate([hol_leaf, sh_leaf]).astype(np.int16)
    kind = np.concatenate([np.zeros(n_hol, np.int8), np.ones(sh_person.size, np.int8)])
    keep = (end > start_ms) & (start < end_ms)
    order = np.argsort(start[keep], kind="stable")
    person, start, end, leaf, kind = (a[keep][order] for a in (person, start, end, leaf, kind))
    lat, lon = _sample_in_leaves(scenario, leaves, leaf, rng)
    return Stays(person, start, end, leaf, lat, lon, kind)


def _device_windows(scenario: Scenario, person: np.ndarray, n_residents: int, seed: int,
                    start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray] | None:
    """When each device pings: ``[from_ms, until_ms)`` (scenario ``[churn]``), or None (always).

    Residents' devices lapse for good at a uniform time (``lapse_per_year``) or first appear at
    one (``new_share``: new SIMs); visitors' devices follow their stay instead.
    """
    c = scenario.churn
    if c.lapse_per_year == 0 and c.new_share == 0:
        return None
    rng = _stream(seed, _CHURN)
    n = person.size
    resident = person < n_residents
    years = (end_ms - start_ms) / YEAR_MS
    lapse = resident & (rng.random(n) < c.lapse_per_year * years)
    new = resident & ~lapse & (rng.random(n) < c.new_share)
    when = rng.integers(start_ms, end_ms, n)
    from_ms = np.where(new, when, np.iinfo(np.int64).min)
    until_ms = np.where(lapse, when, np.iinfo(np.int64).max)
    return from_ms.astype(np.int64), until_ms.astype(np.int64)


@dataclass
class _Devices:
    person: np.ndarray
    operator: np.ndarray
    home_mcc: np.ndarray
    rate_per_h: np.ndarray


def _second_operator(rng: np.random.Generator, market: np.ndarray, first: np.ndarray,
                     ) -> np.ndarray:
    """Operator of a second device: the market without the first device's operator."""
    second = first.copy()
    for k in range(market.size):
        idx = np.flatnonzero(first == k)
        probs = market.copy()
        probs[k] = 0.0
        if idx.size and probs.sum() > 0:
            second[idx] = _choose(rng, probs, idx.size)
    return second


def _devices(scenario: Scenario, leaves: _Leaves, people: People, seed: int) -> _Devices:
    """Devices: 0-2 per resident (different operators), one roaming device per visitor."""
    rng = _stream(seed, _DEVICES)
    n_res = people.n_residents
    home_leaf = people.home_leaf
    dev = scenario.devices
    per_person = np.where(leaves.urban[home_leaf[:n_res]][:, None],
                          np.array(dev.per_person_urban), np.array(dev.per_person_rural))
    count = (rng.random(n_res)[:, None] > np.cumsum(per_person, axis=1)[:, :2]).sum(axis=1)
    n_people = people.n_people - people.n_foreign  # [foreign] visitors: _foreign_devices
    count = np.concatenate([count, np.ones(n_people - n_res, dtype=count.dtype)])
    person = np.repeat(np.arange(n_people, dtype=np.int32), count)
    first_of = np.cumsum(count) - count
    is_second = np.arange(person.size) > first_of[person]
    operator = np.zeros(person.size, dtype=np.int16)
    dev_leaf = home_leaf[person]
    for i in range(len(leaves.ids)):
        firsts = np.flatnonzero((dev_leaf == i) & ~is_second)
        operator[firsts] = _choose(rng, leaves.market[i], firsts.size)
        seconds = np.flatnonzero((dev_leaf == i) & is_second)
        operator[seconds] = _second_operator(rng, leaves.market[i], operator[seconds - 1])
    home_mcc = np.full(person.size, KZ_MCC, dtype=np.int32)
    for i, (mccs, probs) in enumerate(leaves.visitor_mcc):
        idx = np.flatnonzero((person >= n_res) & (dev_leaf == i))
        home_mcc[idx] = mccs[_choose(rng, probs, idx.size)]
    rate = rng.lognormal(math.log(dev.rate_median_per_h), dev.rate_sigma, person.size)
    rate[person >= n_res] *= scenario.visitors.rate_factor
    return _Devices(person, operator, home_mcc, rate)


def _foreign_devices(scenario: Scenario, leaves: _Leaves, people: People,
                     stays: dict[str, np.ndarray], devices: _Devices, seed: int,
                     ) -> tuple[_Devices, ForeignStays, tuple[np.ndarray, np.ndarray]]:
    """``devices`` followed by the ``[foreign]`` visitors' devices: a roaming SIM each (home
    MCC of the stay, a Kazakh operator by the leaf's market, the visitors' rate factor) and a
    domestic SIM for those who buy one. Also the stays with their device indices, and each new
    device's ping window ``[from, until)``: the roaming SIM until the switch (unless dual-SIM),
    the local SIM from it."""
    rng = _stream(seed, _FOREIGN, 1)
    n = stays["leaf"].size
    first = people.n_people - n
    local = stays["switch_ms"] >= 0
    per = 1 + local.astype(np.int64)
    person = np.repeat(np.arange(first, people.n_people, dtype=np.int32), per)
    base = devices.person.size
    roaming = base + np.cumsum(per) - per
    local_dev = np.where(local, roaming + 1, -1)
    is_local = np.zeros(person.size, dtype=bool)
    is_local[local_dev[local] - base] = True
    leaf = stays["leaf"][person - first]
    operator = np.zeros(person.size, dtype=np.int16)
    for i in range(len(leaves.ids)):
        idx = np.flatnonzero(leaf == i)
        operator[idx] = _choose(rng, leaves.market[i], idx.size)
    home_mcc = np.where(is_local, KZ_MCC, stays["mcc"][person - first]).astype(np.int32)
    dev = scenario.devices
    rate = rng.lognormal(math.log(dev.rate_median_per_h), dev.rate_sigma, person.size)
    rate[~is_local] *= scenario.visitors.rate_factor
    switch = stays["switch_ms"][person - first]
    cut = (switch >= 0) & ~stays["dual"][person - first]
    from_ms = np.where(is_local, switch, np.iinfo(np.int64).min)
    until_ms = np.where(~is_local & cut, switch, np.iinfo(np.int64).max)
    merged = _Devices(np.concatenate([devices.person, person]),
                      np.concatenate([devices.operator, operator]),
                      np.concatenate([devices.home_mcc, home_mcc]),
                      np.concatenate([devices.rate_per_h, rate]))
    truth = ForeignStays(np.arange(first, people.n_people, dtype=np.int64),
                         stays["kind"].astype(np.int64), stays["mcc"].astype(np.int64),
                         stays["leaf"].astype(np.int64), stays["arrive_ms"], stays["depart_ms"],
                         stays["switch_ms"], stays["dual"], roaming.astype(np.int64),
                         local_dev.astype(np.int64))
    return merged, truth, (from_ms.astype(np.int64), until_ms.astype(np.int64))


def _device_names(n: int, seed: int) -> np.ndarray:
    """Unique 16-hex-digit pseudonyms: a keyed bijective hash of the device index."""
    salt = int(_stream(seed, _NAMES).integers(0, 2**63))
    values = mix64(np.arange(n, dtype=np.uint64) + np.uint64(salt))
    raw = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.empty((n, 16), dtype=np.uint8)
    chars[:, 0::2] = hexdigits[raw >> 4]
    chars[:, 1::2] = hexdigits[raw & 15]
    return chars.view("S16").ravel().astype("U16").astype(object)


class _CellPlan:
    """Towers of the cell-reporting operators and the lookup position -> serving cell row."""

    def __init__(self, scenario: Scenario, leaves: _Leaves, seed: int,
                 positions: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.leaves = leaves
        self.grids = self._grids(scenario, seed)
        keys, lats, lons, names, ops = [], [], [], [], []
        for (op, layer), grid in sorted(self.grids.items()):
            iy, ix = self._cells(scenario, op, layer, grid, positions)
            lat, lon = grid.towers(iy, ix)
            keys.append(self._encode(op, layer, iy, ix))
            lats.append(lat)
            lons.append(lon)
            letter = "U" if layer else "R"
            names += [f"{letter}{y}-{x}" for y, x in zip(iy.tolist(), ix.tolist(), strict=True)]
            ops.append(np.full(iy.size, op, dtype=np.int16))
        self.keys = np.concatenate(keys or [np.empty(0, np.int64)])
        self.table = {"operator": np.concatenate(ops or [np.empty(0, np.int16)]),
                      "cell": np.array(names, dtype=object),
                      "lat": np.concatenate(lats or [np.empty(0)]),
                      "lon": np.concatenate(lons or [np.empty(0)])}

    @staticmethod
    def _grids(scenario: Scenario, seed: int) -> dict[tuple[int, int], TowerGrid]:
        rng = _stream(seed, _GRID)
        boxes = np.array([scenario.shapes[leaf].bbox for leaf in scenario.leaf_ids])
        lat0, lon0 = math.floor(boxes[:, 1].min()) - 1.0, math.floor(boxes[:, 0].min()) - 1.0
        grids = {}
        for op, operator in enumerate(scenario.operators):
            phases = rng.random(4)
            salts = rng.integers(0, 2**63, 2)
            if operator.location != "cell":
                continue
            for layer, spacing in ((0, operator.cell_spacing_rural_km),
                                   (1, operator.cell_spacing_urban_km)):
                grids[(op, layer)] = TowerGrid(spacing, lat0, lon0, phases[2 * layer],
                                               phases[2 * layer + 1], operator.cell_jitter,
                                               int(salts[layer]))
        return grids

    def _cells(self, scenario: Scenario, op: int, layer: int, grid: TowerGrid,
               positions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
               ) -> tuple[np.ndarray, np.ndarray]:
        """Unique grid cells: coverage of the layer's leaves plus every possible position."""
        ys, xs = [], []
        for i, leaf_id in enumerate(self.leaves.ids):
            if self.leaves.urban[i] == bool(layer):
                iy, ix = grid.cells_covering(scenario.shapes[leaf_id])
                ys.append(iy)
                xs.append(ix)
        for leaf, lat, lon in positions:
            sel = self.leaves.urban[leaf] == bool(layer)
            iy, ix = grid.snap(lat[sel], lon[sel])
            ys.append(iy)
            xs.append(ix)
        iy, ix = np.concatenate(ys), np.concatenate(xs)
        if iy.size and (min(iy.min(), ix.min()) < 0 or max(iy.max(), ix.max()) >= 1 << _KEY_BITS):
            raise ValueError("tower grid index out of range: cell spacing too small")
        unique = np.unique((iy << _KEY_BITS) | ix)
        return unique >> _KEY_BITS, unique & ((1 << _KEY_BITS) - 1)

    @staticmethod
    def _encode(op: int | np.ndarray, layer: int | np.ndarray, iy: np.ndarray,
                ix: np.ndarray) -> np.ndarray:
        op = np.asarray(op, dtype=np.int64)
        layer = np.asarray(layer, dtype=np.int64)
        return (op << 44) | (layer << 42) | (iy << _KEY_BITS) | ix

    def rows(self, operator: np.ndarray, leaf: np.ndarray, lat: np.ndarray,
             lon: np.ndarray) -> np.ndarray:
        """Cell plan row serving each position (-1 for operators that report lat/lon)."""
        rows = np.full(operator.size, -1, dtype=np.int32)
        layer = self.leaves.urban[leaf].astype(np.int64)
        for (op, lay), grid in self.grids.items():
            sel = np.flatnonzero((operator == op) & (layer == lay))
            iy, ix = grid.snap(lat[sel], lon[sel])
            keys = self._encode(op, lay, iy, ix)
            found = np.searchsorted(self.keys, keys)
            if found.size and not np.array_equal(self.keys[np.minimum(found, self.keys.size - 1)],
                                                 keys):
                raise RuntimeError("position outside the cell plan")
            rows[sel] = found
        return rows


class Simulation:
    """A simulated scenario: static tables (devices, cells, regions) and hourly pings.

    Attributes follow the public API documented in docs/SCENARIOS.md; ``hours()`` regenerates
    the identical hour chunks every time it is called.
    """

    def __init__(self, scenario: Scenario, scale: float, days: float, seed: int,
                 start_ms: int) -> None:
        self.scenario, self.scale, self.seed = scenario, scale, seed
        self.n_hours = max(1, round(days * 24))
        self.start_ms = start_ms
        self.end_ms = start_ms + self.n_hours * HOUR_MS
        self.operators = [op.id for op in scenario.operators]
        self._leaves = _Leaves(scenario)
        self.leaf_ids = list(self._leaves.ids)
        self.people, foreign = _people(scenario, self._leaves, scale, seed, start_ms, self.end_ms)
        self.moves = _moves(scenario, self._leaves, self.people, scale, seed, start_ms,
                            self.end_ms)
        self.stays = _stays(scenario, self._leaves, self.people, self.moves, seed, start_ms,
                            self.end_ms)
        devices = _devices(scenario, self._leaves, self.people, seed)
        self.device_window = _device_windows(scenario, devices.person, self.people.n_residents,
                                             seed, start_ms, self.end_ms)
        self.foreign: ForeignStays | None = None
        if foreign is not None:
            n_before = devices.person.size
            devices, self.foreign, window = _foreign_devices(scenario, self._leaves, self.people,
                                                             foreign, devices, seed)
            old = self.device_window or (np.full(n_before, np.iinfo(np.int64).min),
                                         np.full(n_before, np.iinfo(np.int64).max))
            self.device_window = (np.concatenate([old[0], window[0]]),
                                  np.concatenate([old[1], window[1]]))
        self._dev_person, self._dev_rate = devices.person, devices.rate_per_h
        self.device_operator, self.device_home_mcc = devices.operator, devices.home_mcc
        self.device_name = _device_names(devices.person.size, seed)
        self._plan = _CellPlan(scenario, self._leaves, seed, self._positions())
        self.cell_plan = self._plan.table
        self._dev_home_cell, self._dev_work_cell = self._device_cells(self.people, devices)
        self._setup_tables()
        self.regions_geojson = self._geojson()
        self.registry = self._registry()
        self.reference = self._reference()

    @property
    def n_devices(self) -> int:
        """Number of devices (residents' and visitors')."""
        return int(self._dev_person.size)

    @property
    def device_person(self) -> np.ndarray:
        """Index of the person carrying each device (residents first, then visitors)."""
        return self._dev_person

    def _positions(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        p, m, st = self.people, self.moves, self.stays
        return [(p.home_leaf, p.home_lat, p.home_lon), (p.work_leaf, p.work_lat, p.work_lon),
                (m.home_leaf, m.home_lat, m.home_lon), (m.work_leaf, m.work_lat, m.work_lon),
                (st.leaf, st.lat, st.lon)]

    def _device_cells(self, people: People, devices: _Devices,
                      ) -> tuple[np.ndarray, np.ndarray]:
        p = devices.person
        home = self._plan.rows(devices.operator, people.home_leaf[p], people.home_lat[p],
                               people.home_lon[p])
        work = self._plan.rows(devices.operator, people.work_leaf[p], people.work_lat[p],
                               people.work_lon[p])
        return home, work

    def _setup_tables(self) -> None:
        devices = self.scenario.devices
        self._profile = np.array(devices.diurnal) / max(devices.diurnal)
        self._cell_mode = np.array([op.location == "cell" for op in self.scenario.operators])[
            self.device_operator]
        self._latlon_sd = np.array([[op.latlon_sd_rural_m, op.latlon_sd_urban_m]
                                    for op in self.scenario.operators])
        self._first_visitor_device = int(np.searchsorted(self._dev_person,
                                                         self.people.n_residents))
        self._offset_ms = self.scenario.utc_offset_h * HOUR_MS
        self._disorder_ms = round(self.scenario.disorder_s * SECOND_MS)
        self._burst_shape = self.scenario.devices.burst_shape
        self._late_ms = round(self.scenario.late_s * SECOND_MS)

    def _geojson(self) -> dict:
        features = []
        for region in self.scenario.regions:
            props = {"id": region.id, "name": region.name, "urban": region.urban}
            if region.parent is not None:
                props["parent"] = region.parent
            features.append({"type": "Feature", "properties": props,
                             "geometry": self.scenario.shapes[region.id].geometry()})
        return {"type": "FeatureCollection", "features": features}

    def _registry(self) -> dict[str, int]:
        registered = np.array([self.scenario.region(leaf).registered for leaf in self.leaf_ids],
                              dtype=np.float64)
        return self._leaves.totals(np.rint(registered * self.scale).astype(np.int64))

    def _residents_at(self, t_ms: int) -> np.ndarray:
        """Resident count per leaf at instant t (after the moves made by then)."""
        counts = np.bincount(self.people.home_leaf[:self.people.n_residents],
                             minlength=len(self.leaf_ids)).astype(np.int64)
        done = self.moves.at_ms <= t_ms
        np.subtract.at(counts, self.people.home_leaf[self.moves.person[done]], 1)
        np.add.at(counts, self.moves.home_leaf[done], 1)
        return counts

    def _reference(self) -> dict[str, int]:
        """Census-like residents at start + 24 h (or the end) with relative noise per leaf."""
        t_ref = min(self.start_ms + 24 * HOUR_MS, self.end_ms)
        true = self._residents_at(t_ref).astype(np.float64)
        noise = _stream(self.seed, _REFERENCE).standard_normal(true.size)
        noisy = np.maximum(np.rint(true * (1.0 + self.scenario.reference_rse * noise)), 0)
        return self._leaves.totals(noisy.astype(np.int64))

    def hours(self) -> Iterator[HourChunk]:
        """Generate the hour chunks in time order (lazily; identical on every call)."""
        state = _State(self)
        for h in range(self.n_hours):
            yield self._hour(h, state)

    def _hour(self, h: int, state: _State) -> HourChunk:
        t0 = self.start_ms + h * HOUR_MS
        rng = _stream(self.seed, _HOUR, h)
        local = t0 + self._offset_ms
        day, local_hour = local // DAY_MS, (local % DAY_MS) // HOUR_MS
        state.apply_stays(t0)
        dev, ts = self._ping_times(rng, t0, self._profile[local_hour])
        person = self._dev_person[dev]
        schedule = state.schedule(day)
        at_work = self._at_work(schedule, person, ts - (day * DAY_MS - self._offset_ms))
        cell, lat, lon = self._locate(rng, dev, person, at_work, state)
        moved = state.apply_moves(t0 + HOUR_MS, person, ts)
        if moved.size:
            cell[moved], lat[moved], lon[moved] = self._locate(
                rng, dev[moved], person[moved], at_work[moved], state)
        arrive = ts + rng.integers(0, self._disorder_ms + 1, ts.size)
        if self.scenario.late_share > 0:
            dev, ts, cell, lat, lon, arrive = self._delay(rng, t0, state, dev, ts, cell, lat, lon,
                                                          arrive)
        order = np.argsort(arrive, kind="stable")
        truth = self._truth(t0 + HOUR_MS, state)
        return HourChunk(t0, dev[order], ts[order], cell[order], lat[order], lon[order], truth)

    def _delay(self, rng: np.random.Generator, t0: int, state: _State,
               *cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """Late delivery (scenario ``late_share``, ``late_s``): a share of the pings arrives up
        to ``late_s`` after it was made; those arriving after the hour's end are held back and
        delivered with a later hour (whose chunk then holds pings older than its start); those
        still held after the last hour are never delivered."""
        *data, arrive = cols
        late = rng.random(arrive.size) < self.scenario.late_share
        arrive = arrive + np.where(late, rng.integers(0, self._late_ms + 1, arrive.size), 0)
        cols_all = [np.concatenate([h, c]) for h, c in zip(state.held, [*data, arrive],
                                                               strict=True)] \
            if state.held else [*data, arrive]
        due = cols_all[-1] < t0 + HOUR_MS
        state.held = [c[~due] for c in cols_all]
        return tuple(c[due] for c in cols_all)

    def _ping_times(self, rng: np.random.Generator, t0: int, profile: float,
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Poisson ping counts per device for the hour, uniform times, visitors thinned."""
        lam = self._dev_rate * profile
        first_vis = self._first_visitor_device
        vis = self._dev_person[first_vis:] - self.people.n_residents
        here = (self.people.arrive_ms[vis] < t0 + HOUR_MS) & (self.people.depart_ms[vis] > t0)
        lam[first_vis:] *= here
        window = self.device_window
        if window is not None:
            lam = lam * ((window[0] < t0 + HOUR_MS) & (window[1] > t0))
        if self._burst_shape > 0:  # bursty: a Gamma(k, 1/k) activity draw per device-hour
            k = self._burst_shape
            lam = lam * rng.gamma(k, 1.0 / k, lam.size)
        counts = rng.poisson(lam)
        dev = np.repeat(np.arange(counts.size, dtype=np.int32), counts)
        ts = t0 + rng.integers(0, HOUR_MS, dev.size)
        if window is not None:
            inside = (ts >= window[0][dev]) & (ts < window[1][dev])
            if not inside.all():
                dev, ts = dev[inside], ts[inside]
        tail = int(np.searchsorted(dev, first_vis))
        vp = self._dev_person[dev[tail:]] - self.people.n_residents
        keep = (ts[tail:] >= self.people.arrive_ms[vp]) & (ts[tail:] < self.people.depart_ms[vp])
        if not keep.all():
            dev = np.concatenate([dev[:tail], dev[tail:][keep]])
            ts = np.concatenate([ts[:tail], ts[tail:][keep]])
        return dev, ts

    @staticmethod
    def _at_work(schedule: _Schedule, person: np.ndarray, ms_of_day: np.ndarray) -> np.ndarray:
        at_work = schedule.go[person]
        idx = np.flatnonzero(at_work)
        p, t = person[idx], ms_of_day[idx]
        at_work[idx] = (t >= schedule.depart[p]) & (t < schedule.back[p])
        return at_work

    def _locate(self, rng: np.random.Generator, dev: np.ndarray, person: np.ndarray,
                at_work: np.ndarray, state: _State) -> tuple[np.ndarray, ...]:
        """Serving cell (cell operators) or noisy, 6-decimal lat/lon (lat/lon operators)."""
        n = dev.size
        cell = np.full(n, -1, dtype=np.int32)
        lat, lon = np.full(n, np.nan), np.full(n, np.nan)
        ci = np.flatnonzero(self._cell_mode[dev])
        cell[ci] = np.where(at_work[ci], state.dev_work_cell[dev[ci]],
                            state.dev_home_cell[dev[ci]])
        li = np.flatnonzero(~self._cell_mode[dev])
        p, w = person[li], at_work[li]
        true_lat = np.where(w, state.work_lat[p], state.home_lat[p])
        true_lon = np.where(w, state.work_lon[p], state.home_lon[p])
        leaf = np.where(w, state.work_leaf[p], state.home_leaf[p])
        sd_m = self._latlon_sd[self.device_operator[dev[li]], self._leaves.urban[leaf].astype(int)]
        noise = rng.standard_normal((2, li.size)) * sd_m
        lat[li] = np.round(true_lat + noise[0] / M_PER_DEG_LAT, 6)
        lon[li] = np.round(true_lon + noise[1] / (M_PER_DEG_LON * np.cos(np.radians(true_lat))),
                           6)
        return cell, lat, lon

    def _truth(self, t_ms: int, state: _State) -> dict[str, dict[str, int]]:
        """Present (everyone by position) and resident (Kazakh residents by home) at t."""
        local = t_ms + self._offset_ms
        day = local // DAY_MS
        schedule = state.schedule(day)
        ms_of_day = local - day * DAY_MS
        at_work = schedule.go & (schedule.depart <= ms_of_day) & (schedule.back > ms_of_day)
        leaf = np.where(at_work, state.work_leaf, state.home_leaf)
        n_res, n_leaf = self.people.n_residents, len(self.leaf_ids)
        here = (self.people.arrive_ms <= t_ms) & (self.people.depart_ms > t_ms)
        present = (np.bincount(leaf[:n_res], minlength=n_leaf)
                   + np.bincount(leaf[n_res:][here], minlength=n_leaf)).astype(np.int64)
        resident = np.bincount(state.res_leaf[:n_res], minlength=n_leaf).astype(np.int64)
        p_tot, r_tot = self._leaves.totals(present), self._leaves.totals(resident)
        return {rid: {"present": p_tot[rid], "resident": r_tot[rid]} for rid in p_tot}

    def schedule_for_day(self, local_day: int) -> _Schedule:
        """Who goes out on a local day (days since 1970-01-01 local) and when (ms of day)."""
        rng = _stream(self.seed, _DAY, local_day)
        weekend = (local_day + 3) % 7 >= 5
        people = self.people
        go = rng.random(people.n_people) < (people.go_weekend if weekend else people.go_weekday)
        mob = self.scenario.mobility
        depart = (mob.depart_mean_h * HOUR_MS
                  + rng.standard_normal(people.n_people) * mob.depart_sd_min * MINUTE_MS)
        back = (mob.return_mean_h * HOUR_MS
                + rng.standard_normal(people.n_people) * mob.return_sd_min * MINUTE_MS)
        depart = np.clip(depart, 3 * HOUR_MS, 14 * HOUR_MS)
        back = np.clip(back, depart + HOUR_MS // 2, DAY_MS - HOUR_MS // 4)
        return _Schedule(go, depart.astype(np.int32), back.astype(np.int32))


class _State:
    """Mutable per-run state: current homes/workplaces (changed by moves), day schedules."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        p = sim.people
        self.home_leaf, self.home_lat, self.home_lon = (p.home_leaf.copy(), p.home_lat.copy(),
                                                        p.home_lon.copy())
        self.work_leaf, self.work_lat, self.work_lon = (p.work_leaf.copy(), p.work_lat.copy(),
                                                        p.work_lon.copy())
        self.res_leaf = p.home_leaf.copy()  # usual residence: changed by moves only, not by stays
        self.dev_home_cell = sim._dev_home_cell.copy()
        self.dev_work_cell = sim._dev_work_cell.copy()
        self.next_move = 0
        self.next_stay = 0
        self.stay_ends: list[tuple[int, int, int]] = []  # heap of (end_ms, stay index, person)
        self.away = np.full(p.n_people, -1, dtype=np.int64)
        self.schedules: dict[int, _Schedule] = {}
        self.held: list[np.ndarray] = []  # late pings not delivered yet (Simulation._delay)
        self.apply_moves(sim.start_ms, np.empty(0, np.int32), np.empty(0, np.int64))

    def schedule(self, local_day: int) -> _Schedule:
        """The schedule of a local day (kept for the current and the next day only)."""
        if local_day not in self.schedules:
            self.schedules = {d: s for d, s in self.schedules.items() if d >= local_day - 1}
            self.schedules[local_day] = self.sim.schedule_for_day(local_day)
        return self.schedules[local_day]

    def apply_moves(self, t_ms: int, person: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Apply moves made by t; return indices of pings (person, ts) made after a move."""
        moves = self.sim.moves
        stop = int(np.searchsorted(moves.at_ms, t_ms, side="right"))
        now = slice(self.next_move, stop)
        self.next_move = stop
        movers = moves.person[now]
        if not movers.size:
            return np.empty(0, dtype=np.int64)
        self.home_leaf[movers], self.home_lat[movers], self.home_lon[movers] = (
            moves.home_leaf[now], moves.home_lat[now], moves.home_lon[now])
        self.res_leaf[movers] = moves.home_leaf[now]
        self.work_leaf[movers], self.work_lat[movers], self.work_lon[movers] = (
            moves.work_leaf[now], moves.work_lat[now], moves.work_lon[now])
        self._move_devices(movers)
        hit = np.flatnonzero(np.isin(person, movers))
        when = dict(zip(movers.tolist(), moves.at_ms[now].tolist(), strict=True))
        after = np.array([ts[i] >= when[person[i]] for i in hit.tolist()], dtype=bool)
        return hit[after] if hit.size else hit

    def apply_stays(self, t_ms: int) -> None:
        """Start and end the temporary stays due by ``t_ms`` (a whole hour)."""
        stays, p = self.sim.stays, self.sim.people
        changed: list[int] = []
        while self.stay_ends and self.stay_ends[0][0] <= t_ms:
            _, i, person = heapq.heappop(self.stay_ends)
            if self.away[person] == i:
                self.away[person] = -1
                for arr, base in ((self.home_leaf, p.home_leaf), (self.home_lat, p.home_lat),
                                  (self.home_lon, p.home_lon), (self.work_leaf, p.work_leaf),
                                  (self.work_lat, p.work_lat), (self.work_lon, p.work_lon)):
                    arr[person] = base[person]
                changed.append(person)
        stop = int(np.searchsorted(stays.start_ms, t_ms, side="right"))
        for i in range(self.next_stay, stop):
            person = int(stays.person[i])
            if self.away[person] >= 0 or stays.end_ms[i] <= t_ms:
                continue  # already away (overlapping stays), or over before it is seen
            self.away[person] = i
            heapq.heappush(self.stay_ends, (int(stays.end_ms[i]), i, person))
            for arr, value in ((self.home_leaf, stays.leaf[i]), (self.work_leaf, stays.leaf[i]),
                               (self.home_lat, stays.lat[i]), (self.work_lat, stays.lat[i]),
                               (self.home_lon, stays.lon[i]), (self.work_lon, stays.lon[i])):
                arr[person] = value
            changed.append(person)
        self.next_stay = stop
        if changed:
            self._move_devices(np.unique(np.array(changed, dtype=np.int32)))

    def _move_devices(self, movers: np.ndarray) -> None:
        sim = self.sim
        lo = np.searchsorted(sim._dev_person, movers, side="left")
        hi = np.searchsorted(sim._dev_person, movers, side="right")
        devs = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])
        if not devs.size:
            return
        p = sim._dev_person[devs]
        op = sim.device_operator[devs]
        self.dev_home_cell[devs] = sim._plan.rows(op, self.home_leaf[p], self.home_lat[p],
                                                  self.home_lon[p])
        self.dev_work_cell[devs] = sim._plan.rows(op, self.work_leaf[p], self.work_lat[p],
                                                  self.work_lon[p])


def simulate(scenario: Scenario | str | Path, scale: float = 0.01, days: float = 3.0,
             seed: int = 1, start_ms: int | None = None) -> Simulation:
    """Build a simulation of ``scenario`` at ``scale`` (fraction of the real population).

    ``days`` is rounded to whole hours; ``start_ms`` defaults to the scenario's ``start`` and
    must fall on a whole UTC hour. Pings are produced lazily by ``Simulation.hours()``.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if not (isinstance(scale, int | float) and 0 < scale <= 10):
        raise ValueError(f"scale: must be a number in (0, 10], got {scale!r}")
    if not (isinstance(days, int | float) and days * 24 >= 0.5):
        raise ValueError(f"days: must be at least one hour (1/24), got {days!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    start = scenario.start_ms if start_ms is None else int(start_ms)
    if start % HOUR_MS:
        raise ValueError(f"start_ms: must be a whole UTC hour (multiple of {HOUR_MS}), "
                         f"got {start_ms!r}")
    return Simulation(scenario, float(scale), float(days), seed, start)
