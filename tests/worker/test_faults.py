"""Faults that used to give wrong figures without a word (issue 12; ``fault-cases`` 01, 02, 06,
07), each run live: real Tansu broker, real Redis, real worker processes. Each ends in the
replay's figures or in a loud, specific stop (an error line, a metric, ``/healthz`` 503).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from livekit import FIGURES, Workers, engine_args, latest_is, published_history, wait_for

from estimators.units import HOUR_MS
from stream.cli import main
from stream.local.embedded import Service, create_topic, free_port, start_broker, start_redis
from stream.sources.kafka_producer import device_partition
from stream.timefmt import parse_iso_ms

pytestmark = pytest.mark.integration  # real broker, Redis and worker processes


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "sim"
    assert main(["simulate", "astana", "--scale", "0.002", "--days", "1.1", "--seed", "3",
                 "--out", str(out)]) == 0
    (out / "key").write_text("live-test-key-0123456789abcdef\n")
    (out / "key2").write_text("another-key-0123456789abcdef-2\n")
    doc = json.loads((out / "regions.geojson").read_text())
    doc["features"].reverse()  # identical ids, names and outlines, another order
    (out / "regions_reversed.geojson").write_text(json.dumps(doc))
    return out


@pytest.fixture(scope="module")
def expected(sim: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("faults-replay") / "replay.jsonl"
    assert main(["replay", str(sim / "pings.jsonl"), "--out", str(out), *engine_args(sim)]) == 0
    snaps = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(snaps) == 26
    return snaps


def _workers(tmp: Path, kafka: str, redis_url: str, sim: Path) -> Workers:
    name = f"t{uuid.uuid4().hex[:10]}"
    return Workers(tmp, kafka, redis_url, f"pings-{name}", f"defacto-test:{name}", engine_args(sim))


def _cleanup(w: Workers) -> None:
    w.stop_all()
    r = redis.Redis.from_url(w.redis_url)
    keys = list(r.scan_iter(f"{w.prefix}:*"))
    if keys:
        r.delete(*keys)


def _produce(w: Workers, path: Path, *extra: str) -> None:
    assert main(["produce", str(path), "--kafka", w.broker, "--topic", w.topic, "--quiet",
                 *extra]) == 0


def _split(sim: Path, tmp: Path) -> tuple[Path, Path, list[str]]:
    lines = (sim / "pings.jsonl").read_text().splitlines(keepends=True)
    first, second = tmp / "first.jsonl", tmp / "second.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2:]))
    return first, second, lines[len(lines) // 2:]


def _assert_published_equal_replay(r: redis.Redis, prefix: str,
                                   expected: list[dict[str, Any]]) -> list[str]:
    """Every snapshot in the history is the replay's snapshot of that time; returns their times."""
    by_at = {s["at"]: s for s in expected}
    history = published_history(r, prefix)
    for got in history:
        want = by_at[got["at"]]["regions"]
        assert got["regions"] == {rid: {k: fig[k] for k in FIGURES} for rid, fig in want.items()}, \
            got["at"]
    return [h["at"] for h in history]


