"""Per-issue model fitting: stacked text model, LightGBM, scikit-learn baseline, calibration.

Everything is deterministic for a given `random_state`: LightGBM runs with
`deterministic=True`, a fixed thread count and seed; folds are seeded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.bundle import Calibrator, DenseLinear, TextModel

# Isotonic calibration needs enough positives on the validation window to be stable;
# below that a two-parameter Platt fit generalises better.
MIN_POSITIVES_ISOTONIC = 50
# Folds of the text model's cross-validation (choice of C and out-of-fold scores): 5 on small
# data, where each fold's validation part is a few dozen positives and more folds steady the
# choice; 3 from TEXT_FEW_FOLDS_ROWS training rows on, where each third still holds thousands
# of rows and the two folds saved are 40% of the fit time (`text_folds`).
TEXT_FOLDS = 5
TEXT_FOLDS_LARGE = 3
TEXT_FEW_FOLDS_ROWS = 5_000


def text_folds(n_rows: int) -> int:
    """Cross-validation folds for a text model fitted on `n_rows` training rows."""
    return TEXT_FOLDS if n_rows < TEXT_FEW_FOLDS_ROWS else TEXT_FOLDS_LARGE


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
    # Leaf sizes and counts shrink with the training rows (`for_rows`): 50-row leaves on a
    # few hundred rows allow at most a handful of leaves, i.e. almost no model.
    adapt_to_rows: bool = True
    # Below this many training rows the number of rounds is chosen by k-fold cross-validation
    # on the training rows (folds by item), not by early stopping on the small validation
    # window, which at a few hundred rows holds a few dozen labels.
    cv_below_rows: int = 5_000
    cv_folds: int = 5

    def for_rows(self, n_rows: int) -> BoosterParams:
        """These settings scaled to `n_rows` training rows (unchanged when not adapting).

        A leaf needs at least ~2.5% of the rows (between 5 and `min_data_in_leaf`), and the
        tree at most as many leaves as four such leaves fit in the rows (at least 4, at
        most `num_leaves`): 200 rows get 5-row leaves and up to 10 of them.
        """
        if not self.adapt_to_rows:
            return self
        n = max(int(n_rows), 1)
        min_leaf = int(min(self.min_data_in_leaf, max(5, n // 40)))
        leaves = int(min(self.num_leaves, max(4, n // (4 * min_leaf))))
        return replace(self, min_data_in_leaf=min_leaf, num_leaves=leaves)

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
            "min_data_per_group": min(20, self.min_data_in_leaf),
            "cat_smooth": 10.0,
        }


# Inverse regularisation strengths tried for the text model (chosen out of fold per issue):
# from 4x stronger to 64x weaker regularisation than scikit-learn's default C=1, in factors of
# 4 (short texts with a few decisive words want weak regularisation).
TEXT_CS: tuple[float, ...] = (0.25, 1.0, 4.0, 16.0, 64.0)


def text_idf(hashed: sp.csr_matrix, blocks: Sequence[tuple[int, int]]) -> np.ndarray:
    """Smoothed inverse document frequency of the columns [blocks[0][0], blocks[-1][1]) over
    the rows of `hashed`: log((1 + n) / (1 + df)) + 1, as scikit-learn's TfidfTransformer."""
    first, stop = blocks[0][0], blocks[-1][1]
    ind = hashed.indices.astype(np.int64)
    ind = ind[(ind >= first) & (ind < stop)] - first
    df = np.bincount(ind, minlength=stop - first)  # a row holds a column at most once
    n = hashed.shape[0]
    return np.log((1.0 + n) / (1.0 + df)) + 1.0


def _blocks(hashed: sp.csr_matrix, blocks: Sequence[tuple[int, int]] | None) -> tuple:
    return tuple(blocks) if blocks else ((0, hashed.shape[1]),)


