"""Gap alerts: the pure crossing rules, and their record in Redis through the real publisher."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from estimators.alerts import (
    OVER,
    UNDER,
    GapAlert,
    gap_crossings,
    update_gap_alerts,
)
from estimators.engine import Engine
from stream.local.embedded import redis_service
from stream.publish.metrics import WorkerMetrics
from stream.publish.redis_publisher import PublishSettings, SnapshotPublisher, _open_alerts
from stream.publish.snapshot import gap_alerts
from stream.sources.reference_files import load_regions

IDS = ["astana", "almaty", "rural"]
NAMES = ["Astana", "Almaty", "Rural"]


def test_whole_interval_must_be_beyond_the_threshold() -> None:
    # over by 60..80 %; straddles +10 %; under by 12..20 %; no registry (NaN)
    lo = np.array([0.6, -0.05, -0.2, np.nan])
    hi = np.array([0.8, 0.2, -0.12, np.nan])
    direction, magnitude = gap_crossings(lo, hi, 0.10)
    assert direction.tolist() == [1, 0, -1, 0]
    assert magnitude.tolist() == pytest.approx([0.6, 0.0, -0.12, 0.0])


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        gap_crossings(np.zeros(1), np.zeros(1), 0.0)


def _step(active: dict[str, GapAlert], dirs: list[int], mags: list[float], at_ms: int
          ) -> tuple[dict[str, GapAlert], list[GapAlert], list[GapAlert]]:
    return update_gap_alerts(active, IDS, NAMES, np.array(dirs), np.array(mags), at_ms, 0.1)


def test_alert_opens_tracks_peak_and_closes() -> None:
    active, opened, closed = _step({}, [1, 0, -1], [0.3, 0, -0.2], 1_000)
    assert [(a.region, a.direction) for a in opened] == [("astana", OVER), ("rural", UNDER)]
    assert not closed
    active, opened, closed = _step(active, [1, 0, -1], [0.5, 0, -0.15], 2_000)
    assert not opened and not closed
    assert active["astana"].since_ms == 1_000 and active["astana"].peak == 0.5
    assert active["rural"].magnitude == -0.15 and active["rural"].peak == -0.2
    active, opened, closed = _step(active, [1, 0, 0], [0.2, 0, 0], 3_000)
    assert [(a.region, a.since_ms, a.until_ms, a.peak) for a in closed] == [("rural", 1_000, 3_000, -0.2)]
    assert set(active) == {"astana"} and active["astana"].magnitude == 0.2
    assert active["astana"].peak == 0.5


def test_direction_flip_closes_and_reopens() -> None:
    active, _, _ = _step({}, [1, 0, 0], [0.3, 0, 0], 1_000)
    active, opened, closed = _step(active, [-1, 0, 0], [-0.3, 0, 0], 2_000)
    assert [a.direction for a in closed] == [OVER] and [a.direction for a in opened] == [UNDER]
    assert active["astana"].since_ms == 2_000


def test_an_older_snapshot_changes_nothing() -> None:
    active, _, _ = _step({}, [1, 0, 0], [0.3, 0, 0], 2_000)
    again, opened, closed = _step(active, [0, 0, 0], [0, 0, 0], 1_000)
    assert again == active and not opened and not closed


@pytest.fixture
def store() -> Iterator[str]:
    svc = redis_service(prefer_local=True)
    try:
        yield svc.url
    finally:
        svc.stop()


def _snapshot(resident: dict[str, tuple[int, int, int]], registered: dict[str, int]) -> dict:
    regions = {}
    for rid, (mid, lo, hi) in resident.items():
        reg = registered[rid]
        regions[rid] = {"name": rid.title(), "resident": mid, "resident_lo": lo, "resident_hi": hi,
                        "registered": reg, "gap_ratio": round((mid - reg) / reg, 4),
                        "gap_ratio_lo": round((lo - reg) / reg, 4),
                        "gap_ratio_hi": round((hi - reg) / reg, 4)}
    return {"at": "2026-03-02T01:00:00Z", "regions": regions}


def test_snapshot_gap_alerts() -> None:
    reg = {"astana": 1000, "almaty": 1000}
    first = _snapshot({"astana": (1300, 1200, 1400), "almaty": (1000, 950, 1050)}, reg)
    still, opened, closed = gap_alerts({}, first, 3_600_000, 0.1)
    assert [a.region for a in opened] == ["astana"] and not closed
    assert still["astana"].magnitude == pytest.approx(0.2)
    second = _snapshot({"astana": (1080, 1050, 1110), "almaty": (1000, 950, 1050)}, reg)
    still, opened, closed = gap_alerts(still, second, 7_200_000, 0.1)
    assert not still and [(a.region, a.until_ms) for a in closed] == [("astana", 7_200_000)]


@pytest.mark.integration
def test_publisher_writes_health_and_geometry(store: str, regions_file: Path) -> None:
    """Lag, batch times and summed ping counts, and the region outlines, in a real Redis."""
    prefix = f"defacto-test-alerts:{secrets.token_hex(4)}"
    sync = redis.Redis.from_url(store)
    regions = load_regions(regions_file)

    async def run() -> None:
        client = aioredis.from_url(store)
        pub = SnapshotPublisher(client, Engine(regions), 2, 3_600_000, None,
                                PublishSettings(prefix=prefix))
        await pub.publish_geometry(regions)
        await pub.write_health({0: 5, 1: 0}, {0: 1.5}, {"accepted": 10, "rejected:bad_ts": 2})
        await pub.write_health({0: 3}, {}, {"accepted": 5})
        await client.aclose()

    try:
        asyncio.run(run())
        health = {k.decode(): v.decode() for k, v in sync.hgetall(f"{prefix}:health").items()}
        assert health == {"lag:0": "3", "lag:1": "0", "seen:0": "1.5"}
        counts = {k.decode(): int(v) for k, v in sync.hgetall(f"{prefix}:counts").items()}
        assert counts == {"accepted": 15, "rejected:bad_ts": 2}
        geo = json.loads(sync.get(f"{prefix}:geometry"))
        assert [f["id"] for f in geo["features"]] == ["city", "north", "south", "rural"]
        rural = geo["features"][3]["geometry"]
        assert rural["type"] == "MultiLineString" and len(rural["coordinates"]) == 2  # ring + hole
    finally:
        for k in sync.scan_iter(f"{prefix}:*"):
            sync.delete(k)


def test_metrics_export_both_ends_of_the_gap_interval() -> None:
    m = WorkerMetrics()
    m.configure(window_s=3600, gap_threshold=0.1)
    snap = _snapshot({"astana": (1300, 1200, 1400)}, {"astana": 1000})
    snap["regions"]["astana"].update(present=1500)
    m.show_snapshot(snap, 1_700_000_000.0)
    text = m.exposition().decode()
    assert 'defacto_gap_ratio_lower{region="astana"} 0.2' in text
    assert 'defacto_gap_ratio_upper{region="astana"} 0.4' in text
    assert "defacto_gap_threshold_ratio 0.1" in text and "defacto_window_seconds 3600.0" in text
    assert "defacto_last_publish_timestamp_seconds 1.7e+09" in text


def test_unreadable_open_alerts_are_dropped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    """An open alert written by another version (extra field) or edited by hand must not stop
    publishing: known fields are kept, an unreadable entry is logged and dropped."""
    good = GapAlert("astana", "Astana", OVER, 1_000, 2_000, 0.3, 0.4, 0.1).to_dict()
    raw = {b"astana": json.dumps({**good, "acknowledged_by": "ops"}).encode(),
           b"almaty": b"{not json", b"rural": json.dumps({"region": "rural"}).encode()}
    alerts = _open_alerts(raw)
    assert list(alerts) == ["astana"] and alerts["astana"].to_dict() == good
    assert "almaty" in caplog.text and "rural" in caplog.text
