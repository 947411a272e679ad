"""The quality gate: per issue, on the holdout, is the model trustworthy enough to flag?

The promotion gate (`training.registry.decide_promotion`) compares a candidate with the
champion; this gate judges each issue of a candidate on its own, the first version included,
and disables the issues that fail (their reason goes into the bundle, the run and the
`surfacer train` report). An issue is disabled when:

- its labelled test rows are too few to judge (fewer than MIN_CLASS_ROWS of either class);
- its scores are constant (or nearly: their spread is below CONSTANT_STD) -- a model that
  gives every row the same number ranks nothing;
- the bootstrap interval of its ROC-AUC includes 0.5 (no better than chance);
- the bootstrap interval of its PR-AUC does not lie above the test base rate;
- it is worse than the strongest baseline beyond the interval: a paired bootstrap (the same
  resampled rows for both) of PR-AUC(model) - PR-AUC(baseline) lies entirely below 0;
- no review threshold meets the volume cap and the precision floor (`training.thresholds`).

Resamples draw items, not rows: an item's rows (its horizons) are not independent, and a
row bootstrap would give intervals that are too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.thresholds import ThresholdChoice

MIN_CLASS_ROWS = 5
CONSTANT_STD = 1e-6
DEFAULT_BOOTSTRAP = 400
DEFAULT_CONFIDENCE = 0.95


@dataclass
class IssueVerdict:
    """The gate's verdict on one issue: enabled or not, why, and the numbers behind it."""

    issue: str
    enabled: bool
    reasons: list[str]
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """One line: 'enabled (...)' or 'disabled: reason; reason'."""
        if self.enabled:
            return "enabled (" + "; ".join(self.reasons) + ")" if self.reasons else "enabled"
        return "disabled: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "issue": self.issue,
            "enabled": self.enabled,
            "reasons": list(self.reasons),
            "checks": {k: _json(v) for k, v in self.checks.items()},
        }


def _json(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, tuple | list):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    return v


def disabled_verdict(issue: str, reason: str) -> IssueVerdict:
    """The verdict of an issue that could not even be fitted (e.g. one class of labels)."""
    return IssueVerdict(issue=issue, enabled=False, reasons=[reason])


