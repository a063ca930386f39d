"""The collector's young threshold during replay/calibrate blocks: set while any block is open,
restored once the last one ends, however the blocks overlap (threads)."""

from __future__ import annotations

import gc

from stream.gc_tuning import GC_YOUNG, batch_gc_threshold


def test_overlapping_blocks_restore_the_threshold_once_the_last_ends() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        a, b = batch_gc_threshold(), batch_gc_threshold()
        a.__enter__()
        assert gc.get_threshold() == (GC_YOUNG, 10, 10)
        b.__enter__()
        a.__exit__(None, None, None)  # A ends before B (as two threads may)
        assert gc.get_threshold() == (GC_YOUNG, 10, 10)
        b.__exit__(None, None, None)
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_a_block_that_raises_restores_the_threshold() -> None:
    before = gc.get_threshold()
    try:
        with batch_gc_threshold():
            assert gc.get_threshold()[0] == GC_YOUNG
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
