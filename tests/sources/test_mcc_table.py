"""The MCC → country table defacto ships, its loader and the per-country factor rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from estimators.mcc import UNKNOWN, CountryTable
from stream.contract import InputError
from stream.sources.mcc_table import DEFAULT_TABLE, load_country_factors, load_mcc_table

KNOWN = {401: "KZ", 434: "UZ", 437: "KG", 436: "TJ", 438: "TM", 250: "RU", 460: "CN", 428: "MN",
         286: "TR", 412: "AF", 400: "AZ", 282: "GE", 283: "AM", 257: "BY", 255: "UA", 404: "IN",
         405: "IN", 410: "PK", 262: "DE", 234: "GB", 235: "GB", 440: "JP", 441: "JP"}


@pytest.fixture(scope="module")
def table() -> CountryTable:
    return load_mcc_table()


def test_known_codes(table: CountryTable) -> None:
    mccs = list(KNOWN)
    assert table.codes(mccs).tolist() == list(KNOWN.values())
    assert table.codes(range(310, 317)).tolist() == ["US"] * 7
    assert table.mccs_of("US") == list(range(310, 317))


def test_unknown_codes_are_xx(table: CountryTable) -> None:
    # unknown (-1), international networks, unassigned codes, out of range
    odd = [-1, 901, 902, 991, 0, 1, 461, 406, 999, 1000, -7, 10**6]
    assert table.codes(odd).tolist() == [UNKNOWN] * len(odd)
    assert table.index_of(np.array(odd)).dtype == np.int16
    assert table.mccs_of(UNKNOWN) == [] and table.mccs_of("ZZ") == []


def test_the_shipped_file_names_its_source_and_has_one_row_per_mcc(table: CountryTable) -> None:
    head = DEFAULT_TABLE.read_text(encoding="utf-8").splitlines()[:14]
    assert any("ITU-T E.212" in line for line in head)
    assert any("2026-11-29" in line for line in head)
    rows = [line for line in DEFAULT_TABLE.read_text().splitlines()
            if line and not line.startswith("#")][1:]
    assert len({r.split(",")[0] for r in rows}) == len(rows) > 200
    assert len(table.countries) > 200 and "XX" in table.countries
    assert list(table.countries) == sorted(table.countries)


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_another_table_with_comments_bom_and_crlf(tmp_path: Path) -> None:
    path = _write(tmp_path, "\ufeff# my table\r\n\r\nmcc,iso2\r\n401,KZ\r\n# note\r\n250,RU\r\n")
    t = load_mcc_table(path)
    assert t.countries == ("KZ", "RU", "XX")
    assert t.codes([401, 250, 434]).tolist() == ["KZ", "RU", "XX"]


@pytest.mark.parametrize(("text", "message"), [
    ("mcc,iso2\n401,KZ\n401,KG\n", r"t\.csv:3: MCC 401 is listed twice \(first on line 2\)"),
    ("mcc,iso2\n40,KZ\n", r"t\.csv:2: mcc must be three digits"),
    ("mcc,iso2\n4011,KZ\n", r"t\.csv:2: mcc must be three digits"),
    ("mcc,iso2\n٤٠١,KZ\n", r"t\.csv:2: mcc must be three digits"),  # Arabic-Indic digits
    ("mcc,iso2\n401,kz\n", r"t\.csv:2: iso2 must be two capital letters"),
    ("mcc,iso2\n401,KAZ\n", r"t\.csv:2: iso2 must be two capital letters"),
    ("mcc,iso2\n401\n", r"t\.csv:2: iso2 must be two capital letters"),
    ("mcc,iso2\n401,KZ,x\n", r"t\.csv:2: 3 values for 2 columns"),
    ("mcc,country\n401,KZ\n", r"t\.csv:1: missing column\(s\) iso2"),
    ("# only a comment\n", r"t\.csv: no header line"),
    ("mcc,iso2\n", r"t\.csv: no MCC rows"),
    ('mcc,iso2\n401,"KZ\n', r"t\.csv:2: not a CSV row \(unexpected end of data\)"),
])
def test_bad_tables_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        load_mcc_table(_write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_country_factors(tmp_path: Path, table: CountryTable) -> None:
    path = _write(tmp_path, "# border statistics 2025 / device arrivals\ncountry,factor,rse\n"
                            "UZ,3.5,0.1\nRU,2\nother,4.0,0.3\n*,3,0.5\n")
    rows = load_country_factors(path, table)
    assert [(r.country, r.factor, r.rse) for r in rows] == [
        ("UZ", 3.5, 0.1), ("RU", 2.0, 0.0), ("other", 4.0, 0.3), ("*", 3.0, 0.5)]


@pytest.mark.parametrize(("text", "message"), [
    ("country,factor\nQQ,2\n", r"t\.csv:2: country 'QQ' is not in the MCC table"),
    ("country,factor\nUZ,2\nUZ,3\n", r"t\.csv:3: country UZ is listed twice"),
    ("country,factor\nUZ,abc\n", r"t\.csv:2: factor 'abc' is not a decimal number"),
    ("country,factor\nUZ,0\n", r"t\.csv:2: country factor UZ: factor must be > 0"),
    ("country,factor\nUZ,1e400\n", r"t\.csv:2: country factor UZ: factor must be > 0"),
    ("country,factor,rse\nUZ,2,-1\n", r"t\.csv:2: country factor UZ: rse must be in"),
    ("region,factor\nUZ,2\n", r"t\.csv:1: missing column\(s\) country"),
])
def test_bad_country_factors_are_one_line_errors(tmp_path: Path, table: CountryTable, text: str,
                                                 message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_country_factors(_write(tmp_path, text), table)


def test_table_construction_errors() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        CountryTable.from_pairs([401, 401], ["KZ", "KZ"])
    with pytest.raises(ValueError, match=r"0\.\.999"):
        CountryTable.from_pairs([1000], ["KZ"])
    with pytest.raises(ValueError, match="two capital letters"):
        CountryTable.from_pairs([401], ["Kz"])
