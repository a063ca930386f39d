"""Reference data files (formats in ``schemas/``): regions, registry, reference population,
calibration, cell plan, and the simulator's truth.

Every loader raises :class:`~stream.contract.InputError` naming the file, the line and what is
wrong, so a command can print it and exit instead of showing a traceback.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from estimators.calibration import (
    ANY,
    ROAMING,
    Calibration,
    FactorRow,
    factor_problem,
    people_problem,
    rse_problem,
)
from estimators.engine import MAX_OPERATORS
from estimators.footprints import RULES
from estimators.region_checks import region_warnings
from estimators.regions import UNASSIGNED, RegionSet, regions_from_geojson
from stream.contract import InputError
from stream.sources.text_files import header_excerpt, open_output, open_text, separator_hint

Truth = dict[str, dict[str, dict[str, int]]]
"""The simulator's truth: snapshot time (ISO) → region id → ``present``/``resident`` people."""

MAX_PEOPLE = 10**10
"""Largest registered/reference population of one region (above the world's population)."""
LAT_RANGE, LON_RANGE = (-90.0, 90.0), (-180.0, 180.0)
AZIMUTH_RANGE = (0.0, 360.0)
"""A cell plan's ``azimuth_deg``: degrees clockwise from north."""
RANGE_M_RANGE = (0.0, 100_000.0)
"""A cell plan's ``range_m``: a sector's reach in metres (extended-range cells reach ~100 km)."""
MAX_NUMBER_CHARS = 40
"""A number in a reference CSV is at most this many characters (longer ones are refused)."""
VALIDITY_COLUMNS = ("valid_from", "valid_to")
"""Cell-plan history columns defacto does not read (one row per cell, the plan of the period)."""

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_OPERATOR = re.compile(r"[0-9]{5,6}")


def _csv_problem(path: str | Path, line: int, exc: csv.Error) -> InputError:
    """A row the ``csv`` module cannot read (a field over its size limit, a stray quote)."""
    return InputError(f"{path}:{line}: not a CSV row ({exc})")


def _csv_rows(path: str | Path, required: list[str], one_of: tuple[str, ...] = ()
              ) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, row)`` of a CSV file with a header, values stripped (missing ones ``""``).

    ``required`` columns must all be in the header, and one of ``one_of`` when given. Raises
    :class:`~stream.contract.InputError` naming the file and line for a missing column or a
    row the ``csv`` module cannot read (:func:`~stream.sources.text_files.open_text` does so for
    bytes that are not UTF-8 and broken gzip streams).
    """
    reader: csv.DictReader[str] | None = None
    try:
        with open_text(path) as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if one_of and not set(one_of) & set(header):
                missing.append(" or ".join(one_of))
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)} "
                                 f"(header is {header_excerpt(header)}){separator_hint(header)}")
            reader.fieldnames = header
            for row in reader:
                yield reader.line_num, {k: (v or "").strip() for k, v in row.items()
                                        if k is not None}
    except csv.Error as exc:
        raise _csv_problem(path, reader.line_num + 1 if reader is not None else 1, exc) from None


def _shown(text: str) -> str:
    return repr(text if len(text) <= MAX_NUMBER_CHARS else text[:MAX_NUMBER_CHARS] + "...")


def _plain(value: float) -> str:
    """``10000000000`` rather than ``1e+10`` for whole bounds."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


def _number(path: str | Path, line: int, column: str, text: str,
            bounds: tuple[float, float] | None = None, what: str = "") -> float:
    """The decimal number ``text`` of ``column`` (ASCII digits, optional sign, fraction and
    exponent; finite; within ``bounds``, inclusive). Raises :class:`~stream.contract.InputError`
    ``FILE:LINE: COLUMN must be LO..HI (WHAT), got TEXT``."""
    if len(text) > MAX_NUMBER_CHARS or not _DECIMAL.fullmatch(text):
        raise InputError(f"{path}:{line}: {column} {_shown(text)} is not a decimal number")
    value = float(text)
    if bounds is not None and not (np.isfinite(value) and bounds[0] <= value <= bounds[1]):
        raise InputError(f"{path}:{line}: {column} must be {_plain(bounds[0])}..{_plain(bounds[1])}"
                         f"{f' ({what})' if what else ''}, got {text}")
    if not np.isfinite(value):
        raise InputError(f"{path}:{line}: {column} must be finite, got {text}")
    return value


