"""A worker's configuration: one typed, frozen object, built by the command line or the env shim.

Durations carry their unit in their names: ``*_ms`` for event time (converted once, when the
command line is parsed), ``*_s`` for the worker's wall-clock timers (the unit asyncio and Faust
take). Nothing below reads the command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from estimators.units import DAY_MS, MINUTE_MS, SECOND_MS
from stream.contract import InputError
from stream.estimate.engine_options import EngineOptions, Limit, check_limits, check_window_settings
from stream.estimate.windows import WindowSettings
from stream.sources.reference_files import ReferencePaths

LOOPBACK = "127.0.0.1"
LOGLEVELS = ("debug", "info", "warning", "error", "critical")

WORKER_LIMITS: dict[str, Limit] = {
    "partitions": Limit("--partitions", "partitions of the topic", 1, 10_000, integer=True),
    "web_port": Limit("--web-port", "TCP port, 0 = off", 0, 65_535, integer=True),
    "batch_messages": Limit("--batch", "messages per batch", 1, 1_000_000, integer=True),
    "batch_wait_s": Limit("--batch-wait", "longest wait for a batch, s", 0, 60, open_lo=True),
    "fetch_wait_ms": Limit("--fetch-wait", "longest Kafka fetch wait", 1, MINUTE_MS, duration=True),
    "fetch_max_bytes": Limit("--fetch-max-bytes", "bytes per partition and fetch", 1024,
                             (1 << 31) - 1, integer=True),
    "session_timeout_s": Limit("--session-timeout", "Kafka session timeout, s", 1, 1800),
    "gap_threshold": Limit("--gap-threshold", "a fraction of the registry such as 0.10", 0, 10,
                           open_lo=True, open_hi=True),
    "migration_alert_rate": Limit("--migration-alert-rate", "weekly net inflow per 1,000 "
                                  "residents", 0, 1000, open_lo=True),
}
"""The range of every numeric :class:`WorkerConfig` field set from the command line."""

CHECKPOINT_EVERY = Limit("--checkpoint-every", "checkpoint interval", SECOND_MS, DAY_MS,
                         duration=True)
"""``--checkpoint-every`` (a duration; the config holds it as ``checkpoint_every_s``)."""


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a live worker needs; every worker of a deployment shares ``engine``,
    ``windows``, ``reference``, ``prefix`` and the pseudonymization key.

    Kafka: ``kafka`` (bootstrap servers), ``topic``, ``dead_letter_topic``, ``group`` (consumer
    group and Faust app id), ``partitions`` (of the topic; None = ask Kafka),
    ``batch_messages``/``batch_wait_s`` (largest batch and longest wait for one),
    ``fetch_wait_ms``, ``fetch_max_bytes`` (per partition and fetch), ``session_timeout_s``.
    Redis: ``redis_url``, ``prefix`` (key prefix), ``checkpoint_every_s``. Web:
    ``web_port`` (0 = off) on ``web_host``. Figures: ``engine``, ``windows``, ``reference``,
    ``gap_threshold`` (a fraction of the registry), ``migration_alert_rate`` (weekly net inflow
    per 1,000 residents that alerts, exported for the Prometheus rule). Process: ``key_file`` (else
    ``$DEFACTO_PSEUDONYM_KEY``), ``datadir`` (Faust's), ``loglevel``.

    Ranges: :data:`WORKER_LIMITS`, :data:`CHECKPOINT_EVERY`, the engine's and the windows'; raises
    :class:`~stream.contract.InputError` naming the option otherwise.
    """

    reference: ReferencePaths
    kafka: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic: str = "pings"
    dead_letter_topic: str = "pings.dead"
    group: str = "defacto"
    prefix: str = "defacto"
    partitions: int | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    windows: WindowSettings = field(default_factory=WindowSettings)
    key_file: Path | None = None
    web_port: int = 6066
    web_host: str = LOOPBACK
    batch_messages: int = 5000
    batch_wait_s: float = 0.05
    fetch_wait_ms: int = 50
    fetch_max_bytes: int = 16 << 20
    checkpoint_every_s: float = 30.0
    session_timeout_s: float = 10.0
    datadir: Path = Path("/tmp/defacto-worker")
    gap_threshold: float = 0.10
    migration_alert_rate: float = 5.0
    loglevel: str = "warning"

    def __post_init__(self) -> None:
        check_limits(self, WORKER_LIMITS)
        every_ms = self.checkpoint_every_s * SECOND_MS
        CHECKPOINT_EVERY.check(round(every_ms) if math.isfinite(every_ms) else every_ms)
        check_window_settings(self.windows)
        if self.loglevel.lower() not in LOGLEVELS:
            raise InputError(f"--loglevel must be one of {', '.join(LOGLEVELS)}, "
                             f"got {self.loglevel[:40]!r}")
