"""``defacto demo``: the main job end to end on built-in defaults, live or offline.

Both start the same way: simulate a scenario, then calibrate on its first day against the
independent reference population (as an operator would on a reference period). Then:

- **live** (default): an embedded Tansu broker and Redis (unless ``$KAFKA_BOOTSTRAP`` /
  ``$REDIS_URL`` name real ones), one worker and the planners' dashboard as processes, and the
  simulation streamed into Kafka accelerated; each new snapshot is printed as a region table.
  With ``hold`` everything keeps running after the stream ends, until Ctrl-C.
- **offline**: replay all days (the state warms up on day 1), print the region table (estimated
  vs registered vs true) and the accuracy against the simulator's truth.

Each step is echoed as the ``defacto`` command that does the same, so the demo is also a worked
example of the commands a user runs on real data.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from estimators.accuracy import score
from estimators.units import DAY_MS, HOUR_MS, HOUR_S
from stream.cli.offline import (
    SIMULATE_LIMITS,
    SPEED,
    CalibrateConfig,
    ReplayConfig,
    SimulateConfig,
    add_simulation_options,
    run_calibrate,
    run_replay,
    run_simulate,
    warn_uncalibrated,
)
from stream.cli.signals import SignalledError, StopRequest, stopping_on_signals
from stream.contract import InputError
from stream.estimate.engine_options import Limit, check_limits
from stream.publish.redis_keys import RedisKeys
from stream.publish.table import region_table
from stream.sources.reference_files import ReferencePaths, load_truth
from stream.timefmt import iso_utc


def _say(text: str) -> None:
    print(f"defacto demo: {text}", file=sys.stderr, flush=True)


def _command(argv: list[str]) -> None:
    print(f"\n$ defacto {' '.join(argv)}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DemoFiles:
    """What the first two steps leave in the working directory."""

    sim_dir: Path
    calibration: Path
    calibration_end_ms: int

    @property
    def calibration_end(self) -> str:
        """The end of the calibration period, ISO 8601 UTC."""
        return iso_utc(self.calibration_end_ms)

    @property
    def reference(self) -> ReferencePaths:
        """The simulation's regions, cells and registry, with the fitted calibration."""
        return ReferencePaths(regions=self.sim_dir / "regions.geojson", cells=self.sim_dir / "cells.csv",
                              registry=self.sim_dir / "registry.csv", calibration=self.calibration)


