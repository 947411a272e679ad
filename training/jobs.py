"""The functions behind `surfacer train` and `surfacer score` (tests call these directly)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from common.console import render, table
from common.settings import Settings, get_settings
from features.schema import DEFAULT_HORIZONS_H
from models.batch import score_dataset
from models.bundle import ScoringBundle
from training.pipeline import TrainResult, train

TABLE_COLUMNS = (
    "n",
    "positives",
    "enabled",
    "pr_auc",
    "pr_auc_lo",
    "pr_auc_hi",
    "roc_auc",
    "roc_auc_lo",
    "roc_auc_hi",
    "threshold",
    "flagged_share",
    "precision_at_threshold",
    "recall_at_threshold",
    "f1_at_threshold",
    "mcc_at_threshold",
    "valid_flagged_share",
    "valid_precision",
    "precision_floor",
    "precision_at_k",
    "brier",
    "ece",
    "baseline_pr_auc",
    "oracle_pr_auc",
    "pr_auc_vs_oracle",
    "oracle_state_pr_auc",
)


COUNT_METRICS = ("n", "positives", "enabled")


def metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> Any:
    """A rich table with a row per metric and a column per issue (any number of issues fits)."""
    present = [c for c in TABLE_COLUMNS if any(c in m for m in metrics.values())]
    rows = [
        [
            name,
            *(
                int(m[name])
                if name in COUNT_METRICS and math.isfinite(m.get(name, math.nan))
                else m.get(name, math.nan)
                for m in metrics.values()
            ),
        ]
        for name in present
    ]
    return table(["metric", *metrics], rows)


def intake_and_labels(result: TrainResult) -> list[str]:
    """Rows read, dropped (with reasons) and repaired; labelled rows and positives per issue."""
    from training.data import intake_lines

    extra = result.report.extra
    lines = intake_lines(extra.get("intake") or {})
    for issue, counts in (extra.get("label_counts") or {}).items():
        parts = ", ".join(
            f"{split} {n:,} labelled / {pos:,} positive" for split, (n, pos) in counts.items()
        )
        lines.append(f"labels {issue}: {parts}")
    return lines


def gate_lines(result: TrainResult) -> list[str]:
    """The quality gate's decision per issue, with its reasons."""
    lines = []
    for issue, verdict in (result.report.extra.get("gate") or {}).items():
        state = "enabled" if verdict["enabled"] else "DISABLED"
        why = "; ".join(verdict["reasons"])
        lines.append(f"quality gate {issue}: {state}" + (f" — {why}" if why else ""))
    return lines


def format_result(result: TrainResult) -> str:
    """The intake, the metrics table, the gate per issue and the run/registry outcome, as
    `surfacer train` prints them."""
    lines = intake_and_labels(result)
    lines.append(render(metrics_table(result.report.overall)))
    lines.extend(gate_lines(result))
    if not result.bundle.enabled_issues:
        lines.append(
            "no issue passed the quality gate: this model would flag nothing, so it does not "
            "become @champion (more labelled rows, or a dataset with signal, may change that)"
        )
    holdout = result.report.holdout.describe()
    lines.append(
        f"holdout: {holdout['kind']} split, {holdout['n_rows']} labelled test rows, "
        f"{holdout['n_items']} items"
        + (f", {holdout['start']} .. {holdout['end']}" if holdout["start"] else "")
    )
    if result.run_id is not None and result.reused:
        lines.append(
            f"same data and parameters as run {result.run_id}: reused model version "
            f"{result.model_version} (nothing new registered)"
        )
    elif result.run_id is not None:
        lines.append(
            f"run {result.run_id}, model {result.model_name} version {result.model_version}, "
            f"{'promoted to @champion' if result.promoted else 'not promoted (@challenger)'}"
        )
        reasons = result.decision.get("reasons") if result.decision else None
        if reasons:
            lines.extend(f"  gate: {r}" for r in reasons)
    else:
        lines.append("not tracked (--no-track)")
    if result.timings:
        # where the time and the memory went (memory: the process tree, workers included)
        lines.append(
            "stages: "
            + ", ".join(
                f"{name} {seconds:.1f} s"
                + (
                    f" {result.stage_peak_bytes[name] / 1e9:.2f} GB"
                    if name in result.stage_peak_bytes
                    else ""
                )
                for name, seconds in result.timings.items()
            )
        )
    if (
        result.run_id is not None
        and result.model_name
        and result.serving_name
        and result.model_name != result.serving_name
    ):
        lines.append(
            f"note: `surfacer serve` loads models:/{result.serving_name}@champion; to serve this "
            f"model set SURFACER_MODEL_NAME={result.model_name}"
        )
    return "\n".join(lines)


