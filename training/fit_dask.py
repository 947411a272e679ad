"""LightGBM past one machine: the booster of `training.fit.fit_booster`, fitted by
`lightgbm.dask.DaskLGBMClassifier` (data-parallel, one LightGBM process per Dask worker).

Same design matrix, same parameters (`BoosterParams.lgb_params`), same result type: a
`lgb.Booster` trimmed to its best iteration. What differs, by necessity:

- Early stopping. Each Dask worker only sees its own slice of a validation set, so a
  callback would stop the workers at different rounds. Instead the rounds are trained in
  chunks (`chunk_rounds`: a few times `early_stopping_rounds`), each chunk continuing the
  previous one's booster (`init_model`), and early stopping is replayed on the client over
  the validation rows after each chunk: the raw scores are additive over trees, so one pass
  adds tree after tree and scores `average_precision` (the configured metric) after each,
  stopping where LightGBM's own rule would (no improvement for `early_stopping_rounds`).
  Training stops with the first chunk in which that rule fires, so a booster whose best
  round is r costs about r + early_stopping_rounds rounds (rounded up to a chunk), not
  `max_rounds` (training every round first made the Dask fit ~10x the pandas one).
- Columns without any value in the training rows are given a constant 0 (they cannot be
  split on either way; distributed LightGBM fails on them next to categorical features).
- Bit-for-bit equality. Data-parallel training finds split histograms over all workers'
  rows, but bin boundaries come from each worker's sample, so trees (and metrics) differ
  slightly from the single-process fit; the tests hold PR-AUC within 0.01.

Calibration, thresholds and evaluation then run on the client as in the pandas path, from
this booster's predictions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from training.fit import BoosterParams, _safe_name

# Validation rows are scored in steps of this many trees while replaying early stopping.
REPLAY_STEP = 1
# Rows per block when scanning the design matrix for empty columns.
BLOCK_ROWS = 65_536


def _valid_score(metric: str, y: np.ndarray, raw: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return math.nan
    if metric == "auc":
        return float(roc_auc_score(y, raw))
    return float(average_precision_score(y, raw))


class EarlyStopReplay:
    """LightGBM's early stopping replayed on the client, resumable as the booster grows.

    `advance(booster)` adds the trees not yet seen to the validation rows' raw scores, one
    tree at a time, scoring the metric (higher is better: average_precision or auc) after
    each; a round counts as better only when strictly better, as in `lightgbm.early_stopping`.
    It returns True once `early_stopping_rounds` rounds passed without improvement: no more
    rounds are needed. `best_round` is the round to keep.
    """

    def __init__(
        self,
        x_valid: np.ndarray,
        y_valid: np.ndarray,
        *,
        metric: str,
        early_stopping_rounds: int,
        num_threads: int = 1,
    ) -> None:
        self.x_valid = x_valid
        self.y_valid = np.asarray(y_valid)
        self.metric = metric
        self.early_stopping_rounds = early_stopping_rounds
        self.num_threads = num_threads
        self.raw = np.zeros(len(self.y_valid))
        self.rounds = 0  # trees added to `raw` so far
        self.best_score = -math.inf
        self.best_round = 1
        self.stopped = False

    def advance(self, booster: lgb.Booster) -> bool:
        """Replay the rounds of `booster` past those already seen; True when stopped."""
        total = booster.current_iteration()
        while not self.stopped and self.rounds < total:
            step = min(REPLAY_STEP, total - self.rounds)
            self.raw += booster.predict(
                self.x_valid,
                start_iteration=self.rounds,
                num_iteration=step,
                raw_score=True,
                num_threads=self.num_threads,
            )
            self.rounds += step
            score = _valid_score(self.metric, self.y_valid, self.raw)
            if score > self.best_score:
                self.best_score, self.best_round = score, self.rounds
            elif self.rounds - self.best_round >= self.early_stopping_rounds:
                self.stopped = True
        return self.stopped


def best_iteration(
    booster: lgb.Booster,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    metric: str,
    early_stopping_rounds: int,
    num_threads: int = 1,
) -> int:
    """The round LightGBM's early stopping would keep, replayed tree by tree on the client
    over all of `booster`'s rounds (see `EarlyStopReplay`)."""
    replay = EarlyStopReplay(
        x_valid,
        y_valid,
        metric=metric,
        early_stopping_rounds=early_stopping_rounds,
        num_threads=num_threads,
    )
    replay.advance(booster)
    return replay.best_round


def chunk_rounds(params: BoosterParams) -> int:
    """Rounds trained per Dask fit before early stopping is replayed: three times
    `early_stopping_rounds` (at least 50), so that a booster stopping early needs one or two
    chunks, and each chunk's fixed cost (LightGBM's network set-up, the Dataset's bins) is
    small beside its rounds."""
    return max(50, 3 * int(params.early_stopping_rounds))


