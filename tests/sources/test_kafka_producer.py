"""The ping producer against a real broker: what it sends is confirmed, and ``close`` releases
the Kafka client (a demo stops its embedded broker right after it)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from stream.local.embedded import Service, create_topic
from stream.sources.kafka_producer import PingProducer


@pytest.mark.integration
def test_close_delivers_what_was_queued_and_refuses_more(broker: Service) -> None:
    topic = f"pings-{uuid.uuid4().hex[:8]}"
    create_topic(broker.url, topic, partitions=2)
    producer = PingProducer(broker.url, topic, "json")
    n = 50
    cols = {"device": np.array([f"d{i}".encode() for i in range(n)]),
            "ts": np.arange(n, dtype=np.int64) * 1000 + 1_772_409_600_000,
            "operator": np.full(n, b"40101"), "home_mcc": np.full(n, 401, dtype=np.int64),
            "cell": np.full(n, b"1203-77")}
    producer.send_columns(cols)
    producer.send_watermark(int(cols["ts"].max()), final=True)

    assert producer.close(10.0) == 0
    assert producer.stats.messages == n + 2  # one per ping, a final watermark per partition
    assert producer.stats.delivered == producer.stats.messages
    assert producer.stats.failed == 0
    with pytest.raises(RuntimeError, match="closed"):
        producer.send_watermark(0)
    assert producer.close() == 0  # a second close is a no-op
