"""The main job end to end on the embedded default data: simulate, train, score, discover.

`surfacer demo` (and `make demo`) runs this on a fresh machine: it writes a simulated
ecosystem, trains and registers a model in the local MLflow store (it becomes @champion
through the promotion gate), scores every snapshot, runs issue discovery and checks what it
found against the incidents the simulator planted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.settings import Settings, get_settings


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and what it measured."""

    data_dir: Path
    scores_path: Path
    discovery_dir: Path
    model_version: str | None
    promoted: bool
    metrics: dict[str, dict[str, float]]
    evaluation: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def run_demo(
    out: str | Path,
    *,
    items: int = 20_000,
    days: int = 28,
    seed: int = 0,
    settings: Settings | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Simulate `items` items over `days`, then train, score and discover on them."""
    import orjson
    import pandas as pd

    from discovery.evaluate import match_incidents
    from discovery.pipeline import discover
    from discovery.report import write_discovery
    from features.io import load_dataset
    from features.snapshot import build_snapshots
    from models.batch import score_dataset
    from simulator import SimConfig, simulate, write_simulation
    from training.pipeline import train

    settings = settings or get_settings()
    out = Path(out)
    data_dir, scores_path, discovery_dir = out / "data", out / "scores.parquet", out / "discovery"
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    log(f"[1/4] simulating {items:,} items over {days} days (seed {seed}) -> {data_dir}")
    sim = simulate(SimConfig(n_items=items, days=days, seed=seed), progress=progress)
    write_simulation(sim, data_dir, overwrite=True)
    timings["simulate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log(f"[2/4] training all issue types; MLflow store {settings.tracking_uri}")
    result = train(data_dir, settings=settings, random_state=seed, progress=progress, log=log)
    timings["train"] = time.perf_counter() - t0
    nan = float("nan")
    for issue, m in result.metrics.items():
        pr = m.get("pr_auc", nan)
        log(
            f"      {issue:<22} pr_auc {pr:.3f}"
            f"  vs propensity oracle {pr / m.get('oracle_pr_auc', nan):.2f}"
            f"  vs latent-state oracle {pr / m.get('oracle_state_pr_auc', nan):.2f}"
            f"  precision@thr {m.get('precision_at_threshold', nan):.3f}"
            f"  recall@thr {m.get('recall_at_threshold', nan):.3f}"
        )
    log(
        f"      model version {result.model_version}"
        f" ({'promoted to @champion' if result.promoted else 'stays @challenger'})"
    )

    t0 = time.perf_counter()
    log(f"[3/4] scoring every snapshot -> {scores_path}")
    tables = load_dataset(data_dir)
    scores = score_dataset(result.bundle, build_snapshots(tables, progress=progress))
    scores.to_parquet(scores_path, index=False)
    timings["score"] = time.perf_counter() - t0
    log(f"      {len(scores):,} snapshots scored, {int((scores['flagged'] != '').sum()):,} flagged")

    t0 = time.perf_counter()
    log(f"[4/4] discovering incidents -> {discovery_dir}")
    found = discover(tables, scores, progress=progress)
    write_discovery(found, discovery_dir)
    timings["discover"] = time.perf_counter() - t0
    planted = orjson.loads((data_dir / "incidents.json").read_bytes())
    start, end = found.data_range
    evaluation = match_incidents(
        found.incidents_json(), planted, data_start=pd.Timestamp(start), data_end=pd.Timestamp(end)
    )
    log(
        f"      {len(found.incidents)} incidents detected; planted found within 24 h:"
        f" {evaluation['found']}/{evaluation['planted']};"
        f" false alarms per week: {evaluation['false_alarms_per_week']:.2f}"
    )
    for pid, hit in evaluation["matches"].items():
        where = f"{hit['segment']} detected {hit['detected_at']}" if hit else "not found"
        log(f"      planted {pid}: {where}")
    log(f"      report: {discovery_dir / 'report.html'}")
    log(
        "next: `uv run surfacer serve --dev-key` serves @champion with the analyst console;"
        " `uv run surfacer models` lists versions."
    )
    return DemoResult(
        data_dir=data_dir,
        scores_path=scores_path,
        discovery_dir=discovery_dir,
        model_version=result.model_version,
        promoted=result.promoted,
        metrics=result.metrics,
        evaluation=evaluation,
        timings=timings,
    )