def load_regions(path: str | Path) -> RegionSet:
    """Read a regions GeoJSON FeatureCollection, checked by the geometry rules of
    ``schemas/README.md`` (:mod:`estimators.region_checks`); prints a ``defacto: warning:`` line
    on stderr per implausible trait. Raises :class:`~stream.contract.InputError` (one line)
    for a file that is not JSON or breaks a rule."""
    with open_text(path) as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as exc:
            first = exc.doc.lstrip().split("\n", 1)[0] if exc.pos == len(exc.doc) - len(
                exc.doc.lstrip()) else ""
            hint = ("; it looks like a CSV file (a cell plan goes to --cells, a registry to "
                    "--registry; --regions reads GeoJSON)") if "," in first and \
                not first.startswith(("{", "[")) else ""
            raise InputError(f"{path}: not valid JSON ({exc}){hint}") from None
        except (RecursionError, ValueError) as exc:  # nesting too deep, a 5,000-digit number
            raise InputError(f"{path}: not valid JSON ({type(exc).__name__}: "
                             f"{str(exc)[:80]})") from None
    try:
        regions = regions_from_geojson(doc)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    for warning in region_warnings(regions):
        print(f"defacto: warning: {path}: {warning}", file=sys.stderr)
    return regions


def load_population(path: str | Path, regions: RegionSet | None = None,
                    minimum: int = 0) -> dict[str, int]:
    """Read a registry or reference CSV (``region,registered``; ``population`` also accepted).

    Counts are decimal numbers in ``minimum..MAX_PEOPLE`` (rounded to whole people); a region
    may appear once and, with ``regions``, must be one of them. Raises
    :class:`~stream.contract.InputError` naming the file and line.
    """
    out: dict[str, int] = {}
    first: dict[str, int] = {}
    for line, row in _csv_rows(path, ["region"], one_of=("registered", "population")):
        column = "registered" if "registered" in row else "population"
        region = row["region"]
        if not region:
            raise InputError(f"{path}:{line}: region must not be empty")
        if regions is not None and region not in regions.index:
            raise InputError(f"{path}:{line}: unknown region {_shown(region)}")
        if region in out:
            raise InputError(f"{path}:{line}: region {_shown(region)} listed twice "
                             f"(first on line {first[region]})")
        value = _number(path, line, column, row[column], (minimum, MAX_PEOPLE), "people")
        out[region] = int(round(value))
        first[region] = line
    if not out:
        raise InputError(f"{path}: no rows")
    return out


def registry_gaps(regions: RegionSet, registry: dict[str, int]) -> list[str]:
    """What a registry leaves out: one line naming the regions it has no row for (their
    registered figure and gap are null), with, for each such parent whose subregions all have
    rows, their sum (a parent may hold territory of its own, so it is not filled in)."""
    missing = [i for i, rid in enumerate(regions.ids) if rid != UNASSIGNED and rid not in registry]
    if not missing:
        return []
    names = [_shown(regions.ids[i]) for i in missing]
    line = (f"no row for {len(missing)} region(s) ({', '.join(names[:8])}"
            f"{', ...' if len(names) > 8 else ''}): their registered figure and gap are null")
    sums = []
    for i in missing:
        children = [j for j in range(len(regions.ids)) if regions.parent_index[j] == i]
        if children and all(regions.ids[j] in registry for j in children):
            total = sum(registry[regions.ids[j]] for j in children)
            sums.append(f"the subregions of {_shown(regions.ids[i])} sum to {total:,}")
    if sums:
        line += f" ({'; '.join(sums)}: add the row if they cover it whole)"
    return [line]


