"""Kept home regions (PresenceState.home) against the full recount (home_region), exactly.

Random streams of night and day pings, fed in arrival order in random batch sizes with some
pings late (within hours, and a few days late into nights already summarized); at every hourly
tally the kept path must give what the full recount gives, through night boundaries, eviction
and checkpoint restore (with the summaries, and without them as older checkpoints are).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from estimators.calibration import N_CLASSES
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig, tally_state
from estimators.migration import MigrationConfig
from estimators.presence import ROAMER, NightWindow, PresenceState, current_night
from estimators.regions import regions_from_geojson
from estimators.routine import (
    mover_rows,
    stayer_codes,
    stayer_columns,
    unhoused_codes,
    unhoused_columns,
)
from estimators.tally import Tally
from estimators.units import DAY_MS, HOUR_MS
from estimators.warmup import observation_start

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
OFFSET_S = 18_000  # UTC+5


def _stream(rng: np.random.Generator, n_dev: int, days: int, n_regions: int
            ) -> tuple[np.ndarray, ...]:
    """Pings of ``n_dev`` devices over ``days`` days: stable sleepers, split sleepers and
    devices sleeping anywhere; (key, ts, arrival, loc), sorted by arrival."""
    keys = rng.integers(1, 2**63, size=n_dev, dtype=np.uint64)
    kind = rng.choice(3, size=n_dev, p=[0.6, 0.25, 0.15])
    home = rng.integers(0, n_regions, size=n_dev)
    other = (home + rng.integers(1, n_regions, size=n_dev)) % n_regions
    n = n_dev * days * 3
    dev = rng.integers(0, n_dev, size=n)
    ts = T0 + rng.integers(0, days * DAY_MS, size=n)
    night = ((ts // HOUR_MS + 5) % 24 >= 22) | ((ts // HOUR_MS + 5) % 24 < 6)
    split = rng.random(n) < 0.4
    region = np.where(kind[dev] == 0, home[dev],
                      np.where(kind[dev] == 1, np.where(split, other[dev], home[dev]),
                               rng.integers(0, n_regions, size=n)))
    region = np.where(night | (rng.random(n) < 0.3), region, rng.integers(0, n_regions, size=n))
    delay = np.where(rng.random(n) < 0.05, rng.integers(0, 6 * HOUR_MS, size=n), 0)
    delay = np.where(rng.random(n) < 0.003, rng.integers(0, 4 * DAY_MS, size=n), delay)
    arrival = ts + delay
    order = np.argsort(arrival, kind="stable")
    return keys[dev][order], ts[order], arrival[order], region[order]


def _check(st: PresenceState, at_ms: int) -> None:
    night = current_night(at_ms, OFFSET_S, st.window)
    for min_nights in (1, 2):
        st.chunk = 7 if min_nights == 2 else 1 << 18  # in parts or at once: the same
        kept = st.home(night, min_nights)
        full = st.home_region(night, min_nights)
        assert np.array_equal(kept, full), (night, min_nights, np.flatnonzero(kept != full)[:5])


@pytest.mark.parametrize(("nights", "ring", "seed"),
                         [(7, None, 1), (7, 28, 2), (3, None, 3), (2, 5, 4), (1, None, 5),
                          (7, 8, 6)])
def test_kept_home_equals_the_full_recount_at_every_tally(nights: int, ring: int | None,
                                                          seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_regions = 5
    key, ts, arrival, region = _stream(rng, 300, 16, n_regions)
    loc_region = np.arange(n_regions, dtype=np.int32)
    window = NightWindow(22, 8, nights)
    st = PresenceState(n_regions, window, ring_nights=ring)
    opc = np.zeros(len(key), dtype=np.uint8)
    pos = 0
    checked = restored = evicted = 0
    for at in range(T0 + HOUR_MS, T0 + 17 * DAY_MS, HOUR_MS):
        stop = int(np.searchsorted(arrival, at, side="right"))
        # the hour's pings in a few random batches
        cuts = np.sort(rng.integers(pos, stop + 1, size=rng.integers(0, 4)))
        for lo, hi in zip(np.r_[pos, cuts], np.r_[cuts, stop], strict=True):
            st.update(key[lo:hi], ts[lo:hi], opc[lo:hi], region[lo:hi], loc_region, OFFSET_S)
        pos = stop
        _check(st, at)
        checked += 1
        draw = rng.random()
        if draw < 0.03:  # a checkpoint, with the summaries or as an older version without them
            arrays = st.export()
            if rng.random() < 0.5:
                arrays = {k: v for k, v in arrays.items() if not k.startswith("home_sum")}
            st = PresenceState(n_regions, window, ring_nights=ring)
            st.restore(arrays)
            restored += 1
        elif draw < 0.06:  # eviction of some devices
            st.evict(rng.random(st.n_devices) < 0.05)
            evicted += 1
        elif draw < 0.08:  # a query for another night answers like the full recount too
            other = current_night(at, OFFSET_S, window) + int(rng.integers(-3, 3))
            assert np.array_equal(st.home(other), st.home_region(other))
    assert checked > 300 and restored and evicted


def test_kept_home_follows_a_gap_and_a_first_query_late() -> None:
    """Nights without tallies (pings keep coming) and a first query after many nights."""
    rng = np.random.default_rng(9)
    n_regions = 4
    key, ts, arrival, region = _stream(rng, 200, 20, n_regions)
    loc_region = np.arange(n_regions, dtype=np.int32)
    window = NightWindow(22, 8, 7)
    st = PresenceState(n_regions, window)
    opc = np.zeros(len(key), dtype=np.uint8)
    pos = 0
    for day in (3, 4, 11, 12, 19):  # tallies on a few days only
        for hour in (2, 13, 23):
            at = T0 + day * DAY_MS + hour * HOUR_MS
            stop = int(np.searchsorted(arrival, at, side="right"))
            st.update(key[pos:stop], ts[pos:stop], opc[pos:stop], region[pos:stop], loc_region,
                      OFFSET_S)
            pos = stop
            _check(st, at)


# --- the engine's tallies: byte-identical to the tally as it was before the kept home regions


def _tally_state_before(state: PresenceState, loc_cell: np.ndarray, loc_region: np.ndarray,
                        operators: tuple[str, ...], at_ms: int, utc_offset_s: int,
                        config: EstimateConfig) -> Tally:
    """``estimators.estimate.tally_state`` before the kept home regions (verbatim)."""
    ts, loc = state.last_seen()
    cls = state.opclass[: state.n_devices].astype(np.int64)
    age_ms = at_ms - ts
    active = (age_ms >= 0) & (age_ms < config.activity_ms)
    present = active & (age_ms < config.horizon_ms)
    home = state.home_region(current_night(at_ms, utc_offset_s, state.window), config.min_nights)
    has_home = (home >= 0) & (cls != ROAMER)
    here = loc_region[loc].astype(np.int64) if len(loc) else np.zeros(0, dtype=np.int64)
    factor_region = np.where(has_home, home, here)
    p = np.flatnonzero(present)
    code = (loc[p] << 24) | (factor_region[p] << 8) | cls[p]
    uniq, p_count = np.unique(code, return_counts=True)
    p_loc, p_fr, p_cls = uniq >> 24, (uniq >> 8) & 0xFFFF, uniq & 0xFF
    r = np.flatnonzero(active & has_home)
    by_home = np.bincount(home[r] * 256 + cls[r], minlength=0) \
        if r.size else np.zeros(0, dtype=np.int64)
    r_code = np.flatnonzero(by_home)
    r_reg, r_cls, r_count = r_code // 256, r_code % 256, by_home[r_code]
    day = state.day_region(at_ms, config.routine_ms)
    extra = mover_rows(present & has_home, home, day, here, age_ms, cls)
    h = np.flatnonzero(present & has_home)
    extra |= stayer_columns(stayer_codes(home[h], day[h], here[h], age_ms[h]))
    u = np.flatnonzero(present & ~has_home & (cls != ROAMER))
    extra |= unhoused_columns(unhoused_codes(here[u], day[u], age_ms[u], cls[u]))
    return Tally(**extra,
        at_ms=at_ms, operators=tuple(operators),
        present_cell=np.asarray(loc_cell, dtype=np.uint64)[p_loc],
        present_region=np.asarray(loc_region, dtype=np.int32)[p_loc],
        present_factor_region=p_fr.astype(np.int32), present_cls=p_cls.astype(np.uint8),
        present_count=p_count,
        resident_region=r_reg.astype(np.int32), resident_cls=r_cls.astype(np.uint8),
        resident_count=r_count,
        n_active=np.bincount(cls[active], minlength=N_CLASSES).astype(np.int64),
        n_present=np.bincount(cls[present], minlength=N_CLASSES).astype(np.int64),
        n_housed=np.bincount(cls[active & has_home], minlength=N_CLASSES).astype(np.int64),
    )


def _tally_before(engine: Engine, at_ms: int) -> bytes:
    tally = _tally_state_before(engine.state, engine.cells.cell, engine.cells.region,
                                tuple(engine.operators), at_ms, engine._offset_at(at_ms),
                                engine.config.estimate)
    if engine.migration is not None:
        tally.migration = engine.migration.tally(engine.state.n_devices)
    tally.observed_from_ms = observation_start(engine.first_ping_ms)
    return tally.canonical().to_bytes()


PLACES = np.array([(51.15, 71.45), (51.05, 71.45), (50.7, 71.0), (51.12, 71.35)])


@pytest.mark.parametrize(("migration", "seed"), [(True, 21), (False, 22)])
def test_engine_tallies_are_byte_identical_to_the_full_recount(
        regions_doc: dict[str, Any], migration: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    config = EngineConfig(res=8, migration=MigrationConfig() if migration else None,
                          estimate=EstimateConfig(min_nights=2 if migration else 1))
    regions = regions_from_geojson(regions_doc)
    engine = Engine(regions, config)
    n_dev, days = 400, 12
    keys = rng.integers(1, 2**63, size=n_dev, dtype=np.uint64)
    home, work, alt = (rng.integers(0, len(PLACES), size=n_dev) for _ in range(3))
    split = rng.random(n_dev) < 0.3
    n = n_dev * days * 4
    dev = rng.integers(0, n_dev, size=n)
    # devices come and go: each is seen on a random run of days (so some are evicted)
    first = rng.integers(0, days, size=n_dev)
    ts = T0 + (first[dev] + rng.integers(0, 5, size=n)) * DAY_MS + rng.integers(0, DAY_MS, size=n)
    ts = np.where(rng.random(n) < 0.05, ts // HOUR_MS * HOUR_MS, ts)  # on the window edges
    keep = ts < T0 + days * DAY_MS
    dev, ts = dev[keep], ts[keep]
    local_h = ((ts // HOUR_MS) + 5) % 24
    night = (local_h >= 22) | (local_h < 6)
    place = np.where(night, np.where(split[dev] & (rng.random(dev.size) < 0.4), alt[dev],
                                     home[dev]), work[dev])
    lat = PLACES[place, 0] + rng.normal(0, 0.01, dev.size)
    lon = PLACES[place, 1] + rng.normal(0, 0.01, dev.size)
    opc = (dev % 2).astype(np.uint8)
    arrival = ts + np.where(rng.random(dev.size) < 0.1, rng.integers(0, HOUR_MS, dev.size), 0)
    order = np.argsort(arrival, kind="stable")
    key, ts, lat, lon, opc, arrival = (a[order] for a in (keys[dev], ts, lat, lon, opc, arrival))
    pos, compared, restored, evicted = 0, 0, 0, 0
    for at in range(T0 + HOUR_MS, T0 + days * DAY_MS, HOUR_MS):
        stop = int(np.searchsorted(arrival, at, side="right"))
        cuts = np.sort(rng.integers(pos, stop + 1, size=rng.integers(0, 3)))
        for lo, hi in zip(np.r_[pos, cuts], np.r_[cuts, stop], strict=True):
            if hi > lo:
                loc = engine.cells.locate_latlng(lat[lo:hi], lon[lo:hi])
                engine.ingest(key[lo:hi], ts[lo:hi], opc[lo:hi], loc)
        pos = stop
        engine.evaluate_nights_until(at)
        before = _tally_before(engine, at)
        if rng.random() < 0.2:  # counting in chunks changes nothing
            args = (engine.state, engine.cells.cell, engine.cells.region,
                    tuple(engine.operators), at, engine._offset_at(at), engine.config.estimate)
            chunked = tally_state(*args, chunk=int(rng.integers(1, 60))).to_bytes()
            assert chunked == tally_state(*args).to_bytes()
        assert engine.tally(at).to_bytes() == before, at
        compared += 1
        if rng.random() < 0.03:  # resume from a checkpoint (half of them of an older version)
            arrays = engine.export_state()
            if rng.random() < 0.5:
                arrays = {k: v for k, v in arrays.items() if not k.startswith("home_sum")}
            evicted += engine.evicted
            engine = Engine(regions, config)
            engine.restore_state(arrays)
            restored += 1
    assert compared == days * 24 - 1 and restored
    assert migration or evicted + engine.evicted  # (with migration, 28 silent nights are needed)