class _Ranked:
    """A score vector sorted once, so each bootstrap's weighted ROC-AUC and average precision
    is two cumulative sums (O(n)), equal to scikit-learn's with unit weights (ties included)."""

    def __init__(self, p: np.ndarray) -> None:
        self.order = np.argsort(-p, kind="stable")
        ps = p[self.order]
        self.ends = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])

    def metrics(self, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
        wp = (w * y)[self.order]
        wn = (w * (1.0 - y))[self.order]
        tp = np.cumsum(wp)[self.ends]
        fp = np.cumsum(wn)[self.ends]
        pos, neg = tp[-1], fp[-1]
        if pos <= 0 or neg <= 0:
            return math.nan, math.nan
        tpr, fpr = tp / pos, fp / neg
        dtpr = np.diff(tpr, prepend=0.0)
        dfpr = np.diff(fpr, prepend=0.0)
        auc = float(np.sum(dfpr * (tpr + (tpr - dtpr)) / 2.0))
        precision = tp / np.maximum(tp + fp, 1e-300)
        ap = float(np.sum(dtpr * precision))
        return auc, ap


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def judge_issue(
    issue: str,
    y: np.ndarray,
    p: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    baselines: Mapping[str, np.ndarray] | None = None,
    threshold: ThresholdChoice | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    random_state: int = 0,
) -> IssueVerdict:
    """Judge one issue's test scores `p` against labels `y` (and baselines on the same rows).

    groups: each row's item (the bootstrap unit); None: rows are independent.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    base = {k: np.asarray(v, dtype=np.float64)[keep] for k, v in (baselines or {}).items()}
    g = np.arange(len(y)) if groups is None else np.asarray(groups, dtype=object)[keep]
    pos = int(y.sum())
    neg = len(y) - pos
    checks: dict[str, Any] = {"n": len(y), "positives": pos}
    reasons: list[str] = []
    if pos < MIN_CLASS_ROWS or neg < MIN_CLASS_ROWS:
        return IssueVerdict(
            issue,
            False,
            [
                f"too few labelled test rows to judge: {pos} positive, {neg} negative "
                f"(need {MIN_CLASS_ROWS} of each)"
            ],
            checks,
        )
    base_rate = pos / len(y)
    checks["base_rate"] = base_rate
    spread = float(np.std(p))
    checks["score_std"] = spread
    if spread < CONSTANT_STD or len(np.unique(p)) == 1:
        return IssueVerdict(
            issue,
            False,
            [f"constant scores on the holdout (std {spread:.2e}, e.g. {p[0]:.6g} for every row)"],
            checks,
        )

    # item-level bootstrap, the same resamples for the model and every baseline (paired)
    _, gidx = np.unique(g.astype(str), return_inverse=True)
    n_groups = int(gidx.max()) + 1
    rng = np.random.default_rng(random_state)
    ranked = _Ranked(p)
    ranked_base = {k: _Ranked(v) for k, v in base.items()}
    ones = np.ones(len(y))
    roc, ap = ranked.metrics(y, ones)
    base_ap = {k: r.metrics(y, ones)[1] for k, r in ranked_base.items()}
    boot_roc = np.empty(n_boot)
    boot_ap = np.empty(n_boot)
    boot_base = {k: np.empty(n_boot) for k in base}
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        w = counts[gidx].astype(np.float64)
        boot_roc[b], boot_ap[b] = ranked.metrics(y, w)
        for k, r in ranked_base.items():
            boot_base[k][b] = r.metrics(y, w)[1]
    roc_ci = _interval(boot_roc, confidence)
    ap_ci = _interval(boot_ap, confidence)
    checks.update(roc_auc=roc, roc_auc_ci=roc_ci, pr_auc=ap, pr_auc_ci=ap_ci)
    checks["confidence"] = confidence
    checks["bootstrap"] = n_boot
    level = f"{confidence:.0%}"
    notes: list[str] = []

    if not roc_ci[0] > 0.5:
        reasons.append(
            f"ROC-AUC {roc:.3f}, its {level} interval [{roc_ci[0]:.3f}, {roc_ci[1]:.3f}] "
            "includes 0.5 (no better than chance)"
        )
    if not ap_ci[0] > base_rate:
        reasons.append(
            f"PR-AUC {ap:.3f} not clearly above the base rate {base_rate:.3f} "
            f"({level} interval [{ap_ci[0]:.3f}, {ap_ci[1]:.3f}])"
        )
    finite_base = {k: v for k, v in base_ap.items() if math.isfinite(v)}
    if finite_base:
        best = max(finite_base, key=lambda k: finite_base[k])
        diff_ci = _interval(boot_ap - boot_base[best], confidence)
        checks.update(
            baseline=best,
            baseline_pr_auc=finite_base[best],
            baselines_pr_auc=dict(base_ap),
            pr_auc_minus_baseline_ci=diff_ci,
        )
        if diff_ci[1] < 0:
            reasons.append(
                f"worse than the {best} baseline: PR-AUC {ap:.3f} vs {finite_base[best]:.3f}, "
                f"difference {level} interval [{diff_ci[0]:.3f}, {diff_ci[1]:.3f}] below 0"
            )
        else:
            notes.append(f"PR-AUC {ap:.3f} vs best baseline {best} {finite_base[best]:.3f}")
    if threshold is not None:
        checks["threshold"] = threshold.to_dict()
        if not threshold.ok:
            reasons.append(f"no usable threshold: {threshold.reason}")
    if reasons:
        return IssueVerdict(issue, False, reasons, checks)
    notes.insert(
        0,
        f"ROC-AUC {roc:.3f} [{roc_ci[0]:.3f}, {roc_ci[1]:.3f}], PR-AUC {ap:.3f} "
        f"[{ap_ci[0]:.3f}, {ap_ci[1]:.3f}] over base rate {base_rate:.3f}",
    )
    return IssueVerdict(issue, True, notes, checks)
