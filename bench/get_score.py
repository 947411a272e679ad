"""Benchmark: the CPU one GET /v1/items/{id}/score costs the serve worker, on real Redis.

Simulates a small world and trains a champion (or reuses `--state`, a SURFACER_DATA_DIR
whose registry has one), loads the world's items, creators and events into Redis under a
unique key prefix, then:

- in process (`--mode asgi`): drives the app itself (`serving.app.create_app`, lifespan
  running) with raw ASGI calls, one request at a time, and reports requests per CPU second
  of this process; with `--profile FILE` the loop runs under cProfile and the functions
  with the most cumulative time are printed (the stats are written to FILE);
- over HTTP (`--mode http`): starts `surfacer serve --workers 1` and sends GETs from one
  keep-alive connection, one at a time, and reports p50/p99 latency and the serve
  process's CPU seconds per request (from /proc).

Nothing else runs meanwhile (no ingest): this isolates the per-request CPU that bench/online.py
measures beside 50,000 events/s. Loopback only; keys are deleted at the end.

    uv run python bench/get_score.py [--mode asgi|http|both] [--requests 3000] [--profile F]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)

from bench.online import (  # noqa: E402
    API_KEY,
    MODEL_NAME,
    _cpu_s,
    _event_load,
    _pct,
    _train,
    _world,
    serve_command,
)
from bench.serve import HOST, _free_port, _server  # noqa: E402


def _settings(state: Path) -> Any:
    from common.settings import Settings

    return Settings(data_dir=state, model_name=MODEL_NAME)


def _prepare(args: argparse.Namespace, work: Path) -> tuple[Any, dict[str, Any]]:
    """(settings of a registry with a champion, the world's tables)."""
    import pickle

    if args.state is not None:
        state = Path(args.state)
        cached = state / "bench-get-score-world.pkl"
        if cached.exists():
            world = pickle.loads(cached.read_bytes())
            # the world the champion was trained on (its days set the items' horizon)
            args.items, args.days = world["items"], world["days"]
            return _settings(state), world["tables"]
        tables, data = _world(args.items, args.days, work)
        settings = _train(data, state)[0]
        world = {"items": args.items, "days": args.days, "tables": tables}
        cached.write_bytes(pickle.dumps(world))
        return settings, tables
    tables, data = _world(args.items, args.days, work)
    return _train(data, work / "state")[0], tables


def _load(store: Any, tables: dict[str, Any], n_events: int) -> list[str]:
    from features.online.errors import Batch
    from features.online.ingest import ingest, json_columns

    ingest(store, [Batch("creators", columns=json_columns(tables["creators"]))], None)
    ingest(store, [Batch("items", columns=json_columns(tables["items"]))], None)
    events = _event_load(tables, n_events)
    for lo in range(0, len(events), 5000):
        ingest(store, [Batch("events", columns=json_columns(events.iloc[lo : lo + 5000]))], None)
    return events["item_id"].drop_duplicates().tolist()


async def _asgi_loop(app: Any, items: list[str], n: int) -> tuple[list[float], int]:
    """n GETs through the ASGI app, one at a time: latencies and non-200 answers."""
    headers = [(b"host", b"bench"), (b"x-api-key", API_KEY.encode())]
    lat: list[float] = []
    bad = 0
    for k in range(n):
        path = f"/v1/items/{items[k % len(items)]}/score"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "app": app,
        }
        status = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], status: list = status) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        t0 = time.perf_counter()
        await app(scope, receive, send)
        lat.append(time.perf_counter() - t0)
        bad += status != [200]
    return lat, bad


async def _asgi(args: argparse.Namespace, settings: Any, store: Any, items: list[str]) -> None:
    from serving.app import create_app
    from serving.flag_writer import JsonlFlagSink
    from serving.server import settle_heap

    settings = settings.model_copy(
        update={
            "api_keys": {API_KEY: ["score", "ingest"]},
            "reload_interval_s": 0,
            "online_rescore": False,  # as in bench/online.py: re-scoring runs elsewhere
        }
    )
    sink = JsonlFlagSink(Path(settings.data_dir) / "bench-get-score-flags.jsonl")
    app = create_app(settings, flag_sink=sink, online_store=store)
    async with app.router.lifespan_context(app):
        await _asgi_loop(app, items, 200)  # warm-up: first-use clients, fast predictors
        settle_heap()
        # CPU time, not wall time: on a shared machine a loopback send can lose the core to
        # the Redis server it wakes, which wall-clock profiles charge to the send.
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        best = None
        for _ in range(args.repeat):
            cpu0 = time.process_time()
            if profiler is not None:
                profiler.enable()
            lat, bad = await _asgi_loop(app, items, args.requests)
            if profiler is not None:
                profiler.disable()
            cpu = time.process_time() - cpu0
            print(
                f"asgi: {args.requests} GETs, {bad} not 200; {args.requests / cpu:.0f} GET per "
                f"CPU s ({cpu / args.requests * 1e3:.3f} ms CPU each); one at a time, latency "
                f"p50 {_pct(lat, 50) * 1e3:.3f} ms, p99 {_pct(lat, 99) * 1e3:.3f} ms"
                + (" (under cProfile)" if profiler is not None else ""),
                flush=True,
            )
            best = cpu if best is None else min(best, cpu)
        if args.repeat > 1:
            print(f"asgi best of {args.repeat}: {args.requests / best:.0f} GET per CPU s")
    if profiler is not None:
        profiler.dump_stats(args.profile)
        stats = pstats.Stats(profiler).strip_dirs().sort_stats("cumulative")
        stats.print_stats(args.top)


