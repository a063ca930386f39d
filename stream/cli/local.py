"""``defacto local``: the embedded broker and Redis on their own, to run the live pipeline by hand.

``defacto demo`` starts the same two servers with a simulation, one worker and a dashboard; this
command starts only the servers and their topics, prints where they listen as shell exports, and
holds them until Ctrl-C (or ``--for``), so that ``defacto worker``, ``produce``, ``simulate
--kafka`` and ``dashboard`` can be started by hand against them on a machine with nothing
installed. Both bind 127.0.0.1 and keep their data in memory only: it goes when they stop.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from estimators.units import DAY_MS, SECOND_MS
from stream.cli.signals import SignalledError, StopRequest, stopping_on_signals
from stream.contract import InputError
from stream.estimate.engine_options import Limit, check_limits

LOCAL_LIMITS: dict[str, Limit] = {
    "partitions": Limit("--partitions", "partitions of the pings topic", 1, 64, integer=True),
    "kafka_port": Limit("--kafka-port", "TCP port", 1, 65_535, integer=True),
    "redis_port": Limit("--redis-port", "TCP port", 1, 65_535, integer=True),
    "hold_ms": Limit("--for", "how long to keep the servers up", SECOND_MS, 366 * DAY_MS,
                     duration=True),
}
"""The range of the numeric :class:`LocalConfig` fields."""

POLL_S = 0.5
"""How often the held servers are checked to be alive."""


@dataclass(frozen=True)
class LocalConfig:
    """Servers to start: the pings topic (and ``TOPIC.dead``), ports (None: free ones), and how
    long to hold them (None: until interrupted)."""

    topic: str = "pings"
    partitions: int = 2
    kafka_port: int | None = None
    redis_port: int | None = None
    hold_ms: int | None = None

    def __post_init__(self) -> None:
        check_limits(self, LOCAL_LIMITS)
        if not self.topic or len(self.topic) > 200 or any(
                not (c.isascii() and (c.isalnum() or c in "._-")) for c in self.topic):
            raise InputError(f"--topic: {self.topic[:40]!r} is not a Kafka topic name (letters, "
                             "digits, '.', '_' and '-', up to 200)")


@dataclass(frozen=True)
class LocalServers:
    """Where the started servers listen."""

    kafka: str
    redis: str
    topic: str
    dead_letter_topic: str
    pids: tuple[int, int] = (0, 0)
    """Process ids of the broker and Redis (0: not known)."""

    def exports(self) -> str:
        """The shell line that points ``defacto`` commands at them."""
        return f"export KAFKA_BOOTSTRAP={self.kafka} REDIS_URL={self.redis}"


def run_local(config: LocalConfig,
              ready: Callable[[LocalServers], None] | None = None) -> int:
    """Start the broker and Redis, create the topics, call ``ready`` with where they listen, and
    hold them until Ctrl-C, SIGTERM or SIGHUP (exit code 0; 130 while they start), the end of
    ``hold_ms`` (0), or one of them dying (1, with its log's tail on stderr). Both are stopped
    however this ends: after a SIGKILL of this process, by their watchdogs
    (:mod:`stream.local.watchdog`).

    Raises :class:`~stream.contract.InputError` when a server cannot start (a port in use, a
    missing binary) or the topics cannot be created."""
    from stream.local.embedded import create_topic, log_tail, start_broker, start_redis

    rc: int | None = None  # once held: the code the servers' stop ends with
    with stopping_on_signals() as request:
        try:
            with ExitStack() as stack:
                try:
                    kafka = stack.enter_context(start_broker(config.kafka_port))
                    request.go_on()
                    store = stack.enter_context(start_redis(config.redis_port))
                    request.go_on()
                    dead = f"{config.topic}.dead"
                    create_topic(kafka.url, config.topic, config.partitions)
                    create_topic(kafka.url, dead, 1)
                except RuntimeError as exc:
                    raise InputError(str(exc).splitlines()[0]) from None
                request.go_on()
                servers = LocalServers(kafka.url, store.url, config.topic, dead,
                                       (kafka.pid or 0, store.pid or 0))
                rc = _hold(servers, (kafka, store), config.hold_ms, ready, log_tail, request)
            return rc
        except (KeyboardInterrupt, SignalledError):
            if rc is not None:  # while the servers stopped: they are stopped all the same
                return rc
            print("defacto: interrupted while starting; what had started is stopped",
                  file=sys.stderr)
            return 130


def _hold(servers: LocalServers, services: tuple[Any, ...], hold_ms: int | None,
          ready: Callable[[LocalServers], None] | None, log_tail: Callable[[str | None], str],
          request: StopRequest) -> int:
    """:func:`run_local` once the servers are up: until a signal, ``hold_ms`` or one dies."""
    deadline = None if hold_ms is None else time.monotonic() + hold_ms / 1000
    try:
        if ready is not None:
            ready(servers)
        while deadline is None or time.monotonic() < deadline:
            request.go_on()
            for svc in services:
                proc = svc.proc
                if proc is not None and proc.poll() is not None:
                    print(f"defacto: error: the {svc.name} server exited with code "
                          f"{proc.returncode}; the end of its log ({svc.log_path}):",
                          file=sys.stderr)
                    print(log_tail(svc.log_path), file=sys.stderr)
                    return 1
            wait = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            time.sleep(max(0.0, wait))
    except (KeyboardInterrupt, SignalledError):
        print("defacto: stopping the broker and Redis (their data goes with them)",
              file=sys.stderr)
        return 0
    print("defacto: --for is over; stopping the broker and Redis", file=sys.stderr)
    return 0


def _say_ready(servers: LocalServers) -> None:
    print(servers.exports(), flush=True)
    topics = f"--topic {servers.topic} --dead-letter-topic {servers.dead_letter_topic}"
    print(f"defacto: Kafka-compatible broker (Tansu) on {servers.kafka}: topics {servers.topic} "
          f"and {servers.dead_letter_topic}; Redis on {servers.redis} (process ids "
          f"{servers.pids[0]} and {servers.pids[1]}; they stop with this command, also after a "
          "kill -9 of it). Both hold their data in memory; "
          "Ctrl-C stops them.\n"
          "defacto: in other terminals, run the export line above, then for example\n"
          f"  defacto worker --regions R.geojson --cells C.csv --registry REG.csv --calibration "
          f"CAL.csv --key-file KEY {topics} --web-port 6066\n"
          "  (a second worker: the same with --web-port 6067)\n"
          f"  defacto produce PINGS.jsonl --topic {servers.topic}\n"
          "  defacto dashboard", file=sys.stderr, flush=True)


def cmd_local(args: argparse.Namespace) -> int:
    """``defacto local``."""
    config = LocalConfig(topic=args.topic, partitions=args.partitions, kafka_port=args.kafka_port,
                         redis_port=args.redis_port, hold_ms=args.hold_ms)
    return run_local(config, _say_ready)


def add_local_parser(sub: Any) -> None:
    """``defacto local``."""
    lim = LOCAL_LIMITS
    p = sub.add_parser(
        "local", help="start the embedded broker and Redis, and hold them (to run workers by hand)",
        description="Start a Kafka-compatible broker (Tansu) and Redis on 127.0.0.1, create the "
                    "pings topic and its dead-letter topic, print an `export KAFKA_BOOTSTRAP=... "
                    "REDIS_URL=...` line for the other defacto commands, and hold both until "
                    "Ctrl-C. Their data lives in memory only.")
    p.add_argument("--topic", default=LocalConfig.topic,
                   help=f"pings topic to create, and TOPIC.dead (default {LocalConfig.topic})")
    p.add_argument("--partitions", type=lim["partitions"].arg, default=LocalConfig.partitions,
                   help="partitions of the pings topic: the most workers that can share it "
                        f"(default {LocalConfig.partitions})")
    p.add_argument("--kafka-port", type=lim["kafka_port"].arg,
                   help="broker port on 127.0.0.1 (default: a free port)")
    p.add_argument("--redis-port", type=lim["redis_port"].arg,
                   help="Redis port on 127.0.0.1 (default: a free port)")
    p.add_argument("--for", dest="hold_ms", type=lim["hold_ms"].arg, metavar="DURATION",
                   help="stop after this long (e.g. 30m, 8h; default: until Ctrl-C)")
    p.set_defaults(func=cmd_local)
