"""Model tests: ReadAhead / start_reading / read_prepared shutdown.

The reading thread is started before the caller builds its engine and closed by the caller
(``run_replay``/``run_calibrate``'s ``finally``), while the prepare thread of ``read_prepared``
may be waiting on that reader's queue. Every test bounds its waits with a deadline.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import pytest

from stream.sources.columnar_files import ReadAhead, read_prepared

DEADLINE_S = 5.0


def _slow(n: int, gate: threading.Event | None = None, delay: float = 0.0) -> Iterator[int]:
    for i in range(n):
        if gate is not None and i >= 1:
            gate.wait(DEADLINE_S)
        if delay:
            time.sleep(delay)
        yield i


def _in_thread(fn) -> bool:
    """Run fn in a daemon thread; True when it ended before the deadline."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(DEADLINE_S)
    return not t.is_alive()


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def _waiting_in(prefix: str, function: str) -> bool:
    """Poll (with the deadline) until a thread named ``prefix...`` runs ``function``; True if
    it did."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        frames = sys._current_frames()
        for t in _threads(prefix):
            frame = frames.get(t.ident or -1)
            while frame is not None:
                if frame.f_code.co_name == function:
                    return True
                frame = frame.f_back
        time.sleep(0.005)
    return False


def test_hold_bounds_items_read_ahead() -> None:
    made: list[int] = []
    asked = [threading.Event() for _ in range(12)]  # asked[i]: item i was asked for

    def counted() -> Iterator[int]:
        for i in range(100):
            if i < len(asked):
                asked[i].set()
            made.append(i)
            yield i

    ra = ReadAhead(counted(), "test-hold", hold=8)
    assert asked[8].wait(DEADLINE_S)
    assert _waiting_in("test-hold", "_put")  # 8 queued + 1 in hand, blocked in put
    assert not asked[9].wait(0.2)  # a negative: it never comes while nothing is taken
    assert made == list(range(9))
    assert next(ra) == 0  # from the first take on, one item waits: the 7 queued are above it
    assert not asked[9].wait(0.2)
    assert [next(ra) for _ in range(7)] == list(range(1, 8))  # drained: item 8 goes in
    assert asked[9].wait(DEADLINE_S)  # and item 9 is made, in hand
    assert not asked[10].wait(0.2)
    ra.close()
    assert not ra._thread.is_alive()


def test_reader_error_after_items_and_thread_stopped() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    ra = ReadAhead(failing(), "test-err", hold=8)
    assert next(ra) == 1
    assert next(ra) == 2
    with pytest.raises(OSError, match="disk gone"):
        next(ra)
    assert not ra._thread.is_alive()
    with pytest.raises(StopIteration):
        next(ra)


def test_close_before_any_take_stops_thread() -> None:
    ra = ReadAhead(_slow(1000), "test-early", hold=8)
    assert _in_thread(ra.close)
    assert not ra._thread.is_alive()


def test_empty_source() -> None:
    ra = ReadAhead(iter(()), "test-empty", hold=8)
    assert list(ra) == []
    assert not ra._thread.is_alive()


def _run_prepared_consumer_fails(delay_reader: float) -> tuple[bool, list[threading.Thread]]:
    """What run_replay does when the consumer of read_prepared raises (Ctrl-C, a bad window):
    its ``finally`` closes ``reading``, then the read_prepared generator is finalized."""
    reading = ReadAhead(_slow(50, delay=delay_reader), "test-rd", hold=8)
    gen = read_prepared([], lambda c: c, reading=reading)
    assert next(gen) == (0, 0)
    # the consumer fails while the prepare thread waits for the reader's next chunk
    assert _waiting_in("defacto-prepare", "__next__")
    reading.close()  # run_replay's finally
    ended = _in_thread(gen.close)  # the generator finalized (frame of _feed_files released)
    return ended, _threads("defacto-prepare")


def test_prepared_closes_when_reading_closed_first() -> None:
    """run_replay's ``finally`` closes ``reading`` while the prepared generator is still held by
    a traceback: the prepare thread waiting for the reader's next chunk wakes and ends."""
    ended, alive = _run_prepared_consumer_fails(delay_reader=0.5)
    assert ended
    assert not alive


def test_prepared_close_normal_order_stops_threads() -> None:
    reading = ReadAhead(_slow(50, delay=0.01), "test-rd2", hold=8)
    gen = read_prepared([], lambda c: c, reading=reading)
    assert next(gen) == (0, 0)
    assert _in_thread(gen.close)
    assert _in_thread(reading.close)
    assert not reading._thread.is_alive()


def test_prepare_error_stops_reader() -> None:
    reading = ReadAhead(_slow(50), "test-rd3", hold=8)

    def prepare(c: int) -> int:
        if c == 3:
            raise ValueError("bad chunk")
        return c

    gen = read_prepared([], prepare, reading=reading)
    got = []
    with pytest.raises(ValueError, match="bad chunk"):
        for item in gen:
            got.append(item[0])
    assert got == [0, 1, 2]
    assert not reading._thread.is_alive()
