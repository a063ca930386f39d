"""Engine speed and state size on one core (a benchmark: prints figures, asserts nothing).

    python bench/engine_speed.py [--quick]

Measures, for the engine alone (decoded columns in, state updated; no file or network I/O):
- pings/s for cell-id pings and for lat/lon pings, at 1 M and 10 M pings (batches of 1 M);
- bytes of state per tracked device at 1 M and 5 M devices;
- a naive per-ping Python loop (h3 call + dict of device -> (ts, cell)) on the same pings, and
  the ratio.
Synthetic pings: 1 M devices around 12 Kazakh city centres, 20 k towers; lat/lon pings are
distinct positions (GPS-like noise), the hard case for binning. Steady state: every device has
been seen once before the timed run (first-sight insertion is timed separately).
"""

from __future__ import annotations

import argparse
import os
import time

import h3
import numpy as np

from estimators.engine import Engine, EngineConfig
from estimators.regions import Region, RegionSet

T0 = 1_772_409_600_000
CITIES = np.array([[51.17, 71.45], [43.24, 76.89], [42.32, 69.59], [49.81, 73.09],
                   [50.28, 57.17], [52.29, 76.95], [49.95, 82.61], [47.11, 51.92],
                   [43.65, 51.17], [44.85, 65.51], [53.21, 63.62], [42.90, 71.37]])


def synthetic_regions() -> RegionSet:
    """Four large boxes covering Kazakhstan (region lookup cost without real borders)."""
    boxes = []
    for i, (lat0, lon0) in enumerate([(40.0, 46.0), (40.0, 67.0), (48.0, 46.0), (48.0, 67.0)]):
        ring = np.array([[lon0, lat0], [lon0 + 21, lat0], [lon0 + 21, lat0 + 8],
                         [lon0, lat0 + 8], [lon0, lat0]], dtype=np.float64)
        boxes.append(Region(f"r{i}", f"Region {i}", None, None, (ring,)))
    return RegionSet(boxes)


def _positions(rng: np.random.Generator, n: int, spread_deg: float) -> tuple[np.ndarray, ...]:
    city = rng.integers(0, len(CITIES), size=n)
    lat = CITIES[city, 0] + rng.normal(0, spread_deg, size=n)
    lon = CITIES[city, 1] + rng.normal(0, spread_deg * 1.5, size=n)
    return lat, lon


def _pings(rng: np.random.Generator, n: int, n_dev: int, n_towers: int,
           every_device_once: bool = False) -> dict[str, np.ndarray]:
    keys = np.random.default_rng(99).integers(1, 2**63, size=n_dev, dtype=np.uint64)
    dev = np.arange(n) % n_dev if every_device_once else rng.integers(0, n_dev, size=n)
    lat, lon = _positions(rng, n, 0.08)
    return {
        "key": keys[dev],
        "ts": np.sort(T0 + rng.integers(0, 86_400_000, size=n)) - (86_400_000 if every_device_once
                                                                      else 0),
        "opclass": (dev % 3).astype(np.uint8),
        "row": rng.integers(0, n_towers, size=n),
        "lat": lat,
        "lon": lon,
    }


def _engine(rng: np.random.Generator, n_towers: int) -> Engine:
    engine = Engine(synthetic_regions(), EngineConfig(res=8))
    lat, lon = _positions(rng, n_towers, 0.08)
    ops = [("40101", "40102", "40177")[i % 3] for i in range(n_towers)]
    engine.load_cell_plan(ops, [f"c{i}" for i in range(n_towers)], lat, lon)
    return engine


def _run(engine: Engine, p: dict[str, np.ndarray], kind: str, batch: int) -> float:
    start = time.perf_counter()
    for lo in range(0, len(p["ts"]), batch):
        s = slice(lo, lo + batch)
        if kind == "cell":
            assert engine.plan is not None
            loc = engine.plan.loc[p["row"][s]]
        else:
            loc = engine.cells.locate_latlng(p["lat"][s], p["lon"][s])
        engine.ingest(p["key"][s], p["ts"][s], p["opclass"][s], loc)
    return time.perf_counter() - start


def _naive(p: dict[str, np.ndarray], n: int) -> float:
    state: dict[int, tuple[int, int]] = {}
    keys, ts = p["key"][:n].tolist(), p["ts"][:n].tolist()
    lat, lon = p["lat"][:n].tolist(), p["lon"][:n].tolist()
    to_cell = h3.api.basic_int.latlng_to_cell
    start = time.perf_counter()
    for k, t, a, b in zip(keys, ts, lat, lon, strict=True):
        cell = to_cell(a, b, 8)
        old = state.get(k)
        if old is None or old[0] <= t:
            state[k] = (t, cell)
    return time.perf_counter() - start


def main() -> None:
    """Print the benchmark table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 M pings only, 1 M devices")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n_towers = 20_000
    sizes = [1_000_000] if args.quick else [1_000_000, 10_000_000]
    print(f"engine alone, one core (pid {os.getpid()}), batches of 1 M pings, 1 M devices, res 8")
    print(f"{'pings':>12} {'kind':>8} {'seconds':>9} {'pings/s':>14}")
    warm = _pings(rng, 1_000_000, 1_000_000, n_towers, every_device_once=True)
    for n in sizes:
        p = _pings(rng, n, 1_000_000, n_towers)
        for kind in ("cell", "latlon"):
            engine = _engine(np.random.default_rng(1), n_towers)
            first = _run(engine, warm, kind, 1_000_000)
            if n == sizes[0]:
                print(f"{'(first sight)':>12} {kind:>8} {first:>9.3f} {1_000_000 / first:>14,.0f}"
                      "  <- 1 M new devices inserted")
            secs = _run(engine, p, kind, 1_000_000)
            print(f"{n:>12,} {kind:>8} {secs:>9.3f} {n / secs:>14,.0f}")
        if n == sizes[0]:
            naive_n = 300_000
            secs_naive = _naive(p, naive_n)
            engine = _engine(np.random.default_rng(1), n_towers)
            _run(engine, warm, "latlon", 1_000_000)
            secs_vec = _run(engine, p, "latlon", 1_000_000)
            naive_rate = naive_n / secs_naive
            print(f"naive per-ping loop (h3 + dict), {naive_n:,} lat/lon pings: "
                  f"{naive_rate:,.0f} pings/s; engine is {(n / secs_vec) / naive_rate:.1f}x faster")
    print(f"\n{'devices':>12} {'state bytes':>14} {'bytes/device':>13}")
    for n_dev in (1_000_000, 5_000_000):
        engine = _engine(np.random.default_rng(1), 1000)
        keys = np.random.default_rng(2).integers(1, 2**63, size=n_dev, dtype=np.uint64)
        ts = T0 + np.arange(n_dev, dtype=np.int64) % 86_400_000
        for lo in range(0, n_dev, 1_000_000):
            s = slice(lo, lo + 1_000_000)
            engine.ingest(keys[s], ts[s], np.zeros(len(keys[s]), np.uint8),
                          np.zeros(len(keys[s]), np.int64))
        size = engine.state.nbytes
        print(f"{n_dev:>12,} {size:>14,} {size / n_dev:>13.1f}")


if __name__ == "__main__":
    main()
