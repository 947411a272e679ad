"""The retraining job: data -> split -> per-issue fit -> calibrate -> threshold -> evaluate -> log.

`train()` fits and evaluates everything before it touches MLflow, so a failure (bad data,
missing labels, a fit error) leaves no run and no model version behind; only a complete
bundle with its report is handed to `training.tracking.log_training`.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from common.progress import Progress
from common.settings import Settings, get_settings
from features.schema import DEFAULT_HORIZONS_H
from features.transform import FeatureTransform
from models.bundle import (
    TEXT_SCORE_FEATURE,
    VARIANTS,
    Calibrator,
    IssueModel,
    ScoringBundle,
    TextModel,
    blend_probability,
    hashed_text,
    logit,
)
from models.issues import IssueType
from training.data import TrainingData, first_label_strata, load_training_data, sample_rows
from training.evaluate import (
    EvaluationReport,
    Holdout,
    calibration_bins,
    issue_metrics,
    label_column,
    pr_auc,
    pr_curve,
    roc_auc,
    segment_metrics,
)
from training.fit import (
    BoosterParams,
    fit_booster,
    fit_calibrator,
    fit_text_model_cv,
)
from training.gate import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONFIDENCE,
    IssueVerdict,
    disabled_verdict,
    judge_issue,
)
from training.split import (
    DEFAULT_FRACTIONS,
    SplitResult,
    item_sample,
    stratified_split,
    time_split,
)
from training.thresholds import ThresholdChoice, ThresholdPolicy, choose_threshold

STACKED_PREFIX = "score_"
# the one feature (and reason code) of the linear variant
LINEAR_SCORE_FEATURE = "linear_score"
# Choosing among the variants (see _choose_variant): a paired bootstrap over items of the
# rows every candidate has honest scores for. A candidate is "clearly worse" than the best
# when it scores below it in at least SELECTION_CONFIDENCE of the resamples; the candidates
# that are not are blended. The level is the usual one-sided 95%, not tuned to any world.
SELECTION_BOOTSTRAP = 200
SELECTION_CONFIDENCE = 0.95
# ties on the point estimate go to the simpler model (earlier in this order)
SIMPLICITY = ("tabular", "text", "linear", "stacked", "blend")
STAGES = ("load", "split", "transform", "fit", "evaluate", "log")
# Snapshot rows transformed at a time (design_matrix).
DESIGN_BLOCK_ROWS = 50_000
# Past this many rows, an issue's text and linear models are fitted on a stratified sample
# of whole items of about this many rows (fit_text_bounded): their cross-validated fits copy
# the rows' hashed text once per fold and C, so their memory grows with the rows fitted.
TEXT_FIT_MAX_ROWS = 250_000


@dataclass
class TrainResult:
    """What a training job produced: the run and version (when tracked) and what was measured."""

    run_id: str | None
    model_version: str | None
    metrics: dict[str, dict[str, float]]
    promoted: bool
    bundle: ScoringBundle
    report: EvaluationReport
    fingerprint: str
    decision: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # the largest RSS of the whole process tree (Dask workers included) seen in each stage
    stage_peak_bytes: dict[str, int] = field(default_factory=dict)
    reused: bool = False  # the same job (data fingerprint + params) was already logged
    model_name: str | None = None  # the registered model it was logged under
    serving_name: str | None = None  # the name `surfacer serve` loads (settings.model_name)


@dataclass(frozen=True)
class _Split:
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


class _Timer:
    """Wall time and peak memory per stage, and a line (or a bar on a terminal) per stage
    when asked.

    The memory is the process tree's (this process and its Dask LocalCluster workers), so
    that a run at scale says which stage needs the memory, not only that some stage did.
    """

    def __init__(self, progress: bool) -> None:
        self.timings: dict[str, float] = {}
        self.peak_bytes: dict[str, int] = {}
        # fit and evaluate run once per issue: the count is of stages run, with no total
        self._bar = Progress("train", unit="stage", enabled=progress)

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        """Time stage `name` (totals add up over repeats); the progress line also shows
        `detail` (fit and evaluate run once per issue: the issue's name)."""
        from common.memory import PeakMemory

        self._bar.status(f"{name} {detail}" if detail else name)
        t0 = time.perf_counter()
        sampler = PeakMemory(interval_s=0.2, kernel_high_water=False).start()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
            self.peak_bytes[name] = max(self.peak_bytes.get(name, 0), sampler.stop())
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def train(
    data: str | Path,
    *,
    settings: Settings | None = None,
    random_state: int = 0,
    capacity_per_day: int | None = None,
    track: bool = True,
    promote: bool = True,
    horizons_h: Sequence[float] = DEFAULT_HORIZONS_H,
    issues: Sequence[IssueType] | None = None,
    only_issues: Sequence[str] | None = None,
    booster_params: BoosterParams | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    engine: str = "pandas",
    scheduler: str | None = None,
    model_name: str | None = None,
    max_rows: int | None = None,
) -> TrainResult:
    """Train, evaluate and (when `track`) log one ScoringBundle from a dataset folder or spec.

    `only_issues` trains a subset of the data's issue types (by name). `engine="dask"` builds
    the snapshots and fits the boosters on a Dask cluster (`scheduler`, see common.cluster;
    training.fit_dask says what differs). The registered model is `model_name` when given,
    else the dataset's own name (see `registered_model_name`). Past `max_rows` rows (default
    settings.train_max_rows; 0: no limit) it trains on a sample of whole items
    (`training.data.sample_rows`), which bounds training's memory.
    Raises ValueError naming the issue and its label counts when an issue cannot be trained,
    and lets features.validate.ContractError (a ValueError) out on bad data.
    """
    settings = settings or get_settings()
    capacity = int(
        capacity_per_day if capacity_per_day is not None else settings.review_capacity_per_day
    )
    if capacity < 1:
        raise ValueError(f"review capacity must be at least 1 item per day, got {capacity}")
    params = booster_params or BoosterParams()
    row_limit = int(settings.train_max_rows if max_rows is None else max_rows)
    if row_limit < 0:
        raise ValueError(f"--max-rows must be 0 (no limit) or more, got {row_limit}")
    if track:
        # fail before the (long) fit if the tracking side cannot honour the options
        from training.tracking import log_training

        _tracking_options(log_training, promote=promote)
    timer = _Timer(progress)
    engine_context, booster_fit = _engine(engine, scheduler, progress)
    try:
        with timer.stage("load"):
            td = load_training_data(
                data,
                horizons_h=horizons_h,
                issues=issues,
                progress=progress,
                engine=engine,
                scheduler=scheduler,
                # on Dask only the sample comes back from the workers
                max_rows=row_limit,
                random_state=random_state,
                sample_issues=only_issues or None,
            )
            if only_issues:
                td = select_issues(td, only_issues)
            td = sample_rows(td, row_limit, random_state)
        serving_name = settings.model_name
        settings = settings.model_copy(
            update={"model_name": registered_model_name(model_name, td.name, settings)}
        )
        bundle, report = fit_and_evaluate(
            td,
            random_state=random_state,
            capacity_per_day=capacity,
            params=params,
            timer=timer,
            booster_fit=booster_fit,
            threshold_policy=ThresholdPolicy.from_settings(settings),
            gate_bootstrap=settings.gate_bootstrap,
            gate_confidence=settings.gate_confidence,
        )
        run_id = model_version = None
        promoted = reused = False
        decision: dict[str, Any] = {}
        with timer.stage("log"):
            if track:
                from training.tracking import log_training

                run_params = {
                    "data": td.source,
                    "data_kind": td.kind,
                    "random_state": random_state,
                    "capacity_per_day": capacity,
                    "horizons_h": list(horizons_h) if td.kind == "raw" else None,
                    "issues": [i.name for i in td.issues],
                    "promote": promote,
                    "max_rows": row_limit,
                    **{f"lgb_{k}": v for k, v in asdict(params).items()},
                    **({"engine": engine} if engine != "pandas" else {}),
                }
                tracked = log_training(
                    bundle,
                    report,
                    params=run_params,
                    dataset_fingerprint=td.fingerprint,
                    settings=settings,
                    **_tracking_options(log_training, promote=promote),
                )
                run_id = tracked.run_id
                model_version = (
                    None if tracked.model_version is None else str(tracked.model_version)
                )
                promoted = bool(tracked.promoted)
                decision = dict(tracked.decision or {})
                reused = bool(getattr(tracked, "reused", False))
    finally:
        timer.close()
        engine_context.close()
    if log is not None:
        log(f"timings: {', '.join(f'{k}={v:.1f}s' for k, v in timer.timings.items())}")
    return TrainResult(
        run_id=run_id,
        model_version=model_version,
        metrics=report.overall,
        promoted=promoted,
        bundle=bundle,
        report=report,
        fingerprint=td.fingerprint,
        decision=decision,
        timings=timer.timings,
        stage_peak_bytes=timer.peak_bytes,
        reused=reused,
        model_name=settings.model_name,
        serving_name=serving_name,
    )


def _engine(
    engine: str, scheduler: str | None, progress: bool
) -> tuple[ExitStack, Callable[..., Any] | None]:
    """The Dask client kept open for a whole job (closed by the caller) and the booster fit
    to use (None: training.fit.fit_booster in this process)."""
    stack = ExitStack()
    if engine == "pandas":
        return stack, None
    if engine != "dask":
        raise ValueError(f"engine must be pandas or dask, got {engine!r}")
    from common.cluster import dask_client
    from training.fit_dask import fit_booster_dask

    client = stack.enter_context(dask_client(scheduler, announce=progress))
    return stack, partial(fit_booster_dask, client=client)


def registered_model_name(
    explicit: str | None, dataset_name: str | None, settings: Settings
) -> str:
    """The registered model a training job logs to: one per problem, so that training another
    dataset never competes with an unrelated champion.

    In order: `explicit` (`--model-name`), SURFACER_MODEL_NAME when set, the dataset's own
    name (a flat spec's `name`, a dataset folder's declared name), else the default name
    (`surfacer`, what `surfacer serve` loads unless told otherwise).
    """
    for name in (
        explicit,
        settings.model_name if "model_name" in settings.model_fields_set else None,
        dataset_name,
    ):
        if name is not None and str(name).strip():
            return str(name).strip()
    return settings.model_name


def select_issues(td: TrainingData, names: Sequence[str]) -> TrainingData:
    """Keep only the named issues (e.g. a dataset without appeals: no wrongful_enforcement)."""
    known = {i.name: i for i in td.issues}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown issue(s) {unknown}; this dataset has {list(known)}")
    keep = tuple(known[n] for n in dict.fromkeys(names))
    drop = [label_column(i.name) for i in td.issues if i not in keep]
    return replace(td, issues=keep, frame=td.frame.drop(columns=drop))


def _tracking_options(log_training: Callable[..., Any], *, promote: bool) -> dict[str, Any]:
    """Keyword options for `log_training` that its signature accepts."""
    accepted = inspect.signature(log_training).parameters
    options: dict[str, Any] = {}
    if "reuse_existing" in accepted:
        # idempotent reruns: the same data and params return the run already logged
        # instead of registering a duplicate version
        options["reuse_existing"] = True
    if not promote:
        if "promote" not in accepted:
            raise ValueError("--no-promote: this tracking backend has no 'promote' option")
        options["promote"] = False
    return options


def _split(td: TrainingData, random_state: int) -> tuple[SplitResult, _Split]:
    if td.timed:
        try:
            result = time_split(td.frame, DEFAULT_FRACTIONS)
        except ValueError as exc:
            if td.kind != "flat":
                raise
            # the user can act on this one: a flat spec's time is optional
            raise ValueError(
                f"{exc}; or leave `time` out of the spec {td.source!r} to split at random"
            ) from None
    else:
        strata = first_label_strata(td.frame, td.issues)
        result = stratified_split(td.frame, strata, DEFAULT_FRACTIONS, random_state=random_state)
    return result, _Split(result.mask("train"), result.mask("valid"), result.mask("test"))


def design_matrix(
    transform: FeatureTransform, frame: pd.DataFrame, *, block_rows: int = DESIGN_BLOCK_ROWS
) -> tuple[np.ndarray, sp.csr_matrix | None]:
    """The dense features and hashed text of every row, computed `block_rows` rows at a time.

    Both are row by row, so the result is the one of a single call; in blocks, the
    temporaries of a call (the raw input columns next to the features, every text as a
    Python string, each hashed group before they are stacked) are those of a block, not of
    the whole frame. What remains whole is the result itself: the dense matrix (8 bytes a
    feature a row) and the hashed text (12 bytes a stored n-gram, about 2 KB a row on the
    default world), which every issue's fit and evaluation read.
    """
    n = len(frame)
    x_all = np.empty((n, transform.n_features_out_), dtype=np.float64)
    blocks: list[sp.csr_matrix] = []
    for start in range(0, max(n, 1), block_rows):
        part = frame.iloc[start : start + block_rows]
        x_all[start : start + len(part)] = transform.transform(part)
        text = hashed_text(transform, part)
        if text is not None:
            blocks.append(text)
    if not blocks:
        return x_all, None
    text_all = blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")
    return x_all, text_all


def fit_text_bounded(
    text_all: sp.csr_matrix,
    rows: np.ndarray,
    y: np.ndarray,
    item_ids: np.ndarray,
    *,
    random_state: int,
    dense_all: np.ndarray | None = None,
    max_rows: int | None = None,
    **kwargs: Any,
) -> tuple[Any, np.ndarray]:
    """`fit_text_model_cv` on `rows` (positions in text_all / dense_all), with its honest
    score of every one of them: out of fold for the rows it was fitted on.

    Past `max_rows` (default TEXT_FIT_MAX_ROWS) rows it is fitted on `item_sample`'s
    items only; the other rows, of items the model never saw, get its score, computed in
    blocks. Below it, this is exactly fit_text_model_cv.
    """
    limit = TEXT_FIT_MAX_ROWS if max_rows is None else max_rows
    drawn = item_sample(y, item_ids[rows], limit, random_state)
    sample = None if drawn is None else drawn.rows
    fit = rows if sample is None else rows[sample]
    model, oof = fit_text_model_cv(
        text_all[fit],
        y if sample is None else y[sample],
        item_ids[fit],
        random_state=random_state,
        **({"dense_x": dense_all[fit]} if dense_all is not None else {}),
        **kwargs,
    )
    if sample is None:
        return model, oof
    scores = np.empty(len(rows))
    scores[sample] = oof
    rest = np.setdiff1d(np.arange(len(rows)), sample, assume_unique=True)
    scores[rest] = score_text_rows(model, text_all, rows[rest], dense_all)
    return model, scores


def score_text_rows(
    model: Any,
    text_all: sp.csr_matrix,
    rows: np.ndarray,
    dense_all: np.ndarray | None = None,
    *,
    block_rows: int = DESIGN_BLOCK_ROWS,
) -> np.ndarray:
    """A text model's scores of `rows`, a block of rows at a time (no copy of all of them)."""
    out = np.empty(len(rows))
    for start in range(0, len(rows), block_rows):
        idx = rows[start : start + block_rows]
        x = dense_all[idx] if dense_all is not None else None
        out[start : start + len(idx)] = model.score(text_all[idx], x)
    return out


def _has_ngrams(
    text_all: sp.csr_matrix, rows: np.ndarray, lo: int, hi: int, block_rows: int = DESIGN_BLOCK_ROWS
) -> bool:
    """Whether any of `rows` has an n-gram in columns [lo, hi), read a block of rows at a
    time (no copy of all the rows' hashed text for a yes or no)."""
    for start in range(0, len(rows), block_rows):
        block = text_all[rows[start : start + block_rows]]
        if np.any((block.indices >= lo) & (block.indices < hi)):
            return True
    return False


def _anchor_mask(frame: pd.DataFrame, anchor: str) -> np.ndarray:
    if "anchor" not in frame.columns:
        return np.full(len(frame), anchor == "post")
    return frame["anchor"].astype("object").to_numpy() == anchor


def label_counts(td: TrainingData, split: _Split) -> dict[str, dict[str, tuple[int, int]]]:
    """issue -> split -> (labelled rows, positives) on the issue's anchor rows."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for issue in td.issues:
        y = td.frame[label_column(issue.name)].to_numpy(dtype=float)
        anchor = _anchor_mask(td.frame, issue.anchor)
        counts = {}
        for name, mask in (("train", split.train), ("valid", split.valid), ("test", split.test)):
            yy = y[mask & anchor]
            yy = yy[np.isfinite(yy)]
            counts[name] = (len(yy), int(yy.sum()))
        out[issue.name] = counts
    return out


def check_labels(td: TrainingData, split: _Split) -> dict[str, str]:
    """Which issues cannot be trained, and why: each needs both classes in train and valid.

    Returns issue -> reason for those that cannot (they are disabled, the others train);
    raises ValueError when no issue can be trained at all.
    """
    problems: dict[str, str] = {}
    all_counts = label_counts(td, split)
    misses = td.intake.get("label_rule_misses") or {}
    for issue in td.issues:
        counts = all_counts[issue.name]
        bad = [
            n
            for n in ("train", "valid")
            if counts[n][0] == 0 or counts[n][1] == 0 or counts[n][1] == counts[n][0]
        ]
        if bad:
            detail = ", ".join(f"{n}: {c[0]} labelled, {c[1]} positive" for n, c in counts.items())
            problems[issue.name] = (
                f"lacks labels of both classes in {' and '.join(bad)} "
                f"({issue.anchor} rows; {detail})"
            )
            if issue.name in misses:  # a flat spec's rule that matches nothing says why
                problems[issue.name] += f": {misses[issue.name]}"
    if len(problems) == len(td.issues):
        fix = (
            "Fix the spec's label rules, add labelled rows, or drop the issue."
            if td.kind == "flat"
            else "Add labels (review, appeals or a labels table) or drop the issue."
        )
        raise ValueError(
            "cannot train: "
            + "; ".join(f"issue {name!r} {why}" for name, why in problems.items())
            + f". {fix}"
        )
    return problems


def _json_value(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp | datetime):
        return v.isoformat()
    if isinstance(v, np.bool_ | bool):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating | float):
        return None if math.isnan(float(v)) else float(v)
    return v if isinstance(v, str | int) else str(v)


def example_record(row: pd.Series) -> dict[str, Any]:
    """A snapshot row as a JSON-able dict (labels dropped): the bundle's input example."""
    return {str(k): _json_value(v) for k, v in row.items() if not str(k).startswith("label_")}


def fit_and_evaluate(
    td: TrainingData,
    *,
    random_state: int,
    capacity_per_day: int,
    params: BoosterParams,
    timer: _Timer | None = None,
    stack_issues: bool = True,
    booster_fit: Callable[..., Any] | None = None,
    threshold_policy: ThresholdPolicy | None = None,
    gate_bootstrap: int = DEFAULT_BOOTSTRAP,
    gate_confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[ScoringBundle, EvaluationReport]:
    """Fit the transform and one model per issue on `td`, then evaluate on its test split.

    Each issue then goes through the quality gate (`training.gate.judge_issue`): an issue
    that cannot be fitted (one class of labels) or fails the gate is disabled in the bundle
    with its reason; `report.extra["gate"]` holds every verdict and its numbers.
    """
    timer = timer or _Timer(False)
    frame = td.frame
    with timer.stage("split"):
        split_result, split = _split(td, random_state)
        unfit = check_labels(td, split)
    with timer.stage("transform"):
        transform = td.transform.fit(frame.iloc[np.flatnonzero(split.train)])
        x_all, text_all = design_matrix(transform, frame)
    item_ids = frame["item_id"].astype("object").to_numpy()
    valid_days = _window_days(frame, split.valid) if td.timed else None

    models: dict[str, IssueModel] = {}
    overall: dict[str, dict[str, float]] = {}
    segments: list[pd.DataFrame] = []
    curves: dict[str, pd.DataFrame] = {}
    calib: dict[str, pd.DataFrame] = {}
    importances: dict[str, pd.DataFrame] = {}
    base_names = list(transform.feature_names_)
    # post-anchored issues first: moderation-anchored ones may read their scores (stacking)
    fit_order = sorted(
        (i for i in td.issues if i.name not in unfit), key=lambda i: i.anchor != "post"
    )
    verdicts: dict[str, IssueVerdict] = {
        name: disabled_verdict(name, f"cannot be trained: {why}") for name, why in unfit.items()
    }
    for issue in fit_order:
        stack = (
            {n: m for n, m in models.items() if m.anchor == "post"}
            if stack_issues and issue.anchor == "moderation"
            else {}
        )
        with timer.stage("fit", issue.name):
            fitted = _fit_issue(
                issue,
                stack=stack,
                transform=transform,
                frame=frame,
                split=split,
                x_all=x_all,
                text_all=text_all,
                item_ids=item_ids,
                base_names=base_names,
                categorical=transform.categorical_indices_,
                params=params,
                random_state=random_state,
                capacity_per_day=capacity_per_day,
                valid_days=valid_days,
                booster_fit=booster_fit,
                threshold_policy=threshold_policy,
            )
        models[issue.name] = fitted.model
        with timer.stage("evaluate", issue.name):
            test_rows = fitted.test_rows
            y = frame[label_column(issue.name)].to_numpy(dtype=float)[test_rows]
            p = fitted.test_probs
            metrics = issue_metrics(y, p, threshold=fitted.model.threshold, k=capacity_per_day)
            baselines = _baseline_scores(
                td, issue, split, frame, x_all, test_rows, transform, random_state
            )
            for name, b in baselines.items():
                metrics[f"baseline_{name}_pr_auc"] = pr_auc(y, b)
            # the strongest baseline (by PR-AUC) is the one the model must not lose to
            best = max(baselines, key=lambda n: np.nan_to_num(metrics[f"baseline_{n}_pr_auc"]))
            metrics["baseline_roc_auc"] = roc_auc(y, baselines[best])
            metrics["baseline_pr_auc"] = pr_auc(y, baselines[best])
            metrics["best_iteration"] = float(fitted.model.best_iteration)
            choice = fitted.threshold_choice
            if choice is not None:
                metrics["valid_flagged_share"] = choice.flagged_share
                metrics["valid_flagged_share_bound"] = choice.flagged_share_bound
                if choice.time_blocks:
                    metrics["valid_flagged_share_drift"] = choice.share_drift
                metrics["valid_precision"] = choice.precision
                metrics["precision_floor"] = choice.precision_floor
            verdict = judge_issue(
                issue.name,
                y,
                p,
                groups=item_ids[test_rows],
                baselines=baselines,
                threshold=choice,
                n_boot=gate_bootstrap,
                confidence=gate_confidence,
                random_state=random_state,
            )
            verdicts[issue.name] = verdict
            for key in ("roc_auc_ci", "pr_auc_ci", "pr_auc_minus_baseline_ci"):
                if key in verdict.checks:
                    lo, hi = verdict.checks[key]
                    metrics[key.replace("_ci", "_lo")] = lo
                    metrics[key.replace("_ci", "_hi")] = hi
            metrics["enabled"] = 1.0 if verdict.enabled else 0.0
            # which model variant the issue ships (0 stacked, 1 text, 2 tabular, 3 linear),
            # so the run shows when the stack lost to one of its parts
            metrics["variant"] = float(VARIANTS.index(fitted.model.variant))
            # each candidate's selection score, and whether the shipped one was refitted on
            # train + validation (_refit_on_seen)
            for variant, judged in fitted.selection.items():
                metrics[f"selection_{variant}"] = judged
            metrics["refit_on_seen"] = 1.0 if fitted.refit else 0.0
            if td.truth is not None and f"p_{issue.name}" in td.truth.columns:
                truth = td.truth.set_index(td.truth["item_id"].astype("object"))[f"p_{issue.name}"]
                oracle = pd.Series(item_ids[test_rows]).map(truth).to_numpy(dtype=float)
                metrics["oracle_pr_auc"] = pr_auc(y, oracle)
                metrics["oracle_roc_auc"] = roc_auc(y, oracle)
                o = metrics["oracle_pr_auc"]
                metrics["pr_auc_vs_oracle"] = metrics["pr_auc"] / o if o and o > 0 else math.nan
            if td.truth is not None and issue.name in td.truth.columns:
                # A second oracle that knows each item's realized latent state (0/1), not just
                # the propensity it was drawn from: the ceiling that label noise leaves.
                state = td.truth.set_index(td.truth["item_id"].astype("object"))[issue.name]
                known = pd.Series(item_ids[test_rows]).map(state).to_numpy(dtype=float)
                ok = ~np.isnan(known)
                if ok.any() and 0 < np.nansum(y[ok]) < ok.sum():
                    metrics["oracle_state_pr_auc"] = pr_auc(y[ok], known[ok])
            overall[issue.name] = metrics
            segments.append(
                segment_metrics(
                    issue.name,
                    frame.iloc[test_rows],
                    y,
                    p,
                    threshold=fitted.model.threshold,
                    dimensions=td.segment_dims,
                )
            )
            curves[issue.name] = pr_curve(y, p)
            calib[issue.name] = calibration_bins(y, p)
            importances[issue.name] = (
                pd.DataFrame(
                    {
                        "feature": fitted.model.feature_names,
                        **_importance(fitted.model),
                    }
                )
                .sort_values(["gain", "feature"], ascending=[False, True], kind="stable")
                .reset_index(drop=True)
            )

    models = {i.name: models[i.name] for i in td.issues if i.name in models}
    for name in unfit:
        # the table still shows the issue: its labelled test rows, and that it is disabled
        yy = frame[label_column(name)].to_numpy(dtype=float)[split.test]
        yy = yy[np.isfinite(yy)]
        overall[name] = {"n": float(len(yy)), "positives": float(yy.sum()), "enabled": 0.0}
    overall = {i.name: overall[i.name] for i in td.issues}
    verdicts = {i.name: verdicts[i.name] for i in td.issues}
    disabled = {n: "; ".join(v.reasons) for n, v in verdicts.items() if not v.enabled}
    label_cols = [label_column(i.name) for i in td.issues]
    test_mask = split.test & frame[label_cols].notna().any(axis=1).to_numpy()
    test_frame = frame.iloc[np.flatnonzero(test_mask)].reset_index(drop=True)
    start, end = split_result.bounds["test"]
    holdout = Holdout(
        kind="time" if td.timed else "stratified",
        start=start,
        end=end,
        # a time split does not depend on the seed: record 0 so that runs with other seeds
        # on the same data are recognised as sharing the holdout
        random_state=0 if td.timed else int(random_state),
        n_rows=len(test_frame),
        item_ids=tuple(sorted(pd.unique(test_frame["item_id"].astype("object")))),
    )
    seg = (
        pd.concat([s for s in segments if len(s)], ignore_index=True)
        if any(len(s) for s in segments)
        else segments[0]
    )
    report = EvaluationReport(
        overall=overall,
        segments=seg,
        pr_curves=curves,
        calibration=calib,
        importances=importances,
        holdout=holdout,
        test_frame=test_frame,
        capacity_per_day=capacity_per_day,
        extra={
            "split_rows": {
                "train": int(split.train.sum()),
                "valid": int(split.valid.sum()),
                "test": int(split.test.sum()),
            },
            "valid_days": valid_days,
            "gate": {n: v.to_dict() for n, v in verdicts.items()},
            "label_counts": label_counts(td, split),
            "intake": dict(td.intake),
            "dataset_name": td.name,
        },
    )
    first_fitted = next(iter(models.values()))
    first_anchor = _anchor_mask(frame, first_fitted.anchor) & split.train
    example_row = frame.iloc[int(np.flatnonzero(first_anchor)[0])]
    bundle = ScoringBundle(
        transform=transform,
        issues=models,
        metadata={
            "trained_at": datetime.now(UTC).isoformat(),
            "dataset_fingerprint": td.fingerprint,
            "data_kind": td.kind,
            "source": td.source,
            "random_state": int(random_state),
            "capacity_per_day": int(capacity_per_day),
            "metrics": report.flat_metrics(),
            "holdout": holdout.describe(),
            "anchors": {i.name: i.anchor for i in td.issues},
            "questions": {i.name: i.question for i in td.issues},
            "dataset_name": td.name,
        },
        example_record=example_record(example_row),
        disabled=disabled,
    )
    return bundle, report


def _baseline_scores(
    td: TrainingData,
    issue: IssueType,
    split: _Split,
    frame: pd.DataFrame,
    x_all: np.ndarray,
    test_rows: np.ndarray,
    transform: FeatureTransform,
    random_state: int,
) -> dict[str, np.ndarray]:
    """The strong baselines' scores on the issue's test rows (`training.baselines`): logistic
    regression on the tabular features, TF-IDF word and char n-grams with them, and LightGBM
    on the tabular features alone. They fit on the training and validation rows, all the
    labels the model itself learnt or tuned from (as bench/quality.py fits them)."""
    from training.baselines import baseline_scores

    y_all = frame[label_column(issue.name)].to_numpy(dtype=float)
    seen = split.train | split.valid
    tr = np.flatnonzero(_anchor_mask(frame, issue.anchor) & seen & np.isfinite(y_all))
    out = baseline_scores(
        frame.iloc[tr],
        x_all[tr],
        y_all[tr],
        frame.iloc[test_rows],
        x_all[test_rows],
        text_columns=list(transform.text_columns_),
        categorical=transform.categorical_indices_,
        random_state=random_state,
    )
    return out


def _importance(model: IssueModel) -> dict[str, np.ndarray]:
    """Gain and split importance per feature; the text variant's one feature has it all; a
    blend's are its parts', each part's gain scaled to an equal share (the weights only
    undo the parts' scales: each part moves the blend's ranking as much as another)."""
    if model.parts:
        position = {n: j for j, n in enumerate(model.feature_names)}
        gain = np.zeros(len(model.feature_names))
        split = np.zeros(len(model.feature_names))
        for part in model.parts:
            sub = _importance(part)
            where = [position[n] for n in part.feature_names]
            g = np.asarray(sub["gain"], dtype=np.float64)
            gain[where] += g / (g.sum() or 1.0) / len(model.parts)
            split[where] += np.asarray(sub["split"], dtype=np.float64)
        return {"gain": gain, "split": split}
    if model.booster is None:
        return {
            "gain": np.ones(len(model.feature_names)),
            "split": np.zeros(len(model.feature_names)),
        }
    return {
        "gain": model.booster.feature_importance("gain"),
        "split": model.booster.feature_importance("split"),
    }


def _window_days(frame: pd.DataFrame, mask: np.ndarray) -> float:
    """Length in days of a window, from its items' first snapshot times (at least one day)."""
    t = pd.to_datetime(frame["as_of"], utc=True)[mask]
    first = t.groupby(frame["item_id"].astype("object")[mask].to_numpy()).min()
    span = (first.max() - first.min()).total_seconds() / 86400.0
    return max(1.0, float(span))


@dataclass
class _FittedIssue:
    model: IssueModel
    test_rows: np.ndarray
    test_probs: np.ndarray
    threshold_choice: ThresholdChoice | None = None
    selection: dict[str, float] = field(default_factory=dict)
    refit: bool = False


def _fit_issue(
    issue: IssueType,
    *,
    stack: dict[str, IssueModel],
    transform: FeatureTransform,
    frame: pd.DataFrame,
    split: _Split,
    x_all: np.ndarray,
    text_all: sp.csr_matrix | None,
    item_ids: np.ndarray,
    base_names: list[str],
    categorical: Sequence[int],
    params: BoosterParams,
    random_state: int,
    capacity_per_day: int,
    valid_days: float | None,
    booster_fit: Callable[..., Any] | None = None,
    threshold_policy: ThresholdPolicy | None = None,
) -> _FittedIssue:
    y_all = frame[label_column(issue.name)].to_numpy(dtype=float)
    anchor = _anchor_mask(frame, issue.anchor)
    labelled = np.isfinite(y_all)
    tr = np.flatnonzero(anchor & split.train & labelled)
    va = np.flatnonzero(anchor & split.valid & labelled)
    te = np.flatnonzero(anchor & split.test & labelled)
    va_all = np.flatnonzero(anchor & split.valid)  # labelled or not: the flag volume
    y_tr, y_va = y_all[tr].astype(int), y_all[va].astype(int)

    # what both the variant fits and the refit on train + validation read
    shared = dict(
        x_all=x_all,
        text_all=text_all,
        item_ids=item_ids,
        categorical=categorical,
        params=params,
        random_state=random_state,
        rows=(tr, va, te, va_all),
        y_tr=y_tr,
        y_va=y_va,
    )
    built = _build_variants(
        stack=stack,
        transform=transform,
        base_names=base_names,
        booster_fit=booster_fit,
        **shared,
    )
    chosen = built.chosen
    refit = _refit_on_seen(chosen, **shared)
    if refit is None:
        raw_va = chosen.raw(chosen.x_va)
        raw_va_all = chosen.raw(chosen.x_va_all)
    else:
        # the refitted model saw the labelled validation rows: calibrate and place the
        # threshold on their out-of-fold scores (and on its own scores of the unlabelled
        # validation rows, which it did not see)
        chosen, raw_va = refit
        raw_va_all = chosen.raw(chosen.x_va_all)
        raw_va_all[np.searchsorted(va_all, va)] = raw_va
    x_te = chosen.x_te
    calibrator = fit_calibrator(raw_va, y_va)
    p_va_all = calibrator.transform(raw_va_all)
    choice = choose_threshold(
        p_va_all,
        item_ids[va_all],
        y_all[va_all],
        capacity_items=(
            max(1, round(capacity_per_day * valid_days)) if valid_days is not None else None
        ),
        policy=threshold_policy,
        # timed data: the next window comes after validation, so the cap must also hold if
        # the flagged share keeps drifting the way it did across validation
        times=(
            pd.to_datetime(frame["as_of"].iloc[va_all], utc=True).to_numpy(dtype="datetime64[ns]")
            if valid_days is not None
            else None
        ),
    )
    # no qualifying threshold: the issue is disabled (see fit_and_evaluate); inf flags nothing
    threshold = choice.threshold if choice.threshold is not None else math.inf
    test_probs = calibrator.transform(chosen.raw(x_te))

    model = _issue_model(
        chosen, issue, stack=stack, calibrator=calibrator, threshold=float(threshold)
    )
    return _FittedIssue(
        model,
        te,
        test_probs,
        choice,
        selection={k: float(v.selection_score) for k, v in built.candidates.items()},
        refit=refit is not None,
    )


def _issue_model(
    v: _Variant,
    issue: IssueType,
    *,
    stack: dict[str, IssueModel],
    calibrator: Calibrator,
    threshold: float,
    name: str | None = None,
) -> IssueModel:
    """The bundle's model of a fitted variant; a blend's parts become uncalibrated
    IssueModels (identity calibrator, no threshold of their own) inside it."""
    parts = tuple(
        _issue_model(
            p,
            issue,
            stack=stack,
            calibrator=Calibrator("identity"),
            threshold=math.inf,
            name=f"{issue.name}/{p.variant}",
        )
        for p in v.parts
    )
    return IssueModel(
        name=name or issue.name,
        anchor=issue.anchor,
        booster=v.booster,
        calibrator=calibrator,
        threshold=threshold,
        feature_names=list(v.names),
        text_model=v.text_model,
        best_iteration=max([v.best, *(p.best_iteration for p in parts)]),
        stacked=tuple(stack) if v.booster is not None else (),
        variant=v.variant,
        group_models=v.group_models,
        parts=parts,
        blend_weights=tuple(float(w) for w in v.weights) if v.parts else (),
        blend_offset=float(v.offset),
    )


def _refit_on_seen(
    chosen: _Variant,
    *,
    text_all: sp.csr_matrix | None,
    x_all: np.ndarray,
    item_ids: np.ndarray,
    categorical: Sequence[int],
    params: BoosterParams,
    random_state: int,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    y_tr: np.ndarray,
    y_va: np.ndarray,
) -> tuple[_Variant, np.ndarray] | None:
    """The chosen variant refitted on every labelled row seen (train + validation), and its
    out-of-fold scores on the validation rows; None where that cannot be done honestly.

    Why: the validation window is the most recent labelled data and a third more rows than
    the training window; a model that never learns from it is handicapped against any model
    fitted on all it was given (the baselines are). The variant was chosen on the train-only
    fits; the refit is cross-fitted by item, so calibration and the threshold still see
    scores of rows the scoring model did not learn from. Text and linear variants always
    refit (their fit is cross-validated anyway). Boosted variants refit when the rows are
    few enough for cross-validated rounds (`BoosterParams.cv_below_rows`); above that, early
    stopping needs the validation window held out, so they keep the train-only fit. The
    stacked variant's inputs on the validation rows are its text models' scores from the
    train-only fit: out of sample, like the out-of-fold scores on the training rows.
    """
    tr, va, te, va_all = rows
    if len(va) == 0 or len(np.unique(y_va)) < 2:
        return None
    if chosen.parts:
        return _refit_blend(
            chosen,
            text_all=text_all,
            x_all=x_all,
            item_ids=item_ids,
            categorical=categorical,
            params=params,
            random_state=random_state,
            rows=rows,
            y_tr=y_tr,
            y_va=y_va,
        )
    seen = np.r_[tr, va]
    y_seen = np.r_[y_tr, y_va].astype(int)
    groups = item_ids[seen]
    if chosen.booster is None:
        if text_all is None or not chosen.text_blocks or chosen.text_model is None:
            return None
        dense = {"dense_all": x_all, "categorical": categorical} if chosen.dense else {}
        # the regularisation chosen out of fold on the training rows is kept: the refit
        # needs out-of-fold scores, not a second search (five times the cost)
        c = chosen.text_model.C_
        model, oof = fit_text_bounded(
            text_all,
            seen,
            y_seen,
            item_ids,
            blocks=chosen.text_blocks,
            random_state=random_state,
            **({"Cs": (c,)} if c is not None else {}),
            **dense,
        )

        def score(idx: np.ndarray) -> np.ndarray:
            x = x_all if chosen.dense else None
            return score_text_rows(model, text_all, idx, x).reshape(-1, 1)

        out = replace(
            chosen, text_model=model, x_va=score(va), x_te=score(te), x_va_all=score(va_all)
        )
        return out, oof[len(tr) :]
    if chosen.x_tr is None or len(seen) >= params.cv_below_rows:
        return None
    booster, best, oof = fit_booster(
        np.vstack([chosen.x_tr, chosen.x_va]),
        y_seen,
        chosen.x_va,
        y_va,
        feature_names=chosen.names,
        categorical=categorical,
        params=params,
        random_state=random_state,
        groups=groups,
    )
    if oof is None:  # no usable folds (a class too rare): keep the train-only fit
        return None
    return replace(chosen, booster=booster, best=best), oof[len(tr) :]


def _refit_blend(chosen: _Variant, **shared: Any) -> tuple[_Variant, np.ndarray] | None:
    """A blend with each part refitted where `_refit_on_seen` can (the others keep their
    train-only fit), its weights re-derived from the parts' honest validation scores, and
    its out-of-fold validation scores; None when no part could be refitted."""
    _, va, _, va_all = shared["rows"]
    at = np.searchsorted(va_all, va)
    parts, cols_va, cols_va_all, any_refit = [], [], [], False
    for part in chosen.parts:
        got = _refit_on_seen(part, **shared)
        if got is None:
            p, raw_va = part, part.raw(part.x_va)
        else:
            (p, raw_va), any_refit = got, True
        raw_va_all = p.raw(p.x_va_all)
        raw_va_all[at] = raw_va  # the labelled validation rows: out of fold
        parts.append(p)
        cols_va.append(raw_va)
        cols_va_all.append(raw_va_all)
    if not any_refit:
        return None
    blend = _blend_variant(
        parts,
        x_va=np.column_stack(cols_va),
        x_te=np.column_stack([p.raw(p.x_te) for p in parts]),
        x_va_all=np.column_stack(cols_va_all),
    )
    return blend, blend.raw(blend.x_va)


def blend_weights(cols_va: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights and offset of an equal-weight average of standardised log-odds.

    Each part's log-odds are divided by their spread on the validation rows before
    averaging: a text model's and a booster's log-odds live on different scales (their
    regularisation shrinks them differently), and a plain average would let the wider one
    decide the ranking. Only ranks matter here (the blend is calibrated afterwards), so
    standardising is the scale-free choice; it stays linear in the log-odds, which keeps the
    parts' reason codes additive. Returns (weights, offset) with z = offset + logit(p) @ w.
    """
    z = logit(cols_va)
    mu = z.mean(axis=0)
    sd = z.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)  # a constant part adds a constant: no effect on ranks
    w = 1.0 / (z.shape[1] * sd)
    return w, float(-(w * mu).sum())


def _blend_variant(
    parts: Sequence[_Variant],
    *,
    x_va: np.ndarray | None = None,
    x_te: np.ndarray | None = None,
    x_va_all: np.ndarray | None = None,
) -> _Variant:
    """The "blend" candidate of `parts`: its inputs on each row set are the parts' raw
    probabilities (columns), by default the parts' own scores of those rows."""
    x_va = np.column_stack([p.raw(p.x_va) for p in parts]) if x_va is None else x_va
    x_te = np.column_stack([p.raw(p.x_te) for p in parts]) if x_te is None else x_te
    if x_va_all is None:
        x_va_all = np.column_stack([p.raw(p.x_va_all) for p in parts])
    names = list(dict.fromkeys(n for p in parts for n in p.names))
    w, offset = blend_weights(x_va)
    v = _Variant("blend", None, 0, names, None, {}, x_va, x_te, x_va_all)
    v.parts, v.weights, v.offset = tuple(parts), w, offset
    if all(p.oof is not None for p in parts):
        v.oof = v.raw(np.column_stack([p.oof for p in parts]))
    return v


@dataclass
class _Variant:
    """One candidate model of an issue: its inputs on each row set and how it scored."""

    variant: str
    booster: Any  # lgb.Booster, or None for the text variant
    best: int
    names: list[str]
    text_model: TextModel | None
    group_models: dict[str, TextModel]
    x_va: np.ndarray
    x_te: np.ndarray
    x_va_all: np.ndarray
    selection_score: float = math.nan
    # how to refit on train + validation (see _refit_on_seen): the booster's training rows
    # (boosted variants), or the text model's blocks and whether it reads the transform
    # features (text and linear variants)
    x_tr: np.ndarray | None = None
    text_blocks: tuple[tuple[int, int], ...] = ()
    dense: bool = False
    # out-of-fold scores of the training rows (None: the fit gives none, e.g. a booster
    # early-stopped on the validation window)
    oof: np.ndarray | None = None
    # a blend: its parts and z = offset + logit(parts' probabilities) @ weights; its inputs
    # on each row set are the parts' probabilities
    parts: tuple[_Variant, ...] = ()
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset: float = 0.0

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities of rows of this variant's inputs."""
        if self.parts:
            return blend_probability(
                [x[:, k] for k in range(x.shape[1])], self.weights, self.offset
            )
        if self.booster is None:
            return x[:, 0]
        return self.booster.predict(x, num_threads=1)


@dataclass
class _Variants:
    chosen: _Variant
    candidates: dict[str, _Variant]


def _build_variants(
    *,
    stack: dict[str, IssueModel],
    transform: FeatureTransform,
    x_all: np.ndarray,
    text_all: sp.csr_matrix | None,
    item_ids: np.ndarray,
    base_names: list[str],
    categorical: Sequence[int],
    params: BoosterParams,
    random_state: int,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    y_tr: np.ndarray,
    y_va: np.ndarray,
    booster_fit: Callable[..., Any] | None = None,
) -> _Variants:
    """Fit the issue's model variants and keep the best, so the stack never loses to its parts.

    - "stacked": LightGBM on the transform features, the text scores (out of fold on the
      training rows) and the stacked post issues' scores;
    - "tabular": the same LightGBM without the text scores;
    - "text": the best text model alone (calibrated later like the others).

    - "linear": one logistic regression on TF-IDF of every text group and the transform
      features (median-filled, standardised, category codes one-hot);
    - "blend": the variants that are not clearly worse than the best one, averaged (see
      `_choose_variant`, which picks what ships).
    """
    tr, va, te, va_all = rows
    sets = (tr, va, te, va_all)
    tab = [x_all[idx] for idx in sets]
    names_tab = list(base_names)
    if stack:
        # the post issues' models on this issue's rows: is the actioned item really bad?
        # (their training rows are post rows; these are other rows, of partly the same items)
        helper = ScoringBundle(transform=transform, issues=stack)
        for base_name, base in stack.items():
            names_tab.append(f"{STACKED_PREFIX}{base_name}")
            for k, idx in enumerate(sets):
                t = None if text_all is None else text_all[idx]
                score = base.predict_rows(helper.model_rows(base, x_all[idx], t))
                tab[k] = np.column_stack([tab[k], score])

    # text models: the main text group and each extra hashed group (e.g. comment_text)
    text_scores: list[tuple[str, TextModel, list[np.ndarray]]] = []
    text_blocks: dict[str, tuple[tuple[int, int], ...]] = {}
    if text_all is not None and text_all.nnz > 0:
        for g in transform.hashed_groups:
            lo, hi = g.blocks[0][0], g.blocks[-1][1]
            if not _has_ngrams(text_all, tr, lo, hi):
                continue
            model, oof = fit_text_bounded(
                text_all, tr, y_tr, item_ids, blocks=g.blocks, random_state=random_state
            )
            name = TEXT_SCORE_FEATURE if g.name == "text" else f"{TEXT_SCORE_FEATURE}__{g.name}"
            scores = [oof] + [score_text_rows(model, text_all, idx) for idx in (va, te, va_all)]
            text_scores.append((name, model, scores))
            text_blocks[name] = tuple(g.blocks)

    def judge(oof: np.ndarray | None, p_va: np.ndarray) -> float:
        # which text model is the text variant (_choose_variant then scores every candidate
        # on common rows); the two are averaged, not pooled: out-of-fold scores come from k
        # other models, whose scales differ from the final model's on the validation rows
        if oof is not None:
            return 0.5 * (pr_auc(y_tr, oof) + pr_auc(y_va, p_va))
        return pr_auc(y_va, p_va)

    def boosted(variant: str, xs: list[np.ndarray], names: list[str]) -> _Variant:
        fit_args = {"feature_names": names, "categorical": categorical, "params": params}
        if booster_fit is not None and len(y_tr) >= params.cv_below_rows:
            # another engine's fit (lightgbm.dask): early stopping on the validation window,
            # no out-of-fold scores. Smaller training sets fit in this process: distributed
            # LightGBM cannot cross-validate its rounds, and data that small gains nothing
            # from a cluster.
            booster, best = booster_fit(
                xs[0], y_tr, xs[1], y_va, random_state=random_state, **fit_args
            )
            oof = None
        else:
            booster, best, oof = fit_booster(
                xs[0], y_tr, xs[1], y_va, random_state=random_state, groups=item_ids[tr], **fit_args
            )
        v = _Variant(variant, booster, best, names, None, {}, xs[1], xs[2], xs[3], x_tr=xs[0])
        v.oof = oof
        return v

    candidates: dict[str, _Variant] = {}
    if text_scores:
        xs = [np.column_stack([tab[k]] + [sc[k] for _, _, sc in text_scores]) for k in range(4)]
        names = names_tab[: len(base_names)] + [n for n, _, _ in text_scores]
        names += names_tab[len(base_names) :]
        # stacked scores go last, as in ScoringBundle.model_rows
        order = list(range(len(base_names)))
        order += list(range(len(names_tab), len(names_tab) + len(text_scores)))
        order += list(range(len(base_names), len(names_tab)))
        xs = [x[:, order] for x in xs]
        v = boosted("stacked", xs, names)
        main = {n: m for n, m, _ in text_scores}
        v.text_model = main.get(TEXT_SCORE_FEATURE)
        v.group_models = {
            n.removeprefix(f"{TEXT_SCORE_FEATURE}__"): m
            for n, m, _ in text_scores
            if n != TEXT_SCORE_FEATURE
        }
        candidates["stacked"] = v
    candidates["tabular"] = boosted("tabular", tab, names_tab)
    if text_scores:
        # the text variant: the text model whose score alone judges best
        best_text: _Variant | None = None
        for name, model, sc in text_scores:
            cols = [s.reshape(-1, 1) for s in sc]
            v = _Variant("text", None, 0, [name], model, {}, cols[1], cols[2], cols[3])
            v.text_blocks, v.oof = text_blocks[name], sc[0]
            v.selection_score = judge(sc[0], sc[1])
            if best_text is None or v.selection_score > best_text.selection_score:
                best_text = v
        assert best_text is not None
        candidates["text"] = best_text
        # the linear variant: one logistic regression on every text group's TF-IDF and the
        # transform features (what a strong TF-IDF + LR baseline does)
        blocks = tuple(b for g in transform.hashed_groups for b in g.blocks)
        model, oof = fit_text_bounded(
            text_all,
            tr,
            y_tr,
            item_ids,
            blocks=blocks,
            random_state=random_state,
            dense_all=x_all,
            categorical=categorical,
        )
        cols = [oof.reshape(-1, 1)] + [
            score_text_rows(model, text_all, idx, x_all).reshape(-1, 1) for idx in (va, te, va_all)
        ]
        v = _Variant("linear", None, 0, [LINEAR_SCORE_FEATURE], model, {}, *cols[1:])
        v.text_blocks, v.dense, v.oof = blocks, True, oof
        candidates["linear"] = v

    chosen = _choose_variant(
        candidates,
        y_tr=y_tr,
        y_va=y_va,
        groups_tr=item_ids[tr],
        groups_va=item_ids[va],
        random_state=random_state,
    )
    return _Variants(chosen, candidates)


class _PairedJudge:
    """Average precision of candidates' scores on fixed row sets, and its item bootstrap
    with the same resamples for every candidate (paired), so that differences between
    candidates are measured without the noise the rows share.

    Each set is (labels, items); a candidate's measure is the mean of its average precision
    over the sets (out-of-fold training rows and validation rows are averaged, not pooled:
    their scores come from different models).
    """

    def __init__(
        self, sets: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int, random_state: int
    ) -> None:
        self.sets = [(np.asarray(y, dtype=np.float64), g) for y, g in sets]
        self.n_boot = n_boot
        self.random_state = random_state
        self._index = [np.unique(g.astype(str), return_inverse=True)[1] for _, g in sets]

    def point(self, scores: Sequence[np.ndarray]) -> float:
        return float(np.mean([pr_auc(y, p) for (y, _), p in zip(self.sets, scores, strict=True)]))

    def draws(self, scores: Sequence[np.ndarray]) -> np.ndarray:
        from training.gate import _Ranked

        # the same seed for every candidate: the k-th resample is the same rows for all
        rng = np.random.default_rng(self.random_state)
        ranked = [_Ranked(np.asarray(p, dtype=np.float64)) for p in scores]
        out = np.zeros(self.n_boot)
        for b in range(self.n_boot):
            for (y, _), gidx, r in zip(self.sets, self._index, ranked, strict=True):
                n_groups = int(gidx.max()) + 1
                counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
                out[b] += r.metrics(y, counts[gidx].astype(np.float64))[1]
        return out / len(self.sets)


def _choose_variant(
    candidates: dict[str, _Variant],
    *,
    y_tr: np.ndarray,
    y_va: np.ndarray,
    groups_tr: np.ndarray,
    groups_va: np.ndarray,
    random_state: int,
    n_boot: int = SELECTION_BOOTSTRAP,
    confidence: float = SELECTION_CONFIDENCE,
) -> _Variant:
    """Which variant ships: the best one when every other is clearly worse, else the blend
    of those within noise of it (unless the blend itself is clearly worse than the best).

    Why: the candidates are judged on a few hundred validation labels (a few dozen positives
    for a rare issue), where picking the argmax is a gamble whose loser can be 20% worse on
    the holdout. Averaging the candidates that cannot be told apart removes the gamble and
    usually beats each of them (their errors differ: trees against linear text models).

    All candidates are compared on the same rows: the validation rows, plus the training
    rows' out-of-fold scores when every candidate has them (boosters do below
    `BoosterParams.cv_below_rows` training rows). Each candidate's `selection_score` is set
    to that measure (the blend's too, when one is built; it joins `candidates`).
    """
    singles = dict(candidates)
    with_oof = all(v.oof is not None for v in singles.values())
    sets = [(y_va, groups_va)]
    if with_oof:
        sets.insert(0, (y_tr, groups_tr))
    judge = _PairedJudge(sets, n_boot, random_state)

    def scores(v: _Variant) -> list[np.ndarray]:
        va = v.raw(v.x_va)
        return [v.oof, va] if with_oof else [va]  # type: ignore[list-item]

    for v in singles.values():
        v.selection_score = judge.point(scores(v))

    def rank(k: str) -> tuple[float, int]:
        score = singles[k].selection_score
        return (-math.inf if math.isnan(score) else score, -SIMPLICITY.index(k))

    best = max(singles, key=rank)
    draws = {k: judge.draws(scores(v)) for k, v in singles.items()}

    def clearly_worse(d: np.ndarray) -> bool:
        # below the best in at least `confidence` of the paired resamples
        d = d[np.isfinite(d)]
        return len(d) > 0 and float(np.mean(d < 0)) >= confidence

    near = [k for k in singles if k == best or not clearly_worse(draws[k] - draws[best])]
    if len(near) < 2:
        return singles[best]
    blend = _blend_variant([singles[k] for k in near])
    blend.selection_score = judge.point(scores(blend))
    candidates["blend"] = blend
    if clearly_worse(judge.draws(scores(blend)) - draws[best]):
        return singles[best]
    return blend
