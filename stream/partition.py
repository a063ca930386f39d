"""One Kafka partition's share of the estimate: decode, window, tally; checkpointable.

A :class:`PartitionState` is the live twin of one offline replay over the pings of one partition:
the same :class:`~stream.replay.Replayer` rules (event-time windows, lateness watermark,
too-late pings), but instead of publishing a snapshot when a window closes it keeps a
:class:`~estimators.tally.Tally`, which the publisher sums over all partitions. It has no Kafka,
Redis or asyncio in it: the Faust agent hands it message values with their offsets.

Recovery: :meth:`checkpoint` captures everything (device state, held pings, window position and
the next offset to read) as one binary blob. A restored partition skips messages below that offset,
so a message delivered twice (at-least-once delivery after a crash or a rebalance) changes nothing,
and it re-derives the same tallies from the same messages, so rewriting a tally is harmless.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from estimators.engine import Engine
from estimators.tally import Tally
from stream.codec import decode_messages
from stream.pings import PingBatch, PingDecoder, Reject
from stream.replay import Replayer

CHECKPOINT_VERSION = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint that this worker's configuration cannot resume from."""

    def __init__(self, why: str) -> None:
        super().__init__(f"cannot resume from the partition's checkpoint: {why}")


@dataclass
class LiveSettings:
    """Windowing settings shared by every partition (they must match the replay's to agree)."""

    every_ms: int = 900_000
    lateness_ms: int = 600_000
    max_jump_ms: int = 6 * 3_600_000
    max_future_s: int = 3600


@dataclass
class BatchResult:
    """What one batch of messages did to a partition."""

    messages: int = 0
    skipped: int = 0
    accepted: int = 0
    rejects: list[Reject] = field(default_factory=list)
    tallies: list[Tally] = field(default_factory=list)
    max_event_ms: int | None = None


