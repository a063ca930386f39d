"""Event-time windows: the engine driven in event time, for ``defacto replay`` and live alike.

Pings are applied in tumbling windows: the window ending at boundary ``b`` (every ``every_ms``,
aligned to UTC) holds exactly the accepted pings with ``ts < b``. Input may be lightly out of
order: a ping is held until the watermark (the latest accepted event time minus ``lateness_ms``)
passes its window. Pings that arrive after their window was closed are rejected as ``too_late``;
pings far ahead of the stream (``ts_ahead_of_stream``) would drag the watermark forward and are
rejected too. When a window closes, :class:`EventTimeWindows` calls ``on_window(boundary)``: a
replay publishes a snapshot there, a live partition keeps a tally. The same rules drive both,
which is what makes them agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from estimators.engine import Engine
from estimators.units import HOUR_MS, MINUTE_MS, SECOND_MS
from stream.contract import Reject
from stream.decode.validate import PingBatch
from stream.timefmt import iso_utc

REANCHOR_PINGS = 10


@dataclass(frozen=True)
class WindowSettings:
    """Windowing settings; a live worker's must equal the replay's for the two to agree.

    ``every_ms``: window length (UTC-aligned); ``lateness_ms``: how far behind the latest event
    time a ping may arrive and still count; ``max_jump_ms``: pings further ahead of the stream
    are ``ts_ahead_of_stream``; ``max_future_ms``: pings (and watermarks) further ahead of the
    wall clock are rejected. Raises ``ValueError`` for a non-positive window or negative lateness.
    """

    every_ms: int = HOUR_MS
    lateness_ms: int = 10 * MINUTE_MS
    max_jump_ms: int = 6 * HOUR_MS
    max_future_ms: int = HOUR_MS

    def __post_init__(self) -> None:
        if self.every_ms <= 0:
            raise ValueError("snapshot interval must be positive")
        if self.lateness_ms < 0:
            raise ValueError("lateness must not be negative")


@dataclass
class WindowStats:
    """Counts of what happened to the input, by outcome and reject reason."""

    read: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    windows: int = 0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None

    def summary(self) -> str:
        """One line: rows read, accepted, rejected by reason."""
        n_rej = sum(self.rejected.values())
        reasons = ", ".join(f"{k} {v:,}" for k, v in self.rejected.most_common())
        line = f"{self.read:,} rows read, {self.accepted:,} pings accepted, {n_rej:,} rejected"
        return line + (f" ({reasons})" if reasons else "")


class EventTimeWindows:
    """Feeds decoded batches to an engine in event-time windows; calls back when one closes.

    Parameters
    ----------
    engine : Engine
        Receives the pings of each window before ``on_window`` is called for it.
    settings : WindowSettings
        Window length, lateness and the guards against times far ahead.
    on_window : callable(boundary_ms) -> None
        Called for each closed window, in order, with its end (UTC ms): the engine then holds
        exactly the accepted pings with ``ts < boundary_ms``.
    on_reject : callable(Reject) -> None, optional
        Receives every reject (also those already in a fed batch); they are counted in
        :attr:`stats` either way.
    start_ms, end_ms : int, optional
        Only pings with ``start_ms <= ts < end_ms`` count (``outside_period`` otherwise), and no
        window ends after ``end_ms``.
    """

    def __init__(self, engine: Engine, settings: WindowSettings,
                 on_window: Callable[[int], None],
                 on_reject: Callable[[Reject], None] | None = None,
                 start_ms: int | None = None, end_ms: int | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.every_ms = settings.every_ms
        self.lateness_ms = settings.lateness_ms
        self.max_jump_ms = settings.max_jump_ms
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.on_reject = on_reject or (lambda _r: None)
        self.on_window = on_window
        self.stats = WindowStats()
        self._pending: list[PingBatch] = []
        self._next_boundary: int | None = None
        self._published_until: int | None = None
        self._max_ts: int | None = None
        self._ahead_run = 0

    def _reject(self, rejects: Iterable[Reject]) -> None:
        for r in rejects:
            self.stats.rejected[r.reason] += 1
            self.on_reject(r)

    def _reject_rows(self, batch: PingBatch, mask: np.ndarray, source: Callable[[int], str],
                     reason: str, detail: str) -> None:
        rows = batch.row[mask].tolist()
        self._reject(Reject(source(i), reason, detail, "") for i in rows)

    def feed(self, batch: PingBatch, source: Callable[[int], str], rows_read: int = 0) -> int:
        """Apply decoded pings (``batch.rejects`` included), closing every window now complete.

        ``source(batch.row[i])`` names ping ``i`` in a reject; ``rows_read`` is how many input
        rows the batch came from (counted in :attr:`stats`). Returns the pings accepted.
        """
        self.stats.read += rows_read
        self._reject(batch.rejects)
        if len(batch) == 0:
            return 0
        before = self.stats.accepted
        self._feed(batch, source)
        return self.stats.accepted - before

    def count_read(self, rows: int) -> None:
        """Count input rows (pings and unreadable messages) that reached this stage."""
        self.stats.read += rows

    def _feed(self, batch: PingBatch, source: Callable[[int], str]) -> None:
        ts = batch.ts_ms
        in_range = np.ones(len(ts), dtype=bool)
        if self.start_ms is not None:
            in_range &= ts >= self.start_ms
        if self.end_ms is not None:
            in_range &= ts < self.end_ms
        self._reject_rows(batch, ~in_range, source, "outside_period",
                          "ts outside the requested --from/--to period")
        if self._max_ts is None:
            # the first ping anchors the stream (ts_in_future guards it against the clock)
            self._max_ts = int(ts[np.argmax(in_range)]) if in_range.any() else None
        if self._max_ts is None:
            return
        ahead, before = self._ahead_of_stream(ts, in_range)
        self._reject_rows(batch, ahead, source, "ts_ahead_of_stream",
                          f"ts more than {self.max_jump_ms // SECOND_MS} s ahead of the stream")
        ok = in_range & ~ahead
        if self._next_boundary is None and ok.any():
            first = self.start_ms if self.start_ms is not None else int(ts[np.argmax(ok)])
            self._next_boundary = (first // self.every_ms + 1) * self.every_ms
        if self._next_boundary is not None:
            # the windows closed by the time each ping arrives (as if pings came one at a time),
            # so which pings are too late does not depend on how the input was batched
            closed = self._closed_before(before)
            late = ok & (ts < closed)
            self._reject_rows(batch, late, source, "too_late",
                              "arrived after the snapshot covering its time was published")
            ok &= ~late
        good = batch.select(ok)
        if len(good) == 0:
            return
        self.stats.accepted += len(good)
        lo, hi = int(good.ts_ms.min()), int(good.ts_ms.max())
        self.stats.first_ts_ms = lo if self.stats.first_ts_ms is None else min(
            lo, self.stats.first_ts_ms)
        self.stats.last_ts_ms = hi if self.stats.last_ts_ms is None else max(
            hi, self.stats.last_ts_ms)
        self._max_ts = max(self._max_ts, hi)
        self._pending.append(good)
        self._advance(self._max_ts - self.lateness_ms)

    def _ahead_of_stream(self, ts: np.ndarray, in_range: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pings too far ahead of the latest event time before them, and that running maximum.

        Rejected pings do not move the maximum, which makes this a sequential rule; the vector
        pass is exact when nothing is ahead, the loop runs only when something is. After
        ``REANCHOR_PINGS`` pings in a row are ahead, the stream has moved on (or began with a
        stale ping): the last of them becomes the new latest time.
        """
        assert self._max_ts is not None
        masked = np.where(in_range, ts, np.iinfo(np.int64).min)
        before = np.maximum.accumulate(np.concatenate([[self._max_ts], masked]))[:-1]
        ahead = in_range & (ts > before + self.max_jump_ms)
        if not ahead.any():
            if in_range.any():
                self._ahead_run = 0
            return ahead, before
        running, run = self._max_ts, self._ahead_run
        for i, (t, use) in enumerate(zip(ts.tolist(), in_range.tolist(), strict=True)):
            before[i] = running
            ahead[i] = False
            if not use:
                continue
            if t > running + self.max_jump_ms:
                run += 1
                if run < REANCHOR_PINGS:
                    ahead[i] = True
                    continue
            run = 0
            running = max(running, t)
        self._ahead_run = run
        return ahead, before

    def _closed_before(self, before: np.ndarray) -> np.ndarray:
        """For each ping, the end of the last window already closed when it arrives."""
        assert self._next_boundary is not None
        nb, every = self._next_boundary, self.every_ms
        watermark = before - self.lateness_ms
        k = np.floor_divide(watermark - nb, every)
        closed = np.where(k >= 0, nb + k * every, np.iinfo(np.int64).min)
        if self.end_ms is not None:
            closed = np.minimum(closed, self.end_ms)
        if self._published_until is not None:
            closed = np.maximum(closed, self._published_until)
        return closed

    def advance_to(self, watermark_ms: int) -> None:
        """A source's promise that no ping older than ``watermark_ms`` follows: close windows.

        Windows that have seen no ping yet start at this watermark.
        """
        if self._next_boundary is None:
            self._next_boundary = (watermark_ms // self.every_ms) * self.every_ms
        self._max_ts = watermark_ms if self._max_ts is None else max(self._max_ts, watermark_ms)
        self._advance(watermark_ms)

    def _advance(self, watermark: int) -> None:
        while self._next_boundary is not None and self._next_boundary <= watermark:
            if self.end_ms is not None and self._next_boundary > self.end_ms:
                break
            self._emit(self._next_boundary)
            self.stats.windows += 1
            self._published_until = self._next_boundary
            self._next_boundary += self.every_ms

    def _emit(self, boundary: int) -> None:
        pending = _concat(self._pending)
        self._pending = []
        if pending is not None:
            now = pending.ts_ms < boundary
            self.engine.ingest(pending.device_key[now], pending.ts_ms[now],
                               pending.opclass[now], pending.loc[now])
            if not now.all():
                self._pending = [pending.select(~now)]
        self.on_window(boundary)

    def finish(self, last_ts_ms: int | None = None) -> None:
        """End of input: close every remaining window up to the last ping (or ``end_ms``).

        ``last_ts_ms`` is the last event time of the whole input when these windows saw only part
        of it (one Kafka partition); by default its own last accepted ping.
        """
        if last_ts_ms is not None and self._next_boundary is None:
            self._next_boundary = (last_ts_ms // self.every_ms + 1) * self.every_ms
        if self._next_boundary is None:
            return
        last = max(self.stats.last_ts_ms or 0, last_ts_ms or 0)
        last = last if self.end_ms is None else self.end_ms - 1
        self._advance((last // self.every_ms + 1) * self.every_ms)

    def apply_all(self) -> None:
        """Ingest every held ping without closing a window (calibration, at the period end)."""
        pending = _concat(self._pending)
        self._pending = []
        if pending is not None:
            self.engine.ingest(pending.device_key, pending.ts_ms, pending.opclass, pending.loc)

    @property
    def latest_ts_ms(self) -> int | None:
        """The latest event time of the stream so far (accepted pings and watermarks)."""
        return self._max_ts

    def held(self) -> PingBatch | None:
        """Accepted pings waiting for their window to close (part of a checkpoint)."""
        return _concat(self._pending)

    def position(self) -> dict[str, int | None]:
        """Where the windows stand (with :meth:`held`, everything needed to resume exactly)."""
        return {"next_boundary": self._next_boundary, "published_until": self._published_until,
                "max_ts": self._max_ts, "ahead_run": self._ahead_run,
                "first_ts": self.stats.first_ts_ms, "last_ts": self.stats.last_ts_ms}

    def resume(self, position: dict[str, int | None], held: PingBatch | None) -> None:
        """Continue from a :meth:`position` and its held pings (on fresh windows)."""
        self._next_boundary = position["next_boundary"]
        self._published_until = position["published_until"]
        self._max_ts = position["max_ts"]
        self._ahead_run = int(position["ahead_run"] or 0)
        self.stats.first_ts_ms = position["first_ts"]
        self.stats.last_ts_ms = position["last_ts"]
        self._pending = [held] if held is not None and len(held) else []

    def describe_period(self) -> str:
        """The event-time span of accepted pings, for messages."""
        if self.stats.first_ts_ms is None or self.stats.last_ts_ms is None:
            return "no accepted pings"
        return f"{iso_utc(self.stats.first_ts_ms)} .. {iso_utc(self.stats.last_ts_ms)}"


def _concat(batches: list[PingBatch]) -> PingBatch | None:
    if not batches:
        return None
    if len(batches) == 1:
        return batches[0]
    return PingBatch(*(np.concatenate([getattr(b, f) for b in batches])
                       for f in ("device_key", "ts_ms", "opclass", "loc")),
                     row=np.concatenate([b.row for b in batches]))
