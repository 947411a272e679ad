"""Benchmark: the online path on Redis, one run, side by side.

Simulates a small world, trains and registers a champion in a temporary MLflow store,
starts `surfacer serve --workers 1` with the Redis online store (a unique key prefix), and
measures:

- ingest events/s into the Redis store: store-level batches, over HTTP (POST /v1/events),
  from a Redis stream (consumer group), against a naive baseline of one Redis round trip per
  event (a single HINCRBY, the cheapest possible per-event write), with the ratios;
- freshness: from a batch's acceptance (HTTP 200, or XADD for the stream) to a GET score
  whose snapshot reflects it, p50/p99, while a background HTTP ingest load runs;
- GET /v1/items/{id}/score latency at a fixed open-loop rate (default 500 req/s) while
  ingesting, measured from each request's scheduled send time;
- Redis memory per live item (MEMORY USAGE of an item's keys, and used_memory / items);
- expiry: live items before and after the store clock passes their last horizon.

Loopback only, every loop bounded by count or time; keys are deleted at the end.

    uv run python bench/online.py [--items 2000] [--events 100000] [--rate 500] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)

from bench.serve import HOST, _free_port, _server  # noqa: E402

API_KEY = "bench-online-" + "k" * 20
MODEL_NAME = "surfacer-online-bench"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def _world(items: int, days: int, work: Path) -> tuple[dict[str, Any], Path]:
    from features.io import write_dataset
    from simulator.config import SimConfig
    from simulator.core import simulate

    sim = simulate(SimConfig(n_items=items, days=days, seed=5))
    data = work / "data"
    write_dataset(sim.tables, data)
    return sim.tables, data


def _train(data: Path, state: Path) -> Any:
    from mlflow.tracking import MlflowClient

    from common.settings import Settings
    from training.pipeline import train

    settings = Settings(data_dir=state, model_name=MODEL_NAME)
    result = train(data, settings=settings, random_state=0, progress=False)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    client.set_registered_model_alias(MODEL_NAME, "champion", result.model_version)
    return settings


def _event_load(tables: dict[str, Any], n: int) -> Any:
    """n events of the world's items (repeated with shifted users if the world has fewer),
    kept within the items' first 20 hours so none has expired."""
    import pandas as pd

    items = tables["items"]
    ev = tables["events"].merge(items[["item_id", "created_at"]], on="item_id")
    ev = ev[ev["ts"] < ev["created_at"] + pd.Timedelta(hours=20)].drop(columns="created_at")
    reps = max(1, math.ceil(n / max(len(ev), 1)))
    parts = []
    for r in range(reps):
        part = ev.copy()
        if r:
            part["user_id"] = part["user_id"] + f"-r{r}"
        parts.append(part)
    return pd.concat(parts, ignore_index=True).head(n).sort_values("ts", kind="stable")


def _store_ingest(store: Any, events: Any, batch: int) -> float:
    from features.online.errors import Batch
    from features.online.ingest import ingest, json_columns

    bodies = [json_columns(events.iloc[i : i + batch]) for i in range(0, len(events), batch)]
    start = time.perf_counter()
    for k, cols in enumerate(bodies):
        ingest(store, [Batch("events", columns=cols)], f"store-{uuid.uuid4().hex}-{k}")
    return len(events) / (time.perf_counter() - start)


def _naive(client: Any, prefix: str, events: Any, n: int) -> float:
    ids = events["item_id"].head(n).tolist()
    kinds = events["kind"].head(n).tolist()
    start = time.perf_counter()
    for item, kind in zip(ids, kinds, strict=True):
        client.hincrby(f"{prefix}naive:{item}", f"n:{kind}", 1)
    return n / (time.perf_counter() - start)


def _http_ingest(base: str, events: Any, batch: int, threads: int) -> float:
    import httpx
    import orjson

    from features.online.ingest import json_columns

    bodies = [
        orjson.dumps(
            {"columns": json_columns(events.iloc[i : i + batch]), "batch_id": uuid.uuid4().hex}
        )
        for i in range(0, len(events), batch)
    ]
    errors: list[str] = []

    def worker(mine: list[bytes]) -> None:
        with httpx.Client(
            base_url=base,
            headers={"X-API-Key": API_KEY, "content-type": "application/json"},
            timeout=60,
        ) as c:
            for body in mine:
                r = c.post("/v1/events", content=body)
                if r.status_code != 200:
                    errors.append(r.text[:200])

    start = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(bodies[k::threads],)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError(f"HTTP ingest errors: {errors[:3]}")
    return len(events) / (time.perf_counter() - start)


