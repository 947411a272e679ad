"""Benchmark: single-record FeatureTransform vs a naive one-row DataFrame, in one process.

    uv run python bench/transform.py [--items N] [--calls N] [--naive-calls N]

Fits `FeatureTransform.for_snapshots()` on snapshot rows (simulator + features.snapshot
when they are available, else a realistic synthetic snapshot frame), then times:
- transform_one on JSON-decoded records (what the scoring service receives), one
  perf_counter_ns per call, >= 20,000 calls -> p50 / p99 / mean;
- transform_records and the batch transform(frame), per-row cost;
- text_hashed_one (the n-gram path of the linear text model, reported separately);
- the naive baseline: pd.DataFrame([record]) -> transform(frame), per call.
Prints a table, the speed-up over the baseline and PASS/FAIL against p99 < 200 us.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

# The script's own folder holds bench/features.py, which would shadow the features package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from features.schema import (  # noqa: E402
    EVENT_COUNT_COLUMNS,
    REPORT_REASON_COLUMNS,
    SNAPSHOT_COLUMNS,
    VELOCITY_COLUMNS,
)
from features.transform import FeatureTransform  # noqa: E402

P99_TARGET_US = 200.0


def simulated_snapshots(n_items: int, seed: int) -> pd.DataFrame | None:
    """Snapshot rows of a small simulation, or None if the simulator is not available."""
    try:
        from features.snapshot import build_snapshots
        from simulator.config import SimConfig
        from simulator.core import simulate
    except ImportError:
        return None
    sim = simulate(SimConfig(n_items=n_items, days=7, seed=seed))
    return build_snapshots(sim.tables)


def synthetic_snapshots(n: int, seed: int) -> pd.DataFrame:
    """A realistic snapshot frame: heavy-tailed counts, nulls, categorical skew, captions."""
    rng = np.random.default_rng(seed)
    views = rng.negative_binomial(1, 1 / 60, n)
    frame: dict[str, Any] = {
        "item_id": [f"i{i:07d}" for i in range(n)],
        "as_of": pd.Timestamp("2026-10-01", tz="UTC")
        + pd.to_timedelta(rng.uniform(0, 1e6, n), "s"),
        "anchor": rng.choice(["post", "moderation"], n, p=[0.95, 0.05]),
        "horizon_h": rng.choice([1.0, 6.0, 24.0], n),
        "format": rng.choice(["video", "photo", "live"], n, p=[0.7, 0.25, 0.05]),
        "duration_s": np.where(rng.random(n) < 0.2, np.nan, rng.gamma(2, 15, n)),
        "region": rng.choice(["US", "BR", "IN", "DE", "ID", "MX", "JP", "NG"], n),
        "language": rng.choice(["en", "pt", "hi", "de", "id", "es", "ja"], n),
        "category": rng.choice(["comedy", "music", "beauty", "news", "gaming", "food"], n),
        "age_h": rng.uniform(0.5, 24, n),
        "caption": rng.choice(
            [
                "Morning routine ☀️ #fyp #morning",
                "FREE giveaway!!! click the link in bio 👉 https://bit.ly/abc @brand",
                "you won't BELIEVE what happened next 😱😱😱",
                "recipe: 2 eggs, 100g flour, 1 cup milk #food #easyrecipe",
                None,
                "",
            ],
            n,
        ),
        "hashtags": rng.choice(["fyp viral", "food easyrecipe", "giveaway free win", ""], n),
        "mean_watch_frac": np.where(views > 0, rng.beta(2, 3, n), np.nan),
        "comment_mean_len": rng.gamma(2, 20, n),
        "creator_age_d": rng.gamma(2, 200, n),
        "creator_verified": rng.random(n) < 0.05,
        "mod_removed": (rng.random(n) < 0.02).astype(float),
        "mod_restricted": (rng.random(n) < 0.02).astype(float),
        "action": rng.choice(["remove", "restrict", None], n, p=[0.03, 0.02, 0.95]),
        "action_source": rng.choice(["auto", "human", None], n, p=[0.03, 0.02, 0.95]),
        "action_policy": rng.choice(["spam", "hate", None], n, p=[0.03, 0.02, 0.95]),
    }
    for c in EVENT_COUNT_COLUMNS + VELOCITY_COLUMNS + REPORT_REASON_COLUMNS:
        frame[c] = rng.binomial(views, 0.05 if c != "n_view" else 1.0)
    for c in (
        "n_viewers",
        "n_reporters",
        "n_comment_toxic",
        "creator_followers",
        "creator_n_items",
    ):
        frame[c] = rng.poisson(5, n)
    for c in ("creator_prior_removals", "creator_prior_overturned", "mod_n_actions"):
        frame[c] = rng.poisson(0.2, n)
    out = pd.DataFrame(frame)
    return out[[c for c in SNAPSHOT_COLUMNS if c in out.columns]]


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as the service receives them: JSON-decoded dicts (timestamps as ISO strings)."""
    raw = orjson.dumps(frame.to_dict("records"), default=str, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.loads(raw)


def per_call_us(
    fn: Callable[[Any], object], args: Sequence[Any], calls: int
) -> tuple[np.ndarray, np.ndarray]:
    """Time `fn` once per call, cycling through `args`: (wall us, this thread's CPU us).

    Wall time (perf_counter_ns) is what callers see and what the target is about; the
    thread CPU time beside it shows how much of the tail is the scheduler preempting us
    on a shared machine rather than the work itself.
    """
    for a in args[: min(200, len(args))]:  # warm-up
        fn(a)
    wall = np.empty(calls, dtype=np.int64)
    cpu = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    m = len(args)
    gc.collect()
    for i in range(calls):
        a = args[i % m]
        c0 = cpu_clock()
        t0 = clock()
        fn(a)
        wall[i] = clock() - t0
        cpu[i] = cpu_clock() - c0
    return wall / 1000.0, cpu / 1000.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3000, help="simulated items")
    parser.add_argument("--calls", type=int, default=20_000, help="transform_one calls")
    parser.add_argument("--naive-calls", type=int, default=2_000, help="baseline calls")
    parser.add_argument("--seed", type=int, default=0, help="the simulator's seed")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    frame = simulated_snapshots(args.items, args.seed)
    source = "simulator + features.snapshot"
    if frame is None or len(frame) == 0:
        frame = synthetic_snapshots(args.items * 3, args.seed)
        source = "synthetic snapshot frame"
    print(f"data: {source}, {len(frame):,} snapshot rows ({time.perf_counter() - t0:.1f} s)")

    ft = FeatureTransform.for_snapshots().fit(frame)
    print(f"features: {len(ft.feature_names_)} dense, {len(ft.categorical_indices_)} categorical")
    records = json_records(frame.head(5000))
    # Same vectors on both paths, on this data too (JSON round trip of the same rows).
    check = ft.transform(pd.DataFrame(records, index=range(len(records))))
    np.testing.assert_array_equal(ft.transform_records(records), check)

    one, one_cpu = per_call_us(ft.transform_one, records, args.calls)
    hashed, _ = per_call_us(ft.text_hashed_one, records, max(2_000, args.calls // 4))

    def naive(record: dict[str, Any]) -> np.ndarray:
        return ft.transform(pd.DataFrame([record]))

    base, _ = per_call_us(naive, records, args.naive_calls)

    reps = 3
    t = time.perf_counter()
    for _ in range(reps):
        ft.transform(frame)
    batch_row_us = (time.perf_counter() - t) / reps / len(frame) * 1e6
    t = time.perf_counter()
    for _ in range(reps):
        ft.transform_records(records)
    records_row_us = (time.perf_counter() - t) / reps / len(records) * 1e6

    def row(name: str, x: np.ndarray) -> str:
        p50, p99 = np.percentile(x, [50, 99])
        return f"{name:<36}{len(x):>8,}{p50:>10.1f}{p99:>10.1f}{x.mean():>10.1f}"

    print()
    print(f"{'path':<36}{'calls':>8}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}")
    print(row("transform_one (dense)", one))
    print(row("  same calls, thread CPU time", one_cpu))
    print(row("naive: DataFrame([rec]) -> transform", base))
    print(row("text_hashed_one (n-grams)", hashed))
    print(f"{'transform_records, per row':<36}{len(records):>8,}{'':>20}{records_row_us:>10.1f}")
    print(f"{'transform(frame), per row':<36}{len(frame):>8,}{'':>20}{batch_row_us:>10.1f}")
    print()
    p99 = float(np.percentile(one, 99))
    print(
        f"speed-up vs naive baseline: p50 {np.median(base) / np.median(one):.1f}x, "
        f"mean {base.mean() / one.mean():.1f}x"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other processes share the CPUs)")
    verdict = "PASS" if p99 < P99_TARGET_US else "FAIL"
    print(f"{verdict}: transform_one p99 {p99:.1f} us (target < {P99_TARGET_US:.0f} us)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
