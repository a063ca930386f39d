"""Decoding ping files, rejecting bad rows with reasons, replay windows and the CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimators.engine import Engine, EngineConfig
from estimators.units import DAY_MS, HOUR_MS
from stream.cli import main
from stream.contract import Record
from stream.decode.validate import PingDecoder
from stream.estimate.windows import EventTimeWindows, WindowSettings
from stream.publish.flows import flows_table
from stream.publish.snapshot import engine_snapshot
from stream.simulator import load_scenario, simulate, write_simulation
from stream.sources.ping_files import read_records
from stream.sources.reference_files import load_regions
from stream.timefmt import parse_duration_ms

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z


def _cells(tmp_path: Path) -> Path:
    path = tmp_path / "cells.csv"
    path.write_text("operator,cell,lat,lon\n40101,A,51.15,71.45\n40101,B,51.05,71.45\n"
                    "40102,A,50.9,71.0\n")
    return path


def _engine(regions_file: Path, tmp_path: Path) -> Engine:
    from stream.sources.reference_files import load_cell_plan

    engine = Engine(load_regions(regions_file), EngineConfig(res=8))
    plan = load_cell_plan(_cells(tmp_path))
    engine.load_cell_plan(plan.operator, plan.cell, plan.lat, plan.lon)
    return engine


def _feed(windows: EventTimeWindows, decoder: PingDecoder, records: list[Record]) -> None:
    windows.feed(decoder.decode(records), lambda i: records[i].source, rows_read=len(records))


def _rec(i: int, fields: dict | None, raw: str = "") -> Record:
    return Record(f"t:{i}", fields, raw or json.dumps(fields), "" if fields else "malformed JSON")


GOOD = {"device": "d1", "ts": T0 + 1000, "operator": "40101", "home_mcc": 401, "cell": "A"}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (None, "malformed_json"),
        ({**GOOD, "device": ""}, "bad_device"),
        ({**GOOD, "device": "x" * 129}, "bad_device"),
        ({k: v for k, v in GOOD.items() if k != "device"}, "missing_device"),
        ({k: v for k, v in GOOD.items() if k != "ts"}, "missing_ts"),
        ({**GOOD, "ts": "yesterday"}, "bad_ts"),
        ({**GOOD, "ts": 1000}, "ts_out_of_range"),
        ({**GOOD, "ts": T0 + 3 * HOUR_MS}, "ts_in_future"),
        ({**GOOD, "operator": 40101}, "bad_operator"),
        ({**GOOD, "home_mcc": "kz"}, "bad_home_mcc"),
        ({**GOOD, "cell": "nope"}, "unknown_cell"),
        ({**GOOD, "operator": "40177"}, "unknown_cell"),
        ({k: v for k, v in GOOD.items() if k != "cell"}, "missing_location"),
        ({**{k: v for k, v in GOOD.items() if k != "cell"}, "lat": 91.0, "lon": 71.0},
         "bad_coordinates"),
        ({**{k: v for k, v in GOOD.items() if k != "cell"}, "lat": "51", "lon": 71.0},
         "bad_coordinates"),
    ],
)
def test_each_bad_row_is_rejected_with_its_reason(regions_file: Path, tmp_path: Path,
                                                  fields: dict | None, reason: str) -> None:
    engine = _engine(regions_file, tmp_path)
    decoder = PingDecoder(engine, SECRET, now_ms=T0 + HOUR_MS)
    batch = decoder.decode([_rec(1, GOOD), _rec(2, fields, "{oops")])
    assert len(batch) == 1
    assert [(r.source, r.reason) for r in batch.rejects] == [("t:2", reason)]
    assert "d1" not in batch.rejects[0].record or reason == "malformed_json"


def test_device_keys_hide_pseudonyms_and_separate_operators(regions_file: Path,
                                                             tmp_path: Path) -> None:
    engine = _engine(regions_file, tmp_path)
    recs = [_rec(1, GOOD), _rec(2, {**GOOD, "ts": T0 + 5}),
            _rec(3, {**GOOD, "operator": "40102", "cell": "A"})]
    batch = PingDecoder(engine, SECRET, now_ms=T0 + HOUR_MS).decode(recs)
    assert batch.device_key.dtype == np.uint64
    assert batch.device_key[0] == batch.device_key[1] != batch.device_key[2]
    other = PingDecoder(engine, b"another-secret-key-0000", now_ms=T0 + HOUR_MS).decode(recs)
    assert other.device_key[0] != batch.device_key[0]


def _write_pings(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _population(n: int, ts: int, cell: str, prefix: str) -> list[dict]:
    return [{"device": f"{prefix}{i}", "ts": ts + i, "operator": "40101", "home_mcc": 401,
             "cell": cell} for i in range(n)]


def test_replay_windows_lateness_and_too_late(regions_file: Path, tmp_path: Path) -> None:
    engine = _engine(regions_file, tmp_path)
    snaps: list[dict] = []
    rejected: list[str] = []
    decoder = PingDecoder(engine, SECRET, now_ms=T0 + 48 * HOUR_MS)
    rp = EventTimeWindows(engine, WindowSettings(every_ms=HOUR_MS, lateness_ms=600_000),
                          on_window=lambda b: snaps.append(engine_snapshot(engine, b, None)),
                          on_reject=lambda r: rejected.append(r.reason))
    first = _population(20, T0 + 10 * 60_000, "A", "n")           # 00:10, north
    # 5 min out of order but within lateness: still in the 01:00 snapshot
    slightly_late = _population(20, T0 + 55 * 60_000, "B", "s")
    early_next = _population(1, T0 + HOUR_MS + 5 * 60_000, "A", "e")  # 01:05: watermark 00:55
    later = _population(20, T0 + HOUR_MS + 20 * 60_000, "A", "x")  # 01:20
    _feed(rp, decoder, [_rec(i, r) for i, r in enumerate(first + early_next)])
    assert snaps == []
    _feed(rp, decoder, [_rec(100 + i, r) for i, r in enumerate(slightly_late + later)])
    assert [s["at"] for s in snaps] == ["2026-03-02T01:00:00Z"]
    assert snaps[0]["regions"]["north"]["devices"] == 20
    assert snaps[0]["regions"]["south"]["devices"] == 20
    # a ping for 00:30 arriving now is too late for the published 01:00 window
    _feed(rp, decoder, [_rec(999, {**GOOD, "ts": T0 + 30 * 60_000})])
    assert rejected == ["too_late"]
    rp.finish()
    assert [s["at"] for s in snaps] == ["2026-03-02T01:00:00Z", "2026-03-02T02:00:00Z"]
    assert snaps[1]["regions"]["north"]["devices"] == 41
    assert rp.stats.accepted == 61 and rp.stats.rejected["too_late"] == 1


def test_replay_is_identical_for_shuffled_input(regions_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = []
    for h in range(4):
        for cell, prefix in (("A", "a"), ("B", "b"), ("A", "b")):
            rows += _population(30, T0 + h * HOUR_MS + int(rng.integers(0, 3_000_000)), cell,
                                prefix)
    rows.sort(key=lambda r: r["ts"])
    shuffled = list(rows)
    # shuffle inside 5-minute buckets (less than the allowed lateness)
    shuffled.sort(key=lambda r: (r["ts"] // 300_000, rng.random()))
    outs = []
    for name, data in (("sorted", rows), ("shuffled", shuffled)):
        pings = _write_pings(tmp_path / f"{name}.jsonl", data)
        out = tmp_path / f"{name}.snap.jsonl"
        rc = main(["replay", str(pings), "--regions", str(regions_file), "--cells",
                   str(_cells(tmp_path)), "--out", str(out), "--k", "5"])
        assert rc == 0
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    assert len(outs[0].splitlines()) == 4


def test_cli_reports_bad_rows_in_one_line_and_keeps_them(regions_file: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    rows = _population(20, T0, "A", "d")
    pings = tmp_path / "p.jsonl.gz"
    with gzip.open(pings, "wt") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        fh.write("{not json\n")
        fh.write(json.dumps({**rows[0], "cell": "ZZZ"}) + "\n")
    out = tmp_path / "s.jsonl"
    rc = main(["replay", str(pings), "--regions", str(regions_file), "--cells",
               str(_cells(tmp_path)), "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "22 rows read, 20 pings accepted, 2 rejected" in err
    assert "malformed_json 1" in err and "unknown_cell 1" in err
    rejects = [json.loads(x) for x in Path(f"{out}.rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == ["malformed_json", "unknown_cell"]
    assert all(r["source"].startswith(str(pings)) for r in rejects)
    assert '"d0"' not in Path(f"{out}.rejects.jsonl").read_text()
    assert "hint: no --cells given" not in err  # the plan was given: that cell is unknown
    # without the plan every row is rejected: said, and the exit code says it too
    assert main(["replay", str(pings), "--regions", str(regions_file), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "hint: no --cells given" in err
    assert "no snapshot: the input has no accepted pings" in err


@pytest.mark.parametrize("reader", ["thread", "process"])
def test_a_file_rejected_whole_is_named_and_ends_with_code_3(
        regions_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        reader: str) -> None:
    good = _write_pings(tmp_path / "op1.jsonl", _population(30, T0, "A", "g"))
    seconds = _write_pings(tmp_path / "op2.jsonl", [
        {**r, "ts": r["ts"] // 1000} for r in _population(20, T0 + 60_000, "B", "s")])
    out = tmp_path / "s.jsonl"
    args = ["--regions", str(regions_file), "--cells", str(_cells(tmp_path)), "--reader", reader]
    assert main(["replay", str(good), str(seconds), *args, "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "50 rows read, 30 pings accepted, 20 rejected (ts_out_of_range 20)" in err
    assert (f"warning: {seconds}: all its 20 rows rejected (ts_out_of_range 20), missing from "
            "every figure; first ts_out_of_range: ") in err
    assert "seconds since 1970? defacto reads milliseconds (multiply by 1000)" in err
    assert f"exit code 3: 1 input file(s) rejected whole ({seconds})" in err
    last = json.loads(out.read_text().splitlines()[-1])  # the outputs are written all the same
    assert last["regions"]["north"]["devices"] == 30
    assert main(["replay", str(good), *args, "--out", str(out)]) == 0
    assert "warning: " not in capsys.readouterr().err.replace("warning: no --calibration", "")
    # nothing accepted, or nothing at all: no snapshot, with --out as without
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for pings in (seconds, empty):
        assert main(["replay", str(pings), *args, "--out", str(out)]) == 1
        assert "no snapshot: the input has no accepted pings" in capsys.readouterr().err
    # valid pings outside --from/--to (here within the lateness before it, so they are read)
    # are not rejects: they do not dilute a file's share of them
    early = _write_pings(tmp_path / "op3.jsonl", _population(30, T0 - 5 * 60_000, "A", "e") + [
        {**r, "ts": r["ts"] // 1000} for r in _population(20, T0 + 60_000, "B", "s")])
    assert main(["replay", str(good), str(early), *args, "--from", "2026-03-02T00:00:00Z",
                 "--out", str(out)]) == 3
    assert f"warning: {early}: all its 20 rows rejected (ts_out_of_range 20)" in \
        capsys.readouterr().err
    reference = tmp_path / "reference.csv"
    reference.write_text("region,population\nnorth,100\nsouth,100\n")
    assert main(["calibrate", str(seconds), *args, "--reference", str(reference), "--out",
                 str(tmp_path / "cal.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("defacto: error: no accepted pings (20 rows read, 0 pings accepted, 20 "
                          "rejected (ts_out_of_range 20) -> ")
    assert "; first ts_out_of_range: " in err and "(multiply by 1000)" in err
    assert err.count("\n") == 1


def test_csv_pings_and_latlon_pings(regions_file: Path, tmp_path: Path) -> None:
    pings = tmp_path / "p.csv"
    lines = ["device,ts,operator,home_mcc,cell,lat,lon"]
    lines += [f"v{i},{T0 + i},40177,250,,51.15,71.45" for i in range(16)]
    lines += [f"w{i},{T0 + i},40101,,A,," for i in range(16)]
    lines += ["bad,notanumber,40101,401,A,,"]
    pings.write_text("\n".join(lines) + "\n")
    records = [r for chunk in read_records([pings]) for r in chunk]
    assert len(records) == 33
    engine = _engine(regions_file, tmp_path)
    snaps: list[dict] = []
    decoder = PingDecoder(engine, SECRET, now_ms=T0 + HOUR_MS)
    rp = EventTimeWindows(engine, WindowSettings(every_ms=HOUR_MS),
                          on_window=lambda b: snaps.append(engine_snapshot(engine, b, None)))
    _feed(rp, decoder, records)
    rp.finish()
    assert rp.stats.rejected == {"bad_ts": 1}
    north = snaps[-1]["regions"]["north"]
    assert north["devices"] == 32 and north["present"] == 32  # no calibration: 1 per device
    # 05:00 local is night: the 16 domestic devices get a home there, the 16 roamers never do
    assert north["resident"] == 16


def test_cli_errors_are_one_line(regions_file: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["replay", str(tmp_path / "missing.jsonl"), "--regions", str(regions_file)])
    assert rc == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    bad_cal = tmp_path / "cal.csv"
    bad_cal.write_text("region,operator,factor\natlantis,*,2\n")
    pings = _write_pings(tmp_path / "p.jsonl", _population(3, T0, "A", "d"))
    rc = main(["replay", str(pings), "--regions", str(regions_file), "--calibration",
               str(bad_cal)])
    assert rc == 2
    assert "unknown region 'atlantis'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["replay", str(pings), "--regions", str(regions_file), "--horizon", "soon"])
    capsys.readouterr()
    assert main(["replay", str(pings), "--regions", str(regions_file), "--stale", "15m"]) == 2
    assert capsys.readouterr().err == ("defacto: error: --stale must be whole 10-minute steps "
                                       "(e.g. 10m, 30m, 1h), got 15m\n")


def test_durations() -> None:
    assert parse_duration_ms("90") == 90_000
    assert parse_duration_ms("6h") == 21_600_000
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("1d") == 86_400_000


def test_replay_writes_migration_flows(regions_file: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """40 devices sleep in the north, then move to the rural ring; 40 stay: the week of the
    switch shows the move, its books balance, and every object fits flows.schema.json."""
    import jsonschema

    rows = []
    for d in range(80):
        for night in range(45):
            lat, lon = (51.15, 71.45) if d >= 40 or night < 20 else (50.7, 71.0)
            rows.append({"device": f"m{d}", "ts": T0 + night * DAY_MS + 18 * HOUR_MS + d,
                         "operator": "40101", "home_mcc": 401, "lat": lat, "lon": lon})
    # a device that pings every hour keeps the stream going between nights (no ping is then
    # more than --lateness ahead of the stream)
    rows += [{"device": "hb", "ts": T0 + h * HOUR_MS, "operator": "40101", "home_mcc": 401,
              "lat": 51.15, "lon": 71.45} for h in range(45 * 24)]
    rows.sort(key=lambda r: r["ts"])
    pings = _write_pings(tmp_path / "moves.jsonl", rows)
    flows = tmp_path / "flows.jsonl"
    assert main(["replay", str(pings), "--regions", str(regions_file), "--every", "6h",
                 "--flows-out", str(flows), "--out", str(tmp_path / "snaps.jsonl")]) == 0
    assert "migration flows of" in capsys.readouterr().err
    schema = json.loads((Path(__file__).parents[2] / "schemas" / "flows.schema.json").read_text())
    docs = [json.loads(line) for line in flows.read_text().splitlines()]
    for doc in docs:
        jsonschema.validate(doc, schema)
    weeks = {d["period"]: d for d in docs if d["kind"] == "week" and d["dating"] == "detected"}
    # south of the window's majority from night 20 on: detected on night 34 (2026-04-05, W14)
    moved = [d for d in weeks.values() if d["regions"]["rural"]["in_devices"]]
    assert [d["period"] for d in moved] == ["2026-W14"]
    week = moved[0]
    assert week["final"] and week["regions"]["rural"]["in_devices"] == 40
    assert week["regions"]["north"]["out_devices"] == 40
    assert week["regions"]["rural"]["inflow"] == 40 and week["regions"]["north"]["outflow"] == 40
    # a net needs both of its sides published (its outflow of zero devices is not)
    assert week["regions"]["rural"]["net"] is None and week["regions"]["north"]["net"] is None
    assert {(c["from"], c["to"], c["devices"]) for c in week["od"]} == {("north", "rural", 40)}
    assert week["rural"]["balance"] is None  # the reverse flow rests on no device: not shown
    # dated by effective night, the move is in week 12 (first night in the rural ring: Sunday
    # 22 March), still revisable at the end: relocations effective then can be detected until
    # 27 nights after the week
    by_effective = [d for d in docs if d["dating"] == "effective"
                    and d["regions"]["rural"]["in_devices"]]
    assert [(d["period"], d["final"], d["revisable_until"]) for d in by_effective] == \
        [("2026-W12", False, "2026-04-18"), ("2026-03", False, "2026-04-27")]
    assert all(d["regions"]["rural"]["in_devices"] == 40 for d in by_effective)
    assert all(d["revisable_until"] is None for d in docs if d["dating"] == "detected")
    assert not docs[-1]["final"]  # the periods still open come last
    # the data begins at 05:00 on Monday 2 March, inside the Sunday night of week 9
    assert docs[0]["period"] == "2026-W09" and not docs[0]["complete"]
    # ... which is evaluated on its last hour only: neither it nor March (whose first night it
    # is) was observed from a whole first night
    assert docs[0]["observed_from"] is None
    march = [d for d in docs if d.get("topic") is None and d["period"] == "2026-03"]
    assert march and all(not d["complete"] and d["observed_from"] == "2026-03-02" for d in march)
    assert ", observed from 2026-03-02 only" in flows_table(march[0])
    assert ", no whole night of it observed" in flows_table(docs[0])
    # two whole 28-night residence windows are observed by the night of 27 April: periods
    # from then on have warm relocations; confirmed moves 90 nights later. 45 days hold none:
    # every period is flagged, and the table says so
    flows_docs = [d for d in docs if d.get("topic") is None]
    assert all(d["warming_up"]["relocations"] and d["warming_up"]["confirmed"]
               for d in flows_docs)
    assert {(d["warming_up"]["relocations_ready_from"], d["warming_up"]["confirmed_ready_from"])
            for d in flows_docs} == {("2026-04-27", "2026-07-26")}
    assert "warming up: fewer nights observed than two 28-night windows" in flows_table(week)


# --- the columnar reader gives the snapshots of the record reader (issue 14) ------------------

def _feed_records(windows: EventTimeWindows, decoder: PingDecoder, pings: Any,
                  period: Any = None, reading: Any = None, outcomes: Any = None) -> None:
    """The replay's reading loop before the columnar reader: records, checked row by row (the
    columnar chunks read ahead, ``reading``, are not used; nor ``outcomes``: these tests' files
    have no rejected row to warn about)."""
    for chunk in read_records(pings):
        windows.feed(decoder.decode(chunk), lambda i, c=chunk: c[i].source, rows_read=len(chunk))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two simulated days of astana (about 200 k pings) as JSON Lines, CSV and gzip, and the
    JSON Lines split into one file per operator."""
    out = tmp_path_factory.mktemp("sim")
    sim = simulate(load_scenario("astana"), scale=0.001, days=2.0, seed=11)
    write_simulation(sim, out / "jsonl")
    write_simulation(sim, out / "csv", fmt="csv", gz=True)
    rows = (out / "jsonl" / "pings.jsonl").read_text().splitlines(keepends=True)
    by_operator: dict[str, list[str]] = {}
    for row in rows:
        by_operator.setdefault(json.loads(row)["operator"], []).append(row)
    for op, part in by_operator.items():
        (out / f"pings_{op}.jsonl").write_text("".join(part))
    with gzip.open(out / "pings.jsonl.gz", "wt") as fh:
        fh.writelines(rows)
    return out