def load_calibration(path: str | Path, regions: RegionSet | None = None) -> list[FactorRow]:
    """Read a calibration CSV: ``region,operator,factor`` and optional ``rse``, ``people`` and
    ``footprints``.

    ``region`` is a region id (one of ``regions`` when given) or ``*`` (also when empty);
    ``operator`` an MCC+MNC of 5-6 digits, ``roaming`` or ``*`` (also when empty); ``factor`` in
    :data:`~estimators.calibration.FACTOR_RANGE`, ``rse`` in
    :data:`~estimators.calibration.RSE_RANGE` (default 0); ``people`` (the reference population
    the factor was fitted to, ``1..MAX_PEOPLE``) only on ``region,*`` rows, blank elsewhere;
    ``footprints`` (the rule the factors were fitted under, one of
    :data:`~estimators.footprints.RULES`, the same on every row that gives it);
    each (region, operator) once. Raises :class:`~stream.contract.InputError` naming the file
    and line.
    """
    rows: list[FactorRow] = []
    first: dict[tuple[str, str], int] = {}
    rule: tuple[str, int] | None = None  # the footprint rule and the line that first gave it
    for line, row in _csv_rows(path, ["region", "operator", "factor"]):
        region = row["region"] or ANY
        operator = row["operator"] or ANY
        if regions is not None and region != ANY and region not in regions.index:
            raise InputError(f"{path}:{line}: unknown region {_shown(region)}")
        if operator not in (ANY, ROAMING) and not _OPERATOR.fullmatch(operator):
            raise InputError(f"{path}:{line}: operator must be an MCC+MNC of 5-6 digits, "
                             f"{ROAMING!r} or {ANY!r}, got {_shown(operator)}")
        if (region, operator) in first:
            raise InputError(f"{path}:{line}: duplicate row for region {_shown(region)}, operator "
                             f"{_shown(operator)} (first on line {first[(region, operator)]})")
        factor = _number(path, line, "factor", row["factor"])
        rse = _number(path, line, "rse", row["rse"]) if row.get("rse") else 0.0
        people = _number(path, line, "people", row["people"], (1, MAX_PEOPLE),
                         "the reference population") \
            if row.get("people") else None
        problem = factor_problem(factor) or rse_problem(rse) \
            or people_problem(region, operator, people)
        if problem is not None:
            raise InputError(f"{path}:{line}: {problem}")
        footprints = (row.get("footprints") or "").strip() or None
        if footprints is not None:
            if footprints not in RULES:
                raise InputError(f"{path}:{line}: footprints must be one of {', '.join(RULES)} "
                                 f"(the rule the factors were fitted under), got {_shown(footprints)}")
            if rule is not None and footprints != rule[0]:
                raise InputError(f"{path}:{line}: footprints {_shown(footprints)} differs from "
                                 f"{_shown(rule[0])} on line {rule[1]}: one file holds factors "
                                 "fitted under one rule")
            rule = rule or (footprints, line)
        rows.append(FactorRow(region, operator, factor, rse, people, footprints))
        first[(region, operator)] = line
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def write_calibration(path: str | Path, rows: list[FactorRow]) -> None:
    """Write calibration rows as CSV (``region,operator,factor,rse,people,footprints``; ``people``
    and ``footprints`` blank where a row has none); raises :class:`~stream.contract.InputError`
    when ``path`` cannot be written."""
    with open_output(path, newline="") as fh:  # its folder made, as replay's outputs
        try:
            writer = csv.writer(fh)
            writer.writerow(["region", "operator", "factor", "rse", "people", "footprints"])
            for r in rows:
                writer.writerow([r.region, r.operator, f"{r.factor:.6f}", f"{r.rse:.6f}",
                                 "" if r.people is None else _plain(round(r.people)),
                                 r.footprints or ""])
        except OSError as exc:
            raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None