class PartitionState:
    """Engine, windows and offset of one partition of the pings topic."""

    def __init__(self, topic: str, partition: int, engine: Engine, secret: bytes,
                 settings: LiveSettings) -> None:
        self.topic = topic
        self.partition = partition
        self.engine = engine
        self.settings = settings
        self.decoder = PingDecoder(engine, secret, max_future_s=settings.max_future_s)
        self._out: BatchResult = BatchResult()
        self.replayer = Replayer(engine, self.decoder, settings.every_ms,
                                 lateness_ms=settings.lateness_ms,
                                 max_jump_ms=settings.max_jump_ms,
                                 on_reject=lambda r: self._out.rejects.append(r),
                                 on_window=self._close_window)
        self.next_offset = 0
        self.closed_until: int | None = None
        self.key_id = hashlib.blake2b(b"defacto checkpoint key id", key=secret[:64],
                                      digest_size=8).hexdigest()

    def _close_window(self, boundary: int) -> None:
        self._out.tallies.append(self.engine.tally(boundary))
        self.closed_until = boundary

    def _source(self, offsets: np.ndarray, rows: np.ndarray) -> Callable[[int], str]:
        def name(i: int) -> str:
            return f"{self.topic}[{self.partition}]@{int(offsets[rows[i]])}"
        return name

    def process(self, offsets: list[int], values: list[bytes],
                content_types: list[str | None] | None = None) -> BatchResult:
        """Apply messages of this partition (in offset order); return rejects and closed tallies."""
        out = self._out = BatchResult(messages=len(values))
        first = int(np.searchsorted(np.asarray(offsets, dtype=np.int64), self.next_offset))
        out.skipped = first
        if first >= len(values):
            return out
        offs = np.asarray(offsets[first:], dtype=np.int64)
        values = values[first:]
        types = content_types[first:] if content_types else None
        decoded = decode_messages(values, types)
        for msg, reason, detail, raw in decoded.rejects:
            out.rejects.append(Reject(f"{self.topic}[{self.partition}]@{int(offs[msg])}", reason,
                                      detail, raw))
        self.replayer.stats.read += len(decoded.source_rows) + len(decoded.rejects)
        cols, msg_of_row = decoded.columns, decoded.source_rows
        start = 0
        for msg, ts_ms, final in [*decoded.watermarks, (len(values), 0, False)]:
            stop = int(np.searchsorted(msg_of_row, msg))
            if stop > start:
                self._apply({k: v[start:stop] for k, v in cols.items()}, offs, msg_of_row[start:stop])
            start = stop
            if msg == len(values):
                break
            bad = self._bad_watermark(ts_ms)
            if bad:
                out.rejects.append(Reject(f"{self.topic}[{self.partition}]@{int(offs[msg])}",
                                          "bad_watermark", bad, f"<watermark {ts_ms}>"))
            elif final:
                self.replayer.finish(ts_ms)
            else:
                self.replayer.advance_to(ts_ms)
        self.next_offset = int(offs[-1]) + 1
        return out

    def _bad_watermark(self, ts_ms: int) -> str | None:
        """Why a watermark cannot be applied (it would close windows far beyond the data)."""
        if ts_ms > time.time() * 1000 + self.settings.max_future_s * 1000:
            return f"watermark more than {self.settings.max_future_s} s ahead of the clock"
        top = self.replayer.latest_ts_ms
        if top is not None and ts_ms > top + self.settings.max_jump_ms:
            return f"watermark more than {self.settings.max_jump_ms // 1000} s ahead of the stream"
        return None

    def _apply(self, cols: dict[str, np.ndarray], offsets: np.ndarray, msg_of_row: np.ndarray) -> None:
        batch: PingBatch = self.decoder.decode_columns(cols, self._source(offsets, msg_of_row))
        before = self.replayer.stats.accepted
        self.replayer.feed_batch(batch, self._source(offsets, msg_of_row))
        self._out.accepted += self.replayer.stats.accepted - before
        if len(batch):
            top = int(batch.ts_ms.max())
            prev = self._out.max_event_ms
            self._out.max_event_ms = top if prev is None else max(prev, top)

    def checkpoint(self) -> bytes:
        """Everything needed to resume this partition exactly, as one ``.npz`` blob."""
        held = self.replayer.held() or PingBatch(
            np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8),
            np.zeros(0, np.int64))
        meta = {
            "version": CHECKPOINT_VERSION, "topic": self.topic, "partition": self.partition,
            "next_offset": self.next_offset, "closed_until": self.closed_until,
            "position": self.replayer.position(),
            "every_ms": self.settings.every_ms, "lateness_ms": self.settings.lateness_ms,
            "res": self.engine.config.res, "key_id": self.key_id,
        }
        state = self.engine.export_state()
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)),
                 held_key=held.device_key, held_ts=held.ts_ms, held_opclass=held.opclass,
                 held_cell=self.engine.cells.cell[held.loc],
                 **{f"state_{k}": v for k, v in state.items()})
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Load a :meth:`checkpoint` into this fresh partition state."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"checkpoint version {meta.get('version')} is not supported")
            if (meta["every_ms"], meta["lateness_ms"]) != (self.settings.every_ms,
                                                          self.settings.lateness_ms):
                raise CheckpointMismatchError("it was taken with another --every or --lateness")
            if meta["res"] != self.engine.config.res:
                raise CheckpointMismatchError(f"it was taken at H3 resolution {meta['res']}")
            if meta["key_id"] != self.key_id:
                raise CheckpointMismatchError(
                    "it was taken with another pseudonymization key (after a key rotation, start "
                    "with a new --prefix: state restarts)")
            self.engine.restore_state({k[6:]: z[k] for k in z.files if k.startswith("state_")})
            held_loc = self.engine.cells.locate(z["held_cell"])
            held = PingBatch(z["held_key"], z["held_ts"], z["held_opclass"], held_loc,
                             row=np.zeros(len(held_loc), np.int64))
        self.replayer.resume(meta["position"], held)
        self.next_offset = int(meta["next_offset"])
        self.closed_until = meta["closed_until"]