def empty_columns(x: np.ndarray, *, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Columns without a single value (all NaN), found a block of rows at a time so that no
    full-size boolean copy of the matrix is made."""
    empty = np.ones(x.shape[1], dtype=bool)
    for start in range(0, len(x), block_rows):
        empty &= np.isnan(np.asarray(x[start : start + block_rows], dtype=np.float64)).all(axis=0)
        if not empty.any():
            break
    return empty


def scatter_design(
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    client: Any,
    random_state: int = 0,
) -> tuple[list[tuple[Any, tuple[int, ...]]], list[tuple[Any, tuple[int, ...]]]]:
    """The training rows as one shuffled float64 chunk per worker, sent straight to it.

    Returns (future, shape) pairs of X chunks and of y chunks. The client builds one chunk at
    a time and lets it go once the worker holds it, so beyond the caller's own `x_train` it
    needs memory for one worker's share, not for a float64 copy plus a shuffled copy of the
    whole matrix (which `da.from_array` would also keep in the task graph).

    - A column without a single value in the training rows makes distributed LightGBM's
      bin-mapper sync fail when categorical features are present (a socket error on every
      worker). Such a column can never be split on; a constant 0 cannot either, so the
      trees are the same and predict still takes the column (NaN or not).
    - Rows go in a seeded random order: training rows come sorted by time, and a worker
      holding only the earliest (or latest) rows would draw its feature bins and bagging
      samples from a slice unlike the whole; shuffled, every worker's slice looks like it.
    """
    workers = sorted(client.scheduler_info().get("workers", {})) or [None]
    empty = empty_columns(x_train)
    order = np.random.default_rng(random_state).permutation(len(x_train))
    y_all = np.asarray(y_train, dtype=np.float64)
    x_parts: list[tuple[Any, tuple[int, ...]]] = []
    y_parts: list[tuple[Any, tuple[int, ...]]] = []
    for worker, rows in zip(workers, np.array_split(order, len(workers)), strict=True):
        if len(rows) == 0:
            continue
        chunk = np.asarray(x_train[rows], dtype=np.float64)
        chunk[:, empty] = 0.0
        to = None if worker is None else [worker]
        # hash=False: equal chunks of two fits are still two pieces of data
        [fx, fy] = client.scatter([chunk, y_all[rows]], workers=to, hash=False)
        x_parts.append((fx, chunk.shape))
        y_parts.append((fy, (len(rows),)))
        del chunk
    return x_parts, y_parts


def fit_booster_dask(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    feature_names: Sequence[str],
    categorical: Sequence[int],
    params: BoosterParams,
    random_state: int = 0,
    client: Any = None,
) -> tuple[lgb.Booster, int]:
    """`training.fit.fit_booster` on a Dask cluster (`client`, default the current one)."""
    import dask.array as da
    from distributed import default_client, wait
    from lightgbm.dask import DaskLGBMClassifier

    params = params.for_rows(len(y_train))  # sized to the data, as fit_booster does
    client = client or default_client()
    x_parts, y_parts = scatter_design(x_train, y_train, client=client, random_state=random_state)
    x = da.concatenate([da.from_delayed(f, shape=s, dtype=np.float64) for f, s in x_parts])
    y = da.concatenate([da.from_delayed(f, shape=s, dtype=np.float64) for f, s in y_parts])
    wait([f for f, _ in x_parts + y_parts])
    lgb_params = params.lgb_params(random_state)
    # each worker's LightGBM uses the worker's threads (dask sets them); the rest is the same
    lgb_params.pop("num_threads", None)
    replay = EarlyStopReplay(
        x_valid,
        np.asarray(y_valid, dtype=int),
        metric=params.metric,
        early_stopping_rounds=params.early_stopping_rounds,
        num_threads=params.num_threads,
    )
    booster: lgb.Booster | None = None
    trained, chunk = 0, 0
    while trained < params.max_rounds and not replay.stopped:
        rounds = min(chunk_rounds(params), params.max_rounds - trained)
        # a chunk continuing another draws other bagging and feature samples than the first
        model = DaskLGBMClassifier(
            client=client,
            n_estimators=rounds,
            **{**lgb_params, "seed": int(lgb_params["seed"]) + chunk},
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Parameter .* will be ignored")
            model.fit(
                x,
                y,
                feature_name=[_safe_name(n) for n in feature_names],
                categorical_feature=list(categorical),
                init_model=booster,
            )
        booster = model.to_local().booster_
        grown, trained = booster.current_iteration() - trained, booster.current_iteration()
        replay.advance(booster)
        chunk += 1
        if grown < rounds:  # LightGBM found nothing left to split on: more rounds add nothing
            break
    assert booster is not None  # max_rounds >= 1
    best = replay.best_round
    trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return trimmed, int(best)
