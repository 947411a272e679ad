"""The service as a real `surfacer serve` process: reload under load, drain on shutdown, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from common.mlflow_store import mlflow_schema_head, schema_revision
from common.settings import Settings
from serving.cli import prepare_mlflow
from serving.flag_writer import JsonlFlagSink
from surfacer.cli import run
from tests.support.serving import (
    ADMIN_KEY,
    SCORE_KEY,
    Registry,
    free_port,
    records,
    serve_process,
)


@pytest.mark.slow
def test_reload_under_load_has_zero_failed_requests(champion_v1: Registry, tmp_path: Path) -> None:
    v1, v2 = champion_v1.versions
    recs = records(30)
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    errors: list[str] = []
    stop = threading.Event()

    def load(base_url: str, offset: int) -> None:
        with httpx.Client(base_url=base_url, headers={"X-API-Key": SCORE_KEY}, timeout=30) as c:
            i = offset
            while not stop.is_set():
                try:
                    if i % 5 == 0:
                        r = c.post("/v1/score", json={"items": recs})
                    else:
                        r = c.post("/v1/score", json=recs[i % len(recs)])
                except httpx.HTTPError as exc:  # a dropped connection is a failed request too
                    errors.append(repr(exc))
                    i += 1
                    continue
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    versions[r.json()["model_version"]] += 1
                i += 1

    with serve_process(champion_v1.serve_env(tmp_path / "state"), tmp_path) as server:
        threads = [threading.Thread(target=load, args=(server.base_url, k)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            with httpx.Client(base_url=server.base_url, headers={"X-API-Key": ADMIN_KEY}) as admin:
                time.sleep(0.5)
                for target in (v2, v1, v2):
                    champion_v1.set_champion(target)
                    r = admin.post("/v1/admin/reload", timeout=60)
                    assert r.status_code == 200, r.text
                    assert r.json() == {**r.json(), "reloaded": True, "version": target}
                    time.sleep(0.5)
                # a worker that the admin request did not reach follows the announcement
                # within its poll interval (1 s): keep the load on until it has (bounded)
                deadline = time.monotonic() + 15
                while versions[v2] == 0 and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert not errors, errors[:3]
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 50
    assert versions[v1] > 0 and versions[v2] > 0, versions


@pytest.mark.slow
def test_shutdown_drains_flagged_items(champion_v1: Registry, tmp_path: Path) -> None:
    flags = tmp_path / "flags.jsonl"
    recs = records(400, random_state=11)
    with serve_process(
        champion_v1.serve_env(tmp_path / "state"), tmp_path, "--flags-jsonl", str(flags)
    ) as server:
        with httpx.Client(base_url=server.base_url, headers={"X-API-Key": SCORE_KEY}) as c:
            flagged = []
            for k in range(0, len(recs), 100):
                r = c.post("/v1/score", json={"items": recs[k : k + 100]})
                assert r.status_code == 200
                flagged += [it["item_id"] for it in r.json()["items"] if it["flagged"]]
        # SIGTERM right away, before the writer's next timed flush could have run.
        server.proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM: exit status -15.
        assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM), server.log()
        assert "Application shutdown complete" in server.log()
    written = [w["item_id"] for w in JsonlFlagSink.read(flags)]
    assert flagged
    assert sorted(written) == sorted(flagged)


@pytest.mark.slow
def test_dev_key_is_printed_and_works(champion_v1: Registry, tmp_path: Path) -> None:
    env = champion_v1.serve_env(tmp_path / "state")
    env["SURFACER_API_KEYS"] = "{}"
    with serve_process(env, tmp_path, "--dev-key") as server:
        line = next(x for x in server.log().splitlines() if x.startswith("dev API key"))
        key = line.rsplit(" ", 1)[1]
        with httpx.Client(base_url=server.base_url) as c:
            assert c.get("/v1/models").status_code == 401
            assert c.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
            assert c.get("/metrics", headers={"X-API-Key": key}).status_code == 200


@pytest.mark.slow
def test_two_workers_first_start_create_the_mlflow_store_once(tmp_path: Path) -> None:
    # A folder with no MLflow database: before `surfacer serve` created it in the parent,
    # both workers ran MLflow's migrations at once and one logged `duplicate column name:
    # step` (6 of 7 fresh starts on a 2-core machine), then waited for the registry.
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SURFACER_", "MLFLOW_"))}
    env["SURFACER_DATA_DIR"] = str(state)
    port = free_port()
    log_path = tmp_path / "serve.log"
    # Each worker ends its start-up with this line once MLflow answered "no such model".
    waiting = "not ready until the registry answers"
    with log_path.open("wb") as log:
        surfacer = str(Path(sys.executable).parent / "surfacer")
        proc = subprocess.Popen(
            [surfacer, "serve", "--port", str(port), "--workers", "2", "--dev-key"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 50
        while log_path.read_text().count(waiting) < 2:
            assert proc.poll() is None, f"serve exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"workers not started:\n{log_path.read_text()}"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log_path.read_text()
    for bad in ("duplicate column", "OperationalError", "Traceback"):
        assert bad not in text, f"{bad!r} in the serve log:\n{text}"
    # Both workers reached the registry and got its answer, not a schema error.
    answered = text.count("Registered Model with name=surfacer not found")
    assert answered == 2, f"{answered} of 2 workers got the registry's answer:\n{text}"
    assert f"MLflow store sqlite:///{state.resolve()}/mlflow.db created" in text
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.db")) == [
        Path("state/mlflow.db"),
        Path("state/review.db"),
    ]
    uri = f"sqlite:///{state.resolve()}/mlflow.db"
    assert schema_revision(uri) == mlflow_schema_head() is not None


def test_serve_refuses_to_start_without_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("SURFACER_API_KEYS", "{}")
    monkeypatch.setenv("SURFACER_DATA_DIR", str(tmp_path))
    assert run(["serve", "--port", "1"]) == 2
    assert "no API keys configured" in capsys.readouterr().err


def test_serve_refuses_to_start_when_the_mlflow_store_cannot_be_created(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SURFACER_DATA_DIR", str(tmp_path / "file" / "state"))
    with pytest.raises(SystemExit) as info:
        run(["serve", "--port", "1", "--dev-key"])
    assert info.value.code == 1
    assert "error: cannot create the folder of the MLflow store" in capsys.readouterr().err


def test_serve_only_warns_when_the_mlflow_database_server_is_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The workers ride out an outage (cached model, retries), so the server still starts.
    settings = Settings(mlflow_tracking_uri="postgresql+psycopg://127.0.0.1:1/mlflow")
    prepare_mlflow(settings)
    err = capsys.readouterr().err
    assert err.startswith("warning: MLflow store postgresql+psycopg://127.0.0.1:1/mlflow is ")
    assert "the workers retry it and serve their cached model" in err


def test_serve_command_and_worker_imports_stay_light() -> None:
    # `surfacer serve --help` needs only serving.cli; a worker imports the app factory and
    # the app, but not pandas, MLflow or LightGBM (the model loads them after start-up).
    probe = (
        "import sys, json\n"
        "import serving.cli\n"
        "cli = sorted(m for m in ('pandas', 'mlflow', 'sqlalchemy', 'fastapi', 'uvicorn') "
        "if m in sys.modules)\n"
        "import serving.server, serving.app\n"
        "worker = sorted(m for m in ('pandas', 'mlflow', 'lightgbm', 'sklearn', 'alembic') "
        "if m in sys.modules)\n"
        "print(json.dumps([cli, worker]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    cli, worker = json.loads(out.stdout)
    assert cli == [] and worker == []


def test_serve_runs_one_worker_with_the_in_process_online_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One worker per core only where the online store is shared (Redis): with the
    in-process one each worker would hold the rows it happened to receive."""
    import serving.cli as cli
    import serving.server as server
    from serving.online import ENV_WORKERS

    started: list[int] = []
    monkeypatch.setattr(server, "run_server", lambda **kw: started.append(kw["workers"]))
    monkeypatch.setattr(cli, "prepare_mlflow", lambda settings: None)
    monkeypatch.setattr(cli, "default_workers", lambda: 2)
    # serve() sets variables for its workers: on a copy of the environment, dropped after
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != ENV_WORKERS})
    base = {"data_dir": tmp_path, "api_keys": {"k": ["score"]}}
    cli.serve(Settings(**base))
    assert started == [1] and os.environ[ENV_WORKERS] == "1"
    assert "one worker, as the online store is in-process" in capsys.readouterr().out
    cli.serve(Settings(**base, online_store="redis://127.0.0.1:6379/0"))
    assert started == [1, 2] and os.environ[ENV_WORKERS] == "2"
    cli.serve(Settings(**base), workers=3)  # asked for: served, with the online path off
    assert started == [1, 2, 3]
    assert "ingest and score by id answer 503" in capsys.readouterr().err
