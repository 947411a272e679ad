"""Benchmark: how long a read waits behind ingest scripts, batches whole vs in parts.

The Redis store applies a batch as Lua scripts, and Redis runs nothing else while a script
runs. A writer process applies batches of a simulated world (--batch-events each, default
1,000) at a fixed pace (--batches-s) while this process reads single items with the read
script GET score uses, one at a time, every --gap-ms, and records each read's latency. Side by side in one run,
alternating per round: the writer with each batch as one script (`part_weight` None, the
store before `Plan.parts`) and in parts (`redis_store.PART_WEIGHT`). Prints read p50, p99
and max per mode (worst round and every round), the writer's events/s and the ratio of
p99s.

Loopback only, bounded by --seconds per round; keys are deleted at the end.

    uv run python bench/parts.py [--items 8000] [--rounds 3] [--seconds 4] [--batches-s 30]
        [--batch-events 1000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)

from bench.serve import _percentile as _pct  # noqa: E402

REDIS = "redis://127.0.0.1:6379/0"


def _writer(
    prefix: str, weight: int | None, events: Any, size: int, pace: float, seconds: float, q
) -> None:
    from features.online.redis_store import RedisStore

    store = RedisStore(REDIS, prefix=prefix)
    store.part_weight = weight
    start, k, rows = time.perf_counter(), 0, 0
    while time.perf_counter() - start < seconds and (k + 1) * size <= len(events):
        store.apply_many([([("events", events.iloc[k * size : (k + 1) * size])], f"w{k}")])
        rows += size
        k += 1
        time.sleep(max(0.0, start + k / pace - time.perf_counter()))
    q.put(rows / (time.perf_counter() - start))
    store.close()


def _round(args: argparse.Namespace, tables: dict[str, Any], events: Any, weight: int | None):
    from features.online.redis_store import RedisStore

    prefix = f"bench-parts:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(REDIS, prefix=prefix)
    try:
        store.apply({"creators": tables["creators"]})
        store.apply({"items": tables["items"]})
        ids = tables["items"]["item_id"].tolist()[-500:]
        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(
            target=_writer,
            args=(prefix, weight, events, args.batch_events, args.batches_s, args.seconds, q),
        )
        proc.start()
        time.sleep(1.0)  # the child's imports
        lat: list[float] = []
        end = time.perf_counter() + args.seconds - 1.5
        k = 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            store._read([ids[k % len(ids)]])
            lat.append(time.perf_counter() - t0)
            k += 1
            time.sleep(args.gap_ms / 1000)
        ev_s = q.get(timeout=args.seconds + 60)
        proc.join(timeout=30)
        return {
            "reads": len(lat),
            "p50": _pct(lat, 50) * 1e3,
            "p99": _pct(lat, 99) * 1e3,
            "max": max(lat) * 1e3,
            "ev_s": ev_s,
        }
    finally:
        store.clear()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8000, help="items of the simulated world")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode, alternating")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of one round")
    parser.add_argument("--batches-s", type=float, default=30.0, help="writer batches/s")
    parser.add_argument(
        "--batch-events",
        type=int,
        default=1000,
        help="events per batch (a stream message is ~1,000; an HTTP batch may be 5,000+)",
    )
    parser.add_argument("--gap-ms", type=float, default=2.0, help="pause between reads")
    args = parser.parse_args()

    from bench.online import _event_load
    from features.online.redis_store import PART_WEIGHT
    from simulator.config import SimConfig
    from simulator.core import simulate

    tables = simulate(SimConfig(n_items=args.items, days=14, seed=5)).tables
    size = args.batch_events
    events = _event_load(tables, int(args.batches_s * args.seconds * size) + size)
    modes = {"whole": None, f"parts of {PART_WEIGHT}": PART_WEIGHT}
    got: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode, weight in modes.items():
            print(f"round {r + 1}/{args.rounds}: {mode}", flush=True)
            got[mode].append(_round(args, tables, events, weight))
    print(
        f"\nreads beside a writer of {args.batches_s:.0f} batches/s of {size:,} events "
        f"(worst of {args.rounds} rounds; ms)"
    )
    print(
        f"  {'mode':<16}{'writer ev/s':>12}{'reads':>7}{'p50':>7}{'p99':>7}{'max':>7}  p99 per round"
    )
    worst = {}
    for mode, rounds in got.items():
        w = max(rounds, key=lambda x: x["p99"])
        worst[mode] = w["p99"]
        each = ", ".join(f"{x['p99']:.2f}" for x in rounds)
        print(
            f"  {mode:<16}{min(x['ev_s'] for x in rounds):>12,.0f}{w['reads']:>7}"
            f"{w['p50']:>7.2f}{w['p99']:>7.2f}{max(x['max'] for x in rounds):>7.2f}  {each}"
        )
    whole, parts = worst.values()
    print(f"  ratio p99 whole / parts: {whole / parts:.2f}x")


if __name__ == "__main__":
    main()
