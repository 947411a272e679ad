"""Fixtures for the fault tests: the real MLflow registry of `tests.support.serving`."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest

from tests.support.serving import Registry, build_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        reg = build_registry(tmp_path_factory.mktemp("mlflow-faults"))
        yield reg
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


@pytest.fixture
def champion(registry: Registry) -> Iterator[Registry]:
    """The registry with champion -> version 1 at the start and end of the test."""
    registry.set_champion(registry.versions[0])
    yield registry
    registry.set_champion(registry.versions[0])
