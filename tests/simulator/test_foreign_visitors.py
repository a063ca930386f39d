"""The simulator's ``[foreign]`` visitors: off by default (outputs unchanged), stays of the
configured lengths, local SIMs, ping windows, and the truth per MCC, period and class."""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

from estimators.units import DAY_MS, HOUR_MS
from stream.simulator import (
    Simulation,
    foreign_truth,
    load_scenario,
    parse_scenario,
    simulate,
    visitor_stays,
    with_foreign,
)
from stream.simulator.foreign import day_index, night_count
from stream.simulator.scenario import FOREIGN_KINDS

GOLDEN = "5c6a74966091e9039b81ef1be6ac1786b7c8828fecbdfa9938248257183ac60f"
"""Digest of astana at scale 0.002, 1 day, seed 11, from the simulator before ``[foreign]``."""


def _digest(sim: Simulation) -> str:
    m = hashlib.sha256()
    for c in sim.hours():
        for a in (c.device, c.ts_ms, c.cell, c.lat, c.lon):
            m.update(np.ascontiguousarray(a).tobytes())
        m.update(json.dumps(c.truth_end, sort_keys=True).encode())
    for a in (sim.device_home_mcc, sim.device_operator, sim.device_person):
        m.update(np.ascontiguousarray(a).tobytes())
    m.update("".join(sim.device_name.tolist()).encode())
    return m.hexdigest()


def test_without_the_section_the_simulation_is_unchanged() -> None:
    sc = load_scenario("astana")
    assert sc.foreign is None and "#~ [foreign]" in sc.text  # the example is commented out
    sim = simulate(sc, scale=0.002, days=1, seed=11)
    assert sim.foreign is None and sim.people.n_foreign == 0
    assert _digest(sim) == GOLDEN


@pytest.fixture(scope="module")
def sim() -> Simulation:
    sc = with_foreign(load_scenario("astana"), arrivals_per_year=150_000 * 40, local_sim_share=0.5,
                      dual_sim_share=0.3)
    return simulate(sc, scale=0.001, days=20, seed=4)


@pytest.fixture(scope="module")
def pings(sim: Simulation) -> dict[str, np.ndarray]:
    chunks = list(sim.hours())
    return {k: np.concatenate([getattr(c, k) for c in chunks]) for k in ("device", "ts_ms")}


def test_with_foreign_turns_the_example_on() -> None:
    for name in ("astana", "kz"):
        sc = with_foreign(load_scenario(name))
        assert sc.foreign is not None and "\n[foreign]\n" in sc.text
        assert sum(sc.foreign.stays.values()) == pytest.approx(1.0)
        assert parse_scenario(sc.text, "again.toml").foreign == sc.foreign  # written files keep it
    plain = load_scenario("astana")
    bare = plain.text.replace("#~ ", "# ")
    with pytest.raises(ValueError, match="no example"):
        with_foreign(parse_scenario(bare, "bare.toml"))


def test_the_same_seed_gives_the_same_visitors(sim: Simulation, pings: dict[str, np.ndarray]) -> None:
    again = simulate(sim.scenario, scale=0.001, days=20, seed=4)
    assert again.foreign is not None and sim.foreign is not None
    assert np.array_equal(again.foreign.arrive_ms, sim.foreign.arrive_ms)
    first = next(iter(again.hours()))
    n = len(first)
    assert np.array_equal(first.ts_ms, pings["ts_ms"][:n])


def test_stays_have_the_configured_lengths_and_origins(sim: Simulation) -> None:
    f, p = sim.foreign, sim.scenario.foreign
    assert f is not None and p is not None
    kinds = np.bincount(f.kind, minlength=4)
    assert (kinds > 0).all()
    length_d = (f.depart_ms - f.arrive_ms) / DAY_MS
    for i, name in enumerate(FOREIGN_KINDS[1:], start=1):
        lo, hi = p.days(name)
        assert (length_d[f.kind == i] >= lo - 1e-9).all() and (length_d[f.kind == i] <= hi).all()
    local_h = ((f.arrive_ms[f.kind == 0] + 5 * HOUR_MS) % DAY_MS) / HOUR_MS
    leave_h = local_h + length_d[f.kind == 0] * 24
    assert (local_h >= 6).all() and (local_h <= 12).all() and (leave_h <= 20).all()
    assert ((f.depart_ms - f.arrive_ms)[f.kind == 0] >= 2 * HOUR_MS).all()
    assert (f.mcc != 401).all() and (sim.device_home_mcc[f.device] == f.mcc).all()
    assert ((f.depart_ms > sim.start_ms) & (f.arrive_ms < sim.end_ms)).all()
    assert (f.arrive_ms < sim.start_ms).any()  # long-stayers who came before the run
    switch = f.switch_ms >= 0
    assert switch.any() and (f.kind[switch] >= 2).all() and (f.dual <= switch).all()
    assert ((f.switch_ms[switch] > f.arrive_ms[switch]) & (f.switch_ms[switch] < f.depart_ms[switch])).all()
    assert (sim.device_home_mcc[f.local_device[switch]] == 401).all()
    assert (f.local_device[~switch] == -1).all()
    assert (sim.device_person[f.device] == f.person).all()


