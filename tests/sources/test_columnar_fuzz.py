"""The columnar reader against the record reader, on the same bytes: fuzzed ping files whose rows
are mostly good (so that most of them take the parsed path) in every shape the two must read
alike: JSON with other spacing, key orders, extra or repeated keys, nulls, numbers or lists for
text, escapes, non-ASCII text, numbers at the edges; CSV with quoting, spaces, other column
orders and extra columns, numbers written in ways the record reader keeps as text; line ends LF /
CRLF / CR, BOMs, blank lines, gzip, blocks cut anywhere (tiny block sizes), several files merged.

Asserted, for every example: the same chunks of the same rows (sources), the same decoded pings
(device keys, times, classes, locations, rows) and the same rejects (source, reason, detail,
record), or the same one-line error. ``DEFACTO_FUZZ_EXAMPLES`` raises the number of examples.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estimators.engine import Engine, EngineConfig
from estimators.regions import RegionSet, regions_from_geojson
from stream.contract import InputError
from stream.decode.validate import PingDecoder
from stream.sources import columnar_files
from stream.sources.columnar_files import read_columns
from stream.sources.ping_files import read_records

EXAMPLES = int(os.environ.get("DEFACTO_FUZZ_EXAMPLES", "80"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

T0 = 1_772_409_600_000
SECRET = b"fuzz-secret-0123456789abcdef0123"
FIELDS = ["device", "ts", "operator", "home_mcc", "cell", "lat", "lon"]

DEVICES = st.one_of(
    st.from_regex(r"[0-9a-f]{16}", fullmatch=True), st.from_regex(r"[0-9]{6,12}", fullmatch=True),
    st.sampled_from(["d1", "é-dev", "日本", 'q"uote', "back\\slash", "x" * 128, "x" * 129, "",
                     "{brace", "[bracket", "a:b", "nul\x00", "\ud800", " pad "]),
    st.sampled_from([123, True, None, ["x"], {"a": 1}, 1.5]))
TS = st.one_of(st.integers(T0, T0 + 6 * 3_600_000), st.integers(T0, T0 + 6 * 3_600_000),
               st.sampled_from([0, -1, 1000, T0 * 10, 2**63 - 1, 2**64, 1.0 * T0, str(T0), None,
                                True]))
OPERATORS = st.one_of(st.sampled_from(["40101", "40177", "401011", "25001"]),
                      st.sampled_from(["4010x", "4010", "", 40101, None, "٤٠١٠١", "+40101"]))
MCC = st.one_of(st.sampled_from([401, 401, None, 250, 0, 999]),
                st.sampled_from([1000, -1, "401", 401.0, True]))
CELLS = st.one_of(st.sampled_from(["c-1", "c-1", "zz", "R1-1"]),
                  st.sampled_from(["é", "c" * 64, "c" * 65, 7, "", ["c-1"]]))
COORD = st.one_of(st.floats(50.95, 51.35, allow_nan=False).map(lambda v: round(v, 6)),
                  st.sampled_from([51.1, 71.4, 0.0, -0.0, 0, 91, -181.5, "51.1", None, 1e308, 5]))


@st.composite
def ping_obj(draw: Callable[[Any], Any]) -> dict[str, Any]:
    """A ping object: mostly valid, any field odd now and then."""
    odd = draw(st.integers(0, 4)) == 0
    obj: dict[str, Any] = {
        "device": draw(DEVICES) if odd else draw(st.from_regex(r"[0-9a-f]{16}", fullmatch=True)),
        "ts": draw(TS) if odd else draw(st.integers(T0, T0 + 6 * 3_600_000)),
        "operator": draw(OPERATORS) if odd else draw(st.sampled_from(["40101", "40177"])),
        "home_mcc": draw(MCC) if odd else draw(st.sampled_from([401, None, 250])),
    }
    where = draw(st.sampled_from(["cell", "latlon", "both", "none"]) if odd
                 else st.sampled_from(["cell", "latlon"]))
    if where in ("cell", "both"):
        obj["cell"] = draw(CELLS) if odd else draw(st.sampled_from(["c-1", "zz"]))
    if where in ("latlon", "both"):
        obj["lat"], obj["lon"] = draw(COORD), draw(COORD)
        if not odd:
            obj["lat"] = draw(st.floats(51.0, 51.3, allow_nan=False))
            obj["lon"] = draw(st.floats(71.0, 71.8, allow_nan=False))
    if draw(st.integers(0, 5)) == 0:  # absent fields written as null
        for name in FIELDS:
            obj.setdefault(name, None)
    if draw(st.integers(0, 5)) == 0:
        obj[draw(st.sampled_from(["x", "notes", "Device", "ts_local"]))] = draw(
            st.sampled_from([1, "a:b", {"a": [1, 2]}, [], "{", None, "x" * 10]))
    if odd and draw(st.booleans()):
        del obj[draw(st.sampled_from(list(obj)))]
    return obj


@st.composite
def json_line(draw: Callable[[Any], Any]) -> bytes:
    obj = draw(ping_obj())
    keys = list(obj)
    if draw(st.integers(0, 3)) == 0:
        keys = draw(st.permutations(keys))
    compact = draw(st.booleans())
    sep = (",", ":") if compact else draw(st.sampled_from([(", ", ": "), (" ,", " : "), (",", ": ")]))
    ascii_only = draw(st.booleans())
    parts = [json.dumps(k) + sep[1] + json.dumps(obj[k], ensure_ascii=ascii_only) for k in keys]
    if draw(st.integers(0, 12)) == 0 and keys:  # a key twice, first or last value different
        k = draw(st.sampled_from(keys))
        parts.insert(draw(st.integers(0, len(parts))),
                     json.dumps(k) + sep[1] + json.dumps(draw(st.sampled_from([T0, "40101", None, 1]))))
    text = "{" + sep[0].join(parts) + "}"
    if draw(st.integers(0, 15)) == 0:
        text = draw(st.sampled_from([" ", "\t", "\ufeff"])) + text + draw(st.sampled_from(["", " "]))
    line = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 25)) == 0:  # a byte changed
        b = bytearray(line)
        b[draw(st.integers(0, len(b) - 1))] = draw(st.sampled_from(b'",:{}[]\\\x00\xff 0'))
        line = bytes(b)
    return line


def _csv_cell(v: Any, quote_all: bool) -> str:
    text = "" if v is None else str(v)
    if quote_all or any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


@st.composite
def csv_file_lines(draw: Callable[[Any], Any]) -> list[bytes]:
    columns = draw(st.permutations(FIELDS))
    if draw(st.integers(0, 3)) == 0:
        columns = [*columns, draw(st.sampled_from(["extra", "note"]))]
    if draw(st.integers(0, 5)) == 0:
        columns = [c for c in columns if c not in ("home_mcc", "lat", "lon")]
    quote_all = draw(st.integers(0, 4)) == 0
    lines = [",".join(_csv_cell(c, quote_all) for c in columns).encode()]
    for _ in range(draw(st.integers(0, 25))):
        pick = draw(st.integers(0, 20))
        if pick == 0:
            lines.append(lines[0])  # the header again
            continue
        if pick == 1:
            lines.append(b"")
            continue
        obj = draw(ping_obj())
        row = []
        for c in columns:
            v = obj.get(c)
            if c in ("ts", "home_mcc", "lat", "lon") and draw(st.integers(0, 10)) == 0:
                v = draw(st.sampled_from(["+5", " 401 ", "1e3", "0401", "1_0", "nan", "٣", "-0", "5.",
                                          ".5", "9" * 19, "9" * 40, "-", " ", "1.5e2"]))
            elif isinstance(v, (list, dict, bool)):
                v = json.dumps(v)
            row.append(_csv_cell(v, quote_all))
        if pick == 2 and row:
            row = row[:-1]
        if pick == 3:
            row.append("x")
        line = ",".join(row).encode("utf-8", "surrogatepass")
        if pick == 4:
            line = line.replace(b",", b',"', 1)  # an unclosed quote, running over lines
        lines.append(line)
    return lines


@st.composite
def ping_files(draw: Callable[[Any], Any]) -> list[tuple[str, bytes]]:
    files = []
    for k in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["jsonl", "jsonl", "csv"]))
        lines = draw(csv_file_lines()) if kind == "csv" else \
            draw(st.lists(json_line(), max_size=40))
        if kind == "jsonl" and draw(st.integers(0, 6)) == 0:
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from([b"", b"   ", b"[1]"])))
        end_kind = draw(st.sampled_from(["lf", "lf", "crlf", "cr", "mixed"]))
        ends = [{"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}.get(end_kind) or
                draw(st.sampled_from([b"\n", b"\r\n", b"\r"])) for _ in lines]
        data = b"".join(x + e for x, e in zip(lines, ends, strict=True))
        if draw(st.booleans()):
            data = data.rstrip(b"\r\n")
        if draw(st.integers(0, 4)) == 0:
            data = b"\xef\xbb\xbf" + data
        if draw(st.integers(0, 4)) == 0:
            data = gzip.compress(data)
            if draw(st.integers(0, 5)) == 0:
                data = data[:draw(st.integers(0, len(data)))]
        files.append((f"f{k}.{kind}" + (".gz" if draw(st.booleans()) else ""), data))
    return files


@pytest.fixture(scope="module")
def regions() -> RegionSet:
    ring = [[71.0, 50.9], [71.9, 50.9], [71.9, 51.4], [71.0, 51.4], [71.0, 50.9]]
    return regions_from_geojson({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "astana", "name": "Astana"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]})


def _decoder(regions: RegionSet) -> PingDecoder:
    engine = Engine(regions, EngineConfig(res=7))
    engine.load_cell_plan(["40101", "40177"], ["c-1", "c-1"], np.array([51.1, 51.1]),
                          np.array([71.4, 71.4]))
    return PingDecoder(engine, SECRET, now_ms=T0 + 4 * 3_600_000)


def outcome(paths: list[Path], regions: RegionSet, columnar: bool, chunk_rows: int
            ) -> tuple[list[tuple[Any, ...]], str | None]:
    """Every chunk's sources, pings and rejects, and the error, through one reader."""
    decoder = _decoder(regions)
    chunks: list[tuple[Any, ...]] = []
    error = None
    try:
        if columnar:
            for rows in read_columns(paths, chunk_rows):
                batch = decoder.decode_rows(rows)
                sources = [rows.source(i) for i in range(len(rows))]
                chunks.append((sources, *_batch(batch)))
        else:
            for records in read_records(paths, chunk_rows):
                batch = decoder.decode(records)
                chunks.append(([r.source for r in records], *_batch(batch)))
    except InputError as exc:
        error = str(exc)
    return chunks, error


