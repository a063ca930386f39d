"""Reading ping files as people save them: BOM, CRLF/CR, blank lines, quoting, gzip; and bad
rows (field case 03, fault case 05) as records the decoder rejects with their line numbers."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from stream.contract import InputError, Record
from stream.sources.ping_files import MAX_ROW_CHARS, file_records, read_records
from stream.sources.text_files import MAX_LINE_CHARS, open_text

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
HEADER = "device,ts,operator,home_mcc,cell,lat,lon"
GOOD = {"device": "d1", "ts": T0, "operator": "40101", "home_mcc": 401, "lat": 51.1, "lon": 71.4}
GOOD_LINE = json.dumps(GOOD)
GOOD_CSV = "d1,1772409600000,40101,401,,51.1,71.4"


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


def _records(path: Path) -> list[Record]:
    return [r for chunk in read_records([path]) for r in chunk]


def _summary(records: list[Record]) -> list[tuple[str, object]]:
    """(line, fields or the error) of each record."""
    return [(r.source.rsplit(":", 1)[1], r.fields if r.fields is not None else r.error)
            for r in records]


# --- text as people save it (field case 03) --------------------------------------------------

PLAIN_ROWS = [{"device": f"b{i:02d}", "ts": T0 + 1000 * i, "operator": "40101", "home_mcc": 401,
               "cell": "C1", "lat": None, "lon": None} for i in range(5)]


def _csv_text(newline: str, bom: bool = False, trailing: bool = True) -> str:
    lines = [HEADER] + [f"{r['device']},{r['ts']},40101,401,C1,," for r in PLAIN_ROWS]
    return ("\ufeff" if bom else "") + newline.join(lines) + (newline if trailing else "")


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("trailing", [False, True])
def test_csv_bom_line_ends_and_last_newline_read_alike(tmp_path: Path, newline: str, bom: bool,
                                                       trailing: bool) -> None:
    path = _write(tmp_path / "p.csv", _csv_text(newline, bom, trailing))
    got = _records(path)
    assert [r.fields for r in got] == PLAIN_ROWS
    assert [r.source for r in got] == [f"{path}:{i}" for i in range(2, 7)]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("bom", [False, True])
def test_jsonl_bom_line_ends_read_alike(tmp_path: Path, newline: str, bom: bool) -> None:
    body = newline.join(json.dumps(r) for r in PLAIN_ROWS)
    path = _write(tmp_path / "p.jsonl", ("\ufeff" if bom else "") + body)
    got = _records(path)
    assert [r.fields for r in got] == PLAIN_ROWS
    assert [r.source for r in got] == [f"{path}:{i}" for i in range(1, 6)]


def test_blank_lines_are_skipped_and_lines_keep_their_numbers(tmp_path: Path) -> None:
    csv_path = _write(tmp_path / "p.csv", f"\r\n{HEADER}\r\n\r\n   \r\n{GOOD_CSV}\r\n\r\n")
    assert _summary(_records(csv_path)) == [("5", {**GOOD, "cell": None})]
    jsonl_path = _write(tmp_path / "p.jsonl", f"\n  \n\t\n{GOOD_LINE}\r\n\n")
    assert _summary(_records(jsonl_path)) == [("4", GOOD)]


def test_files_joined_with_cat_bom_and_header_again(tmp_path: Path) -> None:
    one = "\ufeff" + HEADER + "\r\n" + GOOD_CSV + "\r\n"
    csv_path = _write(tmp_path / "p.csv", one + one)
    assert _summary(_records(csv_path)) == [("2", {**GOOD, "cell": None}),
                                            ("4", {**GOOD, "cell": None})]
    jsonl_path = _write(tmp_path / "p.jsonl", f"\ufeff{GOOD_LINE}\n\ufeff{GOOD_LINE}\n")
    assert [r.fields for r in _records(jsonl_path)] == [GOOD, GOOD]


def test_quoted_csv_fields_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    text = (f"{HEADER}\r\n"
            '"d,1",1772409600000,40101,401,"cell ""A""",,\r\n'
            '"d\r\n2",1772409600001,"40101",,"two\nlines",,\r\n'
            f"{GOOD_CSV}\r\n")
    got = _records(_write(tmp_path / "p.csv", text))
    assert _summary(got) == [
        ("2", {"device": "d,1", "ts": T0, "operator": "40101", "home_mcc": 401,
               "cell": 'cell "A"', "lat": None, "lon": None}),
        ("3", {"device": "d\r\n2", "ts": T0 + 1, "operator": "40101", "home_mcc": None,
               "cell": "two\nlines", "lat": None, "lon": None}),
        ("6", {**GOOD, "cell": None}),  # row 3 spans lines 3..5
    ]


