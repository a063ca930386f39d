"""``defacto calibrate --pool-siblings``: with a stated reference error, sibling districts'
factors are shrunk toward their pooled factor and still add up to the city's reference; with
an exact reference (``--reference-rse 0``, the default) the file is the unpooled one."""

from __future__ import annotations

from pathlib import Path

import pytest

from estimators.calibration import FactorRow
from stream.cli import main
from stream.simulator import load_scenario, simulate, write_simulation
from stream.sources.reference_files import load_calibration


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pooling")
    write_simulation(simulate(load_scenario("astana"), scale=0.002, days=1.0, seed=3), out)
    return out


def _calibrate(sim_dir: Path, out: Path, *extra: str) -> dict[str, FactorRow]:
    assert main(["calibrate", str(sim_dir / "pings.jsonl"), "--regions",
                 str(sim_dir / "regions.geojson"), "--cells", str(sim_dir / "cells.csv"),
                 "--reference", str(sim_dir / "reference.csv"), "--out", str(out), *extra]) == 0
    return {r.region: r for r in load_calibration(out)}


def test_the_calibration_is_written_into_a_new_folder_as_replay_writes(sim_dir: Path,
                                                                        tmp_path: Path) -> None:
    rows = _calibrate(sim_dir, tmp_path / "new" / "folder" / "c.csv")
    assert "astana" in rows and (tmp_path / "new" / "folder" / "c.csv").is_file()


def test_pooling_moves_districts_within_the_city_total(sim_dir: Path, tmp_path: Path) -> None:
    # a large stated error (5 %) so that the districts' spread is mostly noise
    own = _calibrate(sim_dir, tmp_path / "own.csv", "--reference-rse", "0.05",
                     "--no-pool-siblings")
    pooled = _calibrate(sim_dir, tmp_path / "pooled.csv", "--reference-rse", "0.05")
    districts = [r for r in own if r.startswith("astana-")]
    assert len(districts) == 5
    assert any(abs(pooled[d].factor / own[d].factor - 1) > 1e-3 for d in districts)
    assert all(pooled[d].rse <= own[d].rse + 1e-9 for d in districts)
    assert all(pooled[d].people == own[d].people for d in own)

    def total(rows: dict[str, FactorRow]) -> float:  # the districts' devices x their factors
        return sum(own[d].people / own[d].factor * rows[d].factor  # type: ignore[operator]
                   for d in districts)

    city = pooled["astana"].factor / own["astana"].factor
    assert total(pooled) == pytest.approx(total(own) * city, rel=1e-6)


def test_exact_reference_is_not_pooled(sim_dir: Path, tmp_path: Path) -> None:
    default = (tmp_path / "default.csv")
    _calibrate(sim_dir, default)
    _calibrate(sim_dir, tmp_path / "off.csv", "--no-pool-siblings")
    assert default.read_text() == (tmp_path / "off.csv").read_text()
