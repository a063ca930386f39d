"""A naive Faust agent, the textbook way: one JSON ping per event, one Table update per event.

The comparison point for ``bench/live_throughput.py``: an ``async for value in stream`` agent that
keeps each device's last ping (event time and cell or position, last writer wins by event time)
in a Faust Table, which writes every update to its changelog topic. Configured by environment
variables (the benchmark starts it as a subprocess)::

    NAIVE_BROKER=127.0.0.1:PORT NAIVE_TOPIC=pings NAIVE_GROUP=naive NAIVE_EXPECT=100000 \
    NAIVE_REPORT=/tmp/naive.json NAIVE_DATADIR=/tmp/naive-data \
        python bench/naive_faust.py worker --without-web -l warn

It counts events and, every ``NAIVE_REPORT_EVERY`` events (and at ``NAIVE_EXPECT``), atomically
rewrites ``NAIVE_REPORT`` with ``{"count", "t_first", "t_last"}`` (wall-clock seconds of the first
and the latest counted event) for the benchmark to poll. ``NAIVE_PARTITIONS`` must equal the
topic's partition count (the table's changelog is co-partitioned with it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import faust

BROKER = os.environ.get("NAIVE_BROKER", "127.0.0.1:9092")
TOPIC = os.environ.get("NAIVE_TOPIC", "pings")
GROUP = os.environ.get("NAIVE_GROUP", "naive-faust")
EXPECT = int(os.environ.get("NAIVE_EXPECT", "100000"))
REPORT = Path(os.environ.get("NAIVE_REPORT", "/tmp/naive-faust-report.json"))
REPORT_EVERY = int(os.environ.get("NAIVE_REPORT_EVERY", "2000"))
PARTITIONS = int(os.environ.get("NAIVE_PARTITIONS", "1"))
DATADIR = os.environ.get("NAIVE_DATADIR", "/tmp/naive-faust-data")

app = faust.App(
    GROUP, broker=f"kafka://{BROKER}", value_serializer="json", key_serializer="raw",
    store="memory://", datadir=DATADIR, topic_partitions=PARTITIONS,
    web_enabled=False, web_bind="127.0.0.1", web_host="127.0.0.1",
    broker_session_timeout=10.0, broker_heartbeat_interval=2.5,
    consumer_auto_offset_reset="earliest", producer_acks=1, loghandlers=[],
)
pings = app.topic(TOPIC, value_type=None, key_type=bytes)
last_seen = app.Table("last_seen", partitions=PARTITIONS)


class Counter:
    """Events seen and when (wall clock), written to the report file now and then."""

    def __init__(self) -> None:
        self.count = 0
        self.t_first = 0.0
        self.t_last = 0.0

    def tick(self) -> None:
        """Count one event; report every ``REPORT_EVERY`` events and at ``EXPECT``."""
        now = time.time()
        if self.count == 0:
            self.t_first = now
        self.count += 1
        self.t_last = now
        if self.count % REPORT_EVERY == 0 or self.count == EXPECT:
            self.report()

    def report(self) -> None:
        """Rewrite the report file atomically."""
        tmp = REPORT.with_suffix(".tmp")
        tmp.write_text(json.dumps({"count": self.count, "t_first": self.t_first,
                                   "t_last": self.t_last}))
        tmp.replace(REPORT)


counter = Counter()


@app.agent(pings)
async def track(stream: Any) -> None:
    """Per event: read the device's last ping, keep the newer one (last writer wins by ts)."""
    async for value in stream:
        if isinstance(value, dict) and "device" in value:
            device = value["device"]
            where = value.get("cell") or f"{value.get('lat')},{value.get('lon')}"
            old = last_seen.get(device)
            if old is None or value["ts"] >= old[0]:
                last_seen[device] = [value["ts"], where]
        counter.tick()


if __name__ == "__main__":
    app.main()
