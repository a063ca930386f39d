"""``defacto simulate``, ``produce``, ``worker`` and ``dashboard``: pings into Kafka and the
live shells.

Each command turns argv into a typed config and calls the shell that does the work:
:func:`stream.worker.faust_app.run_worker`, :func:`stream.web.dashboard.serve`, or the Kafka
producer of :mod:`stream.sources`. :func:`worker_app_from_env` serves the ``faust -A stream.app``
entry point.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from estimators.units import DAY_MS, MINUTE_MS, SECOND_MS
from stream.cli import options
from stream.cli.offline import SPEED, SimulateConfig, add_simulation_options, run_simulate
from stream.contract import InputError
from stream.estimate.engine_options import Limit
from stream.worker.config import CHECKPOINT_EVERY, LOGLEVELS, LOOPBACK, WORKER_LIMITS, WorkerConfig

WORKER_ARGS_ENV = "DEFACTO_WORKER_ARGS"

FRAME_ROWS = Limit("--frame-rows", "pings per frame", 1, 1_000_000, integer=True)
DELIVERY_TIMEOUT = Limit("--timeout", "seconds to wait for delivery", 0, 86_400)
PORT = Limit("--port", "TCP port", 1, 65_535, integer=True)


def _kafka_error(exc: Exception) -> InputError:
    return InputError(f"Kafka: {exc}")


def stream_simulation_live(sim: Any, kafka: str, topic: str, encoding: str, speed: float,
                           days: float) -> int:
    """Stream a simulation into Kafka at ``speed`` simulated seconds per second (0: at once),
    with a progress bar; returns the exit code (1 if any message was not delivered)."""
    from confluent_kafka import KafkaException

    from stream.sources.kafka_producer import PingProducer
    from stream.sources.simulation import stream_simulation

    try:
        producer = PingProducer(kafka, topic, encoding)
    except KafkaException as exc:
        raise _kafka_error(exc) from None
    pace = None if speed <= 0 else speed
    shown = "as fast as possible" if pace is None else f"at {pace:g}x"
    print(f"defacto: streaming {sim.scenario.name} to {topic} on {kafka} {shown}", file=sys.stderr)
    total_min = int(days * DAY_MS // MINUTE_MS)
    bar = tqdm(total=total_min, desc="simulated", unit=" min")
    t0 = None
    try:
        for now_ms in stream_simulation(producer, sim, pace):
            t0 = now_ms if t0 is None else t0
            bar.n = min((now_ms - t0) // MINUTE_MS + 1, total_min)
            bar.set_postfix(pings=f"{producer.stats.pings:,}", refresh=False)
            bar.refresh()
    except KeyboardInterrupt:
        print("defacto: interrupted", file=sys.stderr)
    finally:
        bar.close()
        left = producer.close(60)
    st = producer.stats
    print(f"defacto: {st.pings:,} pings in {st.messages:,} message(s): {st.delivered:,} delivered, "
          f"{st.failed:,} failed, {left:,} unconfirmed", file=sys.stderr)
    return 0 if st.failed == 0 and left == 0 else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    """``defacto simulate``: write a scenario's pings, reference files and ground truth."""
    from stream.simulator import load_scenario

    try:
        load_scenario(args.scenario)
    except (OSError, ValueError) as exc:
        raise InputError(str(exc)) from None
    if not args.out and not args.kafka:
        raise InputError("give --out DIR (write files), --kafka BOOTSTRAP (stream live), or both")
    sim = run_simulate(SimulateConfig(args.scenario, args.scale, args.days, args.seed,
                                      Path(args.out) if args.out else None, args.format, args.gz))
    if args.kafka:
        return stream_simulation_live(sim, args.kafka, args.topic, args.encoding, args.speed, args.days)
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    """``defacto produce``: send ping files to Kafka (bad rows too: the worker dead-letters them)."""
    from confluent_kafka import KafkaException

    from stream.sources.kafka_producer import PingProducer, record_columns
    from stream.sources.ping_files import read_records

    try:
        producer = PingProducer(args.kafka, args.topic, args.encoding, args.frame_rows)
    except KafkaException as exc:
        raise _kafka_error(exc) from None
    bar = tqdm(desc="produce", unit=" pings", unit_scale=True, disable=args.quiet)
    for records in read_records(args.pings):
        cols, bad = record_columns(records)
        producer.send_columns(cols)
        for r in bad:
            producer.send_raw(r.raw.encode())
        bar.update(len(records))
    bar.close()
    if not args.no_final and producer.stats.max_ts_ms is not None:
        producer.send_watermark(producer.stats.max_ts_ms, final=True)
    left = producer.close(args.timeout)
    st = producer.stats
    print(f"defacto: {st.pings:,} pings in {st.messages:,} message(s) to {args.topic} "
          f"({producer.partitions} partitions): {st.delivered:,} delivered, {st.failed:,} failed, "
          f"{left:,} unconfirmed", file=sys.stderr)
    for e in st.errors:
        print(f"defacto: delivery error: {e}", file=sys.stderr)
    return 0 if st.failed == 0 and left == 0 else 1


