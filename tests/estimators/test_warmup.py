"""Warm-up: how long an engine has observed, kept in checkpoints, merged across partitions, and
the figures and alerts it gates (issue 13, warm-up state)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from estimators.alerts import GapAlert
from estimators.engine import Engine, EngineConfig
from estimators.foreign import ForeignConfig
from estimators.mcc import CountryTable
from estimators.regions import regions_from_geojson
from estimators.tally import Tally, merge_tallies
from estimators.units import HOUR_MS, MINUTE_MS
from stream.publish.metrics import WorkerMetrics
from stream.publish.snapshot import engine_snapshot, gap_alerts

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z, 05:00 in Almaty; nights 22:00-06:00 = 17:00-01:00Z
NORTH = (51.15, 71.45)


def _engine(regions_doc: dict[str, Any], nights: int = 1) -> Engine:
    return Engine(regions_from_geojson(regions_doc),
                  EngineConfig(res=8, migration=None, warmup_nights=nights))


def _pings(start_ms: int, hours: int, devices: int = 40, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray]:
    """Every device pings once an hour at a random minute, from ``start_ms`` for ``hours``:
    (device keys, times)."""
    rng = np.random.default_rng(seed)
    key = np.tile(np.arange(1, devices + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15),
                  hours)
    ts = (start_ms + np.repeat(np.arange(hours), devices) * HOUR_MS
          + rng.integers(0, 60, key.size) * MINUTE_MS)
    return key, ts.astype(np.int64)


def _feed(engine: Engine, pings: tuple[np.ndarray, np.ndarray], order: np.ndarray | None = None,
          chunk: int = 10_000, until_ms: int | None = None) -> None:
    """Ingest the pings (all in the north district), those before ``until_ms`` only."""
    key, ts = pings
    cls = np.zeros(key.size, np.uint8)
    loc = engine.cells.locate_latlng(np.full(key.size, NORTH[0]), np.full(key.size, NORTH[1]))
    idx = np.arange(len(ts)) if order is None else order
    if until_ms is not None:
        idx = idx[ts[idx] < until_ms]
    for lo in range(0, len(idx), chunk):
        s = idx[lo:lo + chunk]
        engine.ingest(key[s], ts[s], cls[s], loc[s])


def test_nothing_observed_is_warming_with_unknown_ready_times(regions_doc: dict[str, Any]) -> None:
    w = _engine(regions_doc).warm_up(T0)
    assert (w.present, w.resident, w.present_ready_ms, w.resident_ready_ms) == (True, True, None,
                                                                                 None)
    assert _engine(regions_doc).tally(T0).observed_from_ms is None


def test_observation_start_is_the_earliest_ping_whatever_the_batching(
        regions_doc: dict[str, Any]) -> None:
    one = _engine(regions_doc)
    pings = _pings(T0 + 20 * MINUTE_MS, 30)
    _feed(one, pings)
    other = _engine(regions_doc)
    _feed(other, pings, np.random.default_rng(5).permutation(len(pings[1])), chunk=333)
    first = int(pings[1].min())
    assert one.first_ping_ms == other.first_ping_ms == first
    assert one.tally(T0 + 30 * HOUR_MS).observed_from_ms == T0  # its hour
    assert one.tally(T0 + 30 * HOUR_MS).to_bytes() == other.tally(T0 + 30 * HOUR_MS).to_bytes()


@pytest.mark.parametrize("start_h, night_h", [
    (0, 25),   # 05:00 local: the first whole night 22:00-06:00 closes 25 h later
    (18, 31),  # 23:00 local, inside a night: that one is partial, the next closes 31 h later
    (12, 13),  # 17:00 local: the night closes 13 h later, before the activity window is observed
])
def test_present_needs_the_activity_window_and_resident_a_whole_night(
        regions_doc: dict[str, Any], start_h: int, night_h: int) -> None:
    resident_h = max(night_h, 24)
    engine = _engine(regions_doc)
    start = T0 + start_h * HOUR_MS
    _feed(engine, _pings(start, 2))
    w = engine.warm_up(start + 23 * HOUR_MS)
    assert w.present and w.resident
    assert w.present_ready_ms == start + 24 * HOUR_MS
    assert w.resident_ready_ms == start + resident_h * HOUR_MS
    w = engine.warm_up(start + 24 * HOUR_MS)
    assert not w.present and w.resident == (resident_h > 24)
    w = engine.warm_up(start + resident_h * HOUR_MS)
    assert not w.present and not w.resident
    # more nights: each adds one; none: resident is warm with present
    assert _engine_fed(regions_doc, start, 3).warm_up(start).resident_ready_ms == \
        start + (night_h + 48) * HOUR_MS
    assert _engine_fed(regions_doc, start, 0).warm_up(start).resident_ready_ms == \
        start + 24 * HOUR_MS


def _engine_fed(regions_doc: dict[str, Any], start: int, nights: int) -> Engine:
    engine = _engine(regions_doc, nights)
    _feed(engine, _pings(start, 1))
    return engine


NIGHT = T0 // (24 * HOUR_MS)  # the night of 2026-03-02's evening (closes 01:00Z on the 3rd)


@pytest.mark.parametrize("start_h, first_whole, arrivals", [
    # 05:00 local: the 2nd's night is the first whole one; +72 h is 00:00Z on the 5th, after
    # the close of the 3rd's night (01:00Z on the 4th), before the 4th's (01:00Z on the 5th):
    # the arrivals of the 5th's night are the first all later than that
    (0, 0, 3),
    # 23:00 local, inside the 2nd's night: the 3rd's is the first whole; +72 h is 18:00Z on
    # the 5th, after the 5th's night began: the 6th's night is the first
    (18, 1, 4),
    # 06:00 local, at a close: +72 h is the close of the 4th's night, whose next night is first
    (1, 0, 3),
])
def test_periods_are_warm_once_a_residence_window_and_the_stay_gap_are_observed(
        regions_doc: dict[str, Any], start_h: int, first_whole: int, arrivals: int) -> None:
    engine = Engine(regions_from_geojson(regions_doc), EngineConfig(res=8, foreign=ForeignConfig()),
                    countries=CountryTable.from_pairs([401, 250], ["KZ", "RU"]))
    assert engine.config.migration is not None
    start = T0 + start_h * HOUR_MS
    _feed(engine, _pings(start, 2))
    warm = engine.period_warm_up(engine.tally(start + 2 * HOUR_MS))
    window = engine.config.migration.window_nights
    confirm = engine.config.migration.confirm_nights
    assert warm.observed_from_ms == start
    ready = NIGHT + first_whole + 2 * window
    assert warm.relocations_from_night == ready
    assert warm.warming("relocations", ready - 1) and not warm.warming("relocations", ready)
    assert warm.confirmed_from_night == ready + confirm
    assert warm.warming("confirmed", ready + confirm - 1)
    assert not warm.warming("confirmed", ready + confirm)
    # a night's arrivals are the SIMs first seen since the previous close: all of them came
    # 72 h or more after the start from that night on
    assert engine.night_close_ms(warm.arrivals_from_night - 1) >= start + 72 * HOUR_MS
    assert engine.night_close_ms(warm.arrivals_from_night - 2) < start + 72 * HOUR_MS
    assert warm.arrivals_from_night == NIGHT + arrivals
    assert warm.warming("arrivals", NIGHT + arrivals - 1)
    assert not warm.warming("arrivals", NIGHT + arrivals)
    nothing = _engine(regions_doc).tally(T0)
    cold = engine.period_warm_up(nothing)
    assert all(cold.warming(f, NIGHT + 1000) for f in ("relocations", "confirmed", "arrivals"))


def test_merged_tallies_are_warm_only_when_every_part_is(regions_doc: dict[str, Any]) -> None:
    """Parts that started together (within 6 h) share the earliest start, as one engine fed all
    the pings has it; a part that started over later (a lost checkpoint) holds the sum back."""
    at = T0 + 40 * HOUR_MS

    def part(start_h: int) -> Tally:
        e = _engine(regions_doc)
        _feed(e, _pings(T0 + start_h * HOUR_MS, 40 - start_h, seed=start_h))
        return e.tally(at)

    empty = _engine(regions_doc).tally(at)  # a partition that has seen nothing: no say
    together = merge_tallies([part(0), part(5), empty])
    assert together.observed_from_ms == T0
    restarted = part(8)
    merged = merge_tallies([part(0), restarted, empty])
    assert merged.observed_from_ms == T0 + 8 * HOUR_MS
    assert merge_tallies([restarted, part(0)]).observed_from_ms == T0 + 8 * HOUR_MS
    assert merge_tallies([empty]).observed_from_ms is None
    engine = _engine(regions_doc)
    assert not engine.warm_up_tally(together).present
    assert engine.warm_up_tally(merged).present_ready_ms == T0 + 32 * HOUR_MS
    assert engine.warm_up_tally(replace(merged, at_ms=T0 + 31 * HOUR_MS)).present
    assert not engine.warm_up_tally(replace(together, at_ms=T0 + 31 * HOUR_MS)).present
    # kept by the binary form; a tally of an earlier version (no field) has no start
    assert Tally.from_bytes(merged.to_bytes()).observed_from_ms == T0 + 8 * HOUR_MS
    old = Tally.from_bytes(part(0).to_bytes().replace(b"observed_from", b"observed_frum"))
    assert old.observed_from_ms is None
    assert merge_tallies([old, restarted]).observed_from_ms == T0 + 8 * HOUR_MS


def test_checkpointed_state_keeps_its_observation(regions_doc: dict[str, Any]) -> None:
    engine = _engine(regions_doc)
    _feed(engine, _pings(T0 + 20 * MINUTE_MS, 30))
    state = engine.export_state()
    back = _engine(regions_doc)
    back.restore_state(state)
    assert back.first_ping_ms == engine.first_ping_ms
    assert back.tally(T0 + 30 * HOUR_MS).to_bytes() == engine.tally(T0 + 30 * HOUR_MS).to_bytes()
    fresh = _engine(regions_doc)
    fresh.restore_state(_engine(regions_doc).export_state())  # a state of nothing observed
    assert fresh.first_ping_ms is None


def test_a_checkpoint_of_an_earlier_version_is_observed_since_its_oldest_evidence(
        regions_doc: dict[str, Any]) -> None:
    """Without its start, a restored state counts from its oldest evidence: the devices' latest
    pings and the closes of their recorded nights. Never earlier than the real start (figures
    are never called warm too early); a state that has run for a week comes out warm."""
    engine = _engine(regions_doc)
    pings = _pings(T0 + 3 * HOUR_MS, 30)  # 08:00 local on; the first whole night at +25 h
    _feed(engine, pings)
    state = engine.export_state()
    del state["observed_from"]
    old = _engine(regions_doc)
    old.restore_state(state)
    assert old.first_ping_ms is not None and old.first_ping_ms >= engine.first_ping_ms
    assert old.first_ping_ms == T0 + 25 * HOUR_MS  # the night's close: its first night ping's
    assert old.warm_up(T0 + 33 * HOUR_MS).present
    week = _engine(regions_doc)
    _feed(week, _pings(T0, 8 * 24))
    state = week.export_state()
    del state["observed_from"]
    old = _engine(regions_doc)
    old.restore_state(state)
    w = old.warm_up(T0 + 8 * 24 * HOUR_MS)
    assert not w.present and not w.resident


def test_warming_snapshots_have_no_gap_and_hold_the_alerts(regions_doc: dict[str, Any]) -> None:
    engine = _engine(regions_doc)
    pings = _pings(T0, 30)
    _feed(engine, pings, until_ms=T0 + 10 * HOUR_MS)
    registry = {"city": 1000, "north": 1000}  # 40 people live there: a -96 % gap, far beyond
    cold = engine_snapshot(engine, T0 + 10 * HOUR_MS, registry)
    assert cold["warming_up"] == {"present": True, "resident": True,
                                  "observed_since": "2026-03-02T00:00:00Z",
                                  "present_ready_at": "2026-03-03T00:00:00Z",
                                  "resident_ready_at": "2026-03-03T01:00:00Z"}
    north = cold["regions"]["north"]
    assert north["resident"] == 40 and north["registered"] == 1000
    assert north["gap"] is north["gap_ratio"] is north["gap_ratio_lo"] is None
    assert north["warming_up"] == {"present": True, "resident": True}
    held = {"north": GapAlert("north", "north", "over", 1, 2, 0.5, 0.5, 0.1)}
    still, opened, closed = gap_alerts(held, cold, T0 + 10 * HOUR_MS, 0.1)
    assert (still, opened, closed) == (held, [], [])
    _feed(engine, pings, until_ms=T0 + 25 * HOUR_MS)  # again: the state is last-writer-wins
    warm = engine_snapshot(engine, T0 + 25 * HOUR_MS, registry)
    assert warm["warming_up"]["present"] is warm["warming_up"]["resident"] is False
    assert warm["regions"]["north"]["gap_ratio_hi"] < -0.9
    still, opened, closed = gap_alerts(held, warm, T0 + 25 * HOUR_MS, 0.1)
    assert [a.direction for a in closed] == ["over"] and [a.direction for a in opened] == [
        "under", "under"]  # city and north


def test_warm_up_gauges(regions_doc: dict[str, Any]) -> None:
    engine = _engine(regions_doc)
    pings = _pings(T0, 30)
    m = WorkerMetrics()

    def value(name: str, figure: str) -> float | None:
        return m.registry.get_sample_value(name, {"figure": figure})

    _feed(engine, pings, until_ms=T0 + 10 * HOUR_MS)
    m.show_snapshot(engine_snapshot(engine, T0 + 10 * HOUR_MS, {"north": 1000}), 0.0)
    assert value("defacto_warming_up", "present") == value("defacto_warming_up", "resident") == 1
    assert value("defacto_warming_up_remaining_seconds", "present") == 14 * 3600
    assert value("defacto_warming_up_remaining_seconds", "resident") == 15 * 3600
    assert m.registry.get_sample_value("defacto_gap_ratio", {"region": "north"}) is None
    _feed(engine, pings, until_ms=T0 + 24 * HOUR_MS)
    m.show_snapshot(engine_snapshot(engine, T0 + 24 * HOUR_MS, {"north": 1000}), 0.0)
    assert (value("defacto_warming_up", "present"), value("defacto_warming_up", "resident")) == (0, 1)
    _feed(engine, pings, until_ms=T0 + 25 * HOUR_MS)
    m.show_snapshot(engine_snapshot(engine, T0 + 25 * HOUR_MS, {"north": 1000}), 0.0)
    assert value("defacto_warming_up", "resident") == 0
    assert value("defacto_warming_up_remaining_seconds", "resident") == 0
    assert m.registry.get_sample_value("defacto_gap_ratio", {"region": "north"}) < -0.9


def test_partition_checkpoint_blobs_keep_the_observation(regions_doc: dict[str, Any]) -> None:
    """Through a partition's checkpoint blob (stream.estimate.checkpoint): the observation start
    survives a restore; a blob of an earlier version (no ``state_observed_from``) restores to
    the oldest evidence of its state; a partition without a checkpoint starts a new observation."""
    import io

    from stream.decode.validate import PingBatch
    from stream.estimate.partition import PartitionState
    from stream.estimate.windows import WindowSettings

    secret = b"warmup-test-secret-0123456789abc"
    settings = WindowSettings(every_ms=HOUR_MS, lateness_ms=10 * MINUTE_MS)
    ps = PartitionState("pings", 0, _engine(regions_doc), secret, settings)
    key, ts = _pings(T0 + 3 * HOUR_MS, 30)
    order = np.argsort(ts, kind="stable")
    key, ts = key[order], ts[order]
    loc = ps.engine.cells.locate_latlng(np.full(key.size, NORTH[0]), np.full(key.size, NORTH[1]))
    ps.windows.feed(PingBatch(key, ts, np.zeros(key.size, np.uint8), loc,
                              row=np.arange(key.size)), str)
    assert ps.windows.stats.rejected == {}
    blob = ps.checkpoint()
    back = PartitionState("pings", 0, _engine(regions_doc), secret, settings)
    back.restore(blob)
    assert back.engine.first_ping_ms == ps.engine.first_ping_ms == int(ts.min())
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "state_observed_from"}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = PartitionState("pings", 0, _engine(regions_doc), secret, settings)
    old.restore(buf.getvalue())
    assert old.engine.first_ping_ms == T0 + 25 * HOUR_MS  # the close of its first night
    cold = PartitionState("pings", 0, _engine(regions_doc), secret, settings)
    assert cold.engine.first_ping_ms is None and cold.engine.warm_up(T0).resident


@pytest.mark.parametrize("evening, offset_h", [((2026, 3, 28), 1), ((2026, 10, 24), 2)])
def test_a_night_starts_at_its_local_hour_when_the_clocks_change_overnight(
        regions_doc: dict[str, Any], evening: tuple[int, int, int], offset_h: int) -> None:
    from datetime import UTC, datetime

    engine = Engine(regions_from_geojson(regions_doc),
                    EngineConfig(res=8, timezone="Europe/Berlin", migration=None))
    night = int(datetime(*evening, tzinfo=UTC).timestamp()) // 86_400
    start = int(datetime(*evening, 22 - offset_h, tzinfo=UTC).timestamp() * 1000)
    assert engine.night_start_ms(night) == start  # 22:00 local, not the close minus 8 hours
    close_h = 8 - 1 if offset_h == 1 else 8 + 1  # the night is 7 h (spring) or 9 h (autumn)
    assert engine.night_close_ms(night) - start == close_h * HOUR_MS
