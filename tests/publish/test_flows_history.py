"""P:flows:history holds every final period, also those that became final at the same snapshot
as a later one (a gap in the data), as ``replay --flows-out`` writes every one."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from estimators.engine import Engine, EngineConfig
from estimators.migration import (
    MigrationConfig,
    MigrationTally,
    PeriodCounts,
    period_label,
    period_nights,
)
from estimators.regions import RegionSet, regions_from_geojson
from estimators.tally import Tally
from estimators.units import DAY_MS
from stream.local.embedded import Service, start_redis
from stream.publish.redis_publisher import PublishSettings, SnapshotPublisher

pytestmark = pytest.mark.integration

WEEK = 2944  # three weeks from here: two closed at once after a gap, the third open


@pytest.fixture(scope="module")
def store() -> Iterator[Service]:
    svc = start_redis()
    yield svc
    svc.stop()


def _week(number: int, n: int, last_night: int) -> PeriodCounts:
    first, _ = period_nights("week", number)
    p = PeriodCounts("week", number, n, last_night=last_night, first_night=first)
    p.cohort[:] = 500
    p.end_stock[:] = 500
    p.start_stock[:] = 500
    return p


def test_weeks_closed_at_one_snapshot_are_all_in_the_history(
        store: Service, regions_doc: dict[str, Any]) -> None:
    regions: RegionSet = regions_from_geojson(regions_doc)
    n = len(regions.ids)
    _, last = period_nights("week", WEEK + 2)
    night = last - 2  # inside the open third week
    at = (night + 1) * DAY_MS + 6 * 3_600_000  # after that night's close
    engine = Engine(regions, EngineConfig(migration=MigrationConfig()))
    t = engine.tally(at)
    t.migration = MigrationTally([_week(WEEK, n, night), _week(WEEK + 1, n, night),
                                  _week(WEEK + 2, n, night)])
    tally = Tally.from_bytes(t.to_bytes())
    prefix = f"defacto-test-history:{secrets.token_hex(4)}"
    sync = redis.Redis.from_url(store.url)

    async def run() -> list[int]:
        client = aioredis.from_url(store.url)
        try:
            pub = SnapshotPublisher(client, Engine(regions, EngineConfig(
                migration=MigrationConfig())), 1, DAY_MS, None, PublishSettings(prefix=prefix))
            await pub.write_tallies(0, [tally], at, at - 1)
            return await pub.try_publish()
        finally:
            await client.aclose()

    try:
        assert asyncio.run(run()) == [at]
        flows = {k.decode(): json.loads(v) for k, v in sync.hgetall(f"{prefix}:flows").items()}
        first, second = period_label("week", WEEK), period_label("week", WEEK + 1)
        assert flows["week:closed"]["period"] == second  # only the latest closed one
        history = {k.decode() for k in sync.hkeys(f"{prefix}:flows:history")}
        assert history == {f"week:detected:{first}", f"week:detected:{second}"}
    finally:
        for k in sync.scan_iter(f"{prefix}:*"):
            sync.delete(k)
