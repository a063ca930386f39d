"""Scenario simulator: synthetic people and devices producing presence pings, with exact truth.

Public API::

    from stream.simulator import load_scenario, simulate, write_simulation
    sim = simulate(load_scenario("astana"), scale=0.01, days=3.0, seed=1)
    for chunk in sim.hours():  # HourChunk: pings of one hour + truth at its end
        ...
    write_simulation(sim, "out/")

``with_foreign(load_scenario("kz"))`` turns on the scenario's example ``[foreign]`` section
(stays of realistic length, local SIMs); ``foreign_truth(sim, "month")`` counts the visitors'
arrivals, departures and stock per MCC, month and class of stay.
"""

from stream.simulator.foreign import foreign_truth, visitor_stays, with_foreign
from stream.simulator.model import HourChunk, Simulation, simulate
from stream.simulator.scenario import Scenario, load_scenario, parse_scenario
from stream.simulator.writer import write_simulation

__all__ = [
    "HourChunk",
    "Scenario",
    "Simulation",
    "foreign_truth",
    "load_scenario",
    "parse_scenario",
    "simulate",
    "visitor_stays",
    "with_foreign",
    "write_simulation",
]
