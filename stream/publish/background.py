"""One background thread that runs jobs in the order they were given (a replay's snapshot
writer: estimating, building and writing a snapshot overlaps reading and ingesting the next
pings; numpy, polars and orjson release the GIL for most of that work)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class InOrderThread:
    """Runs ``submit``-ted callables one at a time, in order, in a thread of its own.

    At most ``depth`` jobs wait (``submit`` blocks beyond that: memory stays bounded). The first
    exception a job raises stops the thread (later jobs are skipped); it is raised again by the next
    ``submit`` or by ``close``, which waits for every job before it. Use as a context manager:
    leaving the block closes it, also on an exception inside the block (the jobs submitted before
    it still run, e.g. the snapshots of windows closed before a broken file; the block's
    exception is the one raised).
    """

    def __init__(self, name: str, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            if self._error is not None:
                continue  # after a failure, drain without running
            try:
                job()
            except BaseException as exc:  # handed to the submitting thread
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; raises the error of an earlier job instead, if one failed."""
        self._raise()
        if not self._thread.is_alive():
            raise RuntimeError("the background thread has stopped")
        self._jobs.put(job)

    def close(self) -> None:
        """Wait for the queued jobs, stop the thread, and raise the error of a job that failed."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()
        self._raise()

    def __enter__(self) -> InOrderThread:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(BaseException):  # the block's own exception is the one
                self.close()
