"""Benchmark: pandas snapshot build vs an equivalent hand-written DuckDB query, same process.

    uv run python bench/features.py [--items 200000] [--seed 0] [--data DIR] [--synthetic]

Both engines run on the same in-memory frames and compute the same event counters for the
same (item, as_of) rows: per-kind counts, 1 h / 6 h windows, distinct viewers and reporters,
mean watch fraction. The pandas build computes the whole snapshot (more columns) on top.
Results are checked to agree on the shared columns. Targets: pandas <= 1.5x DuckDB time,
pandas peak memory (RSS rise) < 3x the events frame's in-memory size.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

# This script is named features.py: put the project root first so `features` is the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.contract import EVENT_KINDS, REPORT_REASONS
from features.schema import DEFAULT_HORIZONS_H, VELOCITY_KINDS, WINDOWS_H
from features.snapshot import build_snapshots, resolve_as_of_max

TIME_TARGET = 1.5
MEMORY_TARGET = 3.0
SHARED_COUNTS = (
    [f"n_{k}" for k in EVENT_KINDS]
    + [f"n_{k}_{w}h" for w in WINDOWS_H for k in VELOCITY_KINDS]
    + ["n_viewers", "n_reporters"]
)


# ---------------------------------------------------------------------------------------------
# Data


def synthetic_tables(
    n_items: int, *, events_per_item: float = 60.0, days: int = 14, random_state: int = 0
) -> dict[str, pd.DataFrame]:
    """A vectorised stand-in for the simulator: heavy-tailed popularity, decaying activity."""
    rng = np.random.default_rng(random_state)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    item_ids = np.array([f"it{i:07d}" for i in range(n_items)], dtype=object)
    n_creators = max(n_items // 8, 1)
    created_s = np.sort(rng.integers(0, days * 86_400, n_items))
    items = pd.DataFrame(
        {
            "item_id": pd.Series(item_ids, dtype="str"),
            "creator_id": pd.Series(
                [f"cr{c:06d}" for c in rng.integers(0, n_creators, n_items)], dtype="str"
            ),
            "created_at": start + pd.to_timedelta(created_s, unit="s"),
            "format": pd.Series(rng.choice(["video", "photo", "live"], n_items), dtype="str"),
            "duration_s": rng.uniform(3, 120, n_items),
            "region": pd.Series(rng.choice(["us", "br", "in", "de"], n_items), dtype="str"),
            "language": pd.Series(rng.choice(["en", "pt", "hi", "de"], n_items), dtype="str"),
            "category": pd.Series(rng.choice(["pets", "music", "news"], n_items), dtype="str"),
            "caption": pd.Series(["a caption"] * n_items, dtype="str"),
            "hashtags": pd.Series(["fyp cats"] * n_items, dtype="str"),
            "audio_id": pd.Series([None] * n_items, dtype="str"),
        }
    )
    creators = pd.DataFrame(
        {
            "creator_id": pd.Series([f"cr{c:06d}" for c in range(n_creators)], dtype="str"),
            "created_at": start - pd.to_timedelta(rng.integers(1, 900, n_creators), unit="D"),
            "region": pd.Series(["us"] * n_creators, dtype="str"),
            "verified": rng.random(n_creators) < 0.05,
            "follower_count": rng.integers(0, 100_000, n_creators),
        }
    )
    weight = rng.lognormal(0.0, 1.0, n_items)
    n_per_item = rng.poisson(weight / weight.mean() * events_per_item)
    e_item = np.repeat(np.arange(n_items), n_per_item)
    n = e_item.size
    # Most activity in the first hours after posting, a long tail over days.
    age_s = np.minimum(rng.exponential(8 * 3600, n), 6 * 86_400).astype(np.int64)
    ts_s = created_s[e_item] + age_s
    keep = ts_s < days * 86_400
    e_item, ts_s = e_item[keep], ts_s[keep]
    n = e_item.size
    kinds = np.asarray(EVENT_KINDS)
    k = rng.choice(len(kinds), n, p=[0.72, 0.1, 0.03, 0.05, 0.01, 0.04, 0.02, 0.03])
    is_view, is_report, is_comment = k == 0, k == 4, k == 3
    users = np.array([f"u{u:07d}" for u in range(1_000_000)], dtype=object)
    user = rng.integers(0, users.size, n)
    comment_pool = np.array(
        [
            " ".join(rng.choice(["nice", "cool", "idiot", "lol", "trash", "wow", "love"], 4))
            for _ in range(2000)
        ],
        dtype=object,
    )

    def text_col(values: np.ndarray, mask: np.ndarray) -> pd.Series:
        out = np.full(n, None, dtype=object)
        out[mask] = values[mask] if values.size == n else values
        return pd.Series(out, dtype="str")

    events = pd.DataFrame(
        {
            "item_id": pd.Series(item_ids[e_item], dtype="str"),
            "user_id": text_col(users[user], ~(is_view & (rng.random(n) < 0.12))),
            "ts": start + pd.to_timedelta(ts_s, unit="s"),
            "kind": pd.Series(kinds[k], dtype="str"),
            "watch_frac": np.where(is_view, rng.beta(2, 2, n), np.nan),
            "reason": text_col(
                np.asarray(REPORT_REASONS, dtype=object)[rng.integers(0, 7, n)], is_report
            ),
            "text": text_col(comment_pool[rng.integers(0, comment_pool.size, n)], is_comment),
        }
    )
    n_mod = n_items // 50
    m_item = rng.integers(0, n_items, n_mod)
    moderation = pd.DataFrame(
        {
            "item_id": pd.Series(item_ids[m_item], dtype="str"),
            "ts": start
            + pd.to_timedelta(created_s[m_item] + rng.integers(60, 3 * 86_400, n_mod), unit="s"),
            "action": pd.Series(rng.choice(["remove", "restrict", "restore"], n_mod), dtype="str"),
            "source": pd.Series(rng.choice(["auto", "human"], n_mod), dtype="str"),
            "policy": pd.Series(rng.choice(["spam", "hate"], n_mod), dtype="str"),
        }
    )
    return {"items": items, "creators": creators, "events": events, "moderation": moderation}


def load_tables(args: argparse.Namespace) -> tuple[dict[str, pd.DataFrame], str]:
    """Tables from --data, else the simulator when present, else the synthetic generator."""
    if args.data:
        from features.io import load_dataset

        return load_dataset(args.data), f"dataset {args.data}"
    if not args.synthetic:
        try:
            from simulator import SimConfig, simulate
        except ImportError:
            pass
        else:
            sim = simulate(SimConfig(n_items=args.items, days=args.days, seed=args.seed))
            return dict(
                sim.tables
            ), f"simulator (items={args.items}, days={args.days}, seed={args.seed})"
    tables = synthetic_tables(args.items, days=args.days, random_state=args.seed)
    return tables, f"synthetic (items={args.items}, seed={args.seed})"


# ---------------------------------------------------------------------------------------------
# DuckDB equivalent


def duckdb_sql(horizons_h: tuple[float, ...], include_moderation: bool) -> str:
    """Anchors as in features.snapshot, then one inequality join and conditional aggregates."""
    hz = ", ".join(f"({round(h * 3_600_000_000)})" for h in horizons_h)
    mod = (
        """
        UNION ALL
        SELECT m.item_id, m.ts AS as_of, 'moderation' AS anchor, m.action
        FROM moderation m SEMI JOIN items i ON m.item_id = i.item_id
        WHERE m.action IN ('remove', 'restrict')"""
        if include_moderation
        else ""
    )
    aggs = []
    for k in EVENT_KINDS:
        aggs.append(f"count(*) FILTER (WHERE e.kind = '{k}') AS n_{k}")
    for w in WINDOWS_H:
        for k in VELOCITY_KINDS:
            aggs.append(
                f"count(*) FILTER (WHERE e.kind = '{k}' AND e.ts >= a.as_of - INTERVAL {w} HOUR)"
                f" AS n_{k}_{w}h"
            )
    aggs += [
        "count(DISTINCT e.user_id) FILTER (WHERE e.kind = 'view') AS n_viewers",
        "count(DISTINCT e.user_id) FILTER (WHERE e.kind = 'report') AS n_reporters",
        "avg(e.watch_frac) FILTER (WHERE e.kind = 'view') AS mean_watch_frac",
    ]
    body = ",\n        ".join(aggs)
    return f"""
    WITH hz(us) AS (VALUES {hz}),
    anchors AS (
        SELECT i.item_id, i.created_at + to_microseconds(hz.us) AS as_of, 'post' AS anchor,
               NULL::VARCHAR AS action
        FROM items i CROSS JOIN hz{mod}
    ),
    a AS (SELECT row_number() OVER () AS aid, * FROM anchors WHERE as_of <= $as_of_max)
    SELECT any_value(a.item_id) AS item_id, any_value(a.as_of) AS as_of,
        any_value(a.anchor) AS anchor, any_value(a.action) AS action,
        {body}
    FROM a LEFT JOIN events e ON e.item_id = a.item_id AND e.ts < a.as_of
    GROUP BY a.aid
    """


def duckdb_snapshots(
    tables: Mapping[str, pd.DataFrame], horizons_h: tuple[float, ...], as_of_max: pd.Timestamp
) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect()
    for name in ("items", "events", "moderation"):
        if name in tables:
            con.register(name, tables[name])
    sql = duckdb_sql(horizons_h, "moderation" in tables)
    out = con.execute(sql, {"as_of_max": as_of_max.to_pydatetime()}).df()
    con.close()
    return out


# ---------------------------------------------------------------------------------------------
# Measuring


def _trim() -> None:
    """Give freed heap back to the OS so the next RSS baseline is honest."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Run:
    """One timed call: wall and CPU seconds (all threads), peak RSS rise, tracemalloc peak."""

    result: Any
    seconds: float
    cpu_seconds: float
    rss: int
    traced: int = 0


