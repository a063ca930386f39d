"""The watermark follows many devices, not one: fast clocks cannot discard other devices' pings;
the per-ping rules do not depend on batching; what is held is bounded by the lateness.

Fault case 08 (a phone 59 minutes fast closed its partition's 13:00 window 49 minutes early and
10,303 pings of other devices were rejected ``too_late``) is the first test.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from simkit import simulated_engine, time_ordered_columns

from estimators.engine import Engine
from estimators.tally import Tally
from estimators.units import DAY_MS, HOUR_MS, MINUTE_MS
from stream.contract import Reject
from stream.decode.frame import encode_frame
from stream.decode.messages import encode_control
from stream.decode.validate import PingBatch, PingDecoder
from stream.estimate import checkpoint
from stream.estimate.partition import PartitionState
from stream.estimate.windows import REANCHOR_PINGS, EventTimeWindows, WindowSettings
from stream.simulator import Simulation, simulate
from stream.simulator.writer import write_simulation

SECRET = b"watermark-test-secret-0123456789"
SETTINGS = WindowSettings(every_ms=HOUR_MS, lateness_ms=10 * MINUTE_MS)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulation, Path]:
    s = simulate("astana", scale=0.002, days=1.0, seed=7)
    out = tmp_path_factory.mktemp("sim")
    write_simulation(s, out)
    return s, out




def _columns(s: Simulation) -> dict[str, np.ndarray]:
    return time_ordered_columns(s)


def _with_pings(cols: dict[str, np.ndarray], at: int, device: bytes, ts: list[int]
                ) -> dict[str, np.ndarray]:
    """``cols`` with pings of ``device`` at times ``ts`` inserted before row ``at`` (a copy of
    row ``at``'s other fields: a cell-id ping)."""
    extra = {k: np.repeat(v[at:at + 1], len(ts)) for k, v in cols.items()}
    extra["device"] = np.array([device] * len(ts), dtype=cols["device"].dtype)
    extra["ts"] = np.array(ts, dtype=np.int64)
    return {k: np.concatenate([v[:at], extra[k], v[at:]]) for k, v in cols.items()}


def _replay(sim: tuple[Simulation, Path], cols: dict[str, np.ndarray], chunk: int = 20_000
            ) -> tuple[list[Tally], list[Reject], EventTimeWindows]:
    engine = simulated_engine(sim)
    tallies: list[Tally] = []
    rejects: list[Reject] = []
    windows = EventTimeWindows(engine, SETTINGS, on_window=lambda b: tallies.append(engine.tally(b)),
                               on_reject=rejects.append)
    decoder = PingDecoder(engine, SECRET)
    n = len(cols["ts"])
    for lo in range(0, n, chunk):
        part = {k: v[lo:lo + chunk] for k, v in cols.items()}
        name = lambda i, lo=lo: f"row {lo + i}"  # noqa: E731
        windows.feed(decoder.decode_columns(part, name), name)
    windows.finish()
    return tallies, rejects, windows


def _day_start(cols: dict[str, np.ndarray]) -> int:
    return int(cols["ts"].min()) // DAY_MS * DAY_MS


def test_a_phone_59_minutes_fast_discards_no_other_pings(sim: tuple[Simulation, Path]) -> None:
    """Fault 08: one ping 59 minutes ahead at 12:11 (inside the 1 h future guard) used to close
    the 13:00 window 49 minutes early and reject 10,303 other pings as too_late."""
    s, _ = sim
    cols = _columns(s)
    at = int(np.searchsorted(cols["ts"], _day_start(cols) + 12 * HOUR_MS + 11 * MINUTE_MS))
    fast_ts = int(cols["ts"][at]) + 59 * MINUTE_MS
    skewed = _with_pings(cols, at, b"fast-phone", [fast_ts])
    want, want_rejects, _ = _replay(sim, cols)
    got, rejects, windows = _replay(sim, skewed)
    assert want_rejects == [] and rejects == []  # nobody too_late, the fast ping accepted
    assert windows.stats.accepted == len(cols["ts"]) + 1
    assert [t.at_ms for t in got] == [t.at_ms for t in want]
    for a, b in zip(got, want, strict=True):
        if a.at_ms <= fast_ts:  # before its ping counts, the fast phone changes no figure
            assert a.to_bytes() == b.to_bytes(), a.at_ms
        else:  # after: one more active device (the day is shorter than --activity)
            assert int(a.n_active.sum()) == int(b.n_active.sum()) + 1, a.at_ms


@pytest.mark.parametrize("ahead_h, burst", [(5, 1), (7, REANCHOR_PINGS), (59 / 60, 9)])
def test_devices_far_ahead_in_a_backfill_lose_only_their_own_pings(
        sim: tuple[Simulation, Path], ahead_h: float, burst: int) -> None:
    """A device hours ahead (backfill, no clock guard), and a burst of ten pings 7 h ahead that
    re-anchors the ahead guard: the other devices' pings all count, the figures before the
    device's pings are those without it."""
    s, _ = sim
    cols = _columns(s)
    at = int(np.searchsorted(cols["ts"], _day_start(cols) + 9 * HOUR_MS))
    t = int(cols["ts"][at]) + int(ahead_h * HOUR_MS)
    skewed = _with_pings(cols, at, b"far-ahead", [t + i for i in range(burst)])
    want, _, _ = _replay(sim, cols)
    got, rejects, windows = _replay(sim, skewed)
    reasons = Counter(r.reason for r in rejects)
    assert set(reasons) <= {"ts_ahead_of_stream"}
    assert windows.stats.accepted + sum(reasons.values()) == len(cols["ts"]) + burst
    assert windows.stats.accepted >= len(cols["ts"])  # every other ping counts
    first_own = t
    for a, b in zip(got, want, strict=False):
        if a.at_ms <= first_own:
            assert a.to_bytes() == b.to_bytes(), a.at_ms


def test_as_many_fast_devices_as_the_watermark_needs_do_move_it(
        sim: tuple[Simulation, Path]) -> None:
    """The rule's limit, stated: ``watermark_devices`` distinct devices ahead together move the
    watermark (then pings behind it are too_late); one fewer does not."""
    s, _ = sim
    cols = _columns(s)
    at = int(np.searchsorted(cols["ts"], _day_start(cols) + 12 * HOUR_MS + 11 * MINUTE_MS))
    fast_ts = int(cols["ts"][at]) + 59 * MINUTE_MS
    n = SETTINGS.watermark_devices
    few = cols
    for i in range(n - 1):
        few = _with_pings(few, at, f"fast-{i}".encode(), [fast_ts])
    _, rejects, _ = _replay(sim, few)
    assert rejects == []
    many = _with_pings(few, at, b"fast-last", [fast_ts])
    _, rejects, _ = _replay(sim, many)
    assert rejects and {r.reason for r in rejects} == {"too_late"}


def _random_stream(rng: np.random.Generator, n: int, n_dev: int, t0: int) -> dict[str, np.ndarray]:
    """Pings of ``n_dev`` devices over 3 days, in arrival order: mostly in order, a fifth late by
    up to 40 min, a few devices with fast clocks (up to 3 h), lat/lon positions."""
    ts = t0 + np.sort(rng.integers(0, 3 * DAY_MS, n))
    ts = ts - np.where(rng.random(n) < 0.2, rng.integers(0, 40 * MINUTE_MS, n), 0)
    dev = rng.integers(0, n_dev, n)
    fast = dev < 3
    ts = ts + np.where(fast, (dev + 1) * HOUR_MS, 0)
    return {"device": np.array([f"d{d}".encode() for d in dev]), "ts": ts,
            "operator": np.full(n, b"40101", dtype="S6"), "home_mcc": np.full(n, 401, np.int16),
            "cell": np.zeros(n, dtype="S1"),
            "lat": 51.1 + rng.normal(0, 0.05, n), "lon": 71.4 + rng.normal(0, 0.05, n)}


def _feed_in(sim: tuple[Simulation, Path], cols: dict[str, np.ndarray], cuts: np.ndarray,
             settings: WindowSettings) -> tuple[list[bytes], list[str], Engine]:
    engine = simulated_engine(sim)
    tallies: list[bytes] = []
    rejects: list[str] = []
    windows = EventTimeWindows(engine, settings,
                               on_window=lambda b: tallies.append(engine.tally(b).to_bytes()),
                               on_reject=lambda r: rejects.append(f"{r.source} {r.reason}"))
    decoder = PingDecoder(engine, SECRET, now_ms=int(cols["ts"].max()))
    for lo, hi in itertools.pairwise(cuts.tolist()):
        part = {k: v[lo:hi] for k, v in cols.items()}
        name = lambda i, lo=lo: str(lo + i)  # noqa: E731
        windows.feed(decoder.decode_columns(part, name), name)
    windows.finish()
    return tallies, rejects, engine


@pytest.mark.parametrize("n_dev", [4, 400])
def test_rules_do_not_depend_on_batching(sim: tuple[Simulation, Path], n_dev: int) -> None:
    """One ping at a time (the definition), and random batchings: the same rejects (too_late
    across window ends and night closes, ahead), the same tallies (presence and migration). A
    stream of 4 devices runs on the small-stream rule (all devices must reach a time)."""
    rng = np.random.default_rng(n_dev)
    cols = _random_stream(rng, 3_000, n_dev, _day_start(_columns(sim[0])))
    n = len(cols["ts"])
    settings = WindowSettings(every_ms=3 * HOUR_MS, lateness_ms=15 * MINUTE_MS)
    one = _feed_in(sim, cols, np.arange(n + 1), settings)
    reasons = Counter(r.split()[-1] for r in one[1])
    assert reasons["too_late"] > 0
    assert len(one[0]) >= 20
    for seed in range(3):
        cuts = np.unique(np.r_[0, np.random.default_rng(seed).integers(0, n, 40), n])
        other = _feed_in(sim, cols, cuts, settings)
        assert other[1] == one[1]
        assert other[0] == one[0]
        assert other[2].state.n_devices == one[2].state.n_devices


def test_held_pings_are_bounded_by_the_lateness_not_the_window(
        sim: tuple[Simulation, Path]) -> None:
    """Fault 12: a partition whose window is open for a day held every ping of it, and wrote
    them all into every checkpoint (25 B a ping). Now only pings after the next seal (window
    end or night close) wait: about --lateness of the stream."""
    s, _ = sim
    cols = _columns(s)
    day = _day_start(cols)
    long = WindowSettings(every_ms=DAY_MS, lateness_ms=10 * MINUTE_MS)
    ps = PartitionState("pings", 0, simulated_engine(sim), SECRET, long)
    cut = int(np.searchsorted(cols["ts"], day + 20 * HOUR_MS))  # the window is 20 h open
    frames = [encode_frame({k: v[lo:min(lo + 5_000, cut)] for k, v in cols.items()})
              for lo in range(0, cut, 5_000)]
    res = [ps.process([i], [f]) for i, f in enumerate(frames)]
    assert not any(r.rejects for r in res) and not any(r.tallies for r in res)
    assert ps.windows.held() is None  # no seal within the lateness: everything is in the engine
    blob = ps.checkpoint()
    state_bytes = sum(a.nbytes for a in ps.engine.export_state().values())
    assert len(blob) < state_bytes + 100_000
    # just past a seal (the night closes at 06:00 in Almaty, 01:00 UTC) pings after it wait
    near = PartitionState("pings", 0, simulated_engine(sim), SECRET, long)
    stop = int(np.searchsorted(cols["ts"], day + HOUR_MS + 5 * MINUTE_MS))
    near.process([0], [encode_frame({k: v[:stop] for k, v in cols.items()})])
    held = near.windows.held()
    recent = int((cols["ts"][:stop] >= day + HOUR_MS).sum())
    assert held is not None and len(held) == recent > 0
    state_bytes = sum(a.nbytes for a in ps.engine.export_state().values())
    assert len(blob) < state_bytes + 25 * recent + 100_000
    # and the rest of the day resumes from that checkpoint to the replay's figures
    resumed = PartitionState("pings", 0, simulated_engine(sim), SECRET, long)
    resumed.restore(blob)
    rest = [encode_frame({k: v[lo:lo + 5_000] for k, v in cols.items()})
            for lo in range(cut, len(cols["ts"]), 5_000)]
    rest.append(encode_control(int(cols["ts"].max()), final=True))
    got = [t for i, f in enumerate(rest) for t in resumed.process([len(frames) + i], [f]).tallies]
    whole = PartitionState("pings", 0, simulated_engine(sim), SECRET, long)
    want = [t for i, f in enumerate([*frames, *rest]) for t in whole.process([i], [f]).tallies]
    assert [t.to_bytes() for t in got] == [t.to_bytes() for t in want] and want


def test_an_older_checkpoint_without_watermark_devices_resumes(
        sim: tuple[Simulation, Path]) -> None:
    """A version-1 checkpoint (no watermark devices) rebuilds them from the device state and
    the held pings, and resumes to the same tallies."""
    import io
    import json

    s, _ = sim
    cols = _columns(s)
    frames = [encode_frame({k: v[lo:lo + 4_000] for k, v in cols.items()})
              for lo in range(0, len(cols["ts"]), 4_000)]
    frames.append(encode_control(int(cols["ts"].max()), final=True))
    whole = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    want = [t for i, f in enumerate(frames) for t in whole.process([i], [f]).tallies]
    first = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    half = len(frames) // 2
    got = [t for i, f in enumerate(frames[:half]) for t in first.process([i], [f]).tallies]
    with np.load(io.BytesIO(first.checkpoint())) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("wm_")}
    meta = json.loads(str(arrays["meta"]))
    meta["version"] = 1
    del meta["watermark_devices"]
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    resumed = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    resumed.restore(buf.getvalue())
    assert np.array_equal(np.sort(resumed.windows.watermark_devices()[1]),
                          np.sort(first.windows.watermark_devices()[1]))
    got += [t for i, f in enumerate(frames[half:]) for t in resumed.process([half + i], [f]).tallies]
    assert [t.to_bytes() for t in got] == [t.to_bytes() for t in want]


