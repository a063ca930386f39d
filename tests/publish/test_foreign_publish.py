"""Foreign-SIM documents: devices and people, suppression, the long-stayers line, the Prometheus
gauges, and P:foreign written in the snapshot's transaction."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import redis.asyncio as aioredis

from estimators.engine import Engine, EngineConfig
from estimators.foreign import (
    CLASSES,
    CountryFactor,
    ForeignConfig,
    ForeignFigureConfig,
    ForeignPeriod,
    ForeignTally,
    estimate_foreign,
)
from estimators.mcc import CountryTable
from estimators.migration import period_of
from estimators.regions import RegionSet, regions_from_geojson
from estimators.tally import Tally
from estimators.units import DAY_MS
from estimators.warmup import PeriodWarmUp
from stream.cli.offline import usual_residents_doc
from stream.local.embedded import Service, start_redis
from stream.publish.foreign import (
    SNAPSHOT_FIELD,
    add_foreign_line,
    period_foreign,
    published_foreign,
)
from stream.publish.metrics import WorkerMetrics
from stream.publish.redis_publisher import PublishSettings, SnapshotPublisher

COUNTRIES = ("CN", "KG", "KZ", "RU", "UZ", "XX")
WARM = PeriodWarmUp(None, None, None, None)  # nothing observed: every period warming
T0 = 1_772_409_600_000  # 2026-03-02T00:00Z
NIGHT = T0 // DAY_MS + 3
SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "flows.schema.json").read_text())
CLS = {c: i for i, c in enumerate(CLASSES)}


def _period(regions: RegionSet, kind: str = "week") -> ForeignPeriod:
    """RU: 200 arrivals in north, 100 staying (60 short, 40 long, 40 usual residents); UZ: 30 in
    south (short); KG: 5 in rural (too few for its own row: rolled into other, which is then
    under k)."""
    r = {rid: i for i, rid in enumerate(regions.ids)}
    c = {cc: i for i, cc in enumerate(COUNTRIES)}
    p = ForeignPeriod(kind, period_of(NIGHT, kind), len(COUNTRIES), len(regions.ids),
                      last_night=NIGHT, first_night=NIGHT - 3, settles_on=NIGHT + 20,
                      revised_night=NIGHT)
    p.arrivals[c["RU"], r["north"]] = 200
    p.arrivals[c["UZ"], r["south"]] = 30
    p.arrivals[c["KG"], r["rural"]] = 5
    p.stock[c["RU"], r["north"], CLS["short"]] = 60
    p.stock[c["RU"], r["north"], CLS["long"]] = 40
    p.stock[c["UZ"], r["south"], CLS["short"]] = 30
    p.stock[c["KG"], r["rural"], CLS["short"]] = 5
    p.departures[c["RU"], r["north"], CLS["short"]] = 100
    p.nights[c["RU"], r["north"], CLS["short"]] = 400
    p.long_stay[c["RU"], r["north"]] = 40
    p.usual_resident[c["RU"], r["north"]] = 40
    return p


@pytest.fixture
def regions(regions_doc: dict[str, Any]) -> RegionSet:
    return regions_from_geojson(regions_doc)


def test_a_document_in_devices_with_suppression(regions: RegionSet) -> None:
    fig = ForeignFigureConfig(min_country_devices=20)
    doc = period_foreign(_period(regions), COUNTRIES, regions, T0, fig, ForeignConfig(), WARM)
    jsonschema.validate(doc, SCHEMA)
    assert doc["countries"] == ["RU", "UZ", "other", "*"] and doc["unit"] == "devices"
    assert doc["people_countries"] == []
    ru = doc["totals"]["RU"]
    assert ru["arrivals"] == {"devices": 200, "people": None, "lo": None, "hi": None}
    assert ru["by_class"]["stock"]["long"]["devices"] == 40
    assert doc["regions"]["north"]["usual_resident"]["devices"] == 40
    assert doc["regions"]["city"]["countries"]["RU"]["stock"]["devices"] == 100  # parent: sum
    # KG's 5 devices are "other", under k: hidden, and so is the smallest shown country in the
    # all-countries line of rural (else 5 = total - shown)
    assert doc["totals"]["other"]["arrivals"]["devices"] is None
    assert doc["regions"]["rural"]["arrivals"]["devices"] is None
    assert doc["totals"]["*"]["arrivals"]["devices"] == 235
    for line in doc["totals"].values():
        for name in ("arrivals", "stock", "departures"):
            v = line[name]["devices"]
            assert v is None or v >= 15
    # nights need k device-nights per night evaluated: 400 over 4 nights passes, not 10 x 4
    assert doc["totals"]["RU"]["nights"]["devices"] == 400


def test_people_only_where_a_country_factor_is_configured(regions: RegionSet) -> None:
    fig = ForeignFigureConfig(min_country_devices=20)
    factors = [CountryFactor("RU", 2.0, 0.1)]
    doc = period_foreign(_period(regions), COUNTRIES, regions, T0, fig, ForeignConfig(), WARM, factors)
    jsonschema.validate(doc, SCHEMA)
    assert doc["unit"] == "people" and doc["people_countries"] == ["RU"]
    ru = doc["totals"]["RU"]["arrivals"]
    assert ru["people"] == 400 and ru["lo"] < 400 < ru["hi"]
    assert doc["totals"]["UZ"]["arrivals"]["people"] is None
    assert doc["totals"]["*"]["arrivals"]["people"] is None  # not every country has a factor
    everyone = period_foreign(_period(regions), COUNTRIES, regions, T0, fig, ForeignConfig(), WARM,
                              [CountryFactor("*", 1.5)])
    assert everyone["people_countries"] == ["RU", "UZ", "other", "*"]
    assert everyone["totals"]["*"]["arrivals"]["people"] == round(235 * 1.5)


def test_the_long_stayers_line_beside_resident(regions: RegionSet) -> None:
    tally = ForeignTally(COUNTRIES, [_period(regions, "week"), _period(regions, "month")])
    docs = published_foreign(tally, regions, T0, ForeignFigureConfig(), ForeignConfig(), WARM)
    assert set(docs) == {"week", "month"}
    snap: dict[str, Any] = {"regions": {rid: {"resident": 1} for rid in regions.ids}}
    add_foreign_line(snap, docs)
    assert snap["regions"]["north"]["foreign_usual_residents"] == 40
    assert snap["regions"]["city"]["foreign_usual_residents"] == 40
    assert snap["regions"]["south"]["foreign_usual_residents"] is None
    assert snap["regions"]["north"]["foreign_usual_residents_people"] is None
    off: dict[str, Any] = {"regions": {"north": {}}}
    add_foreign_line(off, None)  # foreign stays off: nothing added
    assert off == {"regions": {"north": {}}}


def test_foreign_gauges_with_a_small_label_set(regions: RegionSet) -> None:
    tally = ForeignTally(COUNTRIES, [_period(regions, "week"), _period(regions, "month")])
    fig = ForeignFigureConfig(min_country_devices=20)
    docs = published_foreign(tally, regions, T0, fig, ForeignConfig(), WARM)
    m = WorkerMetrics()
    m.show_foreign(docs)
    text = m.exposition().decode()
    assert 'defacto_foreign_arrivals{country="RU",window="week"} 200.0' in text
    assert 'defacto_foreign_arrivals{country="all",window="month"} 235.0' in text
    assert 'defacto_foreign_stock{class="long",country="RU"} 40.0' in text
    assert 'defacto_foreign_stock{class="all",country="all"} 135.0' in text
    assert 'defacto_foreign_usual_residents{region="north"} 40.0' in text
    assert 'country="KG"' not in text and 'country="other"' not in text  # rolled up, under k
    assert 'defacto_foreign_usual_residents{region="south"}' not in text
    labels = {line.split("{")[1].split("}")[0] for line in text.splitlines()
              if line.startswith("defacto_foreign_arrivals{")}
    # UZ's arrivals are hidden too: beside the hidden "other", they would give it away
    assert labels == {f'country="{c}",window="{w}"' for c in ("RU", "all")
                      for w in ("week", "month")}
    assert 'defacto_foreign_stock{class="short",country="RU"} 60.0' in text
    m.show_foreign({})  # nothing published any more: every series goes
    text = m.exposition().decode()
    assert "defacto_foreign_arrivals{" not in text and "defacto_foreign_stock{" not in text


@pytest.fixture(scope="module")
def store() -> Iterator[Service]:
    svc = start_redis()
    yield svc
    svc.stop()


@pytest.mark.integration
def test_p_foreign_is_written_with_the_snapshot(store: Service, regions: RegionSet) -> None:
    prefix = f"defacto-test-foreign:{secrets.token_hex(4)}"
    at = T0 + 4 * DAY_MS
    cfg = EngineConfig(foreign=ForeignConfig(), foreign_figures=ForeignFigureConfig(
        min_country_devices=20))
    tallies = []
    table = CountryTable.from_pairs([460, 437, 401, 250, 434], list(COUNTRIES[:5]))
    for part in range(2):  # each partition holds half of every count
        engine = Engine(regions, cfg, countries=table)
        t = engine.tally(at)
        half = _period(regions)
        for name in ("arrivals", "stock", "departures", "nights", "long_stay",
                     "usual_resident"):
            a = getattr(half, name)
            a[:] = a // 2 + (a % 2) * part
        t.foreign = ForeignTally(table.countries, [half])
        tallies.append(Tally.from_bytes(t.to_bytes()))
        assert tallies[-1].foreign is not None
    sync = redis.Redis.from_url(store.url)

    async def body(client: aioredis.Redis) -> list[int]:
        pub = SnapshotPublisher(client, Engine(regions, cfg, countries=table), 2, DAY_MS, None,
                                PublishSettings(prefix=prefix))
        for part, t in enumerate(tallies):
            await pub.write_tallies(part, [t], at, at - 1)
        return await pub.try_publish()

    async def run() -> list[int]:
        client = aioredis.from_url(store.url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    try:
        assert asyncio.run(run()) == [at]
        got = {k.decode(): json.loads(v) for k, v in sync.hgetall(f"{prefix}:foreign").items()}
        assert set(got) == {"week"}
        jsonschema.validate(got["week"], SCHEMA)
        assert got["week"]["totals"]["RU"]["arrivals"]["devices"] == 200  # summed partitions
        snap = json.loads(sync.get(f"{prefix}:snapshot"))
        assert snap["regions"]["north"]["foreign_usual_residents"] == 40
        region = json.loads(sync.hget(f"{prefix}:regions", "north"))
        assert region["foreign_usual_residents"] == 40
        assert got["week"]["totals"]["*"]["stock"]["devices"] == 135
        # final documents are kept by later snapshots under this deployment's epoch only
        assert sync.get(f"{prefix}:periods:epoch") == sync.hget(f"{prefix}:deployment", "epoch")
    finally:
        for k in sync.scan_iter(f"{prefix}:*"):
            sync.delete(k)


@pytest.mark.parametrize("factors", [(), (CountryFactor("*", 1.37, 0.1),),
                                     (CountryFactor("RU", 2.0, 0.1),)])
def test_the_long_stayers_line_is_the_one_of_the_whole_document(
        regions: RegionSet, factors: tuple[CountryFactor, ...]) -> None:
    """Replay builds the snapshot's line from the open week's usual residents alone
    (:func:`~stream.cli.offline.usual_residents_doc`): the same line as from the whole document."""
    periods = [_period(regions, "week"), _period(regions, "month")]
    ru, uz, kg = (COUNTRIES.index(c) for c in ("RU", "UZ", "KG"))
    north, south, rural = (regions.ids.index(r) for r in ("north", "south", "rural"))
    for p in periods:  # long stayers and usual residents in three regions, one of them under k
        p.stock[ru, north, CLS["long"]], p.usual_resident[ru, north] = 140, 123
        p.stock[uz, south, CLS["long"]], p.usual_resident[uz, south] = 40, 37
        p.stock[kg, rural, CLS["long"]], p.usual_resident[kg, rural] = 3, 3
    tally = ForeignTally(COUNTRIES, periods)
    figures = ForeignFigureConfig(min_country_devices=20)
    docs = published_foreign(tally, regions, T0, figures, ForeignConfig(), WARM, factors)
    whole: dict[str, Any] = {"regions": {rid: {} for rid in regions.ids}}
    add_foreign_line(whole, docs)
    fe = estimate_foreign(tally.published()[SNAPSHOT_FIELD], COUNTRIES, regions, factors, figures)
    short: dict[str, Any] = {"regions": {rid: {} for rid in regions.ids}}
    add_foreign_line(short, {SNAPSHOT_FIELD: usual_residents_doc(fe, regions.ids)})
    assert json.dumps(short) == json.dumps(whole)
    line = whole["regions"]
    assert line["north"]["foreign_usual_residents"] == 123
    assert line["rural"]["foreign_usual_residents"] is None  # under k
    if factors and factors[0].country == "*":
        assert line["north"]["foreign_usual_residents_people"] == round(123 * 1.37)
    else:
        assert line["north"]["foreign_usual_residents_people"] is None
