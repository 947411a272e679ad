"""The ingestion API, score by id, background re-scoring and readiness, over real HTTP
(ASGI) against a real model, with both online-store backends."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.online import OnlineConfig, open_store
from features.online.ingest import json_columns, json_rows
from serving.app import create_app
from serving.flag_writer import JsonlFlagSink
from tests.online.conftest import REDIS_URL, redis_or_skip
from tests.support.serving import ADMIN_KEY, INGEST_KEY, SCORE_KEY, Registry, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _app(registry: Registry, tmp_path: Path, store: Any, **overrides: Any):
    sink = JsonlFlagSink(tmp_path / "flags.jsonl")
    settings = registry.settings(tmp_path / "state", online_rescore_s=0.0, **overrides)
    app = create_app(settings, flag_sink=sink, flag_flush_interval_s=0.05, online_store=store)
    return app, sink


def _first_items(tables: dict[str, pd.DataFrame], n: int) -> dict[str, pd.DataFrame]:
    """The first n items and their rows of the first 20 hours (all within the items' life)."""
    items = tables["items"].head(n)
    ids = set(items["item_id"])
    end = items["created_at"].min() + pd.Timedelta(hours=20)
    out = {"items": items, "creators": tables["creators"]}
    for name in ("events", "moderation"):
        frame = tables[name]
        out[name] = frame[frame["item_id"].isin(ids) & (frame["ts"] < end)]
    appeals = tables["appeals"]
    out["appeals"] = appeals[appeals["item_id"].isin(ids) & (appeals["filed_at"] < end)]
    return out


async def _post(client, table: str, frame: pd.DataFrame, **extra: Any):
    return await client.post(f"/v1/{table}", json={"columns": json_columns(frame), **extra})


async def test_ingest_then_score_by_id(champion_v1: Registry, tmp_path, sim_tables, store_factory):
    store = store_factory()
    app, _ = _app(champion_v1, tmp_path, store)
    part = _first_items(sim_tables, 12)
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        for table in ("creators", "items", "events", "moderation", "appeals"):
            r = await _post(client, table, part[table])
            assert r.status_code == 200, r.text
            assert r.json()["rows"] == len(part[table])
        item = part["items"]["item_id"].iloc[0]
        r = await client.get(f"/v1/items/{item}/score")
        assert r.status_code == 200, r.text
        body = r.json()
        expected = champion_v1.bundles[champion_v1.versions[0]].score_one(store.snapshot(item))
        for issue, p in expected.items():
            if p is None:  # not applicable to a post snapshot
                assert body["probabilities"][issue] is None
            else:
                assert body["probabilities"][issue] == pytest.approx(p, rel=1e-9, abs=1e-12)
        ev = part["events"]
        assert body["snapshot"]["n_view"] == int(
            ((ev["item_id"] == item) & (ev["kind"] == "view")).sum()
        )
        assert set(body["reasons"]) == set(body["flagged"])
        missing = await client.get("/v1/items/nope/score")
        assert missing.status_code == 404 and "not in the online store" in missing.text
        # scope: a score-only key cannot ingest
        r = await client.post("/v1/events", json={"rows": []}, headers={"X-API-Key": SCORE_KEY})
        assert r.status_code == 403


async def test_malformed_batch_rejected_whole(champion_v1, tmp_path, sim_tables, store_factory):
    store = store_factory()
    app, _ = _app(champion_v1, tmp_path, store)
    part = _first_items(sim_tables, 3)
    item = part["items"]["item_id"].iloc[0]
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        assert (await _post(client, "items", part["items"])).status_code == 200
        rows = json_rows(part["events"][part["events"]["item_id"] == item].head(5))
        rows[3] = dict(rows[3], kind="viewz")
        rows[1] = dict(rows[1], ts="2026-10-01 10:00")  # no zone
        r = await client.post("/v1/events", json={"rows": rows})
        assert r.status_code == 422
        detail = r.json()["detail"]
        locs = {tuple(d["loc"][:3]): d for d in detail}
        assert ("body", "events", "kind") in locs and ("body", "events", "ts") in locs
        assert locs[("body", "events", "kind")]["loc"][3:] == ["rows", 3]
        assert "viewz" in locs[("body", "events", "kind")]["msg"]
        snap = store.snapshot(item)
        assert snap["n_view"] + snap["n_like"] + snap["n_comment"] == 0  # nothing applied
        r = await client.post("/v1/events", json={"rows": rows[:1], "extra": 1})
        assert r.status_code == 422
        r = await client.post("/v1/events", content=b"{not json")
        assert r.status_code == 422 and "invalid JSON" in r.text


async def test_resent_batch_counts_once(champion_v1, tmp_path, sim_tables, store_factory):
    store = store_factory()
    app, _ = _app(champion_v1, tmp_path, store)
    part = _first_items(sim_tables, 2)
    item = part["items"]["item_id"].iloc[0]
    events = part["events"][part["events"]["item_id"] == item]
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        await _post(client, "items", part["items"])
        first = await _post(client, "events", events, batch_id="b-1")
        again = await _post(client, "events", events, batch_id="b-1")
        header = await client.post(
            "/v1/events",
            json={"columns": json_columns(events)},
            headers={"Idempotency-Key": "b-1"},
        )
        assert first.json()["duplicate"] is False and first.json()["rows"] == len(events)
        assert again.json()["duplicate"] is True and again.json()["rows"] == 0
        assert header.json()["duplicate"] is True
    assert store.snapshot(item)["n_view"] == int((events["kind"] == "view").sum())


async def test_api_archives_a_resent_batch_once(champion_v1, tmp_path, sim_tables, store_factory):
    """With SURFACER_ARCHIVE_DIR the service archives what it newly applied; the rows still
    buffered at shutdown are written then."""
    from features.io import load_dataset

    store = store_factory()
    app, _ = _app(champion_v1, tmp_path, store, archive_dir=tmp_path / "live")
    part = _first_items(sim_tables, 3)
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        await _post(client, "items", part["items"], batch_id="i-1")
        for _ in range(2):
            r = await _post(client, "events", part["events"], batch_id="e-1")
            assert r.status_code == 200
        await _post(client, "items", part["items"], batch_id="i-1")
    live = load_dataset(tmp_path / "live")
    assert len(live["items"]) == len(part["items"])
    assert len(live["events"]) == len(part["events"])
    assert set(live) == {"items", "events"}


async def test_flag_reaches_queue_once_per_item_and_issue(
    champion_v1, tmp_path, sim_tables, store_factory
):
    store = store_factory()
    app, sink = _app(champion_v1, tmp_path, store)
    part = _first_items(sim_tables, 40)
    events = part["events"].sort_values("ts")
    halves = [events.iloc[: len(events) // 2], events.iloc[len(events) // 2 :]]
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        await _post(client, "creators", part["creators"])
        await _post(client, "items", part["items"])
        for half in halves:
            assert (await _post(client, "events", half)).status_code == 200
            await asyncio.sleep(0.8)  # the re-scorer ticks every 0.2 s
        online = app.state.online
        assert online.scored > 0
    written = JsonlFlagSink.read(sink.path)
    assert written, "the test model flags some of 40 items"
    pairs = [(w["item_id"], issue) for w in written for issue in w["flagged"]]
    assert len(pairs) == len(set(pairs)), "an (item, issue) was queued twice"
    for w in written:
        assert set(w["reasons"]) == set(w["flagged"]) and w["reasons"]
        assert w["snapshot"]["item_id"] == w["item_id"] and "n_view" in w["snapshot"]


async def test_posted_removal_is_scored_at_its_moderation_anchor(
    champion_v1, tmp_path, sim_tables, store_factory
):
    """POST /v1/moderation: the service's re-scorer scores each remove / restrict at its
    moderation anchor; each flagged one (the loaded champion is made to flag them all)
    reaches the review sink once, anchored at the action, and the live archive holds a
    "moderation" score row per action."""
    from features.online.archive import read_scores

    store = store_factory()
    bundle = champion_v1.bundles[champion_v1.versions[0]]
    if "wrongful_enforcement" in bundle.disabled:
        pytest.skip("the test champion has wrongful_enforcement disabled")
    app, sink = _app(champion_v1, tmp_path, store, archive_dir=tmp_path / "live")
    part = _first_items(sim_tables, 40)  # posted within 13 h: none expires meanwhile
    actions = part["moderation"]
    anchored = actions[actions["action"].isin(["remove", "restrict"])]
    assert len(anchored) >= 3
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        # the loaded champion judges every action wrongful: each must be queued, once
        app.state.service.holder.current.bundle.issues["wrongful_enforcement"].threshold = 0.0
        for table in ("creators", "items", "events", "moderation"):
            assert (await _post(client, table, part[table])).status_code == 200
        online = app.state.online
        for _ in range(100):
            if online.anchors_scored >= len(anchored):
                break
            await asyncio.sleep(0.1)
        assert online.anchors_scored == len(anchored)
        await asyncio.sleep(0.6)  # more passes: nothing is queued twice
    written = JsonlFlagSink.read(sink.path) if sink.path.exists() else []
    moderation = [w for w in written if w["anchor"] == "moderation"]
    keys = [(w["item_id"], w["as_of"]) for w in moderation]
    assert len(keys) == len(set(keys)), "an action was queued twice"
    for w in moderation:
        assert w["flagged"] == ["wrongful_enforcement"] and w["reasons"]["wrongful_enforcement"]
        assert w["snapshot"]["action"] in ("remove", "restrict")
    scores = read_scores(tmp_path / "live")
    rows = scores[scores["anchor"] == "moderation"]
    assert len(rows) == len(anchored) and rows["wrongful_enforcement"].notna().all()
    assert len(moderation) == len(anchored)
    assert rows["flagged"].str.contains("wrongful_enforcement").all()


async def test_rescoring_off_in_the_service_runs_in_another_process(
    champion_v1, tmp_path, sim_tables, store_factory
):
    """settings.online_rescore=False: the service only ingests and answers; `run_rescorer`
    (what `surfacer ingest --rescore` runs) re-scores, and its flags reach the review sink
    through the spool the service's flag writer drains, once per (item, issue)."""
    import threading

    from serving.online import run_rescorer

    store = store_factory()
    app, sink = _app(champion_v1, tmp_path, store, online_rescore=False)
    part = _first_items(sim_tables, 40)
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        await _post(client, "creators", part["creators"])
        await _post(client, "items", part["items"])
        assert (await _post(client, "events", part["events"])).status_code == 200
        await asyncio.sleep(0.8)  # a re-scoring worker would have ticked 4 times
        assert app.state.online.scored == 0
        assert not sink.path.exists() or not JsonlFlagSink.read(sink.path)

        settings = champion_v1.settings(
            tmp_path / "state", online_rescore_s=0.0, online_rescore=False
        )
        stop = threading.Event()
        queued: list[int] = []
        ready: list[str] = []
        statuses: list[str] = []
        thread = threading.Thread(
            target=lambda: queued.append(
                run_rescorer(
                    settings,
                    stop,
                    store=store,
                    on_ready=lambda m: ready.append(m.version),
                    on_status=statuses.append,
                    status_s=0.5,
                )
            )
        )
        thread.start()
        try:
            for _ in range(300):
                if statuses and sink.path.exists() and JsonlFlagSink.read(sink.path):
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 30)
        assert queued and queued[0] > 0, "the test model flags some of 40 items"
        assert ready == [champion_v1.versions[0]], "on_ready: once, with the loaded champion"
        # the status lines count what was scored and queued since the previous one
        parsed = [
            re.fullmatch(
                r"re-scorer: (\d+) items scored in [\d.]+ s \(\d+/s\), \d+ moderation actions, "
                r"(\d+) queued for "
                r"review, backlog (\d+) due items",
                line,
            )
            for line in statuses
        ]
        assert parsed and all(parsed), statuses
        assert sum(int(m[1]) for m in parsed) >= 40, "the 40 touched items were scored"
        assert sum(int(m[2]) for m in parsed) <= queued[0]
        for _ in range(200):  # the flag writer drains the re-scorer's spool segment
            if len(JsonlFlagSink.read(sink.path)) >= queued[0]:
                break
            await asyncio.sleep(0.05)
        assert app.state.online.scored == 0, "the service re-scored with online_rescore off"
    written = JsonlFlagSink.read(sink.path)
    assert len(written) == queued[0]
    pairs = [(w["item_id"], issue) for w in written for issue in w["flagged"]]
    assert len(pairs) == len(set(pairs)), "an (item, issue) was queued twice"


@pytest.mark.redis
async def test_redis_unavailable_is_not_ready_and_recovers(champion_v1, tmp_path):
    redis_or_skip()
    from tests.support.faults import TcpProxy

    proxy = TcpProxy(("127.0.0.1", 6379)).start()
    store = open_store(
        f"redis://127.0.0.1:{proxy.port}/0", OnlineConfig(), prefix=f"w17test:{uuid.uuid4().hex}:"
    )
    app, _ = _app(champion_v1, tmp_path, store)
    try:
        async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
            assert (await client.get("/readyz")).status_code in (200,)
            proxy.cut()
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert any("online store Redis" in p for p in r.json()["problems"])
            r = await client.post("/v1/events", json={"rows": []})
            assert r.status_code in (200, 503)  # an empty batch may not need Redis
            r = await client.get("/v1/items/x/score")
            assert r.status_code == 503 and "unavailable" in r.text
            proxy.restore()
            for _ in range(50):
                r = await client.get("/readyz")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200, r.text
    finally:
        proxy.close()
        store.close()
    assert REDIS_URL


@pytest.mark.redis
async def test_service_consumes_the_stream_itself(champion_v1, tmp_path, sim_tables):
    """With SURFACER_ONLINE_CONSUME the service runs the consumer in its lifespan."""
    redis_or_skip()
    import redis

    from serving.stream import publish

    tag = uuid.uuid4().hex[:10]
    stream = f"w17test:{tag}:stream"
    store = open_store(REDIS_URL, OnlineConfig(), prefix=f"w17test:{tag}:")
    client = redis.Redis.from_url(REDIS_URL)
    part = _first_items(sim_tables, 5)
    app, _ = _app(
        champion_v1, tmp_path, store, online_consume=f"{REDIS_URL}?stream={stream}&group=svc"
    )
    try:
        async with running(app, headers={"X-API-Key": INGEST_KEY}) as http:
            publish(client, stream, "items", {"columns": json_columns(part["items"])})
            publish(client, stream, "events", {"columns": json_columns(part["events"])})
            item = part["items"]["item_id"].iloc[0]
            want = int(
                ((part["events"]["item_id"] == item) & (part["events"]["kind"] == "view")).sum()
            )
            body = {}
            for _ in range(100):
                r = await http.get(f"/v1/items/{item}/score")
                body = r.json() if r.status_code == 200 else {}
                if body.get("snapshot", {}).get("n_view") == want:
                    break
                await asyncio.sleep(0.1)
            assert body["snapshot"]["n_view"] == want
    finally:
        store.clear()
        store.close()
        client.delete(stream, f"{stream}:dead")
        client.close()


async def test_future_event_time_rejected_and_windows_untouched(
    champion_v1, tmp_path, sim_tables, store_factory
):
    """Rows dated beyond the clock-skew bound: 422 naming table, column and rows; nothing of
    the batch applied, the store clock (which every window and expiry reads) not moved."""
    store = store_factory(OnlineConfig(max_future_s=300))
    app, _ = _app(champion_v1, tmp_path, store)
    part = _first_items(sim_tables, 3)
    item = part["items"]["item_id"].iloc[0]
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        assert (await _post(client, "items", part["items"])).status_code == 200
        clock = store.clock_ns()
        rows = json_rows(part["events"][part["events"]["item_id"] == item].head(4))
        ahead = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=2)
        rows[2] = dict(rows[2], ts=ahead.isoformat())
        r = await client.post("/v1/events", json={"rows": rows})
        assert r.status_code == 422, r.text
        (problem,) = r.json()["detail"]
        assert problem["loc"] == ["body", "events", "ts", "rows", 2]
        assert "ahead of the service clock" in problem["msg"]
        assert "SURFACER_ONLINE_MAX_FUTURE_S" in problem["msg"]
        assert store.clock_ns() == clock
        snap = store.snapshot(item)
        assert snap["n_view"] + snap["n_like"] + snap["n_comment"] == 0
        # the same rows with the bad one dropped are applied, windows from the real clock
        r = await client.post("/v1/events", json={"rows": rows[:2] + rows[3:]})
        assert r.status_code == 200, r.text
        assert store.clock_ns() < ahead.value


async def test_score_by_id_checks_the_id_length(champion_v1: Registry, tmp_path):
    """The path's item id is checked by hand (not as a FastAPI parameter): too long is a 422
    naming it, before authentication as before; the OpenAPI document still declares it."""
    from serving.limits import ITEM_ID_MAX

    app, _ = _app(champion_v1, tmp_path, open_store("memory"))
    async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
        r = await client.get(f"/v1/items/{'x' * (ITEM_ID_MAX + 1)}/score")
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["path", "item_id"]
        r = await client.get(
            f"/v1/items/{'x' * (ITEM_ID_MAX + 1)}/score", headers={"X-API-Key": ""}
        )
        assert r.status_code == 422
        r = await client.get(f"/v1/items/{'x' * ITEM_ID_MAX}/score")
        assert r.status_code == 404  # allowed, unknown
        assert (await client.get("/v1/items/x/score", headers={"X-API-Key": ""})).status_code == 401
        op = (await client.get("/openapi.json")).json()["paths"]["/v1/items/{item_id}/score"]
        (param,) = op["get"]["parameters"]
        assert param["in"] == "path" and param["schema"]["maxLength"] == ITEM_ID_MAX


async def test_direct_route_answers_as_the_router_does(
    champion_v1: Registry, tmp_path, sim_tables, monkeypatch
):
    """GET score is served before FastAPI's router (serving.direct): every answer (a score,
    unknown item, too long an id, no key, a key without the score scope, an unexpected
    error, a HEAD and a POST on the path) equals the routed app's, request id aside."""
    from serving.direct import DirectRoute
    from tests.support.serving import REVIEW_KEY

    store = open_store("memory")
    direct, _ = _app(champion_v1, tmp_path / "direct", store)
    routed, _ = _app(champion_v1, tmp_path / "routed", store)
    assert any(m.cls is DirectRoute for m in direct.user_middleware)
    routed.user_middleware = [m for m in routed.user_middleware if m.cls is not DirectRoute]
    part = _first_items(sim_tables, 3)
    item = part["items"]["item_id"].iloc[0]
    asks = [
        ("GET", f"/v1/items/{item}/score", INGEST_KEY),
        ("GET", "/v1/items/nope/score", INGEST_KEY),
        ("GET", f"/v1/items/{'x' * 300}/score", INGEST_KEY),
        ("GET", f"/v1/items/{item}/score", ""),
        ("GET", f"/v1/items/{item}/score", REVIEW_KEY),
        ("HEAD", f"/v1/items/{item}/score", INGEST_KEY),
        ("POST", f"/v1/items/{item}/score", INGEST_KEY),
    ]
    answers: dict[str, list] = {}
    for name, app in (("direct", direct), ("routed", routed)):
        async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
            if name == "direct":
                for table in ("creators", "items", "events"):
                    assert (await _post(client, table, part[table])).status_code == 200
            got = []
            for method, path, key in asks:
                r = await client.request(method, path, headers={"X-API-Key": key})
                body = r.json() if r.content else None
                if isinstance(body, dict):
                    body.pop("request_id", None)
                headers = {k: v for k, v in r.headers.items() if k != "x-request-id"}
                got.append((r.status_code, body, headers))

            async def broken(item_id: str):
                raise RuntimeError("boom")

            with monkeypatch.context() as m:
                m.setattr(store, "snapshot_async", broken)
                r = await client.get(f"/v1/items/{item}/score")
                got.append((r.status_code, r.json()["detail"]))
            answers[name] = got
    statuses = [a[0] for a in answers["direct"]]
    assert statuses == [200, 404, 422, 401, 403, 405, 405, 500]
    assert answers["direct"] == answers["routed"]


def _counter(text: str, family: str) -> dict[str, float]:
    """label value -> value of a one-label counter in a /metrics answer."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            for s in fam.samples:
                if s.name == f"{family}_total":
                    (value,) = s.labels.values()
                    out[value] = s.value
    return out


async def test_metrics_count_ingest_outcomes_and_expired_rows(
    champion_v1, tmp_path, sim_tables, store_factory
):
    """/metrics tells an operator what ingestion did: batches applied, re-sent, rejected, and
    rows dropped because their item had expired (not scored live)."""
    store = store_factory(OnlineConfig(horizon_h=1.0, late_s=0.0))
    app, _ = _app(champion_v1, tmp_path, store)
    a, b = sim_tables["items"].iloc[0].copy(), sim_tables["items"].iloc[1].copy()
    b["created_at"] = a["created_at"] + pd.Timedelta(hours=1.5)
    items = pd.DataFrame([a, b])
    view = sim_tables["events"].iloc[[0]].assign(kind="view", watch_frac=0.5, reason=None)
    view = view.assign(text=None, user_id="u1")

    def event(item: pd.Series, after_h: float) -> pd.DataFrame:
        return view.assign(
            item_id=item["item_id"], ts=item["created_at"] + pd.Timedelta(hours=after_h)
        )

    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        assert (await _post(client, "items", items.iloc[[0]])).status_code == 200
        early = pd.concat([event(a, 0.1), event(a, 0.2)])
        first = (await _post(client, "events", early, batch_id="e-1")).json()
        assert first["rows"] == 2 and first["expired"] == 0, first
        assert (await _post(client, "events", early, batch_id="e-1")).json()["duplicate"]
        bad = json_rows(early)
        bad[0] = dict(bad[0], kind="viewz")
        assert (await client.post("/v1/events", json={"rows": bad})).status_code == 422
        # b, posted 1.5 h after a, moves the store clock past a's last horizon: a expires.
        assert (await _post(client, "items", items.iloc[[1]])).json()["expired"] == 0
        assert (await _post(client, "events", event(b, 0.1))).json()["expired"] == 0
        late = (await _post(client, "events", event(a, 0.3))).json()
        assert late["rows"] == 1 and late["expired"] == 1, late
        text = (await client.get("/metrics", headers={"X-API-Key": ADMIN_KEY})).text
    batches = _counter(text, "surfacer_ingest_batches")
    assert batches == {"applied": 5, "duplicate": 1, "rejected": 1, "unavailable": 0}, batches
    rows = _counter(text, "surfacer_ingest_rows")
    assert rows == {"applied": 1 + 2 + 1 + 1, "expired": 1}, rows


async def test_null_rows_or_columns_is_a_422(champion_v1, tmp_path):
    """`{"rows": null}` and `{"columns": null}` are neither body shape: a 422 naming the
    field (they reached `columns.values()` and answered 500)."""
    app, _ = _app(champion_v1, tmp_path, open_store("memory"))
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        for field, kind in (("rows", "list_type"), ("columns", "dict_type")):
            r = await client.post("/v1/events", json={field: None})
            assert r.status_code == 422, r.text
            (problem,) = r.json()["detail"]
            assert problem["loc"] == ["body", field] and problem["type"] == kind


async def test_an_empty_or_non_string_batch_id_is_refused(
    champion_v1, tmp_path, sim_tables, store_factory
):
    """A batch id the client sent is never read as no id (which applies a re-sent batch
    twice): "", 0 and false are 422 with nothing applied, as is a body id that disagrees
    with the Idempotency-Key header; null means no id."""
    store = store_factory()
    app, _ = _app(champion_v1, tmp_path, store)
    part = _first_items(sim_tables, 2)
    item = part["items"]["item_id"].iloc[0]
    events = part["events"][part["events"]["item_id"] == item]
    cols = json_columns(events)
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        assert (await _post(client, "items", part["items"])).status_code == 200
        for bad in ("", 0, False):
            r = await client.post("/v1/events", json={"columns": cols, "batch_id": bad})
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["detail"][0]["loc"][-1] == "batch_id"
        r = await client.post(
            "/v1/events",
            json={"columns": cols, "batch_id": "b-1"},
            headers={"Idempotency-Key": "b-2"},
        )
        assert r.status_code == 422 and "Idempotency-Key" in r.text
        assert store.snapshot(item)["n_view"] == 0  # nothing applied
        r = await client.post(
            "/v1/events", json={"columns": cols, "batch_id": None}, headers={"Idempotency-Key": "k"}
        )
        assert r.status_code == 200 and r.json()["duplicate"] is False
        again = await client.post("/v1/events", json={"columns": cols, "batch_id": "k"})
        assert again.json()["duplicate"] is True
    assert store.snapshot(item)["n_view"] == int((events["kind"] == "view").sum())


async def test_ids_and_times_the_service_cannot_hold_reject_the_batch(
    champion_v1, tmp_path, sim_tables, store_factory
):
    """An item id longer than the scoring API and review store take, or holding NUL (which
    PostgreSQL cannot), is a 422 naming table, column and row, as is a time outside the
    store clock's nanosecond span (it raised OutOfBoundsDatetime: a 500); nothing of the
    batch is applied."""
    from serving.limits import ITEM_ID_MAX

    store = store_factory()
    app, _ = _app(champion_v1, tmp_path, store)
    part = _first_items(sim_tables, 3)
    good = json_rows(part["items"])
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        for column, value, words in (
            ("item_id", "x" * (ITEM_ID_MAX + 1), f"longer than {ITEM_ID_MAX}"),
            ("item_id", "it\x00nul", "NUL"),
            ("created_at", "0001-01-01T00:00:00Z", "span the online store can hold"),
            ("created_at", "1600-01-01T00:00:00+00:00", "span the online store can hold"),
        ):
            rows = [*good[:2], dict(good[2], **{column: value})]
            r = await client.post("/v1/items", json={"rows": rows})
            assert r.status_code == 422, (column, value, r.text)
            (problem,) = r.json()["detail"]
            assert problem["loc"] == ["body", "items", column, "rows", 2]
            assert words in problem["msg"]
        assert all(store.snapshot(row["item_id"]) is None for row in good)
        r = await client.post(
            "/v1/items", json={"rows": [dict(good[0], item_id="x" * ITEM_ID_MAX)]}
        )
        assert r.status_code == 200, r.text
    assert store.snapshot("x" * ITEM_ID_MAX) is not None


async def test_score_by_id_reaches_ids_with_slashes(champion_v1, tmp_path, sim_tables):
    """Ids may hold "/" (the contract, the score API and the review store take them): GET
    score with the id percent-encoded answers for it. The route's parameter did not match
    "/", so such an item was ingested but its GET was a 404 "Not Found" from routing."""
    from urllib.parse import quote

    store = open_store("memory")
    app, _ = _app(champion_v1, tmp_path, store)
    row = json_rows(_first_items(sim_tables, 1)["items"])[0]
    ids = ["a/b", "/lead", "trail/", "a/score", "plain"]
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        r = await client.post("/v1/items", json={"rows": [dict(row, item_id=i) for i in ids]})
        assert r.status_code == 200, r.text
        for i in ids:
            r = await client.get(f"/v1/items/{quote(i, safe='')}/score")
            assert r.status_code == 200, (i, r.text)
            assert r.json()["item_id"] == i
        r = await client.get("/v1/items//score")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "item_id"]
        assert (await client.get("/v1/items/a/b/score/x")).status_code == 404
        metrics = (await client.get("/metrics", headers={"X-API-Key": ADMIN_KEY})).text
        assert 'route="/v1/items/{item_id}/score"' in metrics  # the label as before


async def test_in_process_store_under_several_workers_turns_the_online_path_off(
    champion_v1: Registry, tmp_path, sim_tables, monkeypatch
) -> None:
    """Each worker of `surfacer serve --workers N` would hold its own in-process store: an
    item's rows would split between them, and GET score answer 404 or a partial snapshot by
    worker. So the online routes say why they are off (503) instead; scoring still works."""
    from serving.online import ENV_WORKERS

    monkeypatch.setenv(ENV_WORKERS, "2")
    app, _ = _app(champion_v1, tmp_path, None)  # the store from settings: in-process
    part = _first_items(sim_tables, 2)
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        r = await _post(client, "items", part["items"])
        assert r.status_code == 503 and "SURFACER_ONLINE_STORE=redis://" in r.text, r.text
        item = part["items"]["item_id"].iloc[0]
        r = await client.get(f"/v1/items/{item}/score", headers={"X-API-Key": SCORE_KEY})
        assert r.status_code == 503 and "2 workers" in r.text, r.text
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text  # degraded, not out of service
        assert any("in-process" in p for p in ready.json()["problems"]), ready.text
    monkeypatch.setenv(ENV_WORKERS, "1")
    app, _ = _app(champion_v1, tmp_path / "one", None)
    async with running(app, headers={"X-API-Key": INGEST_KEY}) as client:
        r = await _post(client, "items", part["items"])
        assert r.status_code == 200, r.text
