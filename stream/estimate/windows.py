"""Event-time windows: the engine driven in event time, for ``defacto replay`` and live alike.

Pings are applied in tumbling windows: the window ending at boundary ``b`` (every ``every_ms``,
aligned to UTC) holds exactly the accepted pings with ``ts < b``. Input may be lightly out of
order; a window closes when the *watermark* passes its end.

**Watermark.** The stream's time is the ``watermark_devices``-th latest of the devices' latest
accepted event times (10 distinct devices by default), and the watermark is that time minus
``lateness_ms`` (or a producer's watermark, if later). A few devices with fast clocks therefore
cannot move it: they would need to be ``watermark_devices`` at once. While fewer devices have
been seen, the stream's time is the earliest of their latest times (all of them have reached it;
with a single device, only producer watermarks and the end of input close windows).

**Seals.** Window ends, and the night closes at which the engine evaluates usual residence and
foreign stays (:meth:`~estimators.engine.Engine.night_closes_until`), are *seals*: once the watermark passes
one, pings before it are ``too_late``. Accepted pings before the next seal go into the engine
at once; only pings after it are held (in memory and in checkpoints), so what is held is bounded
by the lateness, not by the window length. When the watermark passes a seal, the held pings
before it are ingested, and at a window end :class:`EventTimeWindows` calls ``on_window(b)``: a
replay publishes a snapshot there, a live partition keeps a tally.

**Guards.** Pings far ahead of the stream's latest time (``ts_ahead_of_stream``) are rejected,
and pings whose cell finds no room in the engine's cell table (``too_many_cells``). Every rule is
evaluated per ping in arrival order, as if pings came one at a time, so the outcome does not
depend on how input is chunked; the same rules drive replay and live, which is what makes them
agree.
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
WATERMARK_DEVICES = 10
MIN_DEVICES = 2
NEVER = np.iinfo(np.int64).min


@dataclass(frozen=True)
class WindowSettings:
    """Windowing settings; a live worker's must equal the replay's for the two to agree.

    ``every_ms``: window length (UTC-aligned); ``lateness_ms``: how far behind the stream's time
    a ping may arrive and still count; ``max_jump_ms``: pings further ahead of the stream are
    ``ts_ahead_of_stream``; ``max_future_ms``: pings (and watermarks) further ahead of the wall
    clock are rejected; ``watermark_devices``: how many distinct devices' latest times the
    stream's time needs (the watermark follows the ``watermark_devices``-th latest). Raises
    ``ValueError`` for a non-positive window or device count, or a negative lateness.
    """

    every_ms: int = HOUR_MS
    lateness_ms: int = 10 * MINUTE_MS
    max_jump_ms: int = 6 * HOUR_MS
    max_future_ms: int = HOUR_MS
    watermark_devices: int = WATERMARK_DEVICES

    def __post_init__(self) -> None:
        if self.every_ms <= 0:
            raise ValueError("snapshot interval must be positive")
        if self.lateness_ms < 0:
            raise ValueError("lateness must not be negative")
        if self.watermark_devices < 1:
            raise ValueError("the watermark needs at least one device")


@dataclass
class WindowStats:
    """Counts of what happened to the input, by outcome and reject reason."""

    read: int = 0
    accepted: int = 0
    outside_period: int = 0
    """Valid pings read beside the ``--from/--to`` period (not rejects: nothing is wrong with
    them; counted, not written)."""
    rejected: Counter[str] = field(default_factory=Counter)
    windows: int = 0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None

    def summary(self) -> str:
        """One line: rows read, accepted, outside the period (when any), rejected by reason."""
        n_rej = sum(self.rejected.values())
        reasons = ", ".join(f"{k} {v:,}" for k, v in self.rejected.most_common())
        outside = (f"{self.outside_period:,} outside --from/--to (not used), "
                   if self.outside_period else "")
        line = (f"{self.read:,} rows read, {self.accepted:,} pings accepted, {outside}"
                f"{n_rej:,} rejected")
        return line + (f" ({reasons})" if reasons else "")


class EventTimeWindows:
    """Feeds decoded batches to an engine in event-time windows; calls back when one closes.

    Parameters
    ----------
    engine : Engine
        Receives the accepted pings (at once, or at the seal they wait for) before ``on_window``
        is called for the window that holds them.
    settings : WindowSettings
        Window length, lateness, the watermark's device count and the guards against times far
        ahead.
    on_window : callable(boundary_ms) -> None
        Called for each closed window, in order, with its end (UTC ms): the engine then holds
        exactly the accepted pings with ``ts < boundary_ms``.
    on_reject : callable(Reject) -> None, optional
        Receives every reject (also those already in a fed batch); they are counted in
        :attr:`stats` either way.
    start_ms, end_ms : int, optional
        Only pings with ``start_ms <= ts < end_ms`` count (the others are counted in
        :attr:`WindowStats.outside_period`, not rejected), and no
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
        self._held_min: int | None = None  # earliest held ping
        self._next_boundary: int | None = None
        self._published_until: int | None = None
        self._sealed: int | None = None  # the latest seal (window end or night close) passed
        self._max_ts: int | None = None  # latest accepted time (or watermark): the ahead guard
        self._floor: int | None = None  # latest producer watermark
        self._ahead_run = 0
        self._night_close: tuple[int | None, int | None] | None = None  # (evaluated night, next close)
        # the stream's time: the latest times of the ``watermark_devices`` latest devices
        self._top_key = np.zeros(0, dtype=np.uint64)
        self._top_ts = np.zeros(0, dtype=np.int64)
        engine.hold_locations(self._held_locations)

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

    def in_period(self, ts_ms: np.ndarray) -> np.ndarray:
        """Whether each time is within ``start_ms <= ts < end_ms`` (bool per ping)."""
        in_range = np.ones(len(ts_ms), dtype=bool)
        if self.start_ms is not None:
            in_range &= ts_ms >= self.start_ms
        if self.end_ms is not None:
            in_range &= ts_ms < self.end_ms
        return in_range

    def _feed(self, batch: PingBatch, source: Callable[[int], str]) -> None:
        ts = batch.ts_ms
        in_range = self.in_period(ts)
        self.stats.outside_period += int(len(ts) - np.count_nonzero(in_range))
        no_room = in_range & (batch.loc < 0)
        if no_room.any():  # rejected before any rule that a ping moves (room is no event time)
            self._reject_rows(batch, no_room, source, "too_many_cells",
                              f"no room for another H3 cell at res {self.engine.config.res} "
                              f"(at most {self.engine.cells.capacity:,} in use at once)")
            in_range &= ~no_room
        if self._max_ts is None:
            # the first ping anchors the stream (ts_in_future guards it against the clock)
            self._max_ts = int(ts[np.argmax(in_range)]) if in_range.any() else None
        if self._max_ts is None:
            return
        ahead = self._ahead_of_stream(ts, in_range)
        self._reject_rows(batch, ahead, source, "ts_ahead_of_stream",
                          f"ts more than {self.max_jump_ms // SECOND_MS} s ahead of the stream")
        ok = in_range & ~ahead
        if self._next_boundary is None and ok.any():
            first = self.start_ms if self.start_ms is not None else int(ts[np.argmax(ok)])
            self._next_boundary = (first // self.every_ms + 1) * self.every_ms
            self.engine.start_nights(first)
        top, passed = None, None
        if self._next_boundary is not None:
            # the seals passed by the time each ping arrives (as if pings came one at a time),
            # so which pings are too late does not depend on how the input was batched
            sealed, top, passed = self._sealed_before(batch.device_key, ts, ok)
            late = ok & (ts < sealed)
            if late.any():
                self._reject_rows(batch, late, source, "too_late",
                                  "arrived after the watermark passed a window end or night "
                                  "close before its time")
                ok &= ~late
                top = None
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
        self._top_key, self._top_ts = top or self._merge_top(good.device_key, good.ts_ms)
        self._take(good)
        mark = self.watermark()
        if passed is not None:  # a seal passed mid-batch stays passed (the stream's time of a
            mark = passed if mark is None else max(mark, passed)  # small stream can drop back)
        self._advance(mark)

    def _ahead_of_stream(self, ts: np.ndarray, in_range: np.ndarray) -> np.ndarray:
        """Pings too far ahead of the latest accepted event time before them.

        Rejected pings do not move that time, which makes this a sequential rule; the vector
        pass is exact when nothing is ahead, the loop runs only when something is. After
        ``REANCHOR_PINGS`` pings in a row are ahead, the stream has moved on (or began with a
        stale ping): the last of them becomes the new latest time. (This guard only bounds
        what is accepted; windows close by the watermark, which no single device moves.)
        """
        assert self._max_ts is not None
        masked = np.where(in_range, ts, NEVER)
        before = np.maximum.accumulate(np.concatenate([[self._max_ts], masked]))[:-1]
        ahead = in_range & (ts > before + self.max_jump_ms)
        if not ahead.any():
            if in_range.any():
                self._ahead_run = 0
            return ahead
        running, run = self._max_ts, self._ahead_run
        for i, (t, use) in enumerate(zip(ts.tolist(), in_range.tolist(), strict=True)):
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
        return ahead

    def stream_time(self) -> int | None:
        """The ``watermark_devices``-th latest of the devices' latest accepted times; while
        fewer devices have been seen (two at least), the earliest of their latest times (every
        device has reached it). None before that."""
        if len(self._top_ts) < min(MIN_DEVICES, self.settings.watermark_devices):
            return None
        return int(self._top_ts.min())

    def watermark(self) -> int | None:
        """Pings before it may still come only as ``too_late``: the stream's time minus the
        lateness, or the latest producer watermark if later."""
        t = self.stream_time()
        mark = None if t is None else t - self.lateness_ms
        if self._floor is not None:
            mark = self._floor if mark is None else max(mark, self._floor)
        return mark

    def _merge_top(self, key: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``watermark_devices`` latest devices (key, latest time; latest first) once the
        pings ``key``/``ts`` are added. Exact in the times: only the largest few pings are
        looked at, as many as it takes to see that many distinct devices."""
        need = self.settings.watermark_devices
        if len(self._top_ts) >= need:
            newer = ts > self._top_ts.min()
            key, ts = key[newer], ts[newer]
        if not len(key):
            return self._top_key, self._top_ts
        k = np.concatenate([self._top_key, key])
        t = np.concatenate([self._top_ts, ts])
        take = 4 * need
        while True:
            pick = (np.arange(len(t)) if take >= len(t)
                    else np.argpartition(t, len(t) - take)[len(t) - take:])
            pick = pick[np.lexsort((t[pick], k[pick]))]  # by device, then time: the last is
            pk, pt = k[pick], t[pick]  # the device's latest
            last = np.empty(len(pk), dtype=bool)
            np.not_equal(pk[1:], pk[:-1], out=last[:-1])
            last[-1] = True
            if np.count_nonzero(last) >= need or take >= len(t):
                break
            take *= 4
        dk, dt = pk[last], pt[last]
        best = np.lexsort((dk, -dt))[:need]
        return dk[best], dt[best]

    def _seals_until(self, mark: int) -> list[int]:
        """The seals not passed yet, up to ``mark`` included, in order."""
        seals = set(self.engine.night_closes_until(mark))
        b = self._next_boundary
        while b is not None and b <= mark and (self.end_ms is None or b <= self.end_ms):
            seals.add(b)
            b += self.every_ms
        return sorted(seals)

    def _next_seal(self) -> int | None:
        """The next seal: the next window end (unless past ``end_ms``) or night close."""
        night = self.engine.evaluated_night  # the next close is a function of it: kept
        if self._night_close is None or self._night_close[0] != night:
            self._night_close = (night, self.engine.next_night_close_ms())
        options = [c for c in (self._night_close[1],) if c is not None]
        b = self._next_boundary
        if b is not None and (self.end_ms is None or b <= self.end_ms):
            options.append(b)
        return min(options) if options else None

    def _sealed_before(self, key: np.ndarray, ts: np.ndarray, ok: np.ndarray
                       ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], int | None]:
        """For each ping, the latest seal passed when it arrives (``NEVER``: none), as if the
        pings came one at a time: a seal is passed after the ping that makes the watermark
        reach it. Only ``ok`` pings move the watermark (a too-late ping never could: it is
        older than every seal ahead). Also returns the latest devices after the ``ok`` pings
        and the last seal passed in the batch (None: none)."""
        out = np.full(len(ts), NEVER if self._sealed is None else self._sealed, dtype=np.int64)
        top = self._merge_top(key[ok], ts[ok])
        n_top = min(MIN_DEVICES, self.settings.watermark_devices)
        if len(self._top_ts) >= self.settings.watermark_devices:
            reach = int(top[1].min())  # the watermark only grows: its final value bounds it
        elif len(top[1]) >= n_top:
            reach = int(max(top[1].max(), ts[ok].max() if ok.any() else NEVER))
        else:
            reach = None
        bound = None if reach is None else reach - self.lateness_ms
        if self._floor is not None:
            bound = self._floor if bound is None else max(bound, self._floor)
        passed = None
        if bound is None:
            return out, top, passed
        seals = self._seals_until(bound)
        counts = ok
        while True:
            sealed, passed = out.copy(), None
            for seal in seals:
                at = self._crossing(seal, key, ts, counts)
                if at is None:
                    break
                sealed[at + 1:] = seal
                passed = seal
            if len(self._top_ts) >= self.settings.watermark_devices:
                return sealed, top, passed
            # a small stream counts the devices seen, and a too-late ping's device is not seen:
            # drop those pings and pass again, until nothing changes (the first difference
            # would come after pings on which both passes agree: this is the one-at-a-time rule)
            accepted = ok & (ts >= sealed)
            if np.array_equal(accepted, counts):
                return sealed, top, passed
            counts = accepted

    def _crossing(self, seal: int, key: np.ndarray, ts: np.ndarray, ok: np.ndarray) -> int | None:
        """Index of the ping after which the watermark first reaches ``seal`` (-1: before the
        batch; None: not in this batch): the ping that brings the ``watermark_devices``-th
        distinct device (or, in a smaller stream, the last device seen) to ``seal + lateness``."""
        if self._floor is not None and self._floor >= seal:
            return -1
        n_wm = self.settings.watermark_devices
        v = seal + self.lateness_ms
        counted = self._top_ts >= v
        reached = int(counted.sum())
        sel = np.flatnonzero(ok & (ts >= v))
        if counted.any():
            sel = sel[~np.isin(key[sel], self._top_key[counted])]
        if len(self._top_ts) >= n_wm:  # the common case: enough devices already
            need = n_wm - reached
            if need <= 0:
                return -1
            take = 4 * need
            while True:
                part = sel[:take]
                _, first = np.unique(key[part], return_index=True)
                if len(first) >= need or take >= len(sel):
                    break
                take *= 4
            return int(part[np.sort(first)[need - 1]]) if len(first) >= need else None
        # a small stream so far: devices seen (F) and devices at v (G) by each ping
        n_min = min(MIN_DEVICES, n_wm)
        seen = len(self._top_ts)
        if seen >= n_min and reached >= seen:
            return -1
        idx = np.flatnonzero(ok)
        new = idx[~np.isin(key[idx], self._top_key)]
        _, first_new = np.unique(key[new], return_index=True)
        new_first = np.sort(new[first_new])
        _, first_v = np.unique(key[sel], return_index=True)
        at_v = np.sort(sel[first_v])
        g = reached + np.arange(1, len(at_v) + 1)
        f = seen + np.searchsorted(new_first, at_v, side="right")
        hit = np.flatnonzero((g >= np.minimum(n_wm, f)) & (f >= n_min))
        return int(at_v[hit[0]]) if hit.size else None

    def _take(self, good: PingBatch) -> None:
        """Ingest the accepted pings before the next seal at once; hold the rest."""
        seal = self._next_seal()
        now = good.ts_ms < seal if seal is not None else np.ones(len(good), dtype=bool)
        if now.all():
            self.engine.ingest(good.device_key, good.ts_ms, good.opclass, good.loc, good.home_mcc)
            return
        if now.any():
            self.engine.ingest(good.device_key[now], good.ts_ms[now], good.opclass[now],
                               good.loc[now], good.home_mcc[now])
        later = ~now
        self._hold(PingBatch(good.device_key[later], good.ts_ms[later], good.opclass[later],
                             good.loc[later], home_mcc=good.home_mcc[later]))

    def _hold(self, batch: PingBatch) -> None:
        if len(batch):
            self._pending.append(batch)
            low = int(batch.ts_ms.min())
            self._held_min = low if self._held_min is None else min(self._held_min, low)

    def _release(self, before_ms: int | None) -> None:
        """Ingest the held pings with ``ts < before_ms`` (all of them for None)."""
        if self._held_min is None or (before_ms is not None and self._held_min >= before_ms):
            return
        pending = _concat(self._pending)
        assert pending is not None
        self._pending, self._held_min = [], None
        now = pending.ts_ms < before_ms if before_ms is not None else np.ones(len(pending), bool)
        self.engine.ingest(pending.device_key[now], pending.ts_ms[now], pending.opclass[now],
                           pending.loc[now], pending.home_mcc[now])
        self._hold(pending.select(~now))

    def _held_locations(self) -> np.ndarray:
        return np.concatenate([b.loc for b in self._pending]) if self._pending else \
            np.zeros(0, dtype=np.int64)

    def advance_to(self, watermark_ms: int) -> None:
        """A source's promise that no ping older than ``watermark_ms`` follows: close windows.

        Windows that have seen no ping yet start at this watermark.
        """
        if self._next_boundary is None:
            self._next_boundary = (watermark_ms // self.every_ms) * self.every_ms
            self.engine.start_nights(watermark_ms)
        self._max_ts = watermark_ms if self._max_ts is None else max(self._max_ts, watermark_ms)
        self._floor = watermark_ms if self._floor is None else max(self._floor, watermark_ms)
        self._advance(self.watermark())

    def _advance(self, mark: int | None) -> None:
        """Pass every seal up to ``mark``: ingest the pings held before it, evaluate the night
        (the engine does, when one closes there) and publish the window that ends there."""
        while mark is not None and (seal := self._next_seal()) is not None and seal <= mark:
            self._release(seal)
            self.engine.evaluate_nights_until(seal)
            if seal == self._next_boundary:
                self.on_window(seal)
                self.stats.windows += 1
                self._published_until = seal
                self._next_boundary += self.every_ms
            self._sealed = seal
        self._release(self._next_seal())

    def finish(self, last_ts_ms: int | None = None) -> None:
        """End of input: close every remaining window up to the last ping (or ``end_ms`` when
        that comes first: windows after the data would show people leaving who only fell
        silent, so a ``--to`` beyond the input does not extend it).

        ``last_ts_ms`` is the last event time of the whole input when these windows saw only part
        of it (one Kafka partition); by default its own last accepted ping.
        """
        if last_ts_ms is not None and self._next_boundary is None:
            self._next_boundary = (last_ts_ms // self.every_ms + 1) * self.every_ms
        if self._next_boundary is None:
            return
        last = max(self.stats.last_ts_ms or 0, last_ts_ms or 0)
        if self.end_ms is not None:  # never past the data: silence there is not an empty region
            last = min(last, self.end_ms - 1)
        self._advance((last // self.every_ms + 1) * self.every_ms)

    def apply_all(self) -> None:
        """Ingest every held ping without closing a window (calibration, at the period end)."""
        self._release(None)

    @property
    def latest_ts_ms(self) -> int | None:
        """The latest event time of the stream so far (accepted pings and watermarks)."""
        return self._max_ts

    def held(self) -> PingBatch | None:
        """Accepted pings waiting for a seal to pass (part of a checkpoint)."""
        return _concat(self._pending)

    def watermark_devices(self) -> tuple[np.ndarray, np.ndarray]:
        """The latest devices behind the stream's time: keys (uint64) and latest times (int64)
        (part of a checkpoint)."""
        return self._top_key.copy(), self._top_ts.copy()

    def position(self) -> dict[str, int | None]:
        """Where the windows stand (with :meth:`held` and :meth:`watermark_devices`,
        everything needed to resume exactly)."""
        return {"next_boundary": self._next_boundary, "published_until": self._published_until,
                "max_ts": self._max_ts, "ahead_run": self._ahead_run,
                "first_ts": self.stats.first_ts_ms, "last_ts": self.stats.last_ts_ms,
                "sealed": self._sealed, "floor": self._floor}

    def resume(self, position: dict[str, int | None], held: PingBatch | None,
               top: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Continue from a :meth:`position`, its held pings and watermark devices (on fresh
        windows whose engine holds the rest of the state).

        Held pings before the next seal (a checkpoint of an earlier version held every ping of
        the open window) are ingested, and seals the watermark has passed are passed.
        """
        self._next_boundary = position["next_boundary"]
        self._published_until = position["published_until"]
        self._max_ts = position["max_ts"]
        self._ahead_run = int(position["ahead_run"] or 0)
        self.stats.first_ts_ms = position["first_ts"]
        self.stats.last_ts_ms = position["last_ts"]
        self._sealed = position.get("sealed", self._published_until)
        self._floor = position.get("floor")
        if top is not None:
            self._top_key = np.asarray(top[0], dtype=np.uint64)
            self._top_ts = np.asarray(top[1], dtype=np.int64)
        self._pending, self._held_min = [], None
        if held is not None:
            self._hold(held)
        self._advance(self.watermark())

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
                     row=np.concatenate([b.row for b in batches]),
                     home_mcc=np.concatenate([b.home_mcc for b in batches]))