@dataclass
class CellPlanRows:
    """A cell plan as columns (``azimuth_deg``/``range_m`` NaN where not given), and its file."""

    operator: list[str]
    cell: list[str]
    lat: np.ndarray
    lon: np.ndarray
    azimuth_deg: np.ndarray
    range_m: np.ndarray
    path: Path | None = None


def _optional(path: str | Path, line: int, row: dict[str, str], column: str,
              bounds: tuple[float, float], what: str) -> float:
    text = row.get(column, "")
    return _number(path, line, column, text, bounds, what) if text else float("nan")


_PLAIN_TEXT = re.compile(r"[^\t\n\x20-\x7e]")


def _plain_cell_plan(path: str | Path) -> CellPlanRows | None:
    """The cell plan of :func:`load_cell_plan`, read as columns by polars when the file is
    plain (printable ASCII, no quotes, every row good); None otherwise, and :func:`load_cell_plan`
    reads it row by row, which words any problem with its line.

    Every rule of the row path is checked on whole columns, so the result is the same; a plain
    plan of 110 k rows loads in about a tenth of the time.
    """
    try:
        with open_text(path) as fh:
            text = fh.read()
    except (InputError, OSError, UnicodeError):
        return None
    text = text.replace("\r\n", "\n")
    if '"' in text or _PLAIN_TEXT.search(text):
        return None
    try:
        df = pl.read_csv(text.encode(), infer_schema=False, quote_char=None, has_header=True)
    except Exception:
        return None
    names = [c.strip() for c in df.columns]
    if len(set(names)) != len(names) or not {"operator", "cell", "lat", "lon"} <= set(names) \
            or df.height == 0:
        return None
    df = df.rename(dict(zip(df.columns, names, strict=True))).select(
        pl.all().fill_null("").str.strip_chars())
    op, cell = df["operator"], df["cell"]
    if not op.str.contains(r"^[0-9]{5,6}$").all() or (cell == "").any() \
            or op.n_unique() > MAX_OPERATORS or df.select(["operator", "cell"]).is_duplicated().any():
        return None
    columns = {}
    for name, bounds, optional in (("lat", LAT_RANGE, False), ("lon", LON_RANGE, False),
                                   ("azimuth_deg", AZIMUTH_RANGE, True),
                                   ("range_m", RANGE_M_RANGE, True)):
        if name not in df.columns:
            columns[name] = np.full(df.height, np.nan)
            continue
        text_col = df[name]
        given = text_col != ""
        if not optional and not given.all():
            return None
        if not (text_col.filter(given).str.contains(f"^(?:{_DECIMAL.pattern})$").all()
                and (text_col.str.len_chars() <= MAX_NUMBER_CHARS).all()):
            return None
        value = text_col.replace("", None).cast(pl.Float64).to_numpy().astype(np.float64)
        ok = ~given.to_numpy() | (np.isfinite(value) & (value >= bounds[0]) & (value <= bounds[1]))
        if not ok.all():
            return None
        columns[name] = value
    return CellPlanRows(op.to_list(), cell.to_list(), columns["lat"], columns["lon"],
                        columns["azimuth_deg"], columns["range_m"], Path(path))


def load_cell_plan(path: str | Path) -> CellPlanRows:
    """Read a cell plan CSV: ``operator,cell,lat,lon`` plus optional ``azimuth_deg,range_m``.

    ``operator`` is an MCC+MNC of 5-6 digits (at most ``MAX_OPERATORS`` distinct), ``cell`` a
    non-empty id, ``lat``/``lon`` WGS84 degrees, ``azimuth_deg`` in ``AZIMUTH_RANGE``,
    ``range_m`` in ``RANGE_M_RANGE``; each ``(operator, cell)`` once (a plan history with
    ``valid_from``/``valid_to`` rows is refused at its second row of a cell: give the plan in
    force for the period). Raises :class:`~stream.contract.InputError` naming file and line.
    """
    plain = _plain_cell_plan(path)
    return plain if plain is not None else cell_plan_by_rows(path)


