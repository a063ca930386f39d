"""The planners' dashboard: JSON API and server-sent events on the real publisher's Redis keys, and
the page itself in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Redis is populated by :class:`Population`: a small simulation fed into an engine, its hourly
tallies written and published by the real :class:`~stream.publish.SnapshotPublisher` exactly as a
worker does (no fakes). Every test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from estimators.calibration import Calibration
from estimators.engine import Engine, EngineConfig
from estimators.regions import regions_from_geojson
from estimators.units import HOUR_MS
from stream.local.embedded import free_port, redis_service, start_redis
from stream.publish.cells_view import requested_resolution
from stream.publish.redis_publisher import PublishSettings, SnapshotPublisher
from stream.simulator import simulate
from stream.sources.simulation import FedHour, SimulationFeed
from stream.web.dashboard import CTX, create_dashboard_app

pytestmark = pytest.mark.integration  # real broker, Redis, Prometheus or Chromium

SECRET = b"dashboard-test-secret-0123456789"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class Population:
    """A simulated scenario published to Redis under ``prefix`` by the real SnapshotPublisher.

    The first ``warmup_hours`` are only ingested (the engine learns the nights), then calibration
    factors are fitted against the simulation's independent reference population, as the demo
    does; each :meth:`publish` call then writes the next hours' tallies and publishes them, with
    the region outlines and pipeline health a worker writes.
    """

    def __init__(self, redis_url: str, prefix: str, *, scale: float = 0.005, days: float = 2.0,
                 seed: int = 5, warmup_hours: int = 24) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.sim = simulate("astana", scale=scale, days=days, seed=seed)
        regions = regions_from_geojson(self.sim.regions_geojson)
        self.engine = Engine(regions, EngineConfig(res=8))
        self.estimator = Engine(regions, EngineConfig(res=8))  # like the worker's publisher
        self.feed = SimulationFeed(self.sim, self.engine, SECRET)
        self.hours: Iterator[FedHour] = self.feed.hours()
        last = None
        for _ in range(warmup_hours):
            last = next(self.hours)
        if last is not None:
            rows = self.engine.fit_calibration(last.end_ms, self.sim.reference)
            self.estimator.set_calibration(Calibration(rows))
        self.published: list[int] = []
        self.accepted = 0
        self.rejected = 0

    @property
    def region_ids(self) -> list[str]:
        """The region ids of the snapshots (with ``unassigned``)."""
        return list(self.engine.regions.ids)

    async def publish(self, hours: int = 1) -> list[int]:
        """Ingest, tally and publish the next ``hours`` hours; returns the published window ends."""
        client = aioredis.from_url(self.redis_url)
        try:
            pub = SnapshotPublisher(client, self.estimator, partitions=1, every_ms=HOUR_MS,
                                    registry=self.sim.registry,
                                    settings=PublishSettings(prefix=self.prefix))
            if not self.published:
                await pub.publish_geometry(self.engine.regions)
            done: list[int] = []
            pings = 0
            for _ in range(hours):
                h = next(self.hours)
                pings += h.pings
                tally = self.engine.tally(h.end_ms)
                await pub.write_tallies(0, [tally], h.end_ms, h.end_ms - 1)
                done += await pub.try_publish()
            rejected = 0 if self.published else 2
            await pub.write_health({0: 123}, {0: time.time()},
                                   {"accepted": pings, "rejected": rejected, "rejected:bad_ts": rejected})
            self.accepted += pings
            self.rejected += rejected
            self.published += done
            return done
        finally:
            await client.aclose()

    def publish_in_thread(self, hours: int = 1) -> list[int]:
        """:meth:`publish` from synchronous code that may already run an event loop (Playwright)."""
        with ThreadPoolExecutor(1) as ex:
            return ex.submit(asyncio.run, self.publish(hours)).result()

    def cleanup(self) -> None:
        """Delete every key under the prefix."""
        delete_prefix(self.redis_url, self.prefix)


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def unique_prefix(name: str) -> str:
    """A key prefix no other test (or deployment) uses."""
    return f"dashtest-{name}-{uuid.uuid4().hex[:8]}"


def run_with_client(app_args: tuple[str, str], fn: Callable[[TestClient], Awaitable[T]],
                    **app_kwargs: Any) -> T:
    """Run ``fn(client)`` against the dashboard app served on a test server."""

    async def main() -> T:
        app = create_dashboard_app(*app_args, **app_kwargs)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            return await fn(client)

    return asyncio.run(main())


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it is true, failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """The local Redis on 6379 if it answers, else a throwaway one."""
    svc = redis_service(prefer_local=True)
    yield svc.url
    svc.stop()


@pytest.fixture(scope="module")
def population(redis_url: str) -> Iterator[Population]:
    """Twelve published hourly snapshots (read-only for the tests using it)."""
    pop = Population(redis_url, unique_prefix("api"))
    try:
        asyncio.run(pop.publish(12))
        assert len(pop.published) == 12
        yield pop
    finally:
        pop.cleanup()


def _raw(redis_url: str, prefix: str) -> dict[str, Any]:
    """What the publisher wrote, read straight from Redis."""
    r = redis.Redis.from_url(redis_url)
    try:
        snap = json.loads(r.get(f"{prefix}:snapshot"))
        return {
            "snapshot": snap,
            "active": {k.decode(): json.loads(v) for k, v in r.hgetall(f"{prefix}:alerts:active").items()},
            "log": r.xlen(f"{prefix}:alerts:log"),
            "history": r.zrange(f"{prefix}:history", 0, -1, withscores=True),
            "cells": {res: {k.decode(): v.decode() for k, v in r.hgetall(f"{prefix}:cells:{res}").items()}
                      for res in snap["cell_resolutions"]},
            "geometry": json.loads(r.get(f"{prefix}:geometry")),
        }
    finally:
        r.close()


def test_state_alerts_geometry_and_history(population: Population, redis_url: str) -> None:
    raw = _raw(redis_url, population.prefix)
    names = population.sim.device_name[:200].tolist()

    async def go(c: TestClient) -> None:
        r = await c.get("/api/state")
        assert r.status == 200
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        text = await r.text()
        assert not any(str(n) in text for n in names)  # no device pseudonyms, ever
        state = json.loads(text)
        snap = state["snapshot"]
        assert "cells" not in snap
        assert snap["at"] == raw["snapshot"]["at"]
        assert snap["at_ms"] == population.published[-1]
        assert snap["regions"] == raw["snapshot"]["regions"]
        assert set(snap["regions"]) == set(population.region_ids)
        assert snap["k"] == 15 and snap["gap_threshold"] == pytest.approx(0.10)
        assert snap["published_at"] == raw["snapshot"]["published_at"]
        # the registry is far from the residents somewhere: alerts are open and logged
        assert raw["active"], "the population should open at least one gap alert"
        assert {a["region"]: a for a in state["alerts"]["active"]}.keys() == raw["active"].keys()
        mags = [abs(a["magnitude"]) for a in state["alerts"]["active"]]
        assert mags == sorted(mags, reverse=True)
        assert len(state["alerts"]["log"]) == min(raw["log"], 50)
        assert {e["event"] for e in state["alerts"]["log"]} <= {"opened", "closed"}
        assert state["health"]["total_lag"] == 123
        assert state["health"]["partitions"][0]["partition"] == 0
        assert 0 <= state["health"]["partitions"][0]["seen_age_s"] < 120
        assert state["counts"]["accepted"] == population.accepted > 0
        assert state["counts"]["rejected"] == population.rejected == 2
        assert state["counts"]["rejected_by_reason"] == {"bad_ts": 2}

        r = await c.get("/api/alerts")
        assert r.status == 200
        alerts = await r.json()
        assert alerts == state["alerts"]

        r = await c.get("/api/geometry")
        assert r.status == 200
        geo = await r.json()
        assert geo == raw["geometry"]
        assert {f["id"] for f in geo["features"]} == set(population.region_ids) - {"unassigned"}

        rid = max((k for k, v in snap["regions"].items() if v["gap"] is not None),
                  key=lambda k: abs(snap["regions"][k]["gap"]))
        r = await c.get(f"/api/history?region={rid}")
        assert r.status == 200
        hist = await r.json()
        assert hist["region"] == rid and hist["name"] == snap["regions"][rid]["name"]
        assert [p["at_ms"] for p in hist["points"]] == population.published
        last = hist["points"][-1]
        for k in ("present", "resident", "resident_lo", "resident_hi", "registered", "gap_ratio"):
            assert last[k] == snap["regions"][rid][k]
        assert (await c.get("/api/history?region=atlantis")).status == 404
        assert "atlantis" in (await (await c.get("/api/history?region=atlantis")).json())["error"]
        assert (await c.get("/api/history")).status == 400

        r = await c.get("/healthz")
        assert r.status == 200 and (await r.json())["snapshot"] == snap["at"]

        r = await c.get("/")
        assert r.status == 200 and "text/html" in r.headers["Content-Type"]
        page = await r.text()
        assert "/static/app.js" in page and "http://" not in page and "https://" not in page
        for name in ("app.js", "style.css"):
            r = await c.get(f"/static/{name}")
            assert r.status == 200
            body = await r.text()
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", body), name
        assert (await c.get("/static/../dashboard.py")).status in (403, 404)
        assert (await c.get("/api/nothing")).status == 404

    run_with_client((redis_url, population.prefix), go)


def test_cells_suppression_and_bad_resolution(population: Population, redis_url: str) -> None:
    raw = _raw(redis_url, population.prefix)

    async def go(c: TestClient) -> None:
        suppressed = 0
        for res in raw["snapshot"]["cell_resolutions"]:
            r = await c.get(f"/api/cells?res={res}")
            assert r.status == 200
            doc = await r.json()
            assert doc["res"] == res and doc["at"] == raw["snapshot"]["at"] and doc["k"] == 15
            want = raw["cells"][res]
            got = {cell["id"]: cell["value"] for cell in doc["cells"]}
            assert got.keys() == want.keys()
            for cid, v in want.items():
                assert got[cid] == (None if v == "null" else int(v)), cid
            suppressed += doc["suppressed"]
            assert doc["suppressed"] == sum(v == "null" for v in want.values())
            assert doc["total"] == sum(int(v) for v in want.values() if v != "null")
            for cell in doc["cells"][:50]:
                assert len(cell["boundary"]) in (5, 6)
                for lon, lat in cell["boundary"]:
                    assert 60 < lon < 80 and 45 < lat < 56  # [lon, lat] around Astana
        assert suppressed > 0, "a small simulation must have suppressed cells"
        for bad in ("9", "5", "x", "", "-1", "7.5", "²", "٣", "７", "1" * 3000, "%00", "8%008"):
            r = await c.get(f"/api/cells?res={bad}")
            assert r.status == 400, bad
            doc = await r.json()
            assert doc["resolutions"] == raw["snapshot"]["cell_resolutions"]
            assert doc["error"].startswith("res must be one of the published resolutions")
            assert len(doc["error"]) < 120, bad  # a long value is echoed cut short
        assert (await c.get("/api/cells")).status == 400
        r = await c.get(f"/api/history?region={'x' * 3000}")
        assert r.status == 404 and len((await r.json())["error"]) < 150

    run_with_client((redis_url, population.prefix), go)


def test_requested_resolution_takes_one_or_two_ascii_digits() -> None:
    assert [requested_resolution(t) for t in ("0", "7", " 07 ", "15", "99")] == [0, 7, 7, 15, 99]
    for text in ("", "²", "٣", "７", "-1", "+7", "7.5", "1e1", "100", "1" * 3000, "7\x00"):
        assert requested_resolution(text) is None, text


def test_nothing_published_yet_and_redis_down(redis_url: str) -> None:
    prefix = unique_prefix("empty")

    async def empty(c: TestClient) -> None:
        for path in ("/api/state", "/api/cells?res=8", "/api/history?region=astana", "/api/geometry"):
            r = await c.get(path)
            assert r.status == 404, path
            body = await r.json()
            assert body["waiting"] is True, body
            assert ("geometry" if "geometry" in path else "waiting for the first snapshot") in body["error"]
        r = await c.get("/api/alerts")
        assert r.status == 200 and await r.json() == {"active": [], "log": []}
        r = await c.get("/healthz")
        assert r.status == 200 and (await r.json())["snapshot"] is None

    run_with_client((redis_url, prefix), empty)

    async def down(c: TestClient) -> None:
        for path in ("/healthz", "/api/state", "/api/cells?res=8", "/api/alerts"):
            r = await c.get(path)
            assert r.status == 503, path
            body = await r.json()
            assert "Redis at redis://:***@127.0.0.1:" in body["error"] and "unavailable" in body["error"]
            assert "secret" not in body["error"]  # the password is redacted
        r = await c.get("/")
        assert r.status == 200  # the page itself still loads and says what is wrong

    run_with_client((f"redis://:secret@127.0.0.1:{free_port()}/0", prefix), down)


async def _next_event(resp: Any, timeout_s: float = 10.0) -> dict[str, str]:
    """The next SSE block (event or comment) as its fields; comments under ``comment``."""
    fields: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no server-sent event within {timeout_s:.0f}s")
        line = (await asyncio.wait_for(resp.content.readline(), left)).decode().rstrip("\n")
        if line == "":
            if fields:
                return fields
            continue
        name, _, value = line.partition(":")
        fields[name or "comment"] = value.strip()


def test_events_stream_new_snapshots_and_heartbeats(redis_url: str) -> None:
    pop = Population(redis_url, unique_prefix("sse"), scale=0.002, days=1.25, warmup_hours=24)
    try:
        async def go(c: TestClient) -> None:
            await pop.publish(2)
            tasks = c.server.app[CTX].sse_tasks
            resp = await c.get("/events")
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            assert (await _next_event(resp))["retry"]
            first = await _next_event(resp)  # the current snapshot, so a late page syncs
            assert first["event"] == "snapshot"
            first_data = json.loads(first["data"])
            assert first_data["at_ms"] == pop.published[-1]
            assert (await _next_event(resp)).get("comment") == "heartbeat"  # heartbeat_s=0.3
            done = await pop.publish(1)
            ev = await _next_event(resp)
            for _ in range(100):  # heartbeats every 0.3 s: the snapshot comes well within
                if ev.get("comment") != "heartbeat":
                    break
                ev = await _next_event(resp)
            assert ev["event"] == "snapshot"
            data = json.loads(ev["data"])
            assert data["at_ms"] == done[0] and data["at"].endswith("Z") and data["published_at"]
            assert ev["id"] != first["id"]
            # a browser reconnecting with Last-Event-ID gets what it missed, and only that
            again = await c.get("/events", headers={"Last-Event-ID": first["id"]})
            assert (await _next_event(again))["retry"]
            missed = await _next_event(again)
            assert missed["id"] == ev["id"] and json.loads(missed["data"])["at_ms"] == done[0]
            # client disconnects: the server's stream handlers end on their own
            assert len(tasks) == 2
            resp.close()
            again.close()

            async def all_ended() -> bool:
                return len(tasks) == 0

            await until(all_ended, 10, "the event streams to end after the clients left")

        run_with_client((redis_url, pop.prefix), go, heartbeat_s=0.3)
    finally:
        pop.cleanup()


def test_event_streams_are_capped(redis_url: str) -> None:
    """Each /events stream holds a Redis connection: beyond the cap, 503 (the browser retries)."""
    prefix = unique_prefix("cap")

    async def go(c: TestClient) -> None:
        first = await c.get("/events")
        assert first.status == 200 and (await _next_event(first))["retry"]
        second = await c.get("/events")
        assert second.status == 503 and "too many" in (await second.json())["error"]
        first.close()
        tasks = c.server.app[CTX].sse_tasks

        async def ended() -> bool:
            return len(tasks) == 0

        await until(ended, 10, "the first stream to end")
        third = await c.get("/events")
        assert third.status == 200
        third.close()

    run_with_client((redis_url, prefix), go, heartbeat_s=0.3, max_event_clients=1)


def test_recovers_when_redis_restarts() -> None:
    svc = start_redis()
    port = int(svc.url.rsplit(":", 1)[1].split("/")[0])
    prefix = unique_prefix("restart")
    try:
        async def go(c: TestClient) -> None:
            nonlocal svc
            assert (await c.get("/healthz")).status == 200
            events = await c.get("/events")
            assert (await _next_event(events))["retry"]
            svc.stop()
            r = await c.get("/api/state")
            assert r.status == 503 and "unavailable" in (await r.json())["error"]
            ev = await _next_event(events)
            assert ev["event"] == "status" and json.loads(ev["data"])["redis"] == "down"
            svc = start_redis(port=port)

            async def healthy() -> bool:
                return (await c.get("/healthz")).status == 200

            await until(healthy, 15, "the dashboard to see Redis again")
            assert (await c.get("/api/state")).status == 404  # empty new Redis: waiting
            ev = await _next_event(events)
            assert ev["event"] == "status" and json.loads(ev["data"])["redis"] == "up"
            events.close()

        run_with_client((svc.url, prefix), go, retry_s=0.2, heartbeat_s=5)
    finally:
        svc.stop()


def _chromium_or_fail() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: the dashboard's browser test needs Debian's chromium "
                    "package (sudo apt-get install chromium); do not use `playwright install`")


def _wait_http(url: str, proc: subprocess.Popen[str], timeout_s: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"defacto dashboard exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout_s:.0f}s")
        time.sleep(0.05)


def test_page_in_headless_chromium(redis_url: str, tmp_path: Path) -> None:
    _chromium_or_fail()
    from playwright.sync_api import sync_playwright

    pop = Population(redis_url, unique_prefix("browser"), scale=0.01, days=2.0, warmup_hours=24)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "dashboard", "--redis", redis_url, "--prefix", pop.prefix,
         "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_http(f"{base}/healthz", proc, 20)
        outside: list[str] = []
        errors: list[str] = []
        navigations: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 900})

                def only_local(route: Any) -> None:
                    url = route.request.url
                    if url.startswith(("http://127.0.0.1:", "data:")):
                        route.continue_()
                    else:
                        outside.append(url)
                        route.abort()

                context.route("**/*", only_local)
                page = context.new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                # (the 404s of "nothing published yet" are expected and logged by Chromium)
                page.on("console", lambda m: errors.append(m.text) if m.type == "error"
                        and "status of 404" not in m.text else None)
                page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)
                page.goto(base + "/")
                # nothing published yet: the page says so, then fills in by itself
                banner = page.locator("#banner")
                banner.wait_for(state="visible", timeout=10_000)
                assert "Waiting for the first snapshot" in banner.inner_text()
                assert "waiting for the first snapshot" in page.locator("#region-table").inner_text()
                pop.publish_in_thread(20)
                snap = json.loads(redis.Redis.from_url(redis_url).get(f"{pop.prefix}:snapshot"))
                page.wait_for_function(
                    "at => document.getElementById('snapshot-at').dataset.at === at",
                    arg=snap["at"], timeout=20_000)
                assert banner.is_hidden()

                # the table shows every region of the snapshot, sorted by absolute gap
                rows = page.locator("#region-table tbody tr[data-region]")
                rows.first.wait_for(timeout=15_000)
                assert rows.count() == len(snap["regions"])
                shown = rows.evaluate_all("rs => rs.map(r => r.dataset.region)")
                assert set(shown) == set(snap["regions"])
                gaps = [abs(snap["regions"][r]["gap"]) for r in shown if snap["regions"][r]["gap"] is not None]
                assert gaps == sorted(gaps, reverse=True)
                for rid in shown[:3]:
                    assert snap["regions"][rid]["name"] in page.locator(
                        f'#region-table tr[data-region="{rid}"]').inner_text()
                flagged = page.locator("#region-table tr.flag-over, #region-table tr.flag-under")
                assert flagged.count() >= 1  # alerts are highlighted
                assert page.locator("#alerts-active li[data-region]").count() >= 1
                # figures with thousands separators; null (suppressed) figures as a word, no number
                cols = rows.evaluate_all("rs => rs.map(r => [...r.cells].map(c => c.innerText))")
                for rid, tds in zip(shown, cols, strict=True):
                    fig = snap["regions"][rid]
                    for i, key in ((1, "present"), (2, "resident"), (3, "registered")):
                        want = f"{fig[key]:,}" if fig[key] is not None else \
                            "no registry" if key == "registered" else "suppressed"
                        assert tds[i].split("\n")[0] == want, (rid, key, tds[i])

                # hexagons drawn; suppressed cells hatched and labelled, never with a number
                cells = page.locator("#map path.cell")
                assert cells.count() > 10
                sup = page.locator("#map path.cell.suppressed")
                assert sup.count() > 0
                assert sup.first.get_attribute("fill") == "url(#hatch)"
                assert sup.first.get_attribute("data-value") is None
                assert "suppressed (< 15 devices)" in page.locator("#legend").inner_text()
                # hover the largest cell on screen of each kind: the tooltip shows the value
                for selector, expect in (("#map path.cell:not(.suppressed)", "people present"),
                                         ("#map path.cell.suppressed", "suppressed")):
                    box = page.evaluate("""sel => {
                        let best = null, area = -1;
                        for (const c of document.querySelectorAll(sel)) {
                          const r = c.getBoundingClientRect();
                          const x = r.x + r.width / 2, y = r.y + r.height / 2;
                          if (r.width * r.height > area && document.elementFromPoint(x, y) === c) {
                            area = r.width * r.height; best = {x, y};
                          }
                        }
                        return best;
                    }""", selector)
                    assert box is not None, f"no {selector} visible on the map"
                    page.mouse.move(box["x"], box["y"])
                    tip = page.locator("#tooltip")
                    tip.wait_for(state="visible", timeout=5_000)
                    text = tip.inner_text()
                    assert expect in text, text
                    if expect == "suppressed":
                        assert not re.search(r"\d+ people", text)
                page.mouse.move(5, 5)

                # the chart: default region = largest absolute gap; a click picks another
                top = shown[0]
                assert snap["regions"][top]["name"] in page.locator("#chart-title").inner_text()
                assert page.locator("#chart path").count() >= 3
                other = next(r for r in shown[1:] if r != "unassigned")
                page.locator(f'#region-table tr[data-region="{other}"]').click()
                page.wait_for_function(
                    "name => document.getElementById('chart-title').textContent.includes(name)",
                    arg=snap["regions"][other]["name"], timeout=10_000)
                page.locator("#map-reset").click()
                page.locator(f'#region-table tr[data-region="{top}"]').click()  # zooms the map to it
                page.wait_for_function(
                    "name => document.getElementById('chart-title').textContent.includes(name)",
                    arg=snap["regions"][top]["name"], timeout=10_000)

                # health: lag, rejections, last update
                assert page.locator("#h-lag").inner_text() == "123"
                assert page.locator("#h-rejected").inner_text() == "2"
                assert "bad ts" in page.locator("#reasons").inner_text()
                assert "ago" in page.locator("#h-age").inner_text()

                # migration: the published periods, by the selector; a period without figures
                # says so (2 days of data cannot house anyone: a UR needs 10 nights)
                raw = redis.Redis.from_url(redis_url).hgetall(f"{pop.prefix}:flows")
                flows = {k.decode(): json.loads(v) for k, v in raw.items()}
                assert {"week", "month"} <= set(flows)
                for period in ("week:closed", "week", "month"):
                    page.select_option("#mig-period", period)
                    sub = page.locator("#mig-sub").inner_text()
                    mig_rows = page.locator("#mig-table tbody tr[data-region]")
                    if period in flows:
                        assert flows[period]["period"] in sub, (period, sub)
                        assert mig_rows.count() >= 1
                        assert "—" in page.locator("#mig-table").inner_text()  # suppressed
                    else:
                        assert mig_rows.count() == 0
                        assert "no migration figures" in page.locator("#mig-table").inner_text()
                assert "suppressed" in page.locator("#mig-rural").inner_text()
                # the net-migration map: one region shape per leaf region, hatched when suppressed
                geometry = json.loads(urllib.request.urlopen(base + "/api/geometry", timeout=10).read())
                parents = {f["properties"].get("parent") for f in geometry["features"]}
                leaves = {f["id"] for f in geometry["features"]} - parents
                shapes = page.locator("#mig-map path.region")
                assert set(shapes.evaluate_all("ps => ps.map(p => p.dataset.region)")) == leaves
                assert page.locator("#mig-map path.region.suppressed").count() == len(leaves)

                # a new snapshot is shown without reloading the page; its flows (2 days of data
                # suppress all of them) are served with two leaf regions shown, to see the map
                # colour a gain and a loss
                gain, loss = sorted(leaves)[:2]

                def with_figures(route: Any) -> None:
                    doc = route.fetch().json()
                    regions = doc["periods"]["week"]["regions"]
                    regions[gain]["net_per_1000"], regions[loss]["net_per_1000"] = 4.25, -1.5
                    rural = {"balance": -120, "balance_lo": -180, "balance_hi": -60}
                    doc["history"] = [
                        {"period": p, "kind": "week", "dating": "detected", "first_night": f,
                         "rural": dict(rural, balance=b) if b is None or b < 0 else
                         {"balance": b, "balance_lo": 10, "balance_hi": 50}}
                        for p, f, b in (("2026-W06", "2026-02-02", -120), ("2026-W07", "2026-02-09", None),
                                        ("2026-W08", "2026-02-16", 30))]
                    route.fulfill(json=doc)

                page.route("**/api/flows", with_figures)
                shown_at = page.locator("#snapshot-at").inner_text()
                assert shown_at == snap["at"][:16].replace("T", " ") + " UTC"
                page.evaluate("window.__noReload = 1")
                done = pop.publish_in_thread(1)
                assert len(done) == 1
                page.wait_for_function(
                    "old => document.getElementById('snapshot-at').textContent !== old",
                    arg=shown_at, timeout=20_000)
                page.select_option("#mig-period", "week")
                fills = {rid: page.locator(f'#mig-map path[data-region="{rid}"]').get_attribute("fill")
                         for rid in (gain, loss)}
                assert fills[gain] != fills[loss] and "hatch" not in fills[gain] + fills[loss], fills
                assert page.locator("#mig-map path.region.suppressed").count() == len(leaves) - 2
                assert "+4.25" in page.locator("#mig-legend").inner_text()
                # the rural balance of past weeks: a loss, a suppressed week, a gain
                bars = page.locator("#mig-history g[data-period]")
                assert bars.evaluate_all("gs => gs.map(g => [g.dataset.period, g.getAttribute('class')])") == [
                    ["2026-W06", "shown"], ["2026-W07", "suppressed"], ["2026-W08", "shown"]]
                assert page.locator("#mig-history rect.loss").count() == 1
                assert page.locator("#mig-history rect.gain").count() == 1
                assert "2 shown" in page.locator("#mig-history-note").inner_text()
                page.select_option("#mig-period", "month:effective")
                assert "No month has settled yet" in page.locator("#mig-history-note").inner_text()
                page.unroute("**/api/flows")
                assert page.evaluate("window.__noReload") == 1
                new_at = page.locator("#snapshot-at").get_attribute("data-at")
                assert new_at == json.loads(redis.Redis.from_url(redis_url).get(
                    f"{pop.prefix}:snapshot"))["at"] != snap["at"]
                assert rows.count() == len(snap["regions"])
                assert len(navigations) == 1, navigations

                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                target = os.environ.get("DEFACTO_SCREENSHOT")
                if target:
                    page.screenshot(path=target, full_page=True)

                # a snapshot from an older worker (no gap interval, no threshold) still renders:
                # failure injection of a rolling upgrade, announced like a real publish
                r = redis.Redis.from_url(redis_url)
                old = json.loads(r.get(f"{pop.prefix}:snapshot"))
                for fig in old["regions"].values():
                    fig.pop("gap_ratio_lo"), fig.pop("gap_ratio_hi")
                old.pop("gap_threshold")
                old["at"] = "2030-01-01T00:00:00Z"
                r.set(f"{pop.prefix}:snapshot", json.dumps(old))
                r.xadd(f"{pop.prefix}:snapshots", {"at": old["at"], "at_ms": 1_893_456_000_000,
                                                   "published_at": old["published_at"]})
                page.wait_for_function(
                    "() => document.getElementById('snapshot-at').dataset.at === '2030-01-01T00:00:00Z'",
                    timeout=20_000)
                assert rows.count() == len(old["regions"])
                assert "NaN" not in page.locator("body").inner_text()
            finally:
                browser.close()
        assert outside == [], f"the page tried to reach outside 127.0.0.1: {outside}"
        assert errors == [], errors
    finally:
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                rc = proc.wait(timeout=15)
            else:
                rc = proc.returncode
            err = proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
            pop.cleanup()
    assert f"http://127.0.0.1:{port}/" in err
    assert rc == 130, err


def test_a_dashboard_whose_redis_does_not_answer_says_so_at_start(
        capsys: pytest.CaptureFixture[str]) -> None:
    from stream.web.dashboard import _say_if_redis_is_down

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    asyncio.run(_say_if_redis_is_down(url, url))
    err = capsys.readouterr().err
    assert err.startswith(f"defacto: warning: Redis {url} did not answer (")
    assert err.rstrip().endswith("check --redis / REDIS_URL") and err.count("\n") == 1
