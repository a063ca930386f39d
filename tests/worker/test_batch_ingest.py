"""The batch ingest path: aiokafka records straight into partition batches, offsets committed
only after the checkpoint is in Redis, and a rebalance between two workers giving the figures
of one replay. Real Tansu broker, real Redis, real worker processes."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from livekit import (
    Workers,
    assert_history_is,
    engine_args,
    latest_is,
    live_workers,
    published_history,
    wait_for,
)
from redis.exceptions import RedisError

from estimators.units import HOUR_MS
from stream.cli import main
from stream.decode.messages import encode_json
from stream.estimate.engine_options import build_engine
from stream.local.embedded import Service, create_topic, free_port
from stream.sources.reference_files import ReferencePaths, load_reference
from stream.timefmt import parse_iso_ms
from stream.worker.config import WorkerConfig
from stream.worker.guards import TopicWatch
from stream.worker.kafka_batch import BatchConsumer, PartitionBatch, batch_of
from stream.worker.runtime import WorkerRuntime

pytestmark = pytest.mark.integration  # real broker, Redis and worker processes

KEY = "batch-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("batch") / "sim"
    assert main(["simulate", "astana", "--scale", "0.002", "--days", "1.1", "--seed", "5",
                 "--out", str(out)]) == 0
    (out / "key").write_text(KEY + "\n")
    return out


@pytest.fixture
def live(tmp_path: Path, broker: Service, redis_url: str, sim: Path) -> Iterator[Workers]:
    with live_workers(tmp_path, broker.url, redis_url, sim, "b") as w:
        yield w


# ---------------------------------------------------------------------------------------------- records


class _Record:
    def __init__(self, offset: int, value: bytes | None, headers: Any = ()) -> None:
        self.offset, self.value, self.headers = offset, value, headers


def test_batch_of_reads_headers_only_for_values_that_are_not_json() -> None:
    recs = [_Record(7, b'{"a": 1}', [("content-type", b"application/x-defacto-frame")]),
            _Record(8, None), _Record(9, b"DFB1...", [("Content-Type", b"application/x-defacto-frame")])]
    b = batch_of(recs)
    assert b.offsets.dtype == np.int64 and b.offsets.tolist() == [7, 8, 9]
    assert b.values == [b'{"a": 1}', b"", b"DFB1..."]
    assert b.content_types == [None, None, "application/x-defacto-frame"]
    assert batch_of([_Record(1, b"{}"), _Record(2, b"\x00abc")]).content_types is None
    plain = batch_of([_Record(3, b"{}", [("content-type", b"x")]), _Record(5, b"{b")])
    assert plain.offsets.tolist() == [3, 5] and plain.values == [b"{}", b"{b"]
    assert plain.content_types is None


def test_getmany_hands_over_raw_records(broker: Service, sim: Path) -> None:
    """The private aiokafka hook (``raw_records``) still works with the pinned aiokafka: the
    records carry offset, value and headers, and become one partition batch."""
    topic = f"raw-{uuid.uuid4().hex[:8]}"
    create_topic(broker.url, topic, 1)
    p = Producer({"bootstrap.servers": broker.url})
    for i in range(50):
        p.produce(topic, b'{"i": %d}' % i, partition=0,
                  headers=[("content-type", b"application/json")] if i % 2 else None)
    p.produce(topic, b"DFB1x", partition=0, headers=[("content-type", b"application/x-defacto-frame")])
    assert p.flush(30) == 0
    config = WorkerConfig(reference=ReferencePaths(regions=sim / "regions.geojson"),
                          kafka=broker.url, topic=topic, group=f"g-{topic}")

    async def fetch_all() -> tuple[set[int], list[int], list[bytes], list[str | None]]:
        assigned: list[int] = []

        async def on_assign(ps: list[int]) -> dict[int, int | None]:
            assigned.extend(ps)
            return {p: None for p in ps}

        async def on_revoke(ps: list[int]) -> None:
            return None

        bc = BatchConsumer(config, on_assign, on_revoke)
        await bc.start()
        try:
            offsets: list[int] = []
            values: list[bytes] = []
            cts: list[str | None] = []
            parts: set[int] = set()
            for _ in range(200):  # bounded: 200 fetches of at most 0.1 s
                for part, batch in (await bc.fetch(1000, 0.1)).items():
                    parts.add(part)
                    offsets += batch.offsets.tolist()
                    values += batch.values
                    cts += batch.content_types or [None] * len(batch.values)
                if len(values) >= 51:
                    break
            assert assigned == [0] and bc.owns(0) and not bc.owns(1)
            assert bc.highwater(0) == 51
            return parts, offsets, values, cts
        finally:
            await bc.stop()

    parts, offsets, values, cts = asyncio.run(fetch_all())
    # the consumer never makes the broker create a topic (a broker that lost its data must not
    # get the pings topic back with its default partition count)
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    missing_config = WorkerConfig(reference=config.reference, kafka=broker.url, topic=missing,
                                  group=f"g-{missing}")

    async def subscribe_missing() -> None:
        async def on_assign(ps: list[int]) -> dict[int, int | None]:
            return {}

        async def on_revoke(ps: list[int]) -> None:
            return None

        bc = BatchConsumer(missing_config, on_assign, on_revoke)
        await bc.start()
        try:
            for _ in range(10):  # bounded: 10 fetches of 0.2 s
                assert await bc.fetch(10, 0.2) == {}
        finally:
            await bc.stop()

    asyncio.run(subscribe_missing())
    admin = AdminClient({"bootstrap.servers": broker.url})
    assert missing not in admin.list_topics(timeout=10).topics
    assert parts == {0} and offsets == list(range(51))
    assert values[:3] == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}'] and values[50] == b"DFB1x"
    assert cts[50] == "application/x-defacto-frame" and set(cts[:50]) == {None}


# ---------------------------------------------------------------------------------------------- commits


class _FakeKafka:
    """The runtime's view of Kafka, recording each commit with the checkpoint Redis holds then."""

    def __init__(self, r: redis.Redis, prefix: str) -> None:
        self.r, self.prefix = r, prefix
        self.commits: list[tuple[int, int, bytes | None]] = []

    def owns(self, p: int) -> bool:
        return True

    def highwater(self, p: int) -> int | None:
        return None

    async def earliest(self, p: int) -> int:
        return 0

    def seek(self, p: int, offset: int) -> None:
        raise AssertionError("no seek expected")

    async def commit(self, p: int, offset: int) -> None:
        self.commits.append((p, offset, self.r.hget(f"{self.prefix}:checkpoint:{p}", "offset")))

    async def dead_letter(self, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        return None


def _runtime_parts(redis_url: str, sim: Path, n: int) -> tuple[str, list[bytes], Any]:
    """A key prefix of its own, the first ``n`` simulated pings as JSON messages, and a maker of
    a worker runtime on one partition (checkpoints only when forced) that fails the test if it
    would crash."""
    prefix = f"defacto-test:c{uuid.uuid4().hex[:8]}"
    paths = ReferencePaths(regions=sim / "regions.geojson", cells=sim / "cells.csv",
                           registry=sim / "registry.csv")
    config = WorkerConfig(reference=paths, redis_url=redis_url, prefix=prefix,
                          checkpoint_every_s=3600.0)
    reference = load_reference(paths)
    pings = [json.loads(line) for line in (sim / "pings.jsonl").read_text().splitlines()[:n]]

    def make() -> WorkerRuntime:
        async def crash(exc: BaseException) -> None:
            raise AssertionError(f"crashed: {exc}")

        return WorkerRuntime(crash, config, 1, lambda: build_engine(config.engine, reference),
                             KEY.encode(), reference.registry)
    return prefix, [encode_json(p) for p in pings], make


def test_offsets_are_committed_only_after_the_checkpoint_landed(redis_url: str, sim: Path) -> None:
    prefix, values, make = _runtime_parts(redis_url, sim, 3000)
    r = redis.Redis.from_url(redis_url)

    async def run() -> tuple[list[Any], list[Any]]:
        rt = make()
        fake = _FakeKafka(r, prefix)
        rt.kafka = fake  # type: ignore[assignment]
        try:
            assert await rt.assign([0]) == {0: None}
            await rt.handle({0: PartitionBatch(np.arange(1000, dtype=np.int64), values[:1000], None)})
            assert fake.commits == []  # not due yet: nothing committed, nothing checkpointed
            writer = rt.publisher.checkpoint_writer

            async def failing() -> Any:
                def refuse(*a: Any) -> bool:
                    raise RedisError("checkpoint refused (test)")
                return refuse

            rt.publisher.checkpoint_writer = failing  # type: ignore[method-assign]
            await rt.flush(force_checkpoint=True)
            refused = list(fake.commits)
            rt.publisher.checkpoint_writer = writer  # type: ignore[method-assign]
            rt.redis_ok, rt.redis_retry_at = True, 0.0
            await rt.handle({0: PartitionBatch(np.arange(1000, 3000, dtype=np.int64), values[1000:], None)})
            await rt.flush(force_checkpoint=True)
            return refused, list(fake.commits)
        finally:
            await rt.redis.aclose()

    try:
        refused, commits = asyncio.run(run())
        assert refused == []  # the checkpoint did not land: no offset committed
        assert commits == [(0, 3000, b"3000")]  # committed after Redis held that checkpoint
    finally:
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)


