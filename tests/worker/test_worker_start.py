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


def test_a_web_port_in_use_is_one_line_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from stream.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # refused before the reference files are read or Kafka and Redis are asked
        assert main(["worker", "--regions", "no-such.geojson", "--kafka", "127.0.0.1:1",
                     "--redis", "redis://127.0.0.1:1/0", "--key-file", "no-such-key",
                     "--web-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"defacto: error: --web-port {port}: 127.0.0.1:{port} is in use (")
    assert err.endswith("another worker on this machine? give each its own --web-port\n")
    assert err.count("\n") == 1
