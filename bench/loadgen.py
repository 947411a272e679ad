"""An open-loop GET load generator that measures from a process of its own.

`bench/online.py` times GET /v1/items/{id}/score at a fixed rate while other processes
ingest. Run inside the bench's own process, the generator shared an interpreter with the
bench's heap (the simulated world, the trained champion, MLflow, pandas), so its cyclic
collections, imports and leftover threads were counted as the service's latency. This
module imports the standard library only and runs with the collector off for one bounded
window (a few thousand requests), so what it reports is the service's answer time plus
loopback, from each request's scheduled send time.

    python bench/loadgen.py --base http://127.0.0.1:PORT --rate 500 --duration 5 \
        --api-key KEY < ids.json      # prints one JSON object

Loopback only; bounded by --duration (requests unanswered 10 s after the last send count
as errors, with the latency they had reached).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import sys
import time
from typing import Any
from urllib.parse import urlsplit

CONNECTIONS = 32


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (every bench's: bench.serve imports it as _percentile)."""
    if not values:
        return math.nan
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


async def open_loop(
    base: str, items: list[str], rate: float, duration: float, api_key: str
) -> dict[str, Any]:
    """GET /v1/items/{id}/score at a fixed rate over 32 keep-alive connections, latency from
    each request's scheduled send time (queueing for a free connection included).

    Raw asyncio streams, not httpx: an httpx.AsyncClient with thousands of pending requests
    spent more CPU in its pool than the service spent answering, so on a shared machine the
    client, not the service, set the measured latency."""
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conns: asyncio.Queue = asyncio.Queue()
    for _ in range(CONNECTIONS):
        conns.put_nowait(await asyncio.open_connection(host, port))
    lat: list[float] = []
    errors = 0
    n = int(rate * duration)
    start = time.perf_counter()

    async def one(k: int) -> None:
        nonlocal errors
        scheduled = start + k / rate
        reader, writer = await conns.get()
        try:
            writer.write(
                f"GET /v1/items/{items[k % len(items)]}/score HTTP/1.1\r\nHost: {host}\r\n"
                f"X-API-Key: {api_key}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            conns.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            writer.close()
            conns.put_nowait(await asyncio.open_connection(host, port))
        lat.append(time.perf_counter() - scheduled)

    # One dispatcher starts each request at its scheduled time. Creating all n coroutines
    # up front ran their n first steps in one loop iteration (~20 ms for 2,500), which
    # delayed the first requests by the client's own work and was counted as latency.
    tasks: dict[asyncio.Future, int] = {}
    for k in range(n):
        await asyncio.sleep(max(0.0, start + k / rate - time.perf_counter()))
        tasks[asyncio.ensure_future(one(k))] = k
    _, late = await asyncio.wait(list(tasks), timeout=duration + 10)
    now = time.perf_counter()
    for t in late:
        t.cancel()
        lat.append(now - (start + tasks[t] / rate))
    errors += len(late)
    while not conns.empty():
        _, writer = conns.get_nowait()
        writer.close()
    return {
        "n": n,
        "errors": errors,
        "late": len(late),
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="service URL, loopback")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of sending")
    parser.add_argument("--api-key", required=True, help="X-API-Key sent with every request")
    args = parser.parse_args(argv)
    items = json.load(sys.stdin)
    if not items:
        parser.error("no item ids on stdin (a JSON list)")
    gc.collect()
    gc.disable()  # one bounded window: a few thousand small objects, freed at exit
    out = asyncio.run(open_loop(args.base, items, args.rate, args.duration, args.api_key))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
