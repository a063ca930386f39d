"""The Faust app of a worker: Faust is the shell (lifecycle, signals, logging, web pages), never
in the per-message path.

Ingest does not go through Faust's consumer or agents: :class:`IngestService` (a ``mode``
service started with the app) runs the batch loop -- aiokafka ``getmany(max_records=n)``, whole
batches to :meth:`~stream.worker.runtime.WorkerRuntime.handle` (:mod:`stream.worker.kafka_batch`)
-- and the 1 s flush. The app is booted with Kafka off
(``BootStrategy(enable_kafka=False)``): no aiokafka consumer, producer, topic conductor or
tables are started. What Faust still does: the worker process (``faust.worker.Worker``: the
event loop, SIGTERM/SIGINT to a clean stop -- which leaves the consumer group, checkpointing
every partition held -- logging, ``app.crash`` on a fatal error) and the aiohttp web server with
the pages below.

``defacto worker ...`` runs it; so does ``DEFACTO_WORKER_ARGS="..." faust -A stream.app worker``
(the ``stream/app.py`` shim). Pages, on ``web_host`` (127.0.0.1 unless told otherwise):
``/metrics`` (Prometheus), ``/healthz`` (200 ``{"status": "ok", ...}``, or 503
``{"status": "stopped", ...}`` naming stopped partitions, a refused window or an unsafe Redis,
503 ``{"status": "starting", ...}`` until the consumer group has given the worker its first
assignment (possibly empty) and its partitions are resumed, 503 ``{"status": "degraded", ...}``
while Redis or the broker does not answer, or 503 ``{"status": "stopping"}`` once it stops: for
readiness probes),
``/livez`` (200 while the web server runs: for liveness probes, since a restart does not cure
what ``/healthz`` reports), ``/api/regions`` (the latest snapshot's regions) and
``/api/cells?res=N`` (the same document as the dashboard's ``/api/cells``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

import faust
from mode import Service
from redis.exceptions import RedisError

from estimators.units import SECOND_MS
from stream.contract import InputError
from stream.estimate.checkpoint import key_id
from stream.estimate.engine_options import build_engine
from stream.estimate.fingerprint import Fingerprint, deployment_fingerprint
from stream.publish.cells_view import cells_document
from stream.publish.redis_keys import redact_url
from stream.sources.kafka_producer import topic_partitions
from stream.sources.key_file import load_pseudonym_key
from stream.sources.reference_files import Reference, load_reference
from stream.worker.config import WorkerConfig
from stream.worker.faust_compat import check_faust_version
from stream.worker.guards import TopicWatch, check_redis_at_start
from stream.worker.kafka_batch import BatchConsumer, ensure_topic
from stream.worker.log_repeats import hold_back_repeats
from stream.worker.runtime import StoppedWaitingForRedisError, WorkerRuntime

log = logging.getLogger("defacto.worker")
FLUSH_EVERY_S = 1.0
STOP_WAIT_S = 30.0


def _faust_settings(config: WorkerConfig) -> dict[str, Any]:
    """Faust's settings for the worker shell: web and datadir (its Kafka side is never
    started)."""
    return dict(
        broker=f"kafka://{config.kafka}", value_serializer="raw", key_serializer="raw",
        web_enabled=config.web_port > 0, web_bind=config.web_host, web_host=config.web_host,
        web_port=max(config.web_port, 1), store="memory://", datadir=str(config.datadir),
        loghandlers=[],
    )


class IngestService(Service):
    """The batch ingest loop and the 1 s flush of one worker, started and stopped with the app.

    Started: joins the consumer group (:class:`~stream.worker.kafka_batch.BatchConsumer`) and
    runs two tasks: fetch → :meth:`~stream.worker.runtime.WorkerRuntime.handle`, and
    :meth:`~stream.worker.runtime.WorkerRuntime.flush` every second. Stopping: the loop ends
    after the batch in hand, then the consumer leaves the group, which checkpoints (and
    commits) every partition held. An unexpected error crashes the app (the worker exits; a
    restarted one resumes from the checkpoints), never skips a batch.
    """

    runtime: WorkerRuntime
    config: WorkerConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kafka: BatchConsumer | None = None
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Future[None]] = []

    async def on_started(self) -> None:
        runtime, config = self.runtime, self.config
        await asyncio.to_thread(ensure_topic, config.kafka, config.dead_letter_topic)
        self.kafka = BatchConsumer(config, runtime.assign, runtime.revoke,
                                   lambda exc: runtime.metrics.dead_letter_errors.inc())
        runtime.kafka = self.kafka
        await self.kafka.start()
        self._tasks = [asyncio.ensure_future(self._guard(self._ingest())),
                       asyncio.ensure_future(self._guard(self._tick()))]

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._stopping.is_set():
                if not isinstance(exc, StoppedWaitingForRedisError):  # (said already)
                    log.error("worker: error while stopping", exc_info=exc)
                return
            log.critical("worker: unexpected error, stopping", exc_info=exc)
            self._stopping.set()
            await self.runtime.crash(exc)

    async def _ingest(self) -> None:
        config, runtime = self.config, self.runtime
        while not self._stopping.is_set():
            batches = await self.kafka.fetch(config.batch_messages, config.batch_wait_s)
            if batches and not self._stopping.is_set():
                await runtime.handle(batches)

    async def _tick(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), FLUSH_EVERY_S)
            except TimeoutError:
                await self.runtime.flush()

    async def on_stop(self) -> None:
        self._stopping.set()
        self.runtime.stopping.set()  # a partition waiting for Redis gives way
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
        if self.kafka is not None:
            await self.kafka.stop()


def worker_fingerprint(config: WorkerConfig, reference: Reference, secret: bytes,
                       partitions: int) -> Fingerprint:
    """The settings a worker shares with every other worker of its deployment."""
    return deployment_fingerprint(config.engine, config.windows, reference, partitions,
                                  key_id(secret), config.gap_threshold)


def create_app(config: WorkerConfig, reference: Reference, secret: bytes, partitions: int,
               fingerprint: Fingerprint | None = None, watch_topic: bool = True) -> faust.App:
    """The Faust app of a worker (not started). ``partitions``: of the pings topic;
    ``fingerprint``: the deployment's settings (default: this worker's);
    ``watch_topic``: check the topic's id and partition count with the broker's admin API."""
    hold_back_repeats()  # the Kafka client's retries while the broker is away: a line a minute
    app = faust.App(config.group, **_faust_settings(config))
    app.boot_strategy = app.BootStrategy(app, enable_kafka=False)  # ingest is IngestService's
    fingerprint = fingerprint or worker_fingerprint(config, reference, secret, partitions)
    runtime = WorkerRuntime(app.crash, config, partitions,
                            lambda: build_engine(config.engine, reference), secret,
                            reference.registry, fingerprint,
                            TopicWatch(config.kafka, config.topic) if watch_topic else None)
    app.runtime = runtime  # type: ignore[attr-defined]
    app.service(type("Ingest", (IngestService,), {"runtime": runtime, "config": config}))
    _register_pages(app, runtime, config)
    return app


def _register_pages(app: faust.App, runtime: WorkerRuntime, config: WorkerConfig) -> None:
    """``/metrics``, ``/healthz``, ``/api/regions`` and ``/api/cells`` on the worker's web port."""
    publisher = runtime.publisher

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(runtime.metrics.exposition(), content_type="text/plain; version=0.0.4")

    async def published_until() -> tuple[int | None, bool]:
        """The published end and whether Redis answered, asked twice before saying no: after a
        restart of Redis the first command on a pooled connection fails once, and that is not
        Redis being away."""
        for attempt in range(2):
            try:
                return await publisher.published_until(), True
            except (RedisError, OSError):
                if attempt:
                    return None, False
        raise AssertionError("unreachable")  # pragma: no cover

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        until, redis_ok = await published_until()
        problems = runtime.problems()
        broker_ok = runtime.topic_answered
        joined = runtime.kafka is not None and runtime.kafka.joined
        outages = [text for ok, text in (
            (redis_ok, "Redis does not answer: estimating on, publishing once it is back"),
            (broker_ok, "the broker did not answer the last topic check: no new pings, and "
                        "output waits for a check it answers")) if not ok]
        degraded = outages + ([] if joined else ["starting: the consumer group's first "
                                                 "assignment is not taken up yet"])
        status = ("stopping" if runtime.stopping.is_set() else "stopped" if problems
                  else "degraded" if outages else "starting" if not joined else "ok")
        extra = {"detail": "; ".join(degraded)} if degraded and not problems else {}
        return web.json({"status": status, **problems, **extra, "redis": redis_ok,
                         "broker": broker_ok, "partitions": sorted(runtime.parts),
                         "published_until_ms": until},
                        status=200 if status == "ok" else 503)

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        return web.json({"status": "alive"})

    @app.page("/api/regions")
    async def api_regions(web: Any, request: Any) -> Any:
        try:
            snap = await publisher.latest()
        except (RedisError, OSError):
            return web.json({"error": "redis unavailable"}, status=503)
        if snap is None:
            return web.json({"error": "no snapshot published yet"}, status=404)
        body = {"at": snap["at"], "regions": snap["regions"]}
        if "warming_up" in snap:
            body["warming_up"] = snap["warming_up"]
        return web.json(body)

    @app.page("/api/cells")
    async def api_cells(web: Any, request: Any) -> Any:
        raw = request.query.get("res", "") or str(config.engine.res)  # default: the engine's
        try:
            status, body = await cells_document(publisher.redis, publisher.keys, raw)
        except (RedisError, OSError):
            return web.json({"error": "redis unavailable"}, status=503)
        return web.bytes(body, content_type="application/json", status=status)