def _stream_ingest(redis_url: str, store: Any, events: Any, batch: int, tag: str) -> float:
    import redis

    from features.online.ingest import ingest, json_columns
    from serving.stream import StreamConsumer, StreamSource, publish

    client = redis.Redis.from_url(redis_url)
    stream = f"bench-online:{tag}:stream"
    for i in range(0, len(events), batch):
        publish(client, stream, "events", {"columns": json_columns(events.iloc[i : i + batch])})
    consumer = StreamConsumer(
        StreamSource.parse(f"{redis_url}?stream={stream}&group=bench"),
        lambda b, bid: ingest(store, b, bid),
        count=8,
    )
    start = time.perf_counter()
    stats = consumer.run(until_idle=True)
    rate = stats.rows / (time.perf_counter() - start)
    consumer.close()
    client.delete(stream)
    client.close()
    return rate


def _background(base: str, bodies: list[bytes], stop: Any, sent: Any) -> None:
    """Post event batches round-robin until stopped (a separate process: the load client
    must not share the measuring process's GIL)."""
    import httpx

    headers = {"X-API-Key": API_KEY, "content-type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        k = 0
        while not stop.is_set():
            r = c.post("/v1/events", content=bodies[k % len(bodies)])
            if r.status_code == 200:
                with sent.get_lock():
                    sent.value += int(r.json()["rows"])
            k += 1


def _freshness(base: str, item: str, template: dict[str, Any], n: int) -> list[float]:
    """Seconds from a probe event's acceptance to a GET score whose snapshot counts it."""
    import httpx

    out = []
    with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=10) as c:
        for _ in range(n):
            before = c.get(f"/v1/items/{item}/score").json()["snapshot"]["n_report"]
            r = c.post("/v1/events", json={"rows": [template]})
            accepted = time.perf_counter()
            assert r.status_code == 200, r.text
            for _ in range(1000):
                snap = c.get(f"/v1/items/{item}/score").json()["snapshot"]
                if snap["n_report"] > before:
                    break
            out.append(time.perf_counter() - accepted)
    return out


