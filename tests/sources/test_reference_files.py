"""Reference files: every problem is one line naming file, line and field; ranges hold at load."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimators.calibration import FACTOR_RANGE, Calibration, FactorRow, fit_factors
from estimators.cells import EARTH_RADIUS_M, sector_centre
from estimators.engine import Engine, EngineConfig
from estimators.estimate import EstimateConfig
from estimators.regions import RegionSet, regions_from_geojson
from stream.contract import InputError
from stream.sources.reference_files import (
    ReferencePaths,
    load_calibration,
    load_cell_plan,
    load_population,
    load_reference,
    load_regions,
    load_truth,
    registry_gaps,
    write_calibration,
)


@pytest.fixture
def regions(regions_doc: dict[str, Any]) -> RegionSet:
    return regions_from_geojson(regions_doc)


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def _error(load: Any, *args: Any) -> str:
    with pytest.raises(InputError) as info:
        load(*args)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    return message


# --- cell plan --------------------------------------------------------------------------------


def test_versioned_cell_plan_is_refused_at_its_second_row(tmp_path: Path) -> None:
    # field case 01: a re-planned cell listed twice with validity dates
    path = _file(tmp_path, "cells.csv",
                 "operator,cell,lat,lon,valid_from,valid_to\n"
                 "40101,1203-77,51.05,71.45,2024-01-01,2026-03-01\n"
                 "40101,1203-77,51.15,71.45,2026-03-01,\n"
                 "40101,1203-78,51.15,71.50,2024-01-01,\n")
    message = _error(load_cell_plan, path)
    assert message.startswith(f"{path}:3: duplicate cell '1203-77' for operator '40101' "
                              "(first on line 2)")
    assert "no validity dates" in message  # the history columns are named as the cause


def test_duplicate_cell_without_history_columns_names_both_lines(tmp_path: Path) -> None:
    path = _file(tmp_path, "cells.csv", "operator,cell,lat,lon\n40101,A,51,71\n40102,A,51,71\n"
                                        "\n40101,A,51.1,71\n")
    assert _error(load_cell_plan, path) == \
        f"{path}:5: duplicate cell 'A' for operator '40101' (first on line 2)"


def test_the_same_cell_id_of_two_operators_is_two_cells(tmp_path: Path) -> None:
    plan = load_cell_plan(_file(tmp_path, "cells.csv",
                                "operator,cell,lat,lon\r\n40101,A,51,71\r\n40102,A,-51,-71\r\n"))
    assert plan.operator == ["40101", "40102"] and plan.cell == ["A", "A"]
    assert plan.lat.tolist() == [51.0, -51.0] and plan.lon.tolist() == [71.0, -71.0]
    assert np.isnan(plan.azimuth_deg).all() and plan.path == tmp_path / "cells.csv"


@pytest.mark.parametrize(("row", "problem"), [
    ("40101,A,91,71", "lat must be -90..90 (degrees), got 91"),
    ("40101,A,51,-180.5", "lon must be -180..180 (degrees), got -180.5"),
    ("40101,A,nan,71", "lat 'nan' is not a decimal number"),
    ("40101,A,inf,71", "lat 'inf' is not a decimal number"),
    ("40101,A,1e400,71", "lat must be -90..90 (degrees), got 1e400"),
    ("40101,A,²,71", "lat '²' is not a decimal number"),
    ("40101,A,١٢,71", "lat '١٢' is not a decimal number"),
    ("40101,A,5_1,71", "lat '5_1' is not a decimal number"),
    ("40101,A,51,71,400,500", "azimuth_deg must be 0..360 (degrees from north), got 400"),
    ("40101,A,51,71,90,1e9", "range_m must be 0..100000 (metres), got 1e9"),
    ("40101,A,51,71,90,-5", "range_m must be 0..100000 (metres), got -5"),
    ("401,A,51,71", "operator must be an MCC+MNC of 5-6 digits, got '401'"),
    ("KZ-01,A,51,71", "operator must be an MCC+MNC of 5-6 digits, got 'KZ-01'"),
    (",A,51,71", "operator and cell must not be empty"),
    ("40101,,51,71", "operator and cell must not be empty"),
    ("40101,A", "lat '' is not a decimal number"),
])
def test_each_bad_cell_plan_value_names_line_and_column(tmp_path: Path, row: str,
                                                         problem: str) -> None:
    path = _file(tmp_path, "cells.csv", f"operator,cell,lat,lon,azimuth_deg,range_m\n"
                                        f"40101,OK,51,71,,\n{row}\n")
    assert _error(load_cell_plan, path) == f"{path}:3: {problem}"


def test_a_5000_digit_number_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = _file(tmp_path, "cells.csv", f"operator,cell,lat,lon\n40101,A,{'9' * 5000},71\n")
    message = _error(load_cell_plan, path)
    assert message.startswith(f"{path}:2: lat '9999") and "is not a decimal number" in message
    assert len(message) < 200


def test_more_operators_than_the_engine_holds(tmp_path: Path) -> None:
    rows = "".join(f"{40100 + i},A,51,71\n" for i in range(255))
    path = _file(tmp_path, "cells.csv", "operator,cell,lat,lon\n" + rows)
    assert _error(load_cell_plan, path) == f"{path}:256: more than 254 distinct operators"


def test_empty_plan_missing_columns_and_broken_bytes(tmp_path: Path) -> None:
    empty = _file(tmp_path, "empty.csv", "operator,cell,lat,lon\n")
    assert _error(load_cell_plan, empty) == f"{empty}: no rows"
    nothing = _file(tmp_path, "nothing.csv", "")
    assert _error(load_cell_plan, nothing) == \
        f"{nothing}: missing column(s) operator, cell, lat, lon (header is empty)"
    wrong = _file(tmp_path, "wrong.csv", "op;cell;lat;lon\n40101;A;51;71\n")
    assert _error(load_cell_plan, wrong) == \
        f"{wrong}: missing column(s) operator, cell, lat, lon (header is 'op;cell;lat;lon'); " \
        "its columns are separated by semicolons: defacto reads comma-separated files (export " \
        'as "CSV (comma delimited)")'
    geojson = _file(tmp_path, "regions.geojson",
                    '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
                    '{"id": "west"}, "geometry": {"type": "Polygon", "coordinates": []}}]}\n')
    message = _error(load_cell_plan, geojson)
    assert message.startswith(f"{geojson}: missing column(s) operator, cell, lat, lon (header is "
                              "'{\"type\": \"FeatureCollection\",")
    assert message.endswith("...'); the file is JSON, not CSV (a GeoJSON of regions goes to "
                            "--regions)")
    assert len(message) < len(str(geojson)) + 200
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"operator,cell,lat,lon\n40101,A,51,71\n40101,Caf\xe9,51,71\n")
    assert _error(load_cell_plan, latin1) == f"{latin1}:3: not UTF-8 text"
    huge = _file(tmp_path, "huge.csv", "operator,cell,lat,lon\n40101,\"" + "x" * 200_000 + "\",51,71\n")
    assert _error(load_cell_plan, huge).startswith(f"{huge}:2: not a CSV row (field larger")
    truncated = tmp_path / "cells.csv.gz"
    truncated.write_bytes(gzip.compress(b"operator,cell,lat,lon\n" + b"40101,A,51,71\n" * 50)[:-12])
    assert _error(load_cell_plan, truncated).startswith(f"{truncated}:")
    assert _error(load_cell_plan, tmp_path).startswith(f"{tmp_path}:1: cannot read")


def test_sector_centres_stay_on_the_globe(regions: RegionSet) -> None:
    # antennas at a pole or next to the antimeridian, pointing across it, with the longest range
    lat = np.array([89.9999, 0.0, 0.0, -90.0, 51.0])
    lon = np.array([0.0, 179.9999, -180.0, 10.0, 71.0])
    az = np.array([0.0, 90.0, 270.0, 180.0, 0.0])
    rng = np.array([100_000.0, 100_000.0, 100_000.0, 100_000.0, 2_000.0])
    clat, clon = sector_centre(lat, lon, az, rng)
    assert (np.abs(clat) <= 90).all() and (np.abs(clon) <= 180).all()
    assert clat[0] == 90.0 and clat[3] == -90.0
    assert -180 < clon[1] < -179 and 179 < clon[2] < 180  # wrapped across the antimeridian
    assert clat[4] == pytest.approx(51.0 + np.degrees(1_000 / EARTH_RADIUS_M)) and clon[4] == 71.0
    engine = Engine(regions, EngineConfig(res=8))
    plan = engine.load_cell_plan(["40101"] * 5, list("ABCDE"), lat, lon, az, rng)
    assert len(plan) == 5 and len(engine.cells) == 5


# --- calibration ------------------------------------------------------------------------------


def test_duplicate_calibration_row_names_both_lines(tmp_path: Path, regions: RegionSet) -> None:
    path = _file(tmp_path, "calibration_dup.csv", "region,operator,factor\nwest,*,2.0\nwest,*,2.5\n")
    assert _error(load_calibration, path) == \
        f"{path}:3: duplicate row for region 'west', operator '*' (first on line 2)"
    blank = _file(tmp_path, "blank.csv", "region,operator,factor\ncity,,2.0\ncity,*,2.5\n")
    assert _error(load_calibration, blank, regions) == \
        f"{blank}:3: duplicate row for region 'city', operator '*' (first on line 2)"


@pytest.mark.parametrize(("row", "problem"), [
    ("city,*,1e155,", "factor must be > 0, in the plausible range 0.01..10000 people per counted "
                      "device; got 1e+155"),
    ("city,*,1e200,0", "factor must be > 0, in the plausible range 0.01..10000 people per counted "
                       "device; got 1e+200"),
    ("city,*,0,", "factor must be > 0, in the plausible range 0.01..10000 people per counted "
                  "device; got 0"),
    ("city,*,0.001,", "factor must be > 0, in the plausible range 0.01..10000 people per counted "
                      "device; got 0.001"),
    ("city,*,2,1e200", "rse must be in [0, 10), got 1e+200"),
    ("city,*,2,10", "rse must be in [0, 10), got 10"),
    ("city,*,2,-0.1", "rse must be in [0, 10), got -0.1"),
    ("city,*,nan,", "factor 'nan' is not a decimal number"),
    ("city,*,2,inf", "rse 'inf' is not a decimal number"),
    ("atlantis,*,2,", "unknown region 'atlantis'"),
    ("city,T2,2,", "operator must be an MCC+MNC of 5-6 digits, 'roaming' or '*', got 'T2'"),
])
def test_each_bad_calibration_value_names_line_and_column(tmp_path: Path, regions: RegionSet,
                                                          row: str, problem: str) -> None:
    path = _file(tmp_path, "cal.csv", f"region,operator,factor,rse\n*,*,2,0.1\n{row}\n")
    assert _error(load_calibration, path, regions) == f"{path}:3: {problem}"


def test_calibration_limits_are_inclusive_and_round_trip(tmp_path: Path, regions: RegionSet) -> None:
    lo, hi = FACTOR_RANGE
    path = _file(tmp_path, "cal.csv", f"region,operator,factor,rse\ncity,40101,{lo},0\n"
                                      f"north,roaming,{hi},9.99\n,,2.5,\n")
    rows = load_calibration(path, regions)
    assert rows == [FactorRow("city", "40101", lo, 0.0), FactorRow("north", "roaming", hi, 9.99),
                    FactorRow("*", "*", 2.5, 0.0)]
    out = tmp_path / "again.csv"
    write_calibration(out, rows)
    assert load_calibration(out, regions) == rows
    write_calibration(tmp_path / "new" / "dir" / "c.csv", rows)  # its folder is made
    assert load_calibration(tmp_path / "new" / "dir" / "c.csv")
    with pytest.raises(InputError, match=r"cannot write \(a file stands where its folder would be\)"):
        write_calibration(out / "c.csv", rows)  # under a file
    assert _error(load_calibration, _file(tmp_path, "none.csv", "region,operator,factor\n")) \
        .endswith(": no rows")


def test_the_largest_factors_allowed_still_give_finite_intervals(regions: RegionSet) -> None:
    # fault 09: a factor of 1e155 overflowed sd^2 = sum w(w-1) + (rse sum w)^2 to inf
    hi = FACTOR_RANGE[1]
    n = 2_000
    cal = Calibration([FactorRow("*", "*", hi, 9.99)])
    engine = Engine(regions, EngineConfig(res=8, estimate=EstimateConfig(k_anonymity=1,
                                                                          model_rse=0.999)), cal)
    op = engine.operator_code("40101")
    t0 = 1_772_409_600_000
    lat, lon = np.full(n, 51.15), np.full(n, 71.45)
    engine.ingest(np.arange(1, n + 1, dtype=np.uint64), np.full(n, t0, dtype=np.int64),
                  engine.operator_class(np.full(n, op), np.full(n, 401)),
                  engine.cells.locate_latlng(lat, lon))
    est = engine.estimate_tally(engine.tally(t0 + 1000))
    north = regions.index["north"]
    assert est.present[north] == pytest.approx(n * hi)
    assert np.isfinite(est.present_lo[north]) and np.isfinite(est.present_hi[north])
    assert est.present_lo[north] < n * hi < est.present_hi[north]


def test_a_fitted_factor_outside_the_plausible_range_says_why(regions: RegionSet) -> None:
    home = np.array([regions.index["north"]] * 3)
    with pytest.raises(ValueError, match=r"reference region 'north': 100000 people on 3\.0 "
                                         r"devices .* outside the plausible 0\.01\.\.10000"):
        fit_factors(regions, {"north": 100_000}, home, np.ones(3))
    rows = fit_factors(regions, {"north": 6}, home, np.ones(3))
    assert rows[0].factor == 2.0


# --- registry and reference population --------------------------------------------------------


def test_population_counts(tmp_path: Path, regions: RegionSet) -> None:
    path = _file(tmp_path, "registry.csv", "region,registered\ncity,1000\nnorth, 0 \nsouth,1.2e3\n")
    assert load_population(path, regions) == {"city": 1000, "north": 0, "south": 1200}
    older = _file(tmp_path, "population.csv", "region,population\nrural,12\n")
    assert load_population(older) == {"rural": 12}


def test_regions_the_registry_leaves_out_are_warned_about(
        tmp_path: Path, regions: RegionSet, regions_doc: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    full = {"city": 1000, "north": 600, "south": 400, "rural": 50}
    assert registry_gaps(regions, full) == []
    assert registry_gaps(regions, {"north": 600, "south": 400, "rural": 50}) == [
        "no row for 1 region(s) ('city'): their registered figure and gap are null (the "
        "subregions of 'city' sum to 1,000: add the row if they cover it whole)"]
    assert registry_gaps(regions, {"city": 1000, "rural": 50}) == [
        "no row for 2 region(s) ('north', 'south'): their registered figure and gap are null"]
    # said once, on stderr, when a run loads its reference files
    registry = _file(tmp_path, "registry.csv", "region,registered\ncity,1000\nrural,50\n")
    geojson = tmp_path / "regions.geojson"
    geojson.write_text(json.dumps(regions_doc))
    load_reference(ReferencePaths(regions=geojson, registry=registry))
    assert capsys.readouterr().err == (
        f"defacto: warning: {registry}: no row for 2 region(s) ('north', 'south'): their "
        "registered figure and gap are null\n")


@pytest.mark.parametrize(("row", "problem", "minimum"), [
    ("south,-1", "registered must be 0..10000000000 (people), got -1", 0),
    ("south,1e300", "registered must be 0..10000000000 (people), got 1e300", 0),
    ("south,nan", "registered 'nan' is not a decimal number", 0),
    ("south,²", "registered '²' is not a decimal number", 0),
    ("south,", "registered '' is not a decimal number", 0),
    ("city,5", "region 'city' listed twice (first on line 2)", 0),
    ("atlantis,5", "unknown region 'atlantis'", 0),
    (",5", "region must not be empty", 0),
    ("south,0", "registered must be 1..10000000000 (people), got 0", 1),
])
def test_each_bad_population_value_names_line_and_column(tmp_path: Path, regions: RegionSet,
                                                         row: str, problem: str,
                                                         minimum: int) -> None:
    path = _file(tmp_path, "registry.csv", f"region,registered\ncity,1000\n{row}\n")
    assert _error(load_population, path, regions, minimum) == f"{path}:3: {problem}"


def test_population_header_needs_a_count_column(tmp_path: Path) -> None:
    path = _file(tmp_path, "registry.csv", "region,people\ncity,5\n")
    assert _error(load_population, path) == \
        f"{path}: missing column(s) registered or population (header is 'region,people')"


def test_truth_file_problems_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "truth.jsonl"
    bad.write_bytes(b'{"at": "x", "regions": {}}\n\xff\xfe\n')
    assert _error(load_truth, bad) == f"{bad}:2: not UTF-8 text"
    deep = _file(tmp_path, "deep.jsonl", "[" * 100_000 + "\n")
    assert _error(load_truth, deep).startswith(f"{deep}:1: not a truth record")


def test_regions_that_are_not_json_say_so_and_a_csv_is_named(tmp_path: Path) -> None:
    csv_file = _file(tmp_path, "cells.csv", "operator,cell,lat,lon\n40101,A,51,71\n")
    assert _error(load_regions, csv_file) == (
        f"{csv_file}: not valid JSON (Expecting value: line 1 column 1 (char 0)); it looks like a "
        "CSV file (a cell plan goes to --cells, a registry to --registry; --regions reads GeoJSON)")
    broken = _file(tmp_path, "r.geojson", '{"type": "FeatureCollection", "features": [}')
    assert _error(load_regions, broken) == \
        f"{broken}: not valid JSON (Expecting value: line 1 column 44 (char 43))"
