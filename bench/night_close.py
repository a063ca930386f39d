"""Cost of one night's close at national scale (a benchmark: prints figures, asserts nothing).

    python bench/night_close.py [--devices 1000000,10000000] [--regions 20] [--nights 3] [--seed 1]

Builds the presence and migration state of N devices directly (no pings: 10 M devices x 28
nights would be 280 M of them) with a realistic mix of sleepers, then times what the engine does
at every night close: the night votes over the usual-residence window
(:meth:`estimators.presence.PresenceState.night_votes`) and the migration rules
(:meth:`estimators.migration.MigrationState.evaluate`), for ``--nights`` consecutive nights, and
the step of the kept home summaries to the next night (``PresenceState._advance_home_sum``: done
once a night, when its first ping arrives, so that window closes need not recount homes), after
building them once from the ring (what the first window close after a start or an older
checkpoint does).

The mix, per device: 80 % sleep in one region on the nights they are seen (each night seen with
probability 0.7), 12 % split their nights between two regions (70/30), 5 % sleep anywhere (a
random region each night), 3 % are silent (lapsed). It is the vote's worst case that matters:
devices with one region take the fast path, the others are sorted.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from estimators.migration import MigrationConfig, MigrationState
from estimators.presence import NightWindow, PresenceState


def _state(n: int, n_regions: int, night: int, rng: np.random.Generator
           ) -> tuple[PresenceState, MigrationState]:
    window = NightWindow()
    cfg = MigrationConfig()
    st = PresenceState(n_regions, window, capacity=n, ring_nights=cfg.window_nights)
    slots = st.ring_nights
    kind = rng.choice(4, size=n, p=[0.80, 0.12, 0.05, 0.03])
    home = rng.integers(0, n_regions, size=n)
    other = (home + rng.integers(1, n_regions, size=n)) % n_regions
    ring = np.zeros((n, slots), dtype=st.ring_dtype)
    for lo in range(0, n, 1 << 20):
        hi = min(n, lo + (1 << 20))
        k = kind[lo:hi, None]
        region = np.where(k == 1, np.where(rng.random((hi - lo, slots)) < 0.7, home[lo:hi, None],
                                           other[lo:hi, None]), home[lo:hi, None])
        region = np.where(k == 2, rng.integers(0, n_regions, size=(hi - lo, slots)), region)
        seen = (rng.random((hi - lo, slots)) < 0.7) & (k != 3)
        bucket = rng.integers(0, 4, size=(hi - lo, slots))
        ring[lo:hi] = np.where(seen, (bucket << 8) | (region + 1), 0).astype(st.ring_dtype)
    last_night = np.where(kind == 3, night - 40, night).astype(np.int32)
    st.restore({"key": rng.choice(np.iinfo(np.int64).max, size=n, replace=False).astype(np.uint64),
                "stamp": np.zeros(n, dtype=np.uint64), "opclass": np.zeros(n, dtype=np.uint8),
                "last_night": last_night, "ring": ring})
    mig = MigrationState(n_regions, cfg)
    return st, mig


def _close(st: PresenceState, mig: MigrationState, night: int) -> tuple[float, float, float]:
    n = st.n_devices
    t0 = time.perf_counter()
    votes = st.night_votes(night, mig.config.window_nights)
    t1 = time.perf_counter()
    active = st.last_night[:n].astype(np.int64) > night - mig.config.lapse_nights
    domestic = np.ones(n, dtype=bool)
    mig.evaluate(night, n, domestic, active, votes.region, votes.nights, votes.seen, votes.first)
    t2 = time.perf_counter()
    if st.home_sum_night is not None:
        st._advance_home_sum()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="1000000,10000000",
                    help="comma-separated device counts")
    ap.add_argument("--regions", type=int, default=20)
    ap.add_argument("--nights", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"bench/night_close.py: {args.regions} regions, window {MigrationConfig.window_nights} "
          f"nights, {args.nights} closes per size, seed {args.seed}")
    for n in (int(float(x)) for x in args.devices.split(",")):
        rng = np.random.default_rng(args.seed)
        night = 20_000
        t0 = time.perf_counter()
        st, mig = _state(n, args.regions, night, rng)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        st.home(night + 1)  # build the home summaries of night `night` once
        home_build_s = time.perf_counter() - t0
        times = [_close(st, mig, night + i) for i in range(args.nights)]
        votes_s = np.median([t[0] for t in times])
        rules_s = np.median([t[1] for t in times])
        home_s = np.median([t[2] for t in times])
        state_b = (st.nbytes + mig.nbytes) / n
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"  {n:>11,} devices: night close {votes_s + rules_s:6.2f} s (votes {votes_s:.2f} s, "
              f"rules {rules_s:.2f} s; median of {args.nights}); home summaries: next night "
              f"{home_s:.2f} s, built {home_build_s:.2f} s; state {state_b:.0f} B/device; "
              f"built in {build_s:.0f} s; process peak RSS {peak_gib:.1f} GiB")


if __name__ == "__main__":
    main()
