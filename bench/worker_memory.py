"""Memory of one partition's live state per million devices (a benchmark: prints, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/worker_memory.py [--devices 2000000] [--step 500000]

Feeds synthetic lat/lon pings (devices around 12 Kazakh city centres, one hour apart so windows
close) as DFB1 frames through :class:`stream.estimate.partition.PartitionState`, exactly as a worker does,
and after each step of new devices prints the process's resident memory (RSS), the engine state's
bytes, and the checkpoint blob that the worker stores in Redis. The slope of RSS over devices is
the figure to size workers with; the checkpoint size is what Redis holds per partition.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from engine_speed import CITIES, T0, synthetic_regions  # bench/ is on the path when run

from estimators.engine import Engine, EngineConfig
from estimators.units import HOUR_MS
from stream.decode.frame import encode_frame
from stream.estimate.partition import PartitionState
from stream.estimate.windows import WindowSettings


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def _frames(first: int, n: int, ts0: int, rows: int) -> list[bytes]:
    rng = np.random.default_rng(first)
    city = rng.integers(0, len(CITIES), size=n)
    cols = {"device": np.char.add("dev", np.arange(first, first + n).astype(str)),
            "ts": ts0 + np.sort(rng.integers(0, 3_000_000, size=n)),
            "operator": np.array(["40101", "40102", "40177"])[rng.integers(0, 3, size=n)],
            "home_mcc": np.full(n, 401), "lat": CITIES[city, 0] + rng.normal(0, 0.08, n),
            "lon": CITIES[city, 1] + rng.normal(0, 0.12, n)}
    return [encode_frame({k: v[i:i + rows] for k, v in cols.items()}) for i in range(0, n, rows)]


def main() -> None:
    """Grow one partition to ``--devices`` devices and print memory after each step."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2_000_000)
    ap.add_argument("--step", type=int, default=500_000)
    ap.add_argument("--res", type=int, default=8)
    args = ap.parse_args()
    ps = PartitionState("pings", 0, Engine(synthetic_regions(), EngineConfig(res=args.res)),
                        b"bench-memory-key-0123456789abcdef", WindowSettings(every_ms=HOUR_MS))
    base = _rss_bytes()
    print(f"RSS before any device: {base / 2**20:.0f} MiB (Python, numpy, h3, the engine)")
    print(f"{'devices':>10} {'RSS MiB':>8} {'RSS B/device':>13} {'state B/device':>15} "
          f"{'checkpoint B/device':>20} {'pings/s':>9}")
    offset = 0
    for step, first in enumerate(range(0, args.devices, args.step)):
        n = min(args.step, args.devices - first)
        frames = _frames(first, n, T0 + step * HOUR_MS, 20_000)
        t = time.perf_counter()
        ps.process(list(range(offset, offset + len(frames))), frames)
        rate = n / (time.perf_counter() - t)
        offset += len(frames)
        del frames
        devices = first + n
        state = sum(a.nbytes for a in ps.engine.export_state().values())
        blob = len(ps.checkpoint())
        rss = _rss_bytes()
        print(f"{devices:>10,} {rss / 2**20:>8.0f} {(rss - base) / devices:>13.0f} "
              f"{state / devices:>15.1f} {blob / devices:>20.1f} {rate:>9,.0f}")


if __name__ == "__main__":
    main()
