"""Foreign visitors with realistic stays (scenario ``[foreign]``) and the truth of every
visitor's stay.

:func:`draw_stays` draws the ``[foreign]`` stays (the model adds them as people after the
``[visitors]`` ones, with a roaming device each and a local one for those who buy a local SIM).
:func:`visitor_stays` lists every visitor's stay (``[visitors]`` and ``[foreign]``) with its
devices, and :func:`foreign_truth` counts them per origin MCC, period and class of stay, with the
same definitions defacto states for its estimate (``estimators.foreign``), computed here from the
true arrival and departure instants, not from pings:

- a stay's **nights** are the night windows (22:00-06:00 local by default) that overlap its
  presence ``[arrive, depart)``; its **class** is ``same_day`` (0 nights), ``short`` (1-29),
  ``medium`` (30-89) or ``long`` (90+);
- a **day** runs from the end of one night window to the end of the next (06:00 to 06:00);
  arrivals are counted on the day of ``arrive``, departures on the day of the last instant
  present, and the **stock** at the end of a day is the stays that arrived by then and are still
  present after it, classed by their nights so far.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from estimators.migration import period_nights, periods_of
from estimators.units import DAY_MS, HOUR_MS
from stream.simulator.scenario import FOREIGN_KINDS, ForeignParams, Scenario, parse_scenario

if TYPE_CHECKING:
    from stream.simulator.model import Simulation

EXAMPLE_PREFIX = "#~ "
"""Scenario lines starting with this are an example ``[foreign]`` section, off as written."""
TRUE_CLASSES = ("same_day", "short", "medium", "long")
TRUE_CLASS_EDGES = (1, 30, 90)
LOCAL_MCC = 401


@dataclass
class ForeignStays:
    """The ``[foreign]`` stays, one per person (persons after the ``[visitors]`` ones, in
    order): ``person``, ``kind`` (index into ``FOREIGN_KINDS``), origin ``mcc``, destination
    ``leaf``, present in ``[arrive_ms, depart_ms)``; ``switch_ms`` when a local SIM takes over
    (-1: never), ``dual`` whether the foreign SIM keeps pinging after it; ``device`` the foreign
    SIM and ``local_device`` the local one (-1: none), as device indices."""

    person: np.ndarray
    kind: np.ndarray
    mcc: np.ndarray
    leaf: np.ndarray
    arrive_ms: np.ndarray
    depart_ms: np.ndarray
    switch_ms: np.ndarray
    dual: np.ndarray
    device: np.ndarray
    local_device: np.ndarray


def with_foreign(scenario: Scenario, **overrides: Any) -> Scenario:
    """The scenario with its example ``[foreign]`` section on: the lines starting with
    ``#~ `` uncommented (in its ``text`` too, so written files carry the section), then
    ``overrides`` of :class:`~stream.simulator.scenario.ForeignParams` fields applied; every
    other field stays as in ``scenario``. Raises ``ValueError`` when it has no such section."""
    text = "\n".join(line[len(EXAMPLE_PREFIX):] if line.startswith(EXAMPLE_PREFIX) else line
                     for line in scenario.text.splitlines()) + "\n"
    params = parse_scenario(text, scenario.source).foreign
    if params is None:
        raise ValueError(f"{scenario.source}: no example [foreign] section (lines starting "
                         f"with {EXAMPLE_PREFIX!r})")
    return dataclasses.replace(scenario, text=text,
                               foreign=dataclasses.replace(params, **overrides))


def _choose(rng: np.random.Generator, probs: np.ndarray, size: int) -> np.ndarray:
    """Draw ``size`` indices from a probability vector (inverse CDF)."""
    cum = np.cumsum(probs)
    idx = np.searchsorted(cum, rng.random(size) * cum[-1], side="right")
    return np.minimum(idx, probs.size - 1)


def draw_stays(params: ForeignParams, dest_probs: np.ndarray,
               leaf_mcc: list[tuple[np.ndarray, np.ndarray]], scale: float, start_ms: int,
               end_ms: int, utc_offset_h: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The ``[foreign]`` stays present at some time in ``[start_ms, end_ms)``, in arrival order.

    Arrivals are uniform over ``[start_ms - longest stay, end_ms)`` (so the run can begin with
    long-stayers who came before it), Poisson many at ``arrivals_per_year x scale``. Returns
    ``leaf`` (into ``dest_probs``), ``kind``, ``mcc``, ``arrive_ms``, ``depart_ms``,
    ``switch_ms`` (-1: no local SIM) and ``dual``.
    """
    longest = max(params.days(k)[1] for k in FOREIGN_KINDS if k != "same_day")
    lo = start_ms - int(longest * DAY_MS) - DAY_MS
    n = int(rng.poisson(params.arrivals_per_year * scale * (end_ms - lo) / (365.25 * DAY_MS)))
    shares = np.array([params.stays[k] for k in FOREIGN_KINDS])
    kind = _choose(rng, shares, n).astype(np.int8)
    arrive = rng.integers(lo, end_ms, n).astype(np.int64)
    length = np.zeros(n, dtype=np.int64)
    for i, name in enumerate(FOREIGN_KINDS[1:], start=1):
        sel = kind == i
        a, b = params.days(name)
        length[sel] = (rng.uniform(a, b, int(sel.sum())) * DAY_MS).astype(np.int64)
    # a day trip: arrives 06:00-12:00 local, stays at least 2 h, leaves by 20:00
    day = kind == 0
    offset = utc_offset_h * HOUR_MS
    midnight = (arrive[day] + offset) // DAY_MS * DAY_MS - offset
    hour_in = rng.uniform(6.0, 12.0, int(day.sum()))
    arrive[day] = midnight + (hour_in * HOUR_MS).astype(np.int64)
    length[day] = ((2.0 + rng.uniform(0.0, 1.0, hour_in.size) * (18.0 - hour_in))
                   * HOUR_MS).astype(np.int64)
    depart = arrive + length
    leaf = _choose(rng, dest_probs, n).astype(np.int16)
    mcc = np.zeros(n, dtype=np.int32)
    if params.home_mcc is not None:
        codes = np.array(list(params.home_mcc), dtype=np.int32)
        mcc[:] = codes[_choose(rng, np.array(list(params.home_mcc.values())), n)]
    else:
        for i, (codes, probs) in enumerate(leaf_mcc):
            idx = np.flatnonzero(leaf == i)
            mcc[idx] = codes[_choose(rng, probs, idx.size)]
    a, b = params.local_sim_after_days
    switch = arrive + (rng.uniform(a, b, n) * DAY_MS).astype(np.int64)
    buys = (kind >= 2) & (rng.random(n) < params.local_sim_share) & (switch < depart)
    switch = np.where(buys, switch, -1)
    dual = buys & (rng.random(n) < params.dual_sim_share)
    keep = (depart > start_ms) & (arrive < end_ms)
    order = np.argsort(arrive[keep], kind="stable")
    return {k: v[keep][order] for k, v in (("leaf", leaf), ("kind", kind), ("mcc", mcc),
                                           ("arrive_ms", arrive), ("depart_ms", depart),
                                           ("switch_ms", switch), ("dual", dual))}


