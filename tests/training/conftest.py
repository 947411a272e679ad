"""Fixtures for training tests: small simulated datasets and the flat synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.flat import write_flat_dataset


@pytest.fixture(scope="session")
def small_flat_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_flat_dataset(tmp_path_factory.mktemp("flat_train"), n=800, seed=1)


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8,000-item, 14-day simulation written as a dataset folder (with truth.parquet)."""
    from simulator.config import SimConfig
    from simulator.core import simulate, write_simulation

    out = tmp_path_factory.mktemp("sim") / "sim8k"
    return write_simulation(simulate(SimConfig(n_items=8000, days=14, seed=7)), out)