async def _open_loop(base: str, items: list[str], rate: float, duration: float) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors = 0
    n = int(rate * duration)
    async with httpx.AsyncClient(
        base_url=base,
        headers={"X-API-Key": API_KEY},
        timeout=httpx.Timeout(10, pool=None),
        limits=httpx.Limits(max_connections=32),
    ) as c:
        start = time.perf_counter()

        async def one(k: int) -> None:
            nonlocal errors
            scheduled = start + k / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                r = await c.get(f"/v1/items/{items[k % len(items)]}/score")
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if not ok:
                errors += 1
            lat.append(time.perf_counter() - scheduled)

        tasks = [asyncio.ensure_future(one(k)) for k in range(n)]
        # Bounded: requests not answered 10 s after the last send count as errors.
        _, late = await asyncio.wait(tasks, timeout=duration + 10)
        for t in late:
            t.cancel()
        errors += len(late)
    return {"n": n, "errors": errors, "p50_ms": _pct(lat, 50) * 1e3, "p99_ms": _pct(lat, 99) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--naive-events", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2, help="HTTP ingest client threads")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="surfacer-bench-online-") as tmp:
        _bench(args, Path(tmp))


def _bench(args: argparse.Namespace, work: Path) -> None:
    import orjson
    import redis

    from features.online import OnlineConfig, open_store
    from features.online.errors import Batch
    from features.online.ingest import ingest, json_columns

    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-online:{tag}:"
    print(f"world: {args.items} items, {args.days} days; training the champion ...", flush=True)
    tables, data = _world(args.items, args.days, work)
    settings = _train(data, work / "state")
    events = _event_load(tables, args.events)
    client = redis.Redis.from_url(args.redis)
    # Every item stays live while the bench runs (its world spans days); expiry is shown at
    # the end by moving the clock past this horizon.
    horizon_h = 24.0 * (args.days + 2)
    store = open_store(args.redis, OnlineConfig(horizon_h=horizon_h), prefix=prefix)
    results: dict[str, Any] = {}
    try:
        # items and creators first (the stores need them to read snapshots)
        ingest(store, [Batch("creators", columns=json_columns(tables["creators"]))], None)
        ingest(store, [Batch("items", columns=json_columns(tables["items"]))], None)
        print("phase: store batches", flush=True)
        results["store_ev_s"] = _store_ingest(store, events, args.batch)
        print("phase: naive", flush=True)
        results["naive_ev_s"] = _naive(client, prefix, events, min(args.naive_events, len(events)))
        print("phase: stream", flush=True)
        results["stream_ev_s"] = _stream_ingest(args.redis, store, events, args.batch, tag)

        port = _free_port()
        env = {
            **os.environ,
            "SURFACER_DATA_DIR": str(work / "state"),
            "SURFACER_MLFLOW_TRACKING_URI": settings.tracking_uri,
            "SURFACER_MODEL_NAME": MODEL_NAME,
            "SURFACER_API_KEYS": json.dumps({API_KEY: ["ingest", "score", "admin"]}),
            "SURFACER_RELOAD_INTERVAL_S": "0",
            "SURFACER_ONLINE_STORE": args.redis,
            "SURFACER_ONLINE_PREFIX": prefix,
            "SURFACER_ONLINE_HORIZON_H": str(horizon_h),
        }
        cmd = [
            sys.executable,
            "-m",
            "surfacer",
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--flags-jsonl",
            str(work / "flags.jsonl"),
            "--log-level",
            "warning",
        ]
        base = f"http://{HOST}:{port}"
        with _server(cmd, env, port, "/readyz", work / "serve.log", 180):
            print("phase: HTTP", flush=True)
            results["http_ev_s"] = _http_ingest(base, events, args.batch, args.threads)
            # background ingest (its own process) while freshness and GET latency are measured
            ctx = multiprocessing.get_context("spawn")
            stop = ctx.Event()
            sent = ctx.Value("q", 0)
            bodies = [
                orjson.dumps({"columns": json_columns(events.iloc[i : i + 2000])})
                for i in range(0, min(len(events), 20_000), 2000)
            ]
            bg = ctx.Process(target=_background, args=(base, bodies, stop, sent), daemon=True)
            bg.start()
            t_bg = time.perf_counter()
            probe = tables["items"]["item_id"].iloc[-1]
            created = tables["items"]["created_at"].iloc[-1]
            template = {
                "item_id": probe,
                "user_id": "bench-probe",
                "kind": "report",
                "ts": (created + __import__("pandas").Timedelta(minutes=5)).isoformat(),
                "watch_frac": None,
                "reason": "spam",
                "text": None,
            }
            print("phase: freshness", flush=True)
            fresh = _freshness(base, probe, template, args.probes)
            results["fresh_p50_ms"] = _pct(fresh, 50) * 1e3
            results["fresh_p99_ms"] = _pct(fresh, 99) * 1e3
            ids = tables["items"]["item_id"].tolist()[-500:]
            print("phase: GET open loop", flush=True)
            results["get"] = asyncio.run(_open_loop(base, ids, args.rate, args.duration))
            stop.set()
            bg.join(60)
            if bg.is_alive():
                bg.terminate()
            results["bg_ev_s"] = sent.value / (time.perf_counter() - t_bg)

        sample = tables["items"]["item_id"].tolist()[-200:]
        per_item = [store.memory_bytes(i) for i in sample]
        live = store.live_items()
        results["mem_item_bytes"] = statistics.mean(per_item)
        results["live_items"] = live
        used = int(client.info("memory")["used_memory"])
        results["used_memory_mb"] = used / 1e6
        # expiry: an item posted after every live item's last horizon moves the clock past it
        clock = store.clock_ns()
        import pandas as pd

        later = tables["items"].tail(1).copy()
        later["item_id"] = "bench-expiry-probe"
        later["created_at"] = pd.Timestamp(clock, tz="UTC") + pd.Timedelta(hours=horizon_h + 1)
        ingest(store, [Batch("items", columns=json_columns(later))], None)
        for _ in range(1000):  # a sweep frees up to 1000 items per batch
            if store.live_items() <= 1:
                break
            ingest(store, [Batch("items", columns=json_columns(later))], None)
        results["live_after_expiry"] = store.live_items()
    finally:
        n = store.clear()
        client.close()
        store.close()
    _report(results, n)


def _report(r: dict[str, Any], deleted: int) -> None:
    print("\nonline path on Redis (one worker; machine may be shared)")
    print(f"  ingest, store batches      {r['store_ev_s']:>12,.0f} ev/s")
    print(f"  ingest, over HTTP          {r['http_ev_s']:>12,.0f} ev/s")
    print(f"  ingest, from the stream    {r['stream_ev_s']:>12,.0f} ev/s")
    print(f"  naive (1 round trip/event) {r['naive_ev_s']:>12,.0f} ev/s")
    print(f"  ratio HTTP / naive         {r['http_ev_s'] / r['naive_ev_s']:>12.1f}x")
    print(f"  ratio stream / naive       {r['stream_ev_s'] / r['naive_ev_s']:>12.1f}x")
    print("  targets: >= 50,000 ev/s and >= 10x naive")
    print(
        f"  freshness (accepted -> score reflects it), during ingest: "
        f"p50 {r['fresh_p50_ms']:.1f} ms, p99 {r['fresh_p99_ms']:.1f} ms (target p99 < 1000)"
    )
    g = r["get"]
    print(
        f"  GET /v1/items/{{id}}/score at {g['n']} requests, open loop, while ingesting "
        f"{r['bg_ev_s']:,.0f} ev/s: p50 {g['p50_ms']:.2f} ms, p99 {g['p99_ms']:.2f} ms, "
        f"errors {g['errors']} (target p99 < 10)"
    )
    print(
        f"  Redis memory per live item {r['mem_item_bytes']:>12,.0f} bytes "
        f"({r['live_items']} live items, used_memory {r['used_memory_mb']:.1f} MB)"
    )
    print(
        f"  expiry: live items {r['live_items']} -> {r['live_after_expiry']} after the clock "
        "passed their last horizon"
    )
    print(f"  cleaned up {deleted} keys")


if __name__ == "__main__":
    main()
