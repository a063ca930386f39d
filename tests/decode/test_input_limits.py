"""Sizes taken from input are capped before anything is allocated (fault cases 03, 04) and text
that is not text is a per-row reject (fault case 05), on every path: frames, JSON, Avro, records."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from estimators.engine import Engine, EngineConfig
from estimators.regions import regions_from_geojson
from estimators.units import HOUR_MS
from stream.contract import MAX_CELL_BYTES, MAX_DEVICE_BYTES, CodecError, Record
from stream.decode.frame import FRAME_MAGIC, decode_frame, encode_frame
from stream.decode.messages import decode_messages, encode_avro, encode_json
from stream.decode.validate import PingDecoder, ping_columns

T0 = 1_772_409_600_000
SECRET = b"limits-secret-0123456789abcdef01"
COLUMNS = [("device", "|S{dev}"), ("ts", "<i8"), ("operator", "|S6"), ("home_mcc", "<i2"), ("cell", "|S{cell}")]


def _frame(n: int, dev: int, cell: int, spaced: bool = True) -> bytes:
    """A frame of ``n`` rows with the declared text widths, body exactly as long as declared."""
    cols = [{"name": name, "dtype": dt.format(dev=dev, cell=cell)} for name, dt in COLUMNS]
    head = json.dumps({"n": n, "columns": cols}, separators=(", ", ": ") if spaced else (",", ":")).encode()
    if n == 0:
        return FRAME_MAGIC + len(head).to_bytes(4, "little") + head
    body = b"d".ljust(dev, b"\0") * n + np.full(n, T0, "<i8").tobytes() + b"40101\0" * n
    body += np.full(n, 401, "<i2").tobytes() + b"c".ljust(cell, b"\0") * n
    return FRAME_MAGIC + len(head).to_bytes(4, "little") + head + body


def _ping(i: int, **over: Any) -> bytes:
    return encode_json({"device": f"d{i}", "ts": T0 + i, "operator": "40101", "home_mcc": 401,
                        "cell": "c-1", **over})


def _peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_poison_frame_of_fault_case_03() -> None:
    poison = _frame(0, 2**31 - 1, 1)
    assert len(poison) == 216  # the fault case's file, byte for byte
    with pytest.raises(CodecError) as err:
        decode_frame(poison)
    assert err.value.reason == "bad_frame"
    assert err.value.detail == "column device: width 2147483647 bytes exceeds the field's 128"
    values = [poison] + [_ping(i) for i in range(50)]
    dec, peak = _peak(lambda: decode_messages(values))
    assert [(r.source, r.reason) for r in dec.rejects] == [("0", "bad_frame")]
    assert dec.source_rows.tolist() == list(range(1, 51))
    assert dec.columns["device"].dtype.itemsize <= 3 and peak < 1 << 20  # was 100 GiB: MemoryError
    assert dec.rejects[0].record.startswith("<batch frame, 216 bytes, 0 rows, columns: device |S2147483647")


@pytest.mark.parametrize(("n", "dev", "cell"), [
    (0, 1, 2**31 - 1),                       # the same through cell
    (0, 10**8, 1),                           # 4.8 GB and 14 s for 50 pings before
    (0, MAX_DEVICE_BYTES + 1, 1),
    (0, 1, MAX_CELL_BYTES + 1),
    (3, 1, 1000),                            # a width that the message does hold
    (2, MAX_DEVICE_BYTES + 1, MAX_CELL_BYTES),
])
def test_frame_text_width_over_the_field_is_a_bad_frame(n: int, dev: int, cell: int) -> None:
    frame = _frame(n, dev, cell)
    dec, peak = _peak(lambda: decode_messages([frame, _ping(1), _ping(2)]))
    assert [(r.reason, r.source) for r in dec.rejects] == [("bad_frame", "0")]
    assert "exceeds the field's" in dec.rejects[0].detail
    assert dec.source_rows.tolist() == [1, 2] and peak < 1 << 20


def test_frame_text_at_the_limit_is_accepted() -> None:
    frame = _frame(3, MAX_DEVICE_BYTES, MAX_CELL_BYTES)
    dec = decode_messages([frame])
    assert dec.rejects == [] and len(dec.source_rows) == 3
    assert dec.columns["device"].dtype.itemsize == MAX_DEVICE_BYTES
    cols = {"device": np.array(["🙂" * 32]), "ts": np.array([T0]), "operator": np.array(["40101"]),
            "home_mcc": np.array([401]), "cell": np.array(["c" * 64])}
    assert decode_messages([encode_frame(cols)]).rejects == []
    with pytest.raises(CodecError, match="at most 128 bytes"):
        encode_frame({**cols, "device": np.array(["🙂" * 33])})
    with pytest.raises(CodecError, match="at most 64 bytes"):
        encode_frame({**cols, "cell": np.array(["c" * 65])})


@pytest.mark.parametrize("header", [
    b'{"n": ' + b"9" * 5000 + b', "columns": []}',          # a number int() refuses
    b'{"n": 0, "columns": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",  # nesting
    b'{"n": 0, "columns": [{"name": "x", "dtype": "' + b"i8," * 1000 + b'"}]}',
    b'{"n": 0, "columns": [{"name": "x", "dtype": "(1000000000,)i8"}]}',
    b'{"n": 0, "columns": [{"name": "ts", "dtype": "|S99999999999"}]}',
])
def test_frame_header_that_does_not_read_is_a_bad_frame(header: bytes) -> None:
    frame = FRAME_MAGIC + len(header).to_bytes(4, "little") + header
    with pytest.raises(CodecError):
        decode_frame(frame)
    dec = decode_messages([frame])
    assert [r.reason for r in dec.rejects] == ["bad_frame"]
    assert len(dec.rejects[0].record) < 300


@pytest.mark.parametrize("encoding", ["json", "avro"])
def test_long_cell_of_fault_case_04(encoding: str) -> None:
    long = {"device": "x", "ts": T0, "operator": "40101", "home_mcc": 401, "cell": "c" * 900_000}
    first = encode_json(long) if encoding == "json" else encode_avro({**long, "lat": None, "lon": None})
    values = [first] + [_ping(i) for i in range(5000)]
    dec, peak = _peak(lambda: decode_messages(values))
    assert [(r.source, r.reason) for r in dec.rejects] == [("0", "bad_cell")]
    assert dec.rejects[0].detail == "cell must be text of 1..64 bytes of UTF-8, got <text, 900000 characters>"
    assert len(dec.source_rows) == 5000 and dec.columns["cell"].dtype.itemsize == 3
    size = sum(map(len, values))
    assert peak < 4 * size  # the cell column alone was 4.3 GB for 5.4 MB in


@pytest.fixture(scope="module")
def decoder() -> PingDecoder:
    ring = [[71.0, 50.9], [71.9, 50.9], [71.9, 51.4], [71.0, 51.4], [71.0, 50.9]]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "astana", "name": "Astana"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    engine = Engine(regions_from_geojson(doc), EngineConfig(res=7))
    engine.load_cell_plan(["40101"], ["c-1"], np.array([51.1]), np.array([71.4]))
    return PingDecoder(engine, SECRET, now_ms=T0 + HOUR_MS)


def _records(lines: list[str]) -> Iterator[Record]:
    for i, line in enumerate(lines, start=1):
        yield Record(f"p.jsonl:{i}", json.loads(line), line)


def test_long_cell_in_a_file_chunk(decoder: PingDecoder) -> None:
    lines = [_ping(i).decode() for i in range(20_000)]
    lines[7] = _ping(7, cell="c" * 1_000_000).decode()
    batch = decoder.decode(list(_records(lines)))
    assert [(r.source, r.reason) for r in batch.rejects] == [("p.jsonl:8", "bad_cell")]
    assert len(batch) == 19_999
    cols = ping_columns([r.fields for r in _records(lines[:7] + lines[8:]) if r.fields])
    assert cols["cell"].dtype.itemsize == 3  # was 1 MB per row: 19.6 GB for this file


def test_wide_columns_from_any_source_are_rejected_by_the_validator(decoder: PingDecoder) -> None:
    cols = {"device": np.array([b"d1", b"d2", b"d" * 129]), "ts": np.full(3, T0),
            "operator": np.array([b"40101"] * 3, dtype="S6"), "home_mcc": np.full(3, 401, dtype=np.int16),
            "cell": np.array([b"c-1", b"c" * 65, b"c-1"]), "lat": np.full(3, np.nan), "lon": np.full(3, np.nan)}
    batch = decoder.decode_columns(cols, lambda i: f"row {i}")
    assert [(r.source, r.reason) for r in batch.rejects] == [("row 1", "bad_cell"), ("row 2", "bad_device")]
    assert batch.row.tolist() == [0]


def test_lone_surrogates_of_fault_case_05(decoder: PingDecoder) -> None:
    good = '{"device": "d1", "ts": 1772409600000, "operator": "40101", "home_mcc": 401, "cell": "c-1"}'
    lines = [good,
             '{"device":"\\ud800","ts":1772409600000,"operator":"40101","home_mcc":401,"lat":51.1,"lon":71.4}',
             '{"device":"d2","ts":1772409600000,"operator":"40101","home_mcc":401,"cell":"\\udc00"}',
             '{"device":"d3\\udfff","ts":1772409600000,"operator":"40101","cell":"c-1"}',
             '{"device":"d4","ts":1772409600000,"operator":"40101","cell":"c-1","note":"\\ud800"}']
    batch = decoder.decode(list(_records(lines)))
    assert [(r.source, r.reason) for r in batch.rejects] == [
        ("p.jsonl:2", "bad_device"), ("p.jsonl:3", "bad_cell"), ("p.jsonl:4", "bad_device")]
    assert batch.row.tolist() == [0, 4]  # an unknown field holding one is ignored, as the field
    for r in batch.rejects:
        r.to_json().encode("utf-8")  # the reject file can be written
        assert "\\ud" not in r.to_json() and "\\udc" not in r.to_json()
    # the same as Kafka messages (JSON escapes and raw surrogate bytes)
    raw = '{"device": "\ud800"}'.encode("utf-8", "surrogatepass")
    dec = decode_messages([line.encode() for line in lines] + [raw])
    assert [(int(r.source), r.reason) for r in dec.rejects] == [
        (1, "bad_device"), (2, "bad_cell"), (3, "bad_device"), (5, "malformed_json")]
