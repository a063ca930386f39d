"""The columnar reader (issue 14): the rows, line numbers, chunks and records of the record
reader, bad rows among good ones rejected with their line and reason, line ends and long lines
across block edges, broken gzip streams, merges, reading ahead, and memory that does not grow
with the file."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from estimators.engine import Engine, EngineConfig
from estimators.regions import RegionSet
from stream.contract import InputError, Record
from stream.decode.validate import PingDecoder
from stream.sources import columnar_files
from stream.sources.columnar_files import read_columns
from stream.sources.ping_files import MAX_ROW_CHARS, read_records
from stream.sources.reference_files import load_regions

T0 = 1_772_409_600_000
SECRET = b"0123456789abcdef0123456789abcdef"
HEADER = "device,ts,operator,home_mcc,cell,lat,lon"


def _good(i: int, t: int = T0) -> dict[str, object]:
    if i % 3:
        return {"device": f"{i * 7919:016x}", "ts": t + 1000 * i, "operator": "40101",
                "home_mcc": 401, "cell": "A"}
    return {"device": f"{i * 7919:016x}", "ts": t + 1000 * i, "operator": "40102",
            "home_mcc": None if i % 2 else 250, "lat": 51.15, "lon": 71.45}


def _jsonl(rows: list[object]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r, separators=(",", ":")).encode())
                    + b"\n" for r in rows)


def _csv_row(r: dict[str, object]) -> str:
    return ",".join("" if r.get(k) is None else str(r.get(k)) for k in HEADER.split(","))


def _records(paths: list[Path], **kw: int) -> list[Record]:
    return [r for chunk in read_records(paths, **kw) for r in chunk]


def _rows_as_records(paths: list[Path], **kw: int) -> list[Record]:
    return [rows.record(i) for rows in read_columns(paths, **kw) for i in range(len(rows))]


@pytest.fixture
def engine(regions_file: Path, tmp_path: Path) -> Engine:
    engine = Engine(load_regions(regions_file), EngineConfig(res=8))
    engine.load_cell_plan(["40101", "40101"], ["A", "B"], np.array([51.15, 51.05]),
                          np.array([71.45, 71.45]))
    return engine


def _decoded(engine: Engine, paths: list[Path], columnar: bool) -> list[tuple[object, ...]]:
    decoder = PingDecoder(engine, SECRET, now_ms=T0 + 48 * 3_600_000)
    out = []
    if columnar:
        for rows in read_columns(paths):
            b = decoder.decode_rows(rows)
            out.append((b.device_key.tolist(), b.ts_ms.tolist(), b.loc.tolist(), b.row.tolist(),
                        [(r.source, r.reason, r.detail, r.record) for r in b.rejects]))
    else:
        for records in read_records(paths):
            b = decoder.decode(records)
            out.append((b.device_key.tolist(), b.ts_ms.tolist(), b.loc.tolist(), b.row.tolist(),
                        [(r.source, r.reason, r.detail, r.record) for r in b.rejects]))
    return out


# --- bad rows among good ones ------------------------------------------------------------------

BAD = {  # line -> (row, reason)
    101: (b'{"device":"d","ts":1772409600000,"operator":"40101"', "malformed_json"),
    202: (b'{"device":"d","ts":"1772409600000","operator":"40101","cell":"A"}', "bad_ts"),
    303: (b'{"device":"d","ts":1772409600000,"ts":5,"operator":"40101","cell":"A"}', "ts_out_of_range"),
    404: (b'{"device":123,"ts":1772409600000,"operator":"40101","cell":"A"}', "bad_device"),
    505: (b'{"device":"d","ts":1772409600000,"operator":40101,"cell":"A"}', "bad_operator"),
    606: (b'{"device":"d","ts":1772409600000,"operator":"40101","cell":"nope"}', "unknown_cell"),
    707: (b'{"device":"d","ts":1772409600000,"operator":"40101","lat":91,"lon":71}', "bad_coordinates"),
    808: (b'{"device":"\xff","ts":1772409600000,"operator":"40101","cell":"A"}', "malformed_json"),
    909: (b'{"device":"d","ts":1772409600000,"operator":"40101","cell":"A","x":"' + b"y" * 70_000
          + b'"}', "malformed_json"),
    1010: (b'{"device":"d","ts":1772409600000,"operator":"40101","cell":"A","cell":null}',
           "missing_location"),
    1111: (b'{"device":["d"],"ts":1772409600000,"operator":"40101","cell":"A"}', "bad_device"),
    1212: (b'{"device":"d","ts":1772409600000,"operator":"40101","home_mcc":"401","cell":"A"}',
           "bad_home_mcc"),
    1313: (b'{"device":"","ts":1772409600000,"operator":"40101","cell":"A"}', "bad_device"),
    1414: (b'{"device":"d","ts":1772409600000,"operator":"40101","cell":"A"} {}', "malformed_json"),
    1515: (b'{"device":"d","ts":1772409600000,"operator":"40101","lat":NaN,"lon":1}',
           "bad_coordinates"),
    1616: (b'{"device":"d","ts":1773409600000,"operator":"40101","cell":"A"}', "ts_in_future"),
}


def test_bad_rows_among_good_ones_are_rejected_with_their_line_and_reason(
        engine: Engine, tmp_path: Path) -> None:
    rows: list[object] = []
    for line in range(1, 3001):
        rows.append(BAD[line][0] if line in BAD else _good(line))
    path = tmp_path / "p.jsonl"
    path.write_bytes(_jsonl(rows))
    got = _decoded(engine, [path], columnar=True)
    rejects = [(int(s.rsplit(":", 1)[1]), reason) for chunk in got for s, reason, _, _ in chunk[4]]
    assert sorted(rejects) == [(line, reason) for line, (_, reason) in sorted(BAD.items())]
    assert got == _decoded(engine, [path], columnar=False)
    chunk = next(read_columns([path]))
    # the good rows took the parsed path, but for the few around a line polars refused (each
    # refusal sends its part of at most MIN_PARSE_LINES lines to the per-line path)
    assert int(chunk.parsed.sum()) >= 3000 - len(BAD) - 6 * columnar_files.MIN_PARSE_LINES


def test_every_row_is_the_record_readers_record(tmp_path: Path) -> None:
    """Records of parsed rows (rebuilt from their text) and of the others, JSON and CSV."""
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes(_jsonl([_good(i) for i in range(1, 200)] + [BAD[202][0], b"", b"  ",
                                                                  BAD[1414][0], _good(7)]))
    csv = tmp_path / "p.csv"
    csv.write_text(HEADER + "\r\n" + "\r\n".join(
        [_csv_row(_good(i)) for i in range(1, 100)]
        + ['"q,1",1772409600000,40101,401,A,,', "d, 1772409600000 ,+40101,401 ,A,,",
           "d,1772409600000,40101,401,,inf,1", HEADER, "d,1e3,40101,,A,,", "short,row",
           'd,"two\r\nlines",40101,,A,,', _csv_row(_good(3))]) + "\r\n")
    for path in (jsonl, csv):
        expected = _records([path], chunk_rows=7)
        got = _rows_as_records([path], chunk_rows=7)
        assert got == expected
        assert [len(c) for c in read_columns([path], chunk_rows=7)] == \
            [len(c) for c in read_records([path], chunk_rows=7)]


# --- blocks: line ends and long lines across their edges ---------------------------------------

@pytest.mark.parametrize("block", [16, 64, 1000])
@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_line_ends_and_long_lines_across_block_edges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, end: bytes) -> None:
    monkeypatch.setattr(columnar_files, "BLOCK_BYTES", block)
    monkeypatch.setattr(columnar_files, "FIRST_BLOCK_BYTES", block)
    lines = [json.dumps(_good(i)).encode() for i in range(1, 40)]
    lines[5] = b"[" * (MAX_ROW_CHARS + 1)  # over the row limit, within LONG_HEAD_BYTES
    lines[9] = b'{"device":"' + b"x" * (columnar_files.LONG_HEAD_BYTES * 2) + b'"}'  # beyond it
    lines[12] = b""
    lines[20] = b"\xef\xbb\xbf" + lines[20]  # a BOM at the start of a line (files joined)
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + end.join(lines) + end)
    expected = _records([path])
    assert _rows_as_records([path]) == expected
    assert [r.source.rsplit(":", 1)[1] for r in expected if r.fields is None] == ["6", "10"]


def test_a_broken_gzip_stream_ends_where_the_record_reader_ends(tmp_path: Path) -> None:
    data = _jsonl([_good(i) for i in range(1, 3000)] + [b"[" * 70_000] + [_good(i) for i in range(5)])
    whole = gzip.compress(data)
    for cut in np.linspace(20, len(whole) - 1, 15).astype(int).tolist():
        path = tmp_path / "p.jsonl.gz"
        path.write_bytes(whole[:cut])
        outcomes = []
        for read in (read_records, read_columns):
            got: list[str] = []
            try:
                for chunk in read([path]):
                    got += ([r.source for r in chunk] if read is read_records
                            else [chunk.source(i) for i in range(len(chunk))])
            except InputError as exc:
                outcomes.append((got, str(exc)))
        assert outcomes[0] == outcomes[1]
        assert "the compressed data ends early" in outcomes[1][1]


# --- merges, reading ahead ----------------------------------------------------------------------

@pytest.mark.parametrize("overlap", [False, True])
def test_several_files_merge_as_the_record_reader_merges(engine: Engine, tmp_path: Path,
                                                         overlap: bool) -> None:
    """Files one after the other in time (the blocks are only concatenated) or interleaved (a
    row-level merge): the same rows in the same order, the same pings and rejects."""
    paths = []
    for k in range(3):
        start = T0 + (0 if overlap else k * 3_600_000)
        rows: list[object] = [_good(i, start + 7 * k) for i in range(1, 1500)]
        rows[50 + k] = BAD[404][0]
        path = tmp_path / f"p{k}.jsonl"
        path.write_bytes(_jsonl(rows))
        paths.append(path)
    order = [Record(c.source(i), None, "") for c in read_columns(paths, chunk_rows=999)
             for i in range(len(c))]
    assert [r.source for r in order] == [r.source for r in _records(paths, chunk_rows=999)]
    sources = [r.source.rsplit("/", 1)[1] for r in order]
    assert (sources[:3] == ["p0.jsonl:1", "p1.jsonl:1", "p2.jsonl:1"]) == overlap
    assert _decoded(engine, paths, columnar=True) == _decoded(engine, paths, columnar=False)


def test_reading_ahead_gives_the_same_chunks_and_error_and_stops_when_closed(
        tmp_path: Path) -> None:
    data = gzip.compress(_jsonl([_good(i) for i in range(1, 30_000)]))
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    outcomes = []
    for ahead in (False, True):
        got: list[int] = []
        with pytest.raises(InputError) as exc:
            for chunk in read_columns([path], chunk_rows=1000, ahead=ahead):
                got.append(len(chunk))
        outcomes.append((got, str(exc.value)))
    assert outcomes[0] == outcomes[1] and len(outcomes[0][0]) > 3
    before = threading.active_count()
    it = read_columns([path], chunk_rows=1000, ahead=True)
    next(it)
    it.close()
    assert threading.active_count() == before


# --- memory -----------------------------------------------------------------------------------

_PEAK = """
import sys
from stream.decode.validate import PingDecoder
from stream.sources.columnar_files import read_columns
from estimators.engine import Engine, EngineConfig
from stream.sources.reference_files import load_regions
import numpy as np
engine = Engine(load_regions(sys.argv[1]), EngineConfig(res=8))
engine.load_cell_plan(["40101"], ["A"], np.array([51.15]), np.array([71.45]))
decoder = PingDecoder(engine, b"0123456789abcdef0123456789abcdef", now_ms=1772409600000 + 10**9)
n = 0
for rows in read_columns(sys.argv[2:], ahead=True):
    n += len(decoder.decode_rows(rows))
