"""``defacto replay`` / ``calibrate`` over files as they come: several files of one day (field case
02), files saved by Excel with a BOM and CRLF (field case 03), one bad row of each kind after a
good one (fault case 05)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from estimators.units import MINUTE_MS
from stream.cli import main
from stream.sources.kafka_producer import record_columns
from stream.sources.ping_files import read_records

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
NORTH = (51.15, 71.45)


def _snapshots(path: Path) -> dict[str, dict]:
    return {s["at"]: s for s in map(json.loads, path.read_text().splitlines())}


def _north(snaps: dict[str, dict], at: str, field: str) -> object:
    return snaps[at]["regions"]["north"][field]


# --- field case 02: one day as three per-operator files ---------------------------------------

def _per_operator_files(tmp_path: Path) -> list[Path]:
    """3 operators x 20 devices in north, device i once at 00:10 + 15 min x i (each file sorted)."""
    paths = []
    for op in ("40101", "40102", "40177"):
        path = tmp_path / f"pings_{op}.jsonl"
        path.write_text("".join(
            json.dumps({"device": f"{op}-{i:02d}", "ts": T0 + (10 + 15 * i) * MINUTE_MS,
                        "operator": op, "home_mcc": 401, "lat": NORTH[0], "lon": NORTH[1]}) + "\n"
            for i in range(20)))
        paths.append(path)
    return paths


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0), "merged"])
def test_files_of_one_day_give_what_the_merged_file_gives(
        regions_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        order: tuple[int, ...] | str) -> None:
    files = _per_operator_files(tmp_path)
    if order == "merged":
        rows = sorted((json.loads(x) for f in files for x in f.read_text().splitlines()),
                      key=lambda r: r["ts"])
        merged = tmp_path / "all.jsonl"
        merged.write_text("".join(json.dumps(r) + "\n" for r in rows))
        args = [str(merged)]
    else:
        args = [str(files[i]) for i in order]
    out = tmp_path / "snap.jsonl"
    assert main(["replay", *args, "--regions", str(regions_file), "--out", str(out)]) == 0
    assert "60 rows read, 60 pings accepted, 0 rejected" in capsys.readouterr().err
    snaps = _snapshots(out)
    hours = [f"2026-03-02T0{h}:00:00Z" for h in range(1, 6)]
    assert [_north(snaps, at, "devices") for at in hours] == [None, 24, 36, 48, 60]  # k = 15
    assert _north(snaps, hours[-1], "present") == 60


def test_calibrate_merges_the_files_too(regions_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    files = _per_operator_files(tmp_path)
    reference = tmp_path / "reference.csv"
    reference.write_text("region,registered\nnorth,120\n")
    out = tmp_path / "cal.csv"
    assert main(["calibrate", *map(str, files[::-1]), "--reference", str(reference), "--regions",
                 str(regions_file), "--out", str(out)]) == 0
    assert "60 rows read, 60 pings accepted, 0 rejected" in capsys.readouterr().err


# --- field case 03: Excel's "CSV UTF-8" (BOM, CRLF) ----------------------------------------------

def _excel(path: Path, lines: list[str], bom: bool) -> Path:
    path.write_bytes(("\ufeff" if bom else "").encode() + "".join(x + "\r\n" for x in lines).encode())
    return path


@pytest.mark.parametrize("bom", ["pings.csv", "pings.jsonl", "cells", "registry"])
def test_files_with_a_bom_load_like_their_twins(regions_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str], bom: str) -> None:
    rows = [{"device": f"b{i:02d}", "ts": T0 + 1000 * i, "operator": "40101", "home_mcc": 401,
             "cell": "C1"} for i in range(20)]
    csv_lines = ["device,ts,operator,home_mcc,cell,lat,lon"] + \
        [f"{r['device']},{r['ts']},40101,401,C1,," for r in rows]
    pings = _excel(tmp_path / "pings.csv", csv_lines, bom == "pings.csv")
    if bom == "pings.jsonl":
        pings = _excel(tmp_path / "pings.jsonl", [json.dumps(r) for r in rows], True)
    cells = _excel(tmp_path / "cells.csv", ["operator,cell,lat,lon", f"40101,C1,{NORTH[0]},{NORTH[1]}"],
                   bom == "cells")
    registry = _excel(tmp_path / "registry.csv", ["region,registered", "north,15", "south,10"],
                      bom == "registry")
    out = tmp_path / "snap.jsonl"
    assert main(["replay", str(pings), "--regions", str(regions_file), "--cells", str(cells),
                 "--registry", str(registry), "--k", "1", "--out", str(out)]) == 0
    assert "20 rows read, 20 pings accepted, 0 rejected" in capsys.readouterr().err
    last = list(_snapshots(out).values())[-1]["regions"]["north"]
    assert (last["present"], last["registered"]) == (20, 15)


def test_regions_geojson_with_a_bom(regions_file: Path, tmp_path: Path) -> None:
    bom_regions = tmp_path / "regions_bom.geojson"
    bom_regions.write_bytes(b"\xef\xbb\xbf" + regions_file.read_bytes())
    pings = tmp_path / "p.jsonl"
    pings.write_text(json.dumps({"device": "d", "ts": T0, "operator": "40101",
                                 "lat": NORTH[0], "lon": NORTH[1]}) + "\n")
    assert main(["replay", str(pings), "--regions", str(bom_regions), "--k", "1",
                 "--out", str(tmp_path / "s.jsonl")]) == 0


# --- fault case 05: one bad row of each kind never stops a replay ------------------------------

GOOD = json.dumps({"device": "d1", "ts": T0, "operator": "40101", "home_mcc": 401, "lat": 51.1,
                   "lon": 71.4})
HEADER = "device,ts,operator,home_mcc,cell,lat,lon\nd1,1772409600000,40101,401,,51.1,71.4\n"
FAULT_05 = {  # file -> (content: one good row, one bad row), the bad row's line, reason
    "lone_surrogate_device.jsonl": (GOOD + "\n" + '{"device":"\\ud800","ts":1772409600000,'
                                    '"operator":"40101","home_mcc":401,"lat":51.1,"lon":71.4}\n',
                                    2, "bad_device"),
    "lone_surrogate_cell.jsonl": (GOOD + "\n" + '{"device":"d2","ts":1772409600000,'
                                  '"operator":"40101","home_mcc":401,"cell":"\\udc00"}\n',
                                  2, "bad_cell"),
    "int_5000_digits.jsonl": (GOOD + "\n" + '{"device":"d2","ts":' + "9" * 5000
                              + ',"operator":"40101","lat":51.1,"lon":71.4}\n', 2, "malformed_json"),
    "deep_nesting.jsonl": (GOOD + "\n" + "[" * 100_000 + "\n", 2, "malformed_json"),
    "deep_nesting_short.jsonl": (GOOD + "\n" + "[" * 60_000 + "\n", 2, "malformed_json"),
    "invalid_utf8.jsonl": ((GOOD + "\n").encode() + b'{"device":"\xff\xfe","ts":1772409600000,'
                           b'"operator":"40101","lat":51.1,"lon":71.4}\n', 2, "malformed_json"),
    "nul_ended_device.jsonl": (GOOD + "\n" + '{"device":"d2\\u0000","ts":1772409600000,'
                               '"operator":"40101","home_mcc":401,"lat":51.1,"lon":71.4}\n',
                               2, "bad_device"),
    "nul_ended_device.csv": (HEADER + "d2\x00,1772409600000,40101,401,,51.1,71.4\n", 3,
                             "bad_device"),
    "superscript_ts.csv": (HEADER + "d2,\u00b2,40101,401,,51.1,71.4\n", 3, "bad_ts"),
    "superscript_home_mcc.csv": (HEADER + "d2,1772409600000,40101,\u00b9,,51.1,71.4\n", 3,
                                 "bad_home_mcc"),
    "int_5000_digits.csv": (HEADER + "d2," + "9" * 5000 + ",40101,401,,51.1,71.4\n", 3, "bad_ts"),
    "field_200k.csv": (HEADER + "d2,1772409600000,40101,401," + "x" * 200_000 + ",,\n", 3,
                       "malformed_csv"),
    "invalid_utf8.csv": (HEADER.encode() + b"d\xff2,1772409600000,40101,401,,51.1,71.4\n", 3,
                         "malformed_csv"),
}


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes)
                     else content.encode("utf-8", "surrogatepass"))
    return path


@pytest.mark.parametrize("name", sorted(FAULT_05))
@pytest.mark.parametrize(("command", "reader"), [("replay", "thread"), ("calibrate", "thread"),
                                                 ("replay", "process")])
def test_one_bad_row_is_a_counted_reject_with_its_line(
        regions_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
        command: str, reader: str) -> None:
    content, line, reason = FAULT_05[name]
    pings = _write(tmp_path / name, content)
    rejects = tmp_path / "rejects.jsonl"
    args = [command, str(pings), "--regions", str(regions_file), "--rejects", str(rejects),
            "--reader", reader]
    if command == "replay":
        args += ["--out", str(tmp_path / "snap.jsonl")]
    else:
        reference = _write(tmp_path / "reference.csv", "region,registered\nnorth,10\n")
        args += ["--reference", str(reference), "--out", str(tmp_path / "cal.csv")]
    assert main(args) == 0
    assert f"2 rows read, 1 pings accepted, 1 rejected ({reason} 1)" in capsys.readouterr().err
    (reject,) = map(json.loads, rejects.read_text().splitlines())
    assert (reject["source"], reject["reason"]) == (f"{pings}:{line}", reason)
    assert "d2" not in json.dumps(reject) and "\\ud800" not in json.dumps(reject)


def test_truncated_gzip_keeps_the_snapshots_written_and_ends_in_one_line(
        regions_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Six hours of pings, one a minute, cut in the middle of the gzip stream: the hours read
    before the cut are published, then one error line and exit 2."""
    lines = "".join(json.dumps({"device": f"d{m % 7}", "ts": T0 + m * MINUTE_MS, "operator": "40101",
                                "lat": NORTH[0], "lon": NORTH[1]}) + "\n" for m in range(360))
    data = gzip.compress(lines.encode())
    pings = _write(tmp_path / "p.jsonl.gz", data[: len(data) // 2])
    out = tmp_path / "snap.jsonl"
    assert main(["replay", str(pings), "--regions", str(regions_file), "--k", "1",
                 "--out", str(out)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("defacto: warning")]
    assert len(err) == 1 and err[0].startswith(f"defacto: error: {pings}:")
    assert "the compressed data ends early (truncated .gz file)" in err[0]
    written = len(_snapshots(out))
    assert written >= 1
    assert err[0].endswith(f"; written before it, incomplete: {out} ({written:,} line(s))")
    # an error before this run opened its output does not name the earlier run's file
    assert main(["replay", str(pings), "--regions", str(tmp_path / "missing.geojson"),
                 "--out", str(out)]) == 2
    assert "incomplete" not in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(FAULT_05))
def test_produce_splits_the_same_files_into_pings_and_rows_to_forward(tmp_path: Path, name: str) -> None:
    """What ``defacto produce`` does with the records before Kafka: good rows become columns, the
    bad row is forwarded as UTF-8 bytes (the worker dead-letters it)."""
    pings = _write(tmp_path / name, FAULT_05[name][0])
    (chunk,) = read_records([pings])
    cols, bad = record_columns(chunk)
    assert len(cols["ts"]) == 1 and [r.source for r in bad] == [f"{pings}:{FAULT_05[name][1]}"]
    assert isinstance(bad[0].raw.encode(), bytes)
