"""log_training + the gate against a real `mlflow server` process backed by PostgreSQL.

The test creates a fresh database in the local PostgreSQL, starts `mlflow server` on a free
port with proxied artifacts (`--artifacts-destination`: the client uploads over HTTP, as it
would to a remote server), points surfacer at it through SURFACER_MLFLOW_TRACKING_URI, and
checks versions and aliases with MlflowClient and rows in PostgreSQL. Server and database are
removed afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import psycopg
import pytest
from mlflow import MlflowClient
from psycopg import sql

from common.settings import get_settings
from models.pyfunc import load_bundle
from tests.support import mlflow_store as ms
from training.registry import CHALLENGER, CHAMPION
from training.tracking import dataset_fingerprint, log_training

pytestmark = [pytest.mark.mlflow_server, pytest.mark.postgres, pytest.mark.slow]

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
# A loaded 2-core machine can take over a minute to bring the server up.
STARTUP_TIMEOUT_S = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    name = f"surfacer_mlflow_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def mlflow_server(
    pg_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, float]]:
    """(URL, artifacts folder, startup seconds) of a running server; stopped afterwards."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    port = _free_port()
    log = (root / "server.log").open("wb")
    # The venv's own `mlflow` (what `uv run mlflow` resolves to), without uv's sync step.
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(exe),
        "server",
        "--backend-store-uri",
        f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}",
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # The GenAI job runner (huey consumers) is not needed and costs startup time.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    start = time.perf_counter()
    # Own process group: the server forks uvicorn workers, all stopped together below.
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {proc.returncode}:\n"
                    + (root / "server.log").read_text()[-3000:]
                )
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - start > STARTUP_TIMEOUT_S:
                pytest.fail(
                    f"mlflow server not healthy after {STARTUP_TIMEOUT_S}s:\n"
                    + (root / "server.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield url, artifacts, time.perf_counter() - start
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_log_training_and_promotion_through_a_postgres_backed_server(
    mlflow_server: tuple[str, Path, float],
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    url, artifacts, startup_s = mlflow_server
    previous_uri = mlflow.get_tracking_uri()
    monkeypatch.setenv("SURFACER_MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("SURFACER_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SURFACER_MODEL_NAME", "surfacer")
    monkeypatch.delenv("SURFACER_MLFLOW_REGISTRY_URI", raising=False)
    settings = get_settings()
    assert settings.tracking_uri == url

    d = ms.data()
    fp = dataset_fingerprint({"snapshots": d.train})
    timings: dict[str, float] = {}
    results = {}
    try:
        for quality in ("medium", "bad", "good"):
            bundle = ms.bundles()[quality]
            start = time.perf_counter()
            results[quality] = log_training(
                bundle,
                ms.make_report(bundle, d.test),
                params={"quality": quality, "seed": 1},
                dataset_fingerprint=fp,
                settings=settings,
            )
            timings[quality] = time.perf_counter() - start

        assert results["medium"].promoted
        assert not results["bad"].promoted
        assert results["good"].promoted

        client = MlflowClient(tracking_uri=url, registry_uri=url)
        versions = client.search_model_versions("name='surfacer'")
        assert sorted(int(v.version) for v in versions) == [1, 2, 3]
        champion = client.get_model_version_by_alias("surfacer", CHAMPION)
        challenger = client.get_model_version_by_alias("surfacer", CHALLENGER)
        assert str(champion.version) == results["good"].model_version == "3"
        assert str(challenger.version) == "3"
        assert champion.run_id == results["good"].run_id
        run = client.get_run(results["bad"].run_id)
        assert run.data.tags["surfacer.promoted"] == "false"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        listed = {a.path for a in client.list_artifacts(results["bad"].run_id)}
        assert {"decision.json", "evaluation", "plots"} <= listed

        # the bundle comes back through the server's artifact proxy and scores identically
        start = time.perf_counter()
        loaded = load_bundle("models:/surfacer@champion")
        timings["load_bundle"] = time.perf_counter() - start
        rows = d.test.head(50)
        pd.testing.assert_frame_equal(
            loaded.score_frame(rows), ms.bundles()["good"].score_frame(rows)
        )
        # artifacts live in the server's destination folder, metadata in PostgreSQL
        assert any(artifacts.rglob("bundle.pkl"))
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{pg_database}") as conn:
            n_versions = conn.execute(
                "SELECT count(*) FROM model_versions WHERE name = 'surfacer'"
            ).fetchone()[0]
            aliases = dict(
                conn.execute(
                    "SELECT alias, version FROM registered_model_aliases WHERE name = 'surfacer'"
                ).fetchall()
            )
        assert n_versions == 3
        assert aliases == {CHAMPION: 3, CHALLENGER: 3}
    finally:
        mlflow.set_tracking_uri(previous_uri)
        mlflow.set_registry_uri(previous_uri)
    print(
        f"\nmlflow server startup {startup_s:.1f}s; log_training "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    )
