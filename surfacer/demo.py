"""The main job end to end on the embedded default data: simulate, train, score, discover.

`surfacer demo` (and `make demo`) runs this on a fresh machine: it writes a simulated
ecosystem, trains and registers a model in the local MLflow store (it becomes @champion
through the promotion gate), scores every snapshot and puts the flagged ones in the review
queue, runs issue discovery into the folder the service reads, and checks what it found
against the incidents the simulator planted. Afterwards `surfacer serve --dev-key` shows the
queue and the discovery report in the analyst console.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from models.bundle import ScoringBundle

# Where `surfacer serve` listens by default, for the console address the demo prints.
CONSOLE_URL = "http://127.0.0.1:8000/console"
# Reason codes per flagged issue in the queue, as the scoring service stores them.
TOP_REASONS = 5


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
    queued: int = 0
    incidents: int = 0
    review_db_url: str = ""
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
    """Simulate `items` items over `days`, then train, score, queue and discover on them.

    The data, scores and simulation go under `out`; the flagged snapshots go into the review
    store and the discovery report into `settings.discovery_path`, where the service reads
    them.
    """
    import orjson
    import pandas as pd

    from common.console import render
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
    data_dir, scores_path = out / "data", out / "scores.parquet"
    discovery_dir = settings.discovery_path
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    log(f"[1/4] simulating {items:,} items over {days} days (seed {seed}) -> {data_dir}")
    sim = simulate(SimConfig(n_items=items, days=days, seed=seed), progress=progress)
    write_simulation(sim, data_dir, overwrite=True)
    timings["simulate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log(f"[2/4] training all issue types; MLflow store {settings.tracking_uri}")
    # under the name `surfacer serve` loads (settings.model_name), whatever the data calls itself
    result = train(
        data_dir,
        settings=settings,
        random_state=seed,
        progress=progress,
        log=log,
        model_name=settings.model_name,
    )
    timings["train"] = time.perf_counter() - t0
    log(render(_metrics_table(result.metrics)))
    for issue, why in result.bundle.disabled.items():
        log(f"{issue}: disabled by the quality gate ({why})")
    log(
        f"model version {result.model_version}"
        f" ({'promoted to @champion' if result.promoted else 'stays @challenger'})"
    )

    t0 = time.perf_counter()
    log(f"[3/4] scoring every snapshot -> {scores_path}; flagged ones -> the review queue")
    tables = load_dataset(data_dir)
    snapshots = build_snapshots(tables, progress=progress)
    scores = score_dataset(result.bundle, snapshots)
    scores.to_parquet(scores_path, index=False)
    queued = queue_flagged(
        result.bundle, snapshots, scores, result.model_version or "untracked", settings
    )
    timings["score"] = time.perf_counter() - t0
    log(
        f"{len(scores):,} snapshots scored, {queued:,} flagged into the review store "
        f"{_redact(settings.review_db_url)}"
    )

    t0 = time.perf_counter()
    log(f"[4/4] discovering incidents -> {discovery_dir}")
    if result.bundle.enabled_issues:
        found = discover(tables, scores, progress=progress)
    else:
        # a model that scores nothing: discovery falls back to the raw proxies
        log("no issue passed the quality gate: discovery uses raw proxies, not scores")
        found = discover(tables, None, progress=progress)
    write_discovery(found, discovery_dir)
    for line in found.skipped_lines():
        log(line)
    timings["discover"] = time.perf_counter() - t0
    planted = orjson.loads((data_dir / "incidents.json").read_bytes())
    start, end = found.data_range
    evaluation = match_incidents(
        found.incidents_json(), planted, data_start=pd.Timestamp(start), data_end=pd.Timestamp(end)
    )
    log(render(_planted_table(evaluation)))
    log(
        f"{len(found.incidents)} incidents detected; planted found within 24 h:"
        f" {evaluation['found']}/{evaluation['planted']};"
        f" false alarms per week: {evaluation['false_alarms_per_week']:.2f}"
    )
    log(f"report: {discovery_dir / 'report.html'}")
    recorded = record_incidents(
        found, tables, scores, planted, evaluation, result.model_version or "untracked", settings
    )
    log(
        f"{recorded} incident(s) in the review store: the console's Incidents page "
        "(acknowledge one to queue its evidence items)"
    )
    log(
        "\nnext:\n"
        "  make serve    scoring API + analyst console (= uv run surfacer serve --dev-key)\n"
        f"  console       {CONSOLE_URL}: log in as `dev` with the password serve prints\n"
        "  uv run surfacer models    the registered model versions\n"
        f"  uv run surfacer replay --data {data_dir} --speed 3600 --key <the key serve prints>\n"
        "                live surfacing: the simulated days stream into the running service in\n"
        "                event time (an hour a second); flags appear in the console as they happen"
    )
    return DemoResult(
        data_dir=data_dir,
        scores_path=scores_path,
        discovery_dir=discovery_dir,
        model_version=result.model_version,
        promoted=result.promoted,
        metrics=result.metrics,
        evaluation=evaluation,
        queued=queued,
        incidents=recorded,
        review_db_url=settings.review_db_url,
        timings=timings,
    )


def record_incidents(
    found: Any,
    tables: Any,
    scores: pd.DataFrame,
    planted: list[dict[str, Any]],
    evaluation: dict[str, Any],
    model_version: str,
    settings: Settings,
) -> int:
    """Upsert the discovered incidents into the review store (as `surfacer discover --store`
    does) and give the ones that match a planted incident its true start, so the console's
    time to detect counts from it. Returns how many incidents the store holds."""
    from discovery.record import incident_records
    from serving.review import ReviewStore

    records = incident_records(found, tables, scores, model_version=model_version)
    store = ReviewStore.from_settings(settings)
    try:
        store.migrate()
        summary = store.upsert_incidents(records)
        starts = {str(p["id"]): p["start"] for p in planted}
        for pid, hit in evaluation["matches"].items():
            if not hit:
                continue
            for rec, iid in zip(records, summary.matched, strict=True):
                if iid is not None and (rec["issue"], rec["segment"], rec["detected_at"]) == (
                    hit["issue"],
                    hit["segment"],
                    hit["detected_at"],
                ):
                    store.set_true_start(iid, starts[pid])
        return store.list_incidents(limit=1).total
    finally:
        store.close()


def queue_flagged(
    bundle: ScoringBundle,
    snapshots: pd.DataFrame,
    scores: pd.DataFrame,
    model_version: str,
    settings: Settings,
) -> int:
    """Put the flagged rows of `scores` (from `snapshots`, row for row) in the review store,
    with their reason codes, as the scoring service would; returns how many went in."""
    import numpy as np

    from serving.flag_writer import flagged_item
    from serving.review import ReviewStore

    rows = np.flatnonzero(scores["flagged"].to_numpy(dtype=object) != "")
    if len(rows) == 0:
        return 0
    records = [
        {str(k): _plain(v) for k, v in r.items()} for r in snapshots.iloc[rows].to_dict("records")
    ]
    flags = [f.split(",") for f in scores["flagged"].iloc[rows]]
    probs = scores.iloc[rows][bundle.issue_names].to_dict("records")
    reasons: list[dict[str, list[dict[str, Any]]]] = [{} for _ in rows]
    design = bundle.design_records(records)
    for issue in bundle.issue_names:
        picked = [k for k, f in enumerate(flags) if issue in f]
        if picked:
            explained = bundle.explain_design(
                [records[k] for k in picked], design.take(picked), issue, TOP_REASONS
            )
            for k, why in zip(picked, explained, strict=True):
                reasons[k][issue] = why
    now = datetime.now(UTC)
    items = [
        flagged_item(rec, p, f, why, model_version, now)
        for rec, p, f, why in zip(records, probs, flags, reasons, strict=True)
    ]
    store = ReviewStore.from_settings(settings)
    try:
        store.migrate()
        store.sink().write(items)
    finally:
        store.close()
    return len(items)


def _plain(value: Any) -> Any:
    # A snapshot cell as the service's validated request holds it: None for unknown (NaN,
    # NaT, NA), datetimes and Python numbers rather than pandas and numpy scalars.
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value))):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


def _redact(url: str) -> str:
    # a PostgreSQL URL may carry a password
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _metrics_table(metrics: dict[str, dict[str, float]]) -> Any:
    from common.console import table

    nan = float("nan")

    def ratio(a: float, b: float) -> float:
        return a / b if b and b == b else nan

    return table(
        ["issue", "pr_auc", "vs oracle", "vs latent state", "precision@thr", "recall@thr"],
        [
            [
                issue,
                m.get("pr_auc", nan),
                ratio(m.get("pr_auc", nan), m.get("oracle_pr_auc", nan)),
                ratio(m.get("pr_auc", nan), m.get("oracle_state_pr_auc", nan)),
                m.get("precision_at_threshold", nan),
                m.get("recall_at_threshold", nan),
            ]
            for issue, m in metrics.items()
        ],
        title="holdout metrics (oracle columns: share of what the simulator's truth reaches)",
    )


def _planted_table(evaluation: dict[str, Any]) -> Any:
    from common.console import table

    return table(
        ["planted incident", "found in segment", "detected at"],
        [
            [pid, _segment(hit["segment"]), hit["detected_at"]] if hit else [pid, "not found", "-"]
            for pid, hit in evaluation["matches"].items()
        ],
        numeric=[],
    )


def _segment(segment: Any) -> str:
    if isinstance(segment, dict):
        return ",".join(f"{k}={v}" for k, v in segment.items()) or "(platform)"
    return str(segment)
