"""A worker's runtime: batches of Kafka messages → partition states → Redis, metrics, dead letters.

:class:`WorkerRuntime` takes each fetched batch already grouped by partition
(:class:`~stream.worker.kafka_batch.PartitionBatch`) and hands each partition's offsets and raw
values to its :class:`~stream.estimate.partition.PartitionState` (vectorized decoding and engine
updates, no per-ping objects). Closed windows become tallies in Redis, and a snapshot is
published when every partition has closed its window (:mod:`stream.publish.redis_publisher`).
Rejects go to the dead-letter topic with their reason in headers. It knows Kafka only through
a :class:`~stream.worker.kafka_batch.BatchConsumer` and has no Faust in it.

Offsets: the pings topic is consumed with auto-commit off, so nothing commits on its own.
After a partition's checkpoint is saved to Redis the worker commits exactly the checkpoint's
offset; an assigned partition is restored from its checkpoint and the consumer starts at its
offset (:meth:`WorkerRuntime.assign`), and anything below it is skipped. Delivery is
at-least-once and replays are idempotent, so no broker transactions are needed. The commit
order, for each partition: pending tallies to Redis, then the checkpoint (only when no tally
is pending), then the offset to Kafka.

Faults that would give wrong figures without a word end in a loud, specific state instead:

- **The topic is not the one the state came from** (the broker lost its data, the topic was
  recreated): a partition's high watermark below its next offset, or a topic id other than the
  one stored with its checkpoint (:class:`~stream.worker.guards.TopicWatch`). Nothing a
  partition derived leaves the worker (tallies, marks, checkpoint, offset) until a topic check
  that began after the batch confirmed the topic; a partition whose topic changed is *stopped*.
  Checks run in the background (at most every :data:`TOPIC_CHECK_MIN_S` while output waits),
  and each batch's output leaves once a check begun after *that* batch has answered, so output
  keeps flowing while the consumer never idles; a checkpoint, which covers the latest batch,
  waits for a check of its own.
- **A partition count other than the deployment's**: every partition is stopped.
- A stopped partition is skipped (its lag grows), never checkpointed, and shown in the
  ``defacto_partition_stopped{partition,reason}`` gauge, an error line and ``/healthz`` (503).
- **Redis lost its data** (:class:`~stream.publish.redis_publisher.RedisStateLost`): the worker
  joins anew and rewrites what it holds, exactly what a restart would rebuild: every held
  partition's marks, the tallies of its windows not yet published (kept in memory until they
  are), its checkpoint and the region outlines (``defacto_redis_data_lost_total``).
- **Settings that differ from the deployment's** (pinned in Redis): the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from estimators.engine import Engine
from estimators.tally import Tally
from estimators.units import SECOND_MS
from stream.contract import CodecError, Reject
from stream.decode.messages import sniff
from stream.estimate import checkpoint as checkpoint_blob
from stream.estimate.checkpoint import CheckpointMismatchError
from stream.estimate.checkpoint_delta import DeltaBase
from stream.estimate.fingerprint import Fingerprint
from stream.estimate.partition import PartitionState
from stream.publish.metrics import WorkerMetrics
from stream.publish.redis_client import async_redis
from stream.publish.redis_keys import REJECTED_PREFIX
from stream.publish.redis_publisher import (
    CheckpointRecord,
    DeploymentMismatchError,
    PublishSettings,
    RedisStateLost,
    SnapshotPublisher,
)
from stream.timefmt import iso_utc, parse_iso_ms
from stream.worker.config import WorkerConfig
from stream.worker.guards import TopicInfo, TopicWatch
from stream.worker.kafka_batch import BatchConsumer, PartitionBatch

log = logging.getLogger("defacto.worker")
REDIS_RETRY_S = 2.0
HEALTH_EVERY_S = 1.0
PUBLISH_POLL_S = 1.0
"""At most this long between two looks for publishable windows while this worker's written marks
stay in the same window (other workers' closes show up within it; the 1 s flush timer too)."""
SEEK_RETRY_S = 10.0
TOPIC_CHECK_MIN_S = 0.2
"""At most this often a topic check is started (one runs after batches whose output waits)."""
TOPIC_CHECK_EVERY_S = 10.0
"""A topic check at least this often, output waiting or not."""
EVICTION_CHECK_EVERY_S = 60.0
NEVER = -math.inf


class UnsafeRedisError(RuntimeError):
    """A Redis whose eviction policy may drop defacto's keys."""


class StoppedWaitingForRedisError(RuntimeError):
    """The worker was asked to stop while it waited for Redis to resume a partition or join
    its deployment: the partition is not taken (nothing was counted from it)."""


TOPIC_RECREATED = "topic_recreated"
PARTITION_COUNT = "partition_count"
STOP_REASONS = (TOPIC_RECREATED, PARTITION_COUNT)
"""Why a partition is stopped (the ``reason`` label of ``defacto_partition_stopped``)."""

CHECKPOINT_TIMEOUT_S = 60.0
"""Socket timeout of the connection checkpoints are sent on (a blob can be 100+ MB)."""


@dataclass
class BatchOutput:
    """What one batch of a partition leaves to write: the tallies of the windows it closed and
    the partition's marks after it (``fetched_at``: monotonic time it was fetched before)."""

    fetched_at: float
    tallies: list[Tally]
    closed_until: int | None
    last_accepted_ms: int | None


class WorkerRuntime:
    """A worker's live state: its partitions, the publisher and the metrics.

    ``make_engine()`` builds a fresh engine (one per partition, one for publishing);
    ``partitions`` is the deployment's partition count of the pings topic; ``crash(exc)`` stops
    the worker (the shell's lifecycle); ``fingerprint`` the deployment's settings (pinned in
    Redis, carried by tallies and checkpoints); ``topic_watch`` asks the broker about the topic
    (None: not checked, for tests without a broker). :attr:`kafka` (the consumer: offsets,
    seeks, commits, dead letters) is set by the shell before the first batch.
    """

    def __init__(self, crash: Callable[[BaseException], Awaitable[None]], config: WorkerConfig,
                 partitions: int, make_engine: Callable[[], Engine], secret: bytes,
                 registry: dict[str, int] | None, fingerprint: Fingerprint | None = None,
                 topic_watch: TopicWatch | None = None) -> None:
        self.crash = crash
        self.kafka: BatchConsumer | None = None
        self.config = config
        self.topic = config.topic
        self.partitions = partitions
        self.make_engine = make_engine
        self.secret = secret
        self.fingerprint = fingerprint
        self.topic_watch = topic_watch
        self.settings = config.windows
        self.metrics = WorkerMetrics()
        self.metrics.configure(window_s=self.settings.every_ms / SECOND_MS,
                               gap_threshold=config.gap_threshold,
                               migration_alert_rate=config.migration_alert_rate)
        self.redis = async_redis(config.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.publisher = SnapshotPublisher(
            self.redis, make_engine(), partitions, self.settings.every_ms, registry,
            PublishSettings(prefix=config.prefix, gap_threshold=config.gap_threshold),
            on_publish=self._published, fingerprint=fingerprint)
        self.parts: dict[int, PartitionState] = {}
        self.unsent: dict[int, list[BatchOutput]] = defaultdict(list)  # oldest first
        self.written_marks: dict[int, tuple[int | None, int | None]] = {}  # closed, last ping
        self.retained: dict[int, dict[int, Tally]] = defaultdict(dict)  # written, not published
        self.first_window: dict[int, int | None] = {}
        self.stopped: dict[int, tuple[str, str]] = {}
        self.expected_topic: dict[int, str | None] = {}
        self.batch_at: dict[int, float] = {}
        self.confirmed_at: dict[int, float] = {}
        self.topic_checked_at = NEVER
        self.topic_answered = True  # the latest topic check got an answer (or none ran yet)
        self.lost_in_background: RedisStateLost | None = None  # seen by a background checkpoint
        self.topic_info: TopicInfo | None = None
        self.count_problem: str | None = None
        self._topic_task: asyncio.Task[None] | None = None
        self._topic_lock = asyncio.Lock()
        self.eviction_checked_at = NEVER
        self.eviction: str | None = None
        self.skipped_seen: Counter[str] = Counter()
        self.seeking: dict[int, float] = {}
        self._flush_lock = asyncio.Lock()
        self.last_checkpoint: dict[int, float] = {}
        self.saving: dict[int, asyncio.Task[bool]] = {}  # checkpoints being sent
        self._blocking_redis: redis.Redis | None = None  # sends checkpoints, from threads
        self.delta_bases: dict[int, DeltaBase] = {}  # last base checkpoint stored, per partition
        self.last_seen_publish: int | None = None
        self.publish_due = True  # written marks entered a new window since the last look
        self.publish_looked_at = NEVER
        self.redis_ok = True
        self.redis_retry_at = 0.0
        self.stopping = asyncio.Event()  # set by the shell when the worker stops
        self.geometry_written = False
        self.health_at = 0.0
        self.lags: dict[int, int] = {}
        self.seen: dict[int, float] = {}
        self.counts: Counter[str] = Counter()

    def _published(self, snap: dict[str, Any], delay_s: float) -> None:
        self.metrics.snapshot_delay.observe(max(delay_s, 0.0))

    async def partition(self, p: int) -> PartitionState:
        """The partition's state, restored from its checkpoint on first use.

        Raises :class:`~stream.estimate.checkpoint.CheckpointMismatchError` for a checkpoint
        taken with other settings or another key. A checkpoint read from another topic than the
        current one stops the partition (see :meth:`stop`).
        """
        ps = self.parts.get(p)
        if ps is None:
            ps = PartitionState(self.topic, p, self.make_engine(), self.secret, self.settings)
            self.delta_bases.pop(p, None)  # this process's first checkpoint of it is a base
            try:
                await self._until_redis(self._join)
            except (DeploymentMismatchError, UnsafeRedisError) as exc:
                await self._fatal(exc)
            record = await self._load_checkpoint(p)
            self.expected_topic[p] = None
            self.first_window[p] = None
            self.retained.pop(p, None)
            if record is not None:
                why = self.publisher.checkpoint_problem(record)
                if why:
                    raise CheckpointMismatchError(f"it was taken with other settings: {why}")
                base = checkpoint_blob.restore(ps, record.data, fingerprint=self.fingerprint,
                                               delta=record.delta)
                if base is not None:  # the next checkpoint may be a delta against it
                    self.delta_bases[p] = base
                self.expected_topic[p] = record.topic_id
                self.first_window[p] = await self._until_redis(
                    lambda: self.publisher.first_window_of(p))
                held = await self._until_redis(lambda: self.publisher.load_tallies(p))
                self.retained[p] = {t.at_ms: t for t in held}
                log.info("partition %d: resumed from checkpoint at offset %d", p, ps.next_offset)
            self.parts[p] = ps
            self.written_marks[p] = (ps.closed_until, ps.last_accepted_ms)  # Redis has them
            self.last_checkpoint[p] = time.monotonic()
            self.metrics.partitions.set(len(self.parts))
            if self.count_problem is not None:
                self.stop(p, PARTITION_COUNT, self.count_problem)
            elif p >= self.partitions:
                self.stop(p, PARTITION_COUNT, (
                    f"partition {p} is assigned, but this deployment was started for "
                    f"{self.partitions} partition(s) (0..{self.partitions - 1}): the topic grew, "
                    "so devices keyed by partition count moved partition and would be counted "
                    "twice. Create a topic with the partitions you need and run it as a new "
                    "deployment (new --prefix and --group)"))
            elif record is not None and record.topic_id is not None:
                await self.check_topic()  # before anything from this partition is counted
        return ps

    async def _until_redis(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """``await make()`` (a Redis call), retrying while Redis is down: resuming a partition
        or joining the deployment without Redis would be wrong. Raises
        :class:`StoppedWaitingForRedisError` once the worker is stopping (:attr:`stopping`), so a
        worker whose Redis never answers still stops at once."""
        delay = 0.5
        while True:
            try:
                return await self._redis(make())
            except (RedisError, OSError) as exc:
                if self.stopping.is_set():
                    log.warning("stopping while waiting for Redis (%s): partitions not taken "
                                "(nothing was counted from them)", exc)
                    raise StoppedWaitingForRedisError(str(exc)) from None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, 10.0)

    async def _load_checkpoint(self, p: int) -> CheckpointRecord | None:
        """The partition's checkpoint with its topic id and fingerprint, waiting for Redis."""
        return await self._until_redis(lambda: self.publisher.load_checkpoint_record(p))

    async def _redis(self, coro: Any, answered: bool = True) -> Any:
        """Await ``coro``, a call on Redis: an error marks Redis unavailable (said once, counted,
        re-raised); a result marks it back unless ``answered`` is False (a call that may have
        been served without asking Redis)."""
        try:
            out = await coro
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.inc()
            if self.redis_ok:
                log.warning("Redis unavailable (%s): estimating on, publishing when it is back", exc)
            self.redis_ok = False
            self.redis_retry_at = time.monotonic() + REDIS_RETRY_S
            raise
        if answered:
            if not self.redis_ok:
                log.warning("Redis is back")  # said at the level its loss was
            self.redis_ok = True
        return out

    async def handle(self, batches: dict[int, PartitionBatch]) -> None:
        """Process one fetched batch of the pings topic, grouped by partition."""
        start = time.perf_counter()
        batch_at = time.monotonic()  # the batch was fetched before this
        newest = None
        for p, batch in batches.items():
            offs, vals, cts = batch.offsets, batch.values, batch.content_types
            if not self._owns(p):
                continue
            ps = await self.partition(p)
            if p in self.stopped or not self._same_log(p, ps) \
                    or not await self._in_sequence(p, ps, int(offs[0])):
                continue
            if not self._owns(p) or self.parts.get(p) is not ps:
                # revoked (and maybe assigned again, restored anew) while this batch waited:
                # the next owner, or the new state, reads these messages from the checkpoint
                if not self._owns(p) and self.parts.get(p) is ps:
                    del self.parts[p]
                continue
            result = ps.process(offs, vals, cts)
            kinds = Counter(result.encodings)
            if result.skipped:  # not decoded: sniffed, so every consumed message is counted
                kinds.update(map(_encoding, vals[:result.skipped],
                                 cts[:result.skipped] if cts else [None] * result.skipped))
            for kind, n in kinds.items():
                self.metrics.messages.labels(kind).inc(n)
            self.batch_at[p] = batch_at
            # before any await: a checkpoint must not pass them
            self.unsent[p].append(BatchOutput(batch_at, result.tallies, ps.closed_until,
                                              ps.last_accepted_ms))
            if result.tallies and self.first_window.get(p) is None:
                self.first_window[p] = result.tallies[0].at_ms
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

    def _owns(self, p: int) -> bool:
        """Whether partition ``p`` is assigned to this worker (always, without a consumer)."""
        return self.kafka is None or self.kafka.owns(p)

    def _highwater(self, p: int) -> int | None:
        """The partition's end offset as of the consumer's latest fetch (None: not known, or
        the partition is not assigned to this consumer any more)."""
        return self.kafka.highwater(p) if self.kafka is not None else None

    def _same_log(self, p: int, ps: PartitionState) -> bool:
        """Whether the partition's log still reaches the partition's next offset; a high
        watermark below it means the log was truncated or the topic recreated: stopped."""
        hw = self._highwater(p)
        if hw is None or hw >= ps.next_offset:
            return True
        self.stop(p, TOPIC_RECREATED, (
            f"the partition's log ends at offset {hw} (high watermark), before the offset "
            f"{ps.next_offset} its state had reached: the broker lost its data or the topic "
            f"{self.topic!r} was recreated, so its offsets now mean other messages"))
        return False

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
        since = self.seeking.get(p)
        if since is not None and time.monotonic() - since < SEEK_RETRY_S:
            return False
        if self.kafka is None:
            return True
        low = await self.kafka.earliest(p)
        if first <= low:
            log.error("partition %d: offsets %d..%d are no longer in Kafka (retention removed them "
                      "before they were read): their pings are missing from the figures; going on "
                      "from %d", p, ps.next_offset, first - 1, first)
            self.metrics.offset_gaps.inc()
            ps.next_offset = first
            return True
        target = max(ps.next_offset, low)
        log.warning("partition %d: consumer at offset %d, state at %d: seeking back to %d",
                    p, first, ps.next_offset, target)
        self.kafka.seek(p, target)
        self.seeking[p] = time.monotonic()
        return False

    async def dead_letter(self, rejects: list[Reject]) -> None:
        """Queue rejects for the dead-letter topic (reason, detail and source in headers)."""
        if self.kafka is None:
            return
        for r in rejects:
            try:
                await self.kafka.dead_letter(r.record.encode(errors="backslashreplace"), [
                    ("defacto-reason", r.reason.encode()),
                    ("defacto-detail", r.detail.encode(errors="backslashreplace")),
                    ("defacto-source", r.source.encode())])
            except Exception as exc:  # the dead-letter topic must never stop the pipeline
                self.metrics.dead_letter_errors.inc()
                log.warning("dead-letter send failed (%s): %s", exc, r.to_json())

    async def flush(self, force_checkpoint: bool = False) -> None:
        """Write pending tallies, checkpoint when due, publish what is complete.

        Called by the agent after each batch and by a 1 s timer; a lock keeps them apart. A
        batch's tallies and marks wait for a topic check begun after that batch; a checkpoint
        that is due waits for one begun after the latest batch (run here when the last check
        answered, so a steady feed does not hold it back).
        """
        self._kick_topic_check()
        if not self.redis_ok and time.monotonic() < self.redis_retry_at:
            return
        async with self._flush_lock:
            if self.lost_in_background is not None:
                self._recover(self.lost_in_background)
                self.lost_in_background = None
            try:
                await self._join()
                now = time.monotonic()
                due = [p for p in self.parts if force_checkpoint
                       or now - self.last_checkpoint.get(p, 0) >= self.config.checkpoint_every_s]
                if self.topic_answered and any(not self.verified(p) for p in due
                                               if p not in self.stopped):
                    await self.check_topic()  # a checkpoint covers the latest batch: confirm it
                for p in list(self.unsent):
                    if p in self.stopped:
                        self.unsent.pop(p, None)
                        continue
                    await self._write_confirmed(p)
                for p, ps in list(self.parts.items()):
                    due = now - self.last_checkpoint.get(p, 0) >= self.config.checkpoint_every_s
                    if force_checkpoint or due:
                        try:
                            await self.checkpoint(p, ps, wait=force_checkpoint)
                        except (RedisError, OSError):  # publishing must not wait for a checkpoint
                            self.last_checkpoint[p] = now
                await self._write_health()
                if force_checkpoint or self.publish_due \
                        or now - self.publish_looked_at >= PUBLISH_POLL_S:
                    await self._publish(now)
                else:  # no Redis round trip: yield once, or topic checks and saves could starve
                    await asyncio.sleep(0)
            except RedisStateLost as exc:
                self._recover(exc)
            except (DeploymentMismatchError, UnsafeRedisError) as exc:
                await self._fatal(exc)
            except (RedisError, OSError):
                return

    async def _publish(self, now: float) -> None:
        """Publish what all partitions closed and refresh the metrics of the latest snapshot.
        Called by :meth:`flush` when this worker's written marks entered a new window (only
        then can its own writes make a window publishable) and every :data:`PUBLISH_POLL_S`
        otherwise: five Redis round trips and a digest per look, once per batch before."""
        self.publish_looked_at = now
        start = time.perf_counter()
        published = await self._redis(self.publisher.try_publish())
        if published:
            self.metrics.publish_seconds.observe(time.perf_counter() - start)
        self._show_publishing()
        await self._refresh_metrics(published)
        self.publish_due = False

    def _marks_window(self, marks: tuple[int | None, int | None]) -> tuple[int | None, int | None]:
        """What of a partition's written marks decides publishing: its closed boundary and the
        window of its last accepted ping (the publisher's data end)."""
        closed, last = marks
        return closed, None if last is None else last // self.settings.every_ms

    async def _write_confirmed(self, p: int) -> None:
        """Write partition ``p``'s tallies and marks of the batches a topic check confirmed
        (those fetched before the latest answered check began), oldest first, in one step."""
        queue = self.unsent[p]
        confirmed = self.confirmed_at.get(p, NEVER)
        n = len(queue) if self.topic_watch is None else next(
            (i for i, out in enumerate(queue) if out.fetched_at >= confirmed), len(queue))
        if n == 0:
            return
        ready = queue[:n]
        tallies = [t for out in ready for t in out.tallies]
        await self._redis(self.publisher.write_tallies(
            p, tallies, ready[-1].closed_until, ready[-1].last_accepted_ms,
            self.first_window.get(p)))
        del queue[:n]  # only once written: on an error they wait, in order, for the next try
        marks = (ready[-1].closed_until, ready[-1].last_accepted_ms)
        before = self.written_marks.get(p)
        if tallies or before is None or self._marks_window(before) != self._marks_window(marks):
            self.publish_due = True
        self.written_marks[p] = marks
        if not queue and self.unsent.get(p) is queue:
            self.unsent.pop(p)
        self.retained[p].update((t.at_ms, t) for t in tallies)

    async def _join(self) -> None:
        """Join the deployment (pin or check its settings, take its epoch) on first contact
        with Redis and after a loss. Raises :class:`~stream.publish.redis_publisher.
        DeploymentMismatchError` for other settings and :class:`UnsafeRedisError` for a Redis
        that may evict keys (the callers stop the worker: :meth:`_fatal`)."""
        if self.publisher.epoch is not None:
            return
        problem = await self._redis(self.publisher.eviction_problem())
        self._show_eviction(problem)
        if problem is not None:
            raise UnsafeRedisError(problem)
        await self._redis(self.publisher.join())

    async def _fatal(self, exc: Exception) -> None:
        """Stop the worker on a setting it must not run with (its partitions go to the others)."""
        log.critical("defacto worker stops: %s", exc)
        await self.crash(exc)
        raise exc

    def _recover(self, exc: RedisStateLost) -> None:
        """Redis lost its data: rejoin on the next flush and rewrite what this worker holds, as a
        restart would rebuild it: each held partition's marks and the tallies of its windows not
        yet published, its checkpoint, the region outlines."""
        self.metrics.redis_data_lost.inc()
        held = sorted(p for p in self.parts if p not in self.stopped)
        windows = sorted({at for p in held for at in self.retained.get(p, {})})
        span = f" ({iso_utc(windows[0])} .. {iso_utc(windows[-1])})" if windows else ""
        log.error("%s. Rewriting what this worker holds: partition(s) %s with their checkpoints "
                  "and the tallies of %d window(s) not yet published%s, and the region outlines; "
                  "the published history, alerts and ping counts from before are gone, and a "
                  "window another worker had already published is published again or skipped",
                  exc, ", ".join(map(str, held)) or "none", len(windows), span)
        for p in held:
            kept = self.retained.pop(p, {})
            marks = self.written_marks.get(p, (None, None))
            self.unsent[p][:0] = [BatchOutput(NEVER, [kept[at] for at in sorted(kept)], *marks)]
            self.last_checkpoint[p] = NEVER
        self.delta_bases.clear()  # Redis holds no base: the rewritten checkpoints are bases
        self.publisher.epoch = None  # the next flush joins anew, then writes the above
        self.geometry_written = False
        self.last_seen_publish = None
        self.publish_due = True

    def stop(self, p: int, reason: str, detail: str) -> None:
        """Stop partition ``p`` for good in this process: nothing from it is counted, written or
        committed any more; an error line, ``defacto_partition_stopped{partition,reason}`` and
        ``/healthz`` say why."""
        if p in self.stopped:
            return
        self.stopped[p] = (reason, detail)
        self.unsent.pop(p, None)
        log.error("partition %d of %s stopped (%s): %s", p, self.topic, reason, detail)
        self.metrics.partition_stopped.labels(str(p), reason).set(1)

    def verified(self, p: int) -> bool:
        """Whether partition ``p``'s output may leave the worker: a topic check begun after its
        latest batch found the topic the partition's state came from."""
        at = self.batch_at.get(p)
        return self.topic_watch is None or at is None or self.confirmed_at.get(p, NEVER) > at

    def _kick_topic_check(self) -> None:
        """Start a topic check in the background when output waits for one (at most every
        :data:`TOPIC_CHECK_MIN_S`) or none ran for :data:`TOPIC_CHECK_EVERY_S`."""
        if self.topic_watch is None or (self._topic_task and not self._topic_task.done()):
            return
        since = time.monotonic() - self.topic_checked_at
        waiting = any(not self.verified(p) for p in self.parts if p not in self.stopped)
        if (waiting and since >= TOPIC_CHECK_MIN_S) or since >= TOPIC_CHECK_EVERY_S:
            self._topic_task = asyncio.ensure_future(self.check_topic())
            self._topic_task.add_done_callback(_log_failure)

    async def check_topic(self) -> TopicInfo | None:
        """Ask the broker about the topic; stop the partitions whose topic is not the one their
        state came from, and every partition when the partition count is not the
        deployment's; confirm the others as of the check's start. None when the broker did not
        answer (the output waits)."""
        if self.topic_watch is None:
            return None
        async with self._topic_lock:
            began = time.monotonic()
            self.topic_checked_at = began
            try:
                info = await asyncio.to_thread(self.topic_watch.describe)
            except RuntimeError as exc:
                log.warning("topic check failed (%s): partition output waits for the next one", exc)
                self.topic_answered = False
                return None
            self.topic_answered = True
            self.topic_info = info
            if info.partitions != self.partitions and self.count_problem is None:
                self.count_problem = (
                    f"the topic {self.topic!r} has {info.partitions} partitions, this deployment "
                    f"was started for {self.partitions}: devices keyed by partition count move "
                    "partition and would be counted twice. Run the topic with its new partition "
                    "count as a new deployment (new --prefix and --group)")
            for p in sorted(self.parts):
                if p in self.stopped:
                    continue
                if self.count_problem is not None:
                    self.stop(p, PARTITION_COUNT, self.count_problem)
                    continue
                expected = self.expected_topic.get(p)
                if info.topic_id is not None and expected not in (None, info.topic_id):
                    ps = self.parts[p]
                    self.stop(p, TOPIC_RECREATED, (
                        f"the topic {self.topic!r} is not the one this partition's state came "
                        f"from (topic id {expected}, now {info.topic_id}; state at offset "
                        f"{ps.next_offset}, high watermark {self._highwater(p)}): the broker lost its "
                        "data or the topic was recreated. Nothing more is counted from this "
                        "partition; rebuild as a new deployment (new --prefix and --group) from "
                        "the topic or from files"))
                    continue
                if info.topic_id is not None:
                    self.expected_topic[p] = info.topic_id
                self.confirmed_at[p] = began
            return info

    def problems(self) -> dict[str, Any]:
        """What keeps this worker from being healthy (for ``/healthz``): stopped partitions,
        a refused window, a Redis that may evict keys; empty when none."""
        out: dict[str, Any] = {}
        if self.stopped:
            out["stopped"] = {str(p): {"reason": r, "detail": d}
                              for p, (r, d) in sorted(self.stopped.items())}
        if self.publisher.refusal is not None:
            reason, detail = self.publisher.refusal
            out["publish_refused"] = {"reason": reason, "detail": detail}
        if self.eviction is not None:
            out["redis_eviction"] = self.eviction
        return out

    def _show_publishing(self) -> None:
        """Export the publisher's refusal and skipped windows."""
        refusal = self.publisher.refusal
        for reason in ("settings_mismatch",):
            self.metrics.publish_refused.labels(reason).set(
                1 if refusal is not None and refusal[0] == reason else 0)
        for reason, n in self.publisher.skipped.items():
            new = n - self.skipped_seen[reason]
            if new:
                self.metrics.windows_skipped.labels(reason).inc(new)
                self.skipped_seen[reason] = n

    def _show_eviction(self, problem: str | None) -> None:
        if problem != self.eviction and problem is not None:
            log.error("%s", problem)
        self.eviction = problem
        self.metrics.redis_eviction_unsafe.set(1 if problem else 0)

    def _update_lags(self) -> None:
        """Messages behind the partition end, for every partition held (also while it is stuck
        seeking or waiting for Redis, so a growing lag shows)."""
        for p, ps in self.parts.items():
            hw = self._highwater(p)
            if hw is not None:
                self.lags[p] = max(hw - ps.next_offset, 0)
                self.metrics.lag.labels(str(p)).set(self.lags[p])

    async def _write_health(self) -> None:
        """Lag, last batch time and ping counts to Redis (for the dashboard), at most once a
        second (flushes follow every batch); the region outlines once (again after a loss);
        Redis's eviction policy once a minute."""
        if time.monotonic() - self.health_at < HEALTH_EVERY_S:
            return
        self.health_at = time.monotonic()
        self._update_lags()
        if not self.geometry_written:
            await self._redis(self.publisher.publish_geometry(self.publisher.engine.regions))
            self.geometry_written = True
        if self.health_at - self.eviction_checked_at >= EVICTION_CHECK_EVERY_S:
            self.eviction_checked_at = self.health_at
            self._show_eviction(await self._redis(self.publisher.eviction_problem()))
        counts, self.counts = self.counts, Counter()
        try:
            await self._redis(self.publisher.write_health(self.lags, self.seen, counts))
        except (RedisError, OSError, RedisStateLost):
            self.counts.update(counts)  # counted on the next successful write
            raise

    async def checkpoint(self, p: int, ps: PartitionState, wait: bool = True) -> bool:
        """Save a partition's checkpoint (with the topic id it was read from) and commit its
        offset to Kafka; not while tallies wait, the topic is unconfirmed or it is stopped.

        Only the capture of the state (a copy) runs on the event loop; the blob is encoded and
        sent to Redis in threads (1.2 M devices make 129 MB, which held the loop
        for 1.6 s). ``wait=False`` returns once that has started, so batches go on meanwhile
        (at most one save per partition at a time; the offset is committed when it landed).
        Returns whether it was saved (``wait``) or started."""
        running = self.saving.get(p)
        if running is not None and not running.done():
            if not wait:
                return False
            with contextlib.suppress(RedisError, OSError, RedisStateLost):
                await running
        # the epoch joined already is kept: no command was sent, so no sign Redis is back
        write = await self._redis(self.publisher.checkpoint_writer(), answered=False)
        epoch = self.publisher.epoch
        # no await from here to the capture: a batch handled meanwhile would slip in unchecked
        waiting = any(out.tallies for out in self.unsent.get(p, ()))
        if waiting or p in self.stopped or not self.verified(p):
            return False
        arrays = checkpoint_blob.capture(ps, fingerprint=self.fingerprint)
        offset, topic_id = ps.next_offset, self.expected_topic.get(p)
        self.last_checkpoint[p] = time.monotonic()
        task = asyncio.ensure_future(
            self._save_checkpoint(p, ps, arrays, offset, topic_id, write, epoch))
        self.saving[p] = task
        if wait:
            return await task
        task.add_done_callback(self._saved_in_background)
        return True

    def _still_mine(self, p: int, ps: PartitionState) -> bool:
        """Whether ``ps`` is still partition ``p``'s live, unstopped state in this worker (a
        revoke drops it only after its last checkpoint)."""
        return p not in self.stopped and self.parts.get(p) is ps

    async def _save_checkpoint(self, p: int, ps: PartitionState, arrays: dict[str, Any],
                               offset: int, topic_id: str | None, write: Callable[..., bool],
                               epoch: str | None) -> bool:
        """Encode and send a captured checkpoint of ``ps`` (threads), then commit its offset;
        neither once the partition was stopped or handed over meanwhile. A delta that Redis
        refuses because the stored base is another one (or none) is sent again as a base, from
        the same capture. A Redis loss already recovered from (a new epoch joined meanwhile) is
        not reported again."""
        if self._blocking_redis is None:
            self._blocking_redis = redis.Redis.from_url(
                self.config.redis_url, socket_timeout=CHECKPOINT_TIMEOUT_S, socket_connect_timeout=2)
        base = self.delta_bases.get(p)
        while True:
            encoded = await asyncio.to_thread(checkpoint_blob.encode_checkpoint, arrays, base)
            if not self._still_mine(p, ps):
                return False
            try:
                saved = await self._redis(asyncio.to_thread(
                    write, self._blocking_redis, p, offset, encoded, topic_id))
            except RedisStateLost:
                self.delta_bases.pop(p, None)
                if self.publisher.epoch != epoch:
                    return False
                raise
            if saved is None and encoded.delta:  # the stored base is another: write one
                self.delta_bases.pop(p, None)
                base = None
                continue
            break
        if not saved:
            return False  # a newer checkpoint is stored (its base is still the one we know)
        kind = "delta" if encoded.delta else "base"
        self.metrics.checkpoints.labels(kind).inc()
        self.metrics.checkpoint_bytes.labels(kind).set(len(encoded.blob))
        self.delta_bases[p] = encoded.base
        if not self._still_mine(p, ps):
            return False
        try:
            if self.kafka is not None:
                await self.kafka.commit(p, offset)
        except Exception as exc:  # committing is an optimization; the checkpoint is the truth
            log.debug("offset commit for partition %d failed: %s", p, exc)
        return True

    def _saved_in_background(self, task: asyncio.Task[bool]) -> None:
        """A background checkpoint's end: Redis errors are counted (the next one is due after
        the interval); Redis having lost its data starts the recovery at the next flush."""
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, RedisStateLost):
            self.lost_in_background = exc  # recovered by the next flush, under its lock
        elif exc is not None and not isinstance(exc, (RedisError, OSError)):
            log.error("checkpoint failed: %r", exc)

    async def _refresh_metrics(self, published: list[int]) -> None:
        until = await self._redis(self.publisher.published_until())
        if until is None or until == self.last_seen_publish:
            return
        self.last_seen_publish = until
        for held in self.retained.values():
            for at in [at for at in held if at <= until]:
                del held[at]
        snap = await self._redis(self.publisher.latest())
        if snap:
            self.metrics.show_snapshot(snap, _published_unix_s(snap))
            self.metrics.last_snapshot.set(until / SECOND_MS)
        self.metrics.show_flows(await self._redis(self.publisher.latest_flows()))
        self.metrics.show_foreign(await self._redis(self.publisher.latest_foreign()))

    async def assign(self, partitions: list[int]) -> dict[int, int | None]:
        """Restore newly assigned partitions from their checkpoints; returns the offset each
        should be read from (its checkpoint's; None: from the beginning, there is none)."""
        out: dict[int, int | None] = {}
        for p in partitions:
            try:
                ps = await self.partition(p)
            except StoppedWaitingForRedisError:
                return out  # stopping: the rest are not taken either
            out[p] = ps.next_offset if ps.next_offset > 0 else None
        return out

    async def revoke(self, partitions: list[int]) -> None:
        """Checkpoint and drop partitions this worker no longer owns (a stopped one is dropped
        without a checkpoint: its next owner finds the same fault)."""
        mine = [p for p in partitions if p in self.parts]
        if not mine:
            return
        if any(not self.verified(p) for p in mine if p not in self.stopped):
            await self.check_topic()
        await self.flush()
        async with self._flush_lock:
            for p in mine:
                ps = self.parts[p]
                stopped = self.stopped.get(p)
                if stopped is not None:
                    self.metrics.partition_stopped.remove(str(p), stopped[0])
                else:
                    with contextlib.suppress(RedisError, OSError, RedisStateLost):
                        await self.publisher.forget_health(p)
                    saved = False
                    with contextlib.suppress(RedisError, OSError, RedisStateLost):
                        saved = await self.checkpoint(p, ps)
                    if not saved:
                        log.warning("partition %d revoked without a checkpoint: its next owner "
                                    "replays more", p)
                self.metrics.forget_partition(p)
                for d in (self.parts, self.lags, self.seen, self.retained, self.unsent,
                          self.written_marks, self.saving, self.delta_bases,
                          self.stopped, self.batch_at, self.confirmed_at, self.expected_topic,
                          self.first_window, self.last_checkpoint):
                    d.pop(p, None)
        self.metrics.partitions.set(len(self.parts))


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("topic check failed", exc_info=task.exception())


def _published_unix_s(snap: dict[str, Any]) -> float:
    """When the snapshot was published (its ``published_at``, written by whichever worker
    published it), so a restarted worker does not report an old snapshot as fresh."""
    at = snap.get("published_at")
    return parse_iso_ms(at) / SECOND_MS if at else time.time()


def _encoding(value: bytes, content_type: str | None) -> str:
    try:
        return sniff(value, content_type)
    except CodecError:
        return "unknown"
