"""What a partition checkpoint costs, full (a base) against a delta (a benchmark: asserts nothing).

    python bench/checkpoint_cost.py [--devices 1200000] [--changed 0.01,0.03,0.1,0.3] [--redis URL]

Builds N devices' state directly (``bench/window_close.py``'s world: a 28-night ring, migration
on), writes a base checkpoint as the worker does (``encode_checkpoint`` + the Redis script of
``SnapshotPublisher.checkpoint_writer``, through a synchronous client), then for each share of
devices that pinged since, a delta against that base. Per checkpoint: CPU and wall seconds to
encode, wall seconds to store in Redis, the blob's size, and the time to resume from what Redis
holds (base + delta); last, the first checkpoint of an engine restored from that (a restarted
worker), against the base it resumed from. Redis: ``--redis`` (default 127.0.0.1:6379, keys
under a random prefix, deleted at the end).
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Any

import numpy as np
import redis
from window_close import T0, World, build_state, grid_regions

from estimators.engine import Engine, EngineConfig
from estimators.units import DAY_MS, HOUR_MS
from stream.estimate import checkpoint
from stream.estimate.checkpoint import EncodedCheckpoint
from stream.publish.redis_publisher import _SAVE_IF_NEWER


def _captured(engine: Engine) -> dict[str, Any]:
    return {"meta": np.array('{"version": 3}'),
            **{"captured_" + k: v for k, v in engine.capture_state().items()}}


def _timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
    c, w = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c, time.perf_counter() - w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=1_200_000)
    p.add_argument("--changed", default="0.01,0.03,0.1,0.3",
                   help="shares of devices that ping between the base and each delta")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    engine = Engine(grid_regions(), EngineConfig(res=8, timezone="Asia/Almaty"))
    world = World(args.devices, engine, rng, n_towers=20_000)
    at = (T0 + 30 * DAY_MS) // DAY_MS * DAY_MS + 12 * HOUR_MS
    build_state(engine, world, at, rng)
    engine.tally(at)
    client = redis.Redis.from_url(args.redis)
    prefix = f"bench-cp-{secrets.token_hex(4)}"
    deployment, key = f"{prefix}:deployment", f"{prefix}:checkpoint:0"
    client.hset(deployment, "epoch", "e1")
    save = client.register_script(_SAVE_IF_NEWER)

    def store(enc: EncodedCheckpoint, offset: int) -> int:
        return int(save(keys=[deployment, key], args=["e1", offset, enc.blob, "", "",
                                                      enc.base.id, "1" if enc.delta else "0"]))

    def resume() -> tuple[Engine, Any]:
        data, delta = client.hmget(key, "data", "delta")
        arrays = checkpoint._load(data)
        adopted = checkpoint._stored_base(arrays)
        if delta is not None:
            arrays = checkpoint.with_delta(arrays, checkpoint._load(delta))
        fresh = Engine(grid_regions(), EngineConfig(res=8, timezone="Asia/Almaty"))
        fresh.restore_state({k[6:]: v for k, v in arrays.items() if k.startswith("state_")})
        return fresh, adopted

    print(f"{args.devices:,} devices ({engine.state.n_devices:,} rows), migration on")
    print(f"{'checkpoint':<22}{'rows':>11}{'MB':>9}{'encode CPU-s':>14}{'encode wall':>13}"
          f"{'Redis wall':>12}{'resume wall':>13}")
    try:
        base, c, w = _timed(checkpoint.encode_checkpoint, _captured(engine))
        _, _, r = _timed(store, base, 1)
        _, _, back = _timed(resume)
        print(f"{'base':<22}{base.rows:>11,}{len(base.blob) / 1e6:>9.1f}{c:>14.3f}{w:>13.3f}"
              f"{r:>12.3f}{back:>13.3f}")
        t, offset = at, 1
        for share in (float(x) for x in args.changed.split(",")):
            t += 1000
            offset += 1
            dev = np.flatnonzero(rng.random(world.n) < share)
            engine.ingest(world.keys[dev], np.full(dev.size, t, dtype=np.int64),
                          world.opclass[dev], world.loc[world.work[dev]])
            enc, c, w = _timed(checkpoint.encode_checkpoint, _captured(engine), base.base)
            stored, _, r = _timed(store, enc, offset)
            _, _, back = _timed(resume)
            kind = "delta" if enc.delta else "base (over half)"
            print(f"{kind + f', {share:.0%} pinged':<22}{enc.rows:>11,}{len(enc.blob) / 1e6:>9.1f}"
                  f"{c:>14.3f}{w:>13.3f}{r:>12.3f}{back:>13.3f}" + ("" if stored == 1 else
                                                                    f"  (not stored: {stored})"))
        (fresh, adopted), _, back = _timed(resume)
        enc, c, w = _timed(checkpoint.encode_checkpoint, _captured(fresh), adopted)
        print(f"{'after a restart':<22}{enc.rows:>11,}{len(enc.blob) / 1e6:>9.1f}{c:>14.3f}"
              f"{w:>13.3f}{'':>12}{back:>13.3f}  ({'a delta' if enc.delta else 'a base'} "
              "against the base it resumed from)")
    finally:
        client.delete(deployment, key)


if __name__ == "__main__":
    main()
