"""The simulator as a source: its pings as columns, paced into Kafka or fed into an engine.

The simulator (:mod:`stream.simulator`) is the truth oracle: it knows where everyone is. These
adapters turn its hours into the same inputs real data gives: :func:`simulation_columns` makes
the ping columns ``defacto simulate`` writes, :func:`stream_simulation` sends them to Kafka at a
chosen speed, and :class:`SimulationFeed` ingests them straight into an engine (same keyed hashes,
same cell-plan binning), so a replay of the written files gives identical snapshots (tested).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from estimators.engine import Engine
from estimators.footprints import apportion_plan, device_draw_hashes
from estimators.pseudonym import device_keys, device_words
from estimators.units import HOUR_MS, MINUTE_MS, SECOND_MS
from stream.contract import PING_DTYPES, PingColumns
from stream.simulator import HourChunk, Simulation
from stream.sources.kafka_producer import PingProducer


def simulation_columns(sim: Simulation, chunk: HourChunk) -> PingColumns:
    """One simulated hour as frame columns (the same pings ``defacto simulate`` writes)."""
    plan = sim.cell_plan
    ops = np.char.encode(np.asarray(sim.operators, dtype=str), "utf-8")
    dev_names = np.char.encode(np.asarray(sim.device_name, dtype=str), "utf-8")
    is_cell = chunk.cell >= 0
    op_of_ping = np.where(is_cell, np.asarray(plan["operator"])[np.maximum(chunk.cell, 0)],
                          sim.device_operator[chunk.device])
    cell = np.where(is_cell, np.asarray(plan["cell"], dtype=str)[np.maximum(chunk.cell, 0)], "")
    return {
        "device": dev_names[chunk.device],
        "ts": chunk.ts_ms.astype(PING_DTYPES["ts"]),
        "operator": ops[op_of_ping],
        "home_mcc": sim.device_home_mcc[chunk.device].astype(PING_DTYPES["home_mcc"]),
        "cell": np.char.encode(cell, "utf-8"),
        "lat": np.where(is_cell, np.nan, chunk.lat),
        "lon": np.where(is_cell, np.nan, chunk.lon),
    }


def stream_simulation(producer: PingProducer, sim: Simulation, speed: float | None,
                      watermark_every_ms: int = 5 * MINUTE_MS, step_ms: int = MINUTE_MS,
                      hours: Iterable[HourChunk] | None = None,
                      max_wall_s: float | None = None, fast_until_ms: int | None = None
                      ) -> Iterator[int]:
    """Send a simulation as it happens: ``speed`` simulated seconds per second (None: at once).

    Pings before ``fast_until_ms`` (UTC ms) go at once, unpaced: the demo primes a worker with
    the calibration day this way, so its first live figures rest on a day of observation.
    Yields the simulated time reached after each step; ends with a final watermark.
    """
    wall0 = time.monotonic()
    sim0: int | None = None
    next_mark: int | None = None
    for chunk in hours if hours is not None else sim.hours():
        cols = simulation_columns(sim, chunk)
        order = np.argsort(cols["ts"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        ts = cols["ts"]
        start = chunk.start_ms
        sim0 = start if sim0 is None else sim0
        next_mark = start + watermark_every_ms if next_mark is None else next_mark
        last = max(int(ts[-1]) + 1, start + HOUR_MS) if len(ts) else start + HOUR_MS
        for lo_ms in range(min(start, int(ts[0]) if len(ts) else start), last, step_ms):
            a, b = np.searchsorted(ts, [lo_ms, lo_ms + step_ms])
            producer.send_columns({k: v[a:b] for k, v in cols.items()})
            now_sim = lo_ms + step_ms
            if fast_until_ms is not None and now_sim <= fast_until_ms:
                wall0, sim0 = time.monotonic(), now_sim
            elif speed:
                due = wall0 + (now_sim - sim0) / SECOND_MS / speed
                while (left := due - time.monotonic()) > 0:
                    # sleep in Python, not inside librdkafka's poll: Ctrl-C there surfaces as a
                    # SystemError instead of KeyboardInterrupt
                    time.sleep(min(left, 0.2))
                    producer.producer.poll(0)
            if now_sim >= next_mark:
                producer.send_watermark(now_sim - step_ms)
                next_mark += watermark_every_ms
            yield now_sim
            if max_wall_s is not None and time.monotonic() - wall0 > max_wall_s:
                producer.send_watermark(now_sim, final=True)
                return
    if producer.stats.max_ts_ms is not None:
        producer.send_watermark(producer.stats.max_ts_ms, final=True)


@dataclass
class FedHour:
    """One simulated hour after ingestion: its end instant, ping count and true figures."""

    end_ms: int
    pings: int
    truth: dict[str, dict[str, int]]


class SimulationFeed:
    """Precomputes per-device keys and classes, then ingests a simulation's hours into an engine.

    Border cells' devices are placed by ``footprints`` (:data:`estimators.footprints.RULES`;
    default ``reference``: by the simulation's independent reference population, the one
    calibration is fitted to, as ``defacto calibrate`` and the runs using its file do), each
    device drawn by the unkeyed hash of its operator and name, as the decoder draws it.
    """

    def __init__(self, sim: Simulation, engine: Engine, secret: bytes,
                 footprints: str = "reference") -> None:
        self.sim = sim
        self.engine = engine
        ops = np.asarray(sim.operators, dtype=object)
        plan = sim.cell_plan
        engine.load_cell_plan(ops[plan["operator"]].tolist(), list(plan["cell"]), plan["lat"],
                              plan["lon"])
        self.footprints = apportion_plan(engine, footprints, sim.reference)
        codes = np.array([engine.operator_code(o) for o in sim.operators], dtype=np.int64)
        device_ops = ops[sim.device_operator]
        self.keys = device_keys(device_ops, sim.device_name, secret)
        self.draws = device_draw_hashes(*device_words(
            np.char.encode(device_ops.astype(str), "utf-8"),
            np.char.encode(np.asarray(sim.device_name, dtype=str), "utf-8"))) \
            if engine.plan is not None and engine.plan.footprints is not None else None
        self.opclass = engine.operator_class(codes[sim.device_operator], sim.device_home_mcc)

    def locations(self, chunk: HourChunk) -> np.ndarray:
        """The cell-table location of each ping of ``chunk`` (int64), as the decoder gives it:
        its plan row's (a border cell's piece for its device), or its lat/lon binned."""
        assert self.engine.plan is not None
        loc = np.empty(len(chunk.ts_ms), dtype=np.int64)
        is_cell = chunk.cell >= 0
        dev = chunk.device[is_cell]
        loc[is_cell] = self.engine.plan.locations(
            chunk.cell[is_cell].astype(np.int64),
            None if self.draws is None else self.draws[dev])
        if (~is_cell).any():
            loc[~is_cell] = self.engine.cells.locate_latlng(chunk.lat[~is_cell],
                                                            chunk.lon[~is_cell])
        return loc

    def ingest(self, chunk: HourChunk) -> int:
        """Ingest one hour of pings; returns the number of pings."""
        loc = self.locations(chunk)
        self.engine.ingest(self.keys[chunk.device], chunk.ts_ms, self.opclass[chunk.device], loc,
                           self.sim.device_home_mcc[chunk.device])
        return len(chunk.ts_ms)

    def hours(self) -> Iterator[FedHour]:
        """Ingest every hour in order, yielding after each one."""
        for chunk in self.sim.hours():
            n = self.ingest(chunk)
            yield FedHour(chunk.start_ms + HOUR_MS, n, chunk.truth_end)
