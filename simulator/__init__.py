"""The embedded default data: a synthetic short-video ecosystem with planted incidents.

`simulate(SimConfig(...))` returns the six raw tables of the contract, per-item truth and the
planted incidents; `write_simulation` writes them as a dataset folder. The names below are
imported on first use, so `surfacer simulate --help` does not load pandas.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Incident": "simulator.config",
    "SimConfig": "simulator.config",
    "default_incidents": "simulator.config",
    "load_incidents": "simulator.config",
    "Simulation": "simulator.core",
    "simulate": "simulator.core",
    "summarize": "simulator.core",
    "write_simulation": "simulator.core",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")
