"""Local infrastructure: an in-memory Tansu broker and a throwaway Redis, both on 127.0.0.1 only."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from stream.local import embedded
from stream.local.embedded import Service, create_topic, kafka_service, redis_service, start_broker, start_redis

confluent_kafka = pytest.importorskip("confluent_kafka")
redis = pytest.importorskip("redis")


def listening_addresses(pid: int) -> list[tuple[str, int]] | None:
    """(ip, port) of the TCP sockets ``pid`` listens on, or None if we have no way to find out."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        conns = psutil.Process(pid).net_connections(kind="inet")
        return [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    ss = shutil.which("ss")
    if ss is None:
        return None
    out = subprocess.run([ss, "-H", "-ltnp"], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    addrs = []
    for line in out.splitlines():
        if re.search(rf"pid={pid}\b", line):
            local = line.split()[3]  # State Recv-Q Send-Q Local:Port Peer:Port Process
            host, _, port = local.rpartition(":")
            addrs.append((host.strip("[]"), int(port)))
    return addrs


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def assert_stopped(svc: Service, pid: int, port: int) -> None:
    """The process is gone, nothing listens on the port, and it can be bound again."""
    assert svc.proc is None
    assert not pid_alive(pid)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as any server would set: TIME_WAIT leftovers of closed client connections are fine,
        # an active listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def port_of(url: str) -> int:
    """The port of "host:port" or "redis://host:port/db"."""
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.integration
def test_broker_roundtrip_loopback_and_stop() -> None:
    svc = start_broker()
    try:
        assert svc.started and svc.name == "kafka"
        assert svc.url.startswith("127.0.0.1:")
        pid, port = svc.pid, port_of(svc.url)
        assert pid is not None

        addrs = listening_addresses(pid)
        if addrs is not None:
            assert addrs, "broker has no listening sockets"
            assert all(ip == "127.0.0.1" for ip, _ in addrs), addrs
            assert ("127.0.0.1", port) in addrs

        topic = f"t-{uuid.uuid4().hex[:8]}"
        create_topic(svc.url, topic, partitions=3)
        create_topic(svc.url, topic, partitions=3)  # already exists: fine

        producer = confluent_kafka.Producer({"bootstrap.servers": svc.url})
        for i in range(10):
            producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
        assert producer.flush(10.0) == 0
        del producer  # disconnect now rather than complain once the broker is gone

        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": svc.url,
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # Tansu holds the first JoinGroup for about session.timeout.ms / 2 (≈23 s with the 45 s
            # default) waiting for more members; 6 s (the usual broker minimum) makes it ≈3 s.
            "session.timeout.ms": 6000,
        })
        got: dict[str, str] = {}
        partitions: set[int] = set()
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 30.0
            while len(got) < 10 and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                got[msg.key().decode()] = msg.value().decode()
                partitions.add(msg.partition())
        finally:
            consumer.close()
        assert got == {str(i): f"v{i}" for i in range(10)}
        assert partitions <= {0, 1, 2}
    finally:
        svc.stop()
    assert_stopped(svc, pid, port)
    svc.stop()  # idempotent


@pytest.mark.integration
def test_create_topic_rejects_wrong_partition_count() -> None:
    with start_broker() as svc:
        create_topic(svc.url, "fixed", partitions=2)
        with pytest.raises(RuntimeError, match="did not show 4 partitions"):
            create_topic(svc.url, "fixed", partitions=4, timeout_s=1.0)


@pytest.mark.integration
def test_start_broker_on_busy_port_fails_fast() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(RuntimeError, match="already in use"):
            start_broker(port=sock.getsockname()[1], timeout_s=5.0)


@pytest.mark.integration
def test_redis_roundtrip_and_stop() -> None:
    svc = start_redis()
    try:
        assert svc.started and svc.name == "redis"
        assert svc.url.startswith("redis://127.0.0.1:") and svc.url.endswith("/0")
        pid, port = svc.pid, port_of(svc.url)
        assert pid is not None
        addrs = listening_addresses(pid)
        if addrs is not None:
            assert addrs and all(ip == "127.0.0.1" for ip, _ in addrs), addrs

        client = redis.Redis.from_url(svc.url)
        try:
            assert client.set("defacto:k", "v")
            assert client.get("defacto:k") == b"v"
        finally:
            client.close()
    finally:
        svc.stop()
    assert_stopped(svc, pid, port)
    svc.stop()


def test_external_services_are_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    kafka, red = kafka_service(), redis_service()
    assert (kafka.url, kafka.started, kafka.pid) == ("127.0.0.1:1", False, None)
    assert (red.url, red.started, red.pid) == ("redis://127.0.0.1:1/0", False, None)
    kafka.stop()
    red.stop()


def test_redis_service_prefers_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(embedded, "_redis_answers", lambda url, timeout_s: url == "redis://127.0.0.1:6379/0")
    svc = redis_service(prefer_local=True)
    assert (svc.url, svc.started) == ("redis://127.0.0.1:6379/0", False)