def test_gzip_is_recognized_by_its_bytes(tmp_path: Path) -> None:
    data = gzip.compress(f"\ufeff{HEADER}\r\n{GOOD_CSV}\r\n".encode())
    for name in ("p.csv.gz", "p.csv"):
        assert [r.fields for r in _records(_write(tmp_path / name, data))] == [{**GOOD, "cell": None}]


def test_utf16_text_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", f"\ufeff{HEADER}\r\n{GOOD_CSV}\r\n".encode("utf-16"))
    with pytest.raises(InputError, match=r"p\.csv: UTF-16 text; save it as UTF-8"):
        _records(path)


# --- bad rows are records (fault case 05), whole-file problems InputErrors ------------------

@pytest.mark.parametrize(
    ("name", "bad_line", "error"),
    [
        ("invalid_utf8.jsonl", b'{"device":"\xff\xfe","ts":1}',
         "malformed JSON: not UTF-8 (byte 0xff at column 12)"),
        ("truncated_utf8.jsonl", b'{"device":"\xc3"}', "malformed JSON: not UTF-8 (byte 0xc3"),
        ("surrogate_bytes.jsonl", b'{"device":"\xed\xa0\x80"}', "malformed JSON: not UTF-8"),
        ("int_5000_digits.jsonl", ('{"device":"d2","ts":' + "9" * 5000 + "}").encode(),
         "malformed JSON: a number with too many digits"),
        ("deep_nesting.jsonl", b"[" * 50_000, "malformed JSON: nested too deeply"),
        ("not_object.jsonl", b"[1, 2]", "not a JSON object"),
        ("extra.jsonl", b'{"device":"d2"} {"x":1}', "malformed JSON: Extra data (column 17)"),
        ("broken.jsonl", b'{"device":"d2"', "malformed JSON: Expecting ',' delimiter"),
        ("long_line.jsonl", b"[" * 100_000, f"malformed JSON: line longer than {MAX_ROW_CHARS:,}"),
        ("invalid_utf8.csv", b"d\xff2,1772409600000,40101,401,,51.1,71.4",
         "invalid UTF-8 (byte 0xff)"),
        ("columns.csv", b"d2,1772409600000,40101", "expected 7 columns, got 3"),
        ("field_200k.csv", b"d2,1772409600000,40101,401," + b"x" * 200_000 + b",,",
         f"row longer than {MAX_ROW_CHARS:,} characters"),
        ("open_quote.csv", b'd2,"' + b"x," * 40_000, f"row longer than {MAX_ROW_CHARS:,}"),
    ],
)
def test_a_bad_row_is_one_record_with_its_line_and_reading_goes_on(
        tmp_path: Path, name: str, bad_line: bytes, error: str) -> None:
    csv = name.endswith(".csv")
    good = (GOOD_CSV if csv else GOOD_LINE).encode()
    head = (HEADER + "\n").encode() if csv else b""
    path = _write(tmp_path / name, head + good + b"\n" + bad_line + b"\n" + good + b"\n")
    got = _records(path)
    first = 2 if csv else 1
    assert [r.source for r in got] == [f"{path}:{first + i}" for i in range(3)]
    assert got[0].fields is not None and got[2].fields is not None
    assert got[1].fields is None and got[1].error.startswith(error), got[1].error
    assert isinstance(got[1].raw.encode("utf-8"), bytes)  # produce forwards it: always UTF-8
    assert len(got[1].raw) <= MAX_ROW_CHARS


