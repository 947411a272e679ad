"""Strong baselines: what a careful analyst would fit in an afternoon, scored on the same rows.

A model is only worth shipping if it beats these. They are used by the training gate (per
issue, on the holdout) and by `bench/quality.py`:

- `logreg_tabular`: logistic regression on the FeatureTransform's tabular features
  (`training.fit.fit_baseline`: median-imputed, scaled numerics, one-hot categoricals).
- `tfidf_logreg`: TF-IDF of word 1-2-grams and char_wb 3-5-grams of the text columns, plus the
  same scaled tabular features, into a logistic regression whose C is chosen by a small
  grouped cross-validation on average precision. Omitted when the data has no text.
- `lgbm_tabular`: LightGBM on the tabular features only, with leaf sizes that scale with the
  number of rows and early stopping on an internal split (then refitted on all rows).

Text is hashed (2**18 columns per analyzer), so memory is bounded whatever the vocabulary,
and only distinct texts are vectorized (snapshot rows of one item repeat its text).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GroupKFold, StratifiedKFold

from training.fit import baseline_predict, fit_baseline

BASELINES = ("logreg_tabular", "tfidf_logreg", "lgbm_tabular")
HASH_FEATURES = 2**18  # columns per analyzer (word, char): bounded memory on any vocabulary
C_GRID = (0.1, 1.0, 10.0)
CV_FOLDS = 3
MIN_DF = 2  # a hashed n-gram must occur in this many training rows to get a weight
CV_MAX_ROWS = 4_000  # C is chosen on at most this many training rows (then fit on all)
LGBM_MAX_ROUNDS = 1000
LGBM_VALID_SHARE = 0.2


def baseline_scores(
    frame_train: pd.DataFrame,
    x_train: np.ndarray,
    y_train: np.ndarray,
    frame_test: pd.DataFrame,
    x_test: np.ndarray,
    *,
    text_columns: Sequence[str],
    categorical: Sequence[int],
    random_state: int,
    which: Sequence[str] = BASELINES,
) -> dict[str, np.ndarray]:
    """Fit each baseline in `which` on the training rows; their test-row probabilities.

    `x_*` are the fitted FeatureTransform's tabular matrices of the frames' rows (same order);
    `text_columns` name the frames' text columns (strings, or lists of tags). `tfidf_logreg`
    is left out of the result when the training rows have no text. Raises ValueError when
    `y_train` does not hold both classes, or when the inputs do not line up.
    """
    unknown = [w for w in which if w not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; expected some of {list(BASELINES)}")
    y = np.asarray(y_train, dtype=float)
    if len(y) != len(x_train) or len(frame_train) != len(x_train):
        raise ValueError(
            f"baselines: {len(frame_train)} training frame rows, {len(x_train)} feature rows and "
            f"{len(y)} labels do not match"
        )
    if len(frame_test) != len(x_test):
        raise ValueError(
            f"baselines: {len(frame_test)} test frame rows but {len(x_test)} feature rows"
        )
    if not np.isfinite(y).all() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("baselines: training labels must be 0 or 1 (no missing values)")
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError(
            f"baselines need both classes in the training rows, got {positives} positive of "
            f"{len(y)}"
        )
    y_int = y.astype(int)
    groups = _groups(frame_train)
    out: dict[str, np.ndarray] = {}
    tabular = None
    if "logreg_tabular" in which or "tfidf_logreg" in which:
        tabular = fit_baseline(x_train, y_int, categorical=categorical, random_state=random_state)
        if "logreg_tabular" in which:
            out["logreg_tabular"] = baseline_predict(tabular, x_test)
    if "tfidf_logreg" in which:
        scores = _tfidf_logreg(
            frame_train,
            frame_test,
            y_int,
            tabular.named_steps["features"].transform(_finite(x_train)),
            tabular.named_steps["features"].transform(_finite(x_test)),
            text_columns=text_columns,
            groups=groups,
            random_state=random_state,
        )
        if scores is not None:
            out["tfidf_logreg"] = scores
    if "lgbm_tabular" in which:
        out["lgbm_tabular"] = _lgbm_tabular(
            x_train,
            y_int,
            x_test,
            categorical=categorical,
            groups=groups,
            random_state=random_state,
        )
    return {name: out[name] for name in BASELINES if name in out}


# --------------------------------------------------------------------------- text


def _cell_text(value: Any) -> str:
    """One text cell as a string: tag lists joined by spaces, nulls as ''."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | np.ndarray):
        return " ".join(_cell_text(v) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return ""
    if value is pd.NA or value is pd.NaT:
        return ""
    return str(value)


def documents(frame: pd.DataFrame, text_columns: Sequence[str]) -> list[str]:
    """One document per row: the text columns joined (a missing column counts as empty)."""
    columns = [
        [_cell_text(v) for v in frame[c].tolist()] if c in frame.columns else None
        for c in text_columns
    ]
    columns = [c for c in columns if c is not None]
    if not columns:
        return [""] * len(frame)
    return [" \n ".join(parts).strip() for parts in zip(*columns, strict=True)]


class _TextVectorizer:
    """Hashed word 1-2-grams and char_wb 3-5-grams, each IDF-weighted and L2-normalised."""

    def __init__(self) -> None:
        self.word = HashingVectorizer(
            ngram_range=(1, 2),
            n_features=HASH_FEATURES,
            alternate_sign=False,
            norm=None,
            lowercase=True,
        )
        self.char = HashingVectorizer(
            analyzer="char_wb",
            ngram_range=(3, 5),
            n_features=HASH_FEATURES,
            alternate_sign=False,
            norm=None,
            lowercase=True,
        )
        self.idf = (TfidfTransformer(sublinear_tf=True), TfidfTransformer(sublinear_tf=True))

    def _counts(self, docs: list[str]) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
        distinct, inverse = np.unique(np.asarray(docs, dtype=object), return_inverse=True)
        distinct = distinct.tolist()
        return self.word.transform(distinct), self.char.transform(distinct), inverse

    def fit_transform(self, docs: list[str]) -> sp.csr_matrix:
        words, chars, inverse = self._counts(docs)
        # IDF from the rows as they occur (an item's repeated snapshots count each time)
        parts = [
            idf.fit(m[inverse]).transform(m)
            for idf, m in zip(self.idf, (words, chars), strict=True)
        ]
        return sp.hstack(parts, format="csr")[inverse]

    def transform(self, docs: list[str]) -> sp.csr_matrix:
        words, chars, inverse = self._counts(docs)
        parts = [idf.transform(m) for idf, m in zip(self.idf, (words, chars), strict=True)]
        return sp.hstack(parts, format="csr")[inverse]


def _tfidf_logreg(
    frame_train: pd.DataFrame,
    frame_test: pd.DataFrame,
    y: np.ndarray,
    tab_train: np.ndarray,
    tab_test: np.ndarray,
    *,
    text_columns: Sequence[str],
    groups: np.ndarray | None,
    random_state: int,
) -> np.ndarray | None:
    docs_train = documents(frame_train, text_columns)
    if not any(docs_train):
        return None
    vec = _TextVectorizer()
    text_train = vec.fit_transform(docs_train)
    text_test = vec.transform(documents(frame_test, text_columns))
    # Only hashed columns in at least two training rows get a weight (min_df=2: a column of
    # one row only memorises it); the solvers' cost then follows the vocabulary, not 2 x 2**18.
    df = np.bincount(text_train.indices, minlength=text_train.shape[1])
    seen = np.flatnonzero(df >= MIN_DF)
    x_train = sp.hstack([text_train[:, seen], sp.csr_matrix(tab_train)], format="csr")
    x_test = sp.hstack([text_test[:, seen], sp.csr_matrix(tab_test)], format="csr")
    c = _choose_c(x_train, y, groups, random_state=random_state)
    model = _logreg(c, random_state).fit(x_train, y)
    return model.predict_proba(x_test)[:, 1]


def _logreg(c: float, random_state: int) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=2000, solver="liblinear", random_state=random_state)


