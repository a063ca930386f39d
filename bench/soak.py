"""Soak: one partition over weeks of event time at a steady device churn (a benchmark: prints,
asserts nothing; not run in CI).

    PYTHONPATH=. .venv/bin/python bench/soak.py [--days 70] [--devices 20000] [--churn 0.2]

Synthetic pings of a steady population: ``--devices`` devices active every day, a share
``--churn`` of them replaced by new devices each day (SIM churn, visitors, a key rotation), each
pinging ``--pings`` times a day (one at night at home, the others at home or at work), 70 % by
cell id (3 operators sharing a plan of 20 k towers around 12 Kazakh cities), 30 % by lat/lon
with GPS-like noise (the location table's hard case). They go as DFB1 frames through
:class:`stream.estimate.partition.PartitionState` (decoder, event-time windows, engine: the path
of a live partition and of ``defacto replay``), and the partition's checkpoint (the blob a worker
stores in Redis) is taken every day at 13:09 UTC, just before the watermark passes 13:00: the
moment the most pings are held (those after 13:00, about ``--lateness`` of the stream).

Per day it prints the process's resident memory, the device rows held (and the devices active
that day), devices evicted so far, the checkpoint's size and the pings it holds, the location
table's cells and the engine state's bytes. After the warm-up (28 nights for devices without a
usual residence, 58 with one) every column is flat: state is bounded by the population the
figures can use, not by every device ever seen.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from engine_speed import CITIES, T0, synthetic_regions  # bench/ is on the path when run

from estimators.engine import Engine, EngineConfig
from estimators.migration import MigrationConfig
from estimators.units import DAY_MS, HOUR_MS, MINUTE_MS
from stream.decode.frame import encode_frame
from stream.estimate.partition import PartitionState
from stream.estimate.windows import WindowSettings

OPERATORS = np.array([b"40101", b"40102", b"40177"])
TOWERS = 20_000
FRAME_ROWS = 20_000
CHECKPOINT_AT_MS = 13 * HOUR_MS + 9 * MINUTE_MS


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


class Population:
    """``n`` devices alive each day; ``churn`` of them replaced daily by new ids."""

    def __init__(self, n: int, churn: float, rng: np.random.Generator) -> None:
        self.rng = rng
        self.churn = churn
        self.ids = np.arange(n)
        self.next_id = n
        self.home = rng.integers(0, TOWERS, n)
        self.work = rng.integers(0, TOWERS, n)

    def next_day(self) -> None:
        """Replace a share ``churn`` of the devices by new ones (new homes and workplaces)."""
        gone = self.rng.random(len(self.ids)) < self.churn
        k = int(gone.sum())
        self.ids[gone] = np.arange(self.next_id, self.next_id + k)
        self.next_id += k
        self.home[gone] = self.rng.integers(0, TOWERS, k)
        self.work[gone] = self.rng.integers(0, TOWERS, k)


def _tower_positions(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    city = rng.integers(0, len(CITIES), TOWERS)
    return (CITIES[city, 0] + rng.normal(0, 0.08, TOWERS),
            CITIES[city, 1] + rng.normal(0, 0.12, TOWERS))


def _day_columns(pop: Population, day: int, per_device: int, tower_lat: np.ndarray,
                 tower_lon: np.ndarray) -> dict[str, np.ndarray]:
    """One day of pings of the population, in time order (Asia/Almaty: night 17:00-01:00 UTC)."""
    rng = pop.rng
    n = len(pop.ids)
    dev = np.repeat(np.arange(n), per_device)
    start = T0 + day * DAY_MS
    ts = start + rng.integers(0, DAY_MS, dev.size)
    night_ping = np.arange(dev.size) % per_device == 0
    ts[night_ping] = start + 17 * HOUR_MS + rng.integers(0, 8 * HOUR_MS, int(night_ping.sum()))
    hour = (ts - start) // HOUR_MS
    at_home = night_ping | (hour >= 17) | (hour < 2) | (rng.random(dev.size) < 0.4)
    tower = np.where(at_home, pop.home[dev], pop.work[dev])
    latlon = rng.random(dev.size) < 0.3
    order = np.argsort(ts, kind="stable")
    dev, ts, tower, latlon = dev[order], ts[order], tower[order], latlon[order]
    ids = pop.ids[dev]
    return {
        "device": np.char.add(b"d", ids.astype("S12")),
        "ts": ts,
        "operator": OPERATORS[ids % 3],
        "home_mcc": np.full(dev.size, 401, dtype=np.int16),
        "cell": np.where(latlon, b"", np.char.add(b"c", tower.astype("S8"))),
        "lat": np.where(latlon, tower_lat[tower] + rng.normal(0, 0.003, dev.size), np.nan),
        "lon": np.where(latlon, tower_lon[tower] + rng.normal(0, 0.004, dev.size), np.nan),
    }


def main() -> None:
    """Run the soak and print one line per simulated day."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=70, help="days of event time (default 70)")
    ap.add_argument("--devices", type=int, default=20_000, help="devices active a day")
    ap.add_argument("--churn", type=float, default=0.2, help="share of devices new each day")
    ap.add_argument("--pings", type=int, default=8, help="pings per device and day")
    ap.add_argument("--no-migration", action="store_true", help="presence and residence only")
    ap.add_argument("--max-seconds", type=float, default=3600,
                    help="stop after the day that passes this wall time (default 3600)")
    args = ap.parse_args()
    rng = np.random.default_rng(12)
    tower_lat, tower_lon = _tower_positions(rng)
    config = EngineConfig(res=8, migration=None if args.no_migration else MigrationConfig())
    engine = Engine(synthetic_regions(), config)
    engine.load_cell_plan([op.decode() for op in OPERATORS for _ in range(TOWERS)],
                          [f"c{i}" for _ in OPERATORS for i in range(TOWERS)],
                          np.tile(tower_lat, len(OPERATORS)), np.tile(tower_lon, len(OPERATORS)))
    ps = PartitionState("pings", 0, engine, b"bench-soak-key-0123456789abcdef0",
                        WindowSettings(every_ms=HOUR_MS))
    pop = Population(args.devices, args.churn, rng)
    print(f"soak: {args.days} days, {args.devices:,} devices a day, {args.churn:.0%} new each "
          f"day, {args.pings} pings each, hourly windows, migration "
          f"{'off' if args.no_migration else 'on'}; RSS at start {_rss_mib():.0f} MiB")
    print(f"{'day':>4} {'pings':>10} {'RSS MiB':>8} {'rows':>8} {'seen':>9} {'evicted':>9} "
          f"{'ckpt MB':>8} {'held':>7} {'cells':>7} {'state MB':>9} {'s':>5}")
    offset, seen = 0, 0
    started = time.perf_counter()
    for day in range(args.days):
        t = time.perf_counter()
        cols = _day_columns(pop, day, args.pings, tower_lat, tower_lon)
        cut = int(np.searchsorted(cols["ts"], T0 + day * DAY_MS + CHECKPOINT_AT_MS))
        blob = b""
        for part in ((0, cut), (cut, len(cols["ts"]))):
            for lo in range(part[0], part[1], FRAME_ROWS):
                hi = min(lo + FRAME_ROWS, part[1])
                res = ps.process([offset], [encode_frame({k: v[lo:hi] for k, v in cols.items()})])
                assert not res.rejects, res.rejects[:3]
                offset += 1
            if not blob:
                blob = ps.checkpoint()
                held = ps.windows.held()
        seen = pop.next_id
        state_mb = sum(a.nbytes for a in engine.export_state().values()) / 1e6
        print(f"{day + 1:>4} {len(cols['ts']):>10,} {_rss_mib():>8.0f} {engine.state.n_devices:>8,} "
              f"{seen:>9,} {engine.evicted:>9,} {len(blob) / 1e6:>8.2f} "
              f"{0 if held is None else len(held):>7,} {len(engine.cells):>7,} "
              f"{state_mb:>9.2f} {time.perf_counter() - t:>5.1f}", flush=True)
        pop.next_day()
        if time.perf_counter() - started > args.max_seconds:
            print(f"stopped after day {day + 1}: past --max-seconds {args.max_seconds:g}")
            break
    print(f"total {time.perf_counter() - started:.0f} s; rows held / devices active a day: "
          f"{engine.state.n_devices / args.devices:.1f}; checkpoint bytes per row: "
          f"{len(blob) / max(engine.state.n_devices, 1):.0f}")


if __name__ == "__main__":
    main()
