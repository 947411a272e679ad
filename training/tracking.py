"""MLflow tracking for one training job: one run, one registered model version, the gate.

`log_training` logs params, metrics, tags, the evaluation tables, plots and the bundle (one
pyfunc model), registers it as a version of settings.model_name with alias `challenger`, runs
the promotion gate against `champion` on the same holdout and moves `champion` if it passes.
It never leaves a half-registered model: on any failure after the version exists, the version
is deleted, aliases it moved are put back and the run ends FAILED.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from common.settings import Settings
from models.pyfunc import MODEL_NAME_IN_RUN, load_bundle, log_bundle
from training.plots import write_plots
from training.registry import (
    CHALLENGER,
    CHAMPION,
    PromotionDecision,
    alias_version,
    client_for,
    decide_promotion,
    restore_alias,
    set_alias,
)

if TYPE_CHECKING:
    from models.bundle import ScoringBundle
    from training.evaluate import EvaluationReport

TAG_FINGERPRINT = "surfacer.dataset_fingerprint"
TAG_GIT_COMMIT = "surfacer.git_commit"
TAG_VERSION = "surfacer.version"
TAG_JOB_KEY = "surfacer.job_key"
TAG_MODEL_VERSION = "surfacer.model_version"
TAG_PROMOTED = "surfacer.promoted"
TAG_DECISION = "surfacer.decision"
TAG_HOLDOUT = "surfacer.holdout"
TAG_GATE_PREFIX = "surfacer.gate."  # + issue: "enabled" or "disabled: reasons"
# MLflow rejects param values longer than this; longer ones are cut and marked.
_MAX_PARAM_CHARS = 6000
_MAX_TAG_CHARS = 5000


@dataclass(frozen=True)
class TrackingResult:
    """Where one training job landed: its run, its model version, and the gate's decision."""

    run_id: str
    model_version: str
    promoted: bool
    decision: dict[str, Any] = field(default_factory=dict)
    reused: bool = False


# --- helpers usable without a bundle ---------------------------------------------------------


