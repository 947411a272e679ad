"""Per-issue model fitting: stacked text model, LightGBM, scikit-learn baseline, calibration.

Everything is deterministic for a given `random_state`: LightGBM runs with
`deterministic=True`, a fixed thread count and seed; folds are seeded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.bundle import Calibrator, TextModel

# Isotonic calibration needs enough positives on the validation window to be stable;
# below that a two-parameter Platt fit generalises better.
MIN_POSITIVES_ISOTONIC = 50
TEXT_FOLDS = 5


@dataclass(frozen=True)
class BoosterParams:
    """LightGBM settings shared by all issues (deterministic by construction)."""

    # Small, regularised trees: labels are sparse and noisy (a review sample, appeals), and
    # on the default simulation these beat 31-leaf trees on every issue's PR-AUC.
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.7
    bagging_fraction: float = 0.9
    bagging_freq: int = 1
    lambda_l2: float = 5.0
    metric: str = "average_precision"
    max_rounds: int = 2000
    early_stopping_rounds: int = 100
    # one thread: the fit is deterministic either way, and on a shared 2-core machine a
    # second thread costs more in contention than it gains
    num_threads: int = 1

    def lgb_params(self, random_state: int) -> dict[str, Any]:
        return {
            "objective": "binary",
            "metric": self.metric,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "seed": int(random_state),
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
            # categorical codes are small ints; let rare ones merge instead of overfitting
            "min_data_per_group": 20,
            "cat_smooth": 10.0,
        }


def fit_text_model(
    hashed: sp.csr_matrix, y: np.ndarray, *, alpha: float = 1e-5, random_state: int = 0
) -> TextModel:
    """A logistic model on hashed n-grams, kept as coefficients (see models.bundle.TextModel)."""
    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        # a constant target has no text signal to learn; the intercept carries the base rate
        rate = float(np.clip(y.mean() if len(y) else 0.5, 1e-4, 1 - 1e-4))
        return TextModel(np.zeros(hashed.shape[1]), math.log(rate / (1 - rate)))
    # SGD on the log loss: the same linear model as LogisticRegression, several times faster
    # on 2**18 hashed columns; a fixed seed and epoch budget keep it deterministic
    clf = SGDClassifier(
        loss="log_loss", alpha=alpha, max_iter=30, tol=1e-4, random_state=random_state
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(hashed, y)
    return TextModel(clf.coef_.ravel(), float(clf.intercept_[0]))


def out_of_fold_text_scores(
    hashed: sp.csr_matrix,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    n_splits: int = TEXT_FOLDS,
    alpha: float = 1e-5,
    random_state: int = 0,
) -> np.ndarray:
    """Text-model scores for training rows, each from a model that never saw its item.

    Stacking needs honest inputs: an in-sample text score would look far better to LightGBM
    than the score it gets at predict time. Folds are by item (an item's rows share text).
    """
    n_groups = len(np.unique(groups))
    n_splits = max(2, min(n_splits, n_groups))
    # GroupKFold is deterministic given the group order; shuffle the group labels by seed
    rng = np.random.default_rng(random_state)
    uniq, inverse = np.unique(groups, return_inverse=True)
    shuffled = rng.permutation(len(uniq))[inverse]
    scores = np.empty(len(y))
    for train_idx, test_idx in GroupKFold(n_splits=n_splits).split(hashed, y, shuffled):
        model = fit_text_model(
            hashed[train_idx], y[train_idx], alpha=alpha, random_state=random_state
        )
        scores[test_idx] = model.score(hashed[test_idx])
    return scores


def fit_booster(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    feature_names: Sequence[str],
    categorical: Sequence[int],
    params: BoosterParams,
    random_state: int = 0,
) -> tuple[lgb.Booster, int]:
    """LightGBM with early stopping on the validation window; returns (booster, best rounds).

    The returned booster holds only the best iteration's trees, so predict needs no
    num_iteration argument and pickles small.
    """
    names = [_safe_name(n) for n in feature_names]
    cats = list(categorical)
    train_set = lgb.Dataset(
        x_train,
        label=y_train,
        feature_name=names,
        categorical_feature=cats,
        free_raw_data=True,
    )
    valid_set = lgb.Dataset(x_valid, label=y_valid, reference=train_set)
    booster = lgb.train(
        params.lgb_params(random_state),
        train_set,
        num_boost_round=params.max_rounds,
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return trimmed, int(best)


def _safe_name(name: str) -> str:
    # LightGBM rejects some JSON special characters in feature names
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


def fit_baseline(
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    categorical: Sequence[int],
    random_state: int = 0,
) -> Pipeline:
    """The scikit-learn baseline: logistic regression on the same dense features.

    Numeric columns are median-imputed (with missing indicators) and scaled; categorical codes
    are one-hot encoded (unknown codes ignored at predict time).
    """
    d = x_train.shape[1]
    cats = sorted(set(categorical))
    nums = [j for j in range(d) if j not in set(cats)]
    parts = []
    if nums:
        parts.append(
            (
                "num",
                make_pipeline(
                    SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                    StandardScaler(),
                ),
                nums,
            )
        )
    if cats:
        parts.append(
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=-1.0, keep_empty_features=True),
                    OneHotEncoder(handle_unknown="ignore", min_frequency=5),
                ),
                cats,
            )
        )
    model = Pipeline(
        [
            ("features", ColumnTransformer(parts, sparse_threshold=0.0)),
            (
                "clf",
                LogisticRegression(C=1.0, max_iter=1000, random_state=random_state),
            ),
        ]
    )
    # logistic regression has no use for +-inf; clip extreme values the transform may emit
    model.fit(_finite(x_train), np.asarray(y_train, dtype=int))
    return model


def baseline_predict(model: Pipeline, x: np.ndarray) -> np.ndarray:
    return model.predict_proba(_finite(x))[:, 1]


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.isinf(x), np.nan, x)


def fit_calibrator(p_valid: np.ndarray, y_valid: np.ndarray) -> Calibrator:
    """Isotonic on the validation window, or Platt when positives are too few for isotonic."""
    p = np.asarray(p_valid, dtype=np.float64)
    y = np.asarray(y_valid, dtype=np.float64)
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        return Calibrator("identity")
    if positives >= MIN_POSITIVES_ISOTONIC and len(y) - positives >= MIN_POSITIVES_ISOTONIC:
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(p, y)
        return Calibrator("isotonic", x=iso.X_thresholds_, y=iso.y_thresholds_)
    z = np.log(np.clip(p, 1e-7, 1 - 1e-7) / (1 - np.clip(p, 1e-7, 1 - 1e-7)))
    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(z.reshape(-1, 1), y.astype(int))
    return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
