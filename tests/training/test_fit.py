"""Fitting pieces: calibration choice, honest out-of-fold text scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from training.fit import (
    fit_calibrator,
    fit_text_model,
    out_of_fold_text_scores,
)


def test_calibrator_kind_depends_on_positives() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(2000)
    y = (rng.random(2000) < p**2).astype(float)
    iso = fit_calibrator(p, y)
    assert iso.kind == "isotonic"
    assert (np.diff(iso.transform(np.linspace(0, 1, 100))) >= 0).all()
    few = fit_calibrator(p[:200], (np.arange(200) < 10).astype(float))
    assert few.kind == "platt"
    assert fit_calibrator(p[:10], np.zeros(10)).kind == "identity"


def test_out_of_fold_text_scores_do_not_memorise_items() -> None:
    # each item has its own unique token and a random label: in-sample the model can
    # memorise it, out of fold it cannot (AUC about 0.5)
    rng = np.random.default_rng(0)
    n = 600
    hashed = sp.csr_matrix((np.ones(n), (np.arange(n), np.arange(n))), shape=(n, 1024))
    y = rng.integers(0, 2, n)
    groups = np.array([f"i{i}" for i in range(n)])
    in_sample = fit_text_model(hashed, y, random_state=0).score(hashed)
    oof = out_of_fold_text_scores(hashed, y, groups, random_state=0)
    assert roc_auc_score(y, in_sample) > 0.95
    assert roc_auc_score(y, oof) == pytest.approx(0.5, abs=0.1)
    np.testing.assert_array_equal(oof, out_of_fold_text_scores(hashed, y, groups, random_state=0))


def _noisy_text(n: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    # 200 hashed tokens, 5 per row; tokens 0-9 raise the odds of a positive
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, 200, (n, 5))
    hashed = sp.csr_matrix(
        (np.ones(5 * n), (np.repeat(np.arange(n), 5), cols.ravel())), shape=(n, 256)
    )
    hashed.sum_duplicates()
    logit = -2.0 + 1.5 * (cols < 10).sum(axis=1)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    groups = np.array([f"i{i // 3}" for i in range(n)])  # three rows per item
    return hashed, y, groups


def test_text_folds_drop_to_three_from_five_thousand_rows(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import training.fit as fit

    assert fit.text_folds(4_999) == 5
    assert fit.text_folds(5_000) == 3
    seen: list[int] = []
    real = fit._item_folds

    def spy(groups, n_splits, random_state):  # type: ignore[no-untyped-def]
        folds = real(groups, n_splits, random_state)
        seen.append(len(folds))
        return folds

    monkeypatch.setattr(fit, "_item_folds", spy)
    for n in (600, 6_000):
        hashed, y, groups = _noisy_text(n, seed=n)
        fit.fit_text_model_cv(hashed, y, groups, random_state=0)
    fit.fit_text_model_cv(*_noisy_text(600, seed=1), n_splits=4, random_state=0)
    assert seen == [5, 3, 4]


def test_warm_started_c_grid_ranks_like_cold_fits() -> None:
    # the warm-started grid must reach (about) the same optimum per C as fits from zero
    from sklearn.metrics import average_precision_score

    import training.fit as fit

    hashed, y, groups = _noisy_text(3_000, seed=7)
    _, oof = fit.fit_text_model_cv(hashed, y, groups, Cs=(0.25, 4.0, 64.0), random_state=0)
    cold = np.full(len(y), np.nan)
    for te in fit._item_folds(groups, fit.text_folds(len(y)), 0):
        tr = np.setdiff1d(np.arange(len(y)), te)
        model = fit.fit_text_model(hashed[tr], y[tr], C=0.25, random_state=0)
        cold[te] = model.score(hashed[te])
    assert np.isfinite(oof).all()
    assert average_precision_score(y, oof) >= average_precision_score(y, cold) - 0.01
