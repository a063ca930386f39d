"""Fuzzing the reference loaders: any bytes end in a loaded, in-range object or one
:class:`~stream.contract.InputError` line naming the file; no other exception escapes.

Loaders: registry and reference population (``load_population``), calibration, cell plan (also
binned into an engine), pseudonymization key file. The regions GeoJSON has its own checks.
Inputs: arbitrary bytes; and CSV text of a valid header with rows of hostile values (NaN,
infinities, 1e155, 5,000 digits, Unicode digits, a BOM, NUL, quotes, stray newlines, invalid
UTF-8, CRLF), optionally gzipped and optionally truncated. A few seconds per loader by default;
``DEFACTO_FUZZ_EXAMPLES=5000`` runs that many examples per loader.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from estimators.calibration import FACTOR_RANGE, RSE_RANGE, Calibration
from estimators.engine import Engine, EngineConfig
from estimators.regions import RegionSet, regions_from_geojson
from stream.contract import InputError
from stream.estimate.engine_options import load_plan
from stream.sources.key_file import load_pseudonym_key
from stream.sources.reference_files import (
    MAX_PEOPLE,
    CellPlanRows,
    _plain_cell_plan,
    cell_plan_by_rows,
    load_calibration,
    load_cell_plan,
    load_population,
)

EXAMPLES = int(os.environ.get("DEFACTO_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _square(lat0: float, lat1: float, lon0: float, lon1: float) -> list[list[float]]:
    return [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]


REGIONS: RegionSet = regions_from_geojson({"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"id": rid, "name": rid.title()},
     "geometry": {"type": "Polygon", "coordinates": [_square(*box)]}}
    for rid, box in (("west", (51.0, 51.5, 71.0, 71.5)), ("east", (51.0, 51.5, 71.5, 72.0)))]})

HOSTILE = ["", " ", "0", "1", "-1", "2.5", "1e155", "1e-300", "1e400", "-0", "nan", "NaN", "inf",
           "-inf", "1_000", "0x10", "²", "١٢", "７", "9" * 5000, "1" * 41, "\ufeff1", "\x00", "\"",
           "\"a,b\"", "\"a\nb\"", "a\rb", "*", "roaming", "40101", "401011", "4010", "west", "east",
           "atlantis", "x" * 300, "é", "\ufffd"]
HEADERS = {
    "population": ["region,registered", "region,population", "region, registered ", "registered",
                   "region,registered,registered"],
    "calibration": ["region,operator,factor", "region,operator,factor,rse",
                    "operator,region,rse,factor", "region,operator"],
    "cells": ["operator,cell,lat,lon", "operator,cell,lat,lon,azimuth_deg,range_m",
              "operator,cell,lat,lon,valid_from,valid_to", "cell,operator,lon,lat,range_m"],
}

hostile = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.integers(min_value=-10**20, max_value=10**20).map(str))


def _fmt(x: float) -> str:
    return f"{x:.6g}"


PLAUSIBLE = {  # per kind: one strategy per column of the first header, near and across the limits
    "population": [st.sampled_from(["west", "east", "atlantis", ""]),
                   st.integers(-5, 10**11).map(str)],
    "calibration": [st.sampled_from(["west", "east", "*", "", "atlantis"]),
                    st.sampled_from(["40101", "40102", "*", "roaming", "", "4010"]),
                    st.floats(0.001, 2e4).map(_fmt), st.floats(-1, 12).map(_fmt)],
    "cells": [st.sampled_from(["40101", "40102", "401011", "4010", ""]),
              st.text(alphabet="AB-7é", min_size=0, max_size=3),
              st.floats(-95, 95).map(_fmt), st.floats(-185, 185).map(_fmt),
              st.one_of(st.just(""), st.floats(-10, 370).map(_fmt)),
              st.one_of(st.just(""), st.floats(-1, 2e5).map(_fmt))],
}


def _cell(plausible: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly a plausible value, one time in eight a hostile one."""
    return st.integers(0, 7).flatmap(lambda i: hostile if i == 0 else plausible)


