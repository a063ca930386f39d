"""Peers of the defacto worker for ``bench/live_throughput.py``: the same job, other tools.

The job: per region-hour distinct-device counts from JSON pings, one ping per Kafka message.
Each ping's region is a dict lookup of its cell id (``PEER_CELLS``, the worker's cells.csv; each
cell gets a region at start-up) or of its position rounded to 0.01° (a stand-in for the worker's
point-in-region step); devices are kept in memory as ``(region, hour, device)`` tuples. Two
peers, one process each, configured by environment variables::

    PEER_BROKER=127.0.0.1:PORT PEER_TOPIC=pings PEER_GROUP=g PEER_EXPECT=100000 \
    PEER_REPORT=/tmp/peer.json PEER_CELLS=cells.csv PEER_STATE_DIR=/tmp/peer-state \
        python bench/live_peers.py raw|quix

``raw``
    The ceiling of a Python consumer: ``confluent_kafka.Consumer.consume(5000)``, ``orjson.loads``
    per message, the lookups and a set update per batch. No validation, no windows, no state
    saved, no offsets committed.
``quix``
    A Quix Streams (``quixstreams``, pinned in the ``bench`` extra) application the idiomatic
    way for a job that must survive a restart (as defacto's does, with its checkpoints):
    ``app.dataframe(topic)`` with the JSON deserializer and ``.update(fn, stateful=True)``
    keeping each region-hour-device in Quix's RocksDB state with its changelog topic (Tansu
    reports no topic settings: the peer fills in Quix's default ``retention.ms``),
    ``auto_offset_reset="earliest"``. Messages without a key share one state key.
``quix-mem``
    The same pipeline keeping the tuples in a Python set instead (not restart-safe: the
    cheapest Quix pipeline for this job).

Both count messages and, every ``PEER_REPORT_EVERY`` messages and at ``PEER_EXPECT``, rewrite
``PEER_REPORT`` atomically with ``{"count", "t_first", "t_last", "keys"}`` (wall-clock seconds of
the first and latest counted message; distinct region-hour-device tuples) -- the protocol of
``bench/naive_faust.py``. Each stops by itself at ``PEER_EXPECT`` messages or after
``PEER_LIMIT_S`` seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HOUR_MS = 3_600_000
BROKER = os.environ.get("PEER_BROKER", "127.0.0.1:9092")
TOPIC = os.environ.get("PEER_TOPIC", "pings")
GROUP = os.environ.get("PEER_GROUP", "peer")
EXPECT = int(os.environ.get("PEER_EXPECT", "100000"))
REPORT = Path(os.environ.get("PEER_REPORT", "/tmp/peer-report.json"))
REPORT_EVERY = int(os.environ.get("PEER_REPORT_EVERY", "20000"))
LIMIT_S = float(os.environ.get("PEER_LIMIT_S", "300"))
CELLS = os.environ.get("PEER_CELLS")
STATE_DIR = os.environ.get("PEER_STATE_DIR", "/tmp/peer-state")
N_REGIONS = 20


def cell_regions() -> dict[str, int]:
    """Cell id → region index, from the cells.csv (operator,cell,lat,lon) given in PEER_CELLS."""
    out: dict[str, int] = {}
    if CELLS:
        for line in Path(CELLS).read_text().splitlines()[1:]:
            _, cell, _, _ = line.split(",")
            out[cell] = len(out) % N_REGIONS
    return out


class Report:
    """Messages counted and when, written to the report file now and then."""

    def __init__(self) -> None:
        self.count = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.keys: set[tuple[Any, int, str]] = set()
        self.next_report = REPORT_EVERY

    def add(self, n: int) -> None:
        """Count ``n`` messages; report every ``REPORT_EVERY`` and at ``EXPECT``."""
        now = time.time()
        if self.count == 0:
            self.t_first = now
        self.count += n
        self.t_last = now
        if self.count >= self.next_report or self.count >= EXPECT:
            self.next_report += REPORT_EVERY
            self.write()

    def write(self) -> None:
        """Rewrite the report file atomically."""
        tmp = REPORT.with_suffix(".tmp")
        tmp.write_text(json.dumps({"count": self.count, "t_first": self.t_first,
                                   "t_last": self.t_last, "keys": len(self.keys)}))
        tmp.replace(REPORT)


def region_of(regions: dict[str, int], ping: dict[str, Any]) -> Any:
    """A ping's region: its cell's, else its position rounded to 0.01°."""
    cell = ping.get("cell")
    if cell is not None:
        return regions.get(cell, -1)
    return (round(ping.get("lat") or 0.0, 2), round(ping.get("lon") or 0.0, 2))


def run_raw() -> None:
    """confluent-kafka consume(5000) + orjson + a set update per batch."""
    import orjson
    from confluent_kafka import Consumer

    regions = cell_regions()
    report = Report()
    c = Consumer({"bootstrap.servers": BROKER, "group.id": GROUP, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 50,
                  "max.partition.fetch.bytes": 16 << 20, "log_level": 3})
    c.subscribe([TOPIC])
    deadline = time.monotonic() + LIMIT_S
    loads = orjson.loads
    try:
        while report.count < EXPECT and time.monotonic() < deadline:
            msgs = c.consume(5000, 0.05)
            if not msgs:
                continue
            pings = [loads(m.value()) for m in msgs if m.error() is None]
            pings = [p for p in pings if "device" in p]  # watermarks and other control messages
            report.keys.update(zip([region_of(regions, p) for p in pings],
                                   [p["ts"] // HOUR_MS for p in pings],
                                   [p["device"] for p in pings], strict=True))
            report.add(len(msgs))
    finally:
        report.write()
        c.close()


def run_quix(stateful: bool) -> None:
    """A Quix Streams application: dataframe, update (in RocksDB state or a Python set)."""
    from quixstreams import Application
    from quixstreams.models.topics import manager

    # Tansu does not report topic configs; Quix reads "retention.ms" of the source topic to
    # derive its state's changelog topic: assume the default (infinite) when it is missing
    derive = manager.TopicManager.derive_topic_config

    def derive_with_defaults(topics: Any) -> Any:
        topics = list(topics)
        for t in topics:
            if t.broker_config is not None:
                t.broker_config.extra_config.setdefault("retention.ms", "-1")
        return derive(topics)

    manager.TopicManager.derive_topic_config = staticmethod(derive_with_defaults)
    regions = cell_regions()
    report = Report()
    app = Application(broker_address=BROKER, consumer_group=GROUP, auto_offset_reset="earliest",
                      state_dir=STATE_DIR, auto_create_topics=True,
                      use_changelog_topics=stateful, loglevel="WARNING")
    topic = app.topic(TOPIC, value_deserializer="json")
    sdf = app.dataframe(topic)
    deadline = time.monotonic() + LIMIT_S

    def done() -> None:
        report.add(1)
        if report.count >= EXPECT or time.monotonic() > deadline:
            app.stop()

    def keep(ping: dict[str, Any]) -> None:
        if "device" in ping:
            report.keys.add((region_of(regions, ping), ping["ts"] // HOUR_MS, ping["device"]))
        done()

    def keep_state(ping: dict[str, Any], state: Any) -> None:
        if "device" in ping:
            key = f"{region_of(regions, ping)}|{ping['ts'] // HOUR_MS}|{ping['device']}"
            if state.get(key) is None:
                state.set(key, 1)
                report.keys.add(key)  # type: ignore[arg-type]
        done()

    sdf = sdf.update(keep_state, stateful=True) if stateful else sdf.update(keep)
    try:
        app.run(sdf)
    finally:
        report.write()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "raw":
        run_raw()
    elif mode in ("quix", "quix-mem"):
        run_quix(mode == "quix")
    else:
        sys.exit("usage: live_peers.py raw|quix|quix-mem")
