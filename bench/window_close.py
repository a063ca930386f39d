"""CPU cost of a window close (Engine.tally) per million devices (a benchmark: asserts nothing).

    python bench/window_close.py [--devices 1000000,5000000] [--hours 30] [--share 0.3] [--seed 1]

Builds the device state of N devices directly (no pings for the past: a 28-night ring, latest
pings, daytime slots; the night_close.py mix of sleepers), then runs ``--hours`` hourly windows
from 12:00 local across a night boundary (22:00) and a night close (06:00): each hour a share
``--share`` of the devices pings (at night where they sleep, by day at work or home), the engine
ingests them (not timed) and closes the night when due (timed apart: ``bench/night_close.py``),
then the window is closed twice on the same state, each timed in CPU seconds:

- ``before``: the tally as it was before the kept home regions (``tally_state`` recounting
  every device's home region from its ring, copied below verbatim), plus the engine's own
  per-window steps (migration tally, canonical order);
- ``after``: ``Engine.tally`` as it is.

It prints the median and the worst window, per million devices, and whether every pair of
tallies was byte-identical (``Tally.to_bytes``).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from estimators.calibration import N_CLASSES
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.presence import (
    EPOCH_MS,
    LOC_BITS,
    ROAMER,
    PresenceState,
    current_night,
    night_of,
)
from estimators.regions import Region, RegionSet
from estimators.routine import MOVER_FIELDS
from estimators.tally import Tally
from estimators.units import DAY_MS, HOUR_MS
from estimators.warmup import observation_start

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
OFFSET_MS = 5 * HOUR_MS  # Asia/Almaty


def grid_regions(rows: int = 4, cols: int = 5) -> RegionSet:
    """``rows x cols`` boxes over Kazakhstan (lat 40-56, lon 46-88)."""
    boxes = []
    for i in range(rows):
        for j in range(cols):
            lat0, lon0 = 40.0 + 16.0 * i / rows, 46.0 + 42.0 * j / cols
            dlat, dlon = 16.0 / rows, 42.0 / cols
            ring = np.array([[lon0, lat0], [lon0 + dlon, lat0], [lon0 + dlon, lat0 + dlat],
                             [lon0, lat0 + dlat], [lon0, lat0]], dtype=np.float64)
            boxes.append(Region(f"r{i}{j}", f"Region {i}{j}", None, None, (ring,)))
    return RegionSet(boxes)


class World:
    """N synthetic devices: a home tower, a work tower, an alternative sleeping tower."""

    def __init__(self, n: int, engine: Engine, rng: np.random.Generator, n_towers: int) -> None:
        self.n = n
        lat = rng.uniform(40.5, 55.5, size=n_towers)
        lon = rng.uniform(46.5, 87.5, size=n_towers)
        ops = [("40101", "40102", "40177")[i % 3] for i in range(n_towers)]
        plan = engine.load_cell_plan(ops, [f"c{i}" for i in range(n_towers)], lat, lon)
        self.loc = plan.loc
        self.keys = rng.choice(np.iinfo(np.int64).max, size=n, replace=False).astype(np.uint64)
        self.kind = rng.choice(4, size=n, p=[0.80, 0.12, 0.05, 0.03])
        self.home = rng.integers(0, n_towers, size=n)
        self.work = np.where(rng.random(n) < 0.5, rng.integers(0, n_towers, size=n), self.home)
        self.alt = rng.integers(0, n_towers, size=n)
        self.opclass = (np.arange(n) % 3).astype(np.uint8)
        self.n_towers = n_towers

    def sleeping_tower(self, dev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Where each of ``dev`` sleeps tonight."""
        k = self.kind[dev]
        tower = np.where((k == 1) & (rng.random(dev.size) < 0.3), self.alt[dev], self.home[dev])
        return np.where(k == 2, rng.integers(0, self.n_towers, size=dev.size), tower)


