"""Checkpoint deltas: a base plus the latest delta resumes exactly where a full checkpoint would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simkit import simulated_engine, time_ordered_columns

from estimators.presence import MAX_LOCATIONS
from estimators.units import HOUR_MS, MINUTE_MS
from stream.decode.frame import encode_frame
from stream.decode.messages import encode_control
from stream.estimate import checkpoint
from stream.estimate.checkpoint import EncodedCheckpoint
from stream.estimate.checkpoint_delta import (
    apply_rows,
    base_of,
    changed_rows,
    row_digests,
)
from stream.estimate.partition import PartitionState
from stream.estimate.windows import WindowSettings
from stream.simulator import Simulation, simulate
from stream.simulator.writer import write_simulation

SECRET = b"delta-test-secret-0123456789abcd"
SETTINGS = WindowSettings(every_ms=HOUR_MS, lateness_ms=10 * MINUTE_MS)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulation, Path]:
    s = simulate("astana", scale=0.002, days=1.0, seed=11)
    out = tmp_path_factory.mktemp("sim")
    write_simulation(s, out)
    return s, out


def _frames(s: Simulation, size: int = 3_000) -> list[bytes]:
    cols = time_ordered_columns(s)
    frames = [encode_frame({k: v[lo:lo + size] for k, v in cols.items()})
              for lo in range(0, len(cols["ts"]), size)]
    return [*frames, encode_control(int(cols["ts"].max()), final=True)]


def _base_and_delta(sim: tuple[Simulation, Path], frames: list[bytes], cut: int = 400
                    ) -> tuple[PartitionState, EncodedCheckpoint, EncodedCheckpoint]:
    """A partition fed ``frames[:cut]`` and checkpointed whole, then fed one frame more and
    checkpointed as a delta against that: (the partition, the base, the delta)."""
    ps = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    for i, f in enumerate(frames[:cut]):
        ps.process([i], [f])
    base = checkpoint.encode_checkpoint(checkpoint.capture(ps))
    ps.process([cut], [frames[cut]])
    return ps, base, checkpoint.encode_checkpoint(checkpoint.capture(ps), base.base)


def test_a_base_and_its_latest_delta_resume_to_the_replay_s_tallies(
        sim: tuple[Simulation, Path]) -> None:
    """Checkpoints every few frames through a day (a night close and evictions among them):
    each is a base or a delta against the last base, and resuming from the stored base plus
    the latest delta gives, for the rest of the day, the tallies of one uninterrupted run."""
    s, _ = sim
    frames = _frames(s, 1_000)
    whole = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    want = [[t.to_bytes() for t in whole.process([i], [f]).tallies] for i, f in enumerate(frames)]
    live = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    base, stored, kinds = None, (b"", None), []
    for i, f in enumerate(frames[:-1]):
        live.process([i], [f])
        if i % 3 != 2:
            continue
        enc = checkpoint.encode_checkpoint(checkpoint.capture(live), base)
        n = live.engine.state.n_devices
        if enc.delta:
            assert enc.base is base and enc.rows <= n // 2
            stored = (stored[0], enc.blob)
        else:
            assert enc.rows == n
            base, stored = enc.base, (enc.blob, None)
        kinds.append(enc.delta)
        if len(kinds) % 10 not in (1, 2, 3):
            continue
        resumed = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
        checkpoint.restore(resumed, stored[0], delta=stored[1])
        got = [[t.to_bytes() for t in resumed.process([j], [g]).tallies]
               for j, g in enumerate(frames[i + 1:], start=i + 1)]
        assert got == want[i + 1:], f"resumed after frame {i} ({'delta' if enc.delta else 'base'})"
    assert True in kinds and kinds.count(False) >= 2  # deltas, and a new base after the night


def test_a_delta_is_small_when_few_devices_changed(sim: tuple[Simulation, Path]) -> None:
    """A checkpoint right after a base carries only the devices that pinged in between."""
    s, _ = sim
    frames = _frames(s, 300)
    ps, base, delta = _base_and_delta(sim, frames)
    assert delta.delta and 0 < delta.rows <= 300
    assert len(delta.blob) < len(base.blob) / 3
    again = checkpoint.encode_checkpoint(checkpoint.capture(ps), base.base)
    assert again.rows == delta.rows  # cumulative since the base, not since the last delta


def test_a_delta_is_refused_over_another_base(sim: tuple[Simulation, Path]) -> None:
    s, _ = sim
    frames = _frames(s)
    ps = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    ps.process([0], [frames[0]])
    first = checkpoint.encode_checkpoint(checkpoint.capture(ps))
    ps.process([1], [frames[1]])
    second = checkpoint.encode_checkpoint(checkpoint.capture(ps))
    ps.process([2], [frames[2]])
    delta = checkpoint.encode_checkpoint(checkpoint.capture(ps), first.base, max_share=1.0)
    assert delta.delta and first.base.id != second.base.id
    fresh = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    with pytest.raises(ValueError, match="does not belong to the stored base"):
        checkpoint.restore(fresh, second.blob, delta=delta.blob)


_ROW = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 255), st.lists(
    st.integers(0, 65535), min_size=3, max_size=3))


@settings(max_examples=200, deadline=None)
@given(old=st.lists(_ROW, max_size=40), new=st.lists(_ROW, max_size=40),
       keep=st.lists(st.booleans(), max_size=40))
def test_applying_the_changed_rows_gives_the_new_arrays(
        old: list[tuple[int, int, list[int]]], new: list[tuple[int, int, list[int]]],
        keep: list[bool]) -> None:
    """Whatever happened to the rows (changed, appended, cut, moved), the base with the rows
    whose digest changed laid over it is the new state."""
    def arrays(rows: list[tuple[int, int, list[int]]]) -> dict[str, np.ndarray]:
        return {"key": np.array([r[0] for r in rows], dtype=np.uint64),
                "opclass": np.array([r[1] for r in rows], dtype=np.uint8),
                "ring": np.array([r[2] for r in rows], dtype=np.uint16).reshape(len(rows), 3)}
    # rows kept from the old state where ``keep`` says so, the new ones elsewhere
    mixed = [old[i] if i < len(old) and i < len(keep) and keep[i] else r
             for i, r in enumerate(new)]
    before, after = arrays(old), arrays(mixed)
    base = base_of(row_digests(list(before.values())))
    rows = changed_rows(base, row_digests(list(after.values())))
    got = apply_rows(before, rows, {k: v[rows] for k, v in after.items()}, len(mixed))
    for k, v in after.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    unchanged = sum(1 for i, r in enumerate(mixed) if i < len(old) and old[i] == r)
    assert rows.size == len(mixed) - unchanged


def test_a_restored_partition_writes_deltas_against_the_stored_base(
        sim: tuple[Simulation, Path]) -> None:
    """After a restart the restored engine numbers its locations anew, yet its rows digest as
    the blob's: its first checkpoint is a delta against the base Redis holds (not a new base of
    every device), and that delta resumes to the uninterrupted run's tallies."""
    s, _ = sim
    frames = _frames(s, 300)
    whole = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    want = [[t.to_bytes() for t in whole.process([i], [f]).tallies] for i, f in enumerate(frames)]
    _, base, delta = _base_and_delta(sim, frames)
    assert delta.delta
    second = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    second.engine.cells.locate(np.array([0x88283082A3FFFFF], dtype=np.uint64))  # other numbers
    adopted = checkpoint.restore(second, base.blob, delta=delta.blob)
    assert adopted is not None and adopted.id == base.base.id
    for i, f in enumerate(frames[401:405], start=401):
        second.process([i], [f])
    again = checkpoint.encode_checkpoint(checkpoint.capture(second), adopted)
    assert again.delta and delta.rows <= again.rows <= delta.rows + 4 * 300
    third = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    checkpoint.restore(third, base.blob, delta=again.blob)
    got = [[t.to_bytes() for t in third.process([j], [g]).tallies]
           for j, g in enumerate(frames[405:], start=405)]
    assert got == want[405:]


