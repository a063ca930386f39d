"""Fuzzing the ping file reader end to end: bytes -> files -> ``read_records`` -> decoder ->
event-time windows -> reject file, as ``defacto replay`` runs them.

Inputs: 1..3 files of JSON Lines or CSV (a header, quoted fields, line breaks inside quotes,
shifted and missing columns), with or without a BOM, LF / CRLF / CR line ends mixed, gzipped or
not (and the gzip stream cut short); rows of pings holding identifiers (a pseudonym
``PSEUDO...``, an MSISDN, a 13-digit number) in ``device`` and in other or renamed fields; bad
rows of the kinds of fault case 05 (invalid UTF-8, ``\\ud800`` escapes, 5,000-digit numbers,
deep nesting, superscript digits, a 70 KB field, an unclosed quote, NUL bytes, random bytes);
then up to 4 random byte changes over the whole file.

Asserted, whatever the input: no exception escapes but :class:`~stream.contract.InputError`,
as one line naming the file, for whole-file problems (a broken gzip stream, a missing header);
every row read is accepted or rejected (counted once); every ``source`` names a line of its file;
the peak allocation stays within :data:`BYTES_PER_INPUT_BYTE` per byte of (uncompressed) input
plus :data:`FIXED_BYTES`; and no identifier appears in the reject file, the error or the summary.
Bounded to a few seconds here; ``DEFACTO_FUZZ_EXAMPLES=20000`` raises the number of examples.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estimators.engine import Engine, EngineConfig
from estimators.regions import RegionSet, regions_from_geojson
from estimators.units import HOUR_MS, MINUTE_MS
from stream.cli.offline import RejectFile
from stream.contract import InputError
from stream.decode.validate import PingDecoder
from stream.estimate.windows import EventTimeWindows, WindowSettings
from stream.sources.ping_files import read_records

EXAMPLES = int(os.environ.get("DEFACTO_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

BYTES_PER_INPUT_BYTE = 32
"""Memory bound of reading, decoding and windowing files, per byte of uncompressed input (seen:
at most 14 for inputs over 20 KB, over 3,000 examples) ..."""
FIXED_BYTES = 2 << 20
"""... plus this much (seen: at most 1.2 MB in all: text and gzip buffers, a row limit, numpy
columns)."""

T0 = 1_772_409_600_000
SECRET = b"fuzz-secret-0123456789abcdef0123"
HEADER = ["device", "ts", "operator", "home_mcc", "cell", "lat", "lon"]
TEXT_IDS = st.from_regex(r"PSEUDO[0-9A-F]{10}", fullmatch=True)
INT_IDS = st.one_of(st.integers(77_000_000_000, 77_099_999_999),
                    st.integers(3_000_000_000_000, 3_700_000_000_000))
RENAMED = ["deviceId", "msisdn", "imsi", "device_id", "Device", "user"]
BAD_ROWS = [
    b'{"device":"\xff\xfe","ts":1772409600000,"operator":"40101","lat":51.1,"lon":71.4}',
    b'{"device":"\\ud800","ts":1772409600000,"operator":"40101","cell":"\\udc00"}',
    b'{"device":"d","ts":' + b"9" * 5000 + b',"operator":"40101"}',
    b"[" * 60_000, b"[" * 70_000, b'{"a":' * 3000,
    "d2,\u00b2,40101,\u00b9,,51.1,71.4".encode(), b"d2,1772409600000,40101,401," + b"x" * 70_000 + b",,",
    b'd2,"unclosed,1772409600000,40101', b"\x00\x00\x00", b"\xef\xbb\xbf", b"\r", b"   ", b"",
    b'"",,,,,,', b'{"device":"d","ts":NaN,"lat":Infinity}', b"\xc3", b"\xed\xa0\x80",
]


class Secrets:
    """The identifiers placed in an example: none may appear in any output."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def draw(self, draw: Callable[[Any], Any]) -> Any:
        value = draw(st.one_of(TEXT_IDS, TEXT_IDS, INT_IDS))
        self.items.append(str(value))
        return value

    def assert_absent(self, text: str) -> None:
        for s in self.items:
            assert s not in text, (s, text[:300])


@st.composite
def json_row(draw: Callable[[Any], Any], secrets: Secrets) -> bytes:
    obj: dict[str, Any] = {"device": secrets.draw(draw) if draw(st.integers(0, 5)) else "",
                           "ts": draw(st.one_of(st.integers(T0, T0 + 3 * HOUR_MS), INT_IDS)),
                           "operator": draw(st.sampled_from(["40101", "40177", "4010x"])),
                           "home_mcc": draw(st.one_of(st.none(), st.integers(0, 999)))}
    where = draw(st.sampled_from(["cell", "latlon", "latlon", "renamed", "id in cell"]))
    if where == "cell":
        obj["cell"] = draw(st.sampled_from(["c-1", "zz"]))
    elif where == "id in cell":
        obj["cell"] = secrets.draw(draw)
    else:
        obj["lat"], obj["lon"] = 51.1, 71.4
    if where == "renamed":
        obj[draw(st.sampled_from(RENAMED))] = secrets.draw(draw)
    return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def csv_row(draw: Callable[[Any], Any], secrets: Secrets) -> bytes:
    cells = [str(secrets.draw(draw)), str(draw(st.integers(T0, T0 + 3 * HOUR_MS))),
             draw(st.sampled_from(["40101", "40177"])), draw(st.sampled_from(["401", "", "¹"])),
             draw(st.sampled_from(["c-1", "", "zz"])), "51.1", "71.4"]
    shape = draw(st.sampled_from(["plain", "plain", "quoted", "shifted", "short", "break"]))
    if shape == "quoted":
        cells = ['"' + c.replace('"', '""') + '"' for c in cells]
    elif shape == "shifted":
        cells = [cells[j] for j in draw(st.permutations(range(len(cells))))]
    elif shape == "short":
        cells = cells[:draw(st.integers(0, 6))]
    elif shape == "break":
        cells[4] = '"c\r\n-1"'
    return ",".join(cells).encode()


