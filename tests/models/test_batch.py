"""Batch scoring: the pandas and Dask engines give the same frame, with flags at thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.batch import score_dataset
from models.bundle import ScoringBundle
from training.pipeline import TrainResult


def test_pandas_scores_and_flags(bundle: ScoringBundle, flat_result: TrainResult) -> None:
    frame = flat_result.report.test_frame
    scored = score_dataset(bundle, frame)
    assert list(scored.columns[:3]) == ["item_id", "as_of", "anchor"]
    assert len(scored) == len(frame)
    probs = bundle.score_frame(frame)
    for name in bundle.issue_names:
        np.testing.assert_array_equal(scored[name].to_numpy(), probs[name].to_numpy())
        expected = probs[name].to_numpy() >= bundle.thresholds[name]
        got = scored["flagged"].str.split(",").apply(lambda xs, n=name: n in xs).to_numpy()
        np.testing.assert_array_equal(got, expected)
    assert set(scored["anchor"]) == {"post"}


def test_dask_engine_equals_pandas(bundle: ScoringBundle, flat_result: TrainResult) -> None:
    frame = flat_result.report.test_frame
    a = score_dataset(bundle, frame, engine="pandas")
    b = score_dataset(bundle, frame, engine="dask", npartitions=3)
    pd.testing.assert_frame_equal(a, b)


def test_unknown_engine_is_refused(bundle: ScoringBundle) -> None:
    with pytest.raises(ValueError, match="engine 'spark'"):
        score_dataset(bundle, pd.DataFrame({"item_id": ["a"]}), engine="spark")  # type: ignore[arg-type]
