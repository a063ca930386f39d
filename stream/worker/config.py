"""A worker's configuration: one typed, frozen object, built by the command line or the env shim.

Durations carry their unit in their names: ``*_ms`` for event time (converted once, when the
command line is parsed), ``*_s`` for the worker's wall-clock timers (the unit asyncio and Faust
take). Nothing below reads the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stream.estimate.engine_options import EngineOptions
from stream.estimate.windows import WindowSettings
from stream.sources.reference_files import ReferencePaths

LOOPBACK = "127.0.0.1"


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