def build_state(engine: Engine, world: World, at_ms: int, rng: np.random.Generator) -> None:
    """Fill the engine's device state as if the devices had been seen for 28 nights."""
    st = engine.state
    n, slots = world.n, st.ring_nights
    region_of = engine.cells.region
    _, night, _ = night_of(np.array([at_ms]), OFFSET_MS // 1000, engine.config.night)
    last = int(night[0]) - (1 if (at_ms + OFFSET_MS) % DAY_MS >= 6 * HOUR_MS else 0)
    ring = np.zeros((n, slots), dtype=st.ring_dtype)
    for lo in range(0, n, 1 << 20):
        hi = min(n, lo + (1 << 20))
        dev = np.arange(lo, hi)
        for s in range(slots):
            tower = world.sleeping_tower(dev, rng)
            seen = (rng.random(hi - lo) < 0.7) & (world.kind[dev] != 3)
            val = (rng.integers(0, 4, size=hi - lo) << 8) | (region_of[world.loc[tower]] + 1)
            ring[lo:hi, s] = np.where(seen, val, 0)
    last_night = np.where(world.kind == 3, last - 40, last)
    age = np.where(rng.random(n) < 0.8, rng.integers(0, 30 * HOUR_MS, size=n),
                   rng.integers(30 * HOUR_MS, 20 * DAY_MS, size=n))
    ts = at_ms - 1 - age
    where = np.where(rng.random(n) < 0.5, world.work, world.home)
    stamp = ((ts - EPOCH_MS).astype(np.uint64) << np.uint64(LOC_BITS)) | world.loc[where].astype(
        np.uint64)
    day_hour = (at_ms - EPOCH_MS) // HOUR_MS - rng.integers(0, 60, size=n)
    day_slot = np.where(rng.random(n) < 0.7,
                        ((day_hour % 65536) << 16) | (region_of[world.loc[world.work]] + 1), 0)
    st.restore({"key": world.keys, "stamp": stamp, "opclass": world.opclass,
                "last_night": last_night.astype(np.uint16), "ring": ring,
                "day_slot": day_slot.astype(np.uint32)})
    engine.first_ping_ms = int(ts.min())
    engine.start_nights(at_ms - 1)


def hour_pings(world: World, start_ms: int, share: float, rng: np.random.Generator
               ) -> tuple[np.ndarray, ...]:
    """One hour of pings: ``share`` of the devices, once each, at a time in the hour."""
    dev = np.flatnonzero((rng.random(world.n) < share) & (world.kind != 3))
    ts = np.sort(start_ms + rng.integers(0, HOUR_MS, size=dev.size))
    local_h = ((ts + OFFSET_MS) // HOUR_MS) % 24
    night = (local_h >= 22) | (local_h < 6)
    tower = np.where(night, world.sleeping_tower(dev, rng),
                     np.where(rng.random(dev.size) < 0.6, world.work[dev], world.home[dev]))
    return world.keys[dev], ts, world.opclass[dev], world.loc[tower]


def tally_state_before(state: PresenceState, loc_cell: np.ndarray, loc_region: np.ndarray,
                       operators: tuple[str, ...], at_ms: int, utc_offset_s: int,
                       config: EstimateConfig) -> Tally:
    """``estimators.estimate.tally_state`` before the kept home regions (verbatim)."""
    from estimators.routine import mover_rows
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
    extra = {}
    if config.transitions and MOVER_FIELDS[0] in Tally.__dataclass_fields__:
        day = state.day_region(at_ms, config.routine_ms)
        extra = mover_rows(present & has_home, home, day, here, age_ms, cls)
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


def engine_tally_before(engine: Engine, at_ms: int) -> Tally:
    """``Engine.tally`` before (nights already evaluated; with migration: no eviction here)."""
    tally = tally_state_before(engine.state, engine.cells.cell, engine.cells.region,
                               tuple(engine.operators), at_ms, engine._offset_at(at_ms),
                               engine.config.estimate)
    if engine.migration is not None:
        tally.migration = engine.migration.tally(engine.state.n_devices)
    tally.observed_from_ms = observation_start(engine.first_ping_ms)
    return tally.canonical()


def _cpu(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` and the CPU seconds it took."""
    t0 = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t0


def run(n: int, hours: int, share: float, seed: int, before: bool) -> None:
    """Build ``n`` devices, run the windows and print one size's figures."""
    rng = np.random.default_rng(seed)
    engine = Engine(grid_regions(), EngineConfig(res=8, timezone="Asia/Almaty"))
    world = World(n, engine, rng, n_towers=20_000)
    day = (T0 + 30 * DAY_MS) // DAY_MS * DAY_MS
    start = day + 12 * HOUR_MS - OFFSET_MS  # 12:00 local
    t0 = time.perf_counter()
    build_state(engine, world, start, rng)
    build_s = time.perf_counter() - t0
    rows, same = [], True
    ingest_s = 0.0
    for h in range(hours):
        at = start + (h + 1) * HOUR_MS
        batch = hour_pings(world, at - HOUR_MS, share, rng)
        _, dt = _cpu(engine.ingest, *batch)
        ingest_s += dt
        _, close_s = _cpu(engine.evaluate_nights_until, at)
        old_s = float("nan")
        if before:
            old, old_s = _cpu(engine_tally_before, engine, at)
        new, new_s = _cpu(engine.tally, at)
        if before:
            same &= old.to_bytes() == new.to_bytes()
        local = ((at + OFFSET_MS) // HOUR_MS) % 24
        rows.append((local, old_s, new_s, close_s))
    per_m = 1e6 / n
    old = np.array([r[1] for r in rows]) * per_m
    new = np.array([r[2] for r in rows]) * per_m
    worst = int(np.argmax(new))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  {n:>10,} devices, {hours} windows: CPU s per window per million devices: "
          + (f"before median {np.median(old):.3f} (worst {old.max():.3f}); " if before else "")
          + f"after median {np.median(new):.3f} (worst {new.max():.3f} at "
          f"{rows[worst][0]:02d}:00 local)"
          + (f"; tallies byte-identical: {'yes' if same else 'NO'}" if before else ""))
    closes = [r[3] for r in rows if r[3] > 0.01]
    print(f"      night close (not in the window): {', '.join(f'{c:.2f} s' for c in closes)}; "
          f"ingest {ingest_s:.1f} s CPU for {hours} h; state built in {build_s:.0f} s; "
          f"peak RSS {peak:.1f} GiB")
    print("      per window (local hour: after s/M): "
          + " ".join(f"{r[0]:02d}:{r[2] * per_m:.3f}" for r in rows))


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="1000000,5000000", help="comma-separated device counts")
    ap.add_argument("--hours", type=int, default=30)
    ap.add_argument("--share", type=float, default=0.3, help="devices pinging each hour")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-before", action="store_true", help="time the current tally only")
    args = ap.parse_args()
    print(f"bench/window_close.py: 20 regions, 20 000 towers, {args.hours} hourly windows from "
          f"12:00 local, {args.share:.0%} of devices ping each hour, seed {args.seed}")
    for n in (int(float(x)) for x in args.devices.split(",")):
        run(n, args.hours, args.share, args.seed, not args.no_before)


if __name__ == "__main__":
    main()
