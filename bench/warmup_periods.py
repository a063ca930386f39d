"""Period warm-up of the migration flows: a cold start against the same pings with their history.

    PYTHONPATH=. python bench/warmup_periods.py [--devices 600] [--days 200] [--cold-day 40] [--seeds 0,1,2]

Devices of a two-district city and its rural ring each sleep in one place, seen on 45, 70 or
100 % of nights (drawn per device), and move once to another place on a random day. The pings
are fed to one engine from the start and to another from ``--cold-day`` on (a cold start), and
the relocations and confirmed moves each detects per night are compared. Printed per seed: for
14-night bins from the cold engine's ``relocations_ready_from`` (and ``confirmed_ready_from``,
:class:`estimators.warmup.PeriodWarmUp`), the moves the history run detects and how many of them
the cold run misses: the flags should mark every period where the cold run is short. Prints
figures, asserts nothing (``docs/METHOD.md``, Warm-up).
"""

from __future__ import annotations

import argparse

import numpy as np

from estimators.engine import Engine, EngineConfig
from estimators.regions import regions_from_geojson
from estimators.units import DAY_MS, HOUR_MS, MINUTE_MS
from tests.conftest import two_district_city  # the tests' small region set

PLACES = [(51.15, 71.45), (51.05, 71.45), (50.7, 71.0)]
T0 = 1_772_409_600_000  # 2026-03-02 00:00Z, 05:00 local
RELOCATION, CONFIRMED = 1, 2


def pings(seed: int, devices: int, days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(device keys, times, place index) sorted by time: a night ping (01:00 local) on the nights
    a device is seen, and a daytime ping (11:00 local) every day, at home before its move day
    and at its new place from then on."""
    rng = np.random.default_rng(seed)
    keys, ts, place = [], [], []
    for d in range(devices):
        seen = rng.choice([0.45, 0.7, 1.0])
        home = int(rng.integers(3))
        to = (home + 1 + int(rng.integers(2))) % 3
        move = int(rng.integers(0, days))
        for day in range(days):
            where = home if day < move else to
            if rng.random() < seen:
                keys.append(d + 1)
                ts.append(T0 + day * DAY_MS - 4 * HOUR_MS + int(rng.integers(0, 60)) * MINUTE_MS)
                place.append(where)
            keys.append(d + 1)
            ts.append(T0 + day * DAY_MS + 6 * HOUR_MS + int(rng.integers(0, 60)) * MINUTE_MS)
            place.append(where)
    order = np.argsort(ts, kind="stable")
    k = (np.array(keys, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))[order]
    return k, np.array(ts, dtype=np.int64)[order], np.array(place)[order]


def detected(k: np.ndarray, ts: np.ndarray, place: np.ndarray, from_ms: int
             ) -> tuple[Engine, dict[tuple[int, int], set[int]]]:
    """An engine fed the pings from ``from_ms`` on, and its migration events: (kind, night) ->
    device keys."""
    engine = Engine(regions_from_geojson(two_district_city()), EngineConfig(res=8),
                    record_migration=True)
    sel = ts >= from_ms
    k, ts, place = k[sel], ts[sel], place[sel]
    lat = np.array([PLACES[i][0] for i in place])
    lon = np.array([PLACES[i][1] for i in place])
    loc = engine.cells.locate_latlng(lat, lon)
    for lo in range(0, len(ts), 5_000):
        s = slice(lo, lo + 5_000)
        engine.ingest(k[s], ts[s], np.zeros(len(ts[s]), np.uint8), loc[s])
    assert engine.migration is not None
    ev = engine.migration.events()
    keys = engine.state.index.keys
    out: dict[tuple[int, int], set[int]] = {}
    for row, night, kind in zip(ev["row"].tolist(), ev["night"].tolist(), ev["kind"].tolist(),
                                strict=True):
        out.setdefault((kind, night), set()).add(int(keys[row]))
    return engine, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=600)
    ap.add_argument("--days", type=int, default=200)
    ap.add_argument("--cold-day", type=int, default=40)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    for seed in [int(s) for s in args.seeds.split(",")]:
        k, ts, place = pings(seed, args.devices, args.days)
        _, full = detected(k, ts, place, int(ts.min()))
        cold, part = detected(k, ts, place, T0 + args.cold_day * DAY_MS)
        warm = cold.period_warm_up(cold.tally(int(ts.max()) + 1))
        for kind, name, ready in ((RELOCATION, "relocations", warm.relocations_from_night),
                                  (CONFIRMED, "confirmed", warm.confirmed_from_night)):
            assert ready is not None
            bins: dict[int, list[int]] = {}
            before = [0, 0]
            for (kd, night), keys in full.items():
                if kd != kind:
                    continue
                missed = len(keys - part.get((kd, night), set()))
                if night < ready:
                    if night >= ready - 28:
                        before[0] += len(keys)
                        before[1] += missed
                    continue
                b = bins.setdefault((night - ready) // 14, [0, 0])
                b[0] += len(keys)
                b[1] += missed
            shown = "  ".join(f"+{14 * i}: {n_missed}/{n}" for i, (n, n_missed) in sorted(bins.items()))
            print(f"seed {seed} {name:<11} the 28 nights before ready: {before[1]}/{before[0]} "
                  f"missed; from ready, by 14 nights (missed/detected): {shown}")


if __name__ == "__main__":
    main()
