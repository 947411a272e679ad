"""The quality gate per issue: constant, chance-level, below-baseline and noise models fail."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from training.gate import MIN_CLASS_ROWS, _Ranked, judge_issue
from training.thresholds import choose_threshold


def _data(n: int = 2000, rate: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(float)
    return rng, y


def test_weighted_metrics_equal_sklearn_with_unit_weights_and_ties() -> None:
    rng, y = _data(500, 0.2)
    p = np.round(rng.random(500) * 0.5 + 0.4 * y, 2)  # many ties
    auc, ap = _Ranked(p).metrics(y, np.ones(500))
    assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert ap == pytest.approx(average_precision_score(y, p), abs=1e-12)
    # integer weights are row repeats
    w = rng.integers(0, 3, 500).astype(float)
    rows = np.repeat(np.arange(500), w.astype(int))
    auc_w, ap_w = _Ranked(p).metrics(y, w)
    assert auc_w == pytest.approx(roc_auc_score(y[rows], p[rows]), abs=1e-12)
    assert ap_w == pytest.approx(average_precision_score(y[rows], p[rows]), abs=1e-12)


def test_a_good_model_is_enabled_with_its_intervals() -> None:
    rng, y = _data()
    p = 1 / (1 + np.exp(-(3 * y + rng.normal(size=len(y)) - 2)))
    v = judge_issue("good", y, p, groups=np.arange(len(y)) // 3)
    assert v.enabled, v.reasons
    lo, hi = v.checks["roc_auc_ci"]
    assert 0.5 < lo < v.checks["roc_auc"] < hi
    assert v.checks["pr_auc_ci"][0] > v.checks["base_rate"]


def test_a_constant_model_is_refused() -> None:
    _, y = _data()
    v = judge_issue("wrongful_enforcement", y, np.full(len(y), 0.68753))
    assert not v.enabled
    assert "constant scores" in v.reasons[0] and "0.68753" in v.reasons[0]
    assert v.summary.startswith("disabled: constant scores")


def test_a_noise_model_is_refused_by_its_intervals() -> None:
    rng, y = _data(seed=1)
    v = judge_issue("noise", y, rng.random(len(y)))
    assert not v.enabled
    assert any("includes 0.5" in r for r in v.reasons)
    assert any("not clearly above the base rate" in r for r in v.reasons)


def test_a_model_worse_than_its_baseline_is_refused() -> None:
    rng, y = _data(4000, 0.2, seed=2)
    signal = rng.normal(size=len(y)) + 2.5 * y
    weak = signal + rng.normal(scale=2.5, size=len(y))  # real signal, but far noisier
    v = judge_issue("issue", y, weak, baselines={"logreg_tabular": signal, "other": weak * 0})
    assert not v.enabled
    assert any(r.startswith("worse than the logreg_tabular baseline") for r in v.reasons)
    assert v.checks["baseline"] == "logreg_tabular"
    assert v.checks["pr_auc_minus_baseline_ci"][1] < 0
    # the same model against a baseline it matches is not refused for it
    same = judge_issue("issue", y, signal, baselines={"logreg_tabular": signal})
    assert same.enabled, same.reasons


def test_too_few_labelled_rows_and_one_class_are_refused_clearly() -> None:
    y = np.r_[np.zeros(100), np.ones(MIN_CLASS_ROWS - 1)]
    v = judge_issue("rare", y, np.linspace(0, 1, len(y)))
    assert not v.enabled and "too few labelled test rows" in v.reasons[0]
    v = judge_issue("none", np.zeros(50), np.linspace(0, 1, 50))
    assert not v.enabled and "0 positive" in v.reasons[0]


def test_no_usable_threshold_disables_an_otherwise_good_model() -> None:
    rng, y = _data(seed=3)
    p = 1 / (1 + np.exp(-(3 * y + rng.normal(size=len(y)) - 2)))
    # a threshold chosen on labels that say nothing about the top scores
    choice = choose_threshold(p, np.arange(len(y)), np.full(len(y), np.nan))
    v = judge_issue("issue", y, p, threshold=choice)
    assert not v.enabled
    assert v.reasons == [f"no usable threshold: {choice.reason}"]