def build_worker_app(config: WorkerConfig) -> faust.App:
    """Load the reference files and the key, check the options and Redis, and build the app.

    Raises :class:`~stream.contract.InputError` for a bad file, option or missing key, a Redis
    that may evict keys, and settings that differ from the deployment's (pinned in Redis by the
    first worker; see :func:`~stream.worker.guards.check_redis_at_start`).
    """
    _check_web_port(config.web_host, config.web_port)
    reference = load_reference(config.reference)
    secret = load_pseudonym_key(config.key_file, stable=True)
    build_engine(config.engine, reference)  # validate the options once, with clear errors
    partitions = config.partitions if config.partitions is not None \
        else topic_partitions(config.kafka, config.topic)
    if partitions < 1:
        raise InputError(f"--partitions must be at least 1, got {partitions}")
    fingerprint = worker_fingerprint(config, reference, secret, partitions)
    warning = check_redis_at_start(config.redis_url, config.prefix, fingerprint)
    if warning:
        print(f"defacto: warning: {warning}", file=sys.stderr)
    return create_app(config, reference, secret, partitions, fingerprint)


def _check_web_port(host: str, port: int) -> None:
    """Raise :class:`~stream.contract.InputError` when another server listens on ``host:port``
    (two workers on one machine with the default port): said before anything starts, not as
    the web server's traceback once the worker runs. Port 0 (no web server): nothing."""
    if port <= 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"--web-port {port}: {host}:{port} is in use "
                             f"({exc.strerror or exc}); another worker on this machine? give "
                             "each its own --web-port") from None


def run_worker(config: WorkerConfig) -> int:
    """Run a worker until it is stopped (Faust's worker owns the event loop and signals)."""
    from faust.worker import Worker

    check_faust_version()
    app = build_worker_app(config)
    web = f"http://{config.web_host}:{config.web_port}/metrics" if config.web_port else "off"
    print(f"defacto: worker for {config.topic} on {config.kafka}; Redis {redact_url(config.redis_url)}; "
          f"web {web}; window {config.windows.every_ms // SECOND_MS} s", file=sys.stderr)
    Worker(app, loglevel=config.loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0