def _choose_c(
    x: sp.csr_matrix, y: np.ndarray, groups: np.ndarray | None, *, random_state: int
) -> float:
    """C with the best mean out-of-fold average precision (folds by item when items repeat)."""
    rng = np.random.default_rng(random_state)
    rows = np.arange(len(y))
    if len(rows) > CV_MAX_ROWS:
        rows = np.sort(rng.choice(rows, CV_MAX_ROWS, replace=False))
    xs, ys = x[rows], y[rows]
    folds = list(_folds(ys, None if groups is None else groups[rows], CV_FOLDS, random_state))
    if not folds:
        return 1.0
    best_c, best = C_GRID[len(C_GRID) // 2], -np.inf
    for c in C_GRID:
        scores = []
        for tr, va in folds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = _logreg(c, random_state).fit(xs[tr], ys[tr])
            scores.append(average_precision_score(ys[va], model.predict_proba(xs[va])[:, 1]))
        if np.mean(scores) > best + 1e-9:
            best_c, best = c, float(np.mean(scores))
    return best_c


def _folds(y: np.ndarray, groups: np.ndarray | None, n_splits: int, random_state: int):
    """Folds whose training part holds both classes; grouped when rows share an item."""
    positives = int(y.sum())
    n_splits = min(n_splits, positives, len(y) - positives)
    if n_splits < 2:
        return
    if groups is not None and len(np.unique(groups)) < len(groups):
        uniq, inverse = np.unique(groups, return_inverse=True)
        n_splits = min(n_splits, len(uniq))
        shuffled = np.random.default_rng(random_state).permutation(len(uniq))[inverse]
        splits = GroupKFold(n_splits=n_splits).split(y, y, shuffled)
    else:
        splits = StratifiedKFold(n_splits, shuffle=True, random_state=random_state).split(y, y)
    for tr, va in splits:
        if 0 < y[tr].sum() < len(tr) and 0 < y[va].sum() < len(va):
            yield tr, va


def _groups(frame: pd.DataFrame) -> np.ndarray | None:
    if "item_id" not in frame.columns:
        return None
    return frame["item_id"].astype("object").to_numpy()


# --------------------------------------------------------------------------- LightGBM


def lgbm_params(n_rows: int, random_state: int) -> dict[str, Any]:
    """LightGBM settings that scale with the data: small data gets small leaves and few of
    them (a fixed 50-row leaf leaves ~200 rows a stump), large data larger, steadier leaves."""
    min_leaf = int(np.clip(round(math.sqrt(n_rows) / 2), 5, 100))
    leaves = int(np.clip(n_rows // (4 * min_leaf), 4, 31))
    return {
        "objective": "binary",
        "metric": "average_precision",
        "learning_rate": 0.05,
        "num_leaves": leaves,
        "min_data_in_leaf": min_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "min_data_per_group": max(5, min_leaf // 2),
        "cat_smooth": 10.0,
        "seed": int(random_state),
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbosity": -1,
    }


def _lgbm_tabular(
    x_train: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    *,
    categorical: Sequence[int],
    groups: np.ndarray | None,
    random_state: int,
) -> np.ndarray:
    x_train, x_test = _finite(x_train), _finite(x_test)
    cats = sorted(set(categorical))
    params = lgbm_params(len(y), random_state)
    rounds = _early_stopped_rounds(x_train, y, cats, groups, params)
    full = lgb.Dataset(x_train, label=y, categorical_feature=cats, free_raw_data=True)
    # refit on every training row, a little longer since it sees 1/(1-valid share) more rows
    booster = lgb.train(params, full, num_boost_round=max(1, round(rounds * 1.1)))
    return booster.predict(x_test, num_threads=1)


def _early_stopped_rounds(
    x: np.ndarray,
    y: np.ndarray,
    cats: list[int],
    groups: np.ndarray | None,
    params: dict[str, Any],
) -> int:
    """Rounds chosen by early stopping on a held-out share of the training rows (by item)."""
    seed = int(params["seed"])
    split = next(_folds(y, groups, round(1 / LGBM_VALID_SHARE), seed), None)
    if split is None:
        return 100
    tr, va = split
    train_set = lgb.Dataset(x[tr], label=y[tr], categorical_feature=cats, free_raw_data=True)
    valid_set = lgb.Dataset(x[va], label=y[va], reference=train_set)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=LGBM_MAX_ROUNDS,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    return int(booster.best_iteration or booster.current_iteration())


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.isinf(x), np.nan, x)