with open("/proc/self/status") as fh:  # VmHWM starts afresh at exec (ru_maxrss does not)
    print(n, next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")))
"""


PEAK_RUNS = 3
"""Runs per size: the peak RSS of one run varies by up to ~25 MiB with the allocator's and the
read-ahead thread's timing (measured 20-61 MiB of growth for the same code); the smallest of three
is the memory the reader needs."""


@pytest.mark.parametrize("files", [1, 3])
def test_memory_does_not_grow_with_the_file(tmp_path: Path, regions_file: Path, files: int) -> None:
    """Peak RSS of reading and decoding 500 k rows and 1.5 M (about 60 and 180 MB), as one file or
    three merged by event time: three times the input costs no more than a few blocks more. The
    rows come from the same 50 k devices in both runs, so the engine's device state is the same
    size and only the reader's memory could grow."""
    row = ('{"device":"%016x","ts":%d,"operator":"40101","home_mcc":401,"cell":"A",'
           '"note":"padding-padding-padding-padding"}\n')
    peaks = []
    for n in (500_000, 1_500_000):
        paths = [tmp_path / f"p{n}_{k}.jsonl" for k in range(files)]
        handles = [open(path, "w") for path in paths]
        for lo in range(0, n, 100_000):
            for i in range(lo, lo + 100_000):
                handles[i % files].write(row % (i % 50_000, T0 + i))
        for fh in handles:
            fh.close()
        runs = []
        for _ in range(PEAK_RUNS):
            out = subprocess.run([sys.executable, "-c", _PEAK, str(regions_file), *map(str, paths)],
                                 capture_output=True, text=True, check=True, timeout=300,
                                 cwd=Path(__file__).resolve().parents[2])
            accepted, peak_kib = map(int, out.stdout.split())
            assert accepted == n
            runs.append(peak_kib * 1024)
        peaks.append(min(runs))
    assert peaks[0] < 450 << 20, peaks  # Python, numpy, polars, blocks and two chunks
    # 1 M more rows are 120 MB more input: growing with the file would add at least that; the
    # read-ahead's chunks in flight vary by tens of MB with the machine's load (42 MB seen with
    # three files while another test suite ran)
    assert peaks[1] - peaks[0] < 64 << 20, peaks


def test_which_plain_rows_are_parsed(tmp_path: Path) -> None:
    """Extra scalar fields, explicit nulls, other key orders and ``": "`` spacing are parsed;
    a ping field twice, a number or a list for text, a colon inside a string or a nested value
    send the row to the per-line path."""
    rows = [_good(1), {**_good(2), "x": 1, "y": "z", "n": None}, {**_good(4), "home_mcc": None},
            dict(reversed(list(_good(5).items()))),
            json.dumps(_good(6)).encode(),  # ": " and ", "
            b'{"device":"d","ts":1772409600000,"ts":1772409600001,"operator":"40101","cell":"A"}',
            b'{"device":"d","ts":1772409600000,"operator":"40101","cell":"A","cell":null}',
            b'{"device":5,"ts":1772409600000,"operator":"40101","cell":"A","x":"q"}',
            b'{"device":["d"],"ts":1772409600000,"operator":"40101","cell":"A"}',
            b'{"device":"d","ts":1772409600000,"operator":"40101","cell":"A:1"}',
            b'{"device":"d","ts":1772409600000,"operator":"40101","cell":"A","x":{"y":1}}',
            b'{"device":"d","ts" : 1772409600000,"operator":"40101","cell":"A","ts" :1}']
    path = tmp_path / "p.jsonl"
    path.write_bytes(_jsonl(rows))
    (got,) = read_columns([path])
    assert got.parsed.tolist() == [True] * 5 + [False] * 7
    assert [got.record(i) for i in range(len(rows))] == _records([path])


def test_regions_fixture_is_a_region_set(regions_file: Path) -> None:
    assert isinstance(load_regions(regions_file), RegionSet)


def test_a_period_skips_a_sorted_file_but_reads_an_unsorted_one_to_its_end(tmp_path: Path) -> None:
    """Rows one minute apart over 3 days, period = the second day: blocks before it are not parsed,
    the file is not read past its end plus the lateness. With one row two hours behind its file
    before the period ends, the rest is read after all (the file is not sorted within the
    lateness)."""
    lateness = 10 * 60_000
    day = 24 * 3_600_000
    times = [T0 + 60_000 * i for i in range(3 * 24 * 60)]
    period_notes: list[tuple[str, int, int | None]] = []
    period = columnar_files.Period(T0 + day, T0 + 2 * day, lateness,
                                   lambda *note: period_notes.append(note))
    for disorder in (False, True):
        rows = [{**_good(i), "ts": t} for i, t in enumerate(times, start=1)]
        if disorder:
            rows[2000]["ts"] = times[2000] - 2 * 3_600_000
        path = tmp_path / f"p{disorder}.jsonl"
        path.write_bytes(_jsonl(rows))
        period_notes.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(columnar_files, "BLOCK_BYTES", 1 << 16)
            mp.setattr(columnar_files, "FIRST_BLOCK_BYTES", 1 << 16)
            got = [t for c in read_columns([path], period=period) for t in c.time.tolist()]
        inside = [r["ts"] for r in rows if T0 + day <= r["ts"] < T0 + 2 * day]
        assert set(inside) <= set(got)
        assert min(got) > T0 + day - 3 * 3_600_000  # most of day 1 was skipped
        skipped_before = [n for n in period_notes if n[2] is not None]
        assert skipped_before and skipped_before[0][1] == 1
        if disorder:
            assert len(got) == len(times) - skipped_before[0][2]  # read to the end
            assert all(n[2] is not None for n in period_notes)
        else:
            assert max(got) < T0 + 2 * day + lateness + 3_600_000  # day 3 was not read
            assert period_notes[-1][2] is None


@pytest.mark.parametrize("variant", ["plain", "crlf_in_day_1", "lone_cr_in_day_1", "blank_lines",
                                     "all_before", "gzip", "bad_row_before"])
def test_blocks_skimmed_before_a_period_give_what_reading_them_gives(tmp_path: Path,
                                                                     variant: str) -> None:
    """Before ``--from`` a block is skimmed (its LF bytes counted, its last lines read) instead of
    split into lines: the same rows, line numbers and skipped-line notes as reading every block."""
    day = 24 * 3_600_000
    n = 3 * 24 * 60 if variant != "all_before" else 24 * 60
    lines = [json.dumps({**_good(i), "ts": T0 + 60_000 * i}) for i in range(1, n + 1)]
    if variant == "crlf_in_day_1":
        lines[700] += "\r"
    seps = ["\n"] * (n - 1)
    if variant == "lone_cr_in_day_1":  # line ends of a lone CR, one near every block's end
        for at in range(100, 1400, 7):
            seps[at] = "\r"
    if variant == "blank_lines":
        for at in (5, 900, 1500):
            lines[at] += "\n"
    if variant == "bad_row_before":
        lines[600] = '{"device": "x", "ts": "soon"'
    data = ("".join(x for pair in zip(lines, [*seps, "\n"], strict=True) for x in pair)).encode()
    path = tmp_path / ("p.jsonl.gz" if variant == "gzip" else "p.jsonl")
    path.write_bytes(gzip.compress(data) if variant == "gzip" else data)

    def read(skim: bool) -> tuple[list[list[int]], list[tuple[str, int, int | None]]]:
        notes: list[tuple[str, int, int | None]] = []
        period = columnar_files.Period(T0 + day, T0 + 2 * day, 10 * 60_000,
                                       lambda *note: notes.append(note))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(columnar_files, "BLOCK_BYTES", 1 << 14)
            mp.setattr(columnar_files, "FIRST_BLOCK_BYTES", 1 << 12)
            if not skim:
                mp.setattr(columnar_files.LineSource, "skim", lambda self, look=32: None)
            chunks = [c.line.tolist() for c in read_columns([path], chunk_rows=500, period=period)]
        return chunks, notes

    skimmed, plain = read(True), read(False)
    assert skimmed == plain
    assert plain[1] and plain[1][0][1] == 1  # the first lines were skipped, and said so


@pytest.mark.parametrize("lone_cr_at", [187, 1395, 1396])
def test_a_lone_cr_after_a_blocks_last_lf_is_not_skimmed_over(tmp_path: Path,
                                                               lone_cr_at: int) -> None:
    """A lone CR ends a line: a block whose last line end is one is read, not skimmed (a
    reviewer's case: skimming to the last LF shifted the blocks and named other lines)."""
    day = 24 * 3_600_000
    rows = [json.dumps({**_good(i), "ts": T0 + 60_000 * i}) for i in range(1, 2 * 24 * 60 + 1)]
    seps = ["\r" if i == lone_cr_at else "\n" for i in range(len(rows))]
    path = tmp_path / "p.jsonl"
    path.write_bytes("".join(r + s for r, s in zip(rows, seps, strict=True)).encode())

    def read(skim: bool) -> tuple[list[int], list[tuple[str, int, int | None]]]:
        notes: list[tuple[str, int, int | None]] = []
        period = columnar_files.Period(T0 + day, None, 10 * 60_000, lambda *n: notes.append(n))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(columnar_files, "BLOCK_BYTES", 1 << 14)
            mp.setattr(columnar_files, "FIRST_BLOCK_BYTES", 1 << 12)
            if not skim:
                mp.setattr(columnar_files.LineSource, "skim", lambda self, look=32: None)
            lines = [x for c in read_columns([path], period=period) for x in c.line.tolist()]
        return lines, notes

    assert read(True) == read(False)