def simulate_and_calibrate(out: Path, scenario: str, scale: float, days: float, seed: int
                           ) -> DemoFiles:
    """``defacto simulate`` into ``out/sim``, then ``defacto calibrate`` on its first day into
    ``out/calibration.csv``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot make the working directory ({exc.strerror or exc})") \
            from None
    sim_dir = out / "sim"
    _command(["simulate", scenario, "--scale", str(scale), "--days", str(days), "--seed",
              str(seed), "--out", str(sim_dir)])
    run_simulate(SimulateConfig(scenario, scale, days, seed, sim_dir))
    pings = sim_dir / "pings.jsonl"
    with open(pings, encoding="utf-8") as fh:
        first_ts = json.loads(fh.readline())["ts"]
    end_ms = first_ts - first_ts % DAY_MS + DAY_MS
    calibration = out / "calibration.csv"
    _command(["calibrate", str(pings), "--regions", str(sim_dir / "regions.geojson"),
              "--cells", str(sim_dir / "cells.csv"), "--reference", str(sim_dir / "reference.csv"),
              "--to", iso_utc(end_ms), "--out", str(calibration)])
    result = run_calibrate(CalibrateConfig(
        pings=(pings,), reference_population=sim_dir / "reference.csv", out=calibration,
        reference=ReferencePaths(regions=sim_dir / "regions.geojson", cells=sim_dir / "cells.csv"),
        end_ms=end_ms))
    print(f"defacto: {result.summary}", file=sys.stderr)
    print(f"defacto: {len(result.rows)} factor(s) fitted on {result.period} -> {calibration}",
          file=sys.stderr)
    return DemoFiles(sim_dir, calibration, end_ms)


def run_offline_demo(out: Path, scenario: str, scale: float, days: float, seed: int) -> int:
    """Simulate, calibrate on day 1, replay, print the table and the accuracy; the exit code."""
    if days < 2:
        raise InputError("the demo needs --days >= 2 (one to calibrate, one to replay)")
    files = simulate_and_calibrate(out, scenario, scale, days, seed)
    pings, snapshots, truth_path = files.sim_dir / "pings.jsonl", out / "snapshots.jsonl", \
        files.sim_dir / "truth.jsonl"
    ref = files.reference
    _command(["replay", str(pings), "--regions", str(ref.regions), "--cells", str(ref.cells),
              "--registry", str(ref.registry), "--calibration", str(ref.calibration),
              "--out", str(snapshots), "--table", "--truth", str(truth_path)])
    result = run_replay(ReplayConfig(pings=(pings,), reference=ref, out=snapshots))
    print(f"defacto: {result.summary}", file=sys.stderr)
    print(f"defacto: {result.snapshots} snapshot(s) over {result.period} -> {snapshots}",
          file=sys.stderr)
    warn_uncalibrated(result.uncalibrated)
    truth = load_truth(truth_path)
    last = result.last_snapshot
    if last is None:
        print("defacto: no snapshot: the input has no accepted pings", file=sys.stderr)
        return 1
    print(f"Snapshot at {last['at']} (horizon {last['horizon_s']} s, k = {last['k']})")
    print(region_table(last, truth.get(last["at"])))
    with open(snapshots, encoding="utf-8") as fh:
        snaps = [s for s in map(json.loads, fh) if s["at"] > files.calibration_end]
    try:
        acc = score(snaps, truth, min_true=50_000 * scale)
    except ValueError as exc:
        print(f"\naccuracy: {exc}")
    else:
        print("\naccuracy vs truth after the calibration day "
              f"(regions >= {50_000 * scale:,.0f} simulated people, i.e. "
              f"50 k at full scale): {acc.line()}")
    return 0


# ----------------------------------------------------------------------------------------------
# Live


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``defacto`` subcommand as a child process logging to ``log``; stopped on exit."""
    from stream.local.embedded import spawning

    proc = None
    try:
        with spawning(), open(log, "wb") as fh:  # a stop signal waits until it is registered
            proc = subprocess.Popen([sys.executable, "-m", "stream.cli", *argv], stdout=fh,
                                    stderr=subprocess.STDOUT)
        yield proc
    finally:
        _stop(proc)


