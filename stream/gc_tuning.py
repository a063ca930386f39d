"""The cyclic garbage collector tuned for batch work (the worker's fetched batches, replay's
chunks).

A batch keeps a few Python objects per message or row alive while it is handled (records, parsed
values, polars and numpy wrappers), so CPython's default young-generation threshold (700
allocations net of deallocations) runs many collections per batch, each promoting objects that
are still alive, and the promoted ones soon set off full collections over the whole heap. With
the young threshold above a batch's live objects, a batch's objects die young, freed by their
reference counts; cycles are still collected, less often. Measured: 20 % of the live worker's
samples on one JSON ping per message were in the collector (``py-spy --native``); a replay of
6.5 M pings spent 0.57 s in it, 0.14 s with the threshold raised (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

GC_YOUNG = 100_000
"""Young-generation threshold for batch work: above the tracked objects a batch of
:data:`~stream.worker.config.WorkerConfig.batch_messages` JSON messages keeps alive at once
(about 3 per message: record, parsed object, list slots)."""


def batch_gc() -> None:
    """For a process that does batch work until it ends (the worker): freeze the objects that
    exist now (``gc.freeze``: modules, the app; never collected anyway) and set the young
    threshold to :data:`GC_YOUNG` (older generations keep their thresholds). Idempotent."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)


_lock = threading.Lock()
_open = 0  # blocks inside batch_gc_threshold now, in any thread
_before: tuple[int, ...] = ()


@contextmanager
def batch_gc_threshold() -> Iterator[None]:
    """The young threshold at :data:`GC_YOUNG` for the duration of a block (a replay or
    calibrate run, which a caller may run many times in one process: nothing is frozen). The
    thresholds are process-wide: they are set when the first of any overlapping blocks (in any
    threads) begins and restored when the last one ends."""
    global _open, _before
    with _lock:
        if _open == 0:
            _before = gc.get_threshold()
            gc.set_threshold(GC_YOUNG, *_before[1:])
        _open += 1
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            if _open == 0:
                gc.set_threshold(*_before)
