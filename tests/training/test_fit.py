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