@st.composite
def ping_files(draw: Callable[[Any], Any]) -> tuple[list[tuple[str, bytes, bytes]], Secrets]:
    """1..3 files as ``(name, bytes on disk, uncompressed bytes)``, and the identifiers placed."""
    secrets = Secrets()
    files = []
    for k in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["jsonl", "csv"]))
        lines = [",".join(HEADER).encode()] if kind == "csv" and draw(st.integers(0, 9)) else []
        for _ in range(draw(st.integers(0, 12))):
            pick = draw(st.sampled_from(["row", "row", "row", "bad", "bytes"]))
            if pick == "row":
                lines.append(draw(json_row(secrets) if kind == "jsonl" else csv_row(secrets)))
            elif pick == "bad":
                lines.append(draw(st.sampled_from(BAD_ROWS)))
            else:
                lines.append(draw(st.binary(max_size=40)))
        ends = [draw(st.sampled_from([b"\n", b"\r\n", b"\r"])) for _ in lines]
        data = b"".join(x + e for x, e in zip(lines, ends, strict=True))
        if draw(st.booleans()):
            data = data.rstrip(b"\r\n")
        if draw(st.integers(0, 3)) == 0:
            data = b"\xef\xbb\xbf" + data
        for _ in range(draw(st.integers(0, 4))):
            if not data:
                break
            b = bytearray(data)
            i = draw(st.integers(0, len(b) - 1))
            op = draw(st.sampled_from(["flip", "insert", "delete"]))
            if op == "flip":
                b[i] = draw(st.integers(0, 255))
            elif op == "insert":
                b[i:i] = draw(st.sampled_from([b"\n", b"\r", b",", b'"', b"\xff", b"\x00", b"{"]))
            else:
                del b[i]
            data = bytes(b)
        disk = data
        if draw(st.integers(0, 3)) == 0:
            disk = gzip.compress(data)
            if draw(st.booleans()):
                disk = disk[:draw(st.integers(0, len(disk)))]
        files.append((f"f{k}.{kind}" + (".gz" if draw(st.booleans()) else ""), disk, data))
    return files, secrets


@pytest.fixture(scope="module")
def regions() -> RegionSet:
    ring = [[71.0, 50.9], [71.9, 50.9], [71.9, 51.4], [71.0, 51.4], [71.0, 50.9]]
    return regions_from_geojson({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "astana", "name": "Astana"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]})


def _engine(regions: RegionSet) -> Engine:
    engine = Engine(regions, EngineConfig(res=7))
    engine.load_cell_plan(["40101", "40177"], ["c-1", "c-1"], np.array([51.1, 51.1]),
                          np.array([71.4, 71.4]))
    return engine


def _line_count(data: bytes) -> int:
    text = data.decode("utf-8", "surrogateescape")
    return text.count("\n") + text.count("\r") - text.count("\r\n") + 1


def _replay(paths: list[Path], engine: Engine, rejects: Path) -> tuple[EventTimeWindows, str | None]:
    """What ``defacto replay`` does with the files: the windows (counts) and the error, if any."""
    decoder = PingDecoder(engine, SECRET, now_ms=T0 + 4 * HOUR_MS)
    reject_file = RejectFile(rejects)
    windows = EventTimeWindows(engine, WindowSettings(lateness_ms=10 * MINUTE_MS),
                               on_window=lambda _b: None, on_reject=reject_file)
    error = None
    try:
        for chunk in read_records(paths):
            for r in chunk:
                path, line = r.source.rsplit(":", 1)
                assert Path(path) in paths and int(line) >= 1
            windows.feed(decoder.decode(chunk), lambda i, c=chunk: c[i].source, rows_read=len(chunk))
        windows.finish()
    except InputError as exc:
        error = str(exc)
    finally:
        reject_file.close()
    return windows, error


@FUZZ
@given(example=ping_files())
def test_ping_file_reader_fuzz(regions: RegionSet, example: tuple[list[tuple[str, bytes, bytes]], Secrets]
                               ) -> None:
    files, secrets = example
    engine = _engine(regions)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, disk, _ in files:
            path = Path(tmp) / name
            path.write_bytes(disk)
            paths.append(path)
        rejects = Path(tmp) / "rejects.jsonl"
        tracemalloc.start()
        try:
            windows, error = _replay(paths, engine, rejects)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        size = sum(len(data) for _, _, data in files)
        assert peak <= BYTES_PER_INPUT_BYTE * size + FIXED_BYTES, (peak, size)
        stats = windows.stats
        assert stats.read == stats.accepted + sum(stats.rejected.values())
        written = rejects.read_text(encoding="utf-8") if rejects.exists() else ""
        lines = {str(p): _line_count(data) for p, (_, _, data) in zip(paths, files, strict=True)}
        for reject in map(json.loads, written.splitlines()):
            path, line = reject["source"].rsplit(":", 1)
            assert 1 <= int(line) <= lines[path]
        secrets.assert_absent(written)
        secrets.assert_absent(stats.summary())
        if error is not None:
            assert "\n" not in error and any(error.startswith(f"{p}") for p in paths), error
            secrets.assert_absent(error)
