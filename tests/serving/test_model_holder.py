"""Model loading from the registry, the local cache when MLflow is down, and reloads."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from serving.app import create_app
from serving.flag_writer import JsonlFlagSink
from serving.model_holder import CURRENT_FILE, ModelHolder
from tests.support.serving import ADMIN_KEY, SCORE_KEY, Registry, free_port, records, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def mlflow_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow retries HTTP calls with backoff for minutes by default; a down server should fail now.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


def _dead_mlflow_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


async def test_loads_champion_and_writes_the_cache(champion_v1: Registry, tmp_path: Path) -> None:
    settings = champion_v1.settings(tmp_path / "state")
    holder = ModelHolder(settings)
    assert holder.current is None
    await holder.startup()
    model = holder.current
    assert model is not None and model.version == champion_v1.versions[0]
    assert model.source == "mlflow"
    pointer = json.loads((settings.model_cache_dir / CURRENT_FILE).read_text())
    assert pointer["version"] == model.version and pointer["name"] == champion_v1.name
    assert (settings.model_cache_dir / model.version / "MLmodel").is_file()
    # Nothing moved: a check keeps the same object.
    assert holder.check() is False
    assert holder.current is model


async def test_starts_from_cache_when_mlflow_is_down(
    champion_v1: Registry, tmp_path: Path, mlflow_fails_fast: None
) -> None:
    state = tmp_path / "state"
    rec = records(5)[2]
    async with running(
        create_app(champion_v1.settings(state)), headers={"X-API-Key": ADMIN_KEY}
    ) as c:
        online = (await c.post("/v1/score", json=rec)).json()
    down = champion_v1.settings(state, mlflow_tracking_uri=_dead_mlflow_uri())
    sink = JsonlFlagSink(tmp_path / "f.jsonl")
    app = create_app(down, flag_sink=sink)
    async with running(app, headers={"X-API-Key": ADMIN_KEY}) as client:
        assert (await client.get("/readyz")).status_code == 200
        info = (await client.get("/v1/models")).json()
        assert info["version"] == champion_v1.versions[0]
        assert info["source"] == "cache"
        offline = (await client.post("/v1/score", json=rec)).json()
        assert offline["probabilities"] == online["probabilities"]
        # A forced reload reports the registry failure and keeps serving the cached model.
        r = await client.post("/v1/admin/reload")
        assert r.status_code == 502
        assert r.json()["reloaded"] is False and r.json()["error"]
        assert (await client.post("/v1/score", json=rec)).status_code == 200
    assert app.state.service.holder.last_error  # why it fell back is kept for operators


async def test_not_ready_without_registry_or_cache(
    champion_v1: Registry, tmp_path: Path, mlflow_fails_fast: None
) -> None:
    settings = champion_v1.settings(tmp_path / "empty", mlflow_tracking_uri=_dead_mlflow_uri())
    app = create_app(settings, flag_sink=JsonlFlagSink(tmp_path / "f.jsonl"))
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        assert (await client.get("/healthz")).status_code == 200
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "not ready"
        r = await client.post("/v1/score", json=records(1)[0])
        assert r.status_code == 503


async def test_forced_reload_swaps_when_the_alias_moves(
    champion_v1: Registry, tmp_path: Path
) -> None:
    v1, v2 = champion_v1.versions
    app = create_app(
        champion_v1.settings(tmp_path / "state"), flag_sink=JsonlFlagSink(tmp_path / "f")
    )
    rec = next(r for r in records(20) if r["anchor"] == "post")
    async with running(app, headers={"X-API-Key": ADMIN_KEY}) as client:
        first = (await client.post("/v1/score", json=rec)).json()
        assert first["model_version"] == v1
        r = (await client.post("/v1/admin/reload")).json()
        assert r == {"previous_version": v1, "version": v1, "reloaded": False, "error": None}
        champion_v1.set_champion(v2)
        r = (await client.post("/v1/admin/reload")).json()
        assert r["reloaded"] is True and r["version"] == v2
        second = (await client.post("/v1/score", json=rec)).json()
        assert second["model_version"] == v2
        expected = champion_v1.bundles[v2].score_one(rec)["low_quality"]
        assert second["probabilities"]["low_quality"] == pytest.approx(expected)
        assert second["probabilities"] != first["probabilities"]
        assert (await client.get("/v1/models")).json()["version"] == v2
        text = (await client.get("/metrics")).text
        assert f'version="{v2}"' in text and f'version="{v1}"' not in text
    pointer = json.loads((app.state.service.settings.model_cache_dir / CURRENT_FILE).read_text())
    assert pointer["version"] == v2


async def test_admin_reload_reaches_the_other_workers(
    champion_v1: Registry, tmp_path: Path
) -> None:
    # Two apps on one state folder stand for two uvicorn workers of one server; neither
    # polls (reload_interval_s=0), so only the announcement can move the second one.
    v1, v2 = champion_v1.versions
    settings = champion_v1.settings(tmp_path / "state")
    first = create_app(settings, flag_sink=JsonlFlagSink(tmp_path / "a"))
    second = create_app(settings, flag_sink=JsonlFlagSink(tmp_path / "b"))
    headers = {"X-API-Key": ADMIN_KEY}
    async with running(first, headers=headers) as a, running(second, headers=headers) as b:
        assert (await b.get("/v1/models")).json()["version"] == v1
        champion_v1.set_champion(v2)
        await asyncio.sleep(2.5)
        assert (await b.get("/v1/models")).json()["version"] == v1  # nobody asked yet
        r = (await a.post("/v1/admin/reload")).json()
        assert r["reloaded"] is True and r["version"] == v2
        deadline = time.monotonic() + 30
        while (await b.get("/v1/models")).json()["version"] != v2:
            assert time.monotonic() < deadline, "the other worker did not follow the reload"
            await asyncio.sleep(0.1)


async def test_polling_follows_the_alias(champion_v1: Registry, tmp_path: Path) -> None:
    v1, v2 = champion_v1.versions
    settings = champion_v1.settings(tmp_path / "state", reload_interval_s=0.2)
    app = create_app(settings, flag_sink=JsonlFlagSink(tmp_path / "f"))
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        assert (await client.get("/v1/models")).json()["version"] == v1
        champion_v1.set_champion(v2)
        deadline = time.monotonic() + 30
        while (await client.get("/v1/models")).json()["version"] != v2:
            assert time.monotonic() < deadline, "poller did not pick up the new champion"
            await asyncio.sleep(0.1)


async def test_workers_fetching_one_new_version_download_it_once(
    champion_v1: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two holders on one cache stand for two workers loading a new champion together.
    # Before the per-version lock both downloaded, and the second replaced the folder
    # (rmtree, then rename) while the first could be loading from it.
    import mlflow.artifacts

    real = mlflow.artifacts.download_artifacts
    calls: list[str] = []

    def slow_download(**kwargs: object) -> str:
        calls.append(str(kwargs["artifact_uri"]))
        time.sleep(1.0)  # long enough for both to be inside download() at once
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", slow_download)
    settings = champion_v1.settings(tmp_path / "state")
    version = champion_v1.versions[0]
    first, second = ModelHolder(settings), ModelHolder(settings)
    paths = await asyncio.gather(
        asyncio.to_thread(first.download, version), asyncio.to_thread(second.download, version)
    )
    assert len(calls) == 1
    assert paths[0] == paths[1] == settings.model_cache_dir / version
    assert (paths[0] / "MLmodel").is_file() and (paths[0] / ".complete").read_text() == version
    assert [p.name for p in settings.model_cache_dir.iterdir() if p.is_dir()] == [version]


async def test_workers_writing_the_cache_pointer_together_never_break_it(
    champion_v1: Registry, tmp_path: Path
) -> None:
    # Every worker writes current.json after loading a version. With one shared temp name,
    # one writer's rename took the file another was writing (FileNotFoundError, or a
    # pointer cut short).
    settings = champion_v1.settings(tmp_path / "state")
    holder = ModelHolder(settings)
    await holder.startup()
    model = holder.current
    assert model is not None
    writers = [ModelHolder(settings) for _ in range(2)]

    def write_many(h: ModelHolder) -> None:
        for _ in range(300):
            h._write_current(model)

    await asyncio.gather(*(asyncio.to_thread(write_many, h) for h in writers))
    pointer = json.loads((settings.model_cache_dir / CURRENT_FILE).read_text())
    assert pointer["version"] == model.version
    assert not list(settings.model_cache_dir.glob(f".{CURRENT_FILE}*"))
