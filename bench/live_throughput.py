"""Live pipeline speed through a real broker and ONE worker (a benchmark: prints figures, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/live_throughput.py [--quick]

Everything runs on 127.0.0.1: an embedded Tansu broker (memory storage), an isolated Redis (or
``--redis URL`` with a unique key prefix per stage) and ``python -m stream.cli worker`` as a
subprocess. Pings come from the scenario simulator (astana). Stages (``--stages``):

``frames``
    Pre-load a topic with N pings in batch frames (20 k pings each) and a final watermark, then
    start the worker and time it from the first consumed ping to the last (``/metrics``,
    ``defacto_pings_consumed_total``), so the consumer-group join is excluded.
``json``
    The same with one JSON ping per message.
``latency``
    Produce live at half the measured frame rate with event time = produce wall time, a watermark
    control message to every partition every ~100 ms, a worker with a short ``--every``. Each
    ping's delay is the publish wall time of the first snapshot that includes it (``at_ms`` = the
    first window end after its ``ts``; ``P:snapshots`` stream) minus its produce wall time; a
    window of length W adds up to W by construction, so the delay from the window end
    (``published_at - at_ms``) is reported too.
``naive``
    ``bench/naive_faust.py``, a textbook Faust agent (``async for`` + a Table update per event,
    with its changelog) on the same JSON messages, timed from its first to its last event.
``quix``, ``quix-mem``
    ``bench/live_peers.py quix``: a Quix Streams application doing the job on the same JSON
    messages (region-hour distinct devices in its RocksDB state, restart-safe like defacto;
    ``quix-mem``: in a Python set), timed from its first to its last message.
``raw``
    ``bench/live_peers.py raw``: the ceiling of a Python consumer (``consume(5000)`` + orjson +
    a set update per batch; no validation, windows, state or commits), timed likewise.
``scale``
    JSON, one ping per message, on 2 and 4 partitions with 1, 2 and 4 worker processes
    (``--scale-workers``, ``--scale-partitions``): all workers start together on a pre-loaded
    topic; the rate is summed over the workers' ``/metrics`` from the moment every worker has
    consumed pings (the group has settled) to the last ping.

JSON contenders (json, quix, raw, naive) read the same messages in one run, one after the other,
and the ratios between them are printed: on a shared machine, ratios from one run are the
figures to trust.

The frames stage runs ``--repeat`` times (default 3) and reports the median and the range. Every
load loop is bounded in count and wall time.

Diagnostics:

``--profile DIR``
    Record the worker with py-spy (``pip install py-spy``) during the timed part of the frames,
    json and latency stages and print the hottest functions. ``--profile-native`` adds C frames
    (``py-spy --native``: it pauses the worker per sample, so rates drop; ``PY_SPY`` names the
    py-spy binary when it is not on the path).
``--worker-arg=--fetch-wait=1500ms``
    Any ``defacto worker`` option, e.g. Faust's own 1.5 s fetch wait, which stalls the pings
    partition behind Faust's empty assignor topic (the worker's default is 50 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from estimators.units import HOUR_MS, SECOND_MS
from stream.decode.frame import encode_frame
from stream.decode.messages import encode_control, encode_json
from stream.local.embedded import Service, create_topic, free_port, start_broker, start_redis
from stream.publish.redis_keys import RedisKeys
from stream.simulator import Simulation, load_scenario, simulate
from stream.sources.kafka_producer import device_partition
from stream.sources.simulation import simulation_columns
from stream.timefmt import parse_duration_ms, parse_iso_ms

ROOT = Path(__file__).resolve().parents[1]
CT_FRAME = b"application/x-defacto-frame"
CT_JSON = b"application/json"
KEY = "live-bench-key-0123456789abcdef"
CONSUMED = re.compile(r'^defacto_pings_consumed_total\{outcome="(\w+)"\} (\S+)$', re.M)


def log(msg: str) -> None:
    """Progress line on stderr with a wall-clock stamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Input: simulated pings and the worker's engine files


@dataclass
class Inputs:
    """Simulated pings as frame columns (time ordered by hour) and the engine files for the worker."""

    sim: Simulation
    cols: dict[str, np.ndarray]
    engine_args: list[str]

    @property
    def n(self) -> int:
        """Number of pings available."""
        return len(self.cols["ts"])


def load_inputs(scale: float, n_pings: int, seed: int, workdir: Path) -> Inputs:
    """Simulate astana at ``scale`` until ``n_pings`` pings; write cells/regions/registry/key files."""
    t0 = time.perf_counter()
    days = 30.0  # an upper bound: hours are generated lazily until n_pings are reached
    sim = simulate(load_scenario("astana"), scale=scale, days=days, seed=seed)
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    for chunk in sim.hours():
        cols = simulation_columns(sim, chunk)
        order = np.argsort(cols["ts"], kind="stable")
        parts.append({k: v[order] for k, v in cols.items()})
        have += len(chunk)
        if have >= n_pings:
            break
    cols = {k: np.concatenate([p[k] for p in parts])[:n_pings] for k in parts[0]}
    log(f"simulated astana scale {scale}: {sim.n_devices:,} devices, {len(cols['ts']):,} pings over "
        f"{len(parts)} h in {time.perf_counter() - t0:.1f} s")
    plan = sim.cell_plan
    cells = workdir / "cells.csv"
    rows = [f"{sim.operators[o]},{c},{a:.6f},{b:.6f}" for o, c, a, b in zip(
        plan["operator"].tolist(), plan["cell"].tolist(), plan["lat"].tolist(), plan["lon"].tolist(),
        strict=True)]
    cells.write_text("operator,cell,lat,lon\n" + "\n".join(rows) + "\n")
    regions = workdir / "regions.geojson"
    regions.write_text(json.dumps(sim.regions_geojson))
    registry = workdir / "registry.csv"
    registry.write_text("region,registered\n" + "".join(f"{k},{v}\n" for k, v in sim.registry.items()))
    key = workdir / "key"
    key.write_text(KEY + "\n")
    return Inputs(sim, cols, ["--regions", str(regions), "--cells", str(cells),
                              "--registry", str(registry), "--key-file", str(key)])


