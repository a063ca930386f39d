"""Published counts: suppressed and non-finite figures become null, never an exception."""

from __future__ import annotations

import logging
import math

import pytest

from stream.publish.snapshot import count_or_null


def test_counts_round_and_nan_is_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="defacto.publish"):
        assert count_or_null(2.6) == 3 and count_or_null(0.0) == 0
        assert count_or_null(math.nan) is None and count_or_null(None) is None
    assert caplog.records == []


@pytest.mark.parametrize("value", [math.inf, -math.inf, 1e308 * 10])
def test_non_finite_figures_are_null_and_logged(value: float,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="defacto.publish"):
        assert count_or_null(value) is None
    assert ["non-finite figure" in r.getMessage() for r in caplog.records] == [True]
