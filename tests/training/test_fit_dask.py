"""LightGBM on Dask: the same booster contract and, on the same data, the same quality."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import lightgbm as lgb
import numpy as np
import pytest

from training.evaluate import pr_auc
from training.fit import BoosterParams, fit_booster
from training.fit_dask import best_iteration, fit_booster_dask

pytestmark = [pytest.mark.dask, pytest.mark.slow]


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    from distributed import Client, LocalCluster

    # LightGBM's network is per process: its Dask workers must be processes
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def design(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with numeric signal, a categorical code, missing values and an all-NaN column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    x[:, 4] = rng.integers(0, 5, n)  # categorical
    x[rng.random(n) < 0.2, 1] = np.nan
    x[:, 5] = np.nan  # never observed (e.g. a signal the dataset lacks)
    logit = 1.5 * x[:, 0] - np.nan_to_num(x[:, 1]) + (x[:, 4] == 2) - 2.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


def test_replayed_early_stopping_is_lightgbms() -> None:
    x, y = design(6000, 1)
    params = BoosterParams(max_rounds=400, early_stopping_rounds=30)
    _, want, _ = fit_booster(
        x[:4000],
        y[:4000],
        x[4000:],
        y[4000:],
        feature_names=list("abcdef"),
        categorical=[4],
        params=params,
    )
    full = lgb.train(
        params.for_rows(4000).lgb_params(0),
        lgb.Dataset(x[:4000], label=y[:4000], categorical_feature=[4]),
        num_boost_round=params.max_rounds,
    )
    got = best_iteration(full, x[4000:], y[4000:], metric=params.metric, early_stopping_rounds=30)
    assert got == want


def test_dask_booster_matches_local_quality(client: object) -> None:
    x, y = design(24_000, 2)
    tr, va, te = slice(0, 14_000), slice(14_000, 18_000), slice(18_000, None)
    params = BoosterParams(max_rounds=300, early_stopping_rounds=40)
    kwargs = dict(feature_names=list("abcdef"), categorical=[4], params=params)
    local, _, _ = fit_booster(x[tr], y[tr], x[va], y[va], **kwargs)
    dist, best = fit_booster_dask(x[tr], y[tr], x[va], y[va], client=client, **kwargs)
    assert isinstance(dist, lgb.Booster)
    assert dist.current_iteration() == best  # trimmed to the best round, as fit_booster is
    assert dist.num_feature() == x.shape[1]  # predict takes the same design matrix
    want = pr_auc(y[te], local.predict(x[te]))
    got = pr_auc(y[te], dist.predict(x[te]))
    assert want > 0.3
    assert abs(got - want) < 0.01


def test_design_is_scattered_a_shuffled_chunk_per_worker() -> None:
    from distributed import Client

    from tests.support.dask import local_scheduler
    from training.fit_dask import empty_columns, scatter_design

    x, y = design(1001, 3)
    x[:, 2] = np.nan
    x[7, 2] = 0.5  # one value: not an empty column
    with local_scheduler(processes=False) as address, Client(address) as c:
        x_parts, y_parts = scatter_design(x, y, client=c, random_state=4)
        holders = c.who_has([f for f, _ in x_parts])
        placed = [set(holders[f.key]) for f, _ in x_parts]
        xs = [f.result() for f, _ in x_parts]
        ys = [f.result() for f, _ in y_parts]
    # one chunk per worker, each on its own worker, with the shapes the dask arrays declare
    assert len(xs) == 2 and placed[0].isdisjoint(placed[1])
    assert [a.shape for a in xs] == [s for _, s in x_parts]
    assert [a.shape for a in ys] == [s for _, s in y_parts]
    # together: every row once, in the seeded order, labels aligned, the empty column zeroed
    order = np.random.default_rng(4).permutation(len(x))
    want = x[order].copy()
    want[:, 5] = 0.0
    np.testing.assert_array_equal(np.concatenate(xs), want)
    np.testing.assert_array_equal(np.concatenate(ys), y[order].astype(float))
    assert empty_columns(x, block_rows=100).tolist() == [False] * 5 + [True]


def test_replay_resumes_chunk_by_chunk() -> None:
    """Replaying a booster's rounds as it grows (one chunk of rounds at a time, as
    fit_booster_dask trains them) keeps the round a single pass over all of them keeps, and
    says stop as soon as `early_stopping_rounds` rounds passed without improvement."""
    from training.fit_dask import EarlyStopReplay

    x, y = design(6000, 5)
    params = BoosterParams(max_rounds=400, early_stopping_rounds=30)
    full = lgb.train(
        params.for_rows(4000).lgb_params(0),
        lgb.Dataset(x[:4000], label=y[:4000], categorical_feature=[4]),
        num_boost_round=params.max_rounds,
    )
    want = best_iteration(full, x[4000:], y[4000:], metric=params.metric, early_stopping_rounds=30)
    assert want + 30 < params.max_rounds  # the data stops early: the chunks must notice
    replay = EarlyStopReplay(x[4000:], y[4000:], metric=params.metric, early_stopping_rounds=30)
    stopped_at = None
    for upto in range(50, params.max_rounds + 1, 50):
        chunk = lgb.Booster(model_str=full.model_to_string(num_iteration=upto))
        if replay.advance(chunk):
            stopped_at = upto
            break
    assert replay.best_round == want
    # the first chunk that reaches want + early_stopping_rounds is the last one needed
    assert stopped_at == 50 * math.ceil((want + 30) / 50)