def take(cols: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    """Rows ``lo:hi`` of every column."""
    return {k: v[lo:hi] for k, v in cols.items()}


def by_partition(cols: dict[str, np.ndarray], partitions: int) -> list[np.ndarray]:
    """Row indices of each partition (the producer's rule: FNV-1a of the device pseudonym)."""
    if partitions == 1:
        return [np.arange(len(cols["ts"]))]
    part = device_partition(cols["device"], partitions)
    return [np.flatnonzero(part == p) for p in range(partitions)]


def frame_messages(cols: dict[str, np.ndarray], partitions: int, rows: int) -> list[tuple[int, bytes]]:
    """(partition, frame) pairs of ``rows`` pings each, in time order within each partition."""
    out: list[tuple[int, bytes]] = []
    for p, idx in enumerate(by_partition(cols, partitions)):
        for lo in range(0, len(idx), rows):
            pick = idx[lo:lo + rows]
            out.append((p, encode_frame({k: v[pick] for k, v in cols.items()})))
    return out


def _pings(cols: dict[str, np.ndarray]) -> Any:
    """Each row of frame columns as a ping dict, the ``defacto simulate`` JSON layout."""
    for d, ts, op, mcc, c, lat, lon in zip(
            cols["device"].tolist(), cols["ts"].tolist(), cols["operator"].tolist(),
            cols["home_mcc"].tolist(), cols["cell"].tolist(), cols["lat"].tolist(),
            cols["lon"].tolist(), strict=True):
        ping: dict[str, Any] = {"device": d.decode(), "ts": ts, "operator": op.decode(),
                                "home_mcc": None if mcc < 0 else mcc}
        if c:
            ping["cell"] = c.decode()
        else:
            ping["lat"], ping["lon"] = lat, lon
        yield ping


def json_messages(cols: dict[str, np.ndarray], partitions: int) -> list[tuple[int, bytes]]:
    """(partition, JSON ping) pairs, one ping per message, the ``defacto simulate`` JSON layout."""
    part = (np.zeros(len(cols["ts"]), dtype=np.int64) if partitions == 1
            else device_partition(cols["device"], partitions))
    out: list[tuple[int, bytes]] = []
    for i, (ping, p) in enumerate(zip(_pings(cols), part.tolist(), strict=True)):
        out.append((p, encode_json(ping)))
        if i and i % 250_000 == 0:
            log(f"  encoded {i:,} JSON pings")
    return out


# ------------------------------------------------------------------------------------------------
# Kafka


def make_producer(bootstrap: str) -> Producer:
    """A confluent-kafka producer tuned like ``stream.sources.kafka_producer.PingProducer``."""
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                     "queue.buffering.max.messages": 1_000_000, "message.max.bytes": 10_000_000,
                     "compression.type": "none", "enable.idempotence": False})


@dataclass
class Delivery:
    """Delivery reports of a producer."""

    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def __call__(self, err: Any, _msg: Any) -> None:
        """confluent-kafka ``on_delivery`` callback."""
        if err is None:
            self.ok += 1
        else:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(str(err))


def send(producer: Producer, topic: str, value: bytes, partition: int, content_type: bytes,
         report: Delivery, deadline: float) -> None:
    """Produce one message, waiting (bounded) for queue space."""
    while True:
        try:
            producer.produce(topic, value=value, partition=partition,
                             headers=[("content-type", content_type)], on_delivery=report)
            return
        except BufferError:
            if time.monotonic() > deadline:
                raise TimeoutError("producer queue stayed full past the deadline") from None
            producer.poll(0.05)


def preload(bootstrap: str, topic: str, messages: list[tuple[int, bytes]], content_type: bytes,
            final_ts: int, partitions: int, limit_s: float) -> float:
    """Send every message, then a final watermark to each partition; returns the send rate (msg/s)."""
    producer = make_producer(bootstrap)
    report = Delivery()
    t0 = time.monotonic()
    deadline = t0 + limit_s
    for i, (p, value) in enumerate(messages):
        send(producer, topic, value, p, content_type, report, deadline)
        if i % 1000 == 0:
            producer.poll(0)
        if i and i % 200_000 == 0:
            log(f"  produced {i:,}/{len(messages):,} messages")
    for p in range(partitions):
        send(producer, topic, encode_control(final_ts, final=True), p, CT_JSON, report, deadline)
    left = producer.flush(max(1.0, deadline - time.monotonic()))
    took = time.monotonic() - t0
    if left or report.failed:
        raise RuntimeError(f"preload: {left} undelivered, {report.failed} failed: {report.errors}")
    return len(messages) / took


# ------------------------------------------------------------------------------------------------
# The worker under test