def _http_loop(port: int, items: list[str], n: int) -> tuple[list[float], int]:
    import socket

    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    lat: list[float] = []
    bad = 0
    try:
        for k in range(n):
            request = (
                f"GET /v1/items/{items[k % len(items)]}/score HTTP/1.1\r\nHost: {HOST}\r\n"
                f"X-API-Key: {API_KEY}\r\n\r\n"
            ).encode()
            t0 = time.perf_counter()
            sock.sendall(request)
            status = reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            reader.read(length)
            lat.append(time.perf_counter() - t0)
            bad += not status.startswith(b"HTTP/1.1 200")
    finally:
        reader.close()
        sock.close()
    return lat, bad


def _http(args: argparse.Namespace, settings: Any, prefix: str, work: Path, items: list[str]):
    port = args.port or _free_port()
    env = {
        **os.environ,
        "SURFACER_DATA_DIR": str(settings.data_dir),
        "SURFACER_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "SURFACER_MODEL_NAME": MODEL_NAME,
        "SURFACER_API_KEYS": json.dumps({API_KEY: ["ingest", "score"]}),
        "SURFACER_RELOAD_INTERVAL_S": "0",
        "SURFACER_ONLINE_STORE": args.redis,
        "SURFACER_ONLINE_PREFIX": prefix,
        "SURFACER_ONLINE_HORIZON_H": str(24.0 * (args.days + 2)),
        "SURFACER_ONLINE_RESCORE": "false",
    }
    cmd = serve_command(port, work)
    with _server(cmd, env, port, "/readyz", work / "serve.log", 180) as proc:
        _http_loop(port, items, 300)  # warm-up
        best = None
        for _ in range(args.repeat):
            cpu0 = _cpu_s(proc.pid)
            lat, bad = _http_loop(port, items, args.requests)
            cpu = _cpu_s(proc.pid) - cpu0
            print(
                f"http: {args.requests} GETs, {bad} not 200; serve {args.requests / cpu:.0f} GET "
                f"per CPU s ({cpu / args.requests * 1e3:.3f} ms CPU each); one client, latency "
                f"p50 {_pct(lat, 50) * 1e3:.3f} ms, p99 {_pct(lat, 99) * 1e3:.3f} ms",
                flush=True,
            )
            best = cpu if best is None else min(best, cpu)
        if args.repeat > 1:
            print(f"http best of {args.repeat}: serve {args.requests / best:.0f} GET per CPU s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=("asgi", "http", "both"),
        default="both",
        help="in-process ASGI calls, a `surfacer serve` worker over HTTP, or both",
    )
    parser.add_argument("--requests", type=int, default=3000, help="GETs measured per mode")
    parser.add_argument("--items", type=int, default=2000, help="items of the simulated world")
    parser.add_argument("--days", type=int, default=7, help="days of the simulated world")
    parser.add_argument("--events", type=int, default=100_000, help="events loaded into Redis")
    parser.add_argument(
        "--state",
        default=None,
        help="SURFACER_DATA_DIR to train the champion into once and reuse on later runs, "
        "with the world's --items and --days (default: a temporary one, trained every run)",
    )
    parser.add_argument(
        "--profile", default=None, help="run the ASGI loop under cProfile; stats to this file"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="measured rounds per mode (the best is shown too)"
    )
    parser.add_argument("--top", type=int, default=45, help="profile lines printed")
    parser.add_argument("--port", type=int, default=0, help="serve's port (default: free one)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    args = parser.parse_args()

    from features.online import OnlineConfig, open_store

    print(f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="surfacer-bench-get-score-") as tmp:
        work = Path(tmp)
        settings, tables = _prepare(args, work)
        prefix = f"bench-get-score:{uuid.uuid4().hex[:8]}:"
        config = OnlineConfig(horizon_h=24.0 * (args.days + 2))
        store = open_store(args.redis, config, prefix=prefix)
        try:
            items = _load(store, tables, args.events)
            gc.collect()
            if args.mode in ("asgi", "both"):
                asyncio.run(_asgi(args, settings, store, items))
            if args.mode in ("http", "both"):
                _http(args, settings, prefix, work, items)
        finally:
            store.clear()
            store.close()
    print(f"load average {os.getloadavg()[0]:.2f} at end", flush=True)


if __name__ == "__main__":
    main()