@dataclass
class VisitorStays:
    """Every visitor's stay (``[visitors]`` first, then ``[foreign]``), one per person:
    ``person``, ``device`` (the roaming SIM), ``local_device`` (-1: none), ``mcc``, ``leaf``,
    ``arrive_ms``/``depart_ms``, ``switch_ms`` (-1: none), ``dual`` and ``kind`` (-1 for a
    ``[visitors]`` stay, else the ``[foreign]`` kind)."""

    person: np.ndarray
    device: np.ndarray
    local_device: np.ndarray
    mcc: np.ndarray
    leaf: np.ndarray
    arrive_ms: np.ndarray
    depart_ms: np.ndarray
    switch_ms: np.ndarray
    dual: np.ndarray
    kind: np.ndarray


def visitor_stays(sim: Simulation) -> VisitorStays:
    """The stays of all visitors of a simulation (see :class:`VisitorStays`)."""
    p = sim.people
    n_res = p.n_residents
    person = np.arange(n_res, p.n_people, dtype=np.int64)
    dev_person = sim.device_person
    first_dev = np.searchsorted(dev_person, person, side="left").astype(np.int64)
    n = person.size
    out = VisitorStays(person, first_dev, np.full(n, -1, dtype=np.int64),
                       sim.device_home_mcc[first_dev].astype(np.int64),
                       p.home_leaf[person].astype(np.int64), p.arrive_ms.astype(np.int64),
                       p.depart_ms.astype(np.int64), np.full(n, -1, dtype=np.int64),
                       np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64))
    f = sim.foreign
    if f is not None and f.person.size:
        at = f.person - n_res
        out.device[at] = f.device
        out.local_device[at] = f.local_device
        out.mcc[at] = f.mcc
        out.switch_ms[at] = f.switch_ms
        out.dual[at] = f.dual
        out.kind[at] = f.kind
    return out


