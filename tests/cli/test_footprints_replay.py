"""Border cells in calibrate and replay: the calibration file carries the reference population,
replays spread border cells' devices by it, and the spread does not depend on the key."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from stream.cli import main
from stream.contract import InputError
from stream.estimate import engine_options
from stream.estimate.engine_options import EngineOptions, build_engine
from stream.estimate.fingerprint import REGION_RULE, region_rule
from stream.simulator import load_scenario, simulate, write_simulation
from stream.sources.reference_files import (
    ReferencePaths,
    load_calibration,
    load_population,
    load_reference,
)

WARNING = "--footprints reference (the default): no reference population"
UNCALIBRATED = ("no --calibration: every device counts as one person, and devices at cells "
                "straddling a region border count in their site's region")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two simulated days of astana (JSON Lines), two keys and a calibration fitted on day 1."""
    out = tmp_path_factory.mktemp("footprints")
    write_simulation(simulate(load_scenario("astana"), scale=0.001, days=2.0, seed=11), out)
    (out / "key_a").write_text("key-a-0123456789abcdef-0123456789")
    (out / "key_b").write_text("key-b-fedcba9876543210-9876543210")
    assert main(["calibrate", str(out / "pings.jsonl"), "--regions", str(out / "regions.geojson"),
                 "--cells", str(out / "cells.csv"), "--reference", str(out / "reference.csv"),
                 "--key-file", str(out / "key_a"), "--to", "2026-03-03T00:00:00Z",
                 "--out", str(out / "calibration.csv")]) == 0
    return out


def _replay(files: Path, out: Path, *extra: str) -> str:
    assert main(["replay", str(files / "pings.jsonl"), "--regions", str(files / "regions.geojson"),
                 "--cells", str(files / "cells.csv"), "--registry", str(files / "registry.csv"),
                 "--out", str(out), *extra]) == 0
    return out.read_text()


