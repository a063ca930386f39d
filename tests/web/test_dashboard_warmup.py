"""The dashboard while the figures warm up, in headless Chromium: instead of a gap it says
"warming up, about N h left", flags no region, and shows the gaps once the figures are warm.
Redis is written by the real publisher from a cold engine (:class:`Population` of
``test_dashboard`` with no warm-up hours)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from test_dashboard import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    Population,
    _chromium_or_fail,
    _wait_http,
    unique_prefix,
)

from stream.local.embedded import free_port, redis_service

pytestmark = pytest.mark.integration  # real Redis and Chromium


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    svc = redis_service(prefer_local=True)
    yield svc.url
    svc.stop()


def _rows(page: Any) -> list[list[str]]:
    return page.locator("#region-table tbody tr[data-region]").evaluate_all(
        "rs => rs.map(r => [...r.cells].map(c => c.innerText))")


def test_page_says_warming_up_instead_of_a_gap(redis_url: str) -> None:
    _chromium_or_fail()
    from playwright.sync_api import sync_playwright

    pop = Population(redis_url, unique_prefix("warmup"), scale=0.003, days=1.2, warmup_hours=0)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "dashboard", "--redis", redis_url, "--prefix",
         pop.prefix, "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    r = redis.Redis.from_url(redis_url)
    try:
        _wait_http(f"{base}/healthz", proc, 20)
        pop.publish_in_thread(3)  # a cold start, three hours in: 05:00-08:00 in Astana
        snap = json.loads(r.get(f"{pop.prefix}:snapshot"))
        assert snap["warming_up"]["present"] and snap["warming_up"]["resident"]
        assert any(f["resident"] is not None and f["registered"] for f in snap["regions"].values())
        with urllib.request.urlopen(f"{base}/api/state", timeout=10) as resp:
            state = json.loads(resp.read())
        assert state["snapshot"]["warming_up"] == snap["warming_up"]
        assert state["alerts"]["active"] == []
        errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(base + "/")
                page.wait_for_function(
                    "at => document.getElementById('snapshot-at').dataset.at === at",
                    arg=snap["at"], timeout=20_000)
                note = page.locator("#warmup-note")
                assert note.is_visible()
                # 3 h observed: present is ready at 24 h, resident after the first whole night (25 h)
                text = note.inner_text()
                assert "present figures warming up, about 21 h left" in text
                assert "registry gaps warming up, about 22 h left" in text
                rows = _rows(page)
                assert len(rows) == len(snap["regions"])
                for tds in rows:
                    assert tds[4] == "warming up" and tds[5] == "—", tds  # gap, gap ratio
                    assert "warming up, about 22 h left" in tds[6]
                    assert "%" not in tds[5] + tds[6]
                assert page.locator("#region-table tr.flag-over, #region-table tr.flag-under"
                                    ).count() == 0
                assert page.locator("#region-table td.warming").count() == 2 * len(rows)

                pop.publish_in_thread(22)  # 25 h: the first whole night has closed
                snap = json.loads(r.get(f"{pop.prefix}:snapshot"))
                assert snap["warming_up"]["present"] is snap["warming_up"]["resident"] is False
                page.wait_for_function(
                    "at => document.getElementById('snapshot-at').dataset.at === at",
                    arg=snap["at"], timeout=30_000)
                assert note.is_hidden()
                rows = _rows(page)
                gaps = [tds[5] for tds in rows if "%" in tds[5]]
                assert gaps and not any("warming" in " ".join(tds) for tds in rows)
                assert page.locator("#region-table td.warming").count() == 0
                assert errors == []
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        r.close()
        pop.cleanup()
