"""Partitions without Kafka: summed partition tallies equal one replay; checkpoints resume exactly."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from simkit import simulated_engine

from estimators.h3vec import cell_to_parent, latlng_to_cell
from estimators.tally import Tally, merge_tallies
from stream.decode.frame import encode_frame
from stream.decode.messages import encode_control
from stream.decode.validate import PingDecoder
from stream.estimate.checkpoint import CheckpointMismatchError
from stream.estimate.partition import PartitionState
from stream.estimate.windows import EventTimeWindows, WindowSettings
from stream.simulator import Simulation, simulate
from stream.simulator.writer import write_simulation
from stream.sources.kafka_producer import device_partition
from stream.sources.simulation import simulation_columns

SECRET = b"partition-test-secret-0123456789"
SETTINGS = WindowSettings(every_ms=3_600_000, lateness_ms=600_000)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulation, Path]:
    s = simulate("astana", scale=0.002, days=1.2, seed=7)
    out = tmp_path_factory.mktemp("sim")
    write_simulation(s, out)
    return s, out




def _all_columns(s: Simulation) -> dict[str, np.ndarray]:
    hours = [simulation_columns(s, chunk) for chunk in s.hours()]
    width = {k: max(h[k].dtype.itemsize for h in hours) for k in ("device", "operator", "cell")}
    return {k: np.concatenate([h[k].astype(f"S{width[k]}") if k in width else h[k] for h in hours])
            for k in hours[0]}


def _replay_tallies(sim: tuple[Simulation, Path], cols: dict[str, np.ndarray]) -> list[Tally]:
    engine = simulated_engine(sim)
    out: list[Tally] = []
    rep = EventTimeWindows(engine, SETTINGS, on_window=lambda b: out.append(engine.tally(b)))
    batch = PingDecoder(engine, SECRET).decode_columns(cols, str)
    rep.feed(batch, str)
    rep.finish()
    return out


def _feed(ps: PartitionState, frames: list[bytes], offset0: int, chunk: int) -> list[Tally]:
    got: list[Tally] = []
    for lo in range(0, len(frames), chunk):
        vals = frames[lo:lo + chunk]
        res = ps.process(list(range(offset0 + lo, offset0 + lo + len(vals))), vals)
        assert not res.rejects
        got += res.tallies
    return got


def _partition_frames(cols: dict[str, np.ndarray], n_parts: int, rows: int) -> dict[int, list[bytes]]:
    part = device_partition(cols["device"], n_parts)
    last = int(cols["ts"].max())
    frames: dict[int, list[bytes]] = {}
    for p in range(n_parts):
        idx = np.flatnonzero(part == p)
        frames[p] = [encode_frame({k: v[idx[lo:lo + rows]] for k, v in cols.items()})
                     for lo in range(0, len(idx), rows)] + [encode_control(last, final=True)]
    return frames


def test_partition_tallies_sum_to_the_replay(sim: tuple[Simulation, Path]) -> None:
    s, _ = sim
    cols = _all_columns(s)
    expected = _replay_tallies(sim, cols)
    assert len(expected) >= 25
    frames = _partition_frames(cols, 3, 5_000)
    by_boundary: dict[int, list[Tally]] = defaultdict(list)
    for p, fr in frames.items():
        ps = PartitionState("pings", p, simulated_engine(sim), SECRET, SETTINGS)
        for t in _feed(ps, fr, 0, chunk=p + 1):  # different batching per partition
            by_boundary[t.at_ms].append(t)
    assert sorted(by_boundary) == [t.at_ms for t in expected]
    engine = simulated_engine(sim)
    for want in expected:
        got = merge_tallies(by_boundary[want.at_ms])
        assert got.to_bytes() == want.to_bytes()
        a, b = engine.estimate_tally(got), engine.estimate_tally(want)
        assert np.array_equal(a.present, b.present, equal_nan=True)
        assert np.array_equal(a.resident_hi, b.resident_hi, equal_nan=True)


def test_checkpoint_resumes_exactly_and_redelivery_changes_nothing(
        sim: tuple[Simulation, Path]) -> None:
    s, _ = sim
    frames = _partition_frames(_all_columns(s), 1, 4_000)[0]
    whole = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    want = _feed(whole, frames, 0, chunk=3)

    first = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    half = len(frames) // 2
    got = _feed(first, frames[:half], 0, chunk=2)
    blob = first.checkpoint()
    got += _feed(first, frames[half:half + 3], half, chunk=3)  # lost in the "crash"
    resumed = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    resumed.restore(blob)
    assert resumed.next_offset == half
    again = _feed(resumed, frames[:half], 0, chunk=5)  # redelivered from the start: skipped
    assert again == []
    rest = _feed(resumed, frames[half:], half, chunk=4)
    merged = {t.at_ms: t.to_bytes() for t in got + rest}  # rewritten tallies are identical
    for t in got + rest:
        assert merged[t.at_ms] == t.to_bytes()
    assert [t.at_ms for t in want] == sorted(merged)
    assert [t.to_bytes() for t in want] == [merged[t.at_ms] for t in want]


def test_cell_to_parent_matches_h3() -> None:
    import h3.api.basic_int as h3i

    rng = np.random.default_rng(3)
    cells = latlng_to_cell(rng.uniform(-80, 80, 500), rng.uniform(-180, 180, 500), 9)
    for res in (0, 3, 6, 7, 8, 9):
        assert cell_to_parent(cells, res).tolist() == [h3i.cell_to_parent(int(c), res) for c in cells]


def test_device_partition_is_stable_and_spread() -> None:
    devs = np.array([f"dev-{i:06d}".encode() for i in range(20_000)])
    p = device_partition(devs, 4)
    assert np.array_equal(p, device_partition(devs.astype(str), 4))
    assert np.array_equal(p[:10], device_partition(devs[:10], 4))
    counts = np.bincount(p, minlength=4)
    assert counts.min() > 4_000


def _ping(i: int, ts: int, operator: str = "40101") -> bytes:
    import json

    return json.dumps({"device": f"d{i}", "ts": ts, "operator": operator, "home_mcc": 401,
                       "lat": 51.128, "lon": 71.43}).encode()


T0 = 1_772_409_600_000


def test_a_stale_first_ping_does_not_block_the_stream(sim: tuple[Simulation, Path]) -> None:
    ps = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    msgs = [_ping(0, T0 - 365 * 86_400_000)] + [_ping(i, T0 + i * 1000) for i in range(1, 31)]
    res = ps.process(list(range(len(msgs))), msgs)
    assert [r.reason for r in res.rejects] == ["ts_ahead_of_stream"] * 9
    assert res.accepted == 31 - 9


def test_bad_watermarks_and_too_many_operators_are_rejects(sim: tuple[Simulation, Path]) -> None:
    ps = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    msgs = [_ping(1, T0), encode_control(T0 + 30 * 86_400_000), encode_control(2**62),
            *[_ping(i, T0 + i, operator=f"{40000 + i}") for i in range(300)]]
    res = ps.process(list(range(len(msgs))), msgs)
    reasons = [r.reason for r in res.rejects]
    assert reasons.count("bad_watermark") == 2
    too_many = reasons.count("too_many_operators")
    assert too_many > 0 and len(ps.engine.operators) == 254
    assert res.accepted == 301 - too_many
    assert res.tallies == []  # nothing closed by the rejected watermarks
    assert ps.next_offset == len(msgs)


def test_checkpoint_from_another_key_is_refused(sim: tuple[Simulation, Path]) -> None:
    ps = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    ps.process([0], [_ping(1, T0)])
    other = PartitionState("pings", 0, simulated_engine(sim), b"another-secret-0123456789abcdef", SETTINGS)
    with pytest.raises(CheckpointMismatchError, match="pseudonymization key"):
        other.restore(ps.checkpoint())
