"""`ScoringBundle`: the whole scorer as one picklable object (one MLflow model version).

It holds the feature transform and, per issue type, a LightGBM booster, an optional stacked
linear text model, a probability calibrator and the review threshold. Two paths share it:
`score_frame` for batch (one transform call for all rows) and `score_one`/`score_records`
for serving, which build no DataFrame and avoid scikit-learn overhead (the text model is a
sparse dot product, isotonic calibration an `np.interp`).
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.kernels import dense_linear_row, dense_linear_rows, tfidf_probs
from features.transform import FeatureTransform

TEXT_SCORE_FEATURE = "text_score"


@dataclass(frozen=True)
class ReasonCode:
    """One feature's push on an item's score: its value and its contribution in log-odds."""

    feature: str
    value: float | None
    contribution: float

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


# Isotonic regression is a step function: it would tie every score inside a step and throw
# away the model's ranking there (PR-AUC and precision@k suffer). Mixing in this much of the
# raw score keeps the order strict while moving no probability by more than 1e-6.
ISOTONIC_TIE_BREAK = 1e-6

# TreeSHAP is the costliest step of a large batch (~20 µs a row for a 14-tree model); from
# this many rows it runs on every core the process may use (LightGBM's OpenMP threads, GIL
# released). Below it, thread start-up costs more than it saves.
PARALLEL_CONTRIB_ROWS = 256
_CORES = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def contrib_threads(n_rows: int) -> int:
    """LightGBM threads for a `pred_contrib` call over n_rows."""
    return _CORES if n_rows >= PARALLEL_CONTRIB_ROWS else 1


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    # exp overflows to inf for z below about -709: the result (0.0) is right, the warning
    # it printed on a user's terminal ("overflow encountered in exp") was noise
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def _sigmoid_one(z: float) -> float:
    """`_sigmoid` of one float, for the single-item path: math.exp(-z) raised OverflowError
    for z below about -709 (a steep Platt slope on a score near 0), where the batch path
    answers 0.0."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class DenseLinear:
    """The transform-feature part of a linear model: numeric features median-filled,
    standardised and clipped to +-CLIP, category codes one-hot; z = that . coef.

    Prepared on training rows (`prepare`, coefficients zero) and completed with the
    coefficients of a fit (`with_coef`); plain arrays, so one row costs a few numpy ops.
    """

    CLIP = 5.0

    def __init__(
        self,
        num_cols: np.ndarray,
        fill: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        cat_cols: np.ndarray,
        cat_sizes: np.ndarray,
        coef: np.ndarray | None = None,
    ) -> None:
        self.num_cols = np.asarray(num_cols, dtype=np.int64)
        self.fill, self.mean, self.scale = (
            np.asarray(a, dtype=np.float64) for a in (fill, mean, scale)
        )
        self.cat_cols = np.asarray(cat_cols, dtype=np.int64)
        self.cat_sizes = np.asarray(cat_sizes, dtype=np.int64)
        self.cat_offsets = len(self.num_cols) + np.concatenate(
            ([0], np.cumsum(self.cat_sizes)[:-1])
        ).astype(np.int64)
        self.width = int(len(self.num_cols) + self.cat_sizes.sum())
        self.coef = np.zeros(self.width) if coef is None else np.asarray(coef, dtype=np.float64)

    @classmethod
    def prepare(cls, x: np.ndarray, categorical: Sequence[int]) -> DenseLinear:
        x = np.asarray(x, dtype=np.float64)
        cats = np.array(sorted(set(categorical)), dtype=np.int64)
        nums = np.array(
            [j for j in range(x.shape[1]) if j not in set(cats.tolist())], dtype=np.int64
        )
        v = x[:, nums]
        v = np.where(np.isfinite(v), v, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            fill = np.nan_to_num(np.nanmedian(v, axis=0), nan=0.0)
            filled = np.where(np.isnan(v), fill, v)
        mean = filled.mean(axis=0) if len(filled) else np.zeros(len(nums))
        scale = filled.std(axis=0) if len(filled) else np.ones(len(nums))
        scale[scale == 0] = 1.0
        sizes = []
        for j in cats.tolist():
            c = x[:, j]
            c = c[np.isfinite(c)]
            sizes.append(int(c.max()) + 2 if len(c) else 1)
        return cls(nums, fill, mean, scale, cats, np.array(sizes, dtype=np.int64))

    def with_coef(self, coef: np.ndarray) -> DenseLinear:
        return DenseLinear(
            self.num_cols, self.fill, self.mean, self.scale, self.cat_cols, self.cat_sizes, coef
        )

    def _num(self, x: np.ndarray) -> np.ndarray:
        v = x[:, self.num_cols]
        v = np.where(np.isfinite(v), v, self.fill)
        return np.clip((v - self.mean) / self.scale, -self.CLIP, self.CLIP)

    def _cat_index(self, x: np.ndarray) -> np.ndarray:
        # (n, n_cats) one-hot column per row and category column, -1 when unknown
        c = x[:, self.cat_cols]
        ok = np.isfinite(c) & (c >= 0) & (c < self.cat_sizes)
        return np.where(ok, self.cat_offsets + np.where(ok, c, 0).astype(np.int64), -1)

    def matrix(self, x: np.ndarray) -> sp.csr_matrix:
        """The model's dense-part inputs of rows x, as a sparse (n, width) matrix."""
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        num = sp.csr_matrix(self._num(x))
        idx = self._cat_index(x)
        r, k = np.nonzero(idx >= 0)
        onehot = sp.csr_matrix((np.ones(len(r)), (r, idx[r, k])), shape=(n, self.width))
        num = sp.hstack([num, sp.csr_matrix((n, self.width - num.shape[1]))], format="csr")
        return (num + onehot).tocsr()

    def _kernel_args(self) -> tuple:
        """The arrays the compiled row and batch kernels read, in their argument order."""
        return (
            self.num_cols,
            self.fill,
            self.mean,
            self.scale,
            self.CLIP,
            self.cat_cols,
            self.cat_sizes,
            self.cat_offsets,
            self.coef,
        )

    def z_one(self, row: np.ndarray) -> float:
        """`z` of one transform row, in one compiled pass (the single-item path)."""
        return dense_linear_row(np.asarray(row, dtype=np.float64).ravel(), *self._kernel_args())

    def z(self, x: np.ndarray) -> np.ndarray:
        """The dense part's z of rows x (the same compiled code as `z_one`, row by row)."""
        x = np.ascontiguousarray(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        return dense_linear_rows(x, *self._kernel_args())


class TextModel:
    """A linear model on hashed n-grams kept as plain arrays: score = sigmoid(x . coef + b).

    Trained by scikit-learn (see training.fit); only its arrays live here, so the online
    path is a dot product over one row's non-zeros, not a pipeline call.

    With `idf` (TF-IDF, fitted on the training rows) the model reads columns
    [blocks[0][0], blocks[-1][1]) of the hashed-text matrix: each value (an l2-normalised
    term frequency) is multiplied by its column's inverse document frequency and every block
    (word n-grams, character n-grams) of the row is l2-normalised again, which is TF-IDF
    with l2 norm per block, as scikit-learn's TfidfTransformer on raw counts. `coef` and
    `idf` cover that column range. Without `idf` (bundles of earlier versions) x is the
    hashed row itself.
    """

    # defaults for text models pickled before IDF existed
    idf_: np.ndarray | None = None
    blocks_: tuple[tuple[int, int], ...] = ()
    C_: float | None = None
    # the "linear" variant: the transform features join the text in one logistic regression
    dense_: DenseLinear | None = None

    def __init__(
        self,
        coef: np.ndarray,
        intercept: float,
        *,
        idf: np.ndarray | None = None,
        blocks: Sequence[tuple[int, int]] = (),
        C: float | None = None,
        dense: DenseLinear | None = None,
    ) -> None:
        self.dense_ = dense
        self.coef_ = np.asarray(coef, dtype=np.float64).ravel()
        self.intercept_ = float(intercept)
        self.idf_ = None if idf is None else np.asarray(idf, dtype=np.float64).ravel()
        self.blocks_ = tuple((int(a), int(b)) for a, b in blocks)
        self.C_ = C
        if self.idf_ is not None:
            if not self.blocks_:
                self.blocks_ = ((0, len(self.idf_)),)
            width = self.blocks_[-1][1] - self.blocks_[0][0]
            if len(self.idf_) != width or len(self.coef_) != width:
                raise ValueError(
                    f"text model: idf ({len(self.idf_)}) and coef ({len(self.coef_)}) must "
                    f"cover the blocks' {width} columns"
                )
        self._prepare()

    def _prepare(self) -> None:
        # derived: block starts relative to the first column, for np.searchsorted
        if self.idf_ is not None:
            first = self.blocks_[0][0]
            self._starts = np.array([a - first for a, _ in self.blocks_], dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        # TF-IDF models pickle compactly: coefficients where non-zero, IDF where it differs
        # from the value of a column never seen in training (the largest)
        state = {k: v for k, v in self.__dict__.items() if k != "_starts"}
        if self.idf_ is not None:
            nz = np.flatnonzero(self.coef_)
            top = float(self.idf_.max()) if len(self.idf_) else 0.0
            seen = np.flatnonzero(self.idf_ != top)
            state["coef_"] = ("sparse", len(self.coef_), nz, self.coef_[nz])
            state["idf_"] = ("sparse", len(self.idf_), seen, self.idf_[seen], top)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        coef, idf = state.get("coef_"), state.get("idf_")
        if isinstance(coef, tuple):
            _, n, nz, vals = coef
            state["coef_"] = np.zeros(n)
            state["coef_"][nz] = vals
        if isinstance(idf, tuple):
            _, n, seen, vals, top = idf
            state["idf_"] = np.full(n, top)
            state["idf_"][seen] = vals
        self.__dict__.update(state)
        self._prepare()

    def features(self, hashed: sp.spmatrix) -> sp.csr_matrix:
        """The model's input matrix x for rows of the hashed-text matrix (TF-IDF rows)."""
        hashed = sp.csr_matrix(hashed)
        if self.idf_ is None:
            return hashed
        n = hashed.shape[0]
        rows, j, v, key, norm = self._weights(hashed.indptr, hashed.indices, hashed.data, n)
        return sp.csr_matrix((v / norm[key], (rows, j)), shape=(n, len(self.idf_)))

    def _weights(
        self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # in-range non-zeros: their row, column (relative), idf-weighted value, (row, block)
        # key and the l2 norm of every (row, block)
        assert self.idf_ is not None
        first = self.blocks_[0][0]
        ind = np.asarray(indices, dtype=np.int64) - first
        keep = (ind >= 0) & (ind < len(self.idf_))
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))[keep]
        j = ind[keep]
        v = np.asarray(data, dtype=np.float64)[keep] * self.idf_[j]
        nb = len(self._starts)
        key = rows * nb + (np.searchsorted(self._starts, j, side="right") - 1)
        norm = np.sqrt(np.bincount(key, v * v, minlength=n * nb))
        norm[norm == 0] = 1.0
        return rows, j, v, key, norm

    def score(self, hashed: sp.spmatrix, x: np.ndarray | None = None) -> np.ndarray:
        """Probabilities for rows of a hashed-text matrix (n, width) (and, with a dense
        part, the same rows' transform features x)."""
        if self.idf_ is None:
            return _sigmoid(hashed @ self.coef_ + self.intercept_)
        hashed = sp.csr_matrix(hashed)
        hashed.sort_indices()
        n = hashed.shape[0]
        extra = np.zeros(n)
        if self.dense_ is not None:
            if x is None:
                raise ValueError("this text model also reads the transform features")
            extra = self.dense_.z(x)
        return self._probs(hashed.indptr, hashed.indices, hashed.data, extra)

    def _probs(
        self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, extra: np.ndarray
    ) -> np.ndarray:
        # the compiled per-row pass shared by the batch and single-item paths
        assert self.idf_ is not None
        return tfidf_probs(
            np.asarray(indptr, dtype=np.int64),
            np.asarray(indices, dtype=np.int64),
            np.asarray(data, dtype=np.float64),
            self.blocks_[0][0],
            self.idf_,
            self.coef_,
            self._starts,
            self.intercept_,
            np.asarray(extra, dtype=np.float64),
        )

    def score_one(self, hashed: sp.csr_matrix) -> float:
        """Probability for one hashed row, as a dot over its non-zeros only."""
        return self.score_ngrams(hashed.indices, hashed.data)

    def score_ngrams(
        self,
        idx: Sequence[int] | np.ndarray,
        val: Sequence[float] | np.ndarray,
        x: np.ndarray | None = None,
    ) -> float:
        """Probability from hashed n-gram (indices, values), no sparse matrix needed (and,
        with a dense part, the record's transform row x)."""
        if self.idf_ is not None:
            extra = 0.0
            if self.dense_ is not None:
                if x is None:
                    raise ValueError("this text model also reads the transform features")
                extra = self.dense_.z_one(x)
            # one compiled pass over the row (sorted indices, as the hashers give them)
            n = len(idx)
            return float(self._probs(np.array([0, n]), idx, val, np.array([extra]))[0])
        # a text model of an earlier version: a plain dot product
        if len(idx) == 0:
            z = self.intercept_
        else:
            z = (
                float(self.coef_[np.asarray(idx)] @ np.asarray(val, dtype=np.float64))
                + self.intercept_
            )
        return _sigmoid_one(z)


class Calibrator:
    """Maps raw model probabilities to calibrated ones: isotonic, Platt, or identity.

    Learned state is plain arrays so `transform` is an `np.interp` (isotonic) or a sigmoid
    (Platt): exact and fast on the single-item path.
    """

    def __init__(
        self,
        kind: Literal["isotonic", "platt", "identity"],
        *,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        a: float = 1.0,
        b: float = 0.0,
    ) -> None:
        if kind not in ("isotonic", "platt", "identity"):
            raise ValueError(f"calibrator kind {kind!r} is not isotonic, platt or identity")
        self.kind = kind
        self.x_ = None if x is None else np.asarray(x, dtype=np.float64)
        self.y_ = None if y is None else np.asarray(y, dtype=np.float64)
        self.a_ = float(a)
        self.b_ = float(b)

    def transform(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.kind == "isotonic":
            assert self.x_ is not None and self.y_ is not None
            e = ISOTONIC_TIE_BREAK
            return (1.0 - e) * np.interp(p, self.x_, self.y_) + e * p
        if self.kind == "platt":
            return _sigmoid(self.a_ * logit(p) + self.b_)
        return p

    def transform_one(self, p: float) -> float:
        if self.kind == "isotonic":
            assert self.x_ is not None and self.y_ is not None
            e = ISOTONIC_TIE_BREAK
            return (1.0 - e) * float(np.interp(p, self.x_, self.y_)) + e * p
        if self.kind == "platt":
            q = min(max(p, 1e-7), 1 - 1e-7)
            return _sigmoid_one(self.a_ * math.log(q / (1 - q)) + self.b_)
        return float(p)


def blend_probability(
    part_probs: Sequence[np.ndarray], weights: Sequence[float], offset: float
) -> np.ndarray:
    """A blend's probability, sigmoid(offset + sum_k weights[k] * logit(part_probs[k])), from
    its parts' probabilities (one array per part, made contiguous so that the batch and the
    single-row paths, and training's candidate scores, run the same element-wise numpy code
    and give the same floats)."""
    z = np.full(len(part_probs[0]), float(offset))
    for w, p in zip(weights, part_probs, strict=True):
        z += float(w) * logit(np.ascontiguousarray(p, dtype=np.float64))
    return _sigmoid(z)


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities, clipped to [1e-7, 1 - 1e-7] first."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


class _FastRowPredictor:
    """LightGBM's single-row C API (`...SingleRowFast`): one call, no per-call setup.

    `Booster.predict` re-creates its predictor and validates inputs on every call (tens of
    microseconds); serving scores one item at a time, so the setup is done once here. The
    config owns scratch buffers, hence the lock when threads share a bundle.
    """

    def __init__(self, booster: lgb.Booster, n_features: int, *, contrib: bool = False) -> None:
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._lib = _LIB
        self._safe_call = _safe_call
        self._booster = booster  # the config points into the booster: keep it alive
        self._config = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                # C_API_PREDICT_CONTRIB (TreeSHAP, n_features + 1 values with the bias last)
                # or C_API_PREDICT_NORMAL (the probability, for binary)
                ctypes.c_int(3 if contrib else 0),
                ctypes.c_int(0),
                ctypes.c_int(-1),
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(n_features),
                _c_str("num_threads=1"),
                ctypes.byref(self._config),
            )
        )
        self._out = np.zeros(n_features + 1 if contrib else 1, dtype=np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64(0)
        self._lock = threading.Lock()

    def _run(self, row: np.ndarray) -> None:
        # caller holds the lock
        row = np.ascontiguousarray(row, dtype=np.float64)
        self._safe_call(
            self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                self._config,
                row.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(self._out_len),
                self._out_ptr,
            )
        )

    def predict(self, row: np.ndarray) -> float:
        with self._lock:
            self._run(row)
            return float(self._out[0])

    def contributions(self, row: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions of one row (a contrib predictor): n_features, then the bias."""
        with self._lock:
            self._run(row)
            return self._out.copy()

    def __del__(self) -> None:
        config = getattr(self, "_config", None)
        if config is not None and config.value:
            self._lib.LGBM_FastConfigFree(config)


# The model variants an issue can ship (chosen per issue in training, see
# training.pipeline._fit_issue): LightGBM on the transform features + text scores (+ stacked
# issues), the calibrated text model alone, LightGBM without text scores, one logistic
# regression on TF-IDF of every text group and the transform features ("linear"), or a
# blend of several of these (their standardised log-odds averaged, see IssueModel.parts).
VARIANTS = ("stacked", "text", "tabular", "linear", "blend")


@dataclass
class IssueModel:
    """One issue type's scorer: booster on transform features (+ text scores), calibrator,
    threshold; or, for the "text" variant, the text model alone (no booster)."""

    name: str
    anchor: str
    booster: lgb.Booster | None
    calibrator: Calibrator
    threshold: float
    feature_names: list[str]
    text_model: TextModel | None = None
    best_iteration: int = 0
    # issues whose (uncalibrated) booster probability on the same row is an input feature,
    # e.g. wrongful_enforcement reads how low-quality or harmful the actioned item looks
    stacked: tuple[str, ...] = ()
    # "stacked", "text" or "tabular" (see VARIANTS); bundles pickled before it are "stacked"
    variant: str = "stacked"
    # text models of the transform's extra hashed groups (e.g. comment_text), by group name;
    # each adds the feature f"{TEXT_SCORE_FEATURE}__{group}" after text_score
    group_models: dict[str, TextModel] = field(default_factory=dict)
    # The "blend" variant: its parts (uncalibrated models of the other variants) and
    # z = blend_offset + sum_k blend_weights[k] * logit(part_k's probability); the raw
    # probability is sigmoid(z). A blend's model row is its parts' model rows side by side;
    # its feature names are the union of theirs (first appearance order), and a feature's
    # contribution is the weighted sum of its parts' contributions (log-odds are additive).
    parts: tuple[IssueModel, ...] = ()
    blend_weights: tuple[float, ...] = ()
    blend_offset: float = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Boosters pickle as their model string; the fast predictor is rebuilt on demand.
        state = dict(self.__dict__)
        state.pop("_fast", None)
        state.pop("_fast_contrib", None)
        state.pop("_layout", None)
        if self.booster is not None:
            state["booster"] = self.booster.model_to_string(num_iteration=-1)
        return state

    def _blend_layout(self) -> list[tuple[slice, np.ndarray]]:
        # per part: its columns of the blend's model row, and where each of its features
        # sits among the blend's feature names
        layout = self.__dict__.get("_layout")
        if layout is None:
            position = {n: j for j, n in enumerate(self.feature_names)}
            layout, start = [], 0
            for part in self.parts:
                width = len(part.feature_names)
                where = np.array([position[n] for n in part.feature_names], dtype=np.int64)
                layout.append((slice(start, start + width), where))
                start += width
            self.__dict__["_layout"] = layout
        return layout

    def _parts_layout(self) -> list[tuple[tuple[slice, np.ndarray], IssueModel]]:
        return list(zip(self._blend_layout(), self.parts, strict=True))

    def _blend(self, part_probs: Sequence[np.ndarray]) -> np.ndarray:
        return blend_probability(part_probs, self.blend_weights, self.blend_offset)

    def feature_values(self, rows: np.ndarray) -> np.ndarray:
        """(n, n_features) values of this model's features in its model rows (for reason
        codes); a blend takes each feature from the first part that reads it."""
        rows = np.asarray(rows, dtype=np.float64)
        if not self.parts:
            return rows[:, : len(self.feature_names)]
        out = np.full((len(rows), len(self.feature_names)), np.nan)
        filled = np.zeros(len(self.feature_names), dtype=bool)
        for cols, where in self._blend_layout():
            new = ~filled[where]
            out[:, where[new]] = rows[:, cols][:, new]
            filled[where] = True
        return out

    def predict_rows(self, rows: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities for `ScoringBundle.model_rows` rows."""
        if self.parts:
            rows = np.asarray(rows, dtype=np.float64)
            return self._blend(
                [part.predict_rows(rows[:, cols]) for (cols, _), part in self._parts_layout()]
            )
        if self.booster is None:  # the text variant: its one column is the text score
            return np.asarray(rows, dtype=np.float64)[:, 0].copy()
        return self.booster.predict(rows, num_threads=1)

    def contributions_rows(self, rows: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Log-odds contributions (n, n_features + 1, the bias last) of model rows."""
        if self.parts:
            rows = np.asarray(rows, dtype=np.float64)
            out = np.zeros((len(rows), len(self.feature_names) + 1))
            out[:, -1] = self.blend_offset
            for (cols, where), part, w in zip(
                self._blend_layout(), self.parts, self.blend_weights, strict=True
            ):
                c = part.contributions_rows(rows[:, cols], num_threads)
                np.add.at(out, (slice(None), where), w * c[:, :-1])
                out[:, -1] += w * c[:, -1]
            return out
        if self.booster is None:
            return _text_contributions(np.asarray(rows, dtype=np.float64)[:, 0], self.text_model)
        return np.asarray(
            self.booster.predict(rows, pred_contrib=True, num_threads=num_threads),
            dtype=np.float64,
        )

    def predict_one(self, row: np.ndarray) -> float:
        """Uncalibrated probability for one feature row (the serving hot path)."""
        if self.parts:
            # predict_rows' arithmetic on one-element arrays (bit for bit the same numbers),
            # each part on its fast single-row path
            row = np.asarray(row, dtype=np.float64)
            probs = [
                np.array([part.predict_one(row[cols])]) for (cols, _), part in self._parts_layout()
            ]
            return float(self._blend(probs)[0])
        if self.booster is None:
            return float(row[0])
        fast = self.__dict__.get("_fast")
        if fast is None:
            fast = _FastRowPredictor(self.booster, len(self.feature_names))
            self.__dict__["_fast"] = fast
        return fast.predict(row)

    def contributions_one(self, row: np.ndarray) -> np.ndarray:
        """`booster.predict(row, pred_contrib=True)[0]` without its per-call setup."""
        if self.parts:
            row = np.asarray(row, dtype=np.float64)
            out = np.zeros(len(self.feature_names) + 1)
            out[-1] = self.blend_offset
            for (cols, where), part, w in zip(
                self._blend_layout(), self.parts, self.blend_weights, strict=True
            ):
                c = part.contributions_one(row[cols])
                np.add.at(out, where, w * c[:-1])
                out[-1] += w * c[-1]
            return out
        if self.booster is None:
            return _text_contributions(np.asarray([row[0]], dtype=np.float64), self.text_model)[0]
        fast = self.__dict__.get("_fast_contrib")
        if fast is None:
            fast = _FastRowPredictor(self.booster, len(self.feature_names), contrib=True)
            self.__dict__["_fast_contrib"] = fast
        return fast.contributions(row)

    def __setstate__(self, state: dict[str, Any]) -> None:
        raw = state.get("booster")
        booster = lgb.Booster(model_str=raw) if isinstance(raw, str) else raw
        # issue models pickled before variants and comment text models
        state.setdefault("variant", "stacked")
        state.setdefault("group_models", {})
        # ... and before blends
        state.setdefault("parts", ())
        state.setdefault("blend_weights", ())
        state.setdefault("blend_offset", 0.0)
        self.__dict__.update(state)
        self.booster = booster


def _text_contributions(p: np.ndarray, text_model: TextModel | None) -> np.ndarray:
    # the text variant's reason code: text_score pushed the log-odds from the text model's
    # intercept (an empty text) to logit(p); the intercept is the bias
    bias = text_model.intercept_ if text_model is not None else 0.0
    z = logit(p)
    return np.column_stack([z - bias, np.full(len(z), bias)])


@dataclass(frozen=True)
class Design:
    """Model inputs of n records: transform rows (n, d), hashed text (n, hash_dim) or None,
    and each record's anchor."""

    x: np.ndarray
    text: sp.csr_matrix | None
    anchors: np.ndarray

    def take(self, rows: Sequence[int] | np.ndarray) -> Design:
        """The design of a subset of the records."""
        idx = np.asarray(rows, dtype=np.int64)
        return Design(self.x[idx], None if self.text is None else self.text[idx], self.anchors[idx])


@dataclass
class ScoringBundle:
    """Feature transform + per-issue models + metadata; the unit MLflow logs and serving loads."""

    transform: FeatureTransform
    issues: dict[str, IssueModel]
    metadata: dict[str, Any] = field(default_factory=dict)
    example_record: dict[str, Any] = field(default_factory=dict)
    # Issues the training gate found no trustworthy signal for: issue -> why. Such an issue is
    # still named (callers learn it exists and why it says nothing) but never scored or
    # flagged. Its model may be kept in `issues` when another issue stacks on its scores.
    disabled: dict[str, str] = field(default_factory=dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # bundles pickled before `disabled` existed load with every issue enabled
        state.setdefault("disabled", {})
        self.__dict__.update(state)

    # --- description ---------------------------------------------------------------------

    @property
    def issue_names(self) -> list[str]:
        """Every issue the bundle knows, enabled or disabled, in training order."""
        return list(self.issues) + [n for n in self.disabled if n not in self.issues]

    @property
    def enabled_issues(self) -> list[str]:
        """The issues that are scored and may be flagged."""
        return [n for n in self.issues if n not in self.disabled]

    @property
    def thresholds(self) -> dict[str, float | None]:
        """Review threshold per issue; None for a disabled issue (it is never flagged)."""
        return {
            name: None if name in self.disabled else self.issues[name].threshold
            for name in self.issue_names
        }

    @property
    def anchors(self) -> dict[str, str]:
        return {name: m.anchor for name, m in self.issues.items()}

    @property
    def uses_text(self) -> bool:
        return any(_uses_text(m) for m in self.issues.values())

    def _scored(self) -> list[tuple[int, IssueModel]]:
        # (column in issue_names order, model) of the enabled issues
        return [
            (j, self.issues[name])
            for j, name in enumerate(self.issue_names)
            if name not in self.disabled and name in self.issues
        ]

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The snapshot fields the bundle reads: `item_id` and its transform's input columns.
        A record may hold null for one of them (unknown), but not leave it out."""
        return ("item_id", *(c for c in self.transform.input_columns if c != "item_id"))

    def input_example(self) -> dict[str, Any]:
        """A realistic snapshot record from the training data (for signatures and docs)."""
        return dict(self.example_record)

    # --- batch path ----------------------------------------------------------------------

    def score_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Calibrated probability per issue for each row; NaN where the issue's anchor differs."""
        out = pd.DataFrame(index=frame.index)
        if len(frame) == 0:
            for name in self.issue_names:
                out[name] = pd.Series(dtype=float)
            return out
        scored = self._scored()
        x = self.transform.transform(frame) if scored else None
        anchors = _anchor_array(frame)
        text = hashed_text(self.transform, frame) if scored and self.uses_text else None
        columns: dict[str, np.ndarray] = {}
        for _, model in scored:
            probs = np.full(len(frame), np.nan)
            rows = np.flatnonzero(anchors == model.anchor)
            if len(rows):
                probs[rows] = self._predict_rows(
                    model, x[rows], None if text is None else text[rows]
                )
            columns[model.name] = probs
        for name in self.issue_names:  # a disabled issue: NaN on every row
            out[name] = columns.get(name, np.full(len(frame), np.nan))
        return out

    def _predict_rows(
        self, model: IssueModel, x: np.ndarray, text: sp.csr_matrix | None
    ) -> np.ndarray:
        raw = model.predict_rows(self.model_rows(model, x, text))
        return model.calibrator.transform(raw)

    def model_rows(
        self, model: IssueModel, x: np.ndarray, text: sp.csr_matrix | None
    ) -> np.ndarray:
        """The booster input of `model` for transform rows `x`: + text scores, + stacked
        scores; for the "text" variant, its text score alone (one column); for a blend, its
        parts' rows side by side."""
        if model.parts:
            return np.hstack([self.model_rows(part, x, text) for part in model.parts])
        if (model.text_model is not None or model.group_models) and text is None:
            raise ValueError(f"issue {model.name!r} needs hashed text rows")
        if model.booster is None:
            assert model.text_model is not None and text is not None
            return model.text_model.score(text, x).reshape(-1, 1)
        cols = [x]
        if model.text_model is not None:
            cols.append(model.text_model.score(text).reshape(-1, 1))
        for group in model.group_models.values():
            cols.append(group.score(text).reshape(-1, 1))
        for name in model.stacked:
            base = self.issues[name]
            base_rows = self.model_rows(base, x, text)
            cols.append(base.predict_rows(base_rows).reshape(-1, 1))
        return np.hstack(cols) if len(cols) > 1 else x

    def _model_row_one(
        self, model: IssueModel, x: np.ndarray, record: Mapping[str, Any], cache: dict[str, Any]
    ) -> np.ndarray:
        # single-item twin of model_rows: no sparse matrix, fast single-row boosters
        if model.parts:
            return np.concatenate(
                [self._model_row_one(part, x, record, cache) for part in model.parts]
            )
        extra: list[float] = []
        if (model.text_model is not None or model.group_models) and "ngrams" not in cache:
            cache["ngrams"] = self._ngrams_one(record)
        if model.booster is None:
            assert model.text_model is not None
            return np.array([model.text_model.score_ngrams(*cache["ngrams"], x)])
        if model.text_model is not None:
            extra.append(model.text_model.score_ngrams(*cache["ngrams"]))
        for group in model.group_models.values():
            extra.append(group.score_ngrams(*cache["ngrams"]))
        for name in model.stacked:
            key = f"raw:{name}"
            if key not in cache:
                base = self.issues[name]
                cache[key] = base.predict_one(self._model_row_one(base, x, record, cache))
            extra.append(cache[key])
        return np.append(x, extra) if extra else x

    # --- online path (no DataFrame) --------------------------------------------------------

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Probabilities (n, n_issues) in `issue_names` order; NaN where the anchor differs."""
        return self.score_design(self.design_records(records))

    def design_records(self, records: Sequence[Mapping[str, Any]]) -> Design:
        """The model inputs of records, computed once: transform rows, hashed text, anchors.

        Serving scores a batch from it and then explains the flagged rows from the same
        arrays, instead of transforming and hashing them twice.
        """
        return Design(
            x=self.transform.transform_records(records),
            text=self.hashed_records(records) if self.uses_text else None,
            anchors=np.array([_record_anchor(r) for r in records], dtype=object),
        )

    def score_design(self, design: Design) -> np.ndarray:
        """`score_records` from a precomputed `design_records`."""
        n = len(design.anchors)
        out = np.full((n, len(self.issue_names)), np.nan)
        if n == 0:
            return out
        x, text = design.x, design.text
        for j, model in self._scored():
            rows = np.flatnonzero(design.anchors == model.anchor)
            if len(rows):
                out[rows, j] = self._predict_rows(
                    model, x[rows], None if text is None else text[rows]
                )
        return out

    def score_one(self, record: Mapping[str, Any]) -> dict[str, float | None]:
        """Calibrated probability per issue for one snapshot record (None: not applicable)."""
        return self._score_rows_one(record)[0]

    def _score_rows_one(
        self, record: Mapping[str, Any]
    ) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
        # the probabilities and the booster row of every applicable issue
        anchor = _record_anchor(record)
        x = self.transform.transform_one(record)
        cache: dict[str, Any] = {}
        out: dict[str, float | None] = {}
        rows: dict[str, np.ndarray] = {}
        disabled = self.disabled
        for name in self.issue_names:
            model = self.issues.get(name)
            if model is None or name in disabled or model.anchor != anchor:
                out[name] = None
                continue
            row = rows[name] = self._model_row_one(model, x, record, cache)
            out[name] = model.calibrator.transform_one(model.predict_one(row))
        return out, rows

    def score_explain_one(
        self, record: Mapping[str, Any], top_k: int = 5
    ) -> tuple[dict[str, float | None], list[str], dict[str, list[dict[str, Any]]]]:
        """`score_one`, its `flagged` issues and, per flagged issue, `explain_one` as dicts.

        The record is transformed and hashed once: the reason codes come from the rows the
        scores came from (the online single-item path).
        """
        probs, rows = self._score_rows_one(record)
        flagged = self.flagged(probs)
        reasons = {
            issue: [
                rc.to_dict()
                for rc in self._top_reasons(record, self.issues[issue], rows[issue], top_k)
            ]
            for issue in flagged
        }
        return probs, flagged, reasons

    def hashed_records(self, records: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        """Hashed n-grams of records as one CSR matrix (equal to stacking text_hashed_one rows),
        hashed in one vectorised pass (`features.text.hashed_ngrams_rows`)."""
        return self.transform.text_hashed_records(records)

    def _ngrams_one(self, record: Mapping[str, Any]) -> tuple[list[int], list[float]]:
        # The same kernels as FeatureTransform.text_hashed_one, minus the CSR matrix, whose
        # construction costs more than the hashing on the single-item path.
        return self.transform.ngrams_one(record)

    def flagged(self, probs: Mapping[str, float | None]) -> list[str]:
        """Issues whose probability reaches their threshold, in issue order (never a disabled
        issue, whatever probability it is given)."""
        flagged = []
        for name, model in self.issues.items():
            if name in self.disabled:
                continue
            p = probs.get(name)
            if p is not None and not math.isnan(p) and p >= model.threshold:
                flagged.append(name)
        return flagged

    def explain_one(
        self, record: Mapping[str, Any], issue: str, top_k: int = 5
    ) -> list[ReasonCode]:
        """The top_k features pushing this record's `issue` score up (LightGBM contributions).

        Contributions are in log-odds before calibration; they rank by how much each feature
        raised the score, which is what an analyst asks of a flagged item.
        """
        if issue not in self.issues:
            raise KeyError(f"unknown issue {issue!r}; this bundle scores {self.issue_names}")
        model = self.issues[issue]
        row = self._model_row_one(model, self.transform.transform_one(record), record, {})
        return self._top_reasons(record, model, row, top_k)

    @staticmethod
    def _top_reasons(
        record: Mapping[str, Any], model: IssueModel, row: np.ndarray, top_k: int
    ) -> list[ReasonCode]:
        contrib = model.contributions_one(row)[: len(model.feature_names)]  # drop the bias
        order = np.argsort(-contrib, kind="stable")[: max(int(top_k), 0)].tolist()
        names = model.feature_names
        values = model.feature_values(np.asarray(row, dtype=np.float64).reshape(1, -1))[0]
        return [
            ReasonCode(names[j], _reason_value(record, names[j], values[j]), float(contrib[j]))
            for j in order
        ]

    def explain_design(
        self,
        records: Sequence[Mapping[str, Any]],
        design: Design,
        issue: str,
        top_k: int = 5,
    ) -> list[list[dict[str, Any]]]:
        """`explain_one(record, issue, top_k)` (as dicts) for every record of `design`.

        One `pred_contrib` call (TreeSHAP in C++) for all rows instead of one per item; a
        batch's reason codes reuse the design its scores came from. Tests check it agrees
        with `explain_one`.
        """
        if issue not in self.issues:
            raise KeyError(f"unknown issue {issue!r}; this bundle scores {self.issue_names}")
        model = self.issues[issue]
        rows = self.model_rows(model, design.x, design.text)
        n_features = len(model.feature_names)
        contrib = model.contributions_rows(rows, contrib_threads(len(rows)))[
            :, :n_features
        ]  # the last column is the bias
        order = np.argsort(-contrib, axis=1, kind="stable")[:, : max(int(top_k), 0)]
        top = np.take_along_axis(contrib, order, axis=1).tolist()
        values = np.take_along_axis(model.feature_values(rows), order, axis=1).tolist()
        names = model.feature_names
        return [
            [
                {
                    "feature": names[j],
                    "value": _reason_value(record, names[j], v),
                    "contribution": c,
                }
                for j, c, v in zip(order_i, top_i, values_i, strict=True)
            ]
            for record, order_i, top_i, values_i in zip(
                records, order.tolist(), top, values, strict=True
            )
        ]


def _uses_text(model: IssueModel) -> bool:
    # whether an issue model (or one of a blend's parts) reads hashed text
    if model.text_model is not None or model.group_models:
        return True
    return any(_uses_text(part) for part in model.parts)


def _reason_value(record: Mapping[str, Any], name: str, vector_value: float) -> float | None:
    # Prefer the caller's own number (a raw count reads better than its log); fall back to
    # the feature value; categorical codes and missing values have no useful number.
    raw = record.get(name)
    kind = type(raw)
    if kind is int or kind is bool or (kind is float and raw == raw):  # the common cases first
        return float(raw)
    if (
        raw is not None
        and kind is not float
        and isinstance(raw, int | float)  # numpy scalars and other subclasses
        and not (isinstance(raw, float) and math.isnan(raw))
    ):
        return float(raw)
    v = float(vector_value)
    return None if v != v else v


def _record_anchor(record: Mapping[str, Any]) -> str:
    anchor = record.get("anchor")
    return "post" if anchor is None or anchor == "" else str(anchor)


def _anchor_array(frame: pd.DataFrame) -> np.ndarray:
    if "anchor" not in frame.columns:
        return np.full(len(frame), "post", dtype=object)
    return frame["anchor"].astype("object").where(frame["anchor"].notna(), "post").to_numpy()


def hashed_text(transform: FeatureTransform, frame: pd.DataFrame) -> sp.csr_matrix | None:
    """`transform.text_hashed(frame)` (which hashes each distinct text once), or None when the
    transform has no text columns."""
    if not transform.text_columns_:
        return None
    return transform.text_hashed(frame)