def measure(fn: Callable[[], Any], *, trace: bool = False) -> Run:
    """Time one call and sample its process RSS every 5 ms from a side thread."""
    _trim()
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if trace:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    traced = 0
    if trace:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    done.set()
    sampler.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return Run(result, seconds, cpu, peak[0] - base, traced)


def compare(pandas_out: pd.DataFrame, duck_out: pd.DataFrame) -> list[str]:
    """Mismatches on the shared columns (empty when the engines agree)."""
    keys = ["item_id", "as_of", "anchor", "action"]
    p = pandas_out.sort_values(keys, na_position="first").reset_index(drop=True)
    d = duck_out.copy()
    d["as_of"] = pd.to_datetime(d["as_of"], utc=True)
    d = d.sort_values(keys, na_position="first").reset_index(drop=True)
    problems = []
    if len(p) != len(d):
        return [f"row counts differ: pandas {len(p)}, duckdb {len(d)}"]
    if not (p["item_id"].astype(str).to_numpy() == d["item_id"].astype(str).to_numpy()).all():
        problems.append("item_id order differs")
    if not (p["as_of"].to_numpy() == d["as_of"].dt.as_unit("ns").to_numpy()).all():
        problems.append("as_of differs")
    for col in SHARED_COUNTS:
        bad = int((p[col].to_numpy() != d[col].to_numpy(dtype=np.int64)).sum())
        if bad:
            problems.append(f"{col}: {bad} rows differ")
    a, b = p["mean_watch_frac"].to_numpy(), d["mean_watch_frac"].to_numpy(dtype=np.float64)
    # Prefix sums over millions of views round differently from DuckDB's avg: ~1e-12 apart.
    if not np.allclose(a, b, rtol=1e-7, atol=1e-9, equal_nan=True):
        problems.append("mean_watch_frac differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=200_000, help="items to simulate")
    parser.add_argument("--days", type=int, default=28, help="days to simulate")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the data")
    parser.add_argument("--data", type=Path, default=None, help="load a dataset folder instead")
    parser.add_argument("--synthetic", action="store_true", help="use the built-in generator")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine; best time kept")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report tracemalloc peak (slower run)"
    )
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    tables, source = load_tables(args)
    horizons = tuple(DEFAULT_HORIZONS_H)
    as_of_max = pd.Timestamp(resolve_as_of_max(tables), unit="ns", tz="UTC")
    events = tables["events"]
    events_bytes = int(events.memory_usage(deep=True).sum())
    print(
        f"data: {source}; {len(tables['items']):,} items, {len(events):,} events "
        f"({events_bytes / 2**20:,.0f} MiB in memory); loaded in {time.perf_counter() - t0:.1f} s"
    )

    runs: dict[str, Run] = {}
    engines: dict[str, Callable[[], pd.DataFrame]] = {
        "pandas": lambda: build_snapshots(tables, horizons, as_of_max=as_of_max),
        "duckdb": lambda: duckdb_snapshots(tables, horizons, as_of_max),
    }
    # Warm-up on a small slice, so lazy imports and first-call setup are not measured.
    few = tables["items"]["item_id"].iloc[:200]
    small = {
        k: (v[v["item_id"].isin(few)] if "item_id" in v.columns else v) for k, v in tables.items()
    }
    build_snapshots(small, horizons, as_of_max=as_of_max)
    duckdb_snapshots(small, horizons, as_of_max)
    del small
    for name, fn in engines.items():
        for _ in range(max(args.repeat, 1)):
            run = measure(fn)
            best = runs.get(name)
            if best is None or run.seconds < best.seconds:
                run.rss = max(run.rss, best.rss if best else 0)
                runs[name] = run
            elif best is not None:
                best.rss = max(best.rss, run.rss)
            del run
    traced = measure(engines["pandas"], trace=True).traced if args.tracemalloc else 0

    print()
    print(f"load average (1 min) on {psutil.cpu_count()} cores: {psutil.getloadavg()[0]:.1f}")
    print(
        f"{'engine':<8} {'seconds':>9} {'cpu s':>8} {'rows':>10} {'peak RSS rise':>14} {'x events':>9}"
    )
    for name, run in runs.items():
        print(
            f"{name:<8} {run.seconds:>9.2f} {run.cpu_seconds:>8.2f} {len(run.result):>10,} "
            f"{run.rss / 2**20:>10,.0f} MiB {run.rss / events_bytes:>9.2f}"
        )
    if traced:
        print(
            f"pandas tracemalloc peak: {traced / 2**20:,.0f} MiB ({traced / events_bytes:.2f}x events)"
        )

    problems = compare(runs["pandas"].result, runs["duckdb"].result)
    ratio = runs["pandas"].seconds / runs["duckdb"].seconds
    cpu_ratio = runs["pandas"].cpu_seconds / runs["duckdb"].cpu_seconds
    mem_ratio = runs["pandas"].rss / events_bytes
    print()
    print(
        f"agreement on shared columns: {'OK' if not problems else 'MISMATCH ' + '; '.join(problems)}"
    )
    print(
        f"time   pandas/duckdb = {ratio:.2f}x  (target <= {TIME_TARGET}x): "
        f"{'PASS' if ratio <= TIME_TARGET else 'FAIL'}"
    )
    # Wall time is the target; CPU time (DuckDB counts both of its threads) shows the work
    # done, which matters when other jobs share the cores.
    print(f"cpu    pandas/duckdb = {cpu_ratio:.2f}x  (information)")
    print(
        f"memory pandas peak / events = {mem_ratio:.2f}x  (target < {MEMORY_TARGET}x): "
        f"{'PASS' if mem_ratio < MEMORY_TARGET else 'FAIL'}"
    )
    return 0 if not problems and ratio <= TIME_TARGET and mem_ratio < MEMORY_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
