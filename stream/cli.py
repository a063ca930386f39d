"""The ``defacto`` command line: simulate, calibrate, replay and demo.

Input problems end the command with one clear line (``defacto: error: ...``) and exit code 2;
bad *rows* in ping files never stop a run: they are counted, written to the reject file and
summarized in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from estimators.calibration import Calibration
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.presence import NightWindow
from estimators.pseudonym import load_secret
from estimators.regions import RegionSet
from stream.files import (
    InputError,
    load_calibration,
    load_cell_plan,
    load_population,
    load_regions,
    write_calibration,
)
from stream.pings import PingDecoder, Reject, read_records
from stream.replay import Replayer
from stream.snapshot import parse_iso_ms, region_table

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration_s(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``6h``, ``1d`` or ``1h30m``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)?", text.strip())
    joined = "".join(n + (u or "") for n, u in parts)
    if not parts or joined != re.sub(r"\s+", "", text):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 90s, 30m, 6h, 1d)")
    return sum(float(n) * _UNITS[u or "s"] for n, u in parts)


def _duration_arg(text: str) -> float:
    value = parse_duration_s(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return value


def _gap_threshold_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"gap threshold must be a number, got {text!r}") from None
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError(f"gap threshold is a fraction such as 0.10, got {text!r}")
    return value


def _night_arg(text: str) -> tuple[float, float]:
    m = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?-(\d{1,2})(?::(\d{2}))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"night window must look like 22:00-06:00, got {text!r}")
    start = int(m[1]) + int(m[2] or 0) / 60
    end = int(m[3]) + int(m[4] or 0) / 60
    if start >= 24 or end >= 24 or start == end:
        raise argparse.ArgumentTypeError(f"bad night window {text!r}")
    return start, (end - start) % 24


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--regions", required=True, help="regions GeoJSON FeatureCollection")
    g.add_argument("--cells", help="cell plan CSV (operator,cell,lat,lon[,azimuth_deg,range_m]); "
                   "needed for pings that carry a cell id")
    g.add_argument("--res", type=int, default=8, help="H3 resolution of cells (default 8)")
    g.add_argument("--horizon", type=_duration_arg, default=6 * 3600.0,
                   help="a device counts as present where its last ping within this time was "
                        "(default 6h; see docs/METHOD.md)")
    g.add_argument("--activity", type=_duration_arg, default=86400.0,
                   help="devices seen within this window are active (default 1d)")
    g.add_argument("--night", type=_night_arg, default=(22.0, 8.0),
                   help="local night window for residence (default 22:00-06:00)")
    g.add_argument("--nights", type=int, default=7,
                   help="residence = modal night region over this many nights (default 7)")
    g.add_argument("--min-nights", type=int, default=1,
                   help="nights a device must be seen at night to get a home (default 1)")
    g.add_argument("--timezone", default="Asia/Almaty", help="local time zone (default Asia/Almaty)")
    g.add_argument("--home-mcc", type=int, default=401,
                   help="MCC of domestic SIMs; others are roamers (default 401, Kazakhstan)")
    g.add_argument("--k", type=int, default=15,
                   help="suppress figures resting on fewer devices (default 15)")
    g.add_argument("--model-rse", type=float, default=EstimateConfig.model_rse,
                   help="model-error relative standard error in the interval (default %(default)s)")
    g.add_argument("--key-file", help="pseudonymization secret (default: $DEFACTO_PSEUDONYM_KEY, "
                   "else a random per-run key)")
    g.add_argument("--lateness", type=_duration_arg, default=600.0,
                   help="how late (event time) a ping may arrive and still count (default 10m)")
    g.add_argument("--from", dest="from_", metavar="ISO", help="ignore pings before this time")
    g.add_argument("--to", metavar="ISO", help="ignore pings from this time on")


def _build_engine(args: argparse.Namespace, regions: RegionSet,
                  calibration: Calibration | None) -> Engine:
    night_start, night_len = args.night
    try:
        config = EngineConfig(
            res=args.res, timezone=args.timezone, home_mcc=args.home_mcc,
            night=NightWindow(night_start, night_len, args.nights),
            estimate=EstimateConfig(horizon_s=int(args.horizon), activity_s=int(args.activity),
                                    min_nights=args.min_nights, k_anonymity=args.k,
                                    model_rse=args.model_rse),
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    engine = Engine(regions, config, calibration)
    if calibration is not None:
        unknown = calibration.unknown_regions(regions)
        if unknown:
            raise InputError(f"calibration names unknown region(s): {', '.join(unknown)}")
    if args.cells:
        plan = load_cell_plan(args.cells)
        engine.load_cell_plan(plan.operator, plan.cell, plan.lat, plan.lon, plan.azimuth_deg,
                              plan.range_m)
    return engine


class _RejectSink:
    """Writes rejects to a JSON Lines file, opened on the first reject only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: TextIO | None = None

    def __call__(self, reject: Reject) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")
        self._fh.write(reject.to_json() + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _run(replayer: Replayer, pings: Sequence[str], finish: bool) -> None:
    with tqdm(desc="pings", unit=" rows", unit_scale=True, file=sys.stderr, disable=None) as bar:
        for chunk in read_records(pings):
            replayer.feed(chunk)
            bar.update(len(chunk))
            bar.set_postfix(snapshots=replayer.stats.snapshots, refresh=False)
    if finish:
        replayer.finish()


def _period(args: argparse.Namespace) -> tuple[int | None, int | None]:
    try:
        start = parse_iso_ms(args.from_) if args.from_ else None
        end = parse_iso_ms(args.to) if args.to else None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if start is not None and end is not None and end <= start:
        raise InputError("--to must be after --from")
    return start, end


def _load_truth(path: str) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                doc = json.loads(line)
                out[doc["at"]] = doc["regions"]
    return out


def cmd_replay(args: argparse.Namespace) -> int:
    """``defacto replay``: snapshots over ping files."""
    regions = load_regions(args.regions)
    registry = load_population(args.registry, regions) if args.registry else None
    calibration = Calibration(load_calibration(args.calibration, regions)) \
        if args.calibration else None
    if calibration is None:
        print("defacto: warning: no --calibration: every device counts as one person",
              file=sys.stderr)
    engine = _build_engine(args, regions, calibration)
    secret, _ = load_secret(args.key_file)
    start, end = _period(args)
    out_fh = open(args.out, "w", encoding="utf-8") if args.out else None
    rejects_path = Path(args.rejects or (f"{args.out}.rejects.jsonl" if args.out
                                         else "rejects.jsonl"))
    sink = _RejectSink(rejects_path)

    def write(snap: dict[str, Any]) -> None:
        if out_fh is not None:
            out_fh.write(json.dumps(snap, separators=(",", ":")) + "\n")

    replayer = Replayer(engine, PingDecoder(engine, secret), int(args.every * 1000), registry,
                        lateness_ms=int(args.lateness * 1000), start_ms=start, end_ms=end,
                        on_snapshot=write, on_reject=sink)
    try:
        _run(replayer, args.pings, finish=True)
    finally:
        sink.close()
        if out_fh is not None:
            out_fh.close()
    stats = replayer.stats
    rej = f" -> {rejects_path}" if sum(stats.rejected.values()) else ""
    print(f"defacto: {stats.summary()}{rej}", file=sys.stderr)
    print(f"defacto: {stats.snapshots} snapshot(s) over {replayer.describe_period()}"
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    uncal = engine.factors().uncalibrated
    if calibration is not None and uncal:
        shown = ", ".join(f"{r}/{o}" for r, o in uncal[:5])
        print(f"defacto: warning: {len(uncal)} region/operator pair(s) have no calibration factor "
              f"and count 1 person per device (e.g. {shown})", file=sys.stderr)
    if not args.out or args.table:
        snap = replayer.last_snapshot
        if snap is None:
            print("defacto: no snapshot: the input has no accepted pings", file=sys.stderr)
            return 1
        truth = _load_truth(args.truth).get(snap["at"]) if args.truth else None
        print(f"Snapshot at {snap['at']} (horizon {int(args.horizon)} s, k = {args.k})")
        print(region_table(snap, truth))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``defacto calibrate``: fit factors on a reference period against a reference population."""
    regions = load_regions(args.regions)
    reference = load_population(args.reference, regions)
    engine = _build_engine(args, regions, None)
    secret, _ = load_secret(args.key_file)
    start, end = _period(args)
    sink = _RejectSink(Path(args.rejects or f"{args.out}.rejects.jsonl"))
    replayer = Replayer(engine, PingDecoder(engine, secret), 3_600_000, None,
                        lateness_ms=int(args.lateness * 1000), start_ms=start, end_ms=end,
                        on_reject=sink, publish=False)
    try:
        _run(replayer, args.pings, finish=False)
    finally:
        sink.close()
    replayer.apply_all()
    if replayer.stats.last_ts_ms is None:
        raise InputError("no accepted pings in the calibration period")
    at_ms = end if end is not None else replayer.stats.last_ts_ms + 1
    try:
        rows = engine.fit_calibration(at_ms, reference, args.reference_rse)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    write_calibration(args.out, rows)
    print(f"defacto: {replayer.stats.summary()}", file=sys.stderr)
    print(f"defacto: {len(rows)} factor(s) fitted on {replayer.describe_period()} -> {args.out}",
          file=sys.stderr)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """``defacto simulate``: write a scenario's pings, reference files and ground truth."""
    from stream.simulator import load_scenario, simulate, write_simulation

    try:
        scenario = load_scenario(args.scenario)
    except (OSError, ValueError) as exc:
        raise InputError(str(exc)) from None
    if not args.out and not args.kafka:
        raise InputError("give --out DIR (write files), --kafka BOOTSTRAP (stream live), or both")
    sim = simulate(scenario, scale=args.scale, days=args.days, seed=args.seed)
    if args.out:
        paths = write_simulation(sim, args.out, fmt=args.format, gz=args.gz, progress=True)
        for name, path in paths.items():
            print(f"{name:>10}: {path}", file=sys.stderr)
    if args.kafka:
        return _stream_simulation(args, sim)
    return 0


def _stream_simulation(args: argparse.Namespace, sim: Any) -> int:
    from confluent_kafka import KafkaException

    from stream.produce import PingProducer, stream_simulation

    try:
        producer = PingProducer(args.kafka, args.topic, args.encoding)
    except KafkaException as exc:
        raise _kafka_error(exc) from None
    speed = None if args.speed <= 0 else args.speed
    pace = "as fast as possible" if speed is None else f"at {speed:g}x"
    print(f"defacto: streaming {sim.scenario.name} to {args.topic} on {args.kafka} {pace}",
          file=sys.stderr)
    total_min = int(args.days * 24 * 60)
    bar = tqdm(total=total_min, desc="simulated", unit=" min")
    t0 = None
    try:
        for now_ms in stream_simulation(producer, sim, speed):
            t0 = now_ms if t0 is None else t0
            bar.n = min((now_ms - t0) // 60_000 + 1, total_min)
            bar.set_postfix(pings=f"{producer.stats.pings:,}", refresh=False)
            bar.refresh()
    except KeyboardInterrupt:
        print("defacto: interrupted", file=sys.stderr)
    finally:
        bar.close()
        left = producer.flush(60)
    st = producer.stats
    print(f"defacto: {st.pings:,} pings in {st.messages:,} message(s): {st.delivered:,} delivered, "
          f"{st.failed:,} failed, {left:,} unconfirmed", file=sys.stderr)
    return 0 if st.failed == 0 and left == 0 else 1


def _kafka_error(exc: Exception) -> InputError:
    return InputError(f"Kafka: {exc}")


def cmd_produce(args: argparse.Namespace) -> int:
    """``defacto produce``: send ping files to Kafka (bad rows too: the worker dead-letters them)."""
    from confluent_kafka import KafkaException

    from stream.produce import PingProducer, record_columns

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
    left = producer.flush(args.timeout)
    st = producer.stats
    print(f"defacto: {st.pings:,} pings in {st.messages:,} message(s) to {args.topic} "
          f"({producer.partitions} partitions): {st.delivered:,} delivered, {st.failed:,} failed, "
          f"{left:,} unconfirmed", file=sys.stderr)
    for e in st.errors:
        print(f"defacto: delivery error: {e}", file=sys.stderr)
    return 0 if st.failed == 0 and left == 0 else 1


def worker_app(argv: Sequence[str]) -> Any:
    """The Faust app of ``defacto worker ARGS`` (without running it)."""
    from stream.app import create_app

    args = build_parser().parse_args(["worker", *argv])
    regions = load_regions(args.regions)
    registry = load_population(args.registry, regions) if args.registry else None
    calibration = Calibration(load_calibration(args.calibration, regions)) \
        if args.calibration else None
    secret, source = load_secret(args.key_file)
    if source.startswith("a random"):
        raise InputError("the worker needs a stable pseudonymization key shared by all workers: "
                         "--key-file or $DEFACTO_PSEUDONYM_KEY")
    _build_engine(args, regions, calibration)  # validate options once, with clear errors
    if args.partitions is None:
        args.partitions = _topic_partitions(args.kafka, args.topic)
    return create_app(args, lambda: _build_engine(args, regions, calibration), secret, registry)


def _topic_partitions(bootstrap: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=15)
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise InputError(f"topic {topic!r} not found on {bootstrap}: create it first "
                         "(partitions = the most workers you will run)")
    return len(info.partitions)


def cmd_worker(args: argparse.Namespace) -> int:
    """``defacto worker``: a Faust worker (run as many as there are partitions to share)."""
    from faust.worker import Worker

    app = worker_app(args.raw_argv[args.raw_argv.index("worker") + 1:])
    from stream.dashboard import redact_url

    print(f"defacto: worker for {args.topic} on {args.kafka}; Redis {redact_url(args.redis)}; "
          f"web http://127.0.0.1:{args.web_port}/metrics", file=sys.stderr)
    Worker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``defacto dashboard``: the planners' live web page, fed from Redis."""
    from stream.dashboard import serve

    return serve(args.redis, args.prefix, args.host, args.port)


def cmd_demo(args: argparse.Namespace) -> int:
    """``defacto demo``: simulate, calibrate on the first day, replay the rest, print the table."""
    if args.offline:
        from stream.demo import run_demo

        return run_demo(Path(args.out), args.scenario, args.scale, args.days, args.seed)
    from stream.live_demo import run_live_demo

    return run_live_demo(Path(args.out), args.scenario, args.scale, args.days, args.seed,
                         args.speed, web_port=args.web_port,
                         dashboard_port=args.dashboard_port, hold=args.hold)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog="defacto",
        description="Live de facto population from anonymized mobile-network pings.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="run the engine over ping files and write snapshots",
                       description="Replay ping files in event-time order; write a snapshot "
                                   "at every --every boundary (UTC-aligned).")
    p.add_argument("pings", nargs="+", help="ping files (.jsonl/.csv, optionally .gz)")
    p.add_argument("--registry", help="registry CSV (region,registered)")
    p.add_argument("--calibration", help="calibration CSV (region,operator,factor[,rse])")
    p.add_argument("--every", type=_duration_arg, default=3600.0,
                   help="snapshot interval, aligned to UTC (default 1h)")
    p.add_argument("--out", help="snapshots JSON Lines file (default: print a region table)")
    p.add_argument("--table", action="store_true", help="also print the table with --out")
    p.add_argument("--rejects", help="reject file (default OUT.rejects.jsonl or rejects.jsonl)")
    p.add_argument("--truth", help="truth.jsonl from `defacto simulate`: adds true columns")
    _add_engine_options(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("calibrate", help="fit calibration factors on a reference period",
                       description="Fit people-per-device factors per region from the pings "
                                   "of a reference period against a reference population.")
    p.add_argument("pings", nargs="+", help="ping files of the reference period")
    p.add_argument("--reference", required=True,
                   help="reference population CSV (region,registered): usual residents from a "
                        "source independent of the registry you compare with")
    p.add_argument("--reference-rse", type=float, default=0.0,
                   help="relative standard error of the reference figures (default 0)")
    p.add_argument("--out", required=True, help="calibration CSV to write")
    p.add_argument("--rejects", help="reject file (default OUT.rejects.jsonl)")
    _add_engine_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("simulate", help="simulate a scenario: pings plus the true population",
                       description="Write pings, cell plan, regions, registry, reference and "
                                   "truth for a built-in scenario name or a scenario TOML file.")
    p.add_argument("scenario", help="astana, kz, or a path to a scenario .toml")
    p.add_argument("--scale", type=float, default=0.01, help="fraction of real size (default 0.01)")
    p.add_argument("--days", type=float, default=3.0, help="days to simulate (default 3)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--out", help="output directory for pings, regions, cells, registry, truth")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="ping file format")
    p.add_argument("--kafka", metavar="BOOTSTRAP", help="stream the pings live to this Kafka")
    p.add_argument("--topic", default="pings", help="with --kafka: topic (default pings)")
    p.add_argument("--speed", type=float, default=60.0,
                   help="with --kafka: simulated seconds per second (default 60: an hour per "
                        "minute; 1 = real time; 0 = as fast as possible)")
    p.add_argument("--encoding", choices=["frame", "json", "avro"], default="frame",
                   help="with --kafka: message encoding (default frame)")
    p.add_argument("--gz", action="store_true", help="gzip the ping file")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("produce", help="send ping files to Kafka",
                       description="Send ping files to the pings topic, partitioned by device, "
                                   "then a final watermark to every partition.")
    p.add_argument("pings", nargs="+", help="ping files (.jsonl/.csv, optionally .gz)")
    p.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                   help="bootstrap servers (default $KAFKA_BOOTSTRAP or 127.0.0.1:9092)")
    p.add_argument("--topic", default="pings", help="topic (default pings)")
    p.add_argument("--encoding", choices=["frame", "json", "avro"], default="frame",
                   help="frame: columnar batches (default); json/avro: one ping per message")
    p.add_argument("--frame-rows", type=int, default=20_000, help="pings per frame (default 20000)")
    p.add_argument("--no-final", action="store_true",
                   help="do not send the final watermark (more input will follow)")
    p.add_argument("--timeout", type=float, default=120.0, help="delivery wait in s (default 120)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("worker", help="run a live worker (Faust): Kafka in, Redis and metrics out",
                       description="Consume pings from Kafka, keep the estimates current, "
                                   "publish snapshots to Redis and serve /metrics and /api.")
    p.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                   help="bootstrap servers (default $KAFKA_BOOTSTRAP or 127.0.0.1:9092)")
    p.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                   help="Redis URL (default $REDIS_URL or redis://127.0.0.1:6379/0)")
    p.add_argument("--topic", default="pings", help="pings topic (default pings)")
    p.add_argument("--dead-letter-topic", default="pings.dead", help="default pings.dead")
    p.add_argument("--group", default="defacto", help="consumer group / app id (default defacto)")
    p.add_argument("--prefix", default="defacto", help="Redis key prefix (default defacto)")
    p.add_argument("--partitions", type=int, help="partitions of the topic (default: ask Kafka)")
    p.add_argument("--registry", help="registry CSV (region,registered)")
    p.add_argument("--calibration", help="calibration CSV (region,operator,factor[,rse])")
    p.add_argument("--every", type=_duration_arg, default=3600.0,
                   help="snapshot interval, aligned to UTC (default 1h; same as replay)")
    p.add_argument("--web-port", type=int, default=6066, help="metrics/API port on 127.0.0.1 "
                   "(default 6066; 0 = off)")
    p.add_argument("--web-host", help="bind address for the web port (default 127.0.0.1)")
    p.add_argument("--batch", type=int, default=5000, help="max messages per batch (default 5000)")
    p.add_argument("--batch-wait", type=float, default=0.05, help="max batch wait in s (default 0.05)")
    p.add_argument("--fetch-wait", type=_duration_arg, default=0.05,
                   help="longest a Kafka fetch waits for data (default 50ms; Faust's own is 1.5s)")
    p.add_argument("--fetch-max-bytes", type=int, default=16 << 20,
                   help="bytes per partition per fetch (default 16 MiB: several frames)")
    p.add_argument("--checkpoint-every", type=_duration_arg, default=30.0,
                   help="checkpoint each partition this often (default 30s)")
    p.add_argument("--session-timeout", type=float, default=10.0,
                   help="Kafka consumer session timeout in s (default 10)")
    p.add_argument("--datadir", default=os.environ.get("DEFACTO_DATADIR", "/tmp/defacto-worker"),
                   help="Faust data directory (default /tmp/defacto-worker)")
    p.add_argument("--gap-threshold", type=_gap_threshold_arg, default=0.10,
                   help="alert a region when its whole resident interval is more than this "
                        "fraction above or below the registry (default 0.10)")
    p.add_argument("--loglevel", default="warning", help="default warning")
    _add_engine_options(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("dashboard", help="serve the live dashboard for planners (reads Redis)",
                       description="A web page with the map of present population, the region "
                                   "table with registry gaps, a region's history, alerts and "
                                   "pipeline health, updated live from Redis.")
    p.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                   help="Redis URL (default $REDIS_URL or redis://127.0.0.1:6379/0)")
    p.add_argument("--prefix", default="defacto", help="Redis key prefix (default defacto)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("demo", help="the live pipeline on this machine (or --offline: replay)",
                       description="Live (default): embedded Kafka broker and Redis (unless "
                                   "$KAFKA_BOOTSTRAP / $REDIS_URL), one worker, the scenario "
                                   "streamed accelerated; prints each snapshot. --offline: "
                                   "simulate, calibrate on day 1, replay the rest, print "
                                   "estimated vs registered vs true per region.")
    p.add_argument("--offline", action="store_true", help="replay files instead of going live")
    p.add_argument("--speed", type=float, default=360.0,
                   help="live: simulated seconds per second (default 360: an hour in 10 s)")
    p.add_argument("--web-port", type=int, help="live: worker web port (default: a free port)")
    p.add_argument("--dashboard-port", type=int, help="live: dashboard port (default: a free port)")
    p.add_argument("--hold", action="store_true",
                   help="live: keep the dashboard and worker running after the stream ends")
    p.add_argument("--scenario", default="astana", help="scenario (default astana)")
    p.add_argument("--scale", type=float, default=0.01, help="fraction of real size (default 0.01)")
    p.add_argument("--days", type=float, default=3.0, help="days to simulate (default 3)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--out", default="demo-out", help="working directory (default demo-out)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``defacto`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.raw_argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"defacto: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("defacto: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
