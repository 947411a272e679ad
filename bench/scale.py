"""Benchmark: the main job at growing sizes, per engine: wall time and peak memory per step.

    uv run python bench/scale.py                                  # the full run (hours)
    uv run python bench/scale.py --sizes 5k,20k --heavy-items 0   # a quick look

For each world (the default world at each of `--sizes` items, and an event-heavy world of
`--heavy-items` items with `--heavy-mean-views` views per item, about 600 events per item
at the default) it runs simulate -> validate -> features -> train -> score -> discover, each
step a `surfacer --peak-memory ...` subprocess so its peak memory (the whole process tree,
Dask workers included) is its own. Every step after simulate runs per engine in
`--engines`; pandas only up to `--pandas-max-items` (beyond, it does not fit). Events are
written as Parquet parts (hashed item_id), which both engines read.

Prints a table (world, engine, step, items, events, seconds, peak GB), the time growth
exponent over items per engine and step (the least-squares slope of log time on log items;
1 is linear), and PASS/FAIL against the targets:

- Dask, the largest default world (1M items by default) end to end: every step's peak
  under `--memory-target-gb` (8 GB); the event-heavy world the same.
- Dask time growth exponent over items (validate..discover in total) at most 1.1.
- On `--compare-items` (100k) items: Dask and pandas snapshots identical, and model
  PR-AUC within 0.01 per issue.

A target whose runs were not made (a size not asked for, a failed step) is reported as
"not run", never as PASS. `--json` writes every measurement for later comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
# Run as `python bench/scale.py`, this folder comes first on sys.path and bench/features.py
# would shadow the features package: put the project root there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(ROOT))

STEPS = ("simulate", "validate", "features", "train", "score", "discover")
PEAK_RE = re.compile(r"peak memory: ([0-9.]+) MB")


@dataclass
class Run:
    """One step of one world on one engine."""

    world: str
    engine: str
    step: str
    items: int
    events: int
    seconds: float
    peak_mb: float
    ok: bool
    note: str = ""


def parse_size(text: str) -> int:
    """'20k' -> 20000, '1M' -> 1000000, '300000' -> 300000."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise SystemExit(f"error: size {text!r} is not a number like 20k or 1M") from None
    if value < 200:
        raise SystemExit(f"error: size {text!r} is below 200 items")
    return value


def surfacer(args: list[str], env: dict[str, str], log: Path) -> tuple[float, float, bool, str]:
    """Run `surfacer --peak-memory ARGS`: (seconds, peak MB, ok, last error line)."""
    cmd = [sys.executable, "-m", "surfacer", "--peak-memory", *args]
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.PIPE, text=True)
        fh.write(proc.stderr)
    seconds = time.perf_counter() - t0
    peaks = [float(m) for m in PEAK_RE.findall(proc.stderr)]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    note = errors[-1] if errors else (proc.stderr.strip().splitlines() or [""])[-1]
    return seconds, (peaks[-1] if peaks else math.nan), proc.returncode == 0, note[:120]


def count_events(folder: Path) -> int:
    import pyarrow.parquet as pq

    from features.io import dataset_files, part_files

    files = dataset_files(folder)
    if "events" not in files:
        return 0
    return sum(pq.ParquetFile(f).metadata.num_rows for f in part_files(files["events"]))


def run_world(
    name: str,
    items: int,
    args: argparse.Namespace,
    engines: list[str],
    runs: list[Run],
    extra_sim: list[str],
) -> dict[str, Path]:
    """All steps of one world; returns each engine's output folder."""
    base = args.workdir / name
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    log = base / "log.txt"
    env = {**os.environ, "SURFACER_DATA_DIR": str(base / "state")}
    if args.memory_limit:
        env["SURFACER_DASK_MEMORY_LIMIT"] = args.memory_limit
    data = base / "data"
    parts = max(4, round(items * args.events_per_item_hint / 2_000_000))
    sim = [
        "simulate",
        "--out",
        str(data),
        "--items",
        str(items),
        "--days",
        str(args.days),
        "--seed",
        str(args.seed),
        "--events-parts",
        str(parts),
        *extra_sim,
    ]
    seconds, peak, ok, note = surfacer(sim, env, log)
    events = count_events(data) if ok else 0
    runs.append(Run(name, "-", "simulate", items, events, seconds, peak, ok, "" if ok else note))
    print(f"  {name}: simulate {seconds:.0f} s, {events:,} events", flush=True)
    outs: dict[str, Path] = {}
    if not ok:
        return outs
    for engine in engines:
        if engine == "pandas" and items > args.pandas_max_items:
            continue
        out = base / engine
        out.mkdir()
        outs[engine] = out
        eng = ["--engine", engine]
        steps = {
            "validate": ["data", "validate", str(data), "--no-progress", *eng],
            "features": [
                "features",
                "build",
                "--data",
                str(data),
                "--out",
                str(out / "snapshots.parquet"),
                "--no-progress",
                *eng,
            ],
            "train": [
                "train",
                "--data",
                str(data),
                "--no-track",
                "--no-progress",
                "--bundle-out",
                str(out / "bundle.pkl"),
                *eng,
            ],
            "score": [
                "score",
                "--data",
                str(data),
                "--model",
                str(out / "bundle.pkl"),
                "--out",
                str(out / "scores.parquet"),
                *eng,
            ],
            "discover": [
                "discover",
                "--data",
                str(data),
                "--scores",
                str(out / "scores.parquet"),
                "--out",
                str(out / "discovery"),
                "--quiet",
                *eng,
            ],
        }
        for step, cmd in steps.items():
            seconds, peak, ok, note = surfacer(cmd, env, log)
            runs.append(
                Run(name, engine, step, items, events, seconds, peak, ok, "" if ok else note)
            )
            status = "ok" if ok else f"FAILED: {note}"
            print(
                f"  {name} {engine:<6} {step:<9} {seconds:8.1f} s  {peak / 1000:6.2f} GB  {status}",
                flush=True,
            )
            if not ok:
                break
    return outs


