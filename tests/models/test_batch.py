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
        t = bundle.thresholds[name]  # None: disabled, never flagged
        expected = probs[name].to_numpy() >= (np.inf if t is None else t)
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


def test_a_disabled_issue_is_nan_never_flagged_and_marked(
    bundle: ScoringBundle, flat_result: TrainResult
) -> None:
    import copy

    frame = flat_result.report.test_frame
    off = copy.copy(bundle)
    name = bundle.enabled_issues[0]
    off.disabled = {**bundle.disabled, name: "no signal: ROC-AUC interval includes 0.5"}
    # even a threshold that would flag every row does not flag a disabled issue
    off.issues = {n: copy.copy(m) for n, m in bundle.issues.items()}
    off.issues[name].threshold = 0.0
    for engine in ("pandas", "dask"):
        scored = score_dataset(off, frame, engine=engine)
        assert scored[name].isna().all()
        assert not scored["flagged"].str.split(",").apply(lambda xs: name in xs).any()
        assert (
            scored["disabled"] == ",".join(n for n in off.issue_names if n in off.disabled)
        ).all()
        assert scored.attrs["disabled"] == off.disabled
        for other in bundle.issue_names:
            if other != name:
                np.testing.assert_array_equal(scored[other], score_dataset(bundle, frame)[other])
    assert off.thresholds[name] is None
    assert name not in off.enabled_issues
    assert off.score_one(flat_result.bundle.example_record)[name] is None
    assert off.flagged({name: 1.0}) == []
    plain = score_dataset(bundle, frame)
    assert (plain["disabled"] == ",".join(bundle.disabled)).all()
    plain.attrs = {}
    assert (score_dataset(off.__class__(off.transform, off.issues), frame)["disabled"] == "").all()


def test_bundles_pickled_before_disabled_existed_load_with_every_issue_enabled(
    bundle: ScoringBundle,
) -> None:
    import pickle

    state = dict(bundle.__dict__)
    state.pop("disabled")
    old = ScoringBundle.__new__(ScoringBundle)
    old.__dict__.update(state)  # what an older pickle restores
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.disabled == {}
    assert loaded.issue_names == bundle.issue_names


def test_rows_sharing_no_input_column_are_refused(bundle: ScoringBundle) -> None:
    # e.g. a raw-table dataset's snapshots scored with a model trained on a flat spec: every
    # input would read as unknown and the "scores" would be the model's prior
    frame = pd.DataFrame(
        {"item_id": ["a", "b"], "n_view": [3.0, 4.0], "comment_text": ["hi", "there"]}
    )
    assert not set(frame.columns[1:]) & set(bundle.input_fields)
    for engine in ("pandas", "dask"):
        with pytest.raises(ValueError, match=r"none of the model's \d+ input columns") as info:
            score_dataset(bundle, frame, engine=engine)  # type: ignore[arg-type]
        assert "n_view" in str(info.value)


def test_rows_missing_some_input_columns_score_them_as_unknown(
    bundle: ScoringBundle, flat_result: TrainResult
) -> None:
    frame = flat_result.report.test_frame
    dropped = [c for c in bundle.input_fields if c != "item_id"][1:]
    scored = score_dataset(bundle, frame.drop(columns=dropped))
    assert len(scored) == len(frame)
