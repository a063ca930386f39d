"""A simulation written to files and an engine built on its regions and cell plan (tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from estimators.engine import Engine, EngineConfig
from stream.simulator import Simulation
from stream.sources.reference_files import load_regions


def simulated_engine(sim: tuple[Simulation, Path]) -> Engine:
    """An engine at res 8 over a written simulation's regions, with its cell plan loaded."""
    s, out = sim
    engine = Engine(load_regions(out / "regions.geojson"), EngineConfig(res=8))
    plan = s.cell_plan
    ops = np.asarray(s.operators, dtype=object)
    engine.load_cell_plan(ops[plan["operator"]].tolist(), list(plan["cell"]), plan["lat"],
                          plan["lon"])
    return engine
