"""Stays of foreign SIMs against the simulator's truth, with looser bounds than the benchmark
prints (``bench/foreign.py``): arrivals and departures per country and month, the stock by class
at period ends, the classes of completed stays, and the bounded double count of a visitor who
switches to a local SIM."""

from __future__ import annotations

import dataclasses

import numpy as np

from estimators.foreign import ForeignPeriod, ForeignState, ZoneClock
from estimators.regions import regions_from_geojson
from estimators.units import HOUR_MS
from stream.simulator import foreign_truth, load_scenario, simulate, visitor_stays, with_foreign
from stream.simulator.foreign import day_index, night_count, true_class
from stream.sources.mcc_table import load_mcc_table
from stream.sources.simulation import SimulationFeed

SECRET = b"test-foreign-accuracy-secret-0123"


def test_stays_arrivals_departures_and_classes_match_the_truth() -> None:
    from estimators.engine import Engine, EngineConfig

    sc = with_foreign(load_scenario("astana"), arrivals_per_year=150_000 * 200,
                      local_sim_share=0.5, dual_sim_share=0.0)
    sim = simulate(sc, scale=0.0005, days=66, seed=5)  # March 2 to May 7: April settles
    regions = regions_from_geojson(sim.regions_geojson)
    engine = Engine(regions, EngineConfig(migration=None))
    feed = SimulationFeed(sim, engine, SECRET)
    table = load_mcc_table()
    fs = ForeignState(len(regions.ids), table, ZoneClock("Asia/Almaty"), record=True)
    roaming = sim.device_home_mcc != 401
    settled: dict[tuple[str, int], ForeignPeriod] = {}
    assert engine.plan is not None
    for chunk in sim.hours():
        keep = roaming[chunk.device]
        loc = feed.locations(chunk)[keep]
        ts = chunk.ts_ms[keep]
        fs.ingest(feed.keys[chunk.device[keep]], ts, sim.device_home_mcc[chunk.device[keep]],
                  engine.cells.region[loc], engine.utc_offset_s(ts))
        fs.evaluate_until(chunk.start_ms + HOUR_MS)
        for p in fs.tally().periods:
            if p.settled and p.complete:  # not the week the data began in
                settled.setdefault((p.kind, p.number), p)
    april = next(p for (kind, _), p in settled.items() if kind == "month" and p.label == "2026-04")
    stays = visitor_stays(sim)
    truth = foreign_truth(sim, "month", stays)
    codes = table.countries
    checked = 0
    for name in ("arrivals", "departures"):
        est = getattr(april, name).sum(axis=tuple(range(1, getattr(april, name).ndim)))
        for c, code in enumerate(codes):
            true = sum(v for k, v in truth[name].items()
                       if k[1] == april.number and table.codes([k[0]])[0] == code)
            if true >= 100:
                checked += 1
                assert abs(est[c] - true) <= 0.15 * true, (name, code, true, est[c])  # bench: 10 %
    assert checked >= 6
    # the stock by class at the end of April and of each settled week, against the foreign
    # SIMs' stays as seen from the start (a SIM quiet after a switch has left)
    cut = (stays.switch_ms >= 0) & ~stays.dual
    sims = dataclasses.replace(stays, depart_ms=np.where(cut, stays.switch_ms, stays.depart_ms))
    for kind in ("month", "week"):
        seen = foreign_truth(sim, kind, sims, sim.start_ms)["stock"]
        est_tot, true_tot = np.zeros(4), np.zeros(4)
        for (k, number), p in settled.items():
            if k == kind:
                est_tot += p.stock.sum(axis=(0, 1))
                for key, v in seen.items():
                    if key[1] == number:
                        true_tot[key[2]] += v
        assert true_tot[1:3].min() >= 100
        err = np.abs(est_tot - true_tot)[1:3] / true_tot[1:3]
        assert (err <= 0.12).all(), (kind, est_tot, true_tot)  # bench: 2-6 %
    # classes of completed stays of visitors who keep their foreign SIM
    dep = fs.events()["departure"]
    order = np.argsort(feed.keys)
    at = np.minimum(np.searchsorted(feed.keys[order], dep["key"].astype(np.uint64)), order.size - 1)
    device = order[at]
    stay_of = np.full(sim.n_devices, -1)
    stay_of[stays.device] = np.arange(stays.person.size)
    s = stay_of[device]
    off = sim.scenario.utc_offset_h
    whole = ((day_index(stays.arrive_ms, off) > day_index(np.array([sim.start_ms]), off)[0])
             & (stays.depart_ms < sim.end_ms - 5 * 24 * HOUR_MS) & (stays.switch_ms < 0))
    once = np.bincount(s[s >= 0], minlength=stays.person.size) == 1
    pick = (s >= 0) & whole[np.maximum(s, 0)] & once[np.maximum(s, 0)]
    est_class = np.searchsorted([1, 30, 90], dep["nights"][pick], side="right")
    true_cls = true_class(night_count(stays.arrive_ms, stays.depart_ms, off))[s[pick]]
    assert pick.sum() >= 500
    assert np.mean(est_class == true_cls) >= 0.9  # bench: 97 %
    # a switcher's foreign SIM leaves the stock once its 72 h of silence are over
    quiet = np.flatnonzero(cut)
    assert quiet.size >= 20
    rows = fs.presence.index.lookup(feed.keys[stays.device[quiet]])
    gone = stays.switch_ms[quiet] < sim.end_ms - 4 * 24 * HOUR_MS
    assert not fs.arrays["open"][rows[gone & (rows >= 0)]].any()