def test_a_row_at_the_limit_is_read_and_one_over_is_not(tmp_path: Path) -> None:
    head = '{"device":"d2","cell":"'
    at = head + "x" * (MAX_ROW_CHARS - len(head) - 2) + '"}'
    assert len(at) == MAX_ROW_CHARS
    over = at[:-2] + 'x"}'
    for end in ("\n", "\r\n", "\r"):
        path = _write(tmp_path / "p.jsonl", end.join([at, over, at, GOOD_LINE]) + end)
        got = _records(path)
        assert [r.source.rsplit(":", 1)[1] for r in got] == ["1", "2", "3", "4"]
        assert [r.fields is not None for r in got] == [True, False, True, True]
    row = f"d2,{T0},40101,401,"
    at = row + "x" * (MAX_ROW_CHARS - len(row) - 2) + ",,"
    over = "x" + at
    for end in ("\n", "\r\n", "\r"):  # CSV: a quoted line break counts, the final one not
        path = _write(tmp_path / "p.csv", end.join([HEADER, at, over, at, f'"a{end}b"' + at[2:]]) + end)
        got = _records(path)
        assert [r.source.rsplit(":", 1)[1] for r in got] == ["2", "3", "4", "5"]
        assert [r.fields is not None for r in got] == [True, False, True, False]


def test_lone_surrogate_escapes_are_valid_json_and_reach_the_contract(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", '{"device":"\\ud800","ts":1772409600000,'
                                        '"operator":"40101","cell":"\\udc00"}\n')
    (rec,) = _records(path)
    assert rec.fields == {"device": "\ud800", "ts": T0, "operator": "40101", "cell": "\udc00"}


@pytest.mark.parametrize(
    ("cell", "value"),
    [("1772409600000", T0), ("-5", -5), ("0401", 401), ("²", "²"), ("¹", "¹"), ("١٢", "١٢"),
     ("1_2", "1_2"), ("+12", "+12"), ("1e3", "1e3"), ("9" * 5000, "9" * 5000),
     ("9" * 32, int("9" * 32)), ("9" * 33, "9" * 33), ("1.0", "1.0")],
)
def test_csv_integers_are_ascii_digits_only(tmp_path: Path, cell: str, value: object) -> None:
    path = _write(tmp_path / "p.csv", f"{HEADER}\nd2,{cell},40101,{cell},,51.1,71.4\n")
    (rec,) = _records(path)
    assert rec.fields is not None
    assert rec.fields["ts"] == value and rec.fields["home_mcc"] == value
    assert type(rec.fields["ts"]) is type(value)


@pytest.mark.parametrize(
    ("cell", "value"),
    [("51.5", 51.5), ("-1e1", -10.0), (".5", 0.5), ("1_0", "1_0"), ("٣", "٣"), ("5١", "5١"),
     ("x", "x")],
)
def test_csv_coordinates_are_ascii_numbers_only(tmp_path: Path, cell: str, value: object) -> None:
    path = _write(tmp_path / "p.csv", f"{HEADER}\nd2,{T0},40101,,,{cell},{cell}\n")
    (rec,) = _records(path)
    assert rec.fields is not None and rec.fields["lat"] == value and rec.fields["lon"] == value


def test_csv_header_problems_are_one_line_errors_that_do_not_quote_it(tmp_path: Path) -> None:
    no_header = _write(tmp_path / "a.csv", "PSEUDO0001,1772409600000,40101,401,,51.1,71.4\n")
    with pytest.raises(InputError, match=r"a\.csv:1: missing column\(s\) device, ts, operator") as e:
        _records(no_header)
    assert "PSEUDO" not in str(e.value)
    twice = _write(tmp_path / "b.csv", "\n\ndevice,ts,operator,ts\n")
    with pytest.raises(InputError, match=r"b\.csv:3: column\(s\) ts named twice"):
        _records(twice)
    not_utf8 = _write(tmp_path / "c.csv", b"device,ts,operator,\xff\n")
    with pytest.raises(InputError, match=r"c\.csv:1: the header line is not UTF-8"):
        _records(not_utf8)
    json_lines = _write(tmp_path / "d.csv", '{"device": "PSEUDO0001", "ts": 1772409600000}\n')
    with pytest.raises(InputError) as e:
        _records(json_lines)
    assert str(e.value).endswith("; the file is JSON, not CSV (JSON Lines pings: name the file "
                                 ".jsonl)")
    assert "PSEUDO" not in str(e.value)


