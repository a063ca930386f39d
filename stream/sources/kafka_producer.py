"""Pings into Kafka: ping columns as frames or one message per ping, partitioned by device.

A device's pings must always land on one partition (its state lives there). This producer picks
the partition itself, ``FNV-1a-64(device pseudonym) mod partitions``, for every encoding, so
frames and single messages of one device agree. After the input it sends a final watermark
control message to every partition, which closes the last windows exactly like the end of a
``defacto replay`` (:mod:`stream.sources.simulation` paces a simulation through this producer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import KafkaException, Producer

from stream.contract import InputError, PingColumns, Record, check_ping
from stream.decode.frame import encode_frame
from stream.decode.messages import CONTENT_TYPES, encode_avro, encode_control, encode_json
from stream.decode.validate import ping_columns

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
ENCODINGS = ("frame", "json", "avro")
CONTENT_TYPE_OF = {kind: ct for ct, kind in CONTENT_TYPES.items()}


def device_partition(device: np.ndarray, partitions: int) -> np.ndarray:
    """Partition of each device pseudonym (``|S`` bytes array): FNV-1a-64 of its UTF-8 bytes."""
    dev = np.asarray(device)
    if dev.dtype.kind != "S":
        dev = np.char.encode(dev.astype(str), "utf-8")
    n, width = len(dev), dev.dtype.itemsize
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)
    if n == 0 or width == 0:
        return (h % np.uint64(partitions)).astype(np.int64)
    raw = np.frombuffer(np.ascontiguousarray(dev).tobytes(), dtype=np.uint8).reshape(n, width)
    length = np.char.str_len(dev)
    with np.errstate(over="ignore"):
        for j in range(width):
            live = length > j
            if not live.any():
                break
            h = np.where(live, (h ^ raw[:, j].astype(np.uint64)) * FNV_PRIME, h)
    return (h % np.uint64(partitions)).astype(np.int64)


@dataclass
class ProduceStats:
    """What a producer sent and what the broker confirmed."""

    pings: int = 0
    messages: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    max_ts_ms: int | None = None


def topic_partitions(bootstrap: str, topic: str, timeout_s: float = 15.0) -> int:
    """The partition count of ``topic``; raises :class:`~stream.contract.InputError` when the
    topic does not exist or Kafka does not answer within ``timeout_s``."""
    from confluent_kafka.admin import AdminClient

    try:  # all topics: a request naming the topic may create it on a broker that auto-creates
        meta = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(
            timeout=timeout_s)
    except KafkaException as exc:
        raise InputError(f"Kafka at {bootstrap} did not answer ({exc.args[0] if exc.args else exc})"
                         ": check --kafka / KAFKA_BOOTSTRAP and that the broker runs") from None
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise InputError(f"topic {topic!r} not found on {bootstrap}: create it first "
                         "(partitions = the most workers you will run)")
    return len(info.partitions)


class PingProducer:
    """Sends ping columns to the pings topic, partitioned by device, with delivery reports."""

    def __init__(self, bootstrap: str, topic: str, encoding: str = "frame",
                 frame_rows: int = 20_000, config: dict[str, Any] | None = None) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}")
        self.topic = topic
        self.encoding = encoding
        self.frame_rows = frame_rows
        conf = {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                "queue.buffering.max.messages": 1_000_000, "message.max.bytes": 10_000_000,
                "compression.type": "none", "enable.idempotence": False,
                # warnings and errors only: librdkafka's informational lines (e.g. "Disconnected"
                # when a demo's embedded broker stops first on Ctrl-C) are not the user's problem
                "log_level": 4}
        conf.update(config or {})
        self._closed = False
        self.partitions = topic_partitions(bootstrap, topic)  # before librdkafka's own logs
        self.producer = Producer(conf)
        self.stats = ProduceStats()

    def _report(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            if len(self.stats.errors) < 10:
                self.stats.errors.append(str(err))

    def _send(self, value: bytes, partition: int, content_type: str, key: bytes | None = None) -> None:
        if self._closed:
            raise RuntimeError("the ping producer is closed")
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, partition=partition,
                                      headers=[("content-type", content_type.encode())],
                                      on_delivery=self._report)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.stats.messages += 1
        self.producer.poll(0)

    def send_columns(self, cols: PingColumns) -> None:
        """Send pings given as frame columns (device/operator/cell as ``|S``)."""
        n = len(cols["ts"])
        if n == 0:
            return
        self.stats.pings += n
        top = int(np.max(cols["ts"]))
        self.stats.max_ts_ms = top if self.stats.max_ts_ms is None else max(self.stats.max_ts_ms, top)
        part = device_partition(cols["device"], self.partitions)
        if self.encoding == "frame":
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(self.partitions + 1))
            for p in range(self.partitions):
                rows = order[bounds[p]:bounds[p + 1]]
                for lo in range(0, len(rows), self.frame_rows):
                    pick = rows[lo:lo + self.frame_rows]
                    self._send(encode_frame({k: v[pick] for k, v in cols.items()}), p,
                               CONTENT_TYPE_OF["frame"])
            return
        encode = encode_json if self.encoding == "json" else encode_avro
        for i, p in enumerate(part.tolist()):
            ping = _ping_dict(cols, i)
            self._send(encode(ping), p, CONTENT_TYPE_OF[self.encoding], key=cols["device"][i])

    def send_raw(self, value: bytes, partition: int = 0) -> None:
        """Send a message as is (a row that is not a valid ping: the worker dead-letters it)."""
        self._send(value, partition, CONTENT_TYPE_OF["json"])

    def send_watermark(self, ts_ms: int, final: bool = False) -> None:
        """Tell every partition that no ping older than ``ts_ms`` follows (``final``: input ends)."""
        for p in range(self.partitions):
            self._send(encode_control(ts_ms, final), p, CONTENT_TYPE_OF["json"])

    def flush(self, timeout_s: float = 60.0) -> int:
        """Wait for delivery reports; returns the number of messages still undelivered."""
        return self.producer.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> int:
        """Deliver what is queued (waiting at most ``timeout_s``), drop the rest and release the
        Kafka client now (its threads stop, so nothing logs about a broker that goes away after
        this); returns the number of messages not delivered. Sending after it raises
        ``RuntimeError``; a second call returns 0."""
        if self._closed:
            return 0
        left = self.producer.flush(timeout_s)
        if left:
            self.producer.purge()
        self._closed = True
        del self.producer  # the client's last reference: librdkafka is torn down here
        return left


def _ping_dict(cols: PingColumns, i: int) -> dict[str, Any]:
    ping: dict[str, Any] = {"device": cols["device"][i].decode(), "ts": int(cols["ts"][i]),
                            "operator": cols["operator"][i].decode()}
    mcc = int(cols["home_mcc"][i])
    ping["home_mcc"] = None if mcc < 0 else mcc
    cell = cols["cell"][i].decode() if "cell" in cols else ""
    if cell:
        ping["cell"] = cell
    else:
        ping["lat"] = float(cols["lat"][i])
        ping["lon"] = float(cols["lon"][i])
    return ping


def record_columns(records: list[Record]) -> tuple[PingColumns, list[Record]]:
    """Split file records into ping columns and the records that are not valid pings."""
    good, bad = [], []
    for r in records:
        (good if r.fields is not None and check_ping(r.fields) is None else bad).append(r)
    return ping_columns([r.fields for r in good if r.fields is not None]), bad
