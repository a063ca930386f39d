"""No identifier reaches a reject (fault case 11): the dead-letter value and headers and the reject
file hold the allow-listed fields only, the names of unknown fields, never unparsable text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from estimators.engine import Engine, EngineConfig
from estimators.units import HOUR_MS
from stream.cli import main
from stream.contract import Record, Reject
from stream.decode.frame import FRAME_MAGIC, encode_frame
from stream.decode.messages import decode_messages, encode_avro
from stream.decode.validate import PingDecoder
from stream.sources.ping_files import read_records
from stream.sources.reference_files import load_regions

T0 = 1_772_409_600_000
SECRET = b"privacy-secret-0123456789abcdef0"
IDS = ["PSEUDO-0001", "PSEUDO-0002", "PSEUDO-0003", "PSEUDO-0004", "77012345678", "401011234567890"]


def _assert_clean(rejects: list[Reject], ids: list[str] = IDS) -> None:
    """What the worker sends (value = record; headers reason, detail, source) and the reject
    file writes (to_json) holds none of ``ids``."""
    assert rejects
    for r in rejects:
        for text in (r.record, r.detail, r.source, r.to_json()):
            for ident in ids:
                assert ident not in text, (ident, r)


def test_renamed_device_fields_in_messages() -> None:
    base = {"ts": T0, "operator": "40101", "home_mcc": 401, "cell": "c-1"}
    values = [json.dumps({"deviceId": "PSEUDO-0001", **base}).encode(),
              json.dumps({"device": "", "msisdn": "77012345678", **base}).encode(),
              json.dumps({"device": 5, "imsi": 401011234567890, **base}).encode(),
              json.dumps({"PSEUDO-0002": {"ts": T0}, "subscriber": {"id": "PSEUDO-0003"}}).encode(),
              json.dumps({"control": "PSEUDO-0004"}).encode()]
    dec = decode_messages(values)
    assert [r.reason for r in dec.rejects] == ["missing_device", "bad_device", "bad_device", "missing_device",
                                               "not_a_ping_object"]
    _assert_clean(dec.rejects)
    assert json.loads(dec.rejects[0].record) == {"ts": T0, "operator": "40101", "home_mcc": 401,
                                                 "cell": "<text, 3 characters>", "other_fields": ["deviceId"]}
    assert json.loads(dec.rejects[1].record)["other_fields"] == ["msisdn"]
    assert json.loads(dec.rejects[3].record)["other_fields"] == ["subscriber", "<1 more, names not shown>"]


def test_frames_and_binary_messages_are_described_not_copied() -> None:
    cols = {"device": np.array([b"PSEUDO-0001", b"", b"\xffPSEUDO-0002"]), "ts": np.full(3, T0),
            "operator": np.array([b"40101", b"40101", b"40101"]), "home_mcc": np.full(3, 401),
            "cell": np.array([b"PSEUDO-0003", b"c-1", b"c-1"]), "msisdn": np.full(3, 77012345678)}
    good = encode_frame(cols)
    head = json.dumps({"n": 0, "producer": "PSEUDO-0004", "columns": [
        {"name": "device", "dtype": "|S1"}, {"name": "PSEUDO-0001", "dtype": "|S7"}]}).encode()
    bad = FRAME_MAGIC + len(head).to_bytes(4, "little") + head
    avro = encode_avro({"device": "PSEUDO-0002", "ts": T0, "operator": "40101", "home_mcc": None,
                        "cell": "PSEUDO-0003", "lat": None, "lon": None})
    dec = decode_messages([good, bad, avro[:-3], good[:-1], b"PSEUDO-0004,1772409600000,40101,401,c-1"])
    assert [(int(r.source), r.reason) for r in dec.rejects] == [
        (0, "missing_device"), (0, "bad_device"), (1, "bad_frame"), (2, "bad_avro"),
        (3, "bad_frame"), (4, "unknown_encoding")]
    _assert_clean(dec.rejects)
    assert dec.rejects[2].record == (f"<batch frame, {len(bad)} bytes, 0 rows, columns: device |S1, "
                                     "<name not shown> |S7; values not shown>")


@pytest.fixture
def decoder(regions_file: Path) -> PingDecoder:
    engine = Engine(load_regions(regions_file), EngineConfig(res=8))
    engine.load_cell_plan(["40101"], ["A"], np.array([51.15]), np.array([71.45]))
    return PingDecoder(engine, SECRET, now_ms=T0 + HOUR_MS)


def test_csv_whose_header_does_not_match_its_rows(decoder: PingDecoder, tmp_path: Path) -> None:
    pings = tmp_path / "p.csv"
    pings.write_text("device,ts,operator,home_mcc,cell,lat,lon\n"
                     f"d1,{T0},40101,401,A,,\n"
                     f"{T0},PSEUDO-0001,40101,401,A,,\n"        # device and ts swapped
                     f"A,{T0},40101,401,PSEUDO-0002,,\n"        # device and cell swapped
                     f"d3,{T0},40101,PSEUDO-0003,A,,\n"         # shifted into home_mcc
                     f"d4,{T0},40101,401,,77012345678,71.4\n"   # an MSISDN in lat
                     f"d5,{T0},40101,401,A,,,PSEUDO-0004\n")    # one column too many
    recs = [r for chunk in read_records([pings]) for r in chunk]
    batch = decoder.decode(recs)
    assert len(batch) == 1
    rejects = sorted(batch.rejects, key=lambda r: int(r.source.rsplit(":", 1)[1]))
    assert [(r.source, r.reason) for r in rejects] == [
        (f"{pings}:3", "bad_ts"), (f"{pings}:4", "unknown_cell"), (f"{pings}:5", "bad_home_mcc"),
        (f"{pings}:6", "bad_coordinates"), (f"{pings}:7", "malformed_csv")]
    _assert_clean(rejects)
    assert json.loads(rejects[1].record)["device"] == "<redacted>"  # the cell id that was in device
    assert rejects[4].record.startswith("<unparsable row, ")


def test_unparsable_rows_keep_only_their_size(decoder: PingDecoder) -> None:
    recs = [Record("p.jsonl:1", None, '{"device": "PSEUDO-0001", oops', "malformed JSON: Expecting value"),
            Record("p.jsonl:2", None, "PSEUDO-0002", "not a JSON object")]
    batch = decoder.decode(recs)
    assert [(r.reason, r.record) for r in batch.rejects] == [
        ("malformed_json", "<unparsable row, 30 bytes; content not shown>"),
        ("malformed_json", "<unparsable row, 11 bytes; content not shown>")]
    _assert_clean(batch.rejects)


def test_replay_reject_file_holds_no_identifier(regions_file: Path, tmp_path: Path) -> None:
    cells = tmp_path / "cells.csv"
    cells.write_text("operator,cell,lat,lon\n40101,A,51.15,71.45\n")
    rows = [{"device": f"d{i}", "ts": T0 + i, "operator": "40101", "home_mcc": 401, "cell": "A"}
            for i in range(20)]
    bad = [{"deviceId": "PSEUDO-0001", "ts": T0, "operator": "40101", "cell": "A"},
           {"device": "", "msisdn": 77012345678, "ts": T0, "operator": "40101", "cell": "A"},
           {"device": "d1", "ts": T0, "operator": "40101", "cell": "PSEUDO-0002"},
           {"device": "\ud800", "ts": T0, "operator": "40101", "cell": "A"}]
    pings = tmp_path / "p.jsonl"
    pings.write_text("".join(json.dumps(r) + "\n" for r in rows + bad) + '{"device": "PSEUDO-0003", oops\n')
    out = tmp_path / "s.jsonl"
    assert main(["replay", str(pings), "--regions", str(regions_file), "--cells", str(cells),
                 "--out", str(out)]) == 0
    text = Path(f"{out}.rejects.jsonl").read_text(encoding="utf-8")
    assert sorted(json.loads(x)["reason"] for x in text.splitlines()) == [
        "bad_device", "bad_device", "malformed_json", "missing_device", "unknown_cell"]
    for ident in IDS + ['"d1"', '"d0"']:
        assert ident not in text