def test_truncated_gzip_is_an_error_after_the_rows_before_it(tmp_path: Path) -> None:
    data = gzip.compress((GOOD_LINE + "\n").encode() * 5000)
    path = _write(tmp_path / "p.jsonl.gz", data[: len(data) // 2])
    got: list[Record] = []
    with pytest.raises(InputError) as exc:
        for chunk in read_records([path], chunk_rows=100):
            got.extend(chunk)
    msg = str(exc.value)
    assert msg == (f"{path}:{len(got) + 1}: the compressed data ends early (truncated .gz "
                   "file); the lines before it were read")
    assert len(got) > 100 and all(r.fields == GOOD for r in got)


@pytest.mark.parametrize(
    ("data", "problem"),
    [(b"\x1f\x8b" + b"\x00" * 30, "corrupt gzip data"),
     (gzip.compress(b"x" * 100)[:12], "the compressed data ends early")],
)
def test_corrupt_gzip_is_a_one_line_error(tmp_path: Path, data: bytes, problem: str) -> None:
    with pytest.raises(InputError, match=rf"p\.jsonl\.gz:1: {problem}"):
        _records(_write(tmp_path / "p.jsonl.gz", data))


def test_missing_directory_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file"):
        _records(tmp_path / "nope.jsonl")
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(InputError, match=r"d\.jsonl:1: cannot read \(a directory, not a file\)"):
        _records(tmp_path / "d.jsonl")
    with pytest.raises(InputError, match=r"p\.txt: unknown ping file type"):
        _records(_write(tmp_path / "p.txt", GOOD_LINE))


def test_a_file_given_twice_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", GOOD_LINE)
    with pytest.raises(InputError, match="given twice"):
        list(read_records([path, tmp_path / "." / "p.jsonl"]))


def test_a_huge_line_is_never_held_whole(tmp_path: Path) -> None:
    """A 32 MB line without a line end (JSON Lines) or inside an open quote (CSV): reading
    holds at most a few row limits, not the line."""
    size = 32 << 20
    for name, head in (("p.jsonl", b""), ("p.csv", (HEADER + '\nd2,"').encode())):
        path = tmp_path / name
        with open(path, "wb") as fh:
            fh.write(head)
            for _ in range(size // (1 << 20)):
                fh.write(b"a" * (1 << 20))
            fh.write(b'"\n' + ((GOOD_CSV if name.endswith("csv") else GOOD_LINE) + "\n").encode())
        tracemalloc.start()
        got = _records(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 16 * MAX_ROW_CHARS * 4 + (1 << 20), (name, peak)
        assert got[0].fields is None and got[-1].fields is not None


# --- the shared opener, as the reference loaders use it ---------------------------------------

def test_open_text_lines_and_read_for_reference_loaders(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", "\ufeffregion,registered\r\nwest,15\r\n")
    with open_text(path) as fh:
        assert list(fh) == ["region,registered\r\n", "west,15\r\n"]
    with open_text(path) as fh:
        assert fh.read() == "region,registered\r\nwest,15\r\n"
    bad = _write(tmp_path / "b.csv", b"region,registered\nwest,15\r\n\xe2\x82,1\n")
    with pytest.raises(InputError, match=r"b\.csv:3: not UTF-8 text$"), \
            open_text(bad) as fh:
        list(fh)
    with pytest.raises(InputError, match=r"b\.csv:3: not UTF-8 text$"), \
            open_text(bad) as fh:
        fh.read()
    long = _write(tmp_path / "l.csv", "a\n" + "x" * (MAX_LINE_CHARS + 1) + "\n")
    with pytest.raises(InputError, match=r"l\.csv:2: line longer than 16,777,216 characters"), \
            open_text(long) as fh:
        list(fh)


def test_chunks_are_cut_by_rows_and_by_size(tmp_path: Path) -> None:
    long_row = json.dumps({**GOOD, "cell": "x" * 1000})
    path = _write(tmp_path / "p.jsonl", (GOOD_LINE + "\n") * 10 + (long_row + "\n") * 10)
    chunks = list(read_records([path], chunk_rows=4, chunk_chars=2500))
    assert sum(map(len, chunks)) == 20 and max(map(len, chunks)) == 4
    for c in chunks:  # a chunk ends at its 4th row or at the row that brings it to 2,500 chars
        assert len(c) == 4 or sum(len(r.raw) for r in c[:-1]) < 2500 <= sum(len(r.raw) for r in c) \
            or c is chunks[-1]
    assert [len(c) for c in chunks] == [4, 4, 4, 3, 3, 2]  # 3 long rows (1,113 chars) reach 2,500


def test_file_records_closes_the_file_when_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", (GOOD_LINE + "\n") * 10)
    it = file_records(path)
    next(it)
    it.close()  # generator close: the file's `with` exits
    assert next(file_records(path)).fields == GOOD
