"""Fixtures for models tests: a small flat dataset (CSV + TOML spec) and a bundle trained on it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from models.bundle import ScoringBundle
from tests.support.flat import write_flat_dataset
from training.pipeline import TrainResult, train


@pytest.fixture(scope="session")
def flat_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_flat_dataset(tmp_path_factory.mktemp("flat"))


@pytest.fixture(scope="session")
def flat_result(flat_spec: Path) -> TrainResult:
    return train(flat_spec, track=False, random_state=0)


@pytest.fixture(scope="session")
def bundle(flat_result: TrainResult) -> ScoringBundle:
    """The trained bundle with every issue enabled: these tests are about the scoring paths,
    whatever the quality gate said of each issue on this small dataset."""
    return dataclasses.replace(flat_result.bundle, disabled={})
