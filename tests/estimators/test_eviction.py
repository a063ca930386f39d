"""Device eviction: rows held follow the devices the figures can use, not every device ever seen,
and eviction changes no figure and no agreement between batchings (fault case 13).

Fault 13: after 30 days at 20 %/day churn, 135 k rows were held for 19.5 k active devices.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from estimators.engine import Engine, EngineConfig
from estimators.migration import MigrationConfig
from estimators.presence import night_of
from estimators.regions import regions_from_geojson
from estimators.tally import Tally
from estimators.units import DAY_MS, HOUR_MS, MINUTE_MS
from stream.decode.validate import PingBatch
from stream.estimate.windows import EventTimeWindows, WindowSettings

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
PLACES = np.array([(51.15, 71.45), (51.05, 71.45), (50.7, 71.0)])  # north, south, rural


def _churn(rng: np.random.Generator, days: int, active: int, churn: float,
           back_after: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Pings of a steady population: ``active`` devices a day, a share ``churn`` of them new
    each day (and as many gone). Each device pings at night (23:00 Almaty) at home and at noon
    at work. With ``back_after`` = (lo, hi), a fifth of the departed devices come back for a
    week after lo..hi days of silence. Pings in time order (ties by device)."""
    n_dev = active + int(active * churn * days) + 1
    start = np.r_[np.zeros(active, np.int64), 1 + np.arange(n_dev - active) // max(
        int(active * churn), 1)]
    life = rng.geometric(churn, n_dev)
    home, work = rng.integers(0, 3, n_dev), rng.integers(0, 3, n_dev)
    spans = [(np.arange(n_dev), start, np.minimum(start + life, days))]
    if back_after is not None:
        back = np.flatnonzero((rng.random(n_dev) < 0.2) & (start + life < days))
        again = start[back] + life[back] + rng.integers(back_after[0], back_after[1] + 1, back.size)
        spans.append((back, again, np.minimum(again + 7, days)))
    dev, day = [], []
    for who, lo, hi in spans:
        n = np.maximum(hi - lo, 0)
        dev.append(np.repeat(who, n))
        day.append(np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    dev, day = np.concatenate(dev), np.concatenate(day)
    night = T0 + day * DAY_MS + 18 * HOUR_MS + rng.integers(0, 60, dev.size) * MINUTE_MS
    noon = T0 + day * DAY_MS + 7 * HOUR_MS + rng.integers(0, 60, dev.size) * MINUTE_MS
    ts = np.r_[night, noon]
    place = np.r_[home[dev], work[dev]]
    dev = np.r_[dev, dev]
    order = np.lexsort((dev, ts))
    lat = PLACES[place[order], 0] + rng.normal(0, 0.01, dev.size)
    lon = PLACES[place[order], 1] + rng.normal(0, 0.01, dev.size)
    return {"key": (dev[order] + 1).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15),
            "ts": ts[order], "lat": lat, "lon": lon}


def _replay(engine: Engine, pings: dict[str, np.ndarray], every_ms: int = HOUR_MS,
            chunk: int = 5_000) -> dict[int, bytes]:
    """Tallies (bytes) by window end, pings fed through the event-time windows in chunks."""
    out: dict[int, bytes] = {}
    windows = EventTimeWindows(engine, WindowSettings(every_ms=every_ms, max_jump_ms=7 * DAY_MS),
                               on_window=lambda b: out.__setitem__(b, engine.tally(b).to_bytes()))
    loc = engine.cells.locate_latlng(pings["lat"], pings["lon"])
    n = len(pings["ts"])
    for lo in range(0, n, chunk):
        s = slice(lo, lo + chunk)
        windows.feed(PingBatch(pings["key"][s], pings["ts"][s], np.zeros(len(loc[s]), np.uint8),
                               loc[s], row=np.arange(lo, min(lo + chunk, n))), str)
    windows.finish()
    assert windows.stats.rejected == {}
    return out


def _engine(regions_doc: dict[str, Any], migration: bool = True, evict: bool = True) -> Engine:
    config = EngineConfig(res=8, migration=MigrationConfig() if migration else None, evict=evict)
    return Engine(regions_from_geojson(regions_doc), config)


def _held_rule(engine: Engine, pings: dict[str, np.ndarray], at_ms: int, night: int
               ) -> tuple[int, int]:
    """(devices seen within the retention, devices seen ever) at ``at_ms``: what the rule must
    keep at most (plus those with a usual residence, kept longer), what it started from."""
    keys, first = np.unique(pings["key"][::-1], return_index=True)
    last = pings["ts"][::-1][first]
    _, last_night, _ = night_of(last, 18_000, engine.config.night)
    ring, _ = engine.retention_nights()
    recent = (last > at_ms - engine.config.estimate.activity_ms) | (last_night > night - ring)
    return int(recent.sum()), len(keys)


def test_presence_eviction_holds_the_recent_devices_and_changes_no_figure(
        regions_doc: dict[str, Any]) -> None:
    """Without migration: 40 days at 20 %/day churn, departed devices coming back after 1-3
    weeks. Evicting engine and one that keeps everything publish identical tallies at every
    hour; the evicting one holds about the devices of the last week (the night record's), not
    the 2,700 seen."""
    pings = _churn(np.random.default_rng(1), 40, 300, 0.2, back_after=(1, 21))
    kept = _engine(regions_doc, migration=False, evict=False)
    evicting = _engine(regions_doc, migration=False)
    want = _replay(kept, pings)
    got = _replay(evicting, pings)
    assert got == want and len(got) >= 39 * 24
    end = max(got)
    night = int(night_of(np.array([end - 1]), 18_000, kept.config.night)[1][0])
    recent, ever = _held_rule(evicting, pings, end, night)
    assert kept.state.n_devices == ever > 2_500
    assert evicting.evicted > 0
    assert recent <= evicting.state.n_devices <= recent + 300  # at most a day's departures more
    assert evicting.state.n_devices < ever / 2


