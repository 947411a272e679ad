"""LightGBM past one machine: the booster of `training.fit.fit_booster`, fitted by
`lightgbm.dask.DaskLGBMClassifier` (data-parallel, one LightGBM process per Dask worker).

Same design matrix, same parameters (`BoosterParams.lgb_params`), same result type: a
`lgb.Booster` trimmed to its best iteration. What differs, by necessity:

- Early stopping. Each Dask worker only sees its own slice of a validation set, so a
  callback would stop the workers at different rounds. Instead all `max_rounds` rounds are
  trained, and early stopping is replayed on the client over the validation rows: the raw
  scores are additive over trees, so one pass adds tree after tree and scores
  `average_precision` (the configured metric) after each, stopping where LightGBM's own
  rule would (no improvement for `early_stopping_rounds`).
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


def _valid_score(metric: str, y: np.ndarray, raw: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return math.nan
    if metric == "auc":
        return float(roc_auc_score(y, raw))
    return float(average_precision_score(y, raw))


def best_iteration(
    booster: lgb.Booster,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    metric: str,
    early_stopping_rounds: int,
    num_threads: int = 1,
) -> int:
    """The round LightGBM's early stopping would keep, replayed tree by tree on the client.

    The metric is higher-is-better (average_precision or auc); a round counts as better only
    when strictly better, as in `lightgbm.early_stopping`.
    """
    total = booster.current_iteration()
    raw = np.zeros(len(y_valid))
    best_score, best_round = -math.inf, 1
    for start in range(0, total, REPLAY_STEP):
        step = min(REPLAY_STEP, total - start)
        raw += booster.predict(
            x_valid,
            start_iteration=start,
            num_iteration=step,
            raw_score=True,
            num_threads=num_threads,
        )
        rnd = start + step
        score = _valid_score(metric, y_valid, raw)
        if score > best_score:
            best_score, best_round = score, rnd
        elif rnd - best_round >= early_stopping_rounds:
            break
    return best_round


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

    from common.cluster import n_workers

    params = params.for_rows(len(y_train))  # sized to the data, as fit_booster does
    client = client or default_client()
    workers = n_workers(client)
    # one chunk per worker: LightGBM runs one process per worker holding data
    rows = max(1, math.ceil(len(y_train) / workers))
    x_np = np.array(x_train, dtype=np.float64)
    # A column without a single value in the training rows makes distributed LightGBM's
    # bin-mapper sync fail when categorical features are present (a socket error on every
    # worker). Such a column can never be split on; a constant 0 cannot either, so the
    # trees are the same and predict still takes the column (NaN or not).
    x_np[:, np.isnan(x_np).all(axis=0)] = 0.0
    # Rows in a seeded random order: training rows come sorted by time, and a worker holding
    # only the earliest (or latest) rows would draw its feature bins and bagging samples
    # from a slice unlike the whole; shuffled, every worker's slice looks like the whole.
    order = np.random.default_rng(random_state).permutation(len(x_np))
    x = da.from_array(x_np[order], chunks=(rows, -1))
    y = da.from_array(np.asarray(y_train, dtype=np.float64)[order], chunks=(rows,))
    del x_np
    x, y = client.persist([x, y])
    wait([x, y])
    lgb_params = params.lgb_params(random_state)
    # each worker's LightGBM uses the worker's threads (dask sets them); the rest is the same
    lgb_params.pop("num_threads", None)
    model = DaskLGBMClassifier(client=client, n_estimators=params.max_rounds, **lgb_params)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parameter .* will be ignored")
        model.fit(
            x,
            y,
            feature_name=[_safe_name(n) for n in feature_names],
            categorical_feature=list(categorical),
        )
    booster = model.to_local().booster_
    best = best_iteration(
        booster,
        x_valid,
        np.asarray(y_valid, dtype=int),
        metric=params.metric,
        early_stopping_rounds=params.early_stopping_rounds,
        num_threads=params.num_threads,
    )
    trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return trimmed, int(best)