def dataset_fingerprint(
    path_or_frames: str | Path | pd.DataFrame | Mapping[str, pd.DataFrame],
) -> str:
    """A stable sha256 of a dataset: its files' names and bytes, or its frames' contents.

    Path: a file, or a folder hashed over its files in sorted relative-path order (hidden
    files skipped). Frames: table names, column names, dtypes and row hashes, in name order.
    """
    digest = hashlib.sha256()
    if isinstance(path_or_frames, str | Path):
        root = Path(path_or_frames)
        if not root.exists():
            raise FileNotFoundError(f"dataset path {root} does not exist")
        files = (
            [root]
            if root.is_file()
            else sorted(
                (p for p in root.rglob("*") if p.is_file()),
                key=lambda p: p.relative_to(root).as_posix(),
            )
        )
        for f in files:
            rel = f.name if f == root else f.relative_to(root).as_posix()
            if any(part.startswith(".") for part in Path(rel).parts):
                continue
            digest.update(b"file\0" + rel.encode() + b"\0")
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()
    frames = (
        {"frame": path_or_frames} if isinstance(path_or_frames, pd.DataFrame) else path_or_frames
    )
    if not isinstance(frames, Mapping):
        raise ValueError(
            f"dataset_fingerprint takes a path, a DataFrame or a mapping of them, "
            f"not {type(path_or_frames).__name__}"
        )
    for name in sorted(frames):
        frame = frames[name]
        digest.update(b"table\0" + str(name).encode() + b"\0")
        for col, dtype in frame.dtypes.items():
            digest.update(f"{col}\0{dtype}\0".encode())
        hashed = pd.util.hash_pandas_object(frame, index=False)
        digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the settings' store and make sure the experiment exists; its id.

    Local stores (the default SQLite under data_dir, or a database URL) keep artifacts in
    settings.artifact_root; an http(s) tracking server keeps them where the server says
    (its --default-artifact-root / proxied artifacts), since the client may not share its disk.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    client = client_for(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    remote = settings.tracking_uri.split(":", 1)[0].lower() in ("http", "https", "databricks")
    return client.create_experiment(
        settings.experiment_name, artifact_location=None if remote else settings.artifact_root
    )


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of the code (None outside a repository)."""
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def surfacer_version() -> str:
    try:
        return importlib.metadata.version("surfacer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as `a.b` -> str, cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
            continue
        if isinstance(value, list | tuple | set):
            text = json.dumps(sorted(value) if isinstance(value, set) else list(value), default=str)
        else:
            text = str(value)
        if len(text) > _MAX_PARAM_CHARS:
            text = text[: _MAX_PARAM_CHARS - 3] + "..."
        out[name] = text
    return out


def job_key(params: Mapping[str, Any], fingerprint: str) -> str:
    """Identity of a training job: same data + same params (incl. seed) = same key."""
    payload = json.dumps(flatten_params(params), sort_keys=True) + "\0" + fingerprint
    return hashlib.sha256(payload.encode()).hexdigest()


def find_existing(
    *, params: Mapping[str, Any], dataset_fingerprint: str, settings: Settings
) -> TrackingResult | None:
    """A finished run of the same job whose model version still exists (for idempotent retrains)."""
    client = client_for(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return None
    key = job_key(params, dataset_fingerprint)
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_JOB_KEY}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    for run in runs:
        version = run.data.tags.get(TAG_MODEL_VERSION)
        if not version:
            continue
        found = client.search_model_versions(
            f"name='{settings.model_name}' and run_id='{run.info.run_id}'"
        )
        if not any(str(mv.version) == version for mv in found):
            continue
        try:
            decision = json.loads(run.data.tags.get(TAG_DECISION, "{}") or "{}")
        except json.JSONDecodeError:
            decision = {}
        return TrackingResult(
            run_id=run.info.run_id,
            model_version=version,
            promoted=run.data.tags.get(TAG_PROMOTED) == "true",
            decision=decision,
            reused=True,
        )
    return None


# --- the training run -----------------------------------------------------------------------


def _write_evaluation(report: EvaluationReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = report.metrics_table().reset_index()
    table.to_csv(out / "overall.csv", index=False)
    overall = {
        "issues": {
            issue: {k: (float(v) if math.isfinite(float(v)) else None) for k, v in m.items()}
            for issue, m in report.overall.items()
        },
        "primary_metric": (
            report.primary_metric() if math.isfinite(report.primary_metric()) else None
        ),
        "holdout": report.holdout.describe(),
        "capacity_per_day": report.capacity_per_day,
    }
    (out / "overall.json").write_text(json.dumps(overall, indent=2, default=str))
    segments = report.segments.copy()
    segments.to_csv(out / "segments.csv", index=False)
    segments.to_parquet(out / "segments.parquet", index=False)


def _log_run_content(
    report: EvaluationReport,
    *,
    params: Mapping[str, Any],
    fingerprint: str,
    key: str,
) -> None:
    client = MlflowClient()
    run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    tags = {
        TAG_FINGERPRINT: fingerprint,
        TAG_VERSION: surfacer_version(),
        TAG_JOB_KEY: key,
        TAG_HOLDOUT: json.dumps(report.holdout.describe(), default=str)[:_MAX_TAG_CHARS],
    }
    commit = git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
        tags["mlflow.source.git.commit"] = commit
    mlflow.set_tags(tags)
    flat = flatten_params(params)
    items = list(flat.items())
    for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
        mlflow.log_params(dict(items[i : i + 100]))
    metrics = report.flat_metrics()
    names = list(metrics)
    for i in range(0, len(names), 1000):
        mlflow.log_metrics({n: metrics[n] for n in names[i : i + 1000]})
    gate = report.extra.get("gate") or {}
    if gate:
        # the quality gate's verdict per issue: a tag each (searchable), the numbers as JSON
        mlflow.set_tags(
            {
                f"{TAG_GATE_PREFIX}{issue}": (
                    "enabled" if v["enabled"] else "disabled: " + "; ".join(v["reasons"])
                )[:_MAX_TAG_CHARS]
                for issue, v in gate.items()
            }
        )
        mlflow.log_dict(gate, "gate.json")
    if report.extra.get("intake"):
        mlflow.log_dict(
            {
                "intake": report.extra["intake"],
                "label_counts": report.extra.get("label_counts") or {},
            },
            "intake.json",
        )
    with tempfile.TemporaryDirectory(prefix="surfacer-run-") as tmp:
        root = Path(tmp)
        _write_evaluation(report, root / "evaluation")
        write_plots(report, root / "plots")
        client.log_artifacts(run_id, str(root / "evaluation"), "evaluation")
        client.log_artifacts(run_id, str(root / "plots"), "plots")


def _load_champion(
    settings: Settings, client: MlflowClient
) -> tuple[ScoringBundle | None, str | None, str | None]:
    """(bundle, version, load error) of the current champion."""
    mv = alias_version(client, settings.model_name, CHAMPION)
    if mv is None:
        return None, None, None
    try:
        bundle = load_bundle(
            f"models:/{settings.model_name}/{mv.version}",
            tracking_uri=settings.tracking_uri,
            registry_uri=settings.registry_uri,
        )
        return bundle, str(mv.version), None
    except Exception as exc:  # any failure: reported in the decision, gate refuses to promote
        return None, str(mv.version), f"{type(exc).__name__}: {exc}"


def _decision_tag(decision: PromotionDecision) -> str:
    """The verdict and reasons as JSON short enough for a tag (whole reasons dropped, not cut)."""
    reasons = list(decision.reasons)
    while True:
        text = json.dumps({"promote": decision.promote, "reasons": reasons})
        if len(text) <= _MAX_TAG_CHARS or not reasons:
            return text
        reasons = [*reasons[:-2], "... (see decision.json)"] if len(reasons) > 1 else []


def _note_holdout(
    decision: PromotionDecision,
    client: MlflowClient,
    settings: Settings,
    report: EvaluationReport,
) -> None:
    """Record whether the champion was evaluated on the same split as the candidate.

    Re-scoring on the candidate's holdout is fair only if the champion did not train on those
    rows; a champion from another split (e.g. a stratified split with another seed) may have,
    which flatters it. Not blocking — the gate stays conservative — but the reader should know.
    """
    if decision.champion_version is None:
        return
    try:
        mv = client.get_model_version(settings.model_name, decision.champion_version)
        theirs = client.get_run(mv.run_id).data.tags.get(TAG_HOLDOUT) if mv.run_id else None
    except mlflow.exceptions.MlflowException:
        theirs = None
    if theirs is None:
        return
    ours = json.dumps(report.holdout.describe(), default=str)[:_MAX_TAG_CHARS]
    decision.same_holdout = theirs == ours
    if not decision.same_holdout:
        decision.reasons.append(
            f"note: champion v{decision.champion_version} was evaluated on another split "
            f"({theirs}); it may have trained on some of these holdout rows, which flatters it"
        )


def log_training(
    bundle: ScoringBundle,
    report: EvaluationReport,
    *,
    params: dict[str, Any],
    dataset_fingerprint: str,
    settings: Settings,
    tolerance: float | None = None,
    primary_issue: str | None = None,
    promote: bool = True,
    reuse_existing: bool = False,
) -> TrackingResult:
    """Log one training job as one MLflow run, register its bundle and apply the gate.

    `params` should hold every training parameter, the seed and the data path. The gate's
    tolerance and primary issue default to settings.promotion_tolerance and
    settings.primary_issue (SURFACER_PROMOTION_TOLERANCE, SURFACER_PRIMARY_ISSUE); an unknown
    primary issue falls back to the mean with a note. With `promote=False` the gate still runs and
    its verdict is logged, but `champion` is not moved. With `reuse_existing`, a finished run
    of the same job (same params and data fingerprint) whose version still exists is returned
    instead of logging a duplicate.
    """
    if reuse_existing:
        existing = find_existing(
            params=params, dataset_fingerprint=dataset_fingerprint, settings=settings
        )
        if existing is not None:
            return existing
    if tolerance is None:
        tolerance = settings.promotion_tolerance
    primary_note = None
    if primary_issue is None:
        primary_issue = settings.primary_issue
        if primary_issue is not None and primary_issue not in bundle.issue_names:
            # a configured default that this dataset's issues don't have: not an error
            primary_note = (
                f"note: configured primary issue {primary_issue!r} is not scored by this "
                f"model ({bundle.issue_names}); the primary metric is the mean PR-AUC"
            )
            primary_issue = None
    experiment_id = configure_mlflow(settings)
    client = client_for(settings)
    name = settings.model_name
    key = job_key(params, dataset_fingerprint)

    version: str | None = None
    moved: dict[str, str | None] = {}  # alias -> version it held before we moved it
    created_model = False
    run = mlflow.start_run(experiment_id=experiment_id)
    run_id = run.info.run_id
    try:
        _log_run_content(report, params=params, fingerprint=dataset_fingerprint, key=key)
        info = log_bundle(bundle, registered_model_name=None, name=MODEL_NAME_IN_RUN)
        try:
            client.create_registered_model(name)
            created_model = True
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        champion, champion_version, champion_error = _load_champion(settings, client)
        mv = client.create_model_version(
            name,
            source=info.model_uri,
            run_id=run_id,
            model_id=info.model_id,
            tags={TAG_FINGERPRINT: dataset_fingerprint, TAG_JOB_KEY: key},
        )
        version = str(mv.version)
        decision: PromotionDecision = decide_promotion(
            bundle,
            report.test_frame,
            champion=champion,
            champion_version=champion_version,
            champion_error=champion_error,
            tolerance=tolerance,
            primary_issue=primary_issue,
        )
        decision.candidate_version = version
        if primary_note:
            decision.reasons.append(primary_note)
        _note_holdout(decision, client, settings, report)
        if decision.promote and not promote:
            decision.promote = False
            decision.reasons.append("gate passed, but promotion is disabled for this job")
        payload = decision.to_dict()
        mlflow.log_dict(payload, "decision.json")
        mlflow.set_tags(
            {
                TAG_MODEL_VERSION: version,
                TAG_PROMOTED: str(decision.promote).lower(),
                TAG_DECISION: _decision_tag(decision),
            }
        )
        for issue, value in decision.candidate_metrics.items():
            if math.isfinite(value):
                client.set_model_version_tag(name, version, f"{issue}.pr_auc", f"{value:.6f}")
        for issue, why in (getattr(bundle, "disabled", None) or {}).items():
            client.set_model_version_tag(name, version, f"{issue}.disabled", why[:_MAX_TAG_CHARS])
        moved[CHALLENGER] = set_alias(client, name, CHALLENGER, version)
        if decision.promote:
            moved[CHAMPION] = set_alias(client, name, CHAMPION, version)
    except BaseException:
        _undo(client, name, run_id, moved, drop_model=created_model)
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.end_run(status=RunStatus.to_string(RunStatus.FINISHED))
    return TrackingResult(
        run_id=run_id, model_version=version, promoted=decision.promote, decision=payload
    )


def _undo(
    client: MlflowClient,
    name: str,
    run_id: str,
    moved: Mapping[str, str | None],
    *,
    drop_model: bool,
) -> None:
    """Put moved aliases back and delete every version this run registered (best effort).

    The registered model itself goes too when this run created it and it is left empty.
    """
    # Keep undoing whatever fails; the original error is what the caller sees.
    for alias, before in moved.items():
        with contextlib.suppress(Exception):
            restore_alias(client, name, alias, before)
    versions = []
    with contextlib.suppress(Exception):
        versions = list(client.search_model_versions(f"name='{name}' and run_id='{run_id}'"))
    for mv in versions:
        with contextlib.suppress(Exception):
            client.delete_model_version(name, str(mv.version))
    if drop_model:
        with contextlib.suppress(Exception):
            if not client.search_model_versions(f"name='{name}'"):
                client.delete_registered_model(name)
