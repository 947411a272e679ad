"""The review queue API through real HTTP (ASGI) on a real model and a real SQLite store."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from serving.app import create_app
from serving.review.store import ReviewStore
from tests.support.postgres import temp_database, url
from tests.support.review import add_analysts, flagged_item, session_headers
from tests.support.serving import REVIEW_KEY, SCORE_KEY, Registry, running, snapshot_frame

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def records(n: int, random_state: int = 11) -> list[dict[str, Any]]:
    out = []
    for row in snapshot_frame(n, random_state).to_dict("records"):
        rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        rec["as_of"] = rec["as_of"].isoformat()
        rec["creator_verified"] = bool(rec["creator_verified"])
        out.append(rec)
    return out


async def wait_for(client, predicate, timeout_s: float = 10.0) -> Any:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        r = await client.get("/v1/review/stats", headers={"X-API-Key": REVIEW_KEY})
        body = r.json()
        if predicate(body):
            return body
        assert loop.time() < deadline, body
        await asyncio.sleep(0.05)


async def test_scored_items_reach_the_queue_and_are_reviewed(
    champion_v1: Registry, tmp_path: Path
) -> None:
    settings = champion_v1.settings(tmp_path / "state", review_random_share=0.2)
    app = create_app(settings, flag_flush_interval_s=0.05)
    add_analysts(app.state.review_store, "ann", "bob")
    recs = records(200)
    async with running(app) as client:
        score = {"X-API-Key": SCORE_KEY}
        review = {"X-API-Key": REVIEW_KEY}
        ann = await session_headers(client, "ann")
        bob = await session_headers(client, "bob")
        r = await client.post("/v1/score", json={"items": recs}, headers=score)
        assert r.status_code == 200, r.text
        results = r.json()["items"]
        n_flagged = sum(1 for x in results if x["flagged"])
        assert n_flagged > 0
        stats = await wait_for(client, lambda b: b["by_stratum"].get("flagged", 0) == n_flagged)
        # Unflagged items are sampled by a hash of their id at review_random_share.
        n_sample = stats["by_stratum"].get("sample", 0)
        assert 0 < n_sample < 200 - n_flagged

        # Scopes: the score key cannot read the queue; no key is 401.
        assert (await client.get("/v1/review/items", headers=score)).status_code == 403
        assert (await client.get("/v1/review/items")).status_code == 401

        page = (await client.get("/v1/review/items", params={"limit": 5}, headers=review)).json()
        assert page["total"] == n_flagged + n_sample and len(page["items"]) == 5
        prios = [it["priority"] for it in page["items"]]
        assert prios == sorted(prios, reverse=True)
        lq = (
            await client.get(
                "/v1/review/items",
                params={"issue": "low_quality", "status": "pending", "limit": 500},
                headers=review,
            )
        ).json()
        assert lq["total"] == sum(1 for x in results if "low_quality" in x["flagged"])
        samples = (
            await client.get("/v1/review/items", params={"stratum": "sample"}, headers=review)
        ).json()["items"]
        assert all(s["sampled"] and s["sample_prob"] == pytest.approx(0.2) for s in samples)

        # A service key reads the queue but cannot act as an analyst; a typed name is refused.
        assert (await client.post("/v1/review/claims", json={}, headers=review)).status_code == 401
        typed = await client.post("/v1/review/claims", json={"reviewer": "ann"}, headers=ann)
        assert typed.status_code == 422
        # Claim: two analysts get different items; the detail carries reason codes.
        a = await client.post("/v1/review/claims", json={}, headers=ann)
        b = await client.post("/v1/review/claims", json={}, headers=bob)
        assert a.status_code == b.status_code == 200, a.text
        a, b = a.json(), b.json()
        assert a["item"]["id"] != b["item"]["id"]
        rid = a["item"]["id"]
        if a["item"]["stratum"] == "flagged":
            assert set(a["item"]["reasons"]) == set(a["item"]["flagged"])
        taken = await client.post("/v1/review/claims", json={"review_id": rid}, headers=bob)
        assert taken.status_code == 409

        # Labelling needs the lease, held by the analyst who claimed it.
        url = f"/v1/review/items/{rid}/label"
        bad = await client.post(url, json={"lease": b["lease"], "decision": "confirm"}, headers=ann)
        assert bad.status_code == 409
        stolen = await client.post(
            url, json={"lease": a["lease"], "decision": "confirm"}, headers=bob
        )
        assert stolen.status_code == 403
        bad = await client.post(url, json={"lease": a["lease"], "decision": "maybe"}, headers=ann)
        assert bad.status_code == 422
        made_up = await client.post(
            url,
            json={"lease": a["lease"], "decision": "relabel", "issue": "made_up"},
            headers=ann,
        )
        assert made_up.status_code == 422 and "made_up" in made_up.json()["detail"]
        ok = await client.post(
            url,
            json={"lease": a["lease"], "decision": "relabel", "issue": "harmful_interactions"},
            headers=ann,
        )
        assert ok.status_code == 200, ok.text
        labels = {lab["issue"]: lab["label"] for lab in ok.json()["labels"]}
        assert labels["harmful_interactions"] == 1
        assert {lab["reviewer"] for lab in ok.json()["labels"]} == {"ann"}
        again = await client.post(
            url, json={"lease": a["lease"], "decision": "confirm"}, headers=ann
        )
        assert again.status_code == 409

        release = f"/v1/review/items/{b['item']['id']}/release"
        assert (await client.post(release, json={}, headers=ann)).status_code == 403
        rel = await client.post(release, json={"lease": b["lease"]}, headers=bob)
        assert rel.status_code == 200 and rel.json()["status"] == "pending"

        hist = (await client.get(f"/v1/review/items/{rid}/history", headers=review)).json()
        assert [h["event"] for h in hist] == ["ingested", "claimed", "labeled"]
        assert hist[1]["actor"] == "ann"
        detail = (await client.get(f"/v1/review/items/{rid}", headers=review)).json()
        assert detail["status"] == "labeled" and detail["labels"]
        assert (await client.get("/v1/review/items/999999", headers=review)).status_code == 404

        quality = (await client.get("/v1/review/quality", headers=review)).json()
        assert [q["issue"] for q in quality["issues"]] == [
            "low_quality",
            "harmful_interactions",
            "wrongful_enforcement",
        ]
        # The OpenAPI spec documents the queue with one-line summaries.
        spec = (await client.get("/openapi.json")).json()
        assert "/v1/review/claims" in spec["paths"]
        assert not any(p.startswith("/console") for p in spec["paths"])

    # The default sink is the review store at settings.review_db_url.
    store = ReviewStore(settings.review_db_url)
    assert store.stats().labels == len(labels)
    store.close()


async def test_empty_queue_claim_is_404(champion_v1: Registry, tmp_path: Path) -> None:
    app = create_app(champion_v1.settings(tmp_path / "state"))
    add_analysts(app.state.review_store, "ann")
    async with running(app) as client:
        ann = await session_headers(client, "ann")
        r = await client.post("/v1/review/claims", json={}, headers=ann)
        assert r.status_code == 404
        r = await client.post("/v1/review/claims", json={"issue": "x" * 101}, headers=ann)
        assert r.status_code == 422


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_sessions_admins_and_field_limits(
    champion_v1: Registry, tmp_path: Path, backend: str
) -> None:
    if backend == "postgres":
        with temp_database("surfacer_limits") as name:
            await _sessions_admins_and_field_limits(champion_v1, tmp_path, url(name))
    else:
        await _sessions_admins_and_field_limits(champion_v1, tmp_path, None)


async def _sessions_admins_and_field_limits(
    champion_v1: Registry, tmp_path: Path, database_url: str | None
) -> None:
    settings = champion_v1.settings(
        tmp_path / "state", review_random_share=0.0, database_url=database_url
    )
    app = create_app(settings)
    store = app.state.review_store
    add_analysts(store, "ann", "bob", "root", admin=("root",))
    store.add_flagged([flagged_item(i) for i in range(3)])
    async with running(app) as client:
        bad = await client.post("/v1/review/sessions", json={"name": "ann", "password": "nope"})
        assert bad.status_code == 401
        ann = await session_headers(client, "ann")
        root = await session_headers(client, "root")
        claim = (await client.post("/v1/review/claims", json={}, headers=ann)).json()
        rid = claim["item"]["id"]
        # An admin may release or label someone else's claim without its lease; the history
        # names who acted and whose claim it was.
        r = await client.post(
            f"/v1/review/items/{rid}/label", json={"decision": "reject"}, headers=root
        )
        assert r.status_code == 200, r.text
        assert {lab["reviewer"] for lab in r.json()["labels"]} == {"root"}
        hist = (await client.get(f"/v1/review/items/{rid}/history", headers=ann)).json()
        assert hist[-1]["actor"] == "root" and hist[-1]["detail"]["lease_owner"] == "ann"
        # Every oversized or NUL-carrying field is a 422 naming it, never a database error.
        claim = (await client.post("/v1/review/claims", json={}, headers=ann)).json()
        url = f"/v1/review/items/{claim['item']['id']}/label"
        lease = claim["lease"]
        for body, field in (
            ({"lease": lease, "decision": "relabel", "issue": "i" * 101}, "issue"),
            ({"lease": lease, "decision": "relabel", "issue": "low\x00quality"}, "issue"),
            ({"lease": lease, "decision": "reject", "note": "n" * 2001}, "note"),
            ({"lease": lease, "decision": "reject", "note": "a\x00b"}, "note"),
            ({"lease": "l" * 65, "decision": "reject"}, "lease"),
        ):
            r = await client.post(url, json=body, headers=ann)
            assert r.status_code == 422, (field, r.text)
            assert r.json()["detail"][0]["loc"][-1] == field
        for params in ({"issue": "a\x00"}, {"issue": "i" * 101}):
            r = await client.get("/v1/review/items", params=params, headers=ann)
            assert r.status_code == 422, r.text
        r = await client.get("/v1/review/quality", params={"model_version": "\x00"}, headers=ann)
        assert r.status_code == 422
        for name in ("n" * 201, "a\x00b"):
            r = await client.post("/v1/review/sessions", json={"name": name, "password": "x"})
            assert r.status_code == 422
        # Logout revokes the token at once.
        assert (await client.delete("/v1/review/sessions", headers=ann)).status_code == 204
        assert (await client.get("/v1/review/items", headers=ann)).status_code == 401
        assert (await client.post("/v1/review/claims", json={}, headers=ann)).status_code == 401
    store.close()


@pytest.mark.slow
def test_surfacer_serve_writes_flags_to_the_review_store(
    champion_v1: Registry, tmp_path: Path
) -> None:
    """`surfacer serve` with no sink option: flagged and sampled items land in the store,
    all of them, even when the process is stopped right after the requests."""
    import json
    import signal

    import httpx

    from tests.support.serving import API_KEYS, serve_process

    data_dir = tmp_path / "state"
    env = {
        "SURFACER_DATA_DIR": str(data_dir),
        "SURFACER_MLFLOW_TRACKING_URI": champion_v1.tracking_uri,
        "SURFACER_MODEL_NAME": champion_v1.name,
        "SURFACER_API_KEYS": json.dumps(API_KEYS),
        "SURFACER_RELOAD_INTERVAL_S": "0",
        "SURFACER_REVIEW_RANDOM_SHARE": "0.25",
    }
    recs = records(300, random_state=5)
    with serve_process(env, tmp_path) as server:
        r = httpx.post(
            f"{server.base_url}/v1/score",
            json={"items": recs},
            headers={"X-API-Key": SCORE_KEY},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        n_flagged = sum(1 for x in r.json()["items"] if x["flagged"])
        server.proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM: exit status -15.
        assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM), server.log()
    store = ReviewStore(f"sqlite:///{(data_dir / 'review.db').resolve()}")
    stats = store.stats()
    store.close()
    assert stats.by_stratum.get("flagged", 0) == n_flagged > 0
    # About a quarter of the unflagged items are sampled (hash of the item id).
    n_sample = stats.by_stratum.get("sample", 0)
    assert 0.1 < n_sample / (300 - n_flagged) < 0.4, (n_sample, n_flagged)