def cell_plan_by_rows(path: str | Path) -> CellPlanRows:
    """:func:`load_cell_plan` row by row with the ``csv`` module (any file it accepts; the
    reference for its columnar fast path)."""
    operator: list[str] = []
    cell: list[str] = []
    values: list[tuple[float, float, float, float]] = []
    first: dict[tuple[str, str], int] = {}
    operators: set[str] = set()
    history = False
    for line, row in _csv_rows(path, ["operator", "cell", "lat", "lon"]):
        history = history or any(c in row for c in VALIDITY_COLUMNS)
        op, cid = row["operator"], row["cell"]
        if not op or not cid:
            raise InputError(f"{path}:{line}: operator and cell must not be empty")
        if not _OPERATOR.fullmatch(op):
            raise InputError(f"{path}:{line}: operator must be an MCC+MNC of 5-6 digits, "
                             f"got {_shown(op)}")
        if (op, cid) in first:
            hint = ("; defacto reads one row per cell and no validity dates: give the plan in "
                    "force for the period") if history else ""
            raise InputError(f"{path}:{line}: duplicate cell {_shown(cid)} for operator {op!r} "
                             f"(first on line {first[(op, cid)]}){hint}")
        operators.add(op)
        if len(operators) > MAX_OPERATORS:
            raise InputError(f"{path}:{line}: more than {MAX_OPERATORS} distinct operators")
        lat = _number(path, line, "lat", row["lat"], LAT_RANGE, "degrees")
        lon = _number(path, line, "lon", row["lon"], LON_RANGE, "degrees")
        az = _optional(path, line, row, "azimuth_deg", AZIMUTH_RANGE, "degrees from north")
        rng = _optional(path, line, row, "range_m", RANGE_M_RANGE, "metres")
        first[(op, cid)] = line
        operator.append(op)
        cell.append(cid)
        values.append((lat, lon, az, rng))
    if not values:
        raise InputError(f"{path}: no rows")
    arr = np.array(values, dtype=np.float64).reshape(-1, 4)
    return CellPlanRows(operator, cell, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], Path(path))


def load_truth(path: str | Path) -> Truth:
    """Read ``truth.jsonl`` from ``defacto simulate``: the true figures per snapshot time."""
    out: Truth = {}
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                out[doc["at"]] = doc["regions"]
            except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as exc:
                raise InputError(f"{path}:{line_no}: not a truth record ({exc})") from None
    return out


@dataclass(frozen=True)
class ReferencePaths:
    """Where a run's reference data is: regions (required), registry, calibration, cell plan."""

    regions: Path
    registry: Path | None = None
    calibration: Path | None = None
    cells: Path | None = None


@dataclass(frozen=True)
class Reference:
    """A run's reference data, loaded and checked against the regions."""

    regions: RegionSet
    registry: dict[str, int] | None
    calibration: Calibration | None
    cell_plan: CellPlanRows | None


def load_reference(paths: ReferencePaths) -> Reference:
    """Load and cross-check the files of ``paths`` (raises :class:`~stream.contract.InputError`)."""
    regions = load_regions(paths.regions)
    registry = load_population(paths.registry, regions) if paths.registry else None
    if registry is not None:
        for warning in registry_gaps(regions, registry):
            print(f"defacto: warning: {paths.registry}: {warning}", file=sys.stderr)
    calibration = Calibration(load_calibration(paths.calibration, regions)) \
        if paths.calibration else None
    if calibration is not None:
        unknown = calibration.unknown_regions(regions)
        if unknown:
            raise InputError(f"calibration names unknown region(s): {', '.join(unknown)}")
    plan = load_cell_plan(paths.cells) if paths.cells else None
    return Reference(regions, registry, calibration, plan)
