"""ScoringBundle: the batch, records and single-item paths agree; pickling; reasons; anchors."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

from models.bundle import Calibrator, ScoringBundle, TextModel
from tests.support.flat import records_of
from training.pipeline import TrainResult


def test_three_paths_give_identical_probabilities(
    bundle: ScoringBundle, flat_result: TrainResult
) -> None:
    frame = flat_result.report.test_frame.head(150)
    batch = bundle.score_frame(frame)[bundle.issue_names].to_numpy()
    records = records_of(frame)
    many = bundle.score_records(records)
    one = np.array([[bundle.score_one(r)[n] for n in bundle.issue_names] for r in records])
    assert batch.shape == (150, 2)
    assert np.isfinite(batch).all()
    np.testing.assert_array_equal(batch, many)
    np.testing.assert_array_equal(many, one)
    assert ((batch >= 0) & (batch <= 1)).all()


def test_pickle_round_trip_scores_the_same(bundle: ScoringBundle, flat_result: TrainResult) -> None:
    frame = flat_result.report.test_frame.head(50)
    record = records_of(frame)[0]
    before = bundle.score_one(record)  # builds the cached fast predictor: must not be pickled
    clone = pickle.loads(pickle.dumps(bundle))
    assert clone.score_one(record) == before
    pd.testing.assert_frame_equal(clone.score_frame(frame), bundle.score_frame(frame))
    assert clone.thresholds == bundle.thresholds


def test_issue_of_another_anchor_is_not_scored(bundle: ScoringBundle) -> None:
    record = bundle.input_example()
    record["anchor"] = "moderation"
    assert bundle.score_one(record) == {name: None for name in bundle.issue_names}
    assert np.isnan(bundle.score_records([record])).all()
    frame = pd.DataFrame([bundle.input_example(), record])
    scored = bundle.score_frame(frame)
    assert scored.iloc[0].notna().all() and scored.iloc[1].isna().all()
    assert bundle.flagged(bundle.score_one(record)) == []


def test_flagged_uses_each_issue_threshold(bundle: ScoringBundle) -> None:
    names = bundle.issue_names
    t = bundle.thresholds
    probs = {names[0]: t[names[0]], names[1]: math.nextafter(t[names[1]], -1.0)}
    assert bundle.flagged(probs) == [names[0]]
    assert bundle.flagged({names[0]: None, names[1]: float("nan")}) == []


def test_explain_one_contributions_rebuild_the_raw_score(bundle: ScoringBundle) -> None:
    record = bundle.input_example()
    issue = bundle.issue_names[0]
    model = bundle.issues[issue]
    reasons = bundle.explain_one(record, issue, top_k=len(model.feature_names))
    assert len(reasons) == len(model.feature_names)
    contributions = [r.contribution for r in reasons]
    assert contributions == sorted(contributions, reverse=True)
    x = bundle.transform.transform_one(record)
    if model.parts:
        # a blend: its parts' contributions weighted and summed by feature, + the bias, are
        # the blend's log-odds
        row = bundle._model_row_one(model, x, record, {})
        p = model.predict_one(row)
        assert {r.feature for r in reasons} == set(model.feature_names)
        assert model.contributions_one(row).sum() == pytest.approx(math.log(p / (1 - p)), abs=1e-7)
        return
    if model.booster is None:
        # the text and linear variants: one reason, their score's log-odds above the
        # text model's intercept (the bias)
        p = model.predict_one(bundle._model_row_one(model, x, record, {}))
        assert [r.feature for r in reasons] == model.feature_names
        assert contributions[0] + model.text_model.intercept_ == pytest.approx(
            math.log(p / (1 - p)), abs=1e-9
        )
        return
    # pred_contrib: feature contributions + bias = the booster's raw log-odds
    if model.text_model is not None:
        x = np.append(x, model.text_model.score_one(bundle.transform.text_hashed_one(record)))
    full = model.booster.predict(x.reshape(1, -1), pred_contrib=True)[0]
    raw = model.booster.predict(x.reshape(1, -1), raw_score=True)[0]
    assert sum(contributions) + full[-1] == pytest.approx(raw, abs=1e-9)
    top = bundle.explain_one(record, issue, top_k=3)
    assert len(top) == 3 and top == reasons[:3]
    by_name = {r.feature: r for r in reasons}
    assert by_name["views"].value == record["views"]  # the caller's raw number, not log1p
    with pytest.raises(KeyError, match="unknown issue"):
        bundle.explain_one(record, "nope")


def test_explain_design_equals_explain_one_per_record(
    bundle: ScoringBundle, flat_result: TrainResult
) -> None:
    records = records_of(flat_result.report.test_frame.head(40))
    design = bundle.design_records(records)
    np.testing.assert_array_equal(bundle.score_design(design), bundle.score_records(records))
    picked = [3, 0, 17, 39]
    for issue in bundle.issue_names:
        subset = [records[i] for i in picked]
        got = bundle.explain_design(subset, design.take(picked), issue, top_k=4)
        want = [[r.to_dict() for r in bundle.explain_one(rec, issue, top_k=4)] for rec in subset]
        assert [[r["feature"] for r in g] for g in got] == [[r["feature"] for r in w] for w in want]
        for g, w in zip(got, want, strict=True):
            assert [r["value"] for r in g] == pytest.approx([r["value"] for r in w], nan_ok=True)
            assert [r["contribution"] for r in g] == pytest.approx(
                [r["contribution"] for r in w], rel=1e-9, abs=1e-12
            )


def test_score_explain_one_equals_its_three_calls(
    bundle: ScoringBundle, flat_result: TrainResult
) -> None:
    records = records_of(flat_result.report.test_frame.head(60))
    n_flagged = 0
    for record in records:
        probs, flagged, reasons = bundle.score_explain_one(record, top_k=3)
        assert probs == bundle.score_one(record)
        assert flagged == bundle.flagged(probs)
        assert reasons == {
            issue: [r.to_dict() for r in bundle.explain_one(record, issue, top_k=3)]
            for issue in flagged
        }
        n_flagged += bool(flagged)
    assert n_flagged > 0  # the comparison covered reason codes, not only empty dicts


def test_fast_contributions_equal_the_booster(
    bundle: ScoringBundle, flat_result: TrainResult
) -> None:
    records = records_of(flat_result.report.test_frame.head(30))
    design = bundle.design_records(records)
    for model in bundle.issues.values():
        rows = bundle.model_rows(model, design.x, design.text)
        want = model.contributions_rows(rows)  # pred_contrib, or the text/linear reason
        if model.booster is not None:
            np.testing.assert_array_equal(want, model.booster.predict(rows, pred_contrib=True))
        got = np.array([model.contributions_one(row) for row in rows])
        np.testing.assert_array_equal(got, want)


def test_input_example_is_a_real_record(bundle: ScoringBundle) -> None:
    example = bundle.input_example()
    assert {"item_id", "caption", "views", "region"} <= set(example)
    assert not any(k.startswith("label_") for k in example)
    probs = bundle.score_one(example)
    assert all(p is not None and 0 <= p <= 1 for p in probs.values())


def test_isotonic_calibrator_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(float)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
    cal = Calibrator("isotonic", x=iso.X_thresholds_, y=iso.y_thresholds_)
    grid = np.linspace(0.0, 1.0, 301)
    out = cal.transform(grid)
    # within the tie-break of scikit-learn's step function, and strictly increasing
    np.testing.assert_allclose(out, iso.predict(grid), atol=2e-6)
    assert (np.diff(out) > 0).all()
    assert cal.transform_one(0.37) == pytest.approx(cal.transform(np.array([0.37]))[0], abs=1e-15)


def test_platt_calibrator_is_monotone_and_scalar_path_agrees() -> None:
    cal = Calibrator("platt", a=1.7, b=-0.4)
    grid = np.linspace(0.001, 0.999, 50)
    out = cal.transform(grid)
    assert (np.diff(out) > 0).all()
    for g, o in zip(grid, out, strict=True):
        assert cal.transform_one(float(g)) == pytest.approx(o, rel=1e-12)
    with pytest.raises(ValueError, match="calibrator kind"):
        Calibrator("spline")  # type: ignore[arg-type]


def test_a_steep_platt_slope_scores_extremes_on_both_paths_without_overflow() -> None:
    # a near-constant raw score calibrates to a steep slope; at a score near 0 the logit
    # times the slope is below -709: the single-item path raised OverflowError (the API
    # answered 500 for that item) and the batch path printed an overflow warning
    import warnings

    cal = Calibrator("platt", a=100.0, b=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = cal.transform(np.array([1e-9, 0.5, 1 - 1e-9]))
        for p, want in zip([1e-9, 0.5, 1 - 1e-9], batch, strict=True):
            assert cal.transform_one(p) == pytest.approx(want, abs=1e-300)
    assert batch[0] == pytest.approx(0.0, abs=1e-300) and batch[2] == pytest.approx(1.0)


def test_text_model_sparse_and_index_paths_agree() -> None:
    import scipy.sparse as sp

    coef = np.linspace(-1, 1, 64)
    model = TextModel(coef, 0.25)
    row = sp.csr_matrix(([0.6, 0.8], ([0, 0], [3, 40])), shape=(1, 64))
    expected = 1 / (1 + np.exp(-(0.6 * coef[3] + 0.8 * coef[40] + 0.25)))
    assert model.score(row)[0] == pytest.approx(expected)
    assert model.score_one(row) == pytest.approx(expected)
    assert model.score_ngrams([], []) == pytest.approx(1 / (1 + np.exp(-0.25)))


def test_hashed_records_equals_stacked_single_rows(
    bundle: ScoringBundle, flat_result: TrainResult
) -> None:
    import scipy.sparse as sp

    records = records_of(flat_result.report.test_frame.head(40))
    records[3]["caption"] = None
    records[5].pop("caption")
    got = bundle.hashed_records(records)
    expected = sp.vstack([bundle.transform.text_hashed_one(r) for r in records], format="csr")
    assert got.shape == expected.shape
    assert (got != expected).nnz == 0