def test_checkpoints_are_bases_then_deltas_and_bases_again_when_redis_holds_another(
        redis_url: str, sim: Path) -> None:
    """The worker's checkpoints: a base first, then deltas of the devices changed since; a delta
    Redis refuses (the stored base is another worker's) is sent again as a base from the same
    capture; after Redis lost its data the rewritten checkpoint is a base (a delta has no base
    to go beside). Each ends with the offset committed and the stored pair resuming there."""
    prefix, values, make = _runtime_parts(redis_url, sim, 4000)
    r = redis.Redis.from_url(redis_url)
    key = f"{prefix}:checkpoint:0"

    def stored() -> tuple[bool, bool, int]:
        data, delta, offset = r.hmget(key, "data", "delta", "offset")
        return data is not None, delta is not None, int(offset or -1)

    async def run() -> list[tuple[bool, bool, int]]:
        rt = make()
        fake = _FakeKafka(r, prefix)
        rt.kafka = fake  # type: ignore[assignment]
        seen = []

        async def feed(lo: int, hi: int) -> None:
            if hi > lo:
                await rt.handle({0: PartitionBatch(np.arange(lo, hi, dtype=np.int64),
                                                   values[lo:hi], None)})
            await rt.flush(force_checkpoint=True)
            seen.append(stored())

        try:
            assert await rt.assign([0]) == {0: None}
            await feed(0, 2000)                                  # a base
            await feed(2000, 2500)                               # a delta beside it
            r.hset(key, "base_id", "another-workers-base")
            await feed(2500, 3000)                               # refused delta, sent as a base
            assert r.hget(key, "base_id") != b"another-workers-base"
            r.flushdb()
            for _ in range(5):                                   # bounded: loss seen, rewritten
                await feed(3000, 3000)
                if seen[-1][0]:
                    break
            await feed(3000, 4000)                               # deltas again after that
            kinds = {s.labels["kind"]: s.value for m in rt.metrics.registry.collect()
                     if m.name == "defacto_checkpoints" for s in m.samples
                     if s.name.endswith("_total")}
            assert kinds.get("base", 0) >= 3 and kinds.get("delta", 0) >= 2
            return seen
        finally:
            await rt.redis.aclose()

    try:
        seen = asyncio.run(run())
        assert seen[:3] == [(True, False, 2000), (True, True, 2500), (True, False, 3000)]
        assert seen[-2] == (True, False, 3000) and seen[-1] == (True, True, 4000)
    finally:
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)


