"""Tests of the scenario simulator: determinism, ping shape, geometry, truth, files, validation."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from estimators.units import HOUR_MS
from stream.simulator import (
    HourChunk,
    Simulation,
    load_scenario,
    parse_scenario,
    simulate,
    write_simulation,
)

TOY = """
name = "toy"
start = "2026-03-02T00:00:00Z"
disorder_s = 30

[market]
"40101" = 0.6
"40177" = 0.4

[[operators]]
id = "40101"
location = "cell"

[[operators]]
id = "40177"
location = "latlon"

[[regions]]
id = "city"
urban = true
visitors = 20000
shape = { type = "circle", lat = 51.0, lon = 71.0, radius_km = 10 }

[[regions]]
id = "city-east"
parent = "city"
urban = true
population = 300000
registered = 250000
shape = { type = "sector", lat = 51.0, lon = 71.0, radius_km = 10, from_deg = 0, to_deg = 180 }

[[regions]]
id = "city-west"
parent = "city"
urban = true
population = 200000
registered = 180000
shape = { type = "sector", lat = 51.0, lon = 71.0, radius_km = 10, from_deg = 180, to_deg = 360 }

[[regions]]
id = "country"
shape = { type = "polygon", points = [[70, 50], [72, 50], [72, 52], [70, 52]], minus = ["city"] }

[[regions]]
id = "suburbs"
parent = "country"
population = 100000
registered = 90000
shape = { type = "ring", lat = 51.0, lon = 71.0, inner_km = 10, radius_km = 30 }

[[regions]]
id = "villages"
parent = "country"
population = 200000
registered = 260000
shape = { type = "rest" }

[[commute]]
from = "suburbs"
to = "city"
share = 0.5