def test_a_base_with_a_table_near_the_location_limit_merges_exactly(
        sim: tuple[Simulation, Path]) -> None:
    """Review finding: a delta's location numbers were shifted by the base table's length and
    packed into the stamp's 23 location bits before renumbering, so a base table near the
    limit pointed the delta's rows at other locations (and moved their times), silently. The
    locations are now merged by (cell, region) outside the stamp."""
    s, _ = sim
    frames = _frames(s, 300)
    _, base, delta = _base_and_delta(sim, frames)
    z = checkpoint._load(base.blob)
    meta = json.loads(str(z.pop("meta")))
    cells, regions = z["state_stamp_cells"], z["state_stamp_regions"]
    extra = MAX_LOCATIONS - 100 - len(cells)  # unreferenced entries, as freed numbers are
    z["state_stamp_cells"] = np.concatenate([cells, np.full(extra, cells[0], cells.dtype)])
    z["state_stamp_regions"] = np.concatenate([regions, np.full(extra, regions[0], regions.dtype)])
    big = checkpoint._npz(meta, z)

    def located(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        stamp = arrays["state_stamp"]
        loc = (stamp & np.uint64(MAX_LOCATIONS)).astype(np.int64)
        return (stamp >> np.uint64(23), arrays["state_stamp_cells"][loc],
                arrays["state_stamp_regions"][loc])

    want = located(checkpoint.with_delta(checkpoint._load(base.blob),
                                         checkpoint._load(delta.blob)))
    got = located(checkpoint.with_delta(checkpoint._load(big), checkpoint._load(delta.blob)))
    assert delta.delta and all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
