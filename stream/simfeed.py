"""Feed a simulation straight into an engine, hour by hour, without writing files.

Benchmarks use this to run large scenarios quickly; it turns the simulator's columns into the
same engine inputs the file decoder produces (same keyed hashes, same cell plan binning), so a
replay of the written files gives identical snapshots (tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from estimators.engine import Engine
from estimators.pseudonym import device_keys
from stream.simulator import HourChunk, Simulation


@dataclass
class FedHour:
    """One simulated hour after ingestion: its end instant, ping count and true figures."""

    end_ms: int
    pings: int
    truth: dict[str, dict[str, int]]


class SimulationFeed:
    """Precomputes per-device keys and classes, then ingests a simulation's hours into an engine."""

    def __init__(self, sim: Simulation, engine: Engine, secret: bytes) -> None:
        self.sim = sim
        self.engine = engine
        ops = np.asarray(sim.operators, dtype=object)
        plan = sim.cell_plan
        engine.load_cell_plan(ops[plan["operator"]].tolist(), list(plan["cell"]), plan["lat"],
                              plan["lon"])
        codes = np.array([engine.operator_code(o) for o in sim.operators], dtype=np.int64)
        device_ops = ops[sim.device_operator]
        self.keys = device_keys(device_ops, sim.device_name, secret)
        self.opclass = engine.operator_class(codes[sim.device_operator], sim.device_home_mcc)

    def ingest(self, chunk: HourChunk) -> int:
        """Ingest one hour of pings; returns the number of pings."""
        assert self.engine.plan is not None
        loc = np.empty(len(chunk.ts_ms), dtype=np.int64)
        is_cell = chunk.cell >= 0
        loc[is_cell] = self.engine.plan.loc[chunk.cell[is_cell]]
        if (~is_cell).any():
            loc[~is_cell] = self.engine.cells.locate_latlng(chunk.lat[~is_cell],
                                                            chunk.lon[~is_cell])
        self.engine.ingest(self.keys[chunk.device], chunk.ts_ms, self.opclass[chunk.device], loc)
        return len(chunk.ts_ms)

    def hours(self) -> Iterator[FedHour]:
        """Ingest every hour in order, yielding after each one."""
        for chunk in self.sim.hours():
            n = self.ingest(chunk)
            yield FedHour(chunk.start_ms + 3_600_000, n, chunk.truth_end)