VALID = {  # per kind: rows within every limit, keys unique (values at and near the bounds)
    "population": st.lists(st.sampled_from(["west", "east"]), min_size=1, max_size=2, unique=True)
    .flatmap(lambda regions: st.tuples(*(st.tuples(st.just(r), st.sampled_from(
        ["0", "1", "12.5", "1e3", "10000000000", "99"])) for r in regions))),
    "calibration": st.lists(st.tuples(st.sampled_from(["west", "east", "*", ""]),
                                      st.sampled_from(["40101", "40102", "*", "roaming"])),
                            min_size=1, max_size=6, unique_by=lambda k: (k[0] or "*", k[1]))
    .flatmap(lambda keys: st.tuples(*(st.tuples(st.just(k[0]), st.just(k[1]),
                                                st.floats(0.01, 1e4).map(_fmt),
                                                st.floats(0, 9.99).map(_fmt)) for k in keys))),
    "cells": st.lists(st.tuples(st.sampled_from(["40101", "40102", "401011"]),
                                st.text(alphabet="AB-7é", min_size=1, max_size=3)),
                      min_size=1, max_size=10, unique=True)
    .flatmap(lambda keys: st.tuples(*(st.tuples(
        st.just(k[0]), st.just(k[1]), st.floats(-90, 90).map(_fmt), st.floats(-180, 180).map(_fmt),
        st.one_of(st.just(""), st.floats(0, 360).map(_fmt)),
        st.one_of(st.just(""), st.floats(0, 1e5).map(_fmt))) for k in keys))),
}
VALID_HEADER = {"population": "region,registered", "calibration": "region,operator,factor,rse",
                "cells": "operator,cell,lat,lon,azimuth_deg,range_m"}


@st.composite
def csv_bytes(draw: st.DrawFn, kind: str) -> bytes:
    """A header of ``kind`` (or noise) and rows of plausible and hostile values, as bytes with
    line-ending, BOM and encoding mutations; or, one time in three, a file within every limit."""
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    if draw(st.integers(0, 2)) == 0:
        rows = [list(r) for r in draw(VALID[kind])]
        return newline.join([VALID_HEADER[kind], *(",".join(r) for r in rows)]).encode()
    header = draw(st.one_of(st.sampled_from(HEADERS[kind]), st.sampled_from(HEADERS[kind]),
                            st.sampled_from(HEADERS[kind]), st.text(max_size=30)))
    columns = PLAUSIBLE[kind][:len(header.split(","))]
    row = st.tuples(*map(_cell, columns)).map(list)
    rows = draw(st.lists(st.one_of(row, row, row, st.lists(hostile, max_size=7)), max_size=12))
    text = newline.join([header, *(",".join(r) for r in rows)])
    if draw(st.booleans()):
        text += newline
    if draw(st.integers(0, 3)) == 0:
        text = "\ufeff" + text
    data = text.encode()
    if draw(st.integers(0, 7)) == 0:  # a byte that is not UTF-8 somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe9"])) + data[at:]
    return data


def inputs(kind: str) -> st.SearchStrategy[tuple[bytes, str]]:
    """``(bytes, suffix)``: arbitrary bytes or hostile CSV, plain, gzipped or a truncated gzip."""
    raw = st.one_of(st.binary(max_size=400), csv_bytes(kind), csv_bytes(kind), csv_bytes(kind))

    @st.composite
    def packed(draw: st.DrawFn) -> tuple[bytes, str]:
        data = draw(raw)
        how = draw(st.sampled_from(["plain", "plain", "gz", "gz-truncated"]))
        if how == "plain":
            return data, ".csv"
        packed_data = gzip.compress(data)
        if how == "gz-truncated":
            packed_data = packed_data[:draw(st.integers(0, max(len(packed_data) - 1, 0)))]
        return packed_data, ".csv.gz"

    return packed()


