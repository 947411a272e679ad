"""Benchmark: what the live archive costs the stream consumer, A/B interleaved, in CPU time.

Simulates a world, loads its items into a Redis online store (a unique key prefix), then
applies the same events as the stream consumer does (`ingest_many` over reads of --count
messages of --message-events events) with and without a `LiveArchive` (written before each
read's acknowledgement, as `surfacer ingest` does), alternating the two --reps times. It
reports this process's CPU seconds per run (all threads: the archive's writer included),
which a shared machine's load disturbs far less than wall-clock rates, beside the wall-clock
rates and the load average. Loopback only; keys and temp folders are removed at the end.

    uv run python bench/archive.py [--events 50000] [--reps 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="items of the simulated world")
    parser.add_argument("--events", type=int, default=50_000, help="events applied per run")
    parser.add_argument("--message-events", type=int, default=1000, help="events per message")
    parser.add_argument("--count", type=int, default=64, help="messages per read")
    parser.add_argument("--reps", type=int, default=5, help="runs of each mode, interleaved")
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/0", help="the Redis store the bench uses"
    )
    args = parser.parse_args()

    from features.online import OnlineConfig, open_store
    from features.online.archive import LiveArchive
    from features.online.errors import Batch
    from features.online.ingest import ingest, ingest_many, json_columns
    from simulator.config import SimConfig
    from simulator.core import simulate

    sim = simulate(SimConfig(n_items=args.items, days=7, seed=5))
    events = sim.tables["events"].sort_values("ts", kind="stable").head(args.events)
    step = args.message_events
    bodies = [json_columns(events.iloc[i : i + step]) for i in range(0, len(events), step)]
    prefix = f"bench-archive:{uuid.uuid4().hex[:8]}:"
    store = open_store(args.redis, OnlineConfig(horizon_h=24.0 * 9), prefix=prefix)
    work = Path(tempfile.mkdtemp(prefix="surfacer-bench-archive-"))
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    wall: dict[str, list[float]] = {"off": [], "on": []}
    parts = 0
    try:
        ingest(store, [Batch("creators", columns=json_columns(sim.tables["creators"]))], None)
        ingest(store, [Batch("items", columns=json_columns(sim.tables["items"]))], None)
        gc.freeze()  # the world is not the consumer's heap (as in bench/online.py)
        for rep in range(args.reps):
            for mode in ("off", "on"):
                archive = LiveArchive(work / f"{mode}-{rep}") if mode == "on" else None
                messages = [
                    ([Batch("events", columns=b)], f"{mode}-{rep}-{k}-{uuid.uuid4().hex}")
                    for k, b in enumerate(bodies)
                ]
                c0, w0 = time.process_time(), time.perf_counter()
                for lo in range(0, len(messages), args.count):
                    ingest_many(store, messages[lo : lo + args.count], archive=archive)
                    if archive is not None:
                        archive.flush()  # before the acknowledgement
                if archive is not None:
                    archive.close()
                    parts = archive.parts_written
                cpu[mode].append(time.process_time() - c0)
                wall[mode].append(time.perf_counter() - w0)
    finally:
        store.clear()
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    n = len(events)
    print(f"\nlive archive cost, stream consumer path ({n:,} events per run, {args.reps} runs")
    print(f"each mode interleaved; {parts} parts per run; load average {load})")
    for mode in ("off", "on"):
        c, w = statistics.median(cpu[mode]), statistics.median(wall[mode])
        print(
            f"  archive {mode:<3}  CPU {c:.3f} s/run ({c / n * 1e6:.2f} us/event), "
            f"wall {n / w:>9,.0f} ev/s (medians)"
        )
    extra = statistics.median(cpu["on"]) / statistics.median(cpu["off"]) - 1
    print(f"  CPU added by the archive: {extra * 100:+.1f}% (medians)")


if __name__ == "__main__":
    main()
