"""A real Prometheus server scrapes a real worker fed with the astana scenario: the gap alert of
``deploy/prometheus/rules/defacto.rules.yml`` fires for Astana, and not for a region whose
registry matches its population.

The only change to the shipped rules is every ``for:`` shortened to 1 s (the shipped durations
are hours) so the test does not wait for them; ``promtool test rules`` covers the durations.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from livekit import ROOT, Workers, wait_for

from stream.cli import main
from stream.local.embedded import Service, create_topic, free_port

pytestmark = pytest.mark.integration  # real broker, Redis, Prometheus or Chromium

RULES = ROOT / "deploy" / "prometheus" / "rules" / "defacto.rules.yml"
MATCHING = "kokshetau"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """astana at 1/500 over 1.1 days, calibrated on day 1; the registry of one region is set to
    its true resident population so it must not alert, while Astana's stays 1.5 M-like."""
    out = tmp_path_factory.mktemp("prom")
    sim = out / "sim"
    assert main(["simulate", "astana", "--scale", "0.002", "--days", "1.1", "--seed", "11",
                 "--out", str(sim)]) == 0
    assert main(["calibrate", str(sim / "pings.jsonl"), "--regions", str(sim / "regions.geojson"),
                 "--cells", str(sim / "cells.csv"), "--reference", str(sim / "reference.csv"),
                 "--to", "2026-03-03T00:00:00Z", "--out", str(out / "calibration.csv")]) == 0
    truth = [json.loads(line) for line in (sim / "truth.jsonl").read_text().splitlines()]
    with open(sim / "registry.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["region"] == MATCHING:
            row["registered"] = str(truth[-1]["regions"][MATCHING]["resident"])
    with open(out / "registry.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["region", "registered"])
        w.writeheader()
        w.writerows(rows)
    (out / "key").write_text("prometheus-test-key-0123456789abcdef\n")
    return out


def _fast_rules(tmp: Path) -> Path:
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A Prometheus server on 127.0.0.1 with the shipped rules, scraping one worker port."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus server is not installed: apt-get install prometheus "
                    "(`make test` does this on Debian)")
    target = free_port()
    port = free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(_fast_rules(tmp_path))],
              "scrape_configs": [{"job_name": "defacto",
                                  "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", target
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _api(base: str, path: str, **query: str) -> Any:
    url = f"{base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())["data"]
    except OSError:
        return None


def test_gap_alert_fires_for_astana_only(scenario: Path, broker: Service, redis_url: str,
                                         prometheus: tuple[str, int], tmp_path: Path) -> None:
    base, port = prometheus
    sim = scenario / "sim"
    name = f"p{uuid.uuid4().hex[:10]}"
    workers = Workers(tmp_path, broker.url, redis_url, f"pings-{name}", f"defacto-test:{name}", [
        "--regions", str(sim / "regions.geojson"), "--cells", str(sim / "cells.csv"),
        "--registry", str(scenario / "registry.csv"), "--key-file", str(scenario / "key"),
        "--calibration", str(scenario / "calibration.csv")])
    r = redis.Redis.from_url(redis_url)
    try:
        create_topic(broker.url, workers.topic, 1)
        create_topic(broker.url, f"{workers.topic}.dead", 1)
        w = workers.start("w", web_port=port)
        assert main(["produce", str(sim / "pings.jsonl"), "--kafka", broker.url,
                     "--topic", workers.topic, "--quiet"]) == 0
        last = json.loads((sim / "truth.jsonl").read_text().splitlines()[-1])["at"]
        wait_for("the final snapshot", lambda: (r.get(f"{workers.prefix}:snapshot") or b"").find(
            f'"at":"{last}"'.encode()) >= 0, 120, (w,))

        def gap_alerts() -> list[dict[str, Any]] | None:
            data = _api(base, "alerts")
            alerts = [a for a in (data or {}).get("alerts", [])
                      if a["labels"].get("alertname") == "DefactoRegistryGap"]
            return alerts if any(a["labels"].get("region") == "astana" and a["state"] == "firing"
                                 for a in alerts) else None

        alerts = wait_for("DefactoRegistryGap firing for astana", gap_alerts, 60, (w,))
        assert MATCHING not in {a["labels"].get("region") for a in alerts}
        lower = _api(base, "query", query=f'defacto_gap_ratio_lower{{region="{MATCHING}"}}')
        upper = _api(base, "query", query=f'defacto_gap_ratio_upper{{region="{MATCHING}"}}')
        assert lower["result"] and upper["result"]  # scraped, so its silence means something
        assert float(lower["result"][0]["value"][1]) <= 0.10
        assert float(upper["result"][0]["value"][1]) >= -0.10
        active = r.hgetall(f"{workers.prefix}:alerts:active")
        assert b"astana" in active and MATCHING.encode() not in active
        assert json.loads(active[b"astana"])["direction"] == "over"
    finally:
        workers.stop_all()
        keys = list(r.scan_iter(f"{workers.prefix}:*"))
        if keys:
            r.delete(*keys)
