"""``defacto calibrate`` computes the border-cell footprints in a thread while the first chunks
are read, through the disk cache: the calibration file is the same bytes as with the footprints
built before reading, with the cache off, cold or warm."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import offline
from stream.contract import InputError
from stream.estimate.engine_options import EngineOptions, build_engine
from stream.simulator import load_scenario, simulate, write_simulation
from stream.sources.reference_files import (
    ReferencePaths,
    load_population,
    load_reference,
)
from stream.timefmt import parse_iso_ms


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calibrate-footprints")
    write_simulation(simulate(load_scenario("astana"), scale=0.001, days=2.0, seed=5), out)
    return out


def _calibrate(files: Path, out: Path, options: EngineOptions | None = None) -> bytes:
    config = offline.CalibrateConfig(engine=options or EngineOptions(),
        pings=(files / "pings.jsonl",), reference_population=files / "reference.csv", out=out,
        reference=ReferencePaths(files / "regions.geojson", None, None, files / "cells.csv"),
        start_ms=parse_iso_ms("2026-03-02T00:00:00Z"), end_ms=parse_iso_ms("2026-03-03T00:00:00Z"))
    offline.run_calibrate(config)
    return out.read_bytes()


def _built_before_reading(options: EngineOptions, reference, people):  # type: ignore[no-untyped-def]
    """The engine as calibrate built it before: footprints in force before any row is read."""
    return build_engine(options, reference, calibrated=False, people=people), None


def test_the_calibration_is_the_same_bytes_however_the_footprints_come(
        files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEFACTO_CACHE_DIR", "off")
    off = _calibrate(files, tmp_path / "off.csv")
    monkeypatch.setenv("DEFACTO_CACHE_DIR", str(cache))
    cold = _calibrate(files, tmp_path / "cold.csv")
    assert len(list((cache / "footprints").glob("*.npz"))) == 1
    warm = _calibrate(files, tmp_path / "warm.csv")
    with monkeypatch.context() as mp:
        mp.setattr(offline, "_engine_for_calibration", _built_before_reading)
        before = _calibrate(files, tmp_path / "before.csv")
    assert b",reference\r\n" in before  # the rule is recorded
    assert off == cold == warm == before
    # the footprints matter: all at the site the factors differ
    site = _calibrate(files, tmp_path / "site.csv", EngineOptions(footprints="site"))
    assert site.replace(b",site\r\n", b",reference\r\n") != before


def test_the_engine_is_the_same_once_its_footprints_are_in_force(files: Path) -> None:
    reference = load_reference(ReferencePaths(files / "regions.geojson", None, None,
                                              files / "cells.csv"))
    people = load_population(files / "reference.csv", reference.regions, minimum=1)
    engine, pending = offline._engine_for_calibration(EngineOptions(), reference, people)
    assert pending is not None
    assert engine.plan is not None and engine.plan.footprints is None  # not before finish()
    pending.finish()
    pending.finish()  # once only
    old = build_engine(EngineOptions(), reference, calibrated=False, people=people)
    assert old.plan is not None and old.plan.footprints is not None
    assert engine.plan.footprints is not None
    assert engine.plan.footprints.border_rows().size > 0
    for name in ("ptr", "region", "weight", "thr"):
        assert (getattr(engine.plan.footprints, name) == getattr(old.plan.footprints, name)).all()
    assert (engine.plan.piece_loc == old.plan.piece_loc).all()


def test_held_chunks_come_after_the_footprints_and_before_a_reader_error(files: Path) -> None:
    reference = load_reference(ReferencePaths(files / "regions.geojson", None, None,
                                              files / "cells.csv"))
    people = load_population(files / "reference.csv", reference.regions, minimum=1)
    engine, pending = offline._engine_for_calibration(EngineOptions(), reference, people)
    assert engine.plan is not None and pending is not None
    plan = engine.plan

    def chunks():  # type: ignore[no-untyped-def]
        yield 1
        yield 2
        raise InputError("pings.jsonl: broken at line 3")

    seen = []
    with pytest.raises(InputError, match="line 3"):
        for item in offline._held_until(pending, chunks(), hold=8):
            seen.append((item, plan.footprints is not None))
    assert seen == [(1, True), (2, True)]