def growth_exponent(points: list[tuple[int, float]]) -> float:
    """Slope of log(seconds) on log(items) (NaN with fewer than two sizes)."""
    pts = [(n, s) for n, s in points if n > 0 and s > 0]
    if len({n for n, _ in pts}) < 2:
        return math.nan
    x = np.log([n for n, _ in pts])
    y = np.log([s for _, s in pts])
    return float(np.polyfit(x, y, 1)[0])


def compare_engines(outs: dict[str, Path], tolerance: float) -> list[tuple[str, bool, str]]:
    """Identical snapshots and PR-AUC within `tolerance` per issue, pandas vs Dask."""
    import pandas as pd

    checks: list[tuple[str, bool, str]] = []
    a, b = outs.get("pandas"), outs.get("dask")
    if a is None or b is None:
        return checks
    try:
        pd.testing.assert_frame_equal(
            pd.read_parquet(b / "snapshots.parquet"), pd.read_parquet(a / "snapshots.parquet")
        )
        checks.append(("snapshots identical", True, ""))
    except (AssertionError, OSError) as exc:
        checks.append(("snapshots identical", False, str(exc).splitlines()[0][:100]))
    try:
        with (a / "bundle.pkl").open("rb") as fa, (b / "bundle.pkl").open("rb") as fb:
            ma, mb = pickle.load(fa).metadata["metrics"], pickle.load(fb).metadata["metrics"]
    except OSError as exc:
        checks.append(("PR-AUC per issue", False, str(exc)[:100]))
        return checks
    for key in sorted(k for k in ma if k.endswith(".pr_auc") and not k.startswith("mean.")):
        diff = abs(ma[key] - mb.get(key, math.nan))
        checks.append(
            (
                f"PR-AUC {key.split('.')[0]} within {tolerance}",
                bool(diff <= tolerance),
                f"pandas {ma[key]:.4f}, dask {mb.get(key, math.nan):.4f}",
            )
        )
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="20k,100k,300k,1M",
        help="items of the default world, comma-separated (20k, 1M...); empty: none",
    )
    parser.add_argument(
        "--engines", default="pandas,dask", help="engines to run, comma-separated: pandas, dask"
    )
    parser.add_argument(
        "--heavy-items",
        type=parse_size_or_zero,
        default=100_000,
        help="items of the event-heavy world (0: no such world)",
    )
    parser.add_argument(
        "--heavy-mean-views",
        type=float,
        default=590.0,
        help="mean views per item of the event-heavy world (590: about 600 events per item)",
    )
    parser.add_argument("--days", type=int, default=28, help="days each world simulates")
    parser.add_argument("--seed", type=int, default=0, help="the simulator's seed")
    parser.add_argument(
        "--pandas-max-items",
        type=parse_size,
        default=300_000,
        help="largest world the pandas engine runs on (it holds every event in memory)",
    )
    parser.add_argument(
        "--compare-items",
        type=parse_size_or_zero,
        default=100_000,
        help="the size at which pandas and Dask snapshots and PR-AUC are compared (0: none)",
    )
    parser.add_argument(
        "--memory-target-gb",
        type=float,
        default=8.0,
        help="target: every Dask step's peak (process tree) below this",
    )
    parser.add_argument(
        "--exponent-target",
        type=float,
        default=1.1,
        help="target: total time's growth exponent over items at most this",
    )
    parser.add_argument(
        "--pr-auc-tolerance",
        type=float,
        default=0.01,
        help="target: Dask and pandas PR-AUC per issue within this at --compare-items",
    )
    parser.add_argument(
        "--memory-limit",
        default=None,
        help="SURFACER_DASK_MEMORY_LIMIT for the Dask steps (per worker; default: settings)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / ".surfacer" / "scale",
        help="where the worlds, models and logs go (each world's folder is replaced)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every run here")
    args = parser.parse_args(argv)
    args.events_per_item_hint = 55.0
    sizes = sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()})
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ("pandas", "dask")]
    if bad:
        print(f"error: unknown engine(s) {bad}; expected pandas and/or dask", file=sys.stderr)
        return 2

    runs: list[Run] = []
    compare: list[tuple[str, bool, str]] = []
    for n in sizes:
        outs = run_world(f"default-{n}", n, args, engines, runs, [])
        if n == args.compare_items:
            compare = compare_engines(outs, args.pr_auc_tolerance)
    heavy_name = None
    if args.heavy_items:
        heavy_name = f"heavy-{args.heavy_items}"
        args.events_per_item_hint = 55.0 * args.heavy_mean_views / 52.0
        run_world(
            heavy_name,
            args.heavy_items,
            args,
            engines,
            runs,
            ["--mean-views", str(args.heavy_mean_views)],
        )

    print()
    header = f"{'world':<16} {'engine':<7} {'step':<9} {'items':>9} {'events':>12} {'seconds':>9} {'peak GB':>8}  status"
    print(header)
    print("-" * len(header))
    for r in runs:
        status = "ok" if r.ok else f"FAILED {r.note}"
        print(
            f"{r.world:<16} {r.engine:<7} {r.step:<9} {r.items:>9,} {r.events:>12,} "
            f"{r.seconds:>9.1f} {r.peak_mb / 1000:>8.2f}  {status}"
        )

    print("\ntime growth exponent over items (default world; 1 = linear):")
    default = [r for r in runs if r.world.startswith("default-") and r.ok]
    exponents: dict[str, float] = {}
    for engine in ["-", *engines]:
        for step in [*STEPS, "total"]:
            if step == "total":
                if engine == "-":
                    continue
                totals: dict[int, float] = {}
                complete: dict[int, int] = {}
                for r in default:
                    if r.engine == engine:
                        totals[r.items] = totals.get(r.items, 0.0) + r.seconds
                        complete[r.items] = complete.get(r.items, 0) + 1
                points = [(n, s) for n, s in totals.items() if complete[n] == len(STEPS) - 1]
            else:
                points = [
                    (r.items, r.seconds) for r in default if r.engine == engine and r.step == step
                ]
            if not points:
                continue
            e = growth_exponent(points)
            exponents[f"{engine}:{step}"] = e
            print(
                f"  {engine:<7} {step:<9} {e:6.2f}"
                if math.isfinite(e)
                else f"  {engine:<7} {step:<9}    n/a"
            )

    print("\ntargets:")
    targets: list[tuple[str, str]] = []

    def verdict(name: str, ok: bool | None, detail: str) -> None:
        word = "not run" if ok is None else ("PASS" if ok else "FAIL")
        targets.append((name, word))
        print(f"  {word:<8} {name}: {detail}")

    def peak_check(world: str | None, label: str) -> None:
        rows = [r for r in runs if r.world == world and r.engine == "dask"]
        if not rows:
            verdict(label, None, "no Dask run of this world")
            return
        complete = all(r.ok for r in rows) and len(rows) == len(STEPS) - 1
        peak = max(r.peak_mb for r in rows) / 1000
        sim = [r.peak_mb / 1000 for r in runs if r.world == world and r.step == "simulate"]
        detail = f"largest step peak {peak:.2f} GB (simulate, not a Dask step: {sim[0] if sim else math.nan:.2f} GB)"
        verdict(
            label,
            (peak < args.memory_target_gb) if complete else False if rows else None,
            detail + ("" if complete else "; some step failed"),
        )

    top = f"default-{max(sizes)}" if sizes else None
    peak_check(
        top, f"Dask {max(sizes) if sizes else 0:,} items end to end < {args.memory_target_gb:g} GB"
    )
    if heavy_name:
        events = [r.events for r in runs if r.world == heavy_name and r.step == "simulate"]
        peak_check(
            heavy_name,
            f"Dask event-heavy world ({events[0] if events else 0:,} events) < {args.memory_target_gb:g} GB",
        )
    e = exponents.get("dask:total", math.nan)
    verdict(
        f"Dask time growth exponent <= {args.exponent_target}",
        None if not math.isfinite(e) else e <= args.exponent_target,
        f"{e:.2f} over sizes {', '.join(f'{n:,}' for n in sizes)}"
        if math.isfinite(e)
        else "needs two sizes",
    )
    if compare:
        for name, ok, detail in compare:
            verdict(f"{args.compare_items:,} items: {name}", ok, detail)
    else:
        verdict(
            f"{args.compare_items:,} items: pandas vs Dask", None, "size not run on both engines"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": [asdict(r) for r in runs],
                    "exponents": exponents,
                    "targets": dict(targets),
                    "comparison": [list(c) for c in compare],
                },
                indent=2,
                default=str,
            )
        )
    return 0 if all(w != "FAIL" for _, w in targets) else 1


def parse_size_or_zero(text: str) -> int:
    return 0 if text.strip() in ("0", "") else parse_size(text)


if __name__ == "__main__":
    sys.exit(main())
