"""The publisher against a real Redis: the deployment record (epoch and pinned settings), loss
of Redis's data noticed by every write, complete and consistent tally sets, eviction policies.

Each test runs on a Redis of its own module (FLUSHDB and CONFIG SET must not reach anyone
else's keys)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from estimators.engine import Engine
from estimators.tally import Tally
from stream.contract import InputError
from stream.estimate.checkpoint import EncodedCheckpoint
from stream.estimate.checkpoint_delta import DeltaBase
from stream.estimate.engine_options import EngineOptions
from stream.estimate.fingerprint import Fingerprint, deployment_fingerprint
from stream.estimate.windows import WindowSettings
from stream.local.embedded import Service, start_redis
from stream.publish.redis_publisher import (
    DeploymentMismatchError,
    PublishSettings,
    RedisStateLost,
    SnapshotPublisher,
    eviction_problem,
)
from stream.sources.reference_files import Reference, ReferencePaths, load_reference
from stream.worker.guards import check_redis_at_start

pytestmark = pytest.mark.integration  # a real Redis

HOUR = 3_600_000
W1, W2, W3 = (1_772_409_600_000 + h * HOUR for h in (1, 2, 3))  # 2026-03-02 01:00 .. 03:00


@pytest.fixture(scope="module")
def store() -> Iterator[Service]:
    svc = start_redis()
    yield svc
    svc.stop()


@pytest.fixture
def prefix(store: Service) -> Iterator[str]:
    p = f"defacto-test-guards:{secrets.token_hex(4)}"
    yield p
    sync = redis.Redis.from_url(store.url)
    for k in sync.scan_iter(f"{p}:*"):
        sync.delete(k)


@pytest.fixture
def reference(regions_file: Path) -> Reference:
    return load_reference(ReferencePaths(regions_file))


def _fp(reference: Reference, **options: Any) -> Fingerprint:
    return deployment_fingerprint(EngineOptions(**options), WindowSettings(), reference, 2,
                                  "0123456789abcdef", 0.1)


def _run(store: Service, body: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = aioredis.from_url(store.url)
        try:
            return await body(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


def _publisher(client: aioredis.Redis, reference: Reference, prefix: str,
               fingerprint: Fingerprint | None) -> SnapshotPublisher:
    return SnapshotPublisher(client, Engine(reference.regions), 2, HOUR, None,
                             PublishSettings(prefix=prefix), fingerprint=fingerprint)


def _history(store: Service, prefix: str) -> list[str]:
    sync = redis.Redis.from_url(store.url)
    return [json.loads(m)["at"] for m in sync.zrange(f"{prefix}:history", 0, -1)]


def test_the_first_worker_pins_the_settings_and_others_are_refused(
        store: Service, prefix: str, reference: Reference, tmp_path: Path,
        regions_doc: dict[str, Any]) -> None:
    rev = tmp_path / "reversed.geojson"
    rev.write_text(json.dumps({**regions_doc, "features": regions_doc["features"][::-1]}))
    reversed_fp = _fp(load_reference(ReferencePaths(rev)))

    async def body(client: aioredis.Redis) -> None:
        first = await _publisher(client, reference, prefix, _fp(reference)).join()
        again = await _publisher(client, reference, prefix, _fp(reference)).join()
        assert first.created and not again.created and again.epoch == first.epoch
        assert again.fingerprint == _fp(reference)
        with pytest.raises(DeploymentMismatchError) as k1:
            await _publisher(client, reference, prefix, _fp(reference, k=1)).join()
        assert "--k is 1 here, 15 in the deployment" in str(k1.value)
        assert f"redis-cli DEL {prefix}:deployment" in str(k1.value)
        with pytest.raises(DeploymentMismatchError) as order:
            await _publisher(client, reference, prefix, reversed_fp).join()
        assert "the order of the features in --regions is" in str(order.value)
        assert "new deployment (new --prefix and --group" in str(order.value)

    _run(store, body)


async def _save_checkpoint(pub: SnapshotPublisher, client: redis.Redis, partition: int,
                           offset: int) -> bool:
    """A checkpoint saved as the worker saves it (the writer, called from a thread)."""
    write = await pub.checkpoint_writer()
    return await asyncio.to_thread(write, client, partition, offset, _base(b"blob"), "topic-id")


def _base(blob: bytes, base_id: str = "b1") -> EncodedCheckpoint:
    """A full checkpoint of ``blob`` (its content does not matter to Redis)."""
    return EncodedCheckpoint(blob, DeltaBase(base_id, np.zeros(0, np.uint64)), False, 0)


def _delta(blob: bytes, base_id: str = "b1") -> EncodedCheckpoint:
    return EncodedCheckpoint(blob, DeltaBase(base_id, np.zeros(0, np.uint64)), True, 0)


def test_every_write_notices_that_redis_lost_its_data(store: Service, prefix: str,
                                                       reference: Reference) -> None:
    sync = redis.Redis.from_url(store.url)

    async def body(client: aioredis.Redis) -> None:
        pub = _publisher(client, reference, prefix, _fp(reference))
        other = _publisher(client, reference, prefix, _fp(reference))  # a second worker
        await pub.join()
        await other.join()
        tally = pub.engine.tally(W1)
        assert await pub.write_tallies(0, [tally], W1, W1 - 1) == 1
        assert (await pub.checkpoint_writer())(sync, 0, 10, _base(b"blob"), "topic-id")
        sync.flushdb()
        writes = [lambda: pub.write_tallies(0, [pub.engine.tally(W2)], W2, W2 - 1),
                  lambda: _save_checkpoint(pub, sync, 0, 20),
                  lambda: pub.write_health({0: 1}, {}, {"accepted": 1}),
                  lambda: pub.publish_geometry(reference.regions),
                  pub.try_publish]
        for write in writes:
            with pytest.raises(RedisStateLost, match="Redis lost defacto's data"):
                await write()
        assert sync.dbsize() == 0  # nothing was written after the loss
        await pub.join()  # the worker's recovery: a new epoch
        assert await pub.write_tallies(0, [pub.engine.tally(W2)], W2, W2 - 1) == 1
        with pytest.raises(RedisStateLost):  # the other worker's epoch is gone as well
            await other.write_health({}, {}, {"accepted": 1})

    _run(store, body)


async def _both(pub: SnapshotPublisher, windows: dict[int, list[int]]) -> None:
    """Tallies of each partition for its windows, with the closed and last-ping marks."""
    for p, ats in windows.items():
        await pub.write_tallies(p, [pub.engine.tally(at) for at in ats], max(ats), max(ats) - 1)


def test_a_window_missing_a_closed_partitions_tally_is_skipped_not_published(
        store: Service, prefix: str, reference: Reference,
        caplog: pytest.LogCaptureFixture) -> None:
    sync = redis.Redis.from_url(store.url)

    async def body(client: aioredis.Redis) -> list[int]:
        pub = _publisher(client, reference, prefix, _fp(reference))
        await _both(pub, {0: [W1, W2], 1: [W1, W2]})
        sync.hdel(f"{prefix}:tally:{W1}", "1")  # evicted, or lost with Redis after publishing
        return await pub.try_publish()

    with caplog.at_level(logging.ERROR, "defacto.publish"):
        assert _run(store, body) == [W2]
    assert _history(store, prefix) == ["2026-03-02T02:00:00Z"]
    assert "window 2026-03-02T01:00:00Z skipped, never published: the tally of partition(s) 1" \
        in caplog.text
    assert not sync.exists(f"{prefix}:tally:{W1}") and sync.zcard(f"{prefix}:pending") == 0


def test_a_partition_that_starts_later_is_not_needed_before_its_first_window(
        store: Service, prefix: str, reference: Reference) -> None:
    async def body(client: aioredis.Redis) -> tuple[list[int], list[int]]:
        pub = _publisher(client, reference, prefix, _fp(reference))
        await _both(pub, {0: [W1, W2, W3]})
        before = await pub.try_publish()  # partition 1 has closed nothing yet
        await _both(pub, {1: [W2, W3]})
        return before, await pub.try_publish()

    assert _run(store, body) == ([], [W1, W2, W3])


def test_tallies_of_other_settings_are_refused_naming_the_difference(
        store: Service, prefix: str, reference: Reference, tmp_path: Path,
        regions_doc: dict[str, Any]) -> None:
    rev = tmp_path / "reversed.geojson"
    rev.write_text(json.dumps({**regions_doc, "features": regions_doc["features"][::-1]}))
    theirs = _fp(load_reference(ReferencePaths(rev)))
    sync = redis.Redis.from_url(store.url)

    async def body(client: aioredis.Redis) -> tuple[list[int], Any]:
        pub = _publisher(client, reference, prefix, _fp(reference))
        await _both(pub, {0: [W1], 1: [W1]})
        # partition 1's tally rewritten by a worker that had other files (say, an older version
        # that did not pin settings)
        odd = replace(pub.engine.tally(W1), fingerprint=theirs.tally().to_json())
        sync.hset(f"{prefix}:tally:{W1}", "1", odd.to_bytes())
        return await pub.try_publish(), pub.refusal

    done, refusal = _run(store, body)
    assert done == [] and _history(store, prefix) == []
    reason, message = refusal
    assert reason == "settings_mismatch"
    assert message.startswith("window 2026-03-02T01:00:00Z not published: partition 1's tally was "
                              "taken with other settings (the order of the features in --regions")
    assert "in partition 1's tally" in message and sync.zcard(f"{prefix}:pending") == 1


def test_tallies_live_until_published_and_are_never_rewritten_after(
        store: Service, prefix: str, reference: Reference) -> None:
    sync = redis.Redis.from_url(store.url)

    async def body(client: aioredis.Redis) -> tuple[list[int], int, list[Tally]]:
        pub = _publisher(client, reference, prefix, _fp(reference))
        await _both(pub, {0: [W1, W2], 1: [W1]})
        assert sync.ttl(f"{prefix}:tally:{W1}") == -1  # no expiry: nothing may vanish early
        held = await pub.load_tallies(0)
        done = await pub.try_publish()
        again = await pub.write_tallies(1, [pub.engine.tally(W1)], W1, W1 - 1)  # replayed
        return done, again, held + await pub.load_tallies(0)

    done, again, held = _run(store, body)
    assert done == [W1] and again == 0
    assert [t.at_ms for t in held] == [W1, W2, W2]  # before and after W1 was published
    assert held[0].fingerprint == _fp(reference).tally().to_json()
    assert not sync.exists(f"{prefix}:tally:{W1}") and sync.exists(f"{prefix}:tally:{W2}")
    assert sync.zrange(f"{prefix}:pending", 0, -1) == [str(W2).encode()]


def test_checkpoints_carry_their_topic_id_and_settings(store: Service, prefix: str,
                                                        reference: Reference) -> None:
    sync = redis.Redis.from_url(store.url)

    async def body(client: aioredis.Redis) -> None:
        pub = _publisher(client, reference, prefix, _fp(reference))
        assert await pub.load_checkpoint_record(0) is None
        write = await pub.checkpoint_writer()
        assert write(sync, 0, 42, _base(b"state"), "AaInLw+2ecCM5H3rYpMekA")
        rec = await pub.load_checkpoint_record(0)
        assert (rec.data, rec.offset, rec.topic_id) == (b"state", 42, "AaInLw+2ecCM5H3rYpMekA")
        assert rec.delta is None
        # a delta is stored beside its own base, never beside another one
        assert write(sync, 0, 50, _delta(b"changed rows"), "AaInLw+2ecCM5H3rYpMekA")
        rec = await pub.load_checkpoint_record(0)
        assert (rec.data, rec.delta, rec.offset) == (b"state", b"changed rows", 50)
        assert write(sync, 0, 60, _delta(b"of another base", "b0"), "t") is None
        assert not write(sync, 0, 45, _delta(b"older"), "t")  # a newer offset is stored
        rec = await pub.load_checkpoint_record(0)
        assert (rec.data, rec.delta, rec.offset) == (b"state", b"changed rows", 50)
        assert write(sync, 0, 70, _base(b"new base", "b2"), "AaInLw+2ecCM5H3rYpMekA")
        rec = await pub.load_checkpoint_record(0)
        assert (rec.data, rec.delta, rec.offset) == (b"new base", None, 70)
        assert write(sync, 0, 80, _delta(b"rows of b1"), "t") is None
        assert rec.fingerprint == _fp(reference).tally() and pub.checkpoint_problem(rec) is None
        other = _publisher(client, reference, prefix, _fp(reference, res=7))
        assert other.checkpoint_problem(rec) == "--res is 7 here, 8 in the checkpoint"
        sync.hdel(f"{prefix}:checkpoint:0", "topic_id", "fingerprint")  # an older checkpoint
        old = await pub.load_checkpoint_record(0)
        assert old.topic_id is None and old.fingerprint is None
        assert other.checkpoint_problem(old) is None

    _run(store, body)


@pytest.mark.parametrize(("info", "refused"), [
    ({"maxmemory": 0, "maxmemory_policy": "noeviction"}, False),
    ({"maxmemory": 3 << 20, "maxmemory_policy": "noeviction"}, False),
    ({"maxmemory": 0, "maxmemory_policy": "volatile-lru"}, False),  # no limit: never evicts
    ({"maxmemory": 3 << 20, "maxmemory_policy": "volatile-lru"}, True),
    ({"maxmemory": 3 << 20, "maxmemory_policy": "volatile-ttl"}, True),
    ({"maxmemory": 0, "maxmemory_policy": "allkeys-lru"}, True),
    ({"maxmemory": 3 << 20, "maxmemory_policy": "allkeys-random"}, True),
])
def test_eviction_policies(info: dict[str, Any], refused: bool) -> None:
    problem = eviction_problem(info)
    assert (problem is not None) == refused
    if refused:
        assert f"maxmemory-policy {info['maxmemory_policy']}" in problem
        assert "set maxmemory-policy noeviction" in problem


def test_a_redis_that_may_evict_is_refused_at_start(prefix: str, reference: Reference) -> None:
    own = start_redis()  # CONFIG SET must not reach the shared one
    try:
        sync = redis.Redis.from_url(own.url)
        sync.config_set("maxmemory", "3mb")
        sync.config_set("maxmemory-policy", "volatile-lru")
        with pytest.raises(InputError) as exc:
            check_redis_at_start(own.url, prefix, _fp(reference))
        assert str(exc.value).startswith(
            f"Redis {own.url}: Redis may evict defacto's keys (maxmemory-policy volatile-lru, "
            "maxmemory 3145728 bytes)")
        assert not sync.exists(f"{prefix}:deployment")  # refused before pinning anything

        async def body(client: aioredis.Redis) -> str | None:
            return await _publisher(client, reference, prefix, None).eviction_problem()

        assert "volatile-lru" in (_run(own, body) or "")
        sync.config_set("maxmemory-policy", "noeviction")
        assert check_redis_at_start(own.url, prefix, _fp(reference)) is None
        assert sync.hget(f"{prefix}:deployment", "digest").decode() == _fp(reference).digest
        with pytest.raises(InputError, match="--k is 5 here, 15 in the deployment"):
            check_redis_at_start(own.url, prefix, _fp(reference, k=5))
    finally:
        own.stop()
    warning = check_redis_at_start(own.url, prefix, _fp(reference), timeout_s=0.5)
    assert warning is not None and "does not answer" in warning
