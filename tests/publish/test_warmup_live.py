"""Warm-up on the live path: a worker started cold (real Tansu broker, real Redis, a worker
process) publishes snapshots marked ``warming_up`` and opens no gap alert while warming,
although the gap is far beyond the threshold; the first warm snapshot has the flags off and
opens the alerts that the warm figures support."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from livekit import Workers, engine_args, latest_is, live_workers, wait_for

from estimators.alerts import gap_crossings
from estimators.units import HOUR_MS
from stream.cli import main
from stream.local.embedded import Service, create_topic, free_port
from stream.timefmt import iso_utc, parse_iso_ms

pytestmark = pytest.mark.integration  # real broker, Redis and worker process


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("warmup-live") / "sim"
    assert main(["simulate", "astana", "--scale", "0.002", "--days", "1.1", "--seed", "4",
                 "--out", str(out)]) == 0
    (out / "key").write_text("warmup-live-key-0123456789abcdef\n")
    return out


@pytest.fixture
def live(tmp_path: Path, broker: Service, redis_url: str, sim: Path) -> Iterator[Workers]:
    with live_workers(tmp_path, broker.url, redis_url, sim, "w") as w:
        yield w


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


def test_a_cold_worker_marks_warming_snapshots_and_alerts_only_when_warm(
        live: Workers, sim: Path, tmp_path: Path) -> None:
    pings = sim / "pings.jsonl"
    lines = pings.read_text().splitlines(keepends=True)
    t0 = min(json.loads(line)["ts"] for line in lines[:1000]) // HOUR_MS * HOUR_MS
    ready = t0 + 25 * HOUR_MS  # 05:00 local + 24 h, then the close of the first whole night
    early = [line for line in lines if json.loads(line)["ts"] < t0 + 8 * HOUR_MS]
    (tmp_path / "early.jsonl").write_text("".join(early))
    (tmp_path / "late.jsonl").write_text("".join(lines[len(early):]))
    replay = tmp_path / "replay.jsonl"
    assert main(["replay", str(pings), "--out", str(replay), *engine_args(sim)]) == 0
    expected = [json.loads(line) for line in replay.read_text().splitlines()]
    # the premise: warming snapshots' gaps would cross the threshold (10 %) if they counted
    warming = [s for s in expected if parse_iso_ms(s["at"]) < ready]
    assert warming and all(s["warming_up"]["resident"] for s in warming)
    for s in warming:
        figs = [f for f in s["regions"].values() if f["registered"]]
        hi = np.array([(f["resident_hi"] - f["registered"]) / f["registered"] for f in figs
                       if f["resident_hi"] is not None])
        assert (gap_crossings(hi, hi, 0.10)[0] != 0).any(), s["at"]

    create_topic(live.broker, live.topic, 2)
    r = redis.Redis.from_url(live.redis_url)
    port = free_port()
    w = live.start("a", web_port=port)
    assert main(["produce", str(tmp_path / "early.jsonl"), "--kafka", live.broker, "--topic",
                 live.topic, "--no-final", "--quiet"]) == 0
    wait_for("a snapshot of the first hours", lambda: r.get(f"{live.prefix}:snapshot"), 90, (w,))
    snap = json.loads(r.get(f"{live.prefix}:snapshot"))
    assert snap["warming_up"]["present"] and snap["warming_up"]["resident"]
    assert snap["warming_up"]["resident_ready_at"] == iso_utc(ready)
    region = json.loads(r.hget(f"{live.prefix}:regions", "astana"))
    assert region["warming_up"] == {"present": True, "resident": True}
    assert region["gap_ratio"] is None and region["resident"] is not None
    assert json.loads(_get(port, "/api/regions"))["regions"]["astana"]["warming_up"]["resident"]
    metrics = wait_for("the warm-up gauge", lambda: (m := _get(port, "/metrics")) and
                       'defacto_warming_up{figure="resident"} 1.0' in m and m, 30, (w,))
    assert 'defacto_gap_ratio{region="astana"}' not in metrics
    assert r.xlen(f"{live.prefix}:alerts:log") == 0

    assert main(["produce", str(tmp_path / "late.jsonl"), "--kafka", live.broker, "--topic",
                 live.topic, "--quiet"]) == 0
    last = expected[-1]["at"]
    wait_for("the last snapshot", lambda: latest_is(r, live.prefix, last), 120, (w,))
    history = [json.loads(m) for m in r.zrange(f"{live.prefix}:history", 0, -1)]
    assert [h["at"] for h in history] == [s["at"] for s in expected]
    for h, s in zip(history, expected, strict=True):
        warm = parse_iso_ms(h["at"]) >= ready
        assert s["warming_up"]["resident"] is not warm
        assert all((f["gap_ratio"] is not None) is (warm and f["registered"] is not None
                                                    and f["resident"] is not None)
                   for f in h["regions"].values()), h["at"]
        assert h["regions"] == {rid: {k: f[k] for k in h["regions"][rid]}
                                for rid, f in s["regions"].items()}
    latest = json.loads(r.get(f"{live.prefix}:snapshot"))
    assert latest["warming_up"]["present"] is latest["warming_up"]["resident"] is False
    log = [(f[b"event"].decode(), int(f[b"at_ms"])) for _, f in
           r.xrange(f"{live.prefix}:alerts:log")]
    # none during the warm-up; the first warm snapshot opens what its figures support
    assert log and all(at >= ready for _, at in log)
    assert min(at for _, at in log) == ready and all(e == "opened" for e, at in log if at == ready)
    metrics = _get(port, "/metrics")
    assert 'defacto_warming_up{figure="resident"} 0.0' in metrics
    assert 'defacto_gap_ratio{region="astana"}' in metrics