def _replay_both(simulated: Path, pings: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 **options: Any) -> tuple[bytes, bytes, str, str]:
    from stream.cli import offline

    ref = simulated / "jsonl"
    reference = offline.ReferencePaths(regions=ref / "regions.geojson", cells=ref / "cells.csv",
                                       registry=ref / "registry.csv")
    key = tmp_path / "key"
    key.write_text("a-test-key-0123456789abcdef")
    out: list[bytes] = []
    summaries: list[str] = []
    for reader in ("columns", "records"):
        with monkeypatch.context() as mp:
            if reader == "records":
                mp.setattr(offline, "_feed_files", _feed_records)
                mp.setattr(offline, "_period", lambda *_a: None)
            snaps = tmp_path / f"snaps_{reader}.jsonl"
            result = offline.run_replay(offline.ReplayConfig(
                pings=tuple(pings), reference=reference, key_file=key, out=snaps,
                flows_out=tmp_path / f"flows_{reader}.jsonl", **options))
        out.append(snaps.read_bytes() + (tmp_path / f"flows_{reader}.jsonl").read_bytes())
        summaries.append(result.summary)
        # the result's last snapshot is the last one written, as a plain document
        assert result.last_snapshot == json.loads(snaps.read_bytes().splitlines()[-1])
        assert isinstance(result.last_snapshot["cells"], dict) and result.last_snapshot["cells"]
    return out[0], out[1], summaries[0], summaries[1]


