"""Writing a simulation to files that the rest of defacto replays.

Pings are streamed hour by hour (bounded memory) in feed order; the truth is written alongside,
one JSON line per hour end. File formats are fixed contracts, documented in docs/SCENARIOS.md.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from estimators.units import HOUR_MS
from stream.simulator.model import HourChunk, Simulation
from stream.timefmt import iso_utc

CSV_HEADER = "device,ts,operator,home_mcc,cell,lat,lon"
WRITE_BLOCK = 500_000  # pings formatted at a time, to bound memory


@contextmanager
def _open_text(path: Path, gz: bool) -> Iterator[TextIO]:
    """Open a UTF-8 text file for writing, gzip-compressed if asked."""
    if gz:
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=6, newline="\n") as fh:
            yield fh
    else:
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            yield fh


class _PingFormatter:
    """Formats hour chunks as JSON lines or CSV rows, with per-device strings precomputed."""

    def __init__(self, sim: Simulation, fmt: str) -> None:
        self.fmt = fmt
        self.names = sim.device_name
        combos = sim.device_operator.astype(np.int64) * 1000 + sim.device_home_mcc
        keys, self.combo = np.unique(combos, return_inverse=True)
        ops = [sim.operators[k // 1000] for k in keys.tolist()]
        mccs = [k % 1000 for k in keys.tolist()]
        pattern = ',"operator":"{}","home_mcc":{},' if fmt == "jsonl" else ",{},{},"
        self.mid = [pattern.format(o, m) for o, m in zip(ops, mccs, strict=True)]
        self.cells = sim.cell_plan["cell"]

    def lines(self, chunk: HourChunk, lo: int, hi: int) -> list[str]:
        """One formatted line per ping of chunk[lo:hi], in the chunk's (feed) order."""
        device, cell = chunk.device[lo:hi], chunk.cell[lo:hi]
        out = np.empty(device.size, dtype=object)
        names = self.names[device].tolist()
        ts = chunk.ts_ms[lo:hi].tolist()
        mids = [self.mid[k] for k in self.combo[device].tolist()]
        ci, li = np.flatnonzero(cell >= 0), np.flatnonzero(cell < 0)
        cells = self.cells[cell[ci]].tolist()
        lats, lons = chunk.lat[lo:hi][li].tolist(), chunk.lon[lo:hi][li].tolist()
        if self.fmt == "jsonl":
            out[ci] = [f'{{"device":"{names[i]}","ts":{ts[i]}{mids[i]}"cell":"{c}"}}'
                       for i, c in zip(ci.tolist(), cells, strict=True)]
            out[li] = [f'{{"device":"{names[i]}","ts":{ts[i]}{mids[i]}"lat":{a},"lon":{b}}}'
                       for i, a, b in zip(li.tolist(), lats, lons, strict=True)]
        else:
            out[ci] = [f"{names[i]},{ts[i]}{mids[i]}{c},,"
                       for i, c in zip(ci.tolist(), cells, strict=True)]
            out[li] = [f"{names[i]},{ts[i]}{mids[i]},{a},{b}"
                       for i, a, b in zip(li.tolist(), lats, lons, strict=True)]
        return out.tolist()


def _write_table(path: Path, header: str, rows: list[str]) -> None:
    buf = io.StringIO()
    buf.write(header + "\n")
    for row in rows:
        buf.write(row + "\n")
    path.write_text(buf.getvalue(), encoding="utf-8")


def _write_counts(path: Path, counts: dict[str, int]) -> None:
    _write_table(path, "region,registered", [f"{k},{v}" for k, v in counts.items()])


def _write_cells(path: Path, sim: Simulation) -> None:
    plan = sim.cell_plan
    ops = [sim.operators[k] for k in plan["operator"].tolist()]
    lats = np.round(plan["lat"], 6).tolist()
    lons = np.round(plan["lon"], 6).tolist()
    rows = [f"{o},{c},{a},{b}" for o, c, a, b in zip(ops, plan["cell"].tolist(), lats, lons,
                                                      strict=True)]
    _write_table(path, "operator,cell,lat,lon", rows)


def write_simulation(sim: Simulation, out_dir: str | Path, fmt: str = "jsonl", gz: bool = False,
                     progress: bool = True) -> dict[str, Path]:
    """Write pings, cells, regions, registry, reference, truth and the scenario to out_dir.

    Pings and truth are streamed one hour at a time; a tqdm bar (hours done / total) goes to
    stderr when ``progress`` is true. Returns the written paths keyed by kind.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"fmt: must be 'jsonl' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "pings": out / (f"pings.{fmt}" + (".gz" if gz else "")),
        "cells": out / "cells.csv",
        "regions": out / "regions.geojson",
        "registry": out / "registry.csv",
        "reference": out / "reference.csv",
        "truth": out / "truth.jsonl",
        "scenario": out / "scenario.toml",
    }
    _write_cells(paths["cells"], sim)
    paths["regions"].write_text(json.dumps(sim.regions_geojson), encoding="utf-8")
    _write_counts(paths["registry"], sim.registry)
    _write_counts(paths["reference"], sim.reference)
    paths["scenario"].write_text(sim.scenario.text, encoding="utf-8")
    _write_hours(sim, paths["pings"], paths["truth"], fmt, gz, progress)
    return paths


def _write_hours(sim: Simulation, pings_path: Path, truth_path: Path, fmt: str, gz: bool,
                 progress: bool) -> None:
    formatter = _PingFormatter(sim, fmt)
    bar = tqdm(total=sim.n_hours, unit="h", desc="simulating", file=sys.stderr,
               disable=not progress)
    with _open_text(pings_path, gz) as pings, open(truth_path, "w", encoding="utf-8") as truth:
        if fmt == "csv":
            pings.write(CSV_HEADER + "\n")
        for chunk in sim.hours():
            for lo in range(0, len(chunk), WRITE_BLOCK):
                pings.write("\n".join(formatter.lines(chunk, lo, lo + WRITE_BLOCK)))
                pings.write("\n")
            record = {"at": iso_utc(chunk.start_ms + HOUR_MS), "regions": chunk.truth_end}
            truth.write(json.dumps(record, separators=(",", ":")) + "\n")
            bar.update(1)
            bar.set_postfix(pings=len(chunk), refresh=False)
    bar.close()