def _serving(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Whether ``url`` answers 200 before ``timeout_s`` (False as soon as ``proc`` exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _show_latest(r: Any, keys: RedisKeys, shown: str | None, after: str = "",
                 truth: dict[str, dict[str, dict[str, int]]] | None = None) -> str | None:
    """Print the latest snapshot's table (with the simulation's true figures at its time, if
    ``truth`` has them) if it is new and later than ``after`` (ISO UTC); returns the latest
    ``at`` shown."""
    body = r.get(keys.snapshot)
    if not body:
        return shown
    snap = json.loads(body)
    if snap["at"] != shown and snap["at"] > after:
        print(f"\nSnapshot at {snap['at']} (published {snap.get('published_at', '?')})")
        print(region_table(snap, None if truth is None else truth.get(snap["at"])), flush=True)
    return str(snap["at"])


DEMO_LIMITS: dict[str, Limit] = {
    **SIMULATE_LIMITS,
    "speed": SPEED,
    "partitions": Limit("--partitions", "partitions of the demo topic", 1, 64, integer=True),
    "web_port": Limit("--web-port", "TCP port", 1, 65_535, integer=True),
    "dashboard_port": Limit("--dashboard-port", "TCP port", 1, 65_535, integer=True),
}
"""The range of the numeric :class:`LiveDemo` fields (``None`` ports: a free one)."""


@dataclass(frozen=True)
class LiveDemo:
    """The demo's settings (the offline demo uses ``out``, ``scenario``, ``scale``, ``days`` and
    ``seed``). Ranges: :data:`DEMO_LIMITS` (raises :class:`~stream.contract.InputError`)."""

    out: Path
    scenario: str = "astana"
    scale: float = 0.01
    days: float = 3.0
    seed: int = 1
    speed: float = 360.0
    partitions: int = 2
    web_port: int | None = None
    dashboard_port: int | None = None
    hold: bool = False

    def __post_init__(self) -> None:
        check_limits(self, DEMO_LIMITS)


def _worker_argv(demo: LiveDemo, files: DemoFiles, kafka: str, redis_url: str, topic: str,
                 keys: RedisKeys, key_file: Path, port: int) -> list[str]:
    ref = files.reference
    return ["worker", "--kafka", kafka, "--redis", redis_url, "--topic", topic, "--group", topic,
            "--prefix", keys.prefix, "--dead-letter-topic", f"{topic}.dead", "--web-port", str(port),
            "--regions", str(ref.regions), "--cells", str(ref.cells), "--registry", str(ref.registry),
            "--calibration", str(ref.calibration), "--key-file", str(key_file),
            "--datadir", str(demo.out / "worker-data"), "--loglevel", "info"]


def _key_file(out: Path) -> Path:
    key = out / "pseudonym.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
    return key


def _stream_and_show(demo: LiveDemo, files: DemoFiles, kafka: str, topic: str, redis_url: str,
                     keys: RedisKeys, worker: subprocess.Popen[bytes], log: Path,
                     request: StopRequest) -> int:
    """Stream the simulation, print each new snapshot; the exit code (1 if the worker died).

    The calibration day goes first at full speed (the worker is primed with the day it was
    calibrated on, as a real deployment starts from a checkpoint or a replayed day); snapshots
    are printed from its end on, so the first one shown already rests on a day of observation.
    """
    import redis

    from stream.simulator import simulate
    from stream.sources.kafka_producer import PingProducer
    from stream.sources.simulation import stream_simulation

    sim = simulate(demo.scenario, scale=demo.scale, days=demo.days, seed=demo.seed)
    producer = PingProducer(kafka, topic, "frame")
    r = redis.Redis.from_url(redis_url)
    shown = None
    truth = load_truth(files.sim_dir / "truth.jsonl")
    primed = files.calibration_end
    _say(f"priming the worker with the calibration day (to {primed}) at full speed")
    try:
        for now_ms in stream_simulation(producer, sim, demo.speed,
                                        fast_until_ms=files.calibration_end_ms):
            request.go_on()
            if worker.poll() is not None:
                _say(f"worker exited with {worker.returncode}; see {log}")
                return 1
            if now_ms > files.calibration_end_ms:
                shown = _show_latest(r, keys, shown, after=primed, truth=truth)
        producer.flush(30)
        deadline = time.monotonic() + 60
        last = iso_utc((producer.stats.max_ts_ms or 0) // HOUR_MS * HOUR_MS + HOUR_MS)
        while time.monotonic() < deadline and shown != last and worker.poll() is None:
            request.go_on()
            shown = _show_latest(r, keys, shown, after=primed, truth=truth)
            time.sleep(0.5)
        return 0
    finally:
        producer.close(5)  # before the broker goes away


def run_live_demo(demo: LiveDemo) -> int:
    """Run the live demo until the simulation ends (or, with ``hold``, until Ctrl-C, SIGTERM or
    SIGHUP: :func:`~stream.cli.signals.stopping_on_signals`; 130 then)."""
    files = simulate_and_calibrate(demo.out, demo.scenario, demo.scale, demo.days, demo.seed)
    key_file = _key_file(demo.out)
    with stopping_on_signals() as request:
        try:
            return _run_live(demo, files, key_file, request)
        except (KeyboardInterrupt, SignalledError):
            _say("interrupted; stopping")
            return 130


def _run_live(demo: LiveDemo, files: DemoFiles, key_file: Path, request: StopRequest) -> int:
    """:func:`run_live_demo` once the files are made: servers, worker, dashboard, stream."""
    from stream.local.embedded import create_topic, free_port, kafka_service, redis_service

    with ExitStack() as stack:
        kafka = stack.enter_context(kafka_service())
        request.go_on()
        store = stack.enter_context(redis_service())
        request.go_on()
        _say(f"Kafka {kafka.url} ({'embedded Tansu' if kafka.started else 'external'}), "
             f"Redis {store.url} ({'embedded' if store.started else 'external'})")
        topic = f"pings-demo-{secrets.token_hex(3)}"
        keys = RedisKeys(f"defacto-demo:{topic}")
        create_topic(kafka.url, topic, demo.partitions)
        port = demo.web_port or free_port()
        log = demo.out / "worker.log"
        worker = stack.enter_context(_process(
            _worker_argv(demo, files, kafka.url, store.url, topic, keys, key_file, port), log))
        request.go_on()
        _say(f"worker started (log {log})")
        _say(f"metrics  http://127.0.0.1:{port}/metrics")
        _say(f"regions  http://127.0.0.1:{port}/api/regions   cells http://127.0.0.1:{port}/api/cells?res=7")
        _say(f"health   http://127.0.0.1:{port}/healthz      Redis keys {keys.prefix}:*")
        dash_port = demo.dashboard_port or free_port()
        dash_log = demo.out / "dashboard.log"
        dashboard = stack.enter_context(_process(
            ["dashboard", "--redis", store.url, "--prefix", keys.prefix, "--port", str(dash_port)],
            dash_log))
        request.go_on()
        if _serving(f"http://127.0.0.1:{dash_port}/healthz", dashboard, 15):
            _say(f"DASHBOARD http://127.0.0.1:{dash_port}/   (log {dash_log})")
        else:
            _say(f"the dashboard did not start (see {dash_log}); going on without it")
        _say(f"streaming {demo.scenario} at {demo.speed:g}x (one simulated hour every "
             f"{HOUR_S / demo.speed:.0f} s); Ctrl-C stops")
        rc = _stream_and_show(demo, files, kafka.url, topic, store.url, keys, worker, log,
                              request)
        if rc or not demo.hold:
            if not rc:
                _say("simulation finished; stopping (--hold keeps the dashboard up)")
            return rc
        _say(f"simulation finished; the dashboard stays at http://127.0.0.1:{dash_port}/ "
             "until Ctrl-C")
        while worker.poll() is None:
            request.go_on()
            time.sleep(1)
        _say(f"worker exited with {worker.returncode}; see {log}")
        return 1


def cmd_demo(args: argparse.Namespace) -> int:
    """``defacto demo``: the live pipeline on this machine, or ``--offline`` a replay."""
    demo = LiveDemo(Path(args.out), args.scenario, args.scale, args.days, args.seed, args.speed,
                    partitions=args.partitions, web_port=args.web_port,
                    dashboard_port=args.dashboard_port, hold=args.hold)
    if args.offline:
        return run_offline_demo(demo.out, demo.scenario, demo.scale, demo.days, demo.seed)
    return run_live_demo(demo)


def add_demo_parser(sub: Any) -> None:
    """``defacto demo``."""
    p = sub.add_parser("demo", help="the live pipeline on this machine (or --offline: replay)",
                       description="Live (default): embedded Kafka broker and Redis (unless "
                                   "$KAFKA_BOOTSTRAP / $REDIS_URL), one worker, the scenario "
                                   "streamed accelerated; prints each snapshot. --offline: "
                                   "simulate, calibrate on day 1, replay every day, print "
                                   "estimated vs registered vs true per region and the "
                                   "accuracy after day 1.")
    p.add_argument("--offline", action="store_true", help="replay files instead of going live")
    p.add_argument("--speed", type=SPEED.arg, default=LiveDemo.speed,
                   help="live: simulated seconds per second (default 360: an hour in 10 s)")
    p.add_argument("--partitions", type=DEMO_LIMITS["partitions"].arg, default=LiveDemo.partitions,
                   help=f"live: partitions of the demo topic, all read by its one worker "
                        f"(default {LiveDemo.partitions})")
    p.add_argument("--web-port", type=DEMO_LIMITS["web_port"].arg,
                   help="live: worker web port (default: a free port)")
    p.add_argument("--dashboard-port", type=DEMO_LIMITS["dashboard_port"].arg,
                   help="live: dashboard port (default: a free port)")
    p.add_argument("--hold", action="store_true",
                   help="live: keep the dashboard and worker running after the stream ends")
    p.add_argument("--scenario", default="astana", help="scenario (default astana)")
    add_simulation_options(p)
    p.add_argument("--out", default="demo-out", help="working directory (default demo-out)")
    p.set_defaults(func=cmd_demo)