def _batch(batch: Any) -> tuple[Any, ...]:
    return (batch.device_key.tolist(), batch.ts_ms.tolist(), batch.opclass.tolist(),
            batch.loc.tolist(), batch.row.tolist(),
            [(r.source, r.reason, r.detail, r.record) for r in batch.rejects])


@FUZZ
@given(files=ping_files(), chunk_rows=st.sampled_from([100_000, 5]),
       block=st.sampled_from([1 << 23, 64, 300, 4096]), split=st.sampled_from([1, 64]))
def test_the_columnar_reader_gives_what_the_record_reader_gives(
        regions: RegionSet, files: list[tuple[str, bytes]], chunk_rows: int, block: int,
        split: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(columnar_files, "BLOCK_BYTES", block)
        mp.setattr(columnar_files, "FIRST_BLOCK_BYTES", min(block, 1 << 20))
        mp.setattr(columnar_files, "MIN_PARSE_LINES", split)
        paths = []
        for name, data in files:
            path = Path(tmp) / name
            path.write_bytes(data)
            paths.append(path)
        expected = outcome(paths, regions, columnar=False, chunk_rows=chunk_rows)
        got = outcome(paths, regions, columnar=True, chunk_rows=chunk_rows)
        assert got[1] == expected[1]
        assert len(got[0]) == len(expected[0])
        for g, e in zip(got[0], expected[0], strict=True):
            assert g == e