def test_migration_eviction_agrees_across_batchings_and_windows(regions_doc: dict[str, Any]) -> None:
    """With migration (evicted after 28 nights without a usual residence, 58 with one): 100 days
    of churn, hourly windows in chunks of 5,000 and 4-hourly windows in chunks of 777 give the
    same tallies (present, resident, migration) at common instants and hold the same rows;
    with no device coming back after 58 nights, the same as keeping every device."""
    pings = _churn(np.random.default_rng(2), 100, 200, 0.05, back_after=(20, 40))
    hourly = _engine(regions_doc)
    a = _replay(hourly, pings)
    coarse = _engine(regions_doc)
    b = _replay(coarse, pings, every_ms=4 * HOUR_MS, chunk=777)
    kept = _engine(regions_doc, evict=False)
    c = _replay(kept, pings, every_ms=4 * HOUR_MS)
    assert len(b) >= 99 * 6 and all(b[t] == a[t] for t in b if t <= max(a))
    assert b == c
    assert hourly.state.n_devices == coarse.state.n_devices < kept.state.n_devices
    assert hourly.evicted == coarse.evicted > 0
    assert hourly.migration is not None and kept.migration is not None
    assert np.array_equal(hourly.migration.stock(hourly.state.n_devices),
                          kept.migration.stock(kept.state.n_devices))


@pytest.mark.parametrize("silent, forgotten", [(40, False), (57, False), (75, True)])
def test_a_device_back_after_the_retention_is_new(regions_doc: dict[str, Any], silent: int,
                                                  forgotten: bool) -> None:
    """A device with a usual residence, silent for ``silent`` nights: kept up to lapse + window
    (58) nights, reactivated with its residence when it pings again; forgotten after that, and
    housed afresh when it is back (never reactivated, never a mover)."""
    engine = _engine(regions_doc)
    north = engine.regions.index["north"]
    nights = [d for d in range(30)] + [d for d in range(30 + silent, 45 + silent)]
    ts = T0 + np.array(nights, dtype=np.int64) * DAY_MS + 18 * HOUR_MS
    pings = {"key": np.full(len(ts), 77, np.uint64), "ts": ts,
             "lat": np.full(len(ts), PLACES[0, 0]), "lon": np.full(len(ts), PLACES[0, 1])}
    # a second device pinging every day keeps the stream's time going
    other = T0 + np.arange(45 + silent + 2, dtype=np.int64) * DAY_MS + 12 * HOUR_MS
    pings = {k: np.r_[v, {"key": np.full(len(other), 5, np.uint64), "ts": other,
                          "lat": np.full(len(other), PLACES[2, 0]),
                          "lon": np.full(len(other), PLACES[2, 1])}[k]] for k, v in pings.items()}
    order = np.argsort(pings["ts"], kind="stable")
    pings = {k: v[order] for k, v in pings.items()}
    seen = {}
    for blob in _replay(engine, pings, every_ms=DAY_MS).values():
        tally = Tally.from_bytes(blob)
        assert tally.migration is not None
        seen.update({(p.kind, p.number): p for p in tally.migration.periods})
    total = {f: sum(getattr(p, f)[north] for p in seen.values() if p.kind == "week")
             for f in ("housed", "lapsed", "reactivated")}
    assert engine.evicted == int(forgotten)
    if forgotten:
        assert total == {"housed": 2, "lapsed": 1, "reactivated": 0}
    else:
        assert total == {"housed": 1, "lapsed": 1, "reactivated": 1}


def test_evicted_rows_compact_the_migration_state_in_step(regions_doc: dict[str, Any]) -> None:
    """The presence rows and the migration rows stay aligned through evictions: every device
    kept has the usual residence of its home (the one region it ever slept in)."""
    rng = np.random.default_rng(5)
    pings = _churn(rng, 70, 150, 0.1)
    engine = _engine(regions_doc)
    _replay(engine, pings, every_ms=6 * HOUR_MS)
    assert engine.evicted > 0 and engine.migration is not None
    n = engine.state.n_devices
    ur = engine.migration.usual_residence(n).astype(np.int64)
    night_place = {}
    for k, t, la in zip(pings["key"].tolist(), pings["ts"].tolist(), pings["lat"].tolist(),
                        strict=True):
        if (t // HOUR_MS) % 24 == 18:
            night_place[k] = int(np.argmin(np.abs(PLACES[:, 0] - la)))
    names = ["north", "south", "rural"]
    keys = engine.state.index.keys[:n].tolist()
    with_ur = [(k, u) for k, u in zip(keys, ur.tolist(), strict=True) if u >= 0]
    assert len(with_ur) > 50
    for k, u in with_ur:
        assert engine.regions.ids[u] == names[night_place[k]]


def test_recording_events_keeps_every_device(regions_doc: dict[str, Any]) -> None:
    """Benchmarks that record events by device row keep their rows (no eviction)."""
    engine = Engine(regions_from_geojson(regions_doc), replace(EngineConfig(res=8)),
                    record_migration=True)
    pings = _churn(np.random.default_rng(3), 70, 100, 0.1)
    _replay(engine, pings, every_ms=DAY_MS)
    assert engine.evicted == 0
    assert engine.state.n_devices == len(np.unique(pings["key"]))