def fit_text_model(
    hashed: sp.csr_matrix,
    y: np.ndarray,
    *,
    C: float = 1.0,
    blocks: Sequence[tuple[int, int]] | None = None,
    random_state: int = 0,
    dense_x: np.ndarray | None = None,
    categorical: Sequence[int] = (),
) -> TextModel:
    """Logistic regression on TF-IDF of hashed n-grams, kept as arrays (models.bundle.TextModel).

    `blocks` are the column ranges of the hashed-text matrix the model reads (word and
    character n-grams of one text group), each l2-normalised on its own after IDF weighting;
    the IDF is fitted on these rows.
    """
    hashed = sp.csr_matrix(hashed)
    y = np.asarray(y, dtype=int)
    blocks = _blocks(hashed, blocks)
    idf = text_idf(hashed, blocks)
    if len(np.unique(y)) < 2:
        # a constant target has no text signal to learn; the intercept carries the base rate
        rate = float(np.clip(y.mean() if len(y) else 0.5, 1e-4, 1 - 1e-4))
        return TextModel(np.zeros(len(idf)), math.log(rate / (1 - rate)), idf=idf, blocks=blocks)
    shell = TextModel(np.zeros(len(idf)), 0.0, idf=idf, blocks=blocks)
    x, cols = _compact(shell.features(hashed))
    dense = None if dense_x is None else DenseLinear.prepare(dense_x, categorical)
    if dense is not None:
        x = sp.hstack([x, dense.matrix(dense_x)], format="csr")
    clf = _logistic(C, random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    w = clf.coef_.ravel()
    coef = np.zeros(len(idf))
    coef[cols] = w[: len(cols)]
    if dense is not None:
        dense = dense.with_coef(w[len(cols) :])
    return TextModel(coef, float(clf.intercept_[0]), idf=idf, blocks=blocks, C=C, dense=dense)


def _logistic(C: float, random_state: int, *, warm_start: bool = False) -> LogisticRegression:
    # SAG: on TF-IDF rows it reaches the logistic-regression optimum several times faster
    # than liblinear or lbfgs (measured at 3k rows: 0.2-0.6 s against 1-6 s); seeded, so
    # deterministic. The tolerance is on the coefficients' change, ample for ranking.
    return LogisticRegression(
        C=C, solver="sag", tol=1e-3, max_iter=200, random_state=random_state, warm_start=warm_start
    )


def _compact(x: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """x restricted to the columns its rows use, and those columns.

    A column no training row holds gets a zero coefficient from an L2-penalised fit anyway;
    leaving the hundreds of thousands of empty hashed columns out makes every solver pass
    proportional to the vocabulary actually seen.
    """
    cols = np.flatnonzero(np.bincount(x.indices, minlength=x.shape[1]))
    return _remap(x, cols), cols


def _remap(x: sp.csr_matrix, cols: np.ndarray) -> sp.csr_matrix:
    # x on the columns `cols` (sorted), entries in other columns dropped (their coef is 0)
    where = np.full(x.shape[1], -1, dtype=np.int64)
    where[cols] = np.arange(len(cols))
    j = where[x.indices]
    keep = j >= 0
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))[keep]
    return sp.csr_matrix((x.data[keep], (rows, j[keep])), shape=(x.shape[0], len(cols)))


def _item_folds(groups: np.ndarray, n_splits: int, random_state: int) -> list[np.ndarray]:
    # test rows of each fold: folds by item (an item's rows share text), seeded
    uniq, inverse = np.unique(groups, return_inverse=True)
    n_splits = max(2, min(n_splits, len(uniq)))
    shuffled = np.random.default_rng(random_state).permutation(len(uniq))[inverse]
    dummy = np.zeros(len(groups))
    return [te for _, te in GroupKFold(n_splits=n_splits).split(dummy, dummy, shuffled)]


def fit_text_model_cv(
    hashed: sp.csr_matrix,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    blocks: Sequence[tuple[int, int]] | None = None,
    Cs: Sequence[float] = TEXT_CS,
    n_splits: int | None = None,
    random_state: int = 0,
    dense_x: np.ndarray | None = None,
    categorical: Sequence[int] = (),
) -> tuple[TextModel, np.ndarray]:
    """The text model with C chosen by cross-validation, and its out-of-fold scores.

    Each fold fits every C (IDF refitted on the fold's training rows), from the strongest
    regularisation to the weakest, each fit starting from the previous C's coefficients (warm
    start: neighbouring C values have close optima, so the weaker-regularised fits, the slow
    ones, converge in a fraction of the passes). `n_splits` defaults to `text_folds` of the
    rows. The C with the best pooled out-of-fold average precision wins, its out-of-fold scores are returned (honest
    inputs for stacking and for choosing between model variants), and the final model is
    refitted on all rows with it. With `dense_x` (the rows' transform features) the model
    is one logistic regression on the text and those features (see models.bundle.DenseLinear).
    """
    hashed = sp.csr_matrix(hashed)
    y = np.asarray(y, dtype=int)
    blocks = _blocks(hashed, blocks)
    n = len(y)
    extra = {"dense_x": dense_x, "categorical": categorical}
    if len(np.unique(y)) < 2:
        model = fit_text_model(hashed, y, blocks=blocks, random_state=random_state)
        return model, np.full(n, model.score_ngrams([], []))
    scores = np.full((len(Cs), n), np.nan)
    order = np.argsort(np.asarray(Cs, dtype=float), kind="stable")
    folds = text_folds(n) if n_splits is None else n_splits
    for te in _item_folds(np.asarray(groups), folds, random_state):
        tr = np.setdiff1d(np.arange(n), te, assume_unique=True)
        if len(np.unique(y[tr])) < 2:
            scores[:, te] = y[tr].mean()
            continue
        idf = text_idf(hashed[tr], blocks)
        shell = TextModel(np.zeros(len(idf)), 0.0, idf=idf, blocks=blocks)
        x_tr, cols = _compact(shell.features(hashed[tr]))
        x_te = _remap(shell.features(hashed[te]), cols)
        if dense_x is not None:
            prep = DenseLinear.prepare(dense_x[tr], categorical)
            x_tr = sp.hstack([x_tr, prep.matrix(dense_x[tr])], format="csr")
            x_te = sp.hstack([x_te, prep.matrix(dense_x[te])], format="csr")
        clf = _logistic(Cs[order[0]], random_state, warm_start=True)
        for k in order.tolist():
            clf.set_params(C=Cs[k])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(x_tr, y[tr])
            scores[k, te] = clf.predict_proba(x_te)[:, 1]
    best = int(np.argmax([average_precision_score(y, s) for s in scores]))
    model = fit_text_model(hashed, y, C=Cs[best], blocks=blocks, random_state=random_state, **extra)
    return model, scores[best]