[[migration]]
from = "villages"
to = { city-east = 0.5, city-west = 0.5 }
per_year = 3000000
"""


def _inside(lon: np.ndarray, lat: np.ndarray, rings: list) -> np.ndarray:
    """Independent even-odd ray casting over GeoJSON rings (for checking the simulator)."""
    result = np.zeros(lon.size, dtype=bool)
    for ring in rings:
        r = np.asarray(ring, dtype=float)
        for (x1, y1), (x2, y2) in itertools.pairwise(r):
            crosses = (y1 > lat) != (y2 > lat)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_at = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            result ^= crosses & (lon < x_at)
    return result


def _feature_rings(sim: Simulation) -> dict[str, list]:
    rings = {}
    for feature in sim.regions_geojson["features"]:
        geometry = feature["geometry"]
        polygons = ([geometry["coordinates"]] if geometry["type"] == "Polygon"
                    else geometry["coordinates"])
        rings[feature["properties"]["id"]] = [ring for poly in polygons for ring in poly]
    return rings


@pytest.fixture(scope="module")
def astana() -> Simulation:
    return simulate(load_scenario("astana"), scale=0.004, days=2.0, seed=7)


@pytest.fixture(scope="module")
def astana_hours(astana: Simulation) -> list[HourChunk]:
    return list(astana.hours())


@pytest.fixture(scope="module")
def toy() -> Simulation:
    return simulate(parse_scenario(TOY, "toy.toml"), scale=0.01, days=2.0, seed=3)


@pytest.fixture(scope="module")
def toy_hours(toy: Simulation) -> list[HourChunk]:
    return list(toy.hours())


def _concat(chunks: list[HourChunk]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([getattr(c, k) for c in chunks])
            for k in ("device", "ts_ms", "cell", "lat", "lon")}


def test_same_seed_gives_identical_pings_and_truth(astana_hours: list[HourChunk]) -> None:
    again = list(simulate(load_scenario("astana"), scale=0.004, days=2.0, seed=7).hours())
    a, b = _concat(astana_hours), _concat(again)
    for key in ("device", "ts_ms", "cell"):
        assert np.array_equal(a[key], b[key]), key
    assert np.array_equal(a["lat"], b["lat"], equal_nan=True)
    assert [c.truth_end for c in astana_hours] == [c.truth_end for c in again]


def test_hours_regenerate_identically(toy: Simulation, toy_hours: list[HourChunk]) -> None:
    again = list(toy.hours())
    assert np.array_equal(_concat(toy_hours)["ts_ms"], _concat(again)["ts_ms"])
    assert [c.truth_end for c in toy_hours] == [c.truth_end for c in again]


def test_different_seed_gives_different_pings(astana: Simulation,
                                              astana_hours: list[HourChunk]) -> None:
    other = simulate(load_scenario("astana"), scale=0.004, days=2.0, seed=8)
    first = next(iter(other.hours()))
    assert not np.array_equal(first.ts_ms[:100], astana_hours[0].ts_ms[:100])
    assert set(other.device_name[:10]) != set(astana.device_name[:10])


def test_pings_within_hours_and_only_lightly_disordered(astana: Simulation,
                                                        astana_hours: list[HourChunk]) -> None:
    disorder_ms = astana.scenario.disorder_s * 1000
    assert len(astana_hours) == astana.n_hours == 48
    assert [c.start_ms for c in astana_hours] == [
        astana.start_ms + h * HOUR_MS for h in range(48)]
    some_out_of_order = False
    for chunk in astana_hours:
        assert chunk.start_ms % HOUR_MS == 0
        assert chunk.ts_ms.min() >= chunk.start_ms
        assert chunk.ts_ms.max() < chunk.start_ms + HOUR_MS
        lag = np.maximum.accumulate(chunk.ts_ms) - chunk.ts_ms
        assert lag.max() <= disorder_ms
        some_out_of_order |= bool(lag.max() > 0)
    assert some_out_of_order


def test_ping_arrays_are_consistent(astana: Simulation, astana_hours: list[HourChunk]) -> None:
    pings = _concat(astana_hours)
    assert pings["device"].dtype == np.int32 and pings["ts_ms"].dtype == np.int64
    assert pings["cell"].dtype == np.int32
    is_cell = pings["cell"] >= 0
    assert np.isnan(pings["lat"][is_cell]).all() and np.isnan(pings["lon"][is_cell]).all()
    assert not np.isnan(pings["lat"][~is_cell]).any()
    assert np.array_equal(np.round(pings["lat"][~is_cell], 6), pings["lat"][~is_cell])
    op_of_ping = astana.device_operator[pings["device"]]
    latlon_ops = [i for i, op in enumerate(astana.scenario.operators) if op.location == "latlon"]
    assert np.array_equal(np.isin(op_of_ping, latlon_ops), ~is_cell)
    plan = astana.cell_plan
    assert np.array_equal(plan["operator"][pings["cell"][is_cell]], op_of_ping[is_cell])
    assert pings["device"].max() < astana.device_name.size


def test_devices_and_cell_plan(astana: Simulation) -> None:
    names = astana.device_name
    assert names.dtype == object and isinstance(names[0], str)
    assert len(set(names.tolist())) == names.size
    assert max(len(n) for n in names) <= 32
    assert astana.operators == ["40101", "40102", "40177"]
    assert astana.device_operator.dtype == np.int16 and astana.device_home_mcc.dtype == np.int32
    person = astana.device_person
    visitor = person >= astana.people.n_residents
    assert (astana.device_home_mcc[~visitor] == 401).all()
    assert visitor.any() and (astana.device_home_mcc[visitor] != 401).all()
    second = np.flatnonzero(person[1:] == person[:-1]) + 1
    assert second.size > 0
    assert (astana.device_operator[second] != astana.device_operator[second - 1]).all()
    plan = astana.cell_plan
    assert set(plan) == {"operator", "cell", "lat", "lon"}
    keys = list(zip(plan["operator"].tolist(), plan["cell"].tolist(), strict=True))
    assert len(set(keys)) == len(keys)
    assert plan["lat"].dtype == np.float64 and plan["operator"].dtype == np.int16


def test_homes_and_workplaces_lie_inside_their_leaf_polygons(toy: Simulation) -> None:
    sim = simulate(load_scenario("astana"), scale=0.002, days=1 / 24, seed=2)
    for s in (sim, toy):
        rings = _feature_rings(s)
        p = s.people
        for kind in ("home", "work"):
            leaf = getattr(p, f"{kind}_leaf")
            lat, lon = getattr(p, f"{kind}_lat"), getattr(p, f"{kind}_lon")
            for i, leaf_id in enumerate(s.leaf_ids):
                sel = leaf == i
                assert sel.any()
                assert _inside(lon[sel], lat[sel], rings[leaf_id]).all(), (kind, leaf_id)
                others = [r for other, r in rings.items() if other != leaf_id
                          and other in s.leaf_ids]
                for r in others:
                    assert not _inside(lon[sel], lat[sel], r).any()


def test_urban_homes_concentrate_toward_the_centre(astana: Simulation) -> None:
    p = astana.people
    city = np.isin(p.home_leaf[:p.n_residents],
                   [astana.leaf_ids.index(x) for x in astana.leaf_ids if x.startswith("astana-")])
    dist = np.hypot(p.home_lat[:p.n_residents][city] - 51.17,
                    (p.home_lon[:p.n_residents][city] - 71.45) * 0.63) * 111
    assert np.mean(dist < 8) > 0.4  # uniform by area would put 25 % within half the radius


def test_truth_parents_are_sums_of_children(astana: Simulation,
                                            astana_hours: list[HourChunk]) -> None:
    children: dict[str, list[str]] = {}
    for region in astana.scenario.regions:
        if region.parent:
            children.setdefault(region.parent, []).append(region.id)
    assert set(children) == {"astana", "akmola"}
    for chunk in astana_hours:
        assert set(chunk.truth_end) == {r.id for r in astana.scenario.regions}
        for parent, kids in children.items():
            for kind in ("present", "resident"):
                assert chunk.truth_end[parent][kind] == sum(
                    chunk.truth_end[k][kind] for k in kids)


def test_truth_totals_match_people_and_visitors(toy: Simulation,
                                                toy_hours: list[HourChunk]) -> None:
    p = toy.people
    expected_residents = round(300000 * 0.01) + round(200000 * 0.01) + 1000 + 2000
    assert p.n_residents == expected_residents
    for chunk in toy_hours:
        t = chunk.start_ms + HOUR_MS
        visitors = int(((p.arrive_ms <= t) & (p.depart_ms > t)).sum())
        present = chunk.truth_end["city"]["present"] + chunk.truth_end["country"]["present"]
        resident = chunk.truth_end["city"]["resident"] + chunk.truth_end["country"]["resident"]
        assert present == p.n_residents + visitors
        assert resident == p.n_residents
        assert "unassigned" not in chunk.truth_end
    stock = [int(((p.arrive_ms <= c.start_ms) & (p.depart_ms > c.start_ms)).sum())
             for c in toy_hours]
    assert 100 < np.mean(stock) < 300  # 20000 x 0.01 on average


def test_commuters_move_present_population_by_day(toy_hours: list[HourChunk]) -> None:
    noon, night = toy_hours[6].truth_end, toy_hours[20].truth_end  # 12:00 and 02:00 local
    assert noon["suburbs"]["present"] < night["suburbs"]["present"] - 100
    assert noon["city"]["present"] > night["city"]["present"] + 100


def test_migration_changes_residents_not_registry(toy: Simulation,
                                                  toy_hours: list[HourChunk]) -> None:
    moves = toy.moves.person.size
    assert 20 < moves < 500
    first, last = toy_hours[0].truth_end, toy_hours[-1].truth_end
    gained = last["city"]["resident"] - first["city"]["resident"]
    lost = first["villages"]["resident"] - last["villages"]["resident"]
    assert gained == lost > 0
    assert toy.registry["city"] == 4300 and toy.registry["villages"] == 2600
    day1 = toy_hours[23].truth_end
    assert abs(toy.reference["villages"] - day1["villages"]["resident"]) < 100
    assert toy.reference["villages"] != toy.registry["villages"]


def test_registry_lags_reality(astana: Simulation, astana_hours: list[HourChunk]) -> None:
    truth = astana_hours[0].truth_end
    assert astana.registry["astana"] == round(1_500_000 * 0.004)
    assert astana.registry["astana"] < truth["astana"]["resident"] * 0.85
    assert astana.registry["akmola-rural"] > truth["akmola-rural"]["resident"]
    assert set(astana.registry) == set(astana.reference) == set(truth)
    assert astana.registry["akmola"] == sum(
        astana.registry[k] for k in ("tselinograd", "kokshetau", "akmola-rural"))
    for region_id, value in astana.reference.items():
        assert abs(value - truth[region_id]["resident"]) <= 0.05 * truth[region_id]["resident"]


def test_diurnal_profile_and_rates(astana: Simulation, astana_hours: list[HourChunk]) -> None:
    night = len(astana_hours[22])  # 03:00-04:00 local
    day = len(astana_hours[7])  # 12:00-13:00 local
    assert day > 8 * night
    per_device_day = sum(len(c) for c in astana_hours) / astana.n_devices / 2
    assert 15 < per_device_day < 60


def _read_pings_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_write_simulation_jsonl_formats(toy: Simulation, toy_hours: list[HourChunk],
                                        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = write_simulation(toy, tmp_path, progress=True)
    assert "48/48" in capsys.readouterr().err
    assert set(paths) == {"pings", "cells", "regions", "registry", "reference", "truth",
                          "scenario"}
    assert paths["pings"].name == "pings.jsonl"
    pings = _read_pings_jsonl(paths["pings"])
    assert len(pings) == sum(len(c) for c in toy_hours)
    first = toy_hours[0]
    for record, i in zip(pings[:len(first)], range(len(first)), strict=True):
        assert record["device"] == toy.device_name[first.device[i]]
        assert record["ts"] == first.ts_ms[i]
        assert record["operator"] == toy.operators[toy.device_operator[first.device[i]]]
        assert record["home_mcc"] == toy.device_home_mcc[first.device[i]]
        if first.cell[i] >= 0:
            assert set(record) == {"device", "ts", "operator", "home_mcc", "cell"}
            assert record["cell"] == toy.cell_plan["cell"][first.cell[i]]
        else:
            assert set(record) == {"device", "ts", "operator", "home_mcc", "lat", "lon"}
            assert record["lat"] == first.lat[i] and isinstance(record["lat"], float)
    assert {type(r["ts"]) for r in pings} == {int}

    with open(paths["cells"], encoding="utf-8") as fh:
        cells = list(csv.DictReader(fh))
    assert list(cells[0]) == ["operator", "cell", "lat", "lon"]
    assert len(cells) == toy.cell_plan["cell"].size
    assert {r["operator"] for r in cells} == {"40101"}
    used = {(p["operator"], p["cell"]) for p in pings if "cell" in p}
    assert used <= {(r["operator"], r["cell"]) for r in cells}

    for kind, expected in (("registry", toy.registry), ("reference", toy.reference)):
        lines = paths[kind].read_text(encoding="utf-8").splitlines()
        assert lines[0] == "region,registered"
        assert {r.split(",")[0]: int(r.split(",")[1]) for r in lines[1:]} == expected

    truth = [json.loads(line) for line in paths["truth"].read_text().splitlines()]
    assert len(truth) == toy.n_hours
    assert truth[0]["at"] == "2026-03-02T01:00:00Z" and truth[-1]["at"] == "2026-03-04T00:00:00Z"
    assert [t["regions"] for t in truth] == [c.truth_end for c in toy_hours]

    regions = json.loads(paths["regions"].read_text())
    assert regions["type"] == "FeatureCollection"
    props = {f["properties"]["id"]: f["properties"] for f in regions["features"]}
    assert props["city-east"] == {"id": "city-east", "name": "city-east", "parent": "city",
                                  "urban": True}
    assert "parent" not in props["city"]
    for feature in regions["features"]:
        geometry = feature["geometry"]
        assert geometry["type"] in ("Polygon", "MultiPolygon")
        polygons = ([geometry["coordinates"]] if geometry["type"] == "Polygon"
                    else geometry["coordinates"])
        for ring in (r for poly in polygons for r in poly):
            assert ring[0] == ring[-1] and 70 <= ring[0][0] <= 72 and 50 <= ring[0][1] <= 52
    assert tomllib.loads(paths["scenario"].read_text())["name"] == "toy"


def test_write_simulation_gz_and_csv(toy: Simulation, tmp_path: Path) -> None:
    short = simulate(toy.scenario, scale=0.01, days=2 / 24, seed=3)
    expected = sum(len(c) for c in short.hours())
    gz_paths = write_simulation(short, tmp_path / "gz", gz=True, progress=False)
    assert gz_paths["pings"].name == "pings.jsonl.gz"
    assert len(_read_pings_jsonl(gz_paths["pings"])) == expected
    csv_paths = write_simulation(short, tmp_path / "csv", fmt="csv", progress=False)
    assert csv_paths["pings"].name == "pings.csv"
    with open(csv_paths["pings"], encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["device", "ts", "operator", "home_mcc", "cell", "lat", "lon"]
    assert len(rows) == expected + 1
    for row in rows[1:]:
        assert len(row) == 7 and int(row[1]) > 0 and row[3].isdigit()
        assert (row[4] == "") != (row[5] == "" and row[6] == "")
    assert any(r[4] == "" for r in rows[1:]) and any(r[4] != "" for r in rows[1:])
    with pytest.raises(ValueError, match="fmt"):
        write_simulation(short, tmp_path / "x", fmt="xml", progress=False)


def test_kz_scenario_shape() -> None:
    kz = load_scenario("kz")
    top = [r for r in kz.regions if r.parent is None]
    assert len(top) == 20
    population = sum(kz.region(leaf).population for leaf in kz.leaf_ids)
    assert 19_000_000 < population < 21_500_000
    urban = sum(kz.region(x).population for x in kz.leaf_ids if kz.region(x).urban)
    assert 0.58 < urban / population < 0.68
    assert kz.region("astana").registered < kz.region("astana").population
    locations = {op.location for op in kz.operators}
    assert locations == {"cell", "latlon"}
    sim = simulate(kz, scale=0.0005, days=1 / 24, seed=1)
    chunk = next(iter(sim.hours()))
    assert len(chunk) > 0
    assert sum(chunk.truth_end[r.id]["resident"] for r in top) == sim.people.n_residents


def _replace(old: str, new: str) -> str:
    assert old in TOY
    return TOY.replace(old, new, 1)


@pytest.mark.parametrize(("text", "match"), [
    (_replace('id = "city-east"', 'id = "city-east"\ncolour = "red"'),
     r"regions\[1\]\.colour: unknown field"),
    (_replace("radius_km = 30", "radius_km = -3"), r"regions\[4\]\.shape\.radius_km"),
    (_replace('parent = "country"', 'parent = "nowhere"'), r"regions\[4\]\.parent: unknown"),
    (_replace('"40177" = 0.4', '"40177" = 0.5'), r"market: weights must sum to 1"),
    (_replace('location = "latlon"', 'location = "gps"'), r"operators\[1\]\.location"),
    (_replace("population = 100000\n", ""), r"regions\[4\]\.population: is required"),
    (_replace("from_deg = 180, to_deg = 360", "from_deg = 170, to_deg = 360"),
     r"overlaps region"),
    (_replace("radius_km = 10, from_deg = 0", "radius_km = 12, from_deg = 0"),
     r"regions\[1\]\.shape: region 'city-east' is not inside its parent 'city'"),
    (_replace("inner_km = 10, radius_km = 30", "inner_km = 10, radius_km = 300"),
     r"regions\[5\]\.shape: cut-out region 'suburbs' is not inside this shape"),
    (_replace('start = "2026-03-02T00:00:00Z"', 'start = "2026-03-02T00:30:00Z"'),
     r"start: must fall on a whole hour"),
    (_replace("share = 0.5", "share = 1.5"), r"commute\[0\]\.share"),
    (_replace('to = { city-east', 'to = { mars'), r"weights must sum|unknown region"),
    (_replace("[[regions]]", "[[regions]]\nvisitors = 1\n[[regions]]"), r"regions\[0\]\.id"),
])
def test_scenario_validation_errors_are_clear(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_scenario(text, "toy.toml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("toy.toml: ")


def test_load_scenario_by_name_and_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(TOY, encoding="utf-8")
    assert load_scenario(path).name == "toy"
    assert load_scenario(str(path)).source == "mine.toml"
    assert load_scenario("astana").name == "astana"
    with pytest.raises(ValueError, match=r"unknown scenario 'nope'.*astana"):
        load_scenario("nope")
    with pytest.raises(ValueError, match="invalid TOML"):
        parse_scenario("name = ", "bad.toml")


def test_simulate_argument_errors(toy: Simulation) -> None:
    with pytest.raises(ValueError, match="start_ms"):
        simulate(toy.scenario, scale=0.01, days=1, start_ms=toy.start_ms + 1)
    with pytest.raises(ValueError, match="scale"):
        simulate(toy.scenario, scale=0, days=1)
    with pytest.raises(ValueError, match="days"):
        simulate(toy.scenario, scale=0.01, days=0)
    shifted = simulate(toy.scenario, scale=0.01, days=1 / 24, start_ms=toy.start_ms + HOUR_MS)
    assert next(iter(shifted.hours())).start_ms == toy.start_ms + HOUR_MS


def _true_positions(sim: Simulation, person: np.ndarray, ts: np.ndarray,
                    ) -> tuple[np.ndarray, ...]:
    """Home and work (lat, lon) of each person at each time, applying the moves made by then."""
    p, moves = sim.people, sim.moves
    home_lat, home_lon = p.home_lat[person].copy(), p.home_lon[person].copy()
    work_lat, work_lon = p.work_lat[person].copy(), p.work_lon[person].copy()
    for k in range(moves.person.size):
        after = (person == moves.person[k]) & (ts >= moves.at_ms[k])
        home_lat[after], home_lon[after] = moves.home_lat[k], moves.home_lon[k]
        work_lat[after], work_lon[after] = moves.work_lat[k], moves.work_lon[k]
    return home_lat, home_lon, work_lat, work_lon


def _km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    return np.hypot(lat1 - lat2, (lon1 - lon2) * np.cos(np.radians(lat1))) * 111.0


def test_pings_report_the_position_at_ping_time(toy: Simulation,
                                                toy_hours: list[HourChunk]) -> None:
    pings = _concat(toy_hours)
    person = toy.device_person[pings["device"]]
    home_lat, home_lon, work_lat, work_lon = _true_positions(toy, person, pings["ts_ms"])
    latlon = pings["cell"] < 0
    near_home = _km(pings["lat"], pings["lon"], home_lat, home_lon) < 1.0
    near_work = _km(pings["lat"], pings["lon"], work_lat, work_lon) < 1.0
    assert (near_home | near_work)[latlon].all()
    local_hour = (pings["ts_ms"] // HOUR_MS + 5) % 24
    night = latlon & (local_hour >= 1) & (local_hour < 4)
    assert night.sum() > 100 and near_home[night].all()
    moved = np.isin(person, toy.moves.person) & latlon
    assert moved.any()
    plan = toy.cell_plan
    cell = pings["cell"][~latlon]
    tower_to_home = _km(plan["lat"][cell], plan["lon"][cell], home_lat[~latlon],
                        home_lon[~latlon])
    tower_to_work = _km(plan["lat"][cell], plan["lon"][cell], work_lat[~latlon],
                        work_lon[~latlon])
    assert (np.minimum(tower_to_home, tower_to_work) < 8.0 * 1.2).all()
    urban_night = (local_hour[~latlon] >= 1) & (local_hour[~latlon] < 4) & (
        toy.people.home_leaf[person[~latlon]] <= 1)
    assert np.median(tower_to_home[urban_night]) < 1.0


# ---- robustness variants ([variants.NAME] tables, "astana:NAME") ----

def _hours(scenario: str, hours: float = 3.0, scale: float = 0.002) -> list[HourChunk]:
    return list(simulate(load_scenario(scenario), scale=scale, days=hours / 24, seed=2).hours())


def _fields(sc: object) -> tuple:
    return tuple(getattr(sc, f) for f in ("variant", "operators", "regions", "devices",
                                          "mobility", "late_share", "late_s"))


def test_every_astana_variant_generates_and_names_itself() -> None:
    base = load_scenario("astana")
    assert {"base", "rate-narrow", "rate-wide", "bursty", "diurnal-flat", "diurnal-late",
            "commute-spread", "multisim", "latlon-jitter", "late-feed",
            "uneven-regions"} <= set(base.variants)
    for name in base.variants:
        sc = load_scenario(f"astana:{name}")
        assert sc.variant == ("" if name == "base" else name)
        again = parse_scenario(sc.text, sc.source)  # the text names its variant
        assert _fields(again) == _fields(sc)
        chunks = list(simulate(sc, scale=0.001, days=2 / 24, seed=1).hours())
        assert sum(len(c) for c in chunks) > 0, name
    assert _fields(load_scenario("astana", variant="bursty")) == _fields(
        load_scenario("astana:bursty"))
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        load_scenario("astana:nope")


def test_variants_change_what_they_say() -> None:
    base = load_scenario("astana")
    assert load_scenario("astana:rate-wide").devices.rate_sigma > base.devices.rate_sigma
    jitter = load_scenario("astana:latlon-jitter")
    assert {op.location for op in jitter.operators} == {"latlon"}
    assert all(op.latlon_sd_urban_m == 300 for op in jitter.operators)
    uneven = load_scenario("astana:uneven-regions")
    assert uneven.region("astana-saryarka").population == 1_200_000
    assert uneven.region("astana-yesil").population == base.region("astana-yesil").population
    # no cell pings at all when every operator reports lat/lon
    assert all((c.cell < 0).all() for c in _hours("astana:latlon-jitter", 1.0))


def test_bursty_pings_are_overdispersed() -> None:
    def dispersion(name: str) -> float:
        counts = np.concatenate([np.bincount(c.device, minlength=3000)[:3000]
                                 for c in _hours(name, 3.0)])
        return float(counts.var() / counts.mean())
    assert dispersion("astana:bursty") > 1.5 * dispersion("astana:rate-narrow")


def test_late_feed_delivers_some_pings_with_a_later_hour() -> None:
    late = _hours("astana:late-feed", 4.0)
    early = sum(int((c.ts_ms < c.start_ms).sum()) for c in late)
    total = sum(len(c) for c in late)
    assert 0 < early < 0.05 * total
    assert all((c.ts_ms < c.start_ms + HOUR_MS).all() for c in late)
    assert all(((c.ts_ms >= c.start_ms) | (c.ts_ms >= c.start_ms - 1800_000)).all() for c in late)
    plain = _hours("astana", 4.0)
    assert all((c.ts_ms >= c.start_ms).all() for c in plain)


def test_variant_overrides_are_validated() -> None:
    text = load_scenario("astana").text + "\n[variants.bad.devices]\nrate_sigma = -1\n"
    with pytest.raises(ValueError, match="rate_sigma"):
        parse_scenario('variant = "bad"\n' + text, "x.toml")
    text = load_scenario("astana").text + "\n[variants.bad2.regions.nowhere]\npopulation = 1\n"
    with pytest.raises(ValueError, match="nowhere: no item with this id"):
        parse_scenario('variant = "bad2"\n' + text, "x.toml")
