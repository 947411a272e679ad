"""Evaluation on the held-out test window: per-issue metrics, per-segment metrics, curves.

`EvaluationReport` is the hand-off to MLflow tracking and the promotion gate. It carries the
test rows themselves (`test_frame`, with one `label_<issue>` column per issue) so a gate can
re-score the exact same holdout with the current champion (`holdout_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

if TYPE_CHECKING:
    from models.bundle import ScoringBundle

# The metrics of `overall[issue]`, in display order; baseline_* and oracle_* are added when known.
OVERALL_METRICS: tuple[str, ...] = (
    "n",
    "positives",
    "roc_auc",
    "pr_auc",
    "threshold",
    "precision_at_threshold",
    "recall_at_threshold",
    "f1_at_threshold",
    "mcc_at_threshold",
    "flagged",
    "flagged_share",
    "precision_at_k",
    "k",
    "brier",
    "ece",
)
SEGMENT_COLUMNS: tuple[str, ...] = (
    "issue",
    "dimension",
    "value",
    "n",
    "positives",
    "roc_auc",
    "pr_auc",
    "precision",
    "recall",
)
# The gate compares on this metric per issue; the primary metric is its mean over issues.
PRIMARY_METRIC = "pr_auc"
CALIBRATION_BINS = 10
MAX_CURVE_POINTS = 200
MIN_SEGMENT_ROWS = 20


def label_column(issue: str) -> str:
    """Name of an issue's label column in `test_frame` (float: 1, 0, NaN where unlabeled)."""
    return f"label_{issue}"


@dataclass(frozen=True)
class Holdout:
    """How the test split was cut, so a later run can say whether it used the same holdout.

    kind "time": test rows are those with as_of in [start, end]; kind "stratified": a random
    stratified split of a flat dataset (random_state given). `item_ids` are the test items.
    """

    kind: Literal["time", "stratified"]
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    random_state: int
    n_rows: int
    item_ids: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for run params and tags; the ids themselves are in test_frame)."""
        return {
            "kind": self.kind,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "random_state": self.random_state,
            "n_rows": self.n_rows,
            "n_items": len(self.item_ids),
        }


@dataclass
class EvaluationReport:
    """Everything measured on the test split of one training run.

    overall: issue -> metric name -> value (see OVERALL_METRICS; plus baseline_roc_auc,
             baseline_pr_auc for the scikit-learn baseline, and oracle_pr_auc, pr_auc_vs_oracle
             when the dataset ships latent truth).
    segments: one row per (issue, dimension, value) with SEGMENT_COLUMNS.
    pr_curves: issue -> DataFrame(precision, recall, threshold), at most MAX_CURVE_POINTS rows.
    calibration: issue -> DataFrame(bin_lower, bin_upper, mean_predicted, fraction_positive, n).
    importances: issue -> DataFrame(feature, gain, split), by decreasing gain.
    holdout: how the test split was cut; test_frame: its rows (features + label_<issue>).
    """

    overall: dict[str, dict[str, float]]
    segments: pd.DataFrame
    pr_curves: dict[str, pd.DataFrame]
    calibration: dict[str, pd.DataFrame]
    importances: dict[str, pd.DataFrame]
    holdout: Holdout
    test_frame: pd.DataFrame
    capacity_per_day: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def issue_names(self) -> list[str]:
        return list(self.overall)

    def metrics_table(self) -> pd.DataFrame:
        """One row per issue, one column per metric (the table `surfacer train` prints)."""
        table = pd.DataFrame.from_dict(self.overall, orient="index")
        first = [c for c in OVERALL_METRICS if c in table.columns]
        rest = [c for c in table.columns if c not in first]
        table = table[first + rest]
        table.index.name = "issue"
        return table

    def flat_metrics(self) -> dict[str, float]:
        """`<issue>.<metric>` -> value for run logging; NaN metrics (undefined) are left out."""
        out: dict[str, float] = {}
        for issue, metrics in self.overall.items():
            for name, value in metrics.items():
                if value is not None and math.isfinite(float(value)):
                    out[f"{issue}.{name}"] = float(value)
        primary = self.primary_metric()
        if math.isfinite(primary):
            out[f"mean.{PRIMARY_METRIC}"] = primary
        return out

    def primary_metric(self) -> float:
        """Mean PR-AUC over issues: the number the promotion gate must not make worse."""
        values = [m.get(PRIMARY_METRIC, math.nan) for m in self.overall.values()]
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan


# --- metric functions (pure) ---------------------------------------------------------------


def _finite_pairs(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep].astype(int), p[keep]


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC, NaN when only one class is present (undefined, not 0.5)."""
    y, p = _finite_pairs(y, p)
    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, p))


def pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve); NaN without positives."""
    y, p = _finite_pairs(y, p)
    if y.sum() == 0:
        return math.nan
    return float(average_precision_score(y, p))


def precision_recall_at(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float, int]:
    """Precision and recall of flagging `p >= threshold`, and how many rows were flagged."""
    y, p = _finite_pairs(y, p)
    flagged = p >= threshold
    tp = int((flagged & (y == 1)).sum())
    n_flag = int(flagged.sum())
    pos = int(y.sum())
    precision = tp / n_flag if n_flag else math.nan
    recall = tp / pos if pos else math.nan
    return precision, recall, n_flag


def precision_at_k(y: np.ndarray, p: np.ndarray, k: int) -> float:
    """Share of positives among the k highest scores (what a review queue of size k sees)."""
    y, p = _finite_pairs(y, p)
    k = min(int(k), len(y))
    if k <= 0:
        return math.nan
    # stable sort on -p: ties keep row order, so the metric is deterministic
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean())


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the probabilities."""
    y, p = _finite_pairs(y, p)
    if len(y) == 0:
        return math.nan
    return float(np.mean((p - y) ** 2))


def calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Equal-width probability bins with mean prediction and observed positive rate."""
    y, p = _finite_pairs(y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        rows.append(
            {
                "bin_lower": float(edges[b]),
                "bin_upper": float(edges[b + 1]),
                "mean_predicted": float(p[mask].mean()) if n else math.nan,
                "fraction_positive": float(y[mask].mean()) if n else math.nan,
                "n": n,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, n_bins: int = CALIBRATION_BINS
) -> float:
    """Row-weighted mean |mean predicted - observed rate| over equal-width bins."""
    bins = calibration_bins(y, p, n_bins)
    used = bins[bins["n"] > 0]
    if used.empty:
        return math.nan
    gap = (used["mean_predicted"] - used["fraction_positive"]).abs()
    return float((gap * used["n"]).sum() / used["n"].sum())


def pr_curve(y: np.ndarray, p: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """Precision-recall points (thinned to at most `max_points`) for plots."""
    y, p = _finite_pairs(y, p)
    if y.sum() == 0:
        return pd.DataFrame({"precision": [], "recall": [], "threshold": []}, dtype=float)
    precision, recall, thresholds = precision_recall_curve(y, p)
    thresholds = np.append(thresholds, np.inf)  # sklearn's last point has no threshold
    if len(precision) > max_points:
        keep = np.unique(np.linspace(0, len(precision) - 1, max_points).round().astype(int))
        precision, recall, thresholds = precision[keep], recall[keep], thresholds[keep]
    return pd.DataFrame({"precision": precision, "recall": recall, "threshold": thresholds})


def f1_mcc_at(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    """F1 and Matthews correlation of flagging `p >= threshold` (NaN where undefined)."""
    y, p = _finite_pairs(y, p)
    flagged = p >= threshold
    tp = float((flagged & (y == 1)).sum())
    fp = float((flagged & (y == 0)).sum())
    fn = float((~flagged & (y == 1)).sum())
    tn = float((~flagged & (y == 0)).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else math.nan
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    # no flags at all (or every row flagged): the rule carries no information
    mcc = (tp * tn - fp * fn) / denom if denom > 0 else (0.0 if len(y) else math.nan)
    return f1, mcc


def issue_metrics(y: np.ndarray, p: np.ndarray, *, threshold: float, k: int) -> dict[str, float]:
    """The overall metrics of one issue on one split (see OVERALL_METRICS)."""
    yy, pp = _finite_pairs(y, p)
    precision, recall, n_flag = precision_recall_at(yy, pp, threshold)
    f1, mcc = f1_mcc_at(yy, pp, threshold)
    return {
        "n": float(len(yy)),
        "positives": float(yy.sum()),
        "roc_auc": roc_auc(yy, pp),
        "pr_auc": pr_auc(yy, pp),
        "threshold": float(threshold),
        "precision_at_threshold": precision,
        "recall_at_threshold": recall,
        "f1_at_threshold": f1,
        "mcc_at_threshold": mcc,
        "flagged": float(n_flag),
        "flagged_share": n_flag / len(yy) if len(yy) else math.nan,
        "precision_at_k": precision_at_k(yy, pp, k),
        "k": float(min(k, len(yy))),
        "brier": brier(yy, pp),
        "ece": expected_calibration_error(yy, pp),
    }


def segment_metrics(
    issue: str,
    frame: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    *,
    threshold: float,
    dimensions: Sequence[str],
    min_rows: int = MIN_SEGMENT_ROWS,
) -> pd.DataFrame:
    """Metrics per value of each segment dimension (values with fewer than min_rows skipped)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    rows: list[dict[str, Any]] = []
    for dim in dimensions:
        if dim not in frame.columns:
            continue
        values = frame[dim].astype("object").where(frame[dim].notna(), "<missing>").to_numpy()
        for value in pd.unique(values):
            mask = values == value
            ys, ps = _finite_pairs(y[mask], p[mask])
            if len(ys) < min_rows:
                continue
            precision, recall, _ = precision_recall_at(ys, ps, threshold)
            rows.append(
                {
                    "issue": issue,
                    "dimension": dim,
                    "value": str(value),
                    "n": len(ys),
                    "positives": int(ys.sum()),
                    "roc_auc": roc_auc(ys, ps),
                    "pr_auc": pr_auc(ys, ps),
                    "precision": precision,
                    "recall": recall,
                }
            )
    if not rows:
        return pd.DataFrame({c: [] for c in SEGMENT_COLUMNS})
    return pd.DataFrame(rows, columns=list(SEGMENT_COLUMNS))


def holdout_metrics(
    bundle: ScoringBundle, test_frame: pd.DataFrame, *, k: int | None = None
) -> dict[str, dict[str, float]]:
    """Re-score `test_frame` with `bundle` and measure each issue on its labelled rows.

    This is how the promotion gate compares a champion and a challenger on the same holdout:
    both bundles score the same rows and are judged against the same `label_<issue>` columns.
    Issues the bundle does not know or has disabled, or without a label column, are left out.
    """
    probs = bundle.score_frame(test_frame)
    out: dict[str, dict[str, float]] = {}
    thresholds = bundle.thresholds
    for issue in bundle.issue_names:
        col = label_column(issue)
        if col not in test_frame.columns or thresholds.get(issue) is None:
            continue
        y = test_frame[col].to_numpy(dtype=float)
        p = probs[issue].to_numpy(dtype=float)
        threshold = float(thresholds[issue])  # type: ignore[arg-type]
        kk = k if k is not None else int(np.isfinite(y).sum())
        out[issue] = issue_metrics(y, p, threshold=threshold, k=kk)
    return out