def out_of_fold_text_scores(
    hashed: sp.csr_matrix,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    n_splits: int | None = None,
    blocks: Sequence[tuple[int, int]] | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """Text-model scores for training rows, each from a model that never saw its item.

    Stacking needs honest inputs: an in-sample text score would look far better to LightGBM
    than the score it gets at predict time. Folds are by item (an item's rows share text).
    """
    return fit_text_model_cv(
        hashed, y, groups, blocks=blocks, n_splits=n_splits, random_state=random_state
    )[1]


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
    groups: np.ndarray | None = None,
) -> tuple[lgb.Booster, int, np.ndarray | None]:
    """LightGBM with early stopping; returns (booster, best rounds, out-of-fold scores).

    Settings are scaled to the training rows (`BoosterParams.for_rows`). Below
    `params.cv_below_rows` training rows (and with `groups`, the item of each row) the best
    number of rounds is the k-fold cross-validated one and the out-of-fold scores of the
    training rows come back (for comparing model variants); otherwise early stopping is on
    the validation window and no out-of-fold scores are returned. The returned booster holds
    only the best iteration's trees, so predict needs no num_iteration argument and pickles
    small.
    """
    params = params.for_rows(len(y_train))
    names = [_safe_name(n) for n in feature_names]
    cats = list(categorical)
    lgb_params = params.lgb_params(random_state)
    y_train = np.asarray(y_train)
    oof = None
    if groups is not None and len(y_train) < params.cv_below_rows:
        folds = _booster_folds(y_train, np.asarray(groups), params.cv_folds, random_state)
        if folds:
            best, oof = _cv_rounds(x_train, y_train, names, cats, lgb_params, params, folds)
            train_set = lgb.Dataset(
                x_train, label=y_train, feature_name=names, categorical_feature=cats
            )
            booster = lgb.train(lgb_params, train_set, num_boost_round=best)
            return booster, best, oof
    train_set = lgb.Dataset(
        x_train,
        label=y_train,
        feature_name=names,
        categorical_feature=cats,
        free_raw_data=True,
    )
    valid_set = lgb.Dataset(x_valid, label=y_valid, reference=train_set)
    booster = lgb.train(
        lgb_params,
        train_set,
        num_boost_round=params.max_rounds,
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return trimmed, int(best), oof


def _booster_folds(
    y: np.ndarray, groups: np.ndarray, n_splits: int, random_state: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    # item folds whose training part holds both classes (else no fold is usable: [])
    n = len(y)
    folds = []
    for te in _item_folds(groups, n_splits, random_state):
        tr = np.setdiff1d(np.arange(n), te, assume_unique=True)
        if len(np.unique(y[tr])) < 2 or len(np.unique(y[te])) < 2:
            return []
        folds.append((tr, te))
    return folds


def _cv_rounds(
    x: np.ndarray,
    y: np.ndarray,
    names: list[str],
    cats: list[int],
    lgb_params: dict[str, Any],
    params: BoosterParams,
    folds: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[int, np.ndarray]:
    """The round count with the best mean fold metric, and the out-of-fold scores at it."""
    full = lgb.Dataset(x, label=y, feature_name=names, categorical_feature=cats)
    result = lgb.cv(
        lgb_params,
        full,
        num_boost_round=params.max_rounds,
        folds=folds,
        stratified=False,
        callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)],
        return_cvbooster=True,
    )
    key = next(k for k in result if k.endswith("-mean") and k.startswith("valid"))
    best = int(np.argmax(result[key])) + 1
    oof = np.empty(len(y))
    for booster, (_, te) in zip(result["cvbooster"].boosters, folds, strict=True):
        oof[te] = booster.predict(x[te], num_iteration=best, num_threads=params.num_threads)
    return best, oof


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