def _metrics(port: int) -> str:
    """The worker's /metrics page ("" while its web server is not up yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return resp.read().decode()
    except urllib.error.URLError:
        return ""


def _metric(port: int, series: str) -> float:
    for line in _metrics(port).splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def _stopped(port: int) -> dict[str, str]:
    """Partition → reason of every ``defacto_partition_stopped`` series at 1."""
    pat = re.compile(r'defacto_partition_stopped\{partition="(\d+)",reason="(\w+)"\} 1\.0')
    return {m[1]: m[2] for m in pat.finditer(_metrics(port))}


def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _refused(sim: Path, w: Workers, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Start a worker in this process with ``extra`` options; it must refuse at once (exit 2)
    with one line on stderr, which is returned."""
    capsys.readouterr()
    code = main(["worker", "--kafka", w.broker, "--redis", w.redis_url, "--topic", w.topic,
                 "--prefix", w.prefix, "--group", w.prefix, "--web-port", "0",
                 *engine_args(sim), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("defacto: error: ")]
    assert len(lines) == 1, err
    return lines[0]


# --- 01: Redis loses its data while a worker runs -------------------------------------------

@pytest.mark.parametrize("mode", ["flushdb", "restart", "two-workers", "flushkill"])
def test_redis_losing_its_data_ends_in_the_replays_figures(
        mode: str, broker: Service, sim: Path, expected: list[dict[str, Any]],
        tmp_path: Path) -> None:
    """Partition 0 runs 8+ windows ahead of partition 1 (their tallies wait in Redis), then Redis
    loses everything: FLUSHDB (one worker, or two holding a partition each), a restart without
    persistence, or FLUSHDB with a kill -9 of the worker. The workers notice on their next write
    and rewrite what they hold (a restarted one rebuilds from offset 0); every snapshot
    published after the loss is the replay's, and none is published from half the tallies."""
    store = start_redis()
    w = _workers(tmp_path, broker.url, store.url, sim)
    try:
        first, _, second = _split(sim, tmp_path)
        part = device_partition(np.array([json.loads(x)["device"] for x in second]), 2)
        ahead, behind = tmp_path / "p0.jsonl", tmp_path / "p1.jsonl"
        ahead.write_text("".join(x for x, p in zip(second, part, strict=True) if p == 0))
        behind.write_text("".join(x for x, p in zip(second, part, strict=True) if p == 1))
        create_topic(w.broker, w.topic, 2)
        ports = [free_port(), free_port()]
        procs = [w.start("w", web_port=ports[0])]
        if mode == "two-workers":
            procs.append(w.start("w2", web_port=ports[1]))
        live_ports = ports[:len(procs)]
        r = redis.Redis.from_url(store.url)
        _produce(w, first, "--no-final")
        wait_for("snapshots of the first half", lambda: len(published_history(r, w.prefix)) >= 5, 90,
                 tuple(procs))
        _produce(w, ahead, "--no-final")

        def lead_ms() -> int:
            closed = {int(k): int(v) for k, v in r.hgetall(f"{w.prefix}:closed").items()}
            return closed.get(0, 0) - closed.get(1, 0)

        wait_for("partition 0 eight windows ahead", lambda: lead_ms() >= 8 * HOUR_MS, 90,
                 tuple(procs))
        before = int(r.get(f"{w.prefix}:published_until"))
        if mode == "restart":
            redis_port = int(store.url.rsplit(":", 1)[1].split("/")[0])
            store.stop()
            store = start_redis(port=redis_port)
            r = redis.Redis.from_url(store.url)
        else:
            r.flushdb()
        if mode == "flushkill":
            procs[0].kill()
            procs[0].wait()
            procs, live_ports = [w.start("w-restarted", web_port=ports[1])], ports[1:]
        else:
            wait_for("the workers noticing the loss", lambda: all(
                _metric(p, "defacto_redis_data_lost_total") >= 1 for p in live_ports), 60,
                tuple(procs))
        wait_for("the outlines rewritten", lambda: r.exists(f"{w.prefix}:geometry"), 30,
                 tuple(procs))
        _produce(w, behind)
        last = expected[-1]["at"]
        wait_for("the last snapshot", lambda: latest_is(r, w.prefix, last), 120,
                 tuple(procs))

        published = _assert_published_equal_replay(r, w.prefix, expected)
        after = [s["at"] for s in expected if parse_iso_ms(s["at"]) > before]
        assert len(after) >= 9 and set(after) <= set(published)
        if mode == "flushkill":  # rebuilt from offset 0: the lost history is published again
            assert published == [s["at"] for s in expected]
        latest = json.loads(r.get(f"{w.prefix}:snapshot"))
        assert latest["regions"] == expected[-1]["regions"]
        assert latest["cells"] == expected[-1]["cells"]
        wait_for("both checkpoints rewritten", lambda: r.exists(f"{w.prefix}:checkpoint:0")
                 and r.exists(f"{w.prefix}:checkpoint:1"), 30, tuple(procs))
        if mode != "flushkill":
            logs = "".join(Path(p.log).read_text() for p in procs)  # type: ignore[attr-defined]
            assert re.search(r"ERROR\] Redis lost defacto's data: \S+:deployment is gone or was "
                             r"rewritten.*Rewriting what this worker holds: partition\(s\) "
                             r"(0, 1|0|1) with their checkpoints", logs)
        assert all(_healthz(p)[0] == 200 for p in live_ports)
    finally:
        _cleanup(w)
        store.stop()


def test_a_redis_that_may_evict_keys_is_refused_at_start(
        sim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``maxmemory 3mb`` with ``volatile-lru`` (several managed services' default) evicted the
    tallies (the only keys with a TTL): refused before the worker starts."""
    store = start_redis()
    try:
        r = redis.Redis.from_url(store.url)
        r.config_set("maxmemory", "3mb")
        r.config_set("maxmemory-policy", "volatile-lru")
        w = _workers(tmp_path, "127.0.0.1:1", store.url, sim)  # no broker needed to refuse
        line = _refused(sim, w, capsys, "--partitions", "2")
        assert line == (f"defacto: error: Redis {store.url}: Redis may evict defacto's keys "
                        "(maxmemory-policy volatile-lru, maxmemory 3145728 bytes): an evicted "
                        "tally or checkpoint would make figures wrong without an error; set "
                        "maxmemory-policy noeviction (and persistence, appendonly yes)")
        assert r.dbsize() == 0
    finally:
        store.stop()


def test_a_worker_whose_redis_never_answers_still_stops_at_once(
        sim: Path, tmp_path: Path, broker: Service) -> None:
    """A mistyped ``--redis``: the worker waits for Redis before it takes a partition
    (resuming without its checkpoint would be wrong), and used to ignore SIGTERM while it
    waited. Now it stops within seconds, saying why nothing was taken."""
    w = _workers(tmp_path, broker.url, f"redis://127.0.0.1:{free_port()}/0", sim)
    create_topic(broker.url, w.topic, 2)
    port = free_port()
    p = w.start("a", web_port=port)
    try:
        log = Path(p.log)  # type: ignore[attr-defined]
        wait_for("the worker to wait for Redis", lambda: "Redis unavailable" in log.read_text(),
                 90, (p,))
        # readiness says so (liveness does not: a restart would not bring Redis back)
        status, body = _healthz(port)
        assert (status, body["status"], body["redis"]) == (503, "degraded", False)
        assert body["detail"].startswith("Redis does not answer")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=10) as resp:
            assert resp.status == 200
        asked = time.monotonic()
        p.terminate()
        p.wait(timeout=60)
        took = time.monotonic() - asked
        text = log.read_text()
        assert took < 20, f"{took:.0f} s to stop:\n{text[-2000:]}"
        assert "stopping while waiting for Redis" in text
        assert "Redis is back" not in text  # nothing answered: no call may say otherwise
        assert "Traceback" not in text
    finally:
        w.stop_all()


def test_a_redis_that_stops_answering_is_never_said_to_be_back(
        sim: Path, tmp_path: Path, broker: Service) -> None:
    """Redis gone under a running worker: readiness says degraded, and the periodic checkpoint
    (whose first step needs no command once joined) must not log "Redis is back" between the
    failures, as it did."""
    store = start_redis()
    w = _workers(tmp_path, broker.url, store.url, sim)
    port = free_port()
    try:
        create_topic(broker.url, w.topic, 1)
        p = w.start("a", web_port=port)
        first, _, _ = _split(sim, tmp_path)
        _produce(w, first, "--no-final")
        r = redis.Redis.from_url(store.url)
        wait_for("a checkpoint", lambda: r.exists(f"{w.prefix}:checkpoint:0"), 90, (p,))
        store.stop()
        wait_for("four failed Redis calls (8 s of retries)",
                 lambda: _metric(port, "defacto_redis_errors_total") >= 4, 90, (p,))
        status, body = _healthz(port)
        assert (status, body["status"], body["redis"]) == (503, "degraded", False)
        text = Path(p.log).read_text()  # type: ignore[attr-defined]
        assert "Redis unavailable" in text
        assert "Redis is back" not in text
    finally:
        w.stop_all()  # its keys went with the private Redis
        store.stop()


def test_a_broker_that_stops_answering_makes_the_worker_unready(
        sim: Path, tmp_path: Path, redis_url: str) -> None:
    """The worker retries on its own; readiness says it is degraded until the broker answers."""
    own = start_broker()
    w = _workers(tmp_path, own.url, redis_url, sim)
    port = free_port()
    try:
        create_topic(own.url, w.topic, 1)
        p = w.start("a", web_port=port)
        seen = _readiness_until_ok(port, p, 90)
        # the web port opens before the group's first assignment: "starting" until then
        assert (503, "starting") in seen and set(seen[:-1]) <= {(503, "starting")}, seen
        assert seen[-1] == (200, "ok"), seen
        own.stop()
        wait_for("readiness to say the broker is gone", lambda: _healthz_or_none(port) == 503,
                 90, (p,))
        status, body = _healthz(port)
        assert (status, body["status"], body["broker"], body["redis"]) == (
            503, "degraded", False, True)
        assert body["detail"].startswith("the broker did not answer the last topic check")
        assert p.poll() is None  # it goes on: retrying is not failing
        asked = time.monotonic()
        p.terminate()  # and still stops when told, the broker away (it used not to)
        p.wait(timeout=60)
        took = time.monotonic() - asked
        text = Path(p.log).read_text()  # type: ignore[attr-defined]
        assert p.returncode == 0 and took < 30, (p.returncode, took, text[-2000:])
        assert "Traceback" not in text
    finally:
        own.stop()
        _cleanup(w)


def _readiness_until_ok(port: int, proc: subprocess.Popen[bytes], timeout_s: float
                        ) -> list[tuple[int, str]]:
    """Every distinct (HTTP status, ``status``) of ``/healthz`` in a row, polled without pause
    from before the web port opens until it says 200 (or the deadline: an AssertionError)."""
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, body = _healthz(port)
        except (OSError, ValueError):
            time.sleep(0.005)
            continue
        if not seen or seen[-1] != (status, body["status"]):
            seen.append((status, body["status"]))
        if status == 200:
            return seen
    raise AssertionError(f"no 200 from /healthz within {timeout_s} s (exit {proc.poll()}): {seen}")


def _healthz_or_none(port: int) -> int | None:
    try:
        return _healthz(port)[0]
    except (OSError, ValueError):
        return None


# --- 02: the broker loses its data --------------------------------------------------------------

def _end_offset(kafka: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": kafka, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        c.close()


def test_a_recreated_topic_stops_the_partition_loudly(
        redis_url: str, sim: Path, expected: list[dict[str, Any]], tmp_path: Path) -> None:
    """The broker (memory storage) restarts empty and the topic is recreated; the second half is
    produced at offsets the first half had. The partition stops (topic id changed), nothing of
    the new topic is counted, and a restarted worker stops it again."""
    kafka = start_broker()
    w = _workers(tmp_path, kafka.url, redis_url, sim)
    try:
        first, second, _ = _split(sim, tmp_path)
        create_topic(kafka.url, w.topic, 1)
        port = free_port()
        proc = w.start("w", web_port=port)
        r = redis.Redis.from_url(redis_url)
        _produce(w, first, "--no-final", "--frame-rows", "2000")
        end = _end_offset(kafka.url, w.topic)
        wait_for("the first half checkpointed", lambda: r.hget(
            f"{w.prefix}:checkpoint:0", "offset") == str(end).encode(), 90, (proc,))
        wait_for("snapshots of the first half", lambda: len(published_history(r, w.prefix)) >= 5, 60, (proc,))
        kafka_port = int(kafka.url.rsplit(":", 1)[1])
        kafka.stop()
        kafka = start_broker(port=kafka_port)
        create_topic(kafka.url, w.topic, 1)
        _produce(w, second, "--frame-rows", "2000")
        wait_for("partition 0 stopped", lambda: _stopped(port) == {"0": "topic_recreated"}, 120,
                 (proc,))
        status, body = _healthz(port)
        assert status == 503 and body["status"] == "stopped"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=10) as resp:
            assert resp.status == 200  # alive: a liveness probe must not restart it in a loop
        detail = body["stopped"]["0"]["detail"]
        assert body["stopped"]["0"]["reason"] == "topic_recreated"
        assert "is not the one this partition's state came from (topic id" in detail \
            or "high watermark" in detail
        log = Path(proc.log).read_text()  # type: ignore[attr-defined]
        assert f"[ERROR] partition 0 of {w.topic} stopped (topic_recreated): " in log
        published = _assert_published_equal_replay(r, w.prefix, expected)
        assert 5 <= len(published) < len(expected)
        assert r.hget(f"{w.prefix}:checkpoint:0", "offset") == str(end).encode()  # not overwritten

        proc.terminate()  # a restart does not make it go on: the checkpoint names the old topic
        proc.wait(30)
        port2 = free_port()
        proc2 = w.start("w2", web_port=port2)
        wait_for("partition 0 stopped again", lambda: _stopped(port2) == {"0": "topic_recreated"},
                 90, (proc2,))
        assert _healthz(port2)[0] == 503
        assert _assert_published_equal_replay(r, w.prefix, expected) == published
    finally:
        _cleanup(w)
        kafka.stop()


# --- 06: workers with other reference files or options ------------------------------------------

def test_workers_with_other_settings_are_refused_and_figures_stay_the_replays(
        broker: Service, redis_url: str, sim: Path, expected: list[dict[str, Any]],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Worker A pins the deployment's settings; B with the same regions in reverse order, C with
    ``--k 1`` and D with another key are refused, naming the difference. A's figures are the
    replay's."""
    w = _workers(tmp_path, broker.url, redis_url, sim)
    try:
        create_topic(w.broker, w.topic, 2)
        a = w.start("a")
        r = redis.Redis.from_url(redis_url)
        first, second, _ = _split(sim, tmp_path)
        _produce(w, first, "--no-final")
        wait_for("the deployment pinned", lambda: r.exists(f"{w.prefix}:deployment"), 60, (a,))
        order = _refused(sim, w, capsys, "--regions", str(sim / "regions_reversed.geojson"))
        assert re.fullmatch(
            r"defacto: error: this worker's settings differ from the deployment's \(Redis key "
            + re.escape(f"{w.prefix}:deployment") + r", pinned \S+ by the first worker\): the "
            r"order of the features in --regions is [0-9a-f]{12} here, [0-9a-f]{12} in the "
            r"deployment\. Every worker must run with the same files and options; these change "
            r"what tallies and checkpoints mean: run the new settings as a new deployment \(new "
            r"--prefix and --group; README, Upgrades and changes\)", order)
        k1 = _refused(sim, w, capsys, "--k", "1")
        assert "--k is 1 here, 15 in the deployment. " in k1
        assert f"stop every worker, delete the key (redis-cli DEL {w.prefix}:deployment)" in k1
        key2 = _refused(sim, w, capsys, "--key-file", str(sim / "key2"))
        assert "the pseudonymization key (its public id) is " in key2
        _produce(w, second)
        last = expected[-1]["at"]
        wait_for("the last snapshot", lambda: latest_is(r, w.prefix, last), 120, (a,))
        assert _assert_published_equal_replay(r, w.prefix, expected) == [s["at"] for s in expected]
        assert json.loads(r.get(f"{w.prefix}:snapshot"))["cells"] == expected[-1]["cells"]
    finally:
        _cleanup(w)


# --- 07: a partition count other than the deployment's -----------------------------------------

def test_a_partition_count_other_than_the_deployments_stops_every_partition(
        broker: Service, redis_url: str, sim: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Two workers that learned "2 partitions" (what workers started before the topic grew
    have) on a topic of 3: every partition stops, nothing is published, and a worker that asks
    Kafka (3) is refused by the deployment's pinned count."""
    w = _workers(tmp_path, broker.url, redis_url, sim)
    try:
        create_topic(w.broker, w.topic, 3)
        ports = [free_port(), free_port()]
        procs = tuple(w.start(n, web_port=p, extra=("--partitions", "2"))
                      for n, p in zip("ab", ports, strict=True))
        first, _, _ = _split(sim, tmp_path)
        _produce(w, first, "--no-final")

        def stopped() -> dict[str, str]:
            return {**_stopped(ports[0]), **_stopped(ports[1])}

        wait_for("every partition stopped", lambda: stopped() == {
            "0": "partition_count", "1": "partition_count", "2": "partition_count"}, 90, procs)
        for port in ports:
            status, body = _healthz(port)
            assert status == 503
            for info in body["stopped"].values():
                assert info["detail"].startswith(
                    f"the topic '{w.topic}' has 3 partitions, this deployment was started for 2")\
                    or info["detail"].startswith("partition 2 is assigned, but this deployment")
        r = redis.Redis.from_url(redis_url)
        assert published_history(r, w.prefix) == [] and not list(r.scan_iter(f"{w.prefix}:tally:*"))
        grown = _refused(sim, w, capsys)
        assert "the partition count of the pings topic is 3 here, 2 in the deployment" in grown
    finally:
        _cleanup(w)

