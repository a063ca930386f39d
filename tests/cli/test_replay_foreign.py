"""Foreign SIMs end to end offline: home_mcc through the decoder, the held pings and their
checkpoint; ``defacto replay`` writing the foreign-SIM periods to ``--flows-out`` and the
long-stayers line into the snapshots."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from estimators.engine import Engine, EngineConfig
from estimators.foreign import ForeignConfig
from estimators.units import HOUR_MS
from stream.cli import main
from stream.contract import Record
from stream.decode.validate import PingBatch, PingDecoder, ping_columns
from stream.estimate.partition import PartitionState
from stream.estimate.windows import WindowSettings
from stream.simulator import load_scenario, simulate, with_foreign, write_simulation
from stream.sources.mcc_table import load_mcc_table
from stream.sources.reference_files import load_regions

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
SCHEMAS = Path(__file__).parents[2] / "schemas"


def _engine(regions_file: Path) -> Engine:
    return Engine(load_regions(regions_file), EngineConfig(res=8, foreign=ForeignConfig()),
                  countries=load_mcc_table())


def _rows(n: int, mcc: int | None, ts: int = T0 + 1000) -> list[dict[str, Any]]:
    return [{"device": f"d{mcc}-{i}", "ts": ts + i, "operator": "40101", "home_mcc": mcc,
             "lat": 51.15, "lon": 71.45} for i in range(n)]


def test_the_decoder_keeps_home_mcc_on_every_path(regions_file: Path) -> None:
    engine = _engine(regions_file)
    rows = _rows(3, 434) + _rows(2, None) + _rows(2, 401)
    decoder = PingDecoder(engine, SECRET, now_ms=T0 + HOUR_MS)
    records = [Record(f"t:{i}", r, json.dumps(r), "") for i, r in enumerate(rows)]
    want = [434, 434, 434, -1, -1, 401, 401]
    batch = decoder.decode(records)
    assert batch.home_mcc.dtype == np.int16 and batch.home_mcc.tolist() == want
    cols = decoder.decode_columns(ping_columns(rows), str)
    assert cols.home_mcc.tolist() == want
    assert batch.select(np.array([True, False] * 3 + [True])).home_mcc.tolist() == [434, 434,
                                                                                   -1, 401]
    # built without it (older callers): all unknown
    bare = PingBatch(batch.device_key, batch.ts_ms, batch.opclass, batch.loc)
    assert bare.home_mcc.tolist() == [-1] * 7
    with pytest.raises(ValueError, match="home_mcc"):
        PingBatch(batch.device_key, batch.ts_ms, batch.opclass, batch.loc, home_mcc=np.zeros(2))


def test_held_pings_keep_home_mcc_through_a_checkpoint(regions_file: Path) -> None:
    settings = WindowSettings(every_ms=HOUR_MS, lateness_ms=600_000)
    ps = PartitionState("pings", 0, _engine(regions_file), SECRET, settings)
    decoder = PingDecoder(ps.engine, SECRET, now_ms=T0 + 3 * HOUR_MS)
    early = _rows(12, 401, T0 + 10 * 60_000)
    # after the 01:00 window end, watermark 00:40 + lateness: held
    late = _rows(3, 250, T0 + HOUR_MS + 5 * 60_000)
    records = [Record(f"t:{i}", r, json.dumps(r), "") for i, r in enumerate(early + late)]
    ps.windows.feed(decoder.decode(records), str)
    held = ps.windows.held()
    assert held is not None and held.home_mcc.tolist() == [250] * 3
    blob = ps.checkpoint()
    again = PartitionState("pings", 0, _engine(regions_file), SECRET, settings)
    again.restore(blob)
    got = again.windows.held()
    assert got is not None and got.home_mcc.tolist() == [250] * 3
    # a checkpoint written before home_mcc was kept: its held pings' SIMs are unknown
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "held_mcc"}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = PartitionState("pings", 0, _engine(regions_file), SECRET, settings)
    old.restore(buf.getvalue())
    got = old.windows.held()
    assert got is not None and got.home_mcc.tolist() == [-1] * 3


@pytest.fixture(scope="module")
def visitors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sc = with_foreign(load_scenario("astana"), arrivals_per_year=150_000 * 40)
    out = tmp_path_factory.mktemp("foreign")
    write_simulation(simulate(sc, scale=0.001, days=12, seed=4), out)
    return out


def _args(sim: Path) -> list[str]:
    return ["--regions", str(sim / "regions.geojson"), "--cells", str(sim / "cells.csv"),
            "--every", "6h"]


@pytest.fixture(scope="module")
def replayed(visitors: Path) -> tuple[Path, Path, str]:
    """The replay's flows and snapshots files, and what it wrote to stderr."""
    import contextlib

    flows, snaps = visitors / "flows.jsonl", visitors / "snaps.jsonl"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["replay", str(visitors / "pings.jsonl"), *_args(visitors), "--out",
                     str(snaps), "--flows-out", str(flows)]) == 0
    return flows, snaps, err.getvalue()