def test_a_single_device_closes_windows_only_at_the_end(sim: tuple[Simulation, Path]) -> None:
    """With one device the stream has no time to trust: windows close at the end of input (or
    a producer watermark), never on that device's word alone."""
    engine = simulated_engine(sim)
    closed: list[int] = []
    windows = EventTimeWindows(engine, SETTINGS, on_window=closed.append)
    t0 = 1_772_409_600_000
    batch = PingBatch(np.full(5, 7, np.uint64), t0 + np.arange(5) * HOUR_MS,
                      np.zeros(5, np.uint8), np.zeros(5, np.int64), row=np.arange(5))
    engine.cells.locate(np.array([0x88283082A3FFFFF], dtype=np.uint64))
    windows.feed(batch, str)
    assert closed == []
    windows.advance_to(t0 + 2 * HOUR_MS)
    assert closed == [t0 + HOUR_MS, t0 + 2 * HOUR_MS]
    windows.finish()
    assert closed[-1] == t0 + 5 * HOUR_MS and windows.stats.rejected == {}


def test_a_captured_checkpoint_does_not_move_with_later_ingest(
        sim: tuple[Simulation, Path]) -> None:
    """The worker captures a checkpoint between batches and encodes it in a thread while batches
    go on: what is encoded is the state at the capture. Nothing captured shares memory with the
    engine (the migration ledger's vectors did: they move on at every night close)."""
    s, _ = sim
    cols = _columns(s)
    day = _day_start(cols)
    ps = PartitionState("pings", 0, simulated_engine(sim), SECRET, SETTINGS)
    cut = int(np.searchsorted(cols["ts"], day + 12 * HOUR_MS))  # after the night close (01:00)
    ps.process([0], [encode_frame({k: v[:cut] for k, v in cols.items()})])
    want = checkpoint.write(ps)
    captured = checkpoint.capture(ps)
    live = list(_arrays_of(ps.engine))
    assert len(live) > 50
    shared = [k for k, c in captured.items() if any(np.may_share_memory(c, a) for a in live)]
    assert shared == []  # copies only: nothing the engine changes later
    assert any(k.startswith("captured_migp_cur_") for k in captured)  # a ledger is open
    ps.process([1], [encode_frame({k: v[cut:] for k, v in cols.items()})])
    ps.process([2], [encode_control(int(cols["ts"].max()) + HOUR_MS, final=True)])
    assert checkpoint.encode(captured) == want


def _arrays_of(obj: object, seen: set[int] | None = None, depth: int = 0) -> Iterator[np.ndarray]:
    """Every numpy array reachable from ``obj``'s attributes, dicts and lists (5 levels)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 5:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        yield obj
        return
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return
    for item in items:
        yield from _arrays_of(item, seen, depth + 1)