@pytest.mark.parametrize("files", ["jsonl", "csv.gz", "jsonl.gz", "per operator"])
def test_columnar_replay_is_byte_identical_to_the_record_reader(
        simulated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: str) -> None:
    pings = {"jsonl": [simulated / "jsonl" / "pings.jsonl"],
             "csv.gz": [simulated / "csv" / "pings.csv.gz"],
             "jsonl.gz": [simulated / "pings.jsonl.gz"],
             "per operator": sorted(simulated.glob("pings_*.jsonl"))}[files]
    assert len(pings) >= (3 if files == "per operator" else 1)
    columns, records, summary_columns, summary_records = _replay_both(
        simulated, pings, tmp_path, monkeypatch)
    assert summary_columns == summary_records
    assert "pings accepted, 0 rejected" in summary_columns
    assert len(columns.splitlines()) > 40 and columns == records


def test_replay_with_a_period_skips_rows_and_gives_the_same_snapshots(
        simulated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--from``/``--to`` inside a 2-day file sorted within the lateness: the reader skips the
    rows before and after the period, the snapshots are those of reading everything."""
    first = json.loads((simulated / "jsonl" / "pings.jsonl").open().readline())["ts"]
    start = (first // HOUR_MS + 12) * HOUR_MS
    columns, records, summary_columns, summary_records = _replay_both(
        simulated, [simulated / "jsonl" / "pings.jsonl"], tmp_path, monkeypatch,
        start_ms=start, end_ms=start + 12 * HOUR_MS)
    assert columns == records
    read_columns_n = int(summary_columns.split(" rows read")[0].replace(",", ""))
    read_records_n = int(summary_records.split(" rows read")[0].replace(",", ""))
    assert read_columns_n < 0.7 * read_records_n  # the outside rows were never read
    assert "outside --from/--to (not used), 0 rejected" in summary_records


def test_calibrate_over_a_day_reads_less_and_fits_the_same_factors(
        simulated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``calibrate --from/--to`` over the second day of a 2-day file: the first day and what
    follows the period are not read (a line on stderr says which lines), the factors are those of
    reading the whole file."""
    ref = simulated / "jsonl"
    first = json.loads((ref / "pings.jsonl").open().readline())["ts"]
    day2 = (first // DAY_MS + 1) * DAY_MS
    key = tmp_path / "key"
    key.write_text("a-test-key-0123456789abcdef")
    argv = ["calibrate", str(ref / "pings.jsonl"), "--regions", str(ref / "regions.geojson"),
            "--cells", str(ref / "cells.csv"), "--reference", str(ref / "reference.csv"),
            "--key-file", str(key), "--from", "2026-03-03T00:00:00Z", "--to",
            "2026-03-03T18:00:00Z"]
    assert day2 == 1_772_496_000_000  # 2026-03-03
    assert main([*argv, "--out", str(tmp_path / "skip.csv")]) == 0
    err = capsys.readouterr().err
    from stream.cli import offline

    monkeypatch.setattr(offline, "_period", lambda *_a: None)
    assert main([*argv, "--out", str(tmp_path / "all.csv")]) == 0
    err_all = capsys.readouterr().err
    assert (tmp_path / "skip.csv").read_text() == (tmp_path / "all.csv").read_text()
    assert "not read (before --from - lateness)" in err and "past --to + lateness" in err
    assert err.count("before --from") == 1
    assert "not read" not in err_all
    monkeypatch.undo()
    open_end = [a for a in argv if a not in ("--to", "2026-03-03T18:00:00Z")]
    assert main([*open_end, "--out", str(tmp_path / "open.csv")]) == 0
    err_open = capsys.readouterr().err  # read to the end: the skip was said again from line 1
    assert err_open.count("before --from") == 1, err_open
    read = [int(e.split("defacto: ")[1].split(" rows read")[0].replace(",", ""))
            for e in (err, err_all)]
    assert read[0] < 0.6 * read[1]


def test_replay_marks_warming_figures_from_a_cold_start(simulated: Path, tmp_path: Path) -> None:
    """A replay starts cold: present is warming up for the activity window (24 h), resident and
    the gap until the first whole night has also been observed; warming snapshots have no gap.
    With --from, the observation starts at the first ping read."""
    import jsonschema

    from stream.timefmt import iso_utc, parse_iso_ms

    ref = simulated / "jsonl"
    args = ["--regions", str(ref / "regions.geojson"), "--cells", str(ref / "cells.csv"),
            "--registry", str(ref / "registry.csv")]
    out = tmp_path / "snaps.jsonl"
    assert main(["replay", str(ref / "pings.jsonl"), "--out", str(out), *args]) == 0
    snaps = [json.loads(line) for line in out.read_text().splitlines()]
    schema = json.loads((Path(__file__).parents[2] / "schemas" / "snapshot.schema.json")
                        .read_text())
    present_ready, resident_ready = T0 + DAY_MS, T0 + 25 * HOUR_MS  # 05:00 local + 24 h; night
    for snap in snaps:
        at = parse_iso_ms(snap["at"])
        warm = snap["warming_up"]
        assert warm == {"present": at < present_ready, "resident": at < resident_ready,
                        "observed_since": iso_utc(T0), "present_ready_at": iso_utc(present_ready),
                        "resident_ready_at": iso_utc(resident_ready)}, snap["at"]
        for fig in snap["regions"].values():
            assert fig["warming_up"] == {"present": warm["present"], "resident": warm["resident"]}
            if warm["resident"]:
                assert fig["gap"] is fig["gap_ratio"] is fig["gap_ratio_lo"] is None
            elif fig["resident"] is not None:
                assert fig["gap_ratio"] is not None
    jsonschema.validate(snaps[0], schema)
    assert sum(s["warming_up"]["resident"] for s in snaps) == 24 and len(snaps) > 30  # 01..24 h
    later = tmp_path / "later.jsonl"
    assert main(["replay", str(ref / "pings.jsonl"), "--out", str(later), "--from",
                 iso_utc(T0 + 6 * HOUR_MS), *args]) == 0
    first = json.loads(later.read_text().splitlines()[0])
    assert first["warming_up"]["observed_since"] == iso_utc(T0 + 6 * HOUR_MS)
    # 11:00 local: that evening's night is whole (closes at +25 h), before the activity window
    assert first["warming_up"]["resident_ready_at"] == iso_utc(T0 + 30 * HOUR_MS)


def test_a_to_beyond_the_data_adds_no_window_after_it(simulated: Path, tmp_path: Path) -> None:
    """``--to`` two days past the last ping: the snapshots end with the data (windows after it
    showed everybody leaving as their pings aged, and looked valid)."""
    from stream.timefmt import iso_utc, parse_iso_ms

    ref = simulated / "jsonl"
    args = ["--regions", str(ref / "regions.geojson"), "--cells", str(ref / "cells.csv")]
    last = max(json.loads(line)["ts"] for line in (ref / "pings.jsonl").open())
    plain, bounded = tmp_path / "plain.jsonl", tmp_path / "bounded.jsonl"
    assert main(["replay", str(ref / "pings.jsonl"), "--out", str(plain), *args]) == 0
    assert main(["replay", str(ref / "pings.jsonl"), "--out", str(bounded), "--to",
                 iso_utc(last + 2 * DAY_MS), *args]) == 0
    ats = [parse_iso_ms(json.loads(line)["at"]) for line in bounded.read_text().splitlines()]
    assert max(ats) <= last + HOUR_MS
    assert bounded.read_text() == plain.read_text()


def test_calibrate_warns_about_a_period_shorter_than_the_activity_window(
        simulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An hour of pings gives factors several times too high (devices not seen yet are
    missing): calibrate says so; a day does not; a --to past the data fits at the data's end."""
    from stream.timefmt import iso_utc

    ref = simulated / "jsonl"
    key = tmp_path / "key"
    key.write_text("a-test-key-0123456789abcdef")
    argv = ["calibrate", str(ref / "pings.jsonl"), "--regions", str(ref / "regions.geojson"),
            "--cells", str(ref / "cells.csv"), "--reference", str(ref / "reference.csv"),
            "--key-file", str(key)]
    assert main([*argv, "--to", iso_utc(T0 + HOUR_MS), "--out", str(tmp_path / "h.csv")]) == 0
    assert "less than --activity (24 h)" in capsys.readouterr().err
    assert main([*argv, "--to", iso_utc(T0 + DAY_MS), "--out", str(tmp_path / "d.csv")]) == 0
    assert "warning: the calibration period" not in capsys.readouterr().err
    last = max(json.loads(line)["ts"] for line in (ref / "pings.jsonl").open())
    assert main([*argv, "--out", str(tmp_path / "all.csv")]) == 0
    assert main([*argv, "--to", iso_utc(last + 3 * DAY_MS), "--out", str(tmp_path / "late.csv")]) == 0
    assert (tmp_path / "late.csv").read_text() == (tmp_path / "all.csv").read_text()


def test_only_real_regions_without_a_factor_are_warned_about(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Every calibrated run warned about ``unassigned`` (pings outside every region, which no
    reference covers): a warning shown every time is one nobody reads."""
    from stream.cli.offline import warn_uncalibrated

    warn_uncalibrated([("unassigned", "40101"), ("unassigned", "40102")])
    assert capsys.readouterr().err == ""
    warn_uncalibrated([("unassigned", "40101"), ("rural", "40101")])
    err = capsys.readouterr().err
    assert "1 region/operator pair(s) have no calibration factor" in err and "rural/40101" in err
