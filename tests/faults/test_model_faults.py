"""The champion's artifact corrupt or missing in the MLflow store, at start and at reload:
/readyz says why, a reload keeps the model serving before, and once the registry's
artifact is fixed the next reload loads it (the bad download is not kept)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from serving.app import create_app
from serving.flag_writer import JsonlFlagSink
from tests.support.serving import ADMIN_KEY, Registry, running


def _bundle_file(registry: Registry, version: str) -> Path:
    """The bundle pickle of `version` in the registry's artifact store."""
    model_id = registry.client().get_model_version(registry.name, version).source.split("/")[-1]
    return next(p for p in registry.root.rglob("bundle.pkl") if model_id in str(p))


def test_corrupt_champion_at_reload_then_fixed(champion: Registry, tmp_path: Path) -> None:
    v1, v2 = champion.versions
    pkl = _bundle_file(champion, v2)
    good = pkl.read_bytes()
    app = create_app(
        champion.settings(tmp_path / "state"), flag_sink=JsonlFlagSink(tmp_path / "f.jsonl")
    )

    async def go() -> None:
        async with running(app, headers={"X-API-Key": ADMIN_KEY}) as client:
            pkl.write_bytes(b"not a pickle" * 10)
            champion.set_champion(v2)
            r = await client.post("/v1/admin/reload")
            assert r.status_code == 502 and r.json()["version"] == v1
            r = await client.get("/readyz")
            body = r.json()
            assert r.status_code == 200 and body["status"] == "degraded", body
            assert any(
                "UnpicklingError" in p and f"serving version {v1}" in p for p in body["problems"]
            )
            pkl.write_bytes(good)  # the registry's artifact fixed
            r = await client.post("/v1/admin/reload")
            assert r.status_code == 200 and r.json()["version"] == v2, r.json()
            body = (await client.get("/readyz")).json()
            assert body["status"] == "ready" and body["model_version"] == v2, body

    try:
        asyncio.run(go())
    finally:
        pkl.write_bytes(good)


def test_missing_champion_artifact_at_start_says_why(champion: Registry, tmp_path: Path) -> None:
    _, v2 = champion.versions
    pkl = _bundle_file(champion, v2)
    good = pkl.read_bytes()
    champion.set_champion(v2)
    app = create_app(
        champion.settings(tmp_path / "state"), flag_sink=JsonlFlagSink(tmp_path / "f.jsonl")
    )

    async def go() -> None:
        async with running(app, headers={"X-API-Key": ADMIN_KEY}) as client:
            r = await client.get("/readyz")
            assert r.status_code == 503, r.json()
            assert r.json()["problems"][0].startswith(
                "no model loaded yet (last attempt failed: FileNotFoundError"
            ), r.json()
            pkl.write_bytes(good)
            r = await client.post("/v1/admin/reload")
            assert r.status_code == 200 and r.json()["version"] == v2, r.json()
            assert (await client.get("/readyz")).status_code == 200

    pkl.unlink()
    try:
        asyncio.run(go())
    finally:
        pkl.write_bytes(good)
