"""Foreign SIMs live: two workers (one killed mid-stream and restarted from its checkpoint)
publish the same foreign-SIM figures and long-stayers line as ``defacto replay``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from livekit import Workers, engine_args, latest_is, live_workers, published_history, wait_for

from stream.cli import main
from stream.local.embedded import Service, create_topic
from stream.simulator import load_scenario, simulate, with_foreign, write_simulation

pytestmark = pytest.mark.integration  # real broker and Redis, worker processes


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live-foreign") / "sim"
    sc = with_foreign(load_scenario("astana"), arrivals_per_year=150_000 * 60)
    write_simulation(simulate(sc, scale=0.001, days=2.2, seed=5), out)
    (out / "key").write_text("live-foreign-key-0123456789abcdef\n")
    return out


@pytest.fixture
def live(tmp_path: Path, broker: Service, redis_url: str, sim: Path) -> Iterator[Workers]:
    with live_workers(tmp_path, broker.url, redis_url, sim, "f") as w:
        yield w


def test_foreign_figures_live_equal_replay_across_a_crash(live: Workers, sim: Path,
                                                          tmp_path: Path) -> None:
    pings = sim / "pings.jsonl"
    lines = pings.read_text().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2:]))
    out, flows = tmp_path / "replay.jsonl", tmp_path / "flows.jsonl"
    assert main(["replay", str(pings), "--out", str(out), "--flows-out", str(flows),
                 *engine_args(sim)]) == 0
    expected = [json.loads(line) for line in out.read_text().splitlines()]
    replay_foreign = [d for d in map(json.loads, flows.read_text().splitlines())
                      if d.get("topic") == "foreign"]
    assert replay_foreign
    create_topic(live.broker, live.topic, 2)
    r = redis.Redis.from_url(live.redis_url)
    a, b = live.start("a"), live.start("b")
    assert main(["produce", str(first), "--kafka", live.broker, "--topic", live.topic,
                 "--no-final", "--quiet"]) == 0
    wait_for("snapshots from the first half", lambda: len(published_history(r, live.prefix)) >= 5, 90,
             (a, b))
    wait_for("a checkpoint", lambda: r.exists(f"{live.prefix}:checkpoint:0")
             and r.exists(f"{live.prefix}:checkpoint:1"), 30, (a, b))
    a.kill()
    a.wait()
    live.start("a2")
    assert main(["produce", str(second), "--kafka", live.broker, "--topic", live.topic,
                 "--quiet"]) == 0
    last = expected[-1]["at"]
    wait_for("the last snapshot", lambda: latest_is(r, live.prefix, last), 120, (b,))

    latest = json.loads(r.get(f"{live.prefix}:snapshot"))
    assert latest["regions"] == expected[-1]["regions"]  # the long-stayers line included
    assert all("foreign_usual_residents" in fig for fig in latest["regions"].values())
    got = {k.decode(): json.loads(v) for k, v in r.hgetall(f"{live.prefix}:foreign").items()}
    assert {"week", "month"} <= set(got)
    by_period = {(d["kind"], d["period"]): d for d in replay_foreign}
    for field, doc in got.items():
        # open ones as of the last snapshot (the replay writes them at its end), settled ones as
        # of the first snapshot that had them settled (the replay writes them then)
        assert doc == by_period[(doc["kind"], doc["period"])], field
    week = got["week"]
    assert week["totals"]["*"]["arrivals"]["devices"] > 0
    assert "RU" in week["countries"]
