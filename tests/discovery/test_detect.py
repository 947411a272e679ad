"""The detector: planted step changes are found, pure seasonal noise raises (almost) no alarm."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from discovery.detect import (
    DetectorConfig,
    benjamini_hochberg,
    detect_counts,
    predictive_tail,
    run_lengths,
    trailing_sum,
)
from tests.support.tables import seasonal_counts

HOURLY = DetectorConfig(period=24, window=168, min_history=48, alpha=0.01, persistence=2)


def test_trailing_sum_excludes_the_current_bucket() -> None:
    x = np.arange(6, dtype=float)[None, :]
    assert trailing_sum(x, 2).tolist() == [[0, 0, 1, 3, 5, 7]]


def test_predictive_tail_tends_to_poisson_with_a_sharp_baseline() -> None:
    # Gamma(shape, rate) with huge shape is a point mass at shape/rate = 0.05.
    observed = np.array([3.0, 8.0, 15.0])
    shape = np.full(3, 1e7)
    rate = shape / 0.05
    exposure = np.full(3, 100.0)
    got = predictive_tail(observed, shape, rate, exposure)
    want = stats.poisson.sf(observed - 1, 5.0)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # A thin baseline (few events) makes the same count less surprising.
    thin = predictive_tail(observed, np.full(3, 5.0), np.full(3, 100.0), exposure)
    assert (thin[1:] > got[1:]).all()


def test_benjamini_hochberg_per_column() -> None:
    p = np.array([[0.001, 0.2], [0.02, 0.03], [0.04, 0.9], [np.nan, 0.5]])
    rejected = benjamini_hochberg(p, 0.05)
    # column 0: m=3, sorted .001 .02 .04 vs .0167 .033 .05 -> all three rejected
    assert rejected[:, 0].tolist() == [True, True, True, False]
    # column 1: m=4, .03 vs .0125 -> nothing
    assert not rejected[:, 1].any()


def test_run_lengths() -> None:
    flags = np.array([[0, 1, 1, 0, 1, 1, 1]], dtype=bool)
    length, start = run_lengths(flags)
    assert length.tolist() == [[0, 1, 2, 0, 1, 2, 3]]
    assert start.tolist() == [[-1, 1, 1, -1, 4, 4, 4]]


def test_planted_step_change_is_detected_quickly() -> None:
    num, den = seasonal_counts(200, 21, random_state=1)
    # A busy segment (about 100 items an hour at peak), so one or two hours carry evidence.
    target, at = int(np.argsort(den[1:].mean(axis=1))[-5]) + 1, 15 * 24 + 5
    rng = np.random.default_rng(2)
    base_rate = num[target, :at].sum() / den[target, :at].sum()
    # Triple the rate of one segment from `at` on (and keep the platform total consistent).
    extra = rng.binomial(den[target, at:].astype(int), min(2 * base_rate, 1.0)).astype(float)
    num[target, at:] += extra
    num[0, at:] += extra
    det = detect_counts(num, den, test="binomial", config=HOURLY)
    fired = np.flatnonzero(det.alarm[target])
    assert fired.size, "the planted step was not detected"
    assert at <= fired[0] <= at + 6, f"alarm at bucket {fired[0]}, change at {at}"
    others = np.delete(np.arange(1, 200), target - 1)
    assert det.alarm[others].sum() == 0
    assert det.rate[target, at + 24] < 2 * base_rate  # the incident stays out of its own baseline


@pytest.mark.parametrize("seed", [3, 4])
def test_no_alarms_on_pure_seasonal_noise(seed: int) -> None:
    num, den = seasonal_counts(1000, 28, random_state=seed)
    det = detect_counts(num, den, test="binomial", config=HOURLY)
    tested = np.isfinite(det.pvalue[1:]).sum()
    # The null p-values are calibrated (not anti-conservative) ...
    assert (det.pvalue[1:] < 1e-3).sum() <= 2e-3 * tested
    # ... and after BH, minimum count/ratio and persistence, 1000 series × 26 days stay quiet:
    # at most one alarmed series (a false-alarm rate well under 1 per 1000 series-months).
    assert det.alarm[1:].any(axis=1).sum() <= 1


def test_detector_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="2-D arrays of one shape"):
        detect_counts(np.zeros((2, 5)), np.zeros((2, 4)))
