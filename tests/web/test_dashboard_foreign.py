"""The dashboard's arrivals-from-abroad view in headless Chromium: arrivals by country, stock
by stay class and long-stayers per region, from what the real publisher wrote to Redis."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from estimators.tally import Tally
from estimators.units import HOUR_MS
from stream.decode.validate import PingDecoder
from stream.estimate.engine_options import EngineOptions, build_engine
from stream.estimate.windows import EventTimeWindows, WindowSettings
from stream.local.embedded import free_port
from stream.publish.redis_publisher import PublishSettings, SnapshotPublisher
from stream.simulator import load_scenario, simulate, with_foreign, write_simulation
from stream.sources.reference_files import ReferencePaths, load_reference
from stream.sources.simulation import simulation_columns

pytestmark = pytest.mark.integration  # real Redis and Chromium

SECRET = b"dashboard-foreign-secret-01234567"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
EVERY = 6 * HOUR_MS


def _publish(redis_url: str, prefix: str, tmp: Path) -> None:
    """Nine days of Astana with many visitors, replayed in 6-hour windows; the last four
    windows published by the real publisher (one partition)."""
    sc = with_foreign(load_scenario("astana"), arrivals_per_year=150_000 * 60)
    sim = simulate(sc, scale=0.001, days=9, seed=6)
    write_simulation(sim, tmp)
    reference = load_reference(ReferencePaths(tmp / "regions.geojson", tmp / "registry.csv",
                                              cells=tmp / "cells.csv"))
    engine = build_engine(EngineOptions(), reference)
    tallies: list[Tally] = []
    windows = EventTimeWindows(engine, WindowSettings(every_ms=EVERY),
                               on_window=lambda b: tallies.append(engine.tally(b)))
    decoder = PingDecoder(engine, SECRET)
    for chunk in sim.hours():
        windows.feed(decoder.decode_columns(simulation_columns(sim, chunk), str), str)
    windows.finish()
    assert len(tallies) > 4

    async def go() -> None:
        client = aioredis.from_url(redis_url)
        try:
            pub = SnapshotPublisher(client, build_engine(EngineOptions(), reference), 1, EVERY,
                                    reference.registry, PublishSettings(prefix=prefix))
            await pub.publish_geometry(reference.regions)
            for t in tallies[-4:]:
                await pub.write_tallies(0, [t], t.at_ms, t.at_ms - 1)
                assert await pub.try_publish() == [t.at_ms]
            await pub.write_health({0: 0}, {0: time.time()}, {"accepted": 1})
        finally:
            await client.aclose()

    asyncio.run(go())


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


def _shown(fig: dict[str, Any]) -> str:
    return f"{fig['devices']:,}" if fig["devices"] is not None else "suppressed"


def test_arrivals_from_abroad_in_headless_chromium(redis_url: str, tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: the dashboard's browser test needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    prefix = f"defacto-test-fgn-web:{secrets.token_hex(4)}"
    sync = redis.Redis.from_url(redis_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "dashboard", "--redis", redis_url, "--prefix", prefix,
         "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _publish(redis_url, prefix, tmp_path / "sim")
        docs = {k.decode(): json.loads(v) for k, v in sync.hgetall(f"{prefix}:foreign").items()}
        assert {"week", "month", "week:closed"} <= set(docs)
        _wait_http(f"{base}/healthz", proc, 20)
        errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(base + "/")
                rows = page.locator("#fgn-countries tbody tr[data-country]")
                rows.first.wait_for(timeout=20_000)
                week = docs["week"]
                # arrivals by country: one row per country of the document, figures as published
                assert rows.evaluate_all("rs => rs.map(r => r.dataset.country)") == week["countries"]
                cells = rows.evaluate_all("rs => rs.map(r => [...r.cells].map(c => c.innerText))")
                for country, tds in zip(week["countries"], cells, strict=True):
                    t = week["totals"][country]
                    assert tds[1:] == [_shown(t["arrivals"]), _shown(t["departures"]),
                                       _shown(t["stock"])], country
                assert "RU" in week["countries"]
                assert week["period"] in page.locator("#fgn-sub").inner_text()
                # stock by stay class: a bar per class, the suppressed ones drawn as such
                bars = page.locator("#fgn-classes g[data-class]")
                assert bars.count() == 4
                by_class = week["totals"]["*"]["by_class"]["stock"]
                for cls, fig in by_class.items():
                    g = page.locator(f'#fgn-classes g[data-class="{cls}"]')
                    assert g.get_attribute("class") == ("suppressed" if fig["devices"] is None
                                                        else "shown"), cls
                assert by_class["short"]["devices"] is not None
                # long-stayers per region beside resident population
                regions = page.locator("#fgn-regions tbody tr[data-region]")
                assert regions.count() >= len(week["regions"]) - 1
                snap = json.loads(sync.get(f"{prefix}:snapshot"))
                rid = regions.first.get_attribute("data-region")
                tds = regions.first.locator("td").all_inner_texts()
                want = snap["regions"][rid]["resident"]
                assert tds[1] == (f"{want:,}" if want is not None else "suppressed")
                assert tds[3] == _shown(week["regions"][rid]["usual_resident"])
                assert "usual residents with a foreign sim" in \
                    page.locator("#fgn-note").inner_text().lower()
                # another period: the last closed week
                page.select_option("#fgn-period", "week:closed")
                closed = docs["week:closed"]
                page.wait_for_function(
                    "p => document.getElementById('fgn-sub').innerText.startsWith(p)",
                    arg=closed["period"], timeout=5_000)
                first = page.locator("#fgn-countries tbody tr[data-country]").first
                assert first.get_attribute("data-country") == closed["countries"][0]
                # a period not published: said so
                missing = next((p for p in ("month:closed", "month:settled") if p not in docs), None)
                if missing is not None:
                    page.select_option("#fgn-period", missing)
                    assert "no foreign-SIM figures" in page.locator("#fgn-countries").inner_text()
                assert not errors, errors
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k in sync.scan_iter(f"{prefix}:*"):
            sync.delete(k)