def test_replay_writes_foreign_periods_and_the_long_stayers_line(
        replayed: tuple[Path, Path, str]) -> None:
    flows, snaps, err = replayed
    assert "foreign SIMs of" in err
    schema = json.loads((SCHEMAS / "flows.schema.json").read_text())
    docs = [json.loads(line) for line in flows.read_text().splitlines()]
    for doc in docs:
        jsonschema.validate(doc, schema)
    foreign = [d for d in docs if d.get("topic") == "foreign"]
    migration = [d for d in docs if d.get("topic") is None]
    assert migration and all(d["dating"] in ("detected", "effective") for d in migration)
    keys = [(d["kind"], d["period"]) for d in foreign]
    assert len(keys) == len(set(keys))  # each period once
    # 2026-03-02 .. 03-14: weeks 9 (the first night's), 10 and 11 settled; week 11's
    # departures settle 4 nights after it: not before the data ends
    assert {(d["period"], d["final"]) for d in foreign if d["kind"] == "week"} == {
        ("2026-W09", True), ("2026-W10", True), ("2026-W11", False)}
    # a SIM first seen within 72 h of the start (00:00Z on the 2nd) may have been there all
    # along: arrivals are warm from the 5th's night on, so week 11 is the first warm week
    assert {d["period"]: d["warming_up"] for d in foreign if d["kind"] == "week"} == {
        f"2026-W{w:02d}": {"arrivals": w < 11, "observed_since": "2026-03-02T00:00:00Z",
                           "arrivals_ready_from": "2026-03-05"} for w in (9, 10, 11)}
    # and no period of 12 days holds two residence windows: every flow table is warming
    assert all(d["warming_up"]["relocations"] and d["warming_up"]["relocations_ready_from"]
               == "2026-04-27" for d in migration)
    march = next(d for d in foreign if d["period"] == "2026-03")
    assert march["warming_up"]["arrivals"]
    assert not march["final"] and not march["closed"] and march["unit"] == "devices"
    total = march["totals"]["*"]
    assert total["arrivals"]["devices"] > 100 and total["arrivals"]["people"] is None
    shown = [c for c in march["countries"] if c not in ("other", "*")]
    assert "RU" in shown and "KZ" not in march["countries"]
    # every published arrival of a country adds up with the others (nothing hidden here)
    arr = [march["totals"][c]["arrivals"]["devices"] for c in march["countries"][:-1]]
    if None not in arr:
        assert sum(arr) == total["arrivals"]["devices"]
    # a figure under k is null, never a small number
    k = march["settings"]["k"]
    for region in march["regions"].values():
        for line in region["countries"].values():
            for fig in line.values():
                assert fig["devices"] is None or fig["devices"] >= k
    # the snapshots carry the long-stayers line (null: 12 days are far from 183 nights)
    snap_schema = json.loads((SCHEMAS / "snapshot.schema.json").read_text())
    last = [json.loads(line) for line in snaps.read_text().splitlines()][-1]
    jsonschema.validate(last, snap_schema)
    assert all(r["foreign_usual_residents"] is None for r in last["regions"].values())
    assert all("foreign_usual_residents_people" in r for r in last["regions"].values())


def test_replay_prints_the_foreign_table_without_flows_out(
        visitors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(visitors / "pings.jsonl"), *_args(visitors)]) == 0
    out = capsys.readouterr().out
    assert "Foreign SIMs 2026-W11" in out and "Foreign SIMs 2026-03" in out
    month = next(line for line in out.splitlines() if line.startswith("Foreign SIMs 2026-03"))
    assert "warming up: arrivals before 2026-03-05 include SIMs that were in the country " \
        "already" in month
    week = next(line for line in out.splitlines() if line.startswith("Foreign SIMs 2026-W11"))
    assert "warming up" not in week
    assert "usual resident" in out


def test_the_flows_schema_tells_foreign_from_migration_documents(
        replayed: tuple[Path, Path, str]) -> None:
    schema = json.loads((SCHEMAS / "flows.schema.json").read_text())
    flows = replayed[0]
    doc = next(json.loads(line) for line in flows.read_text().splitlines()
               if '"topic":"foreign"' in line)
    broken = {**doc, "totals": {"*": {"arrivals": {"devices": 3}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    without_topic = {k: v for k, v in doc.items() if k != "topic"}  # then it must be migration
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(without_topic, schema)
