"""The worker's start-up checks that need no broker: one clear line, never a traceback."""

from __future__ import annotations

import pytest

from stream.contract import InputError
from stream.local.embedded import free_port
from stream.sources.kafka_producer import topic_partitions


def test_an_unreachable_kafka_is_one_clear_error() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(InputError, match=r"Kafka at 127\.0\.0\.1:\d+ did not answer .*--kafka"):
        topic_partitions(bootstrap, "pings", timeout_s=1.0)
