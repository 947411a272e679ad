"""Metric functions: checked against scikit-learn and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from training.evaluate import (
    calibration_bins,
    expected_calibration_error,
    issue_metrics,
    pr_auc,
    pr_curve,
    precision_at_k,
    precision_recall_at,
    roc_auc,
    segment_metrics,
)


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    p = rng.random(400)
    y = (rng.random(400) < p).astype(float)
    return y, p


def test_ranking_metrics_match_scikit_learn(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert pr_auc(y, p) == pytest.approx(average_precision_score(y, p))
    m = issue_metrics(y, p, threshold=0.5, k=50)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["n"] == 400 and m["positives"] == y.sum()


def test_missing_labels_are_ignored_and_one_class_is_nan() -> None:
    y = np.array([1.0, np.nan, 0.0, 1.0])
    p = np.array([0.9, 0.1, 0.2, 0.8])
    assert roc_auc(y, p) == 1.0
    assert math.isnan(roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])))
    assert math.isnan(pr_auc(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_precision_recall_at_threshold_and_at_k() -> None:
    y = np.array([1, 0, 1, 0, 1, 0], dtype=float)
    p = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    precision, recall, flagged = precision_recall_at(y, p, 0.7)
    assert (precision, recall, flagged) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert precision_at_k(y, p, 2) == 0.5
    assert precision_at_k(y, p, 100) == 0.5  # k larger than n: all rows
    assert math.isnan(precision_recall_at(y, p, 0.95)[0])  # nothing flagged: undefined


def test_calibration_error_of_a_perfectly_calibrated_and_a_biased_model() -> None:
    p = np.repeat([0.05, 0.25, 0.45, 0.65, 0.85], 200)
    rng = np.random.default_rng(0)
    # exact rates per bin: 10, 50, 90, 130, 170 positives out of 200
    y = np.concatenate(
        [rng.permutation(np.r_[np.ones(k), np.zeros(200 - k)]) for k in (10, 50, 90, 130, 170)]
    )
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(y, np.clip(p + 0.1, 0, 1)) == pytest.approx(0.1, abs=1e-9)
    bins = calibration_bins(y, p)
    assert list(bins.columns) == [
        "bin_lower",
        "bin_upper",
        "mean_predicted",
        "fraction_positive",
        "n",
    ]
    assert bins["n"].sum() == len(y)


def test_pr_curve_is_thinned(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    curve = pr_curve(y, p, max_points=50)
    assert len(curve) <= 50
    assert curve["recall"].iloc[0] == 1.0 and curve["recall"].iloc[-1] == 0.0


def test_segment_metrics_per_dimension_value() -> None:
    frame = pd.DataFrame({"region": ["a"] * 30 + ["b"] * 30 + ["c"] * 5})
    y = np.r_[np.tile([1.0, 0.0], 15), np.tile([1.0, 0.0], 15), np.ones(5)]
    p = np.r_[np.tile([0.9, 0.1], 15), np.tile([0.1, 0.9], 15), np.ones(5)]
    seg = segment_metrics("x", frame, y, p, threshold=0.5, dimensions=["region", "absent"])
    assert list(seg["value"]) == ["a", "b"]  # "c" has too few rows, "absent" is skipped
    assert seg.set_index("value").loc["a", "roc_auc"] == 1.0
    assert seg.set_index("value").loc["b", "roc_auc"] == 0.0
    assert seg.set_index("value").loc["a", "recall"] == 1.0
