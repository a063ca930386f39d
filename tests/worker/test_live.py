"""The live pipeline end to end: real Tansu broker, real Redis, real Faust workers (processes).

Live snapshots must equal ``defacto replay`` on the same pings, also when a worker is killed
mid-stream and restarted; malformed messages end up in the dead-letter topic with their reason.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer
from livekit import (
    Workers,
    assert_history_is,
    engine_args,
    latest_is,
    live_workers,
    published_history,
    wait_for,
)

from stream.cli import main
from stream.decode.frame import encode_frame
from stream.decode.messages import encode_avro, encode_control
from stream.local.embedded import Service, create_topic, free_port, start_redis
from stream.publish.snapshot import gap_alerts
from stream.timefmt import parse_iso_ms

pytestmark = pytest.mark.integration  # real broker, Redis, Prometheus or Chromium


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live") / "sim"
    assert main(["simulate", "astana", "--scale", "0.002", "--days", "1.1", "--seed", "3",
                 "--out", str(out)]) == 0
    (out / "key").write_text("live-test-key-0123456789abcdef\n")
    return out


@pytest.fixture
def live(tmp_path: Path, broker: Service, redis_url: str, sim: Path) -> Iterator[Workers]:
    with live_workers(tmp_path, broker.url, redis_url, sim, "t") as w:
        yield w


def _replay(sim: Path, pings: Path, out: Path, flows: Path | None = None) -> list[dict[str, Any]]:
    extra = ["--flows-out", str(flows)] if flows else []
    assert main(["replay", str(pings), "--out", str(out), *extra, *engine_args(sim)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_two_workers_with_a_crash_equal_replay(live: Workers, sim: Path, tmp_path: Path) -> None:
    pings = sim / "pings.jsonl"
    lines = pings.read_text().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2:]))
    expected = _replay(sim, pings, tmp_path / "replay.jsonl", tmp_path / "flows.jsonl")
    assert len(expected) >= 20
    create_topic(live.broker, live.topic, 2)
    r = redis.Redis.from_url(live.redis_url)

    a = live.start("a")
    b = live.start("b")
    assert main(["produce", str(first), "--kafka", live.broker, "--topic", live.topic,
                 "--no-final", "--quiet"]) == 0
    wait_for("snapshots from the first half", lambda: len(published_history(r, live.prefix)) >= 5, 90, (a, b))
    wait_for("a checkpoint", lambda: r.exists(f"{live.prefix}:checkpoint:0")
          and r.exists(f"{live.prefix}:checkpoint:1"), 30, (a, b))
    a.kill()
    a.wait()
    live.start("a2")
    assert main(["produce", str(second), "--kafka", live.broker, "--topic", live.topic,
                 "--quiet"]) == 0
    last = expected[-1]["at"]
    wait_for("the last snapshot", lambda: latest_is(r, live.prefix, last), 120, (b,))

    assert_history_is(r, live.prefix, expected)
    latest = json.loads(r.get(f"{live.prefix}:snapshot"))
    assert latest["regions"] == expected[-1]["regions"]
    assert latest["cells"] == expected[-1]["cells"]
    assert r.xlen(f"{live.prefix}:snapshots") == len(expected)
    # the gap alerts recorded live are those that the replayed snapshots give, in order
    active: dict[str, Any] = {}
    want_log = []
    for snap in expected:
        at_ms = parse_iso_ms(snap["at"])
        active, opened, closed = gap_alerts(active, snap, at_ms, 0.10)
        want_log += [("closed", a.region, a.direction, a.since_ms, at_ms) for a in closed]
        want_log += [("opened", a.region, a.direction, a.since_ms, at_ms) for a in opened]
    got_log = [(f[b"event"].decode(), (a := json.loads(f[b"alert"]))["region"], a["direction"],
                a["since_ms"], int(f[b"at_ms"])) for _, f in r.xrange(f"{live.prefix}:alerts:log")]
    assert want_log and got_log == want_log
    got_active = {k.decode(): json.loads(v) for k, v in r.hgetall(f"{live.prefix}:alerts:active").items()}
    assert got_active == {rid: a.to_dict() for rid, a in active.items()}
    # migration flows: the periods still open at the last snapshot equal the replay's
    live_flows = {k.decode(): json.loads(v) for k, v in r.hgetall(f"{live.prefix}:flows").items()}
    replay_open = {d["kind"]: d for d in map(json.loads, (tmp_path / "flows.jsonl").read_text()
                                              .splitlines())
                   if not d["final"] and d["dating"] == "detected"}
    assert set(replay_open) == {"week", "month"} and live_flows["week"] == replay_open["week"]
    assert live_flows["month"] == replay_open["month"]
    # the data begins in the night of Sunday 1 March: week 9 closed at once, February never opened
    assert set(live_flows) == {"week", "month", "week:closed"}
    assert live_flows["week:closed"]["period"] == "2026-W09" and not live_flows["week:closed"]["complete"]
    # a final period is published as of the first snapshot that had it final, as the replay
    # writes it (a worker killed meanwhile), not re-scaled by every later snapshot
    replay_w09 = [d for d in map(json.loads, (tmp_path / "flows.jsonl").read_text().splitlines())
                  if d["final"] and d["dating"] == "detected" and d["period"] == "2026-W09"]
    assert live_flows["week:closed"] == replay_w09[0] and replay_w09[0]["at"] != last
    # the history keeps the rural balance of every final period (here the closed week 9)
    history = {k.decode(): json.loads(v)
               for k, v in r.hgetall(f"{live.prefix}:flows:history").items()}
    assert set(history) == {"week:detected:2026-W09"}
    assert history["week:detected:2026-W09"]["rural"] == live_flows["week:closed"]["rural"]


def _dead_letters(broker: str, topic: str, want: int) -> list[Any]:
    c = Consumer({"bootstrap.servers": broker, "group.id": f"dlq-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < want and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
    finally:
        c.close()
    return got


def test_malformed_messages_are_dead_lettered_and_the_worker_lives_on(live: Workers) -> None:
    create_topic(live.broker, live.topic, 1)
    create_topic(live.broker, f"{live.topic}.dead", 1)
    port = free_port()
    w = live.start("w", web_port=port)
    t0 = 1_772_409_600_000
    good = [{"device": f"d{i}", "ts": t0 + i * 1000, "operator": "40101", "home_mcc": 401,
             "lat": 51.128 + i * 1e-4, "lon": 71.43} for i in range(40)]
    p = Producer({"bootstrap.servers": live.broker})
    for g in good[:19]:
        p.produce(live.topic, json.dumps(g).encode(), partition=0)
    p.produce(live.topic, encode_avro(good[19]), partition=0,
              headers=[("content-type", b"application/vnd.defacto.ping+avro")])
    bad = [b"{not json", b"\x00\x00\x00\x00\x01garbage", b"DFB1\xff\xff",
           json.dumps({"device": "x", "ts": "yesterday", "operator": "40101", "lat": 1,
                       "lon": 2}).encode(),
           json.dumps({**good[0], "lat": 123.0}).encode(), b""]
    for v in bad:
        p.produce(live.topic, v, partition=0)
    frame = encode_frame({"device": [g["device"] for g in good[20:]],
                          "ts": [g["ts"] for g in good[20:]],
                          "operator": ["40101"] * 20, "home_mcc": [401] * 20,
                          "lat": [g["lat"] for g in good[20:]], "lon": [g["lon"] for g in good[20:]]})
    p.produce(live.topic, frame, partition=0)
    p.produce(live.topic, encode_control(t0 + 3_600_000, final=True), partition=0)
    assert p.flush(30) == 0

    dead = _dead_letters(live.broker, f"{live.topic}.dead", len(bad))
    reasons = sorted(dict(m.headers())["defacto-reason"].decode() for m in dead)
    assert reasons == sorted(["malformed_json", "bad_avro", "bad_frame", "bad_ts",
                              "bad_coordinates", "empty_message"])
    assert all(b"d0" not in m.value() for m in dead)  # device pseudonyms never leave the worker

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def accepted_all() -> str | None:
        text = metrics()
        return text if 'defacto_pings_consumed_total{outcome="accepted"} 40.0' in text else None

    text = wait_for("accepted pings in /metrics", accepted_all, 60, (w,))
    assert 'defacto_pings_rejected_total{reason="bad_frame"} 1.0' in text
    r = redis.Redis.from_url(live.redis_url)
    counts = wait_for("ping counts in Redis", lambda: (c := {
        k.decode(): int(v) for k, v in r.hgetall(f"{live.prefix}:counts").items()}
        ).get("accepted") == 40 and c, 30, (w,))
    assert counts["rejected"] == 6 and counts["rejected:bad_frame"] == 1
    assert r.hget(f"{live.prefix}:health", "lag:0") is not None
    geometry = json.loads(r.get(f"{live.prefix}:geometry"))
    assert "astana" in {f["id"] for f in geometry["features"]}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert json.loads(resp.read())["status"] == "ok"

    def get(path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code

    regions = wait_for("the final snapshot", lambda: (x := get("/api/regions")) != 404 and x, 60, (w,))
    assert regions["at"] == "2026-03-02T01:00:00Z"  # like replay: up to the last ping's window
    city = regions["regions"]["astana"]
    assert city["devices"] == 40 and city["present"] == 40  # no calibration: one person per device
    assert _metric(port, "defacto_publish_duration_seconds_count") >= 1  # rounds that published
    cells = get("/api/cells?res=7")
    # the worker serves the dashboard's document (stream.publish.cells_view)
    assert cells["res"] == 7 and sum(c["value"] for c in cells["cells"] if c["value"]) == 40
    assert get("/api/cells?res=3") == 400
    assert get("/api/cells")["res"] == 8  # without ?res=, the engine's resolution
    assert w.poll() is None


def _metric(port: int, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
    return 0.0


def test_worker_rides_out_a_redis_outage(live: Workers, sim: Path, tmp_path: Path) -> None:
    store = start_redis()
    try:
        live.redis_url = store.url
        pings = sim / "pings.jsonl"
        lines = pings.read_text().splitlines(keepends=True)
        first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
        cut = len(lines) * 2 // 3
        first.write_text("".join(lines[:cut]))
        second.write_text("".join(lines[cut:]))
        expected = _replay(sim, pings, tmp_path / "replay.jsonl")
        create_topic(live.broker, live.topic, 1)
        port = free_port()
        w = live.start("w", web_port=port)
        r = redis.Redis.from_url(store.url)
        assert main(["produce", str(first), "--kafka", live.broker, "--topic", live.topic,
                     "--no-final", "--quiet"]) == 0
        wait_for("snapshots before the outage", lambda: len(published_history(r, live.prefix)) >= 3, 90, (w,))
        os.kill(store.pid, signal.SIGSTOP)  # Redis hangs: connections time out
        try:
            assert main(["produce", str(second), "--kafka", live.broker, "--topic", live.topic,
                         "--quiet", "--encoding", "json"]) == 0
            accepted = 'defacto_pings_consumed_total{outcome="accepted"}'
            wait_for("estimating on without Redis",
                  lambda: _metric(port, accepted) >= len(lines), 120, (w,))
            assert _metric(port, "defacto_redis_errors_total") > 0
        finally:
            os.kill(store.pid, signal.SIGCONT)
        last = expected[-1]["at"]
        wait_for("publishing after the outage", lambda: latest_is(r, live.prefix, last), 120, (w,))
        history = published_history(r, live.prefix)
        assert [h["at"] for h in history] == [s["at"] for s in expected]
        latest = json.loads(r.get(f"{live.prefix}:snapshot"))
        assert latest["regions"] == expected[-1]["regions"]
    finally:
        live.stop_all()
        store.stop()


def test_simulate_streams_to_kafka_with_watermarks(broker: Service, tmp_path: Path) -> None:
    from stream.decode.messages import decode_messages
    from stream.simulator import simulate

    topic = f"pings-sim-{uuid.uuid4().hex[:8]}"
    create_topic(broker.url, topic, 2)
    argv = ["simulate", "astana", "--scale", "0.001", "--days", "0.25", "--seed", "5",
            "--kafka", broker.url, "--topic", topic, "--speed", "0"]
    assert main(argv) == 0
    want = sum(len(h) for h in simulate("astana", scale=0.001, days=0.25, seed=5).hours())
    c = Consumer({"bootstrap.servers": broker.url, "group.id": f"sim-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.subscribe([topic])
    pings, finals, devices = 0, set(), [set(), set()]
    deadline = time.monotonic() + 60
    try:
        while len(finals) < 2 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error() is not None:
                continue
            d = decode_messages([m.value()])
            assert not d.rejects
            pings += len(d.source_rows)
            devices[m.partition()].update(d.columns["device"].tolist())
            finals |= {m.partition() for _, _, final in d.watermarks if final}
    finally:
        c.close()
    assert finals == {0, 1}
    assert pings == want
    assert devices[0] and devices[1] and not devices[0] & devices[1]  # a device stays on one partition
