"""Scoring, batches, auth scopes, limits and errors through real HTTP (ASGI) against a real model."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from serving.app import create_app
from serving.flag_writer import JsonlFlagSink
from tests.support.serving import (
    ADMIN_KEY,
    INGEST_KEY,
    REVIEW_KEY,
    SCORE_KEY,
    Registry,
    records,
    running,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _app(registry: Registry, tmp_path: Path, **overrides: Any):
    sink = JsonlFlagSink(tmp_path / "flags.jsonl")
    settings = registry.settings(tmp_path / "state", **overrides)
    return create_app(settings, flag_sink=sink, flag_flush_interval_s=0.05), sink


async def test_score_one_item_matches_the_bundle(champion_v1: Registry, tmp_path: Path) -> None:
    app, sink = _app(champion_v1, tmp_path)
    bundle = champion_v1.bundles[champion_v1.versions[0]]
    recs = records(40)
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        results = []
        for rec in recs:
            r = await client.post("/v1/score", json=rec)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/json"
            assert r.headers["x-request-id"]
            results.append(r.json())
    flagged_ids = set()
    for rec, body in zip(recs, results, strict=True):
        expected = bundle.score_one(rec)
        assert body["item_id"] == rec["item_id"]
        assert body["model_version"] == champion_v1.versions[0]
        assert set(body["probabilities"]) == set(bundle.issue_names)
        for issue, p in expected.items():
            if p is None:
                assert body["probabilities"][issue] is None
            else:
                assert body["probabilities"][issue] == pytest.approx(p, rel=1e-9)
        assert body["flagged"] == bundle.flagged(expected)
        # Reason codes only for flagged issues, each a (feature, value, contribution) triple.
        assert set(body["reasons"]) == set(body["flagged"])
        for reasons in body["reasons"].values():
            assert 0 < len(reasons) <= 5
            assert set(reasons[0]) == {"feature", "value", "contribution"}
            contributions = [rc["contribution"] for rc in reasons]
            assert contributions == sorted(contributions, reverse=True)
        if body["flagged"]:
            flagged_ids.add(rec["item_id"])
    assert flagged_ids, "the test model should flag some of 40 items"
    # The lifespan exit drained the flag queue into the sink: every flagged item, once.
    written = JsonlFlagSink.read(sink.path)
    assert sorted(w["item_id"] for w in written) == sorted(flagged_ids)
    one = written[0]
    assert one["model_version"] == champion_v1.versions[0]
    assert one["sampled"] is False
    assert set(one["reasons"]) == set(one["flagged"])
    assert one["snapshot"]["item_id"] == one["item_id"]


async def test_score_batch_matches_single_scoring(champion_v1: Registry, tmp_path: Path) -> None:
    app, _ = _app(champion_v1, tmp_path)
    recs = records(120, random_state=3)
    async with running(app, headers={"Authorization": f"Bearer {SCORE_KEY}"}) as client:
        r = await client.post("/v1/score", json={"items": recs})
        assert r.status_code == 200, r.text
        batch = r.json()
        singles = [(await client.post("/v1/score", json=rec)).json() for rec in recs[:30]]
    assert batch["model_version"] == champion_v1.versions[0]
    assert [it["item_id"] for it in batch["items"]] == [rec["item_id"] for rec in recs]
    for single, item in zip(singles, batch["items"], strict=False):
        assert item["flagged"] == single["flagged"]
        # Batch reason codes come from one vectorised pass; they match explain_one's.
        assert item["reasons"].keys() == single["reasons"].keys()
        for issue, reasons in single["reasons"].items():
            got = item["reasons"][issue]
            assert [r["feature"] for r in got] == [r["feature"] for r in reasons]
            assert [r["value"] for r in got] == pytest.approx([r["value"] for r in reasons])
            assert [r["contribution"] for r in got] == pytest.approx(
                [r["contribution"] for r in reasons], rel=1e-6, abs=1e-9
            )
        for issue, p in single["probabilities"].items():
            if p is None:
                assert item["probabilities"][issue] is None
            else:
                assert item["probabilities"][issue] == pytest.approx(p, rel=1e-9, abs=1e-12)
    # Moderation-anchored rows get no post-issue score, and vice versa.
    for rec, item in zip(recs, batch["items"], strict=True):
        if rec["anchor"] == "moderation":
            assert item["probabilities"]["low_quality"] is None
            assert item["probabilities"]["wrongful_enforcement"] is not None
        else:
            assert item["probabilities"]["wrongful_enforcement"] is None


async def test_batch_limit(champion_v1: Registry, tmp_path: Path) -> None:
    app, _ = _app(champion_v1, tmp_path, max_batch_size=10)
    recs = records(11)
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        ok = await client.post("/v1/score", json={"items": recs[:10]})
        assert ok.status_code == 200
        too_many = await client.post("/v1/score", json={"items": recs})
        assert too_many.status_code == 413
        assert "11 items exceeds max_batch_size=10" in too_many.json()["detail"]
        empty = await client.post("/v1/score", json={"items": []})
        assert empty.status_code == 200 and empty.json()["items"] == []


async def test_auth_scopes(champion_v1: Registry, tmp_path: Path) -> None:
    app, _ = _app(champion_v1, tmp_path)
    rec = records(1)[0]
    async with running(app) as client:
        # No key, wrong key, malformed bearer: 401 everywhere except the health probes.
        assert (await client.post("/v1/score", json=rec)).status_code == 401
        bad = await client.post("/v1/score", json=rec, headers={"X-API-Key": SCORE_KEY + "x"})
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"] == "Bearer"
        assert (
            await client.post("/v1/score", json=rec, headers={"Authorization": "Basic abc"})
        ).status_code == 401
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.post("/v1/admin/reload")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        # Wrong scope: 403.
        review = {"X-API-Key": REVIEW_KEY}
        assert (await client.post("/v1/score", json=rec, headers=review)).status_code == 403
        score = {"X-API-Key": SCORE_KEY}
        assert (await client.get("/metrics", headers=score)).status_code == 403
        assert (await client.post("/v1/admin/reload", headers=score)).status_code == 403
        # Right scope.
        assert (await client.post("/v1/score", json=rec, headers=score)).status_code == 200
        assert (await client.get("/v1/models", headers=review)).status_code == 200
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert (await client.get("/metrics", headers=admin)).status_code == 200
        assert (await client.post("/v1/admin/reload", headers=admin)).status_code == 200


async def test_body_size_limit_declared_and_chunked(champion_v1: Registry, tmp_path: Path) -> None:
    app, _ = _app(champion_v1, tmp_path, max_body_bytes=4096)
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        big = orjson.dumps({"items": records(20)})
        assert len(big) > 4096
        r = await client.post(
            "/v1/score", content=big, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        assert "max_body_bytes=4096" in r.json()["detail"]
        assert r.json()["request_id"] == r.headers["x-request-id"]

        async def chunks():
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        # A generator body goes out chunked, with no Content-Length to check up front.
        r = await client.post(
            "/v1/score", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in r.request.headers
        assert r.status_code == 413
        small = orjson.dumps(records(1)[0])

        async def small_chunks():
            yield small[:50]
            yield small[50:]

        r = await client.post(
            "/v1/score", content=small_chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 200, r.text


async def test_a_stalled_body_is_a_408_and_frees_its_slot(
    champion_v1: Registry, tmp_path: Path
) -> None:
    """A client that stops sending mid-body held its request in flight for good: enough of
    them (max_concurrency) and the worker answered every other request 503, for as long
    as they stayed connected. The body must now arrive within body_timeout_s: 408 naming
    the setting, connection closed, and the slot is free again."""
    app, _ = _app(champion_v1, tmp_path, body_timeout_s=0.3, max_concurrency=1)
    body = orjson.dumps(records(1)[0])

    async def stall():
        yield body[:20]
        await asyncio.sleep(30)
        yield body[20:]

    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        for path, key in (
            ("/v1/score", SCORE_KEY),
            ("/v1/events", INGEST_KEY),
            ("/v1/review/sessions", SCORE_KEY),
        ):
            t0 = asyncio.get_running_loop().time()
            headers = {"content-type": "application/json", "X-API-Key": key}
            r = await asyncio.wait_for(client.post(path, content=stall(), headers=headers), 10)
            assert asyncio.get_running_loop().time() - t0 < 5
            assert r.status_code == 408, (path, r.text)
            assert "body_timeout_s=0.3" in r.json()["detail"]
            assert r.headers["connection"] == "close"
        # the slot is free: with max_concurrency=1 a stuck request would shed this one
        r = await client.post(
            "/v1/score", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 200, r.text

        async def slow_but_whole():  # chunks apart, whole well within the limit
            for i in range(0, len(body), 100):
                await asyncio.sleep(0.01)
                yield body[i : i + 100]

        r = await client.post(
            "/v1/score", content=slow_but_whole(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"n_view": 3}, ["body", "item_id"]),
        ({"item_id": "a" * 201}, ["body", "item_id"]),
        ({"item_id": "a\x00b"}, ["body", "item_id"]),
        ({"item_id": "a", "n_view": "Infinity"}, ["body", "n_view"]),
        ({"item_id": "a", "n_view": "inf"}, ["body", "n_view"]),
        ({"item_id": "a", "mod_removed": "NaN"}, ["body", "mod_removed"]),
        ({"item_id": "a", "anchor": "x" * 41}, ["body", "anchor"]),
        ({"item_id": "a", "n_view": "many"}, ["body", "n_view"]),
        # a boolean or a numeric string is a caller's type bug, not a number: it was read
        # as 1 (or 5) and scored without a word
        ({"item_id": "a", "n_view": True}, ["body", "n_view"]),
        ({"item_id": "a", "n_report": "5"}, ["body", "n_report"]),
        ({"item_id": "a", "mod_removed": True}, ["body", "mod_removed"]),
        ({"item_id": "a", "duration_s": "31.5"}, ["body", "duration_s"]),
        ({"item_id": "a", "mean_watch_frac": False}, ["body", "mean_watch_frac"]),
        (
            {"items": [{"item_id": "a"}, {"item_id": "b", "age_h": "1"}]},
            ["body", "items", 1, "age_h"],
        ),
        ({"item_id": "a", "as_of": "yesterday-ish"}, ["body", "as_of"]),
        # a time without zone is refused, not read as UTC (it keys the review queue)
        ({"item_id": "a", "as_of": "2026-11-20T13:00:00"}, ["body", "as_of"]),
        ({"item_id": "a", "created_at": "2026-11-20"}, ["body", "created_at"]),
        ({"item_id": "a", "n_view": -5}, ["body", "n_view"]),
        ({"item_id": "a", "mean_watch_frac": 1.5}, ["body", "mean_watch_frac"]),
        (
            {"items": [{"item_id": "a"}, {"item_id": "b", "n_report": [1]}]},
            ["body", "items", 1, "n_report"],
        ),
        ({"items": "nope"}, ["body", "items"]),
        ({"items": [], "extra": 1}, ["body", "extra"]),
        ([1, 2], ["body"]),
    ],
)
async def test_bad_payloads_are_422_with_the_field_path(
    champion_v1: Registry, tmp_path: Path, payload: Any, loc: list[Any]
) -> None:
    app, _ = _app(champion_v1, tmp_path)
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        r = await client.post("/v1/score", json=payload)
    assert r.status_code == 422, r.text
    body = r.json()
    assert loc in [e["loc"] for e in body["detail"]]
    assert body["request_id"]


async def test_an_anchor_the_model_does_not_score_is_422(
    champion_v1: Registry, tmp_path: Path
) -> None:
    """An anchor none of the model's issues has (a typo, other case) matched no issue: the
    item was answered all-null, 200, and never flagged. Now a 422 naming the field and the
    anchors the model scores; its own anchors, null and "" (read as post) still score."""
    app, _ = _app(champion_v1, tmp_path)
    rec = records(1)[0]
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        for bad in ("Post", "comment", "moderation "):
            r = await client.post("/v1/score", json={**rec, "anchor": bad})
            assert r.status_code == 422, r.text
            (problem,) = r.json()["detail"]
            assert problem["loc"] == ["body", "anchor"]
            assert "moderation, post" in problem["msg"]
        r = await client.post("/v1/score", json={"items": [rec, {**rec, "anchor": "Post"}]})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "items", 1, "anchor"]
        for ok in ("post", "moderation", None, ""):
            r = await client.post("/v1/score", json={**rec, "anchor": ok})
            assert r.status_code == 200, (ok, r.text)
            assert any(p is not None for p in r.json()["probabilities"].values())


async def test_invalid_json_is_422(champion_v1: Registry, tmp_path: Path) -> None:
    app, _ = _app(champion_v1, tmp_path)
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        r = await client.post(
            "/v1/score", content=b'{"item_id": "a",', headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        assert r.json()["detail"][0]["type"] == "json_invalid"


async def test_unexpected_error_is_a_generic_500(
    champion_v1: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = _app(champion_v1, tmp_path)
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        bundle = app.state.service.holder.current.bundle

        def broken(record: Any, top_k: int = 5) -> Any:
            raise RuntimeError("secret internal detail /etc/passwd")

        bundle.score_explain_one = broken  # instance attribute: only this app's loaded bundle
        r = await client.post("/v1/score", json=records(1)[0])
    assert r.status_code == 500
    body = r.json()
    assert body == {"detail": "internal server error", "request_id": r.headers["x-request-id"]}
    assert "secret" not in r.text
    # The log has the details, findable by the request id.
    logged = [rec for rec in caplog.records if body["request_id"] in rec.getMessage()]
    assert logged and logged[0].exc_info is not None


async def test_models_endpoint_and_metrics(champion_v1: Registry, tmp_path: Path) -> None:
    app, _ = _app(champion_v1, tmp_path)
    bundle = champion_v1.bundles[champion_v1.versions[0]]
    async with running(app, headers={"X-API-Key": ADMIN_KEY}) as client:
        info = (await client.get("/v1/models")).json()
        assert info["version"] == champion_v1.versions[0]
        assert info["alias"] == "champion"
        assert info["source"] == "mlflow"
        assert info["thresholds"] == pytest.approx(bundle.thresholds)
        assert info["metrics"] == bundle.metadata["metrics"]
        recs = records(50)
        r = await client.post("/v1/score", json={"items": recs})
        n_flags = sum(len(it["flagged"]) for it in r.json()["items"])
        await client.post("/v1/score", json=recs[0])
        await client.post("/v1/score", json={"item_id": 1})
        text = (await client.get("/metrics")).text
    assert 'surfacer_http_requests_total{method="POST",route="/v1/score",status="200"} 2.0' in text
    assert 'surfacer_http_requests_total{method="POST",route="/v1/score",status="422"} 1.0' in text
    assert "surfacer_http_request_duration_seconds_bucket" in text
    assert "surfacer_items_scored_total 51.0" in text
    lq = sum(1 for rec in recs if rec["anchor"] == "post") + (recs[0]["anchor"] == "post")
    assert f'surfacer_score_count{{issue="low_quality"}} {float(lq)}' in text
    flags = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("surfacer_flags_total{")
    ]
    assert sum(flags) >= n_flags
    assert (
        f'surfacer_model_info{{name="{champion_v1.name}",source="mlflow",version="{champion_v1.versions[0]}"}} 1.0'
        in text
    )


async def test_openapi_documents_the_score_body(champion_v1: Registry, tmp_path: Path) -> None:
    app, _ = _app(champion_v1, tmp_path)
    async with running(app) as client:
        spec = (await client.get("/openapi.json")).json()
    body = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]
    refs = {s["$ref"] for s in body["schema"]["anyOf"]}
    assert refs == {"#/components/schemas/Snapshot", "#/components/schemas/ScoreBatch"}
    snapshot = spec["components"]["schemas"]["Snapshot"]
    bundle = champion_v1.bundles[champion_v1.versions[0]]
    # The schema is the loaded model's contract: what it reads is required, nothing unknown.
    assert snapshot["required"] == sorted(bundle.input_fields)
    assert snapshot["additionalProperties"] is False
    assert "n_report_spam" in snapshot["properties"]
    # The example is made up (no training row is published), carries every field the
    # loaded model reads, and is accepted as it stands.
    example = body["examples"]["single"]["value"]
    training_row = bundle.input_example()
    assert set(bundle.input_fields) <= set(example)
    assert example["item_id"] != training_row["item_id"]
    assert example.get("caption") != training_row.get("caption")
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        assert (await client.post("/v1/score", json=example)).status_code == 200
        batch = body["examples"]["batch"]["value"]
        assert (await client.post("/v1/score", json=batch)).status_code == 200
    assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])
    # /v1/score checks its key without dependencies; its docs still say how to send one,
    # with the same schemes as the routes that use them.
    assert spec["paths"]["/v1/score"]["post"]["security"] == [
        {"APIKeyHeader": []},
        {"HTTPBearer": []},
    ]
    assert (
        spec["paths"]["/v1/models"]["get"]["security"]
        == spec["paths"]["/v1/score"]["post"]["security"]
    )


async def test_loading_a_model_tunes_the_cyclic_collector(
    champion_v1: Registry, tmp_path: Path
) -> None:
    # A 1,000-item batch would otherwise run ~24 young collections; the loaded model and
    # libraries are frozen out of every collection (serving.server.settle_heap, which a
    # uvicorn worker's app factory passes as the model-swap hook).
    import gc

    from serving.server import GC_YOUNG_THRESHOLD, settle_heap

    before = gc.get_threshold()
    gc.set_threshold(700, before[1], before[2])
    try:
        settings = champion_v1.settings(tmp_path / "state")
        sink = JsonlFlagSink(tmp_path / "flags.jsonl")
        app = create_app(settings, flag_sink=sink, on_model_swap=settle_heap)
        async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
            assert (await client.get("/readyz")).status_code == 200
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
            assert gc.get_freeze_count() > 0
            # A batch runs no collection now (with the default 700 this one ran several).
            young: list[int] = []
            track = lambda phase, info: young.append(info["generation"])  # noqa: E731
            body = {"items": records(300)}
            gc.collect(0)
            gc.callbacks.append(track)
            try:
                r = await client.post("/v1/score", json=body)
            finally:
                gc.callbacks.remove(track)
            assert r.status_code == 200
            assert young == []
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_snapshots_must_match_what_the_model_reads(
    champion_v1: Registry, tmp_path: Path
) -> None:
    # The bundle declares its fields: one left out is refused, listed; an unknown one is
    # refused with the closest known name; null stays allowed (unknown value).
    app, sink = _app(champion_v1, tmp_path)
    rec = records(1)[0]
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        bare = await client.post("/v1/score", json={"item_id": "x2"})
        assert bare.status_code == 422
        msg = bare.json()["detail"][0]["msg"]
        assert "n_view" in msg and "mean_watch_frac" in msg
        typo = await client.post("/v1/score", json={**rec, "n_veiw": 100})
        assert typo.status_code == 422
        assert typo.json()["detail"][0]["msg"] == "n_veiw: unknown field; did you mean n_view?"
        assert typo.json()["detail"][0]["loc"] == ["body", "n_veiw"]
        missing = {k: v for k, v in rec.items() if k != "n_report"}
        r = await client.post("/v1/score", json={"items": [rec, missing]})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "items", 1]
        assert "n_report" in r.json()["detail"][0]["msg"]
        nulls = {**rec, "n_report": None, "mean_watch_frac": None}
        assert (await client.post("/v1/score", json=nulls)).status_code == 200
        # NUL anywhere in a snapshot (the review store cannot hold it), with its path.
        r = await client.post("/v1/score", json={"items": [{**rec, "caption": "a\x00b"}]})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "items", 0, "caption"]
    # Nothing refused reached the queue.
    written = {w["item_id"] for w in JsonlFlagSink.read(sink.path)}
    assert "x2" not in written


async def test_docs_work_offline_and_root_points_the_way(
    champion_v1: Registry, tmp_path: Path
) -> None:
    app, _ = _app(champion_v1, tmp_path)
    async with running(app) as client:
        docs = await client.get("/docs")
        assert docs.status_code == 200
        # Every script and stylesheet the page loads is served by this app.
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', docs.text)
        assert assets and all(a.startswith("/docs/assets/") for a in assets)
        for asset in assets:
            r = await client.get(asset)
            assert r.status_code == 200 and len(r.content) > 1000, asset
        redoc = await client.get("/redoc")
        assert "/docs/assets/redoc.standalone.js" in redoc.text
        assert "fonts.googleapis" not in redoc.text
        assert (await client.get("/docs/assets/../../etc/passwd")).status_code == 404
        browser = await client.get("/", headers={"accept": "text/html"})
        assert browser.status_code == 307 and browser.headers["location"] == "/console"
        index = (await client.get("/")).json()
        assert index["console"] == "/console" and index["docs"] == "/docs"


async def test_readiness_tells_where_flags_stand(champion_v1: Registry, tmp_path: Path) -> None:
    # With the writer in this app: ready. Told that an outside writer drains the spool while
    # none runs: degraded (scoring works, flags wait), and the metrics say so too.
    app, _ = _app(champion_v1, tmp_path)
    async with running(app) as client:
        code, body = 0, {}
        for _ in range(100):
            r = await client.get("/readyz")
            code, body = r.status_code, r.json()
            if body["status"] == "ready":
                break
            await asyncio.sleep(0.05)
        assert code == 200 and body["status"] == "ready", body
        assert body["flags"]["writer_up"] and body["flags"]["sink_up"]
    settings = champion_v1.settings(tmp_path / "other")
    alone = create_app(settings, external_flag_writer=True)
    async with running(alone) as client:
        r = await client.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "degraded"
        assert "flag writer is not running" in r.json()["problems"][0]
        rec = records(1)[0]
        scored = await client.post("/v1/score", json=rec, headers={"X-API-Key": SCORE_KEY})
        assert scored.status_code == 200
        text = (await client.get("/metrics", headers={"X-API-Key": ADMIN_KEY})).text
        assert "surfacer_flag_writer_up 0.0" in text
        if scored.json()["flagged"]:
            assert "surfacer_flags_accepted_total 1.0" in text
