"""``defacto local``: the embedded broker and Redis held on their own, pointed at by the printed
export line, and gone after SIGTERM, Ctrl-C or ``--for``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.integration

EXPORTS = re.compile(r"^export KAFKA_BOOTSTRAP=(?P<kafka>127\.0\.0\.1:\d+) "
                     r"REDIS_URL=(?P<redis>redis://127\.0\.0\.1:\d+/0)$")


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "local", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_line(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> str:
    """The first line on ``proc``'s stdout, within ``timeout_s``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout_s), "no export line within the deadline"
    return proc.stdout.readline().rstrip("\n")


def _stop(proc: subprocess.Popen[str]) -> None:
    """End ``proc`` however a test ended: SIGTERM first (it then stops its servers), SIGKILL
    only when that is not heard (the servers' watchdogs then stop them)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=30)


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _closed_within(address: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _port_open(address):
            return True
        time.sleep(0.05)
    return not _port_open(address)


def _messages(kafka: str, topic: str, partitions: int, expected: int,
              timeout_s: float = 30.0) -> int:
    """Messages read from the start of ``topic`` until ``expected`` came or ``timeout_s`` passed
    (and the final watermark messages, one per partition, with them)."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": "test-local",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < expected and time.monotonic() < deadline:
            seen += sum(msg.error() is None for msg in consumer.consume(100, timeout=0.5))
        return seen
    finally:
        consumer.close()


def test_servers_topics_and_exports_then_sigterm_stops_both(tmp_path: Path) -> None:
    proc = _start("--partitions", "3", "--topic", "city.pings", "--for", "5m")
    try:
        line = _first_line(proc)
        m = EXPORTS.match(line)
        assert m, line
        topics = AdminClient({"bootstrap.servers": m["kafka"]}).list_topics(timeout=10).topics
        assert len(topics["city.pings"].partitions) == 3
        assert len(topics["city.pings.dead"].partitions) == 1
        assert redis.Redis.from_url(m["redis"]).ping()
        # the other commands find them through the exported variables
        pings = tmp_path / "pings.jsonl"
        pings.write_text("".join(json.dumps({"device": f"d{i}", "ts": 1772409600000 + i,
                                             "operator": "40101", "lat": 51.1, "lon": 71.4}) + "\n"
                                 for i in range(50)))
        env = {**os.environ, "KAFKA_BOOTSTRAP": m["kafka"], "REDIS_URL": m["redis"]}
        produced = subprocess.run([sys.executable, "-m", "stream.cli", "produce", str(pings),
                                   "--topic", "city.pings", "--encoding", "json"],
                                  env=env, capture_output=True, text=True, timeout=120)
        assert produced.returncode == 0, produced.stderr[-2000:]
        assert _messages(m["kafka"], "city.pings", 3, 50 + 3) == 50 + 3, produced.stderr
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopping the broker and Redis" in err
        assert _closed_within(m["kafka"], 10)
        assert _closed_within(m["redis"].removeprefix("redis://").removesuffix("/0"), 10)
    finally:
        _stop(proc)


def test_ctrl_c_and_for_end_it_with_code_0() -> None:
    proc = _start("--for", "5m")
    try:
        m = EXPORTS.match(_first_line(proc))
        assert m
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert _closed_within(m["kafka"], 10)
    finally:
        _stop(proc)
    done = subprocess.run([sys.executable, "-m", "stream.cli", "local", "--for", "1s"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--for is over" in done.stderr


def test_a_port_in_use_and_a_bad_topic_are_one_line_errors() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([sys.executable, "-m", "stream.cli", "local", "--kafka-port",
                               str(port), "--for", "5s"], capture_output=True, text=True,
                              timeout=120)
    assert busy.returncode == 2
    assert busy.stderr.strip() == f"defacto: error: port 127.0.0.1:{port} is already in use"
    bad = subprocess.run([sys.executable, "-m", "stream.cli", "local", "--topic", "my pings"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("defacto: error: --topic: 'my pings' is not a Kafka "
                                         "topic name")


def test_signals_while_starting_or_repeated_still_stop_both_servers() -> None:
    with socket.socket() as s1, socket.socket() as s2:
        s1.bind(("127.0.0.1", 0))
        s2.bind(("127.0.0.1", 0))
        kafka_port, redis_port = s1.getsockname()[1], s2.getsockname()[1]
    kafka, store = f"127.0.0.1:{kafka_port}", f"127.0.0.1:{redis_port}"
    proc = _start("--kafka-port", str(kafka_port), "--redis-port", str(redis_port), "--for", "5m")
    try:
        deadline = time.monotonic() + 60
        while not _port_open(kafka) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert _port_open(kafka)
        proc.send_signal(signal.SIGTERM)  # while Redis or the topics are still starting, or just after
        proc.send_signal(signal.SIGTERM)  # a second one does not cut the servers' stop short
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, 130), err
        assert "Traceback" not in err
        assert _closed_within(kafka, 10) and _closed_within(store, 10)
    finally:
        _stop(proc)
    proc = _start("--for", "5m")
    try:
        m = EXPORTS.match(_first_line(proc))
        assert m
        for _ in range(3):
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert _closed_within(m["kafka"], 10)
        assert _closed_within(m["redis"].removeprefix("redis://").removesuffix("/0"), 10)
    finally:
        _stop(proc)


def test_a_sigkill_of_it_still_stops_both_servers() -> None:
    """No handler runs on SIGKILL: the servers' watchdogs see the command's pipe close."""
    proc = _start("--for", "5m")
    try:
        m = EXPORTS.match(_first_line(proc))
        assert m
        kafka, store = m["kafka"], m["redis"].removeprefix("redis://").removesuffix("/0")
        assert _port_open(kafka) and _port_open(store)
        proc.kill()
        _, err = proc.communicate(timeout=30)
        pids = [int(p) for p in re.findall(r"process ids (\d+) and (\d+)", err)[0]]
        try:
            assert _closed_within(kafka, 30) and _closed_within(store, 30)
        finally:
            for pid in pids:  # a watchdog that failed must not leave them to later tests
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
    finally:
        _stop(proc)