def test_calibrate_writes_the_reference_population(files: Path) -> None:
    with (files / "calibration.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["region", "operator", "factor", "rse", "people", "footprints"]
    reference = load_population(files / "reference.csv")
    assert {r["region"]: int(r["people"]) for r in rows} == reference
    assert all(r["operator"] == "*" and r["footprints"] == "reference" for r in rows)
    # read back (and an older file without the column still loads, with no people)
    loaded = load_calibration(files / "calibration.csv")
    assert {r.region: r.people for r in loaded} == reference
    old = files / "old_calibration.csv"
    old.write_text("region,operator,factor,rse\n" + "".join(
        f"{r['region']},*,{r['factor']},{r['rse']}\n" for r in rows))
    assert all(r.people is None for r in load_calibration(old))


def test_replays_under_two_keys_give_identical_snapshots(files: Path, tmp_path: Path) -> None:
    """The piece a border cell's device lands in comes from an unkeyed hash: the snapshots of
    two keys are the same, and differ from the site rule's (the plan has border cells)."""
    reference = load_reference(ReferencePaths(files / "regions.geojson", None,
                                              files / "calibration.csv", files / "cells.csv"))
    engine = build_engine(EngineOptions(), reference)
    assert engine.plan is not None and engine.plan.footprints is not None
    assert engine.plan.footprints.border_rows().size >= 5
    cal = ("--calibration", str(files / "calibration.csv"))
    a = _replay(files, tmp_path / "a.jsonl", *cal, "--key-file", str(files / "key_a"))
    b = _replay(files, tmp_path / "b.jsonl", *cal, "--key-file", str(files / "key_b"))
    site = _replay(files, tmp_path / "site.jsonl", *cal, "--key-file", str(files / "key_a"),
                   "--footprints", "site")
    assert len(a.splitlines()) >= 24
    assert a == b
    assert a != site


def test_without_a_reference_population_the_site_rule_is_used_and_said_once(
        files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(engine_options, "_warned", set())
    plain = _replay(files, tmp_path / "plain.jsonl")
    err = capsys.readouterr().err
    # one line says both what the missing calibration means and where border cells go
    assert err.count("warning:") == 1
    assert err.count(UNCALIBRATED) == 1 and "the default --footprints reference spreads" in err
    site = _replay(files, tmp_path / "site.jsonl", "--footprints", "site")
    err = capsys.readouterr().err
    assert "border" not in err and err.count("warning: no --calibration: every device counts as "
                                             "one person\n") == 1
    assert plain == site
    # a calibration without its people column: only the border cells are said
    old = tmp_path / "old_calibration.csv"
    old.write_text("region,operator,factor,rse\n" + "".join(
        f"{r['region']},*,{r['factor']},{r['rse']}\n"
        for r in csv.DictReader((files / "calibration.csv").open())))
    _replay(files, tmp_path / "old.jsonl", "--calibration", str(old))
    err = capsys.readouterr().err
    assert err.count(WARNING) == 1 and "no --calibration" not in err


def test_the_region_rule_names_the_population_it_spreads_by(files: Path) -> None:
    paths = ReferencePaths(files / "regions.geojson", None, files / "calibration.csv",
                           files / "cells.csv")
    with_people = load_reference(paths)
    rule = region_rule(EngineOptions(), with_people)
    assert rule.startswith(REGION_RULE + "; border cells: reference by ")
    assert region_rule(EngineOptions(footprints="site"), with_people) == REGION_RULE
    assert region_rule(EngineOptions(footprints="area"), with_people) == \
        REGION_RULE + "; border cells: area"
    # another population: another rule (tallies are never summed across them)
    other = files / "other_calibration.csv"
    text = (files / "calibration.csv").read_text().splitlines()
    first = text[1].split(",")
    first[4] = str(int(first[4]) + 1)
    other.write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    changed = load_reference(ReferencePaths(paths.regions, None, other, paths.cells))
    assert region_rule(EngineOptions(), changed) != rule
    # without people (no calibration): the site rule, as before footprints
    bare = load_reference(ReferencePaths(paths.regions, None, None, paths.cells))
    assert region_rule(EngineOptions(), bare) == REGION_RULE


def test_people_on_an_operator_row_is_refused_in_one_line(tmp_path: Path) -> None:
    cal = tmp_path / "cal.csv"
    cal.write_text("region,operator,factor,rse,people\nastana,40101,1.5,0,1000\n")
    with pytest.raises(InputError) as err:
        load_calibration(cal, None)
    message = str(err.value)
    assert message.startswith(f"{cal}:2: people is allowed only on REGION,* rows")
    assert "operator '40101'" in message and "\n" not in message


def test_a_calibration_fitted_under_another_rule_is_said_once(
        files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The file records the rule its factors were fitted under; a run under another rule says
    so once (the factors fit the other placement of border cells)."""
    monkeypatch.setattr(engine_options, "_warned", set())
    cal = ("--calibration", str(files / "calibration.csv"), "--key-file", str(files / "key_a"))
    _replay(files, tmp_path / "same.jsonl", *cal)
    assert "the calibration was fitted with" not in capsys.readouterr().err
    _replay(files, tmp_path / "site.jsonl", *cal, "--footprints", "site")
    err = capsys.readouterr().err
    assert err.count("the calibration was fitted with --footprints reference, this run places "
                     "the devices of border cells by site") == 1


@pytest.mark.parametrize(("body", "expected"), [
    ("astana,*,1.5,0,1000,reference\nnura,*,1.2,0,900,site\n",
     ":3: footprints 'site' differs from 'reference' on line 2"),
    ("astana,*,1.5,0,1000,voronoi\n", ":2: footprints must be one of reference, site, area"),
])
def test_a_bad_footprints_column_is_refused_in_one_line(tmp_path: Path, body: str,
                                                        expected: str) -> None:
    cal = tmp_path / "cal.csv"
    cal.write_text("region,operator,factor,rse,people,footprints\n" + body)
    with pytest.raises(InputError) as err:
        load_calibration(cal, None)
    assert str(err.value).startswith(f"{cal}{expected}") and "\n" not in str(err.value)