def _load(data: bytes, suffix: str, loader: Callable[[Path], Any]) -> Any:
    """``loader`` on a file holding ``data``: its result, or None after one clean InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"ref{suffix}"
        path.write_bytes(data)
        try:
            out = loader(path)
        except InputError as exc:
            message = str(exc)
            assert str(path) in message, message
            assert "\n" not in message and "\r" not in message, message
            assert len(message) < 600, message
            problem = re.sub(r"^:[0-9]+", "", message.replace(str(path), "", 1)).lstrip(": ")
            event("InputError: " + " ".join(re.sub(r"'.*", "", problem).split()[:3]))
            return None
        event("loaded")
        return out


@FUZZ
@given(inputs("population"), st.booleans())
def test_population_loader(packed: tuple[bytes, str], reference: bool) -> None:
    minimum = 1 if reference else 0
    out = _load(*packed, lambda p: load_population(p, REGIONS if reference else None, minimum))
    if out is not None:
        assert out and all(isinstance(v, int) and minimum <= v <= MAX_PEOPLE for v in out.values())
        assert all(r and isinstance(r, str) for r in out)


@FUZZ
@given(inputs("calibration"))
def test_calibration_loader(packed: tuple[bytes, str]) -> None:
    rows = _load(*packed, lambda p: load_calibration(p, REGIONS))
    if rows is not None:
        assert rows
        for r in rows:
            assert FACTOR_RANGE[0] <= r.factor <= FACTOR_RANGE[1]
            assert RSE_RANGE[0] <= r.rse < RSE_RANGE[1]
        matrix = Calibration(rows).resolve(REGIONS, ["40101", "40102"])  # no duplicate got through
        assert np.isfinite(matrix.factor).all() and np.isfinite(matrix.rse).all()


@FUZZ
@given(inputs("cells"), st.integers(0, 15))
def test_cell_plan_loader_and_binning(packed: tuple[bytes, str], res: int) -> None:
    plan: CellPlanRows | None = _load(*packed, load_cell_plan)
    if plan is None:
        return
    n = len(plan.cell)
    assert n == len(plan.operator) == len(plan.lat) == len(plan.lon) > 0
    assert len(set(zip(plan.operator, plan.cell, strict=True))) == n
    assert (np.abs(plan.lat) <= 90).all() and (np.abs(plan.lon) <= 180).all()
    az, rng = plan.azimuth_deg, plan.range_m
    assert ((np.isnan(az)) | ((az >= 0) & (az <= 360))).all()
    assert ((np.isnan(rng)) | ((rng >= 0) & (rng <= 100_000))).all()
    engine = Engine(REGIONS, EngineConfig(res=res))
    load_plan(engine, plan)  # an InputError here would escape: the loader let a bad plan through
    assert engine.plan is not None and len(engine.plan) == n
    assert_same_plan(plan, _load(*packed, cell_plan_by_rows))  # the columnar path changed nothing


def assert_same_plan(a: CellPlanRows, b: CellPlanRows | None) -> None:
    assert b is not None
    assert a.operator == b.operator and a.cell == b.cell
    for name in ("lat", "lon", "azimuth_deg", "range_m"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name


def _plain_plan(rows: list[tuple[str, str, float, float, float | None, float | None]],
                spaces: bool, optional: bool, extra: bool) -> str:
    pad = " " if spaces else ""
    head = ["operator", "cell", "lat", "lon"] + (["azimuth_deg", "range_m"] if optional else []) \
        + (["valid_from"] if extra else [])
    lines = [",".join(f"{pad}{h}{pad}" for h in head)]
    for op, cell, lat, lon, az, rng in rows:
        values = [op, cell, repr(lat), f"{lon:.6f}"]
        if optional:
            values += ["" if az is None else f"{az:g}", "" if rng is None else str(rng)]
        if extra:
            values.append("2026-01-01")
        lines.append(",".join(f"{pad}{v}{pad}" for v in values))
    return "\n".join(lines) + "\n"


PLAN_ROWS = st.lists(st.tuples(
    st.sampled_from(["40101", "40102", "401077"]),
    st.text(alphabet="ABCxyz0123456789-_.", min_size=1, max_size=12),
    st.floats(-90, 90, allow_nan=False), st.floats(-180, 180, allow_nan=False),
    st.one_of(st.none(), st.floats(0, 360, allow_nan=False)),
    st.one_of(st.none(), st.integers(0, 100_000).map(float))), min_size=1, max_size=40,
    unique_by=lambda r: (r[0], r[1]))


@FUZZ
@given(PLAN_ROWS, st.booleans(), st.booleans(), st.booleans(), st.sampled_from(["", "crlf", "bom", "gz"]))
def test_a_plain_plan_loads_as_columns_exactly_as_row_by_row(
        rows: list[Any], spaces: bool, optional: bool, extra: bool, form: str) -> None:
    text = _plain_plan(rows, spaces, optional, extra)
    data = text.replace("\n", "\r\n").encode() if form == "crlf" else \
        b"\xef\xbb\xbf" + text.encode() if form == "bom" else \
        gzip.compress(text.encode()) if form == "gz" else text.encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cells.csv"
        path.write_bytes(data)
        fast = _plain_cell_plan(path)
        assert fast is not None  # a plain file takes the columnar path
        assert_same_plan(fast, cell_plan_by_rows(path))


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=80).map(str.encode)))
def test_key_file_loader(data: bytes) -> None:
    key = _load(data, ".key", load_pseudonym_key)
    if key is not None:
        assert 16 <= len(key) <= 64 and key == key.strip()