def true_class(nights: np.ndarray) -> np.ndarray:
    """Class index (into :data:`TRUE_CLASSES`) of stays of these nights."""
    return np.searchsorted(np.array(TRUE_CLASS_EDGES), np.asarray(nights), side="right")


def night_count(arrive_ms: np.ndarray, depart_ms: np.ndarray, utc_offset_h: int,
                night_start_h: float = 22.0, night_h: float = 8.0) -> np.ndarray:
    """Night windows (local ``night_start_h`` for ``night_h`` hours) overlapping each
    ``[arrive_ms, depart_ms)`` (int64)."""
    off = utc_offset_h * HOUR_MS
    a = np.asarray(arrive_ms, dtype=np.int64) + off
    d = np.asarray(depart_ms, dtype=np.int64) + off
    start = round(night_start_h * HOUR_MS)
    end = round((night_start_h + night_h) * HOUR_MS)
    last = -((start - d) // DAY_MS) - 1   # the last night starting before d
    first = (a - end) // DAY_MS + 1       # the first night ending after a
    return np.maximum(last - first + 1, 0)


def day_index(ts_ms: np.ndarray, utc_offset_h: int, night_start_h: float = 22.0,
              night_h: float = 8.0) -> np.ndarray:
    """The day of each instant: day ``n`` ends when night ``n`` (starting on local day ``n``)
    ends (int64, days since 1970)."""
    local = np.asarray(ts_ms, dtype=np.int64) + utc_offset_h * HOUR_MS
    return (local - round((night_start_h + night_h) * HOUR_MS)) // DAY_MS + 1


def foreign_truth(sim: Simulation, kind: str, stays: VisitorStays | None = None,
                  seen_from_ms: int | None = None) -> dict[str, dict[tuple[int, ...], int]]:
    """True counts per period of ``kind`` (``week`` or ``month``) for every visitor stay:
    ``arrivals`` {(mcc, period): people}, ``departures`` {(mcc, period, class): people} and
    ``stock`` {(mcc, period, class): people at the period's end} (periods ending within the run),
    with the definitions of the module docstring and the scenario's UTC offset. With
    ``seen_from_ms``, stays are counted as an observer starting then sees them: one that began
    before arrives then, and its nights count from then."""
    s = stays or visitor_stays(sim)
    off = sim.scenario.utc_offset_h
    arrive = s.arrive_ms if seen_from_ms is None else np.maximum(s.arrive_ms, seen_from_ms)
    arrive_day = day_index(arrive, off)
    last_day = day_index(s.depart_ms - 1, off)
    nights = night_count(arrive, s.depart_ms, off)
    out: dict[str, dict[tuple[int, ...], int]] = {"arrivals": {}, "departures": {}, "stock": {}}

    def add(table: dict[tuple[int, ...], int], keys: list[np.ndarray]) -> None:
        if not keys[0].size:
            return
        uniq, counts = np.unique(np.stack(keys), axis=1, return_counts=True)
        for col, count in zip(uniq.T.tolist(), counts.tolist(), strict=True):
            table[tuple(col)] = table.get(tuple(col), 0) + count

    add(out["arrivals"], [s.mcc, periods_of(arrive_day, kind)])
    add(out["departures"], [s.mcc, periods_of(last_day, kind), true_class(nights)])
    end_day = day_index(np.array([sim.end_ms - 1]), off)[0]
    start_day = day_index(np.array([sim.start_ms]), off)[0]
    for number in np.unique(periods_of(np.arange(start_day, end_day + 1), kind)).tolist():
        e = period_nights(kind, number)[1]
        if e > end_day:
            continue
        here = (arrive_day <= e) & (last_day > e)
        add(out["stock"], [s.mcc[here], np.full(int(here.sum()), number),
                           true_class(e - arrive_day[here] + 1)])
    return out
