"""The Kafka client's repeated lines are held back to one a minute per message."""

from __future__ import annotations

import logging

import aiokafka.conn  # noqa: F401  (its logger exists once imported)
import pytest

from stream.worker.log_repeats import RepeatFilter, hold_back_repeats


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_one_line_per_message_per_interval_then_a_count() -> None:
    now = [0.0]
    f = RepeatFilter(60.0, clock=lambda: now[0])
    passed = []
    for i in range(500):  # 65 lines a second for about 8 s, two messages, varying arguments
        now[0] = i / 65
        for msg, args in (("Unable connect to node with id %s: %s", (i, "refused")),
                          ("Failed fetch messages from %s", (i,))):
            rec = _record("aiokafka.conn", msg, *args)
            if f.filter(rec):
                passed.append(rec.getMessage())
    assert passed == ["Unable connect to node with id 0: refused",
                      "Failed fetch messages from 0"]
    now[0] = 61.0
    rec = _record("aiokafka.conn", "Unable connect to node with id %s: %s", 7, "refused")
    assert f.filter(rec)
    assert rec.getMessage() == ("Unable connect to node with id 7: refused (499 more like it "
                                "held back in the last 60 s)")
    other = _record("aiokafka.cluster", "Unable connect to node with id %s: %s", 1, "x")
    assert f.filter(other)  # another logger's line is its own


def test_installed_on_the_client_loggers(caplog: pytest.LogCaptureFixture) -> None:
    repeat = hold_back_repeats()
    try:
        conn = logging.getLogger("aiokafka.conn")
        assert repeat in conn.filters and repeat in logging.getLogger("aiokafka").filters
        assert hold_back_repeats() is not None and conn.filters.count(repeat) == 1
        with caplog.at_level(logging.ERROR, logger="aiokafka"):
            for i in range(100):
                conn.error("Unable connect to node with id %s", i)
        assert [r.getMessage() for r in caplog.records] == ["Unable connect to node with id 0"]
    finally:
        for name in list(logging.root.manager.loggerDict):
            if name == "aiokafka" or name.startswith("aiokafka."):
                logging.getLogger(name).removeFilter(repeat)
        logging.getLogger("aiokafka").removeFilter(repeat)
