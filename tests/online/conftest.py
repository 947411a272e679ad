"""Fixtures for the online-path tests: a small simulated dataset and both store backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from features.online import OnlineConfig, OnlineStore, open_store
from simulator.config import SimConfig
from simulator.core import simulate

REDIS_URL = os.environ.get("SURFACER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def sim_tables() -> dict[str, pd.DataFrame]:
    """Two simulated days of 160 items: every table the online store takes."""
    sim = simulate(SimConfig(n_items=160, days=2, seed=7))
    return {k: v for k, v in sim.tables.items() if k != "labels"}


def redis_or_skip() -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")


def make_store(backend: str, config: OnlineConfig | None = None) -> OnlineStore:
    if backend == "memory":
        return open_store("memory", config)
    redis_or_skip()
    return open_store(REDIS_URL, config, prefix=f"w17test:{uuid.uuid4().hex[:10]}:")


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_factory(backend: str) -> Iterator:
    made: list[OnlineStore] = []

    def factory(config: OnlineConfig | None = None) -> OnlineStore:
        store = make_store(backend, config)
        made.append(store)
        return store

    yield factory
    for store in made:
        if hasattr(store, "clear"):
            store.clear()
        store.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    import mlflow

    from tests.support.serving import build_registry

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        yield build_registry(tmp_path_factory.mktemp("mlflow"))
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


@pytest.fixture
def champion_v1(registry):
    registry.set_champion(registry.versions[0])
    return registry
