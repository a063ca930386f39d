"""A simulation written to files and an engine built on its regions and cell plan (tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from estimators.engine import Engine, EngineConfig
from stream.simulator import Simulation
from stream.sources.reference_files import load_regions
from stream.sources.simulation import simulation_columns


def simulated_engine(sim: tuple[Simulation, Path]) -> Engine:
    """An engine at res 8 over a written simulation's regions, with its cell plan loaded."""
    s, out = sim
    engine = Engine(load_regions(out / "regions.geojson"), EngineConfig(res=8))
    plan = s.cell_plan
    ops = np.asarray(s.operators, dtype=object)
    engine.load_cell_plan(ops[plan["operator"]].tolist(), list(plan["cell"]), plan["lat"],
                          plan["lon"])
    return engine


def time_ordered_columns(s: Simulation) -> dict[str, np.ndarray]:
    """Every ping of ``s`` as decoder columns (fixed-width bytes), in event-time order."""
    hours = [simulation_columns(s, chunk) for chunk in s.hours()]
    width = {k: max(h[k].dtype.itemsize for h in hours) for k in ("device", "operator", "cell")}
    cols = {k: np.concatenate([h[k].astype(f"S{width[k]}") if k in width else h[k] for h in hours])
            for k in hours[0]}
    order = np.argsort(cols["ts"], kind="stable")
    return {k: v[order] for k, v in cols.items()}
