"""The worker's Kafka side: whole fetched batches (aiokafka ``getmany``), offsets, dead letters.

:class:`BatchConsumer` wraps one ``aiokafka.AIOKafkaConsumer`` of the pings topic and one
``AIOKafkaProducer`` for the dead-letter topic, both on the worker's event loop.
:meth:`BatchConsumer.fetch` takes up to ``batch_messages`` messages with one ``getmany`` call and
hands them over by partition as three parallel lists (offsets, values, content types): one
await per batch, never one per message, and nothing of Faust's per-message machinery (events,
streams, acks, sensors).

Offsets are never committed automatically (``enable_auto_commit`` off): the runtime commits a
partition's offset with :meth:`BatchConsumer.commit` only after its checkpoint landed in Redis.
Rebalancing goes through a ``ConsumerRebalanceListener``: on assign, each partition is restored
from its checkpoint and the consumer seeks to the checkpoint's offset (the beginning when there
is none); on revoke, each partition is checkpointed (and its offset committed) before it is given
up. aiokafka awaits both callbacks before fetching again.

Why aiokafka rather than confluent-kafka's ``consume(n)``: both fetch at ~270 k msg/s here
(``bench/live_throughput.py`` ``raw`` stage; aiokafka measured alike), but librdkafka 2.12.1
(confluent-kafka 2.12.2, the version Quix Streams needs) crashes the whole process with SIGSEGV
in ``rd_kafka_metadata_cache_find`` when a broker comes back empty and the topic is recreated
(``tests/worker/test_faults.py``, 2 of 4 runs; cf. confluentinc/librdkafka#4964, #5280), where
the worker must stay up and stop the partition loudly.

Two private aiokafka hooks (checked against aiokafka 0.14.0, which faust-streaming pins;
``tests/worker/test_batch_ingest.py`` fails if either stops working):

1. :func:`raw_records`: ``getmany`` hands over aiokafka's parsed records (``offset``, ``value``,
   ``headers``) instead of building a ``ConsumerRecord`` of 11 fields per message, which cost
   about a fifth of the worker's CPU per JSON message.
2. :func:`no_topic_autocreation`: aiokafka's metadata requests always allow the broker to create
   a missing topic. After a broker lost its data, the worker's next metadata refresh would
   recreate the pings topic with the broker's default partition count before the operator
   recreates it (and the dead-letter topic likewise); the worker must find the topic missing.

Garbage collection: a fetched batch holds a few Python objects per message (aiokafka's record, the
value) until it is handled; the consumer tunes the collector for that at start
(:func:`stream.gc_tuning.batch_gc`).

Content type: the ``content-type`` header is read only for a message whose value does not start
with ``{``. A value starting with ``{`` is JSON (a ping or a control message) whatever its header
says: a mislabelled one was a reject (``bad_frame``/``bad_avro``) and is now decoded as JSON.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import client as aiokafka_client
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.errors import KafkaError

from stream.gc_tuning import batch_gc
from stream.worker.config import WorkerConfig

log = logging.getLogger("defacto.worker")
COMMIT_TIMEOUT_S = 5.0
"""At most this long for an offset commit (an optimization: the Redis checkpoint is the truth)."""
COMMIT_PAUSE_S = 30.0
"""After a commit timed out, commits are skipped this long (so revoking many partitions with
the broker away costs one timeout, not one per partition)."""
AIOKAFKA_CHECKED = "0.14.0"
def raw_records() -> None:
    """Make aiokafka's ``getmany`` return its parsed records as they are (each has ``offset``,
    ``value``, ``headers``, ``key``, ``timestamp``) rather than a ``ConsumerRecord`` per
    message. Process-wide: the worker runs no other aiokafka consumer (Faust's Kafka side is
    off), and it has no deserializers to apply. Idempotent."""
    aiokafka_fetcher.PartitionRecords._consumer_record = _as_is


def _as_is(self: Any, tp: Any, record: Any) -> Any:
    return record


class _NoAutoCreate(aiokafka_client.MetadataRequest):  # type: ignore[misc]
    def __init__(self, topics: list[str] | None = None,
                 allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation)


def no_topic_autocreation() -> None:
    """Make every aiokafka metadata request of this process ask the broker not to create the
    topics it names (the worker's topics are created by the operator). Idempotent."""
    aiokafka_client.MetadataRequest = _NoAutoCreate


@dataclass
class PartitionBatch:
    """One partition's share of a fetched batch, in offset order: ``offsets`` (int64),
    ``values`` (message values, ``b""`` for a null value) and ``content_types`` (the
    ``content-type`` header of each message, or None for the whole batch when no message of it
    needs one)."""

    offsets: np.ndarray
    values: list[bytes]
    content_types: list[str | None] | None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: BatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner._assigned(assigned)


class BatchConsumer:
    """The pings consumer and the dead-letter producer of one worker.

    ``on_assign(partitions)`` (a coroutine function) restores the partitions and returns the
    offset each should start from (None: the beginning); ``on_revoke(partitions)`` checkpoints
    them. ``on_dead_letter_error(exc)``
    counts a failed dead letter. Call :meth:`start` and :meth:`stop` on the loop.
    """

    def __init__(self, config: WorkerConfig,
                 on_assign: Callable[[list[int]], Awaitable[dict[int, int | None]]],
                 on_revoke: Callable[[list[int]], Awaitable[None]],
                 on_dead_letter_error: Callable[[BaseException], None] = lambda exc: None) -> None:
        raw_records()
        no_topic_autocreation()
        self.config = config
        self.topic = config.topic
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_dead_letter_error = on_dead_letter_error
        session_ms = round(config.session_timeout_s * 1000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=config.kafka, group_id=config.group,
            client_id=f"defacto-{config.group}", enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=config.fetch_wait_ms,
            max_partition_fetch_bytes=config.fetch_max_bytes,
            fetch_max_bytes=max(config.fetch_max_bytes, 64 << 20),
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, min(3000, session_ms // 4)),
            request_timeout_ms=max(40_000, session_ms * 2),
            rebalance_timeout_ms=max(20_000, session_ms * 2),
            max_poll_interval_ms=max(300_000, session_ms * 2))
        self.producer = AIOKafkaProducer(bootstrap_servers=config.kafka, acks=1, linger_ms=50,
                                         client_id=f"defacto-{config.group}-dead")
        self.assigned: set[int] = set()
        """Partitions of the pings topic assigned now."""
        self._commits_paused_until = 0.0
        self.joined = False
        """The group has given this worker its first assignment (possibly empty), and the
        partitions in it are resumed from their checkpoints: readiness waits for it."""
        self._pending: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        """Connect and join the consumer group on the pings topic (and tune the garbage
        collector for batches: :func:`batch_gc`)."""
        batch_gc()
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=_Listener(self))

    async def stop(self) -> None:
        """Leave the group (the revoke callback checkpoints what this worker holds) and
        deliver the dead letters still queued. aiokafka does not call the listener when it
        leaves the group, so the partitions held are revoked here first (the fetch loop must
        have ended)."""
        try:
            held = [TopicPartition(self.topic, p) for p in sorted(self.assigned)]
            if held:
                await self._revoked(held)
            await self.consumer.stop()
        finally:
            if self._pending:
                await asyncio.wait(self._pending, timeout=30)
            await self.producer.stop()

    # -- rebalance callbacks (awaited by aiokafka before it fetches again)
    async def _assigned(self, tps: Any) -> None:
        mine = sorted(tp.partition for tp in tps if tp.topic == self.topic)
        self.assigned = set(mine)
        if mine:
            starts = await self._on_assign(mine)
            for p in mine:
                tp = TopicPartition(self.topic, p)
                at = starts.get(p)
                if at is not None and at > 0:
                    self.consumer.seek(tp, at)
                else:
                    await self.consumer.seek_to_beginning(tp)
        self.joined = True

    async def _revoked(self, tps: Any) -> None:
        mine = sorted(tp.partition for tp in tps if tp.topic == self.topic)
        self.assigned -= set(mine)
        if mine:
            await self._on_revoke(mine)

    def owns(self, p: int) -> bool:
        """Whether partition ``p`` is assigned to this worker now."""
        return p in self.assigned

    # -- the fetch
    async def fetch(self, max_messages: int, timeout_s: float) -> dict[int, PartitionBatch]:
        """Up to ``max_messages`` messages (waiting at most ``timeout_s`` for the first ones),
        grouped by partition."""
        got = await self.consumer.getmany(timeout_ms=round(timeout_s * 1000),
                                          max_records=max_messages)
        return {tp.partition: batch_of(records) for tp, records in got.items()
                if tp.topic == self.topic and records}

    # -- offsets
    def highwater(self, p: int) -> int | None:
        """Partition ``p``'s end offset as of the latest fetch (None: not known, or the
        partition is not assigned)."""
        try:
            return self.consumer.highwater(TopicPartition(self.topic, p))
        except (AssertionError, KafkaError):  # aiokafka asserts the partition is assigned
            return None

    async def earliest(self, p: int) -> int:
        """The oldest offset Kafka still holds of partition ``p`` (asks the broker)."""
        tp = TopicPartition(self.topic, p)
        return max((await self.consumer.beginning_offsets([tp])).get(tp, 0), 0)

    def seek(self, p: int, offset: int) -> None:
        """Read partition ``p`` from ``offset`` on (what was fetched beyond it is dropped)."""
        self.consumer.seek(TopicPartition(self.topic, p), offset)

    async def commit(self, p: int, offset: int) -> bool:
        """Commit exactly ``offset`` (the next to read) for partition ``p``; whether it was
        sent. At most :data:`COMMIT_TIMEOUT_S` (aiokafka waits for a group coordinator without
        end: a worker told to stop while the broker is away would never stop), then none for
        :data:`COMMIT_PAUSE_S`; raises ``TimeoutError`` when it times out."""
        if time.monotonic() < self._commits_paused_until:
            return False
        try:
            await asyncio.wait_for(
                self.consumer.commit({TopicPartition(self.topic, p): offset}), COMMIT_TIMEOUT_S)
        except TimeoutError:
            self._commits_paused_until = time.monotonic() + COMMIT_PAUSE_S
            raise
        return True

    # -- dead letters
    async def dead_letter(self, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Queue one dead letter (delivered in the background; a failure is counted)."""
        fut = await self.producer.send(self.config.dead_letter_topic, value=value, headers=headers)
        self._pending.add(fut)
        fut.add_done_callback(self._delivered)

    def _delivered(self, fut: asyncio.Future[Any]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            self._on_dead_letter_error(fut.exception())  # type: ignore[arg-type]


def ensure_topic(bootstrap: str, name: str, timeout_s: float = 15.0) -> None:
    """Create topic ``name`` with one partition unless it exists (the dead-letter topic); a
    failure is logged, not raised: dead letters that cannot be delivered are counted."""
    from confluent_kafka import KafkaError as ConfluentError
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    try:
        if name in admin.list_topics(timeout=timeout_s).topics:
            return
        futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                                      request_timeout=timeout_s, operation_timeout=timeout_s)
        futures[name].result(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not (isinstance(err, ConfluentError) and err.code() == ConfluentError.TOPIC_ALREADY_EXISTS):
            log.warning("could not create the dead-letter topic %r: %s", name, exc)


def batch_of(records: list[Any]) -> PartitionBatch:
    """One partition's aiokafka records (offset order) → a :class:`PartitionBatch`. The values'
    first bytes are looked at together (joined); headers only when one is not ``{``."""
    offsets = np.fromiter(map(_OFFSET, records), dtype=np.int64, count=len(records))
    values = list(map(_VALUE, records))
    if None in values:
        values = [v or b"" for v in values]
    if b"".join(map(_HEAD, values)).count(b"{") == len(values):
        return PartitionBatch(offsets, values, None)
    cts: list[str | None] | None = None
    other = [i for i, v in enumerate(values) if v[:1] != b"{"]
    found = {i: _content_type(getattr(records[i], "headers", None)) for i in other}
    if any(ct is not None for ct in found.values()):
        cts = [found.get(i) for i in range(len(values))]
    return PartitionBatch(offsets, values, cts)


_OFFSET, _VALUE, _HEAD = attrgetter("offset"), attrgetter("value"), itemgetter(slice(0, 1))


def _content_type(headers: Any) -> str | None:
    if not headers:
        return None
    for k, v in headers:
        if k.lower() == "content-type":
            return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return None