def test_sims_ping_only_while_in_use(sim: Simulation, pings: dict[str, np.ndarray]) -> None:
    f = sim.foreign
    assert f is not None
    dev, ts = pings["device"], pings["ts_ms"]
    arrive = np.full(sim.n_devices, np.iinfo(np.int64).min)
    until = np.full(sim.n_devices, np.iinfo(np.int64).max)
    arrive[f.device], until[f.device] = f.arrive_ms, f.depart_ms
    quiet = (f.switch_ms >= 0) & ~f.dual
    until[f.device[quiet]] = f.switch_ms[quiet]
    local = f.local_device >= 0
    arrive[f.local_device[local]] = f.switch_ms[local]
    until[f.local_device[local]] = f.depart_ms[local]
    assert ((ts >= arrive[dev]) & (ts < until[dev])).all()
    dual_switch = np.full(sim.n_devices, np.iinfo(np.int64).max)
    dual_switch[f.device[f.dual]] = f.switch_ms[f.dual]
    assert (ts >= dual_switch[dev]).any()  # dual-SIM phones: the foreign SIM goes on pinging
    assert np.isin(f.local_device[local], dev).any()


def test_truth_counts_foreign_visitors_as_present(sim: Simulation) -> None:
    p = sim.people
    chunk = next(iter(sim.hours()))
    t = chunk.start_ms + HOUR_MS
    here = int(((p.arrive_ms <= t) & (p.depart_ms > t)).sum())
    top = [r.id for r in sim.scenario.regions if r.parent is None]
    assert sum(chunk.truth_end[r]["present"] for r in top) == p.n_residents + here
    assert sum(chunk.truth_end[r]["resident"] for r in top) == p.n_residents


def test_nights_and_days_of_a_stay() -> None:
    def at(day: int, hour: float) -> int:
        return int((20514 + day) * DAY_MS + (hour - 5) * HOUR_MS)  # local hour, UTC+5

    cases = [((0, 10), (0, 18), 0), ((0, 21), (1, 7), 1), ((0, 23), (0, 23.5), 1),
             ((0, 10), (3, 10), 3), ((0, 10), (0, 22), 0), ((0, 10), (0, 22.01), 1),
             ((0, 6), (0, 7), 0), ((0, 5), (0, 7), 1)]
    a = np.array([at(*c[0]) for c in cases])
    d = np.array([at(*c[1]) for c in cases])
    assert night_count(a, d, 5).tolist() == [c[2] for c in cases]
    # a day runs from 06:00 to 06:00
    assert day_index(np.array([at(0, 6), at(0, 5.99), at(1, 5.99)]), 5).tolist() == [
        20514, 20513, 20514]


def test_truth_per_period_balances(sim: Simulation) -> None:
    stays = visitor_stays(sim)
    assert stays.person.size == sim.people.n_people - sim.people.n_residents
    assert (stays.kind >= 0).sum() == sim.people.n_foreign
    truth = foreign_truth(sim, "week", stays)
    weeks = sorted({k[1] for k in truth["stock"]})
    assert len(weeks) >= 2
    for mcc in np.unique(stays.mcc).tolist():
        def total(name: str, week: int, m: int = mcc) -> int:
            return sum(v for k, v in truth[name].items() if k[0] == m and k[1] == week)
        for before, week in itertools.pairwise(weeks):
            assert (total("stock", week) - total("stock", before)
                    == total("arrivals", week) - total("departures", week)), (mcc, week)


@pytest.mark.parametrize(("block", "match"), [
    ("[foreign]\narrivals_per_year = 10\nstays = { holiday = 1.0 }\n", r"foreign\.stays: kinds"),
    ("[foreign]\narrivals_per_year = 10\nstays = { short = 0.5 }\n", r"foreign\.stays: weights"),
    ("[foreign]\narrivals_per_year = -1\nstays = { short = 1.0 }\n", r"foreign\.arrivals_per_year"),
    ("[foreign]\narrivals_per_year = 10\nstays = { short = 1.0 }\nshort_days = [5, 2]\n",
     r"foreign\.short_days: must be \[min, max\]"),
    ("[foreign]\narrivals_per_year = 10\nstays = { short = 1.0 }\nto = { mars = 1.0 }\n",
     r"foreign\.to: unknown region 'mars'"),
    ("[foreign]\narrivals_per_year = 10\nstays = { short = 1.0 }\nhome_mcc = { \"401\" = 1.0 }\n",
     r"foreign\.home_mcc: keys must be foreign"),
    ("[foreign]\narrivals_per_year = 10\nstays = { short = 1.0 }\ncolour = 1\n",
     r"foreign\.colour: unknown field"),
])
def test_bad_foreign_sections_are_one_line_errors(block: str, match: str) -> None:
    text = load_scenario("astana").text
    at = text.index("# ---- Astana (republican city)")
    with pytest.raises(ValueError, match=match) as info:
        parse_scenario(text[:at] + block + text[at:], "astana.toml")
    assert "\n" not in str(info.value)
