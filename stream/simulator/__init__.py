"""Scenario simulator: synthetic people and devices producing presence pings, with exact truth.

Public API::

    from stream.simulator import load_scenario, simulate, write_simulation
    sim = simulate(load_scenario("astana"), scale=0.01, days=3.0, seed=1)
    for chunk in sim.hours():  # HourChunk: pings of one hour + truth at its end
        ...
    write_simulation(sim, "out/")
"""

from stream.simulator.model import HourChunk, Simulation, simulate
from stream.simulator.scenario import Scenario, load_scenario, parse_scenario
from stream.simulator.writer import write_simulation

__all__ = [
    "HourChunk",
    "Scenario",
    "Simulation",
    "load_scenario",
    "parse_scenario",
    "simulate",
    "write_simulation",
]