def train_command(
    data: Path,
    *,
    seed: int | None = None,
    capacity: int | None = None,
    promote: bool = True,
    track: bool = True,
    bundle_out: Path | None = None,
    issues: list[str] | None = None,
    settings: Settings | None = None,
    progress: bool = True,
    engine: str = "pandas",
    scheduler: str | None = None,
    model_name: str | None = None,
    max_rows: int | None = None,
) -> str:
    """Run one training job and return the text `surfacer train` prints.

    `progress` reports each stage on stderr: a bar on a terminal, a line per stage in a log.
    """
    settings = settings or get_settings()
    result = train(
        data,
        settings=settings,
        random_state=settings.random_state if seed is None else seed,
        capacity_per_day=capacity,
        track=track,
        promote=promote,
        only_issues=issues or None,
        progress=progress,
        engine=engine,
        scheduler=scheduler,
        model_name=model_name,
        max_rows=max_rows,
    )
    if bundle_out is not None:
        save_bundle(result.bundle, bundle_out)
    return format_result(result)


def save_bundle(bundle: ScoringBundle, path: Path) -> Path:
    """Pickle a bundle atomically (write a sibling temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(bundle, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return path


def load_model(ref: str, *, settings: Settings | None = None) -> ScoringBundle:
    """A bundle from a pickle file, a downloaded MLflow model folder, or an MLflow model URI."""
    path = Path(ref)
    if path.is_file():
        try:
            with path.open("rb") as fh:
                bundle = pickle.load(fh)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as exc:
            # any file can be named here: a Parquet file, a truncated pickle, another program's
            raise ValueError(
                f"model file {ref!r} is not a pickled ScoringBundle (from `surfacer train "
                f"--bundle-out`): {type(exc).__name__}: {' '.join(str(exc).split())}"
            ) from None
        if not isinstance(bundle, ScoringBundle):
            raise ValueError(f"{ref!r} holds a {type(bundle).__name__}, expected a ScoringBundle")
        return bundle
    from models.pyfunc import load_bundle, load_bundle_from_dir

    if path.is_dir():
        return load_bundle_from_dir(path)
    if ":" not in ref:
        raise FileNotFoundError(
            f"model {ref!r} is neither a file, a folder nor a URI such as models:/surfacer@champion"
        )
    settings = settings or get_settings()
    return load_bundle(ref, tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


class ScoreResult(NamedTuple):
    """What `score_to_file` wrote: the file, rows scored, rows flagged, and the source rows
    of a flat spec left unscored (reason -> rows; a row may carry several reasons)."""

    path: Path
    rows: int
    flagged: int
    not_scored: int = 0
    reasons: dict[str, int] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)


def score_lines(result: ScoreResult) -> list[str]:
    """`surfacer score`'s report: what was scored, and which source rows got no score, why."""
    lines = [f"scored {result.rows} rows ({result.flagged} flagged) -> {result.path}"]
    if result.not_scored:
        lines.append(
            f"not scored {result.not_scored:,} source rows (dropped on loading, absent from "
            "the output):"
        )
        lines += [f"  {n:,}: {why}" for why, n in result.reasons.items()]
    return lines


def _rows_to_score(data: Path) -> tuple[pd.DataFrame, int, dict[str, int]]:
    """The rows to score (a dataset folder's snapshots, or a flat spec's items), the flat
    source rows left out and their reasons."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"data {str(data)!r} does not exist")
    if data.is_dir():
        from features.io import load_dataset
        from features.snapshot import build_snapshots

        return build_snapshots(load_dataset(data), DEFAULT_HORIZONS_H, progress=True), 0, {}
    if data.suffix.lower() == ".toml":
        from features.flat import load_flat

        ds = load_flat(data, labels_required=False)  # new items have no labels yet
        ds.check_usable()
        return ds.frame, len(ds.dropped), ds.drop_reasons()
    raise ValueError(f"data {str(data)!r} is neither a dataset folder nor a .toml spec")


def score_to_file(
    data: Path, model: str, out: Path, *, engine: str = "pandas", scheduler: str | None = None
) -> ScoreResult:
    """Score a dataset with a model and write Parquet (see `ScoreResult` for the return).

    `engine="dask"` builds the snapshots and scores them on one Dask cluster (common.cluster):
    a dataset folder's rows are scored on the workers that make them
    (`models.batch.score_folder_dask`), a flat spec's rows are read here and scored there.
    """
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise ValueError(f"scores output must be a .parquet file, got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"scores output {str(out)!r} is a folder; expected a .parquet file")
    bundle = load_model(model)
    if engine == "dask" and Path(data).is_dir():
        # scored where the snapshots are made: the client receives scores, never the rows
        from models.batch import score_folder_dask

        scored = score_folder_dask(
            bundle, data, DEFAULT_HORIZONS_H, scheduler=scheduler, progress=True
        )
        left, reasons = 0, {}
    elif engine == "dask":
        from common.cluster import dask_client

        with dask_client(scheduler, announce=True):
            snaps, left, reasons = _rows_to_score(data)
            scored = score_dataset(bundle, snaps, engine="dask", progress=True)
    else:
        snaps, left, reasons = _rows_to_score(data)
        scored = score_dataset(bundle, snaps, engine=engine)  # type: ignore[arg-type]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        scored.to_parquet(tmp, index=False)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    flagged = int((scored["flagged"] != "").sum())
    return ScoreResult(out, len(scored), flagged, left, reasons)
