"""One Kafka partition's share of the estimate: decode, window, tally; checkpointable.

A :class:`PartitionState` is the live twin of one offline replay over the pings of one partition:
the same :class:`~stream.estimate.windows.EventTimeWindows` rules (event-time windows, lateness
watermark, too-late pings), but instead of publishing a snapshot when a window closes it keeps a
:class:`~estimators.tally.Tally`, which the publisher sums over all partitions. It has no Kafka,
Redis or asyncio in it: the worker hands it message values with their offsets.

Recovery: :meth:`checkpoint` captures everything (device state, held pings, window position, the
devices behind the watermark and the next offset to read) as one binary blob
(:mod:`stream.estimate.checkpoint`). Its size follows the devices the figures can still use
(evicted devices are not in it) plus the pings held after the next window end or night close
(about ``--lateness`` of the partition's stream), not the length of the open window. A restored
partition skips messages below that offset, so a message delivered twice (at-least-once delivery
after a crash or a rebalance) changes nothing, and it re-derives the same tallies from the same
messages, so rewriting a tally is harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from estimators.engine import Engine
from estimators.tally import Tally
from estimators.units import SECOND_MS
from stream.contract import PingColumns, Reject
from stream.decode.messages import decode_messages
from stream.decode.validate import PingDecoder
from stream.estimate import checkpoint
from stream.estimate.windows import EventTimeWindows, WindowSettings


@dataclass
class BatchResult:
    """What one batch of messages did to a partition.

    ``messages``: messages handed in; ``skipped``: of those, already applied (below the next
    offset); ``accepted``: pings accepted; ``rejects``: pings and messages set aside;
    ``tallies``: windows closed, in order; ``max_event_ms``: the newest event time accepted;
    ``encodings``: the messages applied (not skipped) by encoding (see
    :attr:`~stream.decode.messages.Decoded.encodings`).
    """

    messages: int = 0
    skipped: int = 0
    accepted: int = 0
    rejects: list[Reject] = field(default_factory=list)
    tallies: list[Tally] = field(default_factory=list)
    max_event_ms: int | None = None
    encodings: dict[str, int] = field(default_factory=dict)


class PartitionState:
    """Engine, windows and offset of one partition of the pings topic.

    ``engine`` must be fresh (its device state becomes this partition's); ``secret`` keys the
    device hashes (every worker must share it); ``settings`` must equal every other partition's
    and the replay's. :attr:`next_offset` is the first message offset not yet applied.
    """

    def __init__(self, topic: str, partition: int, engine: Engine, secret: bytes,
                 settings: WindowSettings) -> None:
        self.topic = topic
        self.partition = partition
        self.engine = engine
        self.settings = settings
        self.decoder = PingDecoder(engine, secret, max_future_ms=settings.max_future_ms)
        self._out: BatchResult = BatchResult()
        self.windows = EventTimeWindows(engine, settings, on_window=self._close_window,
                                        on_reject=lambda r: self._out.rejects.append(r))
        self.next_offset = 0
        self.closed_until: int | None = None
        self.key_id = checkpoint.key_id(secret)

    @property
    def last_accepted_ms(self) -> int | None:
        """Event time of the partition's latest accepted ping, if any."""
        return self.windows.stats.last_ts_ms

    def _close_window(self, boundary: int) -> None:
        self._out.tallies.append(self.engine.tally(boundary))
        self.closed_until = boundary

    def _source(self, offsets: np.ndarray) -> Callable[[int], str]:
        """Names message ``i`` of ``offsets`` as ``topic[partition]@offset``."""
        def name(i: int) -> str:
            return f"{self.topic}[{self.partition}]@{int(offsets[i])}"
        return name

    def process(self, offsets: list[int] | np.ndarray, values: list[bytes],
                content_types: list[str | None] | None = None) -> BatchResult:
        """Apply messages of this partition (in offset order); return rejects and closed tallies.

        ``offsets`` (int64, one per value) and ``values`` are the whole fetched batch of this
        partition, as the consumer hands it over; ``content_types`` (None: no headers) likewise.
        """
        out = self._out = BatchResult(messages=len(values))
        first = int(np.searchsorted(np.asarray(offsets, dtype=np.int64), self.next_offset))
        out.skipped = first
        if first >= len(values):
            return out
        offs = np.asarray(offsets[first:], dtype=np.int64)
        values = values[first:]
        types = content_types[first:] if content_types else None
        message = self._source(offs)
        decoded = decode_messages(values, types, source=message)
        out.rejects.extend(decoded.rejects)
        out.encodings = decoded.encodings
        self.windows.count_read(len(decoded.source_rows) + len(decoded.rejects))
        cols, msg_of_row = decoded.columns, decoded.source_rows
        start = 0
        for msg, ts_ms, final in [*decoded.watermarks, (len(values), 0, False)]:
            stop = int(np.searchsorted(msg_of_row, msg))
            if stop > start:
                self._apply({k: v[start:stop] for k, v in cols.items()}, message,
                            msg_of_row[start:stop])
            start = stop
            if msg == len(values):
                break
            bad = self._bad_watermark(ts_ms)
            if bad:
                out.rejects.append(Reject(message(msg), "bad_watermark", bad, f"<watermark {ts_ms}>"))
            elif final:
                self.windows.finish(ts_ms)
            else:
                self.windows.advance_to(ts_ms)
        self.next_offset = int(offs[-1]) + 1
        return out

    def _bad_watermark(self, ts_ms: int) -> str | None:
        """Why a watermark cannot be applied (it would close windows far beyond the data)."""
        s = self.settings
        if ts_ms > time.time() * SECOND_MS + s.max_future_ms:
            return f"watermark more than {s.max_future_ms // SECOND_MS} s ahead of the clock"
        top = self.windows.latest_ts_ms
        if top is not None and ts_ms > top + s.max_jump_ms:
            return f"watermark more than {s.max_jump_ms // SECOND_MS} s ahead of the stream"
        return None

    def _apply(self, cols: PingColumns, message: Callable[[int], str],
               msg_of_row: np.ndarray) -> None:
        def source(i: int) -> str:
            return message(int(msg_of_row[i]))

        batch = self.decoder.decode_columns(cols, source)
        self._out.accepted += self.windows.feed(batch, source)
        if len(batch):
            top = int(batch.ts_ms.max())
            prev = self._out.max_event_ms
            self._out.max_event_ms = top if prev is None else max(prev, top)

    def checkpoint(self) -> bytes:
        """Everything needed to resume this partition exactly, as one blob."""
        return checkpoint.write(self)

    def restore(self, blob: bytes) -> None:
        """Load a :meth:`checkpoint` into this fresh partition state.

        Raises :class:`~stream.estimate.checkpoint.CheckpointMismatchError` for a checkpoint of
        other settings or another key, ``ValueError`` for an unsupported checkpoint version.
        """
        checkpoint.restore(self, blob)