def worker_config(args: argparse.Namespace) -> WorkerConfig:
    """The parsed ``defacto worker`` options as a :class:`~stream.worker.config.WorkerConfig`."""

    return WorkerConfig(
        reference=options.reference_paths(args), kafka=args.kafka, redis_url=args.redis,
        topic=args.topic, dead_letter_topic=args.dead_letter_topic, group=args.group,
        prefix=args.prefix, partitions=args.partitions, engine=options.engine_options(args),
        windows=options.window_settings(args),
        key_file=Path(args.key_file) if args.key_file else None, web_port=args.web_port,
        web_host=args.web_host or LOOPBACK, batch_messages=args.batch, batch_wait_s=args.batch_wait,
        fetch_wait_ms=args.fetch_wait, fetch_max_bytes=args.fetch_max_bytes,
        checkpoint_every_s=args.checkpoint_every / SECOND_MS, session_timeout_s=args.session_timeout,
        datadir=Path(args.datadir), gap_threshold=args.gap_threshold,
        migration_alert_rate=args.migration_alert_rate, loglevel=args.loglevel)


def cmd_worker(args: argparse.Namespace) -> int:
    """``defacto worker``: a live worker (run as many as there are partitions to share): Faust
    as the shell (lifecycle, web pages), batch ingest with aiokafka ``getmany``
    (:mod:`stream.worker.faust_app`)."""
    from stream.worker.faust_app import run_worker

    return run_worker(worker_config(args))


