"""`train` and `score` with --engine dask on a 2-worker LocalCluster: the pandas results."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.support.dask import local_scheduler
from training.fit import BoosterParams
from training.jobs import save_bundle, score_to_file
from training.pipeline import train

pytestmark = [pytest.mark.dask, pytest.mark.slow]

# Distributed LightGBM bins and bags per worker, so its trees differ a little from the
# single-process fit; on this small world that moves PR-AUC within its sampling interval.
# bench/scale.py holds 0.01 on 100k items.


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with local_scheduler(processes=True) as address:
        yield address


def test_train_and_score_on_dask(small_sim: Path, scheduler: str, tmp_path: Path) -> None:
    # cv_below_rows=0: small training sets would otherwise fit in-process (cross-validated
    # rounds) on both engines; this test is about the distributed fit
    params = BoosterParams(cv_below_rows=0)
    want = train(small_sim, track=False, booster_params=params)
    got = train(small_sim, track=False, engine="dask", scheduler=scheduler, booster_params=params)
    assert list(got.metrics) == list(want.metrics)
    for issue, metrics in want.metrics.items():
        # same data, split and labels: the same test rows
        assert got.metrics[issue]["n"] == metrics["n"]
        assert got.metrics[issue]["positives"] == metrics["positives"]
        assert math.isfinite(got.metrics[issue]["pr_auc"])
        # within the pandas model's own bootstrap interval (the gate's), which is what "the
        # same model quality" can mean on a few hundred labelled test rows. An issue with too
        # few test labels for an interval (the gate disables it) has no quality to compare.
        if "pr_auc_lo" in metrics:
            lo, hi = metrics["pr_auc_lo"], metrics["pr_auc_hi"]
            assert lo <= got.metrics[issue]["pr_auc"] <= hi, (issue, lo, hi)
    pd.testing.assert_frame_equal(got.report.test_frame, want.report.test_frame)

    bundle = save_bundle(want.bundle, tmp_path / "bundle.pkl")
    pandas_out = score_to_file(small_sim, str(bundle), tmp_path / "pandas.parquet")
    dask_out = score_to_file(
        small_sim, str(bundle), tmp_path / "dask.parquet", engine="dask", scheduler=scheduler
    )
    assert pandas_out[1:] == dask_out[1:]
    # bit for bit: the snapshots are, and scoring is row by row
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "dask.parquet"),
        pd.read_parquet(tmp_path / "pandas.parquet"),
        check_exact=True,
    )


@pytest.mark.parametrize("only", [None, ["low_quality"]])
def test_a_training_sample_is_drawn_before_rows_leave_the_workers(
    small_sim: Path, scheduler: str, only: list[str] | None
) -> None:
    # Past the row bound the Dask engine brings back only the sample: the same rows, labels
    # and intake as sampling every row loaded by the pandas engine.
    from training.data import load_training_data, sample_rows
    from training.pipeline import select_issues

    full = load_training_data(small_sim)
    if only:
        full = select_issues(full, only)
    limit = len(full.frame) // 3
    want = sample_rows(full, limit, 7)
    got = load_training_data(
        small_sim,
        engine="dask",
        scheduler=scheduler,
        max_rows=limit,
        random_state=7,
        sample_issues=only,
    )
    if only:
        got = select_issues(got, only)
    assert len(got.frame) < len(full.frame)
    pd.testing.assert_frame_equal(got.frame, want.frame)
    assert got.intake == want.intake
    assert got.intake["sampled"]["of_rows"] == len(full.frame)
    assert sample_rows(got, limit, 7) is got  # sampled once, not again


def test_the_dask_engine_loads_every_row_under_the_bound(small_sim: Path, scheduler: str) -> None:
    from training.data import load_training_data

    want = load_training_data(small_sim)
    got = load_training_data(
        small_sim, engine="dask", scheduler=scheduler, max_rows=len(want.frame)
    )
    pd.testing.assert_frame_equal(got.frame, want.frame)
    assert "sampled" not in got.intake and got.intake == want.intake
