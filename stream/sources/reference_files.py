"""Reference data files (formats in ``schemas/``): regions, registry, reference population,
calibration, cell plan, and the simulator's truth.

Every loader raises :class:`~stream.contract.InputError` naming the file, the line and what is
wrong, so a command can print it and exit instead of showing a traceback.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from estimators.calibration import ANY, Calibration, FactorRow
from estimators.regions import RegionSet, regions_from_geojson
from stream.contract import InputError
from stream.sources.text_files import open_text

Truth = dict[str, dict[str, dict[str, int]]]
"""The simulator's truth: snapshot time (ISO) → region id → ``present``/``resident`` people."""


def _csv_rows(path: str | Path, required: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)} "
                             f"(header is {','.join(header) or 'empty'})")
        reader.fieldnames = header
        for line, row in enumerate(reader, start=2):
            yield line, {k: (v or "").strip() for k, v in row.items() if k is not None}


def _number(path: str | Path, line: int, column: str, text: str, kind: type = float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise InputError(f"{path}:{line}: {column} {text!r} is not a number") from None
    if not np.isfinite(value):
        raise InputError(f"{path}:{line}: {column} must be finite")
    return value


def load_regions(path: str | Path) -> RegionSet:
    """Read a regions GeoJSON FeatureCollection."""
    with open_text(path) as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
    try:
        return regions_from_geojson(doc)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def load_population(path: str | Path, regions: RegionSet | None = None) -> dict[str, int]:
    """Read a registry or reference CSV (``region,registered``; ``population`` also accepted)."""
    with open_text(path) as fh:
        header = next(csv.reader(fh), [])
    column = "registered" if "registered" in [h.strip() for h in header] else "population"
    out: dict[str, int] = {}
    for line, row in _csv_rows(path, ["region", column]):
        region = row["region"]
        if regions is not None and region not in regions.index:
            raise InputError(f"{path}:{line}: unknown region {region!r}")
        if region in out:
            raise InputError(f"{path}:{line}: region {region!r} listed twice")
        value = _number(path, line, column, row[column])
        if value < 0:
            raise InputError(f"{path}:{line}: {column} must be >= 0")
        out[region] = int(round(value))
    if not out:
        raise InputError(f"{path}: no rows")
    return out


def load_calibration(path: str | Path, regions: RegionSet | None = None) -> list[FactorRow]:
    """Read a calibration CSV: ``region,operator,factor`` and optional ``rse``."""
    rows: list[FactorRow] = []
    for line, row in _csv_rows(path, ["region", "operator", "factor"]):
        region = row["region"] or ANY
        if regions is not None and region != ANY and region not in regions.index:
            raise InputError(f"{path}:{line}: unknown region {region!r}")
        factor = _number(path, line, "factor", row["factor"])
        rse = _number(path, line, "rse", row["rse"]) if row.get("rse") else 0.0
        try:
            rows.append(FactorRow(region, row["operator"] or ANY, factor, rse))
        except ValueError as exc:
            raise InputError(f"{path}:{line}: {exc}") from None
    return rows


def write_calibration(path: str | Path, rows: list[FactorRow]) -> None:
    """Write calibration rows as CSV (``region,operator,factor,rse``)."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["region", "operator", "factor", "rse"])
        for r in rows:
            writer.writerow([r.region, r.operator, f"{r.factor:.6f}", f"{r.rse:.6f}"])


@dataclass
class CellPlanRows:
    """A cell plan as columns (``azimuth_deg``/``range_m`` NaN where not given)."""

    operator: list[str]
    cell: list[str]
    lat: np.ndarray
    lon: np.ndarray
    azimuth_deg: np.ndarray
    range_m: np.ndarray


def load_cell_plan(path: str | Path) -> CellPlanRows:
    """Read a cell plan CSV: ``operator,cell,lat,lon`` plus optional ``azimuth_deg,range_m``."""
    operator: list[str] = []
    cell: list[str] = []
    values: list[tuple[float, float, float, float]] = []
    for line, row in _csv_rows(path, ["operator", "cell", "lat", "lon"]):
        if not row["operator"] or not row["cell"]:
            raise InputError(f"{path}:{line}: operator and cell must not be empty")
        lat = _number(path, line, "lat", row["lat"])
        lon = _number(path, line, "lon", row["lon"])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise InputError(f"{path}:{line}: lat/lon out of range")
        az = _number(path, line, "azimuth_deg", row["azimuth_deg"]) if row.get("azimuth_deg") \
            else float("nan")
        rng = _number(path, line, "range_m", row["range_m"]) if row.get("range_m") \
            else float("nan")
        operator.append(row["operator"])
        cell.append(row["cell"])
        values.append((lat, lon, az, rng))
    arr = np.array(values, dtype=np.float64).reshape(-1, 4)
    return CellPlanRows(operator, cell, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])


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
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
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
    calibration = Calibration(load_calibration(paths.calibration, regions)) \
        if paths.calibration else None
    if calibration is not None:
        unknown = calibration.unknown_regions(regions)
        if unknown:
            raise InputError(f"calibration names unknown region(s): {', '.join(unknown)}")
    plan = load_cell_plan(paths.cells) if paths.cells else None
    return Reference(regions, registry, calibration, plan)
