"""A worker's runtime: batches of Kafka messages → partition states → Redis, metrics, dead letters.

:class:`WorkerRuntime` groups each batch by partition and hands each partition's raw values to
its :class:`~stream.estimate.partition.PartitionState` (vectorized decoding and engine updates,
no per-ping objects). Closed windows become tallies in Redis, and a snapshot is published when
every partition has closed its window (:mod:`stream.publish.redis_publisher`). Rejects go to the
dead-letter topic with their reason in headers.

Offsets: the pings topic is consumed with Faust acks off, so Faust never commits on its own.
After a partition's checkpoint is saved to Redis the worker commits exactly the checkpoint's
offset; a restarted or newly assigned partition resumes from its checkpoint and skips anything
below it. Delivery is at-least-once and replays are idempotent, so no broker transactions are
needed. The commit order, for each partition: pending tallies to Redis, then the checkpoint (only
when no tally is pending), then the offset to Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import faust
import redis.asyncio as aioredis
from faust.types import TP
from redis.exceptions import RedisError

from estimators.engine import Engine
from estimators.tally import Tally
from estimators.units import SECOND_MS
from stream.contract import CodecError, Reject
from stream.decode.messages import sniff
from stream.estimate.partition import PartitionState
from stream.publish.metrics import WorkerMetrics
from stream.publish.redis_keys import REJECTED_PREFIX
from stream.publish.redis_publisher import PublishSettings, SnapshotPublisher
from stream.timefmt import parse_iso_ms
from stream.worker.config import WorkerConfig
from stream.worker.faust_compat import commit_offset

log = logging.getLogger("defacto.worker")
REDIS_RETRY_S = 2.0
HEALTH_EVERY_S = 1.0
SEEK_RETRY_S = 10.0


class WorkerRuntime:
    """A worker's live state: its partitions, the publisher and the metrics.

    ``make_engine()`` builds a fresh engine (one per partition, one for publishing);
    ``partitions`` is the pings topic's partition count; ``dead_topic`` receives rejects.
    """

    def __init__(self, app: faust.App, config: WorkerConfig, partitions: int,
                 make_engine: Callable[[], Engine], secret: bytes,
                 registry: dict[str, int] | None, dead_topic: faust.TopicT) -> None:
        self.app = app
        self.config = config
        self.topic = config.topic
        self.make_engine = make_engine
        self.secret = secret
        self.dead_topic = dead_topic
        self.settings = config.windows
        self.metrics = WorkerMetrics()
        self.metrics.configure(window_s=self.settings.every_ms / SECOND_MS,
                               gap_threshold=config.gap_threshold,
                               migration_alert_rate=config.migration_alert_rate)
        self.redis = aioredis.from_url(config.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.publisher = SnapshotPublisher(
            self.redis, make_engine(), partitions, self.settings.every_ms, registry,
            PublishSettings(prefix=config.prefix, gap_threshold=config.gap_threshold),
            on_publish=self._published)
        self.parts: dict[int, PartitionState] = {}
        self.unsent: dict[int, list[Tally]] = defaultdict(list)
        self.seeking: dict[int, float] = {}
        self._flush_lock = asyncio.Lock()
        self.last_checkpoint: dict[int, float] = {}
        self.last_seen_publish: int | None = None
        self.redis_ok = True
        self.redis_retry_at = 0.0
        self.geometry_written = False
        self.health_at = 0.0
        self.lags: dict[int, int] = {}
        self.seen: dict[int, float] = {}
        self.counts: Counter[str] = Counter()

    def _published(self, snap: dict[str, Any], delay_s: float) -> None:
        self.metrics.snapshot_delay.observe(max(delay_s, 0.0))

    async def partition(self, p: int) -> PartitionState:
        """The partition's state, restored from its checkpoint on first use."""
        ps = self.parts.get(p)
        if ps is None:
            ps = PartitionState(self.topic, p, self.make_engine(), self.secret, self.settings)
            blob = await self._load_checkpoint(p)
            if blob:
                ps.restore(blob)
                log.info("partition %d: resumed from checkpoint at offset %d", p, ps.next_offset)
            self.parts[p] = ps
            self.last_checkpoint[p] = time.monotonic()
            self.metrics.partitions.set(len(self.parts))
        return ps

    async def _load_checkpoint(self, p: int) -> bytes | None:
        """The partition's checkpoint; waits for Redis, since resuming without it would be wrong."""
        delay = 0.5
        while True:
            try:
                return await self._redis(self.publisher.load_checkpoint(p))
            except (RedisError, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _redis(self, coro: Any) -> Any:
        try:
            out = await coro
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.inc()
            if self.redis_ok:
                log.warning("Redis unavailable (%s): estimating on, publishing when it is back", exc)
            self.redis_ok = False
            self.redis_retry_at = time.monotonic() + REDIS_RETRY_S
            raise
        if not self.redis_ok:
            log.info("Redis is back")
        self.redis_ok = True
        return out

    async def handle(self, events: list[Any]) -> None:
        """Process one batch of events from the pings topic."""
        start = time.perf_counter()
        grouped: dict[int, tuple[list[int], list[bytes], list[str | None]]] = defaultdict(
            lambda: ([], [], []))
        for ev in events:
            m = ev.message
            offs, vals, cts = grouped[m.partition]
            offs.append(m.offset)
            vals.append(m.value if isinstance(m.value, bytes) else bytes(m.value or b""))
            cts.append(_content_type(m.headers))
        newest = None
        for p, (offs, vals, cts) in grouped.items():
            ps = await self.partition(p)
            if not await self._in_sequence(p, ps, offs[0]):
                continue
            for kind, n in Counter(map(_encoding, vals, cts)).items():
                self.metrics.messages.labels(kind).inc(n)
            result = ps.process(offs, vals, cts)
            self.unsent[p].extend(result.tallies)  # before any await: a checkpoint must not pass them
            m = self.metrics
            m.pings.labels("accepted").inc(result.accepted)
            m.pings.labels("duplicate").inc(result.skipped)
            m.pings.labels("rejected").inc(len(result.rejects))
            self.counts.update({"accepted": result.accepted, "duplicate": result.skipped,
                                "rejected": len(result.rejects)})
            for r in result.rejects:
                m.rejects.labels(r.reason).inc()
                self.counts[REJECTED_PREFIX + r.reason] += 1
            self.seen[p] = time.time()
            await self.dead_letter(result.rejects)
            if result.max_event_ms is not None:
                newest = max(newest or 0, result.max_event_ms)
        if newest is not None:
            self.metrics.event_delay.set(time.time() - newest / SECOND_MS)
        await self.flush()
        self.metrics.batch_seconds.observe(time.perf_counter() - start)

    async def _in_sequence(self, p: int, ps: PartitionState, first: int) -> bool:
        """Whether messages from ``first`` on continue the partition's offsets.

        A gap means the consumer started past the checkpoint (a checkpoint lost with Redis, or
        offsets committed elsewhere): seek back and drop what arrives until the seek takes
        effect. Offsets that Kafka no longer holds (retention) are a gap that cannot be filled:
        logged, and processing goes on from the oldest message there is.
        """
        if first <= ps.next_offset:
            self.seeking.pop(p, None)
            return True
        tp = TP(self.topic, p)
        since = self.seeking.get(p)
        if since is not None and time.monotonic() - since < SEEK_RETRY_S:
            return False
        low = (await self.app.consumer.earliest_offsets(tp)).get(tp, 0)
        if first <= low:
            log.warning("partition %d: offsets %d..%d are no longer in Kafka; going on from %d",
                        p, ps.next_offset, first - 1, first)
            self.metrics.offset_gaps.inc()
            ps.next_offset = first
            return True
        target = max(ps.next_offset, low)
        log.warning("partition %d: consumer at offset %d, state at %d: seeking back to %d",
                    p, first, ps.next_offset, target)
        await self.app.consumer.seek(tp, target)
        self.seeking[p] = time.monotonic()
        return False

    async def dead_letter(self, rejects: list[Reject]) -> None:
        """Send rejects to the dead-letter topic (reason and detail in headers)."""
        for r in rejects:
            try:
                await self.dead_topic.send(value=r.record.encode(errors="backslashreplace"), headers={
                    "defacto-reason": r.reason.encode(),
                    "defacto-detail": r.detail.encode(errors="backslashreplace"),
                    "defacto-source": r.source.encode()})
            except Exception as exc:  # the dead-letter topic must never stop the pipeline
                self.metrics.dead_letter_errors.inc()
                log.warning("dead-letter send failed (%s): %s", exc, r.to_json())

    async def flush(self, force_checkpoint: bool = False) -> None:
        """Write pending tallies, checkpoint when due, publish what is complete.

        Called by the agent after each batch and by a 1 s timer; a lock keeps them apart.
        """
        if not self.redis_ok and time.monotonic() < self.redis_retry_at:
            return
        async with self._flush_lock:
            try:
                for p in list(self.unsent):
                    tallies = self.unsent.pop(p)
                    ps = self.parts.get(p)
                    try:
                        await self._redis(self.publisher.write_tallies(
                            p, tallies, ps.closed_until if ps else None,
                            ps.last_accepted_ms if ps else None))
                    except (RedisError, OSError):
                        self.unsent[p][:0] = tallies  # keep them, in order, for the next try
                        raise
                now = time.monotonic()
                for p, ps in list(self.parts.items()):
                    due = now - self.last_checkpoint.get(p, 0) >= self.config.checkpoint_every_s
                    if force_checkpoint or due:
                        try:
                            await self.checkpoint(p, ps)
                        except (RedisError, OSError):  # publishing must not wait for a checkpoint
                            self.last_checkpoint[p] = now
                await self._write_health()
                published = await self._redis(self.publisher.try_publish())
                await self._refresh_metrics(published)
            except (RedisError, OSError):
                return

    def _update_lags(self) -> None:
        """Messages behind the partition end, for every partition held (also while it is stuck
        seeking or waiting for Redis, so a growing lag shows)."""
        for p, ps in self.parts.items():
            hw = self.app.consumer.highwater(TP(self.topic, p))
            if hw is not None:
                self.lags[p] = max(hw - ps.next_offset, 0)
                self.metrics.lag.labels(str(p)).set(self.lags[p])

    async def _write_health(self) -> None:
        """Lag, last batch time and ping counts to Redis (for the dashboard), at most once a
        second (flushes follow every batch); the region outlines once."""
        if time.monotonic() - self.health_at < HEALTH_EVERY_S:
            return
        self.health_at = time.monotonic()
        self._update_lags()
        if not self.geometry_written:
            await self._redis(self.publisher.publish_geometry(self.publisher.engine.regions))
            self.geometry_written = True
        counts, self.counts = self.counts, Counter()
        try:
            await self._redis(self.publisher.write_health(self.lags, self.seen, counts))
        except (RedisError, OSError):
            self.counts.update(counts)  # counted on the next successful write
            raise

    async def checkpoint(self, p: int, ps: PartitionState) -> None:
        """Save a partition's checkpoint and commit its offset to Kafka."""
        if self.unsent.get(p):
            return
        await self._redis(self.publisher.save_checkpoint(p, ps.next_offset, ps.checkpoint()))
        self.last_checkpoint[p] = time.monotonic()
        try:
            await commit_offset(self.app, TP(self.topic, p), ps.next_offset)
        except Exception as exc:  # committing is an optimization; the checkpoint is the truth
            log.debug("offset commit for partition %d failed: %s", p, exc)

    async def _refresh_metrics(self, published: list[int]) -> None:
        until = await self._redis(self.publisher.published_until())
        if until is None or until == self.last_seen_publish:
            return
        self.last_seen_publish = until
        snap = await self._redis(self.publisher.latest())
        if snap:
            self.metrics.show_snapshot(snap, _published_unix_s(snap))
            self.metrics.last_snapshot.set(until / SECOND_MS)
        self.metrics.show_flows(await self._redis(self.publisher.latest_flows()))

    async def revoke(self, tps: set[TP]) -> None:
        """Checkpoint and drop partitions this worker no longer owns."""
        mine = [tp.partition for tp in tps if tp.topic == self.topic and tp.partition in self.parts]
        if not mine:
            return
        await self.flush()
        async with self._flush_lock:
            for p in mine:
                ps = self.parts.pop(p)
                self.lags.pop(p, None)
                self.seen.pop(p, None)
                self.metrics.forget_partition(p)
                with contextlib.suppress(RedisError, OSError):
                    await self.publisher.forget_health(p)
                try:
                    await self.checkpoint(p, ps)
                except (RedisError, OSError):
                    log.warning("partition %d revoked without a checkpoint: its next owner "
                                "replays more", p)
        self.metrics.partitions.set(len(self.parts))


def _published_unix_s(snap: dict[str, Any]) -> float:
    """When the snapshot was published (its ``published_at``, written by whichever worker
    published it), so a restarted worker does not report an old snapshot as fresh."""
    at = snap.get("published_at")
    return parse_iso_ms(at) / SECOND_MS if at else time.time()


def _content_type(headers: Any) -> str | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for k, v in items:
        if k.lower() == "content-type":
            return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return None


def _encoding(value: bytes, content_type: str | None) -> str:
    try:
        return sniff(value, content_type)
    except CodecError:
        return "unknown"
