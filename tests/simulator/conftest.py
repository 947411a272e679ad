"""Shared simulations for the simulator tests: small enough to be fast, large enough for stats."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator import SimConfig, Simulation, simulate, write_simulation

# 20k items over 21 days (~3 s): enough items per planted segment for significance tests.
STATS_CONFIG = SimConfig(n_items=20_000, days=21, seed=11)


@pytest.fixture(scope="package")
def sim() -> Simulation:
    return simulate(STATS_CONFIG)


@pytest.fixture(scope="package")
def written(sim: Simulation, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_simulation(sim, tmp_path_factory.mktemp("sim") / "data")
