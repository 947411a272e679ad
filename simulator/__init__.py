"""The embedded default data: a synthetic short-video ecosystem with planted incidents.

`simulate(SimConfig(...))` returns the six raw tables of the contract, per-item truth and the
planted incidents; `write_simulation` writes them as a dataset folder.
"""

from simulator.config import Incident, SimConfig, default_incidents, load_incidents
from simulator.core import Simulation, simulate, summarize, write_simulation

__all__ = [
    "Incident",
    "SimConfig",
    "Simulation",
    "default_incidents",
    "load_incidents",
    "simulate",
    "summarize",
    "write_simulation",
]