class Worker:
    """``python -m stream.cli worker`` as a subprocess, with its log, /metrics and Redis keys."""

    def __init__(self, name: str, bootstrap: str, redis_url: str, topic: str, partitions: int,
                 workdir: Path, engine_args: list[str], extra: list[str],
                 environ: dict[str, str] | None = None) -> None:
        self.name = name
        self.prefix = f"bench:{name}"
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.redis = redis.Redis.from_url(redis_url)
        argv = [sys.executable, "-m", "stream.cli", "worker", "--kafka", bootstrap, "--redis", redis_url,
                "--topic", topic, "--partitions", str(partitions), "--group", self.prefix,
                "--prefix", self.prefix, "--dead-letter-topic", f"{topic}.dead",
                "--web-port", str(self.port), "--datadir", str(workdir / f"{name}-data"),
                *engine_args, *extra]
        with open(self.log_path, "wb") as fh:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **(environ or {})})
        log(f"worker {name} started (pid {self.proc.pid}, metrics http://127.0.0.1:{self.port}/metrics)")

    def alive(self) -> None:
        """Raise with the log tail if the worker has exited."""
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{tail}")

    def _metrics_text(self) -> str | None:
        """The worker's /metrics page, or None while it does not answer."""
        self.alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            return None

    def consumed(self) -> Counter[str] | None:
        """``defacto_pings_consumed_total`` by outcome, or None while /metrics does not answer."""
        text = self._metrics_text()
        if text is None:
            return None
        return Counter({k: int(float(v)) for k, v in CONSUMED.findall(text)})

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled sample of /metrics (e.g. a histogram's ``_sum``), or None."""
        text = self._metrics_text()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M) if text else None
        return float(found.group(1)) if found else None

    def published_until(self) -> int | None:
        """``P:published_until`` (end of the last published window, ms)."""
        v = self.redis.get(RedisKeys(self.prefix).published_until)
        return int(v) if v is not None else None

    def snapshots(self) -> list[tuple[int, float]]:
        """(at_ms, published_at unix s) of every snapshot announced on ``P:snapshots``."""
        out = []
        for _id, f in self.redis.xrange(RedisKeys(self.prefix).snapshots):
            out.append((int(f[b"at_ms"]), parse_iso_ms(f[b"published_at"].decode()) / SECOND_MS))
        return out

    def stop(self) -> None:
        """SIGTERM, wait (bounded), then SIGKILL; drop this worker's Redis keys."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        with contextlib.suppress(redis.RedisError):
            keys = list(self.redis.scan_iter(f"{self.prefix}:*"))
            if keys:
                self.redis.delete(*keys)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)  # polling interval, not synchronization: the deadline bounds the wait


class Profiler:
    """py-spy recording a process until stopped (raw collapsed stacks), or nothing."""

    def __init__(self, pid: int, out: Path | None, rate: int = 200, native: bool = False) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        spy = os.environ.get("PY_SPY") or shutil.which("py-spy") \
            or str(Path(sys.executable).with_name("py-spy"))
        if out is None:
            return
        if not Path(spy).exists():
            log("py-spy not found (pip install py-spy): not profiling")
            self.out = None
            return
        self.proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", str(rate),
                                      "--format", "raw", *(["--native"] if native else ["--nonblocking"]),
                                      "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """Stop recording (SIGINT makes py-spy write its output) and print a summary."""
        proc, self.proc = self.proc, None  # idempotent
        if proc is None or self.out is None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if self.out.exists():
            summarize_profile(self.out)


def summarize_profile(path: Path, top: int = 25) -> None:
    """Print the functions with the most samples on the stack (inclusive) and on top (self)."""
    incl: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [re.sub(r" \((.*/)?([^/]+):\d+\)$", r" (\2)", f) for f in stack.split(";")]
        count = int(n)
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return
    print(f"\nprofile {path} ({total} samples)\n  inclusive:")
    for f, c in incl.most_common(top):
        print(f"  {100 * c / total:5.1f} %  {f}")
    print("  self:")
    for f, c in own.most_common(top):
        print(f"  {100 * c / total:5.1f} %  {f}")


# ------------------------------------------------------------------------------------------------
# Stages


@dataclass
class Env:
    """Shared services and settings of one benchmark run."""

    bootstrap: str
    redis_url: str
    workdir: Path
    inputs: Inputs
    partitions: int
    profile_dir: Path | None
    profile_native: bool
    timeout_s: float
    worker_extra: list[str]
    worker_env: dict[str, str]


def _name(stage: str) -> str:
    return f"{stage}-{uuid.uuid4().hex[:8]}"


def throughput(env: Env, stage: str, messages: list[tuple[int, bytes]], content_type: bytes,
               n_pings: int, final_ts: int) -> dict[str, Any]:
    """Pre-load ``messages``, start a worker, time it from the first consumed ping to the last."""
    name = _name(stage)
    topic = f"pings-{name}"
    create_topic(env.bootstrap, topic, env.partitions)
    log(f"{stage}: pre-loading {len(messages):,} messages ({n_pings:,} pings) into {topic}")
    send_rate = preload(env.bootstrap, topic, messages, content_type, final_ts, env.partitions,
                        env.timeout_s)
    log(f"{stage}: produced at {send_rate:,.0f} msg/s")
    w = Worker(name, env.bootstrap, env.redis_url, topic, env.partitions, env.workdir,
               env.inputs.engine_args, ["--every", "1h", *env.worker_extra], env.worker_env)
    prof: Profiler | None = None
    try:
        t_start = time.monotonic()
        first = wait_for("the first consumed ping", lambda: _first(w), env.timeout_s, 0.02)
        t_first, c_first = first
        log(f"{stage}: first pings consumed {t_first - t_start:.1f} s after start (group join)")
        cpu_first = cpu_s(w.proc.pid)
        prof = Profiler(w.proc.pid, env.profile_dir / f"{stage}.txt" if env.profile_dir else None,
                        native=env.profile_native)
        deadline = t_first + env.timeout_s
        last_log = t_first
        while True:
            c = w.consumed() or Counter()
            now = time.monotonic()
            done = sum(c.values())
            if done >= n_pings:
                break
            if now > deadline:
                raise TimeoutError(f"{stage}: only {done:,}/{n_pings:,} pings consumed in "
                                   f"{env.timeout_s:.0f} s")
            if now - last_log >= 2:
                log(f"{stage}: {done:,}/{n_pings:,} pings, {(done - c_first) / (now - t_first):,.0f}/s")
                last_log = now
            time.sleep(0.05)  # polling interval (each poll costs the worker ~1 ms of /metrics)
        t_done = now
        cpu = cpu_s(w.proc.pid) - cpu_first
        if prof is not None:
            prof.stop()
            prof = None
        last_boundary = (final_ts // HOUR_MS + 1) * HOUR_MS
        wait_for("the last snapshot", lambda: (w.published_until() or 0) >= last_boundary, 60)
        t_pub = time.monotonic()
        rate = (n_pings - c_first) / (t_done - t_first)
        snaps = w.redis.xlen(RedisKeys(w.prefix).snapshots)
        log(f"{stage}: {rate:,.0f} pings/s ({dict(c)}); last snapshot {t_pub - t_done:.2f} s after "
            f"the last ping; {snaps} snapshots")
        return {"pings": n_pings, "messages": len(messages), "pings_per_s": rate,
                "msgs_per_s": rate * len(messages) / n_pings, "outcomes": dict(c),
                "cpu_s": cpu, "msgs_per_cpu_s": (n_pings - c_first) * len(messages) / n_pings / cpu,
                "seconds": t_done - t_first, "first_counted": c_first, "join_s": t_first - t_start,
                "last_snapshot_after_s": t_pub - t_done, "snapshots": snaps,
                "produce_msgs_per_s": send_rate}
    finally:
        if prof is not None:
            prof.stop()
        w.stop()


def _first(w: Worker) -> tuple[float, int] | None:
    c = w.consumed()
    n = sum(c.values()) if c else 0
    return (time.monotonic(), n) if n > 0 else None


def json_parts(cols: dict[str, np.ndarray]) -> tuple[list[bytes], list[bytes]]:
    """Each ping's JSON message split around its ``ts`` value (``head + ts + tail``), so a live
    producer stamps the produce time without encoding a whole message per ping."""
    heads, tails = [], []
    for msg in (encode_json(p) for p in _pings(cols)):
        head, rest = msg.split(b'"ts":', 1)
        heads.append(head + b'"ts":')
        tails.append(rest[rest.index(b","):])
    return heads, tails


def hold_devices(env: Env, producer: Producer, topic: str, w: Worker, n: int,
                 report: Delivery) -> int:
    """Make the worker hold ``n`` more devices: pool pings renamed ``held-<i>``, stamped now, in
    frames; waits (bounded) until the worker has accepted them. Returns the pings sent."""
    if n <= 0:
        return 0
    src = env.inputs.cols
    t0 = time.monotonic()
    for lo in range(0, n, 20_000):
        k = min(20_000, n - lo)
        rows = np.arange(lo, lo + k) % len(src["ts"])
        cols = {key: v[rows] for key, v in src.items()}
        cols["device"] = np.char.add(b"held-", np.arange(lo, lo + k).astype("S8"))
        cols["ts"] = np.full(k, int(time.time() * 1000), dtype=np.int64)
        for p, idx in enumerate(by_partition(cols, env.partitions)):
            if len(idx):
                send(producer, topic, encode_frame({key: v[idx] for key, v in cols.items()}), p,
                     CT_FRAME, report, time.monotonic() + 10)
        producer.poll(0)
    producer.flush(30)
    wait_for(f"{n:,} held devices accepted",
             lambda: (w.consumed() or Counter())["accepted"] >= n, env.timeout_s, 0.5)
    log(f"latency: the worker holds {n:,} more devices ({time.monotonic() - t0:.1f} s)")
    return n


def latency(env: Env, rate: float, every: str, duration_s: float, frame_rows: int,
            control_every_s: float = 0.1, content: str = "frames", hold: int = 0
            ) -> dict[str, Any]:
    """Live pings at ``rate``/s with ts = produce time; per-ping delay until a snapshot includes it.

    ``content``: batch frames of ``frame_rows`` pings, or ``json``: one JSON ping per message
    (``frame_rows`` of them per tick). ``hold``: devices the worker is made to hold first
    (:func:`hold_devices`), so each window's tally and snapshot cover that many."""
    name = _name("latency")
    topic = f"pings-{name}"
    create_topic(env.bootstrap, topic, env.partitions)
    w = Worker(name, env.bootstrap, env.redis_url, topic, env.partitions, env.workdir,
               env.inputs.engine_args, ["--every", every, "--lateness", "1ms", *env.worker_extra],
               env.worker_env)
    every_ms = parse_duration_ms(every)
    src = env.inputs.cols
    n_src = len(src["ts"])
    producer = make_producer(env.bootstrap)
    report = Delivery()
    sent: list[tuple[int, int, float]] = []  # (ts_ms, pings, produce wall time s) per frame
    prof: Profiler | None = None
    pos = 0
    used = 0  # pool rows sent so far (the pool repeats once exhausted)

    if content == "json":
        log(f"latency: encoding {n_src:,} JSON pings")
        heads, tails = json_parts(src)
        part = by_partition(src, env.partitions)
        partition_of = np.zeros(n_src, dtype=np.int64)
        for p, idx in enumerate(part):
            partition_of[idx] = p
        partition_list = partition_of.tolist()

    def frame(n: int) -> None:
        nonlocal pos, used
        if pos + n > n_src:
            pos = 0
        used = max(used, pos + n)
        now = time.time()
        ts_ms = int(now * 1000)
        if content == "json":
            stamp = str(ts_ms).encode()
            deadline = time.monotonic() + 10
            for i in range(pos, pos + n):
                send(producer, topic, heads[i] + stamp + tails[i], partition_list[i], CT_JSON, report,
                     deadline)
            pos += n
            producer.poll(0)
            sent.append((ts_ms, n, now))
            return
        cols = take(src, pos, pos + n)
        cols["ts"] = np.full(n, ts_ms, dtype=np.int64)
        pos += n
        for p, idx in enumerate(by_partition(cols, env.partitions)):
            if len(idx):
                send(producer, topic, encode_frame({k: v[idx] for k, v in cols.items()}), p,
                     CT_FRAME, report, time.monotonic() + 10)
        producer.poll(0)
        sent.append((ts_ms, n, now))

    def control() -> None:
        ts_ms = int(time.time() * 1000)
        for p in range(env.partitions):
            send(producer, topic, encode_control(ts_ms), p, CT_JSON, report, time.monotonic() + 10)
        producer.poll(0)

    try:
        log(f"latency: warming up (group join) on {topic}, --every {every}")
        held = hold_devices(env, producer, topic, w, hold, report)
        frame(1000)
        warm, warm_until = sent[0][1] + held, (sent[0][0] // every_ms + 1) * every_ms
        deadline = time.monotonic() + env.timeout_s
        while not ((w.consumed() or Counter())["accepted"] >= warm
                   and (w.published_until() or 0) >= warm_until):
            if time.monotonic() > deadline:
                raise TimeoutError("latency: the warm-up frame was not published in time")
            control()  # watermarks flow from the start, so no backlog of windows builds up
            producer.poll(control_every_s)
        sent.clear()
        prof = Profiler(w.proc.pid, env.profile_dir / "latency.txt" if env.profile_dir else None,
                        native=env.profile_native)
        log(f"latency: producing {rate:,.0f} pings/s in frames of {frame_rows:,} for {duration_s:.0f} s")
        t0 = time.monotonic()
        interval = frame_rows / rate
        i = 0
        next_control = t0
        end = t0 + duration_s
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_control:
                control()
                next_control += control_every_s
            due = t0 + i * interval
            if now >= due:
                frame(frame_rows)
                i += 1
                if now - due > 1.0:
                    log("latency: producer is more than 1 s behind schedule")
            producer.poll(max(0.0, min(due, next_control, end) - time.monotonic()))
        prof.stop()
        produced = sum(n for _, n, _ in sent)
        last_boundary = (sent[-1][0] // every_ms + 1) * every_ms
        log(f"latency: produced {produced:,} pings in {len(sent):,} frames; waiting for the "
            f"snapshot at {last_boundary}")
        deadline = time.monotonic() + 60
        while (w.published_until() or 0) < last_boundary:  # keep the watermark moving
            if time.monotonic() > deadline:
                raise TimeoutError("latency: the last window was not published within 60 s")
            control()
            producer.poll(control_every_s)
        if producer.flush(10) or report.failed:
            raise RuntimeError(f"latency: delivery failed: {report.errors}")
        c = wait_for("every ping consumed", lambda: _all_counted(w, produced + warm), 30)
        snaps = dict(w.snapshots())
        at = np.array([(ts // every_ms + 1) * every_ms for ts, _, _ in sent], dtype=np.int64)
        missing = sorted({int(a) for a in at} - set(snaps))
        if missing:
            raise RuntimeError(f"latency: {len(missing)} windows never announced, e.g. {missing[:3]}")
        pub = np.array([snaps[int(a)] for a in at])
        weights = np.array([n for _, n, _ in sent])
        delay = pub - np.array([t for _, _, t in sent])
        window = sorted(snaps.items())
        first_at = int(at.min())
        from_end = np.array([p - a / 1000 for a, p in window if first_at <= a <= last_boundary])
        rounds = w.metric("defacto_publish_duration_seconds_count") or 0.0
        publish_s = (w.metric("defacto_publish_duration_seconds_sum") or 0.0) / max(rounds, 1.0)
        devices = len(np.unique(src["device"][:used])) + held
        out = {"rate": rate, "every": every, "duration_s": duration_s, "pings": produced,
               "devices": devices, "content": content, "held": held,
               "publish_mean_s": publish_s, "publish_rounds": int(rounds),
               "frames": len(sent), "frame_rows": frame_rows, "outcomes": dict(c),
               "delay_p50_s": _wpct(delay, weights, 50), "delay_p99_s": _wpct(delay, weights, 99),
               "delay_max_s": float(delay.max()),
               "from_window_end_p50_s": float(np.percentile(from_end, 50)),
               "from_window_end_p99_s": float(np.percentile(from_end, 99)),
               "from_window_end_max_s": float(from_end.max()), "windows": len(from_end),
               "from_window_end_s": [round(float(x), 3) for x in from_end]}
        log(f"latency: delay p50 {out['delay_p50_s']:.3f} s, p99 {out['delay_p99_s']:.3f} s; from window "
            f"end p50 {out['from_window_end_p50_s']:.3f} s, p99 {out['from_window_end_p99_s']:.3f} s "
            f"({len(from_end)} windows, {devices:,} devices)")
        return out
    finally:
        if prof is not None:
            prof.stop()
        w.stop()


def _all_counted(w: Worker, n: int) -> Counter[str] | None:
    c = w.consumed()
    return c if c and sum(c.values()) >= n else None


def _wpct(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Weighted percentile (each value repeated ``weights`` times; lower interpolation)."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    k = int(np.searchsorted(cum, q / 100 * cum[-1]))
    return float(values[order][min(k, len(values) - 1)])


def changelog_records(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in a topic (sum of high watermarks; -1 if the topic does not exist)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        if topic not in c.list_topics(topic, timeout=10).topics:
            return -1
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(partitions))
    except KafkaException:
        return -1
    finally:
        c.close()


def naive(env: Env, messages: list[tuple[int, bytes]], n: int, limit_s: float) -> dict[str, Any]:
    """Run ``bench/naive_faust.py`` over the first ``n`` JSON messages; events/s first to last."""
    name = _name("naive")
    topic = f"pings-{name}"
    create_topic(env.bootstrap, topic, env.partitions)
    log(f"naive: pre-loading {n:,} JSON messages into {topic}")
    preload(env.bootstrap, topic, messages[:n], CT_JSON, 0, 0, env.timeout_s)
    report = env.workdir / f"{name}.json"
    log_path = env.workdir / f"{name}.log"
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "NAIVE_BROKER": env.bootstrap,
               "NAIVE_TOPIC": topic, "NAIVE_GROUP": name, "NAIVE_EXPECT": str(n),
               "NAIVE_REPORT": str(report), "NAIVE_PARTITIONS": str(env.partitions),
               "NAIVE_DATADIR": str(env.workdir / f"{name}-data")}
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "naive_faust.py"), "worker",
                                 "--without-web", "-l", "warn"], cwd=ROOT, env=environ,
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log(f"naive: Faust agent started (pid {proc.pid})")

    def state() -> dict[str, Any] | None:
        text = log_path.read_text(errors="replace")
        if proc.poll() is not None or "Traceback" in text:  # a crashed agent leaves the worker up
            raise RuntimeError(f"naive agent failed (exit code {proc.poll()}):\n{text[-3000:]}")
        try:
            return json.loads(report.read_text())
        except (OSError, ValueError):
            return None

    try:
        t_start = time.monotonic()
        wait_for("the naive agent's first events", state, env.timeout_s, 0.05)
        log(f"naive: first events {time.monotonic() - t_start:.1f} s after start (group join)")
        deadline = time.monotonic() + limit_s
        last_log = time.monotonic()
        while True:
            s = state() or {"count": 0}
            if s["count"] >= n or time.monotonic() > deadline:
                break
            if time.monotonic() - last_log >= 5:
                log(f"naive: {s['count']:,}/{n:,} events")
                last_log = time.monotonic()
            time.sleep(0.1)  # polling interval
        s = state() or {"count": 0, "t_first": 0.0, "t_last": 0.0}
        rate = (s["count"] - 1) / max(s["t_last"] - s["t_first"], 1e-9)
        log(f"naive: {s['count']:,} events at {rate:,.0f}/s"
            + ("" if s["count"] >= n else f" (stopped at the {limit_s:.0f} s limit)"))
        changelog = changelog_records(env.bootstrap, f"{name}-last_seen-changelog", env.partitions)
        log(f"naive: its table changelog holds {changelog:,} records")
        return {"events": s["count"], "msgs_per_s": rate, "complete": s["count"] >= n,
                "changelog_records": changelog}
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def peer(env: Env, kind: str, messages: list[tuple[int, bytes]], n: int, limit_s: float) -> dict[str, Any]:
    """Run ``bench/live_peers.py kind`` over the first ``n`` JSON messages; msg/s first to last."""
    name = _name(kind)
    topic = f"pings-{name}"
    create_topic(env.bootstrap, topic, env.partitions)
    log(f"{kind}: pre-loading {n:,} JSON messages into {topic}")
    preload(env.bootstrap, topic, messages[:n], CT_JSON, 0, 0, env.timeout_s)
    report = env.workdir / f"{name}.json"
    log_path = env.workdir / f"{name}.log"
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "PEER_BROKER": env.bootstrap,
               "PEER_TOPIC": topic, "PEER_GROUP": name, "PEER_EXPECT": str(n),
               "PEER_REPORT": str(report), "PEER_LIMIT_S": str(limit_s),
               "PEER_CELLS": env.inputs.engine_args[env.inputs.engine_args.index("--cells") + 1],
               "PEER_STATE_DIR": str(env.workdir / f"{name}-state")}
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "live_peers.py"), kind],
                                cwd=ROOT, env=environ, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    log(f"{kind}: started (pid {proc.pid})")

    def state(final: bool = False) -> dict[str, Any] | None:
        if proc.poll() not in (None, 0) or (proc.poll() == 0 and not report.exists()):
            text = log_path.read_text(errors="replace")
            raise RuntimeError(f"{kind} peer failed (exit code {proc.poll()}):\n{text[-3000:]}")
        try:
            return json.loads(report.read_text())
        except (OSError, ValueError):
            return None

    try:
        t_start = time.monotonic()
        first = wait_for(f"the {kind} peer's first messages", state, env.timeout_s, 0.01)
        cpu_first = cpu_s(proc.pid)
        log(f"{kind}: first messages {time.monotonic() - t_start:.1f} s after start (group join)")
        deadline = time.monotonic() + limit_s + 10
        cpu_end = None
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu_end = usage.ru_utime + usage.ru_stime
                break
            time.sleep(0.1)  # polling interval; the peer stops by itself at n or its limit
        s = state() or {"count": 0, "t_first": 0.0, "t_last": 0.0, "keys": 0}
        cpu = (cpu_end - cpu_first) if cpu_end is not None else float("nan")
        rate = (s["count"] - 1) / max(s["t_last"] - s["t_first"], 1e-9)
        log(f"{kind}: {s['count']:,} messages at {rate:,.0f}/s, {s['keys']:,} region-hour-devices"
            + ("" if s["count"] >= n else f" (stopped at the {limit_s:.0f} s limit)"))
        return {"messages": s["count"], "msgs_per_s": rate, "complete": s["count"] >= n,
                "keys": s["keys"], "seconds": s["t_last"] - s["t_first"], "cpu_s": cpu,
                "msgs_per_cpu_s": (s["count"] - first["count"]) / cpu}
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def scale(env: Env, cols: dict[str, np.ndarray], n: int, partitions: int, workers: int,
          content: str, frame_rows: int) -> dict[str, Any]:
    """``workers`` worker processes on a pre-loaded topic of ``partitions`` partitions; pings/s
    summed over the workers from when all of them consume to the last ping."""
    name = _name(f"scale{partitions}p{workers}w")
    topic = f"pings-{name}"
    create_topic(env.bootstrap, topic, partitions)
    msgs = json_messages(cols, partitions) if content == "json" else \
        frame_messages(cols, partitions, frame_rows)
    preload(env.bootstrap, topic, msgs, CT_JSON if content == "json" else CT_FRAME,
            int(cols["ts"].max()), partitions, env.timeout_s)
    del msgs
    group = f"bench:{name}"
    ws = [Worker(f"{name}-{i}", env.bootstrap, env.redis_url, topic, partitions, env.workdir,
                 env.inputs.engine_args, ["--every", "1h", "--group", group, "--prefix", group,
                                          *env.worker_extra], env.worker_env)
          for i in range(workers)]
    try:
        def counts() -> list[int]:
            return [sum((w.consumed() or Counter()).values()) for w in ws]

        deadline = time.monotonic() + env.timeout_s
        while True:
            c = counts()
            if all(c) or sum(c) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.02)  # polling interval
        t0, c0 = time.monotonic(), sum(c)
        while sum(c) < n and time.monotonic() < deadline:
            time.sleep(0.05)  # polling interval
            c = counts()
        t1 = time.monotonic()
        rate = (sum(c) - c0) / max(t1 - t0, 1e-9)
        log(f"scale: {content}, {partitions} partitions, {workers} worker(s): {rate:,.0f} pings/s "
            f"({sum(c) - c0:,} pings after all joined, {c0:,} before; per worker {c})")
        return {"content": content, "partitions": partitions, "workers": workers,
                "pings_per_s": rate, "timed_pings": sum(c) - c0, "before_all_joined": c0,
                "complete": sum(c) >= n}
    finally:
        for w in ws:
            w.stop()


# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--quick`` shrinks every stage)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    p.add_argument("--stages", default="frames,json,quix,quix-mem,raw,naive,latency",
                   help="comma-separated subset of frames,json,quix,quix-mem,raw,naive,latency,scale")
    p.add_argument("--pings", type=int,
                   help="pings for the frame stage, also the latency stage's device pool (default 3 M; "
                        "quick 1 M)")
    p.add_argument("--json-pings", type=int, help="pings for the JSON stage (default 500 k; quick 100 k)")
    p.add_argument("--naive-msgs", type=int, help="messages for the naive agent (default 100 k; quick 20 k)")
    p.add_argument("--naive-limit", type=float, default=120.0, help="naive agent time limit, s")
    p.add_argument("--peer-msgs", type=int,
                   help="messages for the quix and raw peers (default: --json-pings)")
    p.add_argument("--peer-limit", type=float, default=180.0, help="peer time limit, s")
    p.add_argument("--scale-pings", type=int, help="pings per scale run (default 1 M; quick 300 k)")
    p.add_argument("--scale-partitions", default="2,4", help="partition counts of the scale stage")
    p.add_argument("--scale-workers", default="1,2,4", help="worker counts of the scale stage")
    p.add_argument("--scale-content", default="json", choices=("json", "frames"),
                   help="what the scale stage sends (default json)")
    p.add_argument("--scale", type=float, help="astana simulation scale (default 0.1; quick 0.04)")
    p.add_argument("--frame-rows", type=int, default=20_000, help="pings per frame (default 20000)")
    p.add_argument("--partitions", type=int, default=1, help="topic partitions (one worker; default 1)")
    p.add_argument("--latency-every", default="500ms",
                   help="worker --every in the latency stage (default 500ms)")
    p.add_argument("--latency-s", type=float, help="latency run length (default 25 s; quick 10 s)")
    p.add_argument("--latency-rate", type=float,
                   help="pings/s in the latency stage (default: half the measured frame rate)")
    p.add_argument("--latency-frame-rows", type=int, help="pings per live frame (default --frame-rows)")
    p.add_argument("--latency-content", default="frames", choices=("frames", "json"),
                   help="live pings as batch frames or one JSON ping per message (default frames; "
                        "json: the default rate is half the JSON stage's, 2,000 messages per tick)")
    p.add_argument("--latency-hold", type=int, default=0,
                   help="devices the worker holds before the latency run (e.g. 1000000)")
    p.add_argument("--redis", help="use this Redis (unique key prefixes) instead of a fresh one")
    p.add_argument("--timeout", type=float, default=300.0, help="bound of each wait, s (default 300)")
    p.add_argument("--worker-arg", action="append", default=[],
                   help="extra `defacto worker` option (repeat; e.g. --worker-arg=--batch=20000)")
    p.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment variable for the worker (repeat; e.g. a Faust setting "
                        "such as CONSUMER_MAX_FETCH_SIZE=16777216)")
    p.add_argument("--repeat", type=int, help="runs of the frames stage (default 3; quick 1)")
    p.add_argument("--profile", help="record the worker with py-spy into this directory")
    p.add_argument("--profile-native", action="store_true",
                   help="py-spy --native (C frames too; pauses the worker while sampling)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    q = args.quick
    args.pings = args.pings or (1_000_000 if q else 3_000_000)
    args.json_pings = args.json_pings or (100_000 if q else 500_000)
    args.naive_msgs = args.naive_msgs or (20_000 if q else 100_000)
    args.peer_msgs = args.peer_msgs or args.json_pings
    args.scale_pings = args.scale_pings or (300_000 if q else 1_000_000)
    args.scale = args.scale or (0.04 if q else 0.1)
    args.latency_s = args.latency_s or (10.0 if q else 25.0)
    args.repeat = args.repeat or (1 if q else 3)
    return args


def code_version() -> str:
    """The commit measured, plus any uncommitted change under stream/ or estimators/."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = [line for line in git("status", "--porcelain", "--", "stream", "estimators").splitlines()
             if line.strip()]
    return (git("rev-parse", "--short", "HEAD").strip() or "unknown") + (
        f" + uncommitted {', '.join(d[3:] for d in dirty)}" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    """Run the stages and print the figures."""
    args = parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="defacto-live-bench-"))
    services: list[Service] = []
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items()}, "code": code_version(),
                               "loadavg_at_start": os.getloadavg()[0]}
    try:
        kafka = start_broker()
        services.append(kafka)
        if args.redis:
            redis_url = args.redis
        else:
            rsvc = start_redis()
            services.append(rsvc)
            redis_url = rsvc.url
        log(f"broker {kafka.url}, Redis {redis_url}, work dir {workdir}")
        need = max(args.pings if {"frames", "latency"} & set(stages) else 0,
                   args.json_pings if {"json", "naive"} & set(stages) else 0,
                   args.naive_msgs if "naive" in stages else 0,
                   args.peer_msgs if {"quix", "quix-mem", "raw"} & set(stages) else 0,
                   args.scale_pings if "scale" in stages else 0, 200_000)
        inputs = load_inputs(args.scale, need, args.seed, workdir)
        profile_dir = Path(args.profile) if args.profile else None
        if profile_dir:
            profile_dir.mkdir(parents=True, exist_ok=True)
        env = Env(kafka.url, redis_url, workdir, inputs, args.partitions, profile_dir,
                  args.profile_native, args.timeout,
                  args.worker_arg, dict(kv.split("=", 1) for kv in args.worker_env))
        cols = inputs.cols
        if "frames" in stages:
            sub = take(cols, 0, args.pings)
            msgs = frame_messages(sub, args.partitions, args.frame_rows)
            runs = [throughput(env, "frames", msgs, CT_FRAME, args.pings, int(sub["ts"].max()))
                    for _ in range(args.repeat)]
            rates = sorted(r["pings_per_s"] for r in runs)
            results["frames"] = {**sorted(runs, key=lambda r: r["pings_per_s"])[len(runs) // 2],
                                 "runs_pings_per_s": [r["pings_per_s"] for r in runs],
                                 "min_pings_per_s": rates[0], "max_pings_per_s": rates[-1]}
            del msgs
        json_msgs: list[tuple[int, bytes]] = []
        if {"json", "naive", "quix", "quix-mem", "raw"} & set(stages):
            n = max(args.json_pings if "json" in stages else 0, args.naive_msgs if "naive" in stages else 0,
                    args.peer_msgs if {"quix", "quix-mem", "raw"} & set(stages) else 0)
            log(f"encoding {n:,} JSON pings")
            json_msgs = json_messages(take(cols, 0, n), args.partitions)
        if "json" in stages:
            sub = take(cols, 0, args.json_pings)
            results["json"] = throughput(env, "json", json_msgs[:args.json_pings], CT_JSON,
                                         args.json_pings, int(sub["ts"].max()))
        if "latency" in stages:
            if args.latency_content == "json":
                rate = args.latency_rate or (results["json"]["pings_per_s"] / 2 if "json" in results
                                             else 75_000.0)
                rows = args.latency_frame_rows or 2_000
            else:
                rate = args.latency_rate or (results["frames"]["pings_per_s"] / 2
                                             if "frames" in results else 250_000.0)
                rows = args.latency_frame_rows or args.frame_rows
            results["latency"] = latency(env, rate, args.latency_every, args.latency_s, rows,
                                         content=args.latency_content, hold=args.latency_hold)
        for kind in ("quix", "quix-mem", "raw"):
            if kind in stages:
                results[kind] = peer(env, kind, json_msgs, args.peer_msgs, args.peer_limit)
        if "naive" in stages:
            results["naive"] = naive(env, json_msgs, args.naive_msgs, args.naive_limit)
        del json_msgs
        if "scale" in stages:
            sub = take(cols, 0, args.scale_pings)
            runs = []
            for parts in (int(x) for x in args.scale_partitions.split(",")):
                for workers in (int(x) for x in args.scale_workers.split(",")):
                    if workers <= parts:
                        runs.append(scale(env, sub, args.scale_pings, parts, workers,
                                          args.scale_content, args.frame_rows))
            results["scale"] = runs
    finally:
        for svc in reversed(services):
            svc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    return 0


def report(r: dict[str, Any]) -> None:
    """Print the figures and the goals."""
    a = r["args"]
    extra = " ".join(a["worker_arg"] + a["worker_env"])
    options = f"; worker options {extra}" if extra else ""
    print(f"\nLive pipeline (one worker, {a['partitions']} partition(s), Tansu broker, Redis; machine: "
          f"{os.cpu_count()} cores, load {r['loadavg_at_start']:.1f} at start{options}; code {r['code']})")
    goals: list[tuple[str, bool]] = []
    if "frames" in r:
        f = r["frames"]
        runs = f["runs_pings_per_s"]
        spread = f" (median of {len(runs)} runs, {f['min_pings_per_s']:,.0f}..{f['max_pings_per_s']:,.0f})" \
            if len(runs) > 1 else f" over {f['seconds']:.2f} s"
        print(f"  frames : {f['pings']:>10,} pings in {f['messages']:,} messages: {f['pings_per_s']:>12,.0f} "
              f"pings/s{spread}")
        goals.append((">= 1.5 M pings/s with frames", f["pings_per_s"] >= 1_500_000))
    if "json" in r:
        j = r["json"]
        print(f"  json   : {j['pings']:>10,} pings, one per message:   {j['pings_per_s']:>12,.0f} "
              f"pings/s over {j['seconds']:.2f} s; {j['msgs_per_cpu_s']:,.0f} msg per worker CPU-s")
        goals.append((">= 150 k msg/s with per-message JSON", j["pings_per_s"] >= 150_000))
    if "latency" in r:
        lat = r["latency"]
        print(f"  latency: {lat['rate']:,.0f} pings/s ({lat.get('content', 'frames')}) for "
              f"{lat['duration_s']:.0f} s ({lat['devices']:,} devices held), --every {lat['every']}: "
              f"ping -> snapshot p50 {lat['delay_p50_s']:.3f} s, p99 {lat['delay_p99_s']:.3f} s "
              f"(max {lat['delay_max_s']:.3f}); window end -> publish p50 "
              f"{lat['from_window_end_p50_s']:.3f} s, p99 {lat['from_window_end_p99_s']:.3f} s; "
              f"a publishing round took {lat.get('publish_mean_s', 0):.3f} s on average "
              f"({lat.get('publish_rounds', 0)} rounds)")
        goals.append(("p99 delay <= 2 s", lat["delay_p99_s"] <= 2.0))
    if "json" in r:
        for k, label in (("quix", "Quix Streams app (dataframe + update, RocksDB state)"),
                         ("quix-mem", "Quix Streams app (dataframe + update, a Python set)"),
                         ("raw", "raw consume(5000) + orjson + set (no validation/state)")):
            if k in r:
                pr = r[k]
                ratio = r["json"]["msgs_per_s"] / pr["msgs_per_s"]
                cpu_ratio = r["json"]["msgs_per_cpu_s"] / pr["msgs_per_cpu_s"]
                print(f"  {k:<7}: {label}: {pr['messages']:,} msgs at {pr['msgs_per_s']:,.0f} msg/s, "
                      f"{pr['msgs_per_cpu_s']:,.0f} msg per CPU-s; defacto json / {k}: {ratio:,.2f}x "
                      f"(per CPU-s {cpu_ratio:,.2f}x)")
                if k == "quix":
                    goals.append((">= 3x the Quix Streams peer (json)", ratio >= 3))
    if "scale" in r:
        base: dict[int, float] = {}
        for run in r["scale"]:
            if run["workers"] == 1:
                base[run["partitions"]] = run["pings_per_s"]
            one = base.get(run["partitions"])
            vs = f" ({run['pings_per_s'] / one:.2f}x one worker)" if one else ""
            print(f"  scale  : {run['content']}, {run['partitions']} partitions, {run['workers']} "
                  f"worker(s): {run['pings_per_s']:>10,.0f} pings/s{vs}")
    if "naive" in r:
        nv = r["naive"]
        print(f"  naive Faust agent (async for + Table update per event): {nv['events']:,} events at "
              f"{nv['msgs_per_s']:,.0f} msg/s; its changelog got {nv['changelog_records']:,} records")
        for k in ("json", "frames"):
            if k in r:
                ratio = r[k]["pings_per_s"] / nv["msgs_per_s"]
                print(f"    {k} worker / naive agent: {ratio:,.1f}x")
                goals.append((f">= 50x the naive agent ({k})", ratio >= 50))
    for text, ok in goals:
        print(f"  goal {text}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
