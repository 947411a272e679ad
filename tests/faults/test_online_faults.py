"""Faults on the live path's own servers: a Redis of the test's own killed and started
again empty under a running stream consumer, and a consumer started against a stream
server that is not there. Never the machine's shared Redis or NATS."""

from __future__ import annotations

import asyncio
import threading
import time

import pandas as pd
import pytest

from features.online import OnlineConfig, open_store
from features.online.ingest import ingest_many
from serving.stream import (
    NatsSource,
    StreamConsumer,
    StreamSource,
    StreamUnavailable,
    consume_nats,
    publish,
)
from tests.online.conftest import sim_tables  # noqa: F401  (the fixture)
from tests.online.test_stream import _counts, _expected_views, _messages
from tests.support.faults import OwnRedis
from tests.support.serving import free_port


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)


def test_stream_consumer_survives_its_redis_restarting_empty(sim_tables) -> None:  # noqa: F811
    """Redis (stream and store) SIGKILLed under `StreamConsumer.run` and started again
    without its data: the consumer group is gone with it. The consumer waits while Redis
    is down, then creates the group again and applies what is published after the restart,
    each event once. It used to die on XREADGROUP's NOGROUP error, leaving everything
    published after the restart unread."""
    own = OwnRedis.or_skip()
    import redis

    items, _, messages = _messages(sim_tables, 20, 20)
    half = len(messages) // 2
    client = redis.Redis.from_url(own.url)
    store = open_store(own.url, OnlineConfig(), prefix="t:")
    source = StreamSource(own.url, "t:stream", "g", "c1")
    consumer = StreamConsumer(
        source, lambda m: ingest_many(store, m), count=8, block_ms=100, claim_idle_ms=100
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run(stop)
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    try:
        for table, body in messages[:half]:
            publish(client, source.stream, table, body)
        thread.start()

        def lag() -> int | None:
            try:
                g = client.xinfo_groups(source.stream)
            except (redis.ResponseError, redis.ConnectionError):
                return None
            return g[0]["lag"] + g[0]["pending"] if g else None

        _wait(lambda: lag() == 0 or errors, 60, "the first half applied")
        own.kill()
        time.sleep(1.5)  # the consumer meets the outage and waits
        own.start()
        client = redis.Redis.from_url(own.url)
        # the store lost everything with Redis: the items again, then the second half
        rest = [messages[0], *messages[half:]]
        for table, body in rest:
            publish(client, source.stream, table, body)
        _wait(lambda: lag() == 0 or errors or not thread.is_alive(), 60, "the rest applied")
        assert not errors, f"the consumer died: {errors[0]!r}"
        assert thread.is_alive()
        second = pd.concat(
            [pd.DataFrame(body["columns"]) for table, body in messages[half:] if table == "events"]
        )
        assert _counts(store, items) == _expected_views(second)
    finally:
        stop.set()
        thread.join(30)
        consumer.close()
        store.close()
        client.close()
        own.close()


def test_stream_consumer_says_when_its_redis_is_not_there() -> None:
    """A consumer started against a stream Redis nobody listens on fails at once, naming
    it, rather than a redis-py traceback (`surfacer ingest` prints it as `error:`)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    consumer = StreamConsumer(StreamSource(url, "s", "g", "c"), lambda m: [])
    with pytest.raises(StreamUnavailable, match=r"stream Redis at 127\.0\.0\.1:\d+/0 unavailable"):
        consumer.run(threading.Event())
    consumer.close()


def test_nats_consumer_gives_up_on_a_server_that_is_not_there() -> None:
    """`consume_nats` against a port nobody listens on: StreamUnavailable naming the server
    within seconds. The first connect used to retry for ever (max_reconnect_attempts=-1),
    so `surfacer ingest --from nats://...` hung, deaf to SIGTERM."""
    pytest.importorskip("nats")
    source = NatsSource.parse(f"nats://127.0.0.1:{free_port()}?stream=S&subject=s.x")

    async def go() -> None:
        await asyncio.wait_for(consume_nats(source, lambda b, i: None, threading.Event()), 30)

    t0 = time.monotonic()
    with pytest.raises(StreamUnavailable, match=r"NATS at nats://127\.0\.0\.1:\d+ unavailable"):
        asyncio.run(go())
    assert time.monotonic() - t0 < 20


def test_service_consumer_says_it_stopped_and_starts_again(
    champion,
    tmp_path,
    sim_tables,  # noqa: F811
    monkeypatch,
) -> None:
    """`SURFACER_ONLINE_CONSUME` naming a stream Redis that is down when the service starts:
    /readyz names the stopped consumer (degraded) and the consumer starts again once Redis
    is up, applying what was published. The lifespan's consumer task used to end on the
    first error without a word: /readyz stayed ready and nothing was consumed again."""
    import redis

    import serving.stream
    from features.online.ingest import json_columns
    from serving.app import create_app
    from serving.flag_writer import JsonlFlagSink
    from tests.online.test_api import _first_items
    from tests.support.serving import INGEST_KEY, running

    monkeypatch.setattr(serving.stream, "CONSUMER_RESTART_S", 0.2, raising=False)
    own = OwnRedis(free_port())  # not started yet: the service meets it down
    url = f"{own.url}?stream=svc&group=svc"
    settings = champion.settings(tmp_path / "state", online_rescore_s=0.0, online_consume=url)
    store = open_store("memory", OnlineConfig())
    app = create_app(
        settings,
        flag_sink=JsonlFlagSink(tmp_path / "flags.jsonl"),
        flag_flush_interval_s=0.05,
        online_store=store,
    )
    part = _first_items(sim_tables, 3)
    item = part["items"]["item_id"].iloc[0]
    ev = part["events"]
    want = int(((ev["item_id"] == item) & (ev["kind"] == "view")).sum())

    async def consumer_problems(http) -> list[str]:
        body = (await http.get("/readyz")).json()
        return [p for p in body["problems"] if "online consumer" in p]

    async def go() -> None:
        async with running(app, headers={"X-API-Key": INGEST_KEY}) as http:
            for _ in range(100):
                if problems := await consumer_problems(http):
                    break
                await asyncio.sleep(0.1)
            assert problems, "/readyz does not say the consumer stopped"
            assert f"127.0.0.1:{own.port}" in problems[0]
            own.start()
            client = redis.Redis.from_url(own.url)
            try:
                publish(client, "svc", "items", {"columns": json_columns(part["items"])})
                publish(client, "svc", "events", {"columns": json_columns(ev)})
            finally:
                client.close()
            seen = None
            for _ in range(200):
                r = await http.get(f"/v1/items/{item}/score")
                seen = r.json()["snapshot"]["n_view"] if r.status_code == 200 else None
                if seen == want:
                    break
                await asyncio.sleep(0.1)
            assert seen == want, "the consumer did not start again"
            assert await consumer_problems(http) == []

    try:
        asyncio.run(go())
    finally:
        own.close()


def test_http_ingest_refuses_batches_the_archive_cannot_take(
    champion,
    tmp_path,
    sim_tables,  # noqa: F811
) -> None:
    """The live archive's folder is a file: the first batch is answered (its write has not
    been tried yet), then the failed write shows in /readyz and later batches get 503 with
    Retry-After, nothing of them applied; once the folder can be made, the held rows and
    the re-sent batch are archived. Batches used to be answered 200 on and on while their
    rows piled up in memory, and /readyz said ready."""
    from features.online.ingest import json_columns
    from serving.app import create_app
    from serving.flag_writer import JsonlFlagSink
    from tests.support.serving import INGEST_KEY, running

    root = tmp_path / "archive"
    root.write_text("in the way")
    settings = champion.settings(
        tmp_path / "state", online_rescore_s=0.0, archive_dir=root, archive_flush_s=0.05
    )
    store = open_store("memory", OnlineConfig())
    app = create_app(
        settings, flag_sink=JsonlFlagSink(tmp_path / "flags.jsonl"), online_store=store
    )
    items = sim_tables["items"].head(4)
    first, second = items.iloc[:2], items.iloc[2:]

    async def go() -> None:
        async with running(app, headers={"X-API-Key": INGEST_KEY}) as http:
            r = await http.post("/v1/items", json={"columns": json_columns(first), "batch_id": "a"})
            assert r.status_code == 200, r.text
            problems: list[str] = []
            for _ in range(100):
                problems = [
                    p for p in (await http.get("/readyz")).json()["problems"] if "live archive" in p
                ]
                if problems:
                    break
                await asyncio.sleep(0.05)
            assert problems, "/readyz does not say the archive cannot be written"
            body = {"columns": json_columns(second), "batch_id": "b"}
            r = await http.post("/v1/items", json=body)
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert "live archive" in r.json()["detail"]
            assert all(store.snapshot(i) is None for i in second["item_id"])
            root.unlink()  # the operator fixes the folder
            for _ in range(100):
                r = await http.post("/v1/items", json=body)
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 200, r.text

    asyncio.run(go())  # the lifespan's end writes what the archive holds
    archived = pd.concat(pd.read_parquet(p) for p in sorted((root / "items").glob("part-*")))
    assert sorted(archived["item_id"]) == sorted(items["item_id"])


def test_nats_restarted_without_its_store_loses_nothing(sim_tables, tmp_path) -> None:  # noqa: F811
    """A NATS of the test's own, SIGKILLed under `consume_nats` and started again without
    its JetStream store (the stream, its sequence and the durable consumer are gone): the
    consumer creates its durable again and applies what is published after the restart.
    It used to fetch from the gone consumer for ever, applying nothing and saying nothing;
    and the new messages, numbered from 1 again, took the batch ids of the first ones
    (``<stream>/<seq>``) and were dropped as re-sent."""
    import shutil
    import subprocess

    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed")
    import nats
    import orjson

    from features.online.ingest import ingest, json_columns

    port = free_port()
    store_dir = tmp_path / "js"

    def start() -> subprocess.Popen:
        cmd = ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store_dir)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    items, events, _ = _messages(sim_tables, 6, 1000)
    views = events[events["kind"] == "view"]
    first, second = views.iloc[: len(views) // 2], views.iloc[len(views) // 2 :]
    source = NatsSource.parse(f"nats://127.0.0.1:{port}?stream=T&subject=t.ev&durable=d")
    store = open_store("memory", OnlineConfig())

    async def publish_all(tables: list[tuple[str, pd.DataFrame]]) -> None:
        for _ in range(100):
            try:
                nc = await nats.connect(source.server, max_reconnect_attempts=0)
                break
            except Exception:
                await asyncio.sleep(0.1)
        js = nc.jetstream()
        try:
            await js.stream_info("T")
        except Exception:
            await js.add_stream(name="T", subjects=["t.ev"])
        for table, frame in tables:
            body = {"table": table, "columns": json_columns(frame)}
            await js.publish("t.ev", orjson.dumps(body))
        await nc.close()

    def views_seen() -> int:
        snaps = store.snapshots(items["item_id"].tolist())
        return sum(s["n_view"] for s in snaps if s is not None)

    async def wait(n: int, task: asyncio.Task) -> None:
        for _ in range(300):
            if views_seen() == n or task.done():
                break
            await asyncio.sleep(0.1)

    async def go() -> None:
        server = start()
        stop = threading.Event()
        try:
            await publish_all([("items", items), ("events", first)])
            task = asyncio.create_task(
                consume_nats(source, lambda b, i: ingest(store, b, i), stop, consumer_check_s=1.0)
            )
            await wait(len(first), task)
            assert views_seen() == len(first)
            server.kill()
            server.wait(10)
            shutil.rmtree(store_dir)
            server = start()
            await publish_all([("items", items), ("events", second)])
            await wait(len(first) + len(second), task)
            assert not task.done(), task.exception()
            assert views_seen() == len(first) + len(second)
            stop.set()
            await asyncio.wait_for(task, 30)
        finally:
            stop.set()
            server.kill()
            server.wait(10)

    asyncio.run(go())