def worker_app_from_env() -> Any:
    """The Faust app of ``defacto worker $DEFACTO_WORKER_ARGS``, or None when it is not set
    (for ``faust -A stream.app worker``). A bad option or file exits with the CLI's message."""
    if not os.environ.get(WORKER_ARGS_ENV):
        return None
    from stream.worker.faust_app import build_worker_app

    parser = options.Parser(prog="defacto", description=f"${WORKER_ARGS_ENV}")
    add_worker_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["worker", *shlex.split(os.environ[WORKER_ARGS_ENV])])
    try:
        return build_worker_app(worker_config(args))
    except InputError as exc:
        print(f"defacto: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``defacto dashboard``: the planners' live web page, fed from Redis."""
    from stream.web.dashboard import serve

    return serve(args.redis, args.prefix, args.host, args.port)


def add_produce_parser(sub: Any) -> None:
    """``defacto produce``."""
    p = sub.add_parser("produce", help="send ping files to Kafka",
                       description="Send ping files to the pings topic, partitioned by device, "
                                   "then a final watermark to every partition.")
    p.add_argument("pings", nargs="+", help="ping files (.jsonl/.csv, optionally .gz); several "
                   "files are one input, merged by event time")
    options.add_kafka_option(p)
    p.add_argument("--topic", default="pings", help="topic (default pings)")
    p.add_argument("--encoding", choices=["frame", "json", "avro"], default="frame",
                   help="frame: columnar batches (default); json/avro: one ping per message")
    p.add_argument("--frame-rows", type=FRAME_ROWS.arg, default=20_000,
                   help="pings per frame (default 20000)")
    p.add_argument("--no-final", action="store_true",
                   help="do not send the final watermark (more input will follow)")
    p.add_argument("--timeout", type=DELIVERY_TIMEOUT.arg, default=120.0,
                   help="delivery wait in s (default 120)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_produce)


def add_worker_parser(sub: Any) -> None:
    """``defacto worker`` (defaults from :class:`~stream.worker.config.WorkerConfig`)."""
    w = WorkerConfig
    p = sub.add_parser("worker", help="run a live worker (Faust): Kafka in, Redis and metrics out",
                       description="Consume pings from Kafka, keep the estimates current, "
                                   "publish snapshots to Redis and serve /metrics and /api.")
    options.add_kafka_option(p)
    options.add_redis_option(p)
    p.add_argument("--topic", default=w.topic, help="pings topic (default %(default)s)")
    p.add_argument("--dead-letter-topic", default=w.dead_letter_topic, help="default %(default)s")
    p.add_argument("--group", default=w.group, help="consumer group / app id (default %(default)s)")
    p.add_argument("--prefix", default=w.prefix, help="Redis key prefix (default %(default)s)")
    lim = WORKER_LIMITS
    p.add_argument("--partitions", type=lim["partitions"].arg,
                   help="partitions of the topic (default: ask Kafka)")
    options.add_reference_options(p)
    options.add_every_option(p)
    p.add_argument("--web-port", type=lim["web_port"].arg, default=w.web_port,
                   help="metrics/API port on 127.0.0.1 (default %(default)s; 0 = off)")
    p.add_argument("--web-host", help="bind address for the web port (default 127.0.0.1)")
    p.add_argument("--batch", type=lim["batch_messages"].arg, default=w.batch_messages,
                   help="max messages per batch (default %(default)s)")
    p.add_argument("--batch-wait", type=lim["batch_wait_s"].arg, default=w.batch_wait_s,
                   help="max batch wait in s (default %(default)s)")
    p.add_argument("--fetch-wait", type=lim["fetch_wait_ms"].arg, default=w.fetch_wait_ms,
                   help="longest a Kafka fetch waits for data (default 50ms; Faust's own is 1.5s)")
    p.add_argument("--fetch-max-bytes", type=lim["fetch_max_bytes"].arg, default=w.fetch_max_bytes,
                   help="bytes per partition per fetch (default 16 MiB: several frames)")
    p.add_argument("--checkpoint-every", type=CHECKPOINT_EVERY.arg,
                   default=round(w.checkpoint_every_s * SECOND_MS),
                   help="checkpoint each partition this often (default 30s)")
    p.add_argument("--session-timeout", type=lim["session_timeout_s"].arg,
                   default=w.session_timeout_s,
                   help="Kafka consumer session timeout in s (default %(default)s)")
    p.add_argument("--datadir", default=options.env_default("DEFACTO_DATADIR", str(w.datadir)),
                   help="Faust data directory (default $DEFACTO_DATADIR or /tmp/defacto-worker)")
    p.add_argument("--gap-threshold", type=lim["gap_threshold"].arg, default=w.gap_threshold,
                   help="alert a region when its whole resident interval is more than this "
                        "fraction above or below the registry (default 0.10)")
    p.add_argument("--migration-alert-rate", type=lim["migration_alert_rate"].arg,
                   default=w.migration_alert_rate,
                   help="alert a region whose weekly net inflow, the whole 90 %% interval, is "
                        "beyond this many per 1,000 residents (default %(default)s; read by the "
                        "Prometheus rule DefactoMigrationSurge)")
    p.add_argument("--loglevel", type=str.lower, choices=LOGLEVELS, default=w.loglevel,
                   help="default %(default)s")
    options.add_engine_options(p, period=False)
    p.set_defaults(func=cmd_worker)


def add_dashboard_parser(sub: Any) -> None:
    """``defacto dashboard``."""
    p = sub.add_parser("dashboard", help="serve the live dashboard for planners (reads Redis)",
                       description="A web page with the map of present population, the region "
                                   "table with registry gaps, a region's history, alerts and "
                                   "pipeline health, updated live from Redis.")
    options.add_redis_option(p)
    p.add_argument("--prefix", default="defacto", help="Redis key prefix (default defacto)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=PORT.arg, default=8050, help="port (default 8050)")
    p.set_defaults(func=cmd_dashboard)


def add_simulate_parser(sub: Any) -> None:
    """``defacto simulate``."""
    p = sub.add_parser("simulate", help="simulate a scenario: pings plus the true population",
                       description="Write pings, cell plan, regions, registry, reference and "
                                   "truth for a built-in scenario name or a scenario TOML file.")
    p.add_argument("scenario", help="astana, kz, or a path to a scenario .toml")
    add_simulation_options(p)
    p.add_argument("--out", help="output directory for the pings, cell plan, regions, registry, "
                   "reference population, truth and scenario")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                   help="ping file format (default jsonl)")
    p.add_argument("--kafka", metavar="BOOTSTRAP", help="stream the pings live to this Kafka")
    p.add_argument("--topic", default="pings", help="with --kafka: topic (default pings)")
    p.add_argument("--speed", type=SPEED.arg, default=60.0,
                   help="with --kafka: simulated seconds per second (default 60: an hour per "
                        "minute; 1 = real time; 0 = as fast as possible)")
    p.add_argument("--encoding", choices=["frame", "json", "avro"], default="frame",
                   help="with --kafka: message encoding (default frame)")
    p.add_argument("--gz", action="store_true", help="gzip the ping file")
    p.set_defaults(func=cmd_simulate)
