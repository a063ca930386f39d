"""The in-order background thread behind replay's snapshot writer."""

import threading

import pytest

from stream.publish.background import InOrderThread


def test_jobs_run_in_order_in_another_thread():
    seen: list[tuple[int, str]] = []
    with InOrderThread("test", depth=1) as worker:
        for i in range(50):
            worker.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test"}


def test_an_error_is_raised_in_the_submitting_thread_and_later_jobs_do_not_run():
    ran: list[int] = []

    def boom() -> None:
        raise ValueError("bad snapshot")

    worker = InOrderThread("test")
    worker.submit(boom)
    with pytest.raises(ValueError, match="bad snapshot"):
        for i in range(1000):  # the error surfaces at a later submit (or at close)
            worker.submit(lambda i=i: ran.append(i))
        worker.close()
    worker.close()  # raised once, then closed cleanly
    assert len(ran) < 1000


def test_jobs_submitted_before_an_exception_in_the_block_still_run():
    gate = threading.Event()
    ran: list[int] = []
    with pytest.raises(KeyError), InOrderThread("test", depth=5) as worker:
        worker.submit(lambda: gate.wait(10))
        for i in range(5):
            worker.submit(lambda i=i: ran.append(i))
        gate.set()
        raise KeyError("the file broke")
    assert ran == list(range(5))


def test_the_block_s_own_exception_wins_over_a_job_s():
    def boom() -> None:
        raise ValueError("job failed")

    with pytest.raises(KeyError), InOrderThread("test") as worker:
        worker.submit(boom)
        raise KeyError("reader failed")


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        InOrderThread("test", depth=0)