def test_output_flows_while_the_consumer_never_idles(broker: Service, redis_url: str,
                                                    sim: Path) -> None:
    """Batches handed over back to back, as under a steady live feed: each batch's tallies leave
    once a topic check begun after it has answered, and checkpoints land, all while the
    consumer is still busy (they used to wait for a check begun after the *latest* batch, i.e.
    for the consumer to idle, so windows queued up for as long as the feed lasted)."""
    prefix = f"defacto-test:f{uuid.uuid4().hex[:8]}"
    topic = f"pings-f{uuid.uuid4().hex[:8]}"
    create_topic(broker.url, topic, 1)
    paths = ReferencePaths(regions=sim / "regions.geojson", cells=sim / "cells.csv",
                           registry=sim / "registry.csv")
    config = WorkerConfig(reference=paths, redis_url=redis_url, prefix=prefix,
                          checkpoint_every_s=1.0)
    reference = load_reference(paths)
    values = [line.encode() for line in (sim / "pings.jsonl").read_text().splitlines()]
    r = redis.Redis.from_url(redis_url)
    ends = sorted({(json.loads(v)["ts"] // HOUR_MS + 1) * HOUR_MS for v in values})
    rows = 50

    async def run() -> tuple[list[int], list[bytes | None]]:
        async def crash(exc: BaseException) -> None:
            raise AssertionError(f"crashed: {exc}")

        rt = WorkerRuntime(crash, config, 1, lambda: build_engine(config.engine, reference),
                           KEY.encode(), reference.registry, topic_watch=TopicWatch(broker.url, topic))
        rt.kafka = _FakeKafka(r, prefix)  # type: ignore[assignment]
        published, checkpoints = [], []
        try:
            await rt.assign([0])
            for lo in range(0, len(values), rows):
                hi = min(len(values), lo + rows)
                await rt.handle({0: PartitionBatch(np.arange(lo, hi, dtype=np.int64),
                                                   values[lo:hi], None)})
                published.append(int(r.get(f"{prefix}:published_until") or 0))
                checkpoints.append(r.hget(f"{prefix}:checkpoint:0", "offset"))
            return published, checkpoints
        finally:
            await rt.redis.aclose()

    try:
        published, checkpoints = asyncio.run(run())
        assert len(published) > 200 and len(ends) > 20
        # while batches still come, most windows they closed are already published
        assert sum(e <= published[-2] for e in ends) >= len(ends) * 3 // 4
        assert any(c is not None for c in checkpoints[:-1])  # a checkpoint landed mid-feed
    finally:
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)


# ---------------------------------------------------------------------------------------------- rebalance


def _replay(sim: Path, pings: Path, out: Path) -> list[dict[str, Any]]:
    assert main(["replay", str(pings), "--out", str(out), *engine_args(sim)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def _held(port: int) -> list[int] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return json.loads(resp.read())["partitions"]
    except OSError:
        return None


def test_a_rebalance_between_two_workers_gives_the_figures_of_one_replay(
        live: Workers, sim: Path, tmp_path: Path) -> None:
    """Worker a reads both partitions; b joins half-way (a checkpoints on revoke, each resumes
    its share from the checkpoints), then b leaves with SIGTERM (it checkpoints, a takes its
    partition back): the published history equals the replay's, window by window."""
    pings = sim / "pings.jsonl"
    lines = pings.read_text().splitlines(keepends=True)
    parts = [tmp_path / f"part{i}.jsonl" for i in range(3)]
    cut = [0, len(lines) // 3, 2 * len(lines) // 3, len(lines)]
    for i, path in enumerate(parts):
        path.write_text("".join(lines[cut[i]:cut[i + 1]]))
    expected = _replay(sim, pings, tmp_path / "replay.jsonl")
    assert len(expected) >= 20
    create_topic(live.broker, live.topic, 2)
    r = redis.Redis.from_url(live.redis_url)
    port_a, port_b = free_port(), free_port()

    a = live.start("a", web_port=port_a)
    wait_for("a holds both partitions", lambda: _held(port_a) == [0, 1], 60, (a,))
    assert main(["produce", str(parts[0]), "--kafka", live.broker, "--topic", live.topic,
                 "--no-final", "--quiet"]) == 0
    wait_for("snapshots from the first third", lambda: len(published_history(r, live.prefix)) >= 3, 90, (a,))

    b = live.start("b", web_port=port_b)
    def one_each() -> bool:
        held_a, held_b = _held(port_a), _held(port_b)
        return bool(held_a) and bool(held_b) and sorted(held_a + held_b) == [0, 1]

    wait_for("a and b hold one partition each", one_each, 90, (a, b))
    assert main(["produce", str(parts[1]), "--kafka", live.broker, "--topic", live.topic,
                 "--no-final", "--quiet"]) == 0
    top_ms = max(json.loads(line)["ts"] for line in lines[cut[1]:cut[2]])
    third = max(s["at"] for s in expected if parse_iso_ms(s["at"]) <= top_ms - HOUR_MS)
    wait_for("snapshots from the second third", lambda: any(
        h["at"] >= third for h in published_history(r, live.prefix)), 90, (a, b))

    b.terminate()  # a clean stop: b checkpoints its partition as it leaves the group
    b.wait(30)
    log_b = Path(b.log).read_text()  # type: ignore[attr-defined]
    assert "Worker]: Closing event loop" in log_b and "without a checkpoint" not in log_b
    wait_for("a holds both partitions again", lambda: _held(port_a) == [0, 1], 60, (a,))
    assert main(["produce", str(parts[2]), "--kafka", live.broker, "--topic", live.topic,
                 "--quiet"]) == 0
    last = expected[-1]["at"]
    wait_for("the last snapshot", lambda: latest_is(r, live.prefix, last), 120, (a,))

    assert_history_is(r, live.prefix, expected)
    latest = json.loads(r.get(f"{live.prefix}:snapshot"))
    assert latest["regions"] == expected[-1]["regions"]
    log_a = Path(a.log).read_text()  # type: ignore[attr-defined]
    assert "resumed from checkpoint" in log_a  # a took a partition back from its checkpoint
