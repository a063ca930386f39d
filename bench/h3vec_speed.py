"""Speed of h3vec.latlng_to_cell vs a per-point h3 loop (a benchmark: prints figures only).

    python bench/h3vec_speed.py [--points N] [--repeats R]

(with the package installed, as ``make`` does, or with ``PYTHONPATH=.`` from the repo root).

Points are uniform in the Kazakhstan bounding box (lat 40..56, lng 46..88), 1 M by default.
Prints points/s of ``estimators.h3vec.latlng_to_cell`` at res 7, 8 and 9 (best of R runs after
a warm-up that builds the lazy lookup tables) and of ``h3.api.basic_int.latlng_to_cell`` called
in a Python loop at res 8 (one run), plus whether both gave identical cells. Single-threaded
(numpy element-wise code); takes a few seconds, well under a minute.
"""

from __future__ import annotations

import argparse
import time

import h3
import numpy as np

from estimators.h3vec import latlng_to_cell


def _best_seconds(lat: np.ndarray, lng: np.ndarray, res: int, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of latlng_to_cell, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        latlng_to_cell(lat, lng, res)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000, help="points per run")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per resolution")
    args = ap.parse_args()

    rng = np.random.default_rng(7)
    lat = rng.uniform(40.0, 56.0, args.points)
    lng = rng.uniform(46.0, 88.0, args.points)
    latlng_to_cell(lat[:1000], lng[:1000], 8)  # warm-up: builds the lazy tables

    print(f"{args.points:,} points, Kazakhstan bbox, numpy {np.__version__}, h3 {h3.__version__}")
    for res in (7, 8, 9):
        seconds = _best_seconds(lat, lng, res, args.repeats)
        print(f"h3vec.latlng_to_cell res {res}: {args.points / seconds / 1e6:6.2f} M points/s"
              f"  ({seconds * 1e3:.0f} ms, best of {args.repeats})")

    encode = h3.api.basic_int.latlng_to_cell
    t0 = time.perf_counter()
    loop = np.fromiter((encode(a, b, 8) for a, b in zip(lat.tolist(), lng.tolist(), strict=True)),
                       dtype=np.uint64, count=args.points)
    seconds = time.perf_counter() - t0
    vec_seconds = _best_seconds(lat, lng, 8, 1)
    print(f"per-point h3 loop       res 8: {args.points / seconds / 1e6:6.2f} M points/s"
          f"  ({seconds * 1e3:.0f} ms); h3vec speed-up x{seconds / vec_seconds:.1f}")
    print(f"identical cells: {bool(np.array_equal(loop, latlng_to_cell(lat, lng, 8)))}")


if __name__ == "__main__":
    main()
