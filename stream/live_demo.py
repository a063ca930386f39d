"""``defacto demo``: the live pipeline on one laptop, no infrastructure installed.

Starts an embedded Tansu broker and an embedded Redis (unless ``$KAFKA_BOOTSTRAP`` /
``$REDIS_URL`` name real ones), simulates the ``astana`` scenario, calibrates on its first day
(offline, as an operator would on a reference period), starts one worker and streams the
simulation into Kafka accelerated, and serves the planners' dashboard (``defacto dashboard``).
Each new snapshot is printed as a region table; the dashboard, the metrics and the API are on
127.0.0.1. With ``hold`` it keeps everything running after the stream ends, until Ctrl-C.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

from stream.embedded import Service, create_topic, free_port, kafka_service, redis_service
from stream.produce import PingProducer, stream_simulation
from stream.snapshot import iso_utc, region_table


def _say(text: str) -> None:
    print(f"defacto demo: {text}", file=sys.stderr, flush=True)


def run_live_demo(out: Path, scenario: str, scale: float, days: float, seed: int, speed: float,
                  partitions: int = 2, web_port: int | None = None,
                  dashboard_port: int | None = None, hold: bool = False) -> int:
    """Run the live demo until the simulation ends (or, with ``hold``, until Ctrl-C)."""
    from stream.demo import simulate_and_calibrate
    from stream.simulator import simulate

    rc, sim_dir, _ = simulate_and_calibrate(out, scenario, scale, days, seed)
    if rc:
        return rc
    calibration = out / "calibration.csv"
    key = out / "pseudonym.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)

    services: list[Service] = []
    worker: subprocess.Popen[bytes] | None = None
    dashboard: subprocess.Popen[bytes] | None = None
    producer: PingProducer | None = None
    try:
        kafka = kafka_service()
        services.append(kafka)
        store = redis_service()
        services.append(store)
        _say(f"Kafka {kafka.url} ({'embedded Tansu' if kafka.started else 'external'}), "
             f"Redis {store.url} ({'embedded' if store.started else 'external'})")
        topic = f"pings-demo-{secrets.token_hex(3)}"
        prefix = f"defacto-demo:{topic}"
        create_topic(kafka.url, topic, partitions)
        port = web_port or free_port()
        log = out / "worker.log"
        cmd = [sys.executable, "-m", "stream.cli", "worker", "--kafka", kafka.url,
               "--redis", store.url, "--topic", topic, "--group", topic, "--prefix", prefix,
               "--dead-letter-topic", f"{topic}.dead", "--web-port", str(port),
               "--regions", str(sim_dir / "regions.geojson"), "--cells", str(sim_dir / "cells.csv"),
               "--registry", str(sim_dir / "registry.csv"), "--calibration", str(calibration),
               "--key-file", str(key), "--datadir", str(out / "worker-data"), "--loglevel", "info"]
        with open(log, "wb") as fh:
            worker = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _say(f"worker started (log {log})")
        _say(f"metrics  http://127.0.0.1:{port}/metrics")
        _say(f"regions  http://127.0.0.1:{port}/api/regions   cells http://127.0.0.1:{port}/api/cells?res=7")
        _say(f"health   http://127.0.0.1:{port}/healthz      Redis keys {prefix}:*")
        dash_port = dashboard_port or free_port()
        dash_log = out / "dashboard.log"
        with open(dash_log, "wb") as fh:
            dashboard = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "dashboard", "--redis", store.url,
                 "--prefix", prefix, "--port", str(dash_port)], stdout=fh, stderr=subprocess.STDOUT)
        if _serving(f"http://127.0.0.1:{dash_port}/healthz", dashboard, 15):
            _say(f"DASHBOARD http://127.0.0.1:{dash_port}/   (log {dash_log})")
        else:
            _say(f"the dashboard did not start (see {dash_log}); going on without it")
        _say(f"streaming {scenario} at {speed:g}x (one simulated hour every {3600 / speed:.0f} s); "
             "Ctrl-C stops")
        sim = simulate(scenario, scale=scale, days=days, seed=seed)
        producer = PingProducer(kafka.url, topic, "frame")
        r = redis.Redis.from_url(store.url)
        shown = None
        for _ in stream_simulation(producer, sim, speed):
            if worker.poll() is not None:
                _say(f"worker exited with {worker.returncode}; see {log}")
                return 1
            shown = _show_latest(r, prefix, shown)
        producer.flush(30)
        deadline = time.monotonic() + 60
        last = iso_utc((producer.stats.max_ts_ms or 0) // 3_600_000 * 3_600_000 + 3_600_000)
        while time.monotonic() < deadline and shown != last and worker.poll() is None:
            shown = _show_latest(r, prefix, shown)
            time.sleep(0.5)
        if hold:
            _say(f"simulation finished; the dashboard stays at http://127.0.0.1:{dash_port}/ "
                 "until Ctrl-C")
            while worker.poll() is None:
                time.sleep(1)
            _say(f"worker exited with {worker.returncode}; see {log}")
            return 1
        _say("simulation finished; stopping (--hold keeps the dashboard up)")
        return 0
    except KeyboardInterrupt:
        _say("interrupted; stopping")
        return 130
    finally:
        if producer is not None:
            producer.flush(5)
            del producer  # close the Kafka client before the broker goes away
        for proc in (dashboard, worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for svc in reversed(services):
            svc.stop()


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


def _show_latest(r: redis.Redis, prefix: str, shown: str | None) -> str | None:
    body = r.get(f"{prefix}:snapshot")
    if not body:
        return shown
    snap = json.loads(body)
    if snap["at"] != shown:
        print(f"\nSnapshot at {snap['at']} (published {snap.get('published_at', '?')})")
        print(region_table(snap), flush=True)
    return str(snap["at"])
