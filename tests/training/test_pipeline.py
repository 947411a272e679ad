"""The training job end to end on real data: flat specs, simulations, failures, idempotency."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.validate import ContractError
from tests.support.paths import TIKTOK_SPEC
from training.evaluate import holdout_metrics, label_column
from training.pipeline import train


def test_flat_training_reports_every_metric(small_flat_spec: Path) -> None:
    result = train(small_flat_spec, track=False, random_state=0, capacity_per_day=50)
    report = result.report
    assert report.issue_names == ["spam", "ban"]
    spam = report.overall["spam"]
    for key in (
        "roc_auc",
        "pr_auc",
        "precision_at_threshold",
        "recall_at_threshold",
        "precision_at_k",
        "brier",
        "ece",
        "baseline_pr_auc",
        "threshold",
    ):
        assert math.isfinite(spam[key]), key
    assert spam["n"] == pytest.approx(160, abs=2)  # 20% of 800 items
    assert spam["roc_auc"] > 0.75  # the labels depend on text, region and reports
    assert "oracle_pr_auc" not in spam  # no truth for flat data
    assert report.holdout.kind == "stratified"
    assert set(report.segments["dimension"]) == {"region"}
    # the issue ships whichever variant judged best; its features say which one it is
    model = result.bundle.issues["spam"]
    features = set(report.importances["spam"]["feature"])
    assert features == set(model.feature_names)
    for variant in [p.variant for p in model.parts] or [model.variant]:
        if variant in ("text", "linear"):
            assert f"{variant}_score" in features
        else:
            assert features >= {"views", "region"}
        if variant == "stacked":
            assert "text_score" in features
    if not model.parts and model.variant == "tabular":
        assert "text_score" not in features
    # the holdout can be re-scored: the same rows, the same numbers
    again = holdout_metrics(result.bundle, report.test_frame, k=50)
    assert again["spam"]["pr_auc"] == pytest.approx(spam["pr_auc"], abs=1e-12)
    assert again["spam"]["precision_at_threshold"] == pytest.approx(
        spam["precision_at_threshold"], abs=1e-12
    )


def test_same_data_and_seed_give_the_same_metrics(small_flat_spec: Path) -> None:
    a = train(small_flat_spec, track=False, random_state=3)
    b = train(small_flat_spec, track=False, random_state=3)
    assert a.fingerprint == b.fingerprint
    pd.testing.assert_frame_equal(a.report.metrics_table(), b.report.metrics_table())
    assert a.bundle.thresholds == b.bundle.thresholds
    c = train(small_flat_spec, track=False, random_state=4)
    assert set(c.report.holdout.item_ids) != set(a.report.holdout.item_ids)


def test_missing_labels_disable_the_issue_and_name_the_counts(tmp_path: Path) -> None:
    from tests.support.flat import write_flat_dataset

    spec = write_flat_dataset(tmp_path, n=300, seed=2)
    csv = tmp_path / "items.csv"
    frame = pd.read_csv(csv)
    frame["ban"] = "active"  # no positives at all
    frame.to_csv(csv, index=False)
    # the other issue trains; `ban` is disabled with the counts that say why
    result = train(spec, track=False)
    assert "spam" in result.bundle.enabled_issues
    assert result.bundle.disabled["ban"].startswith("cannot be trained: lacks labels")
    assert "train: 180 labelled, 0 positive" in result.bundle.disabled["ban"]
    assert result.report.overall["ban"]["enabled"] == 0.0
    assert result.bundle.score_frame(result.report.test_frame)["ban"].isna().all()
    # no issue trainable at all: a clear error naming each issue, not a model
    frame["status"] = "ok"
    frame.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"cannot train: issue 'spam'.*issue 'ban'") as info:
        train(spec, track=False)
    # a flat spec's rule whose value occurs on no row is named as the cause, and the advice
    # is about the spec (review, appeals and a labels table do not exist for flat data)
    message = str(info.value)
    assert "label rule status == 'spam' holds the value 'spam' on no kept row" in message
    assert "'ok' 300" in message and "Fix the spec's label rules" in message
    assert "appeals" not in message


def test_bad_raw_data_raises_contract_error(small_sim: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    items = pd.read_parquet(small_sim / "items.parquet")
    items.loc[items.index[:3], "format"] = "hologram"
    items.to_parquet(bad / "items.parquet")
    with pytest.raises(ContractError, match=r"hologram|format"):
        train(bad, track=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(tmp_path / "nowhere", track=False)


@pytest.mark.slow
def test_simulation_training_is_point_in_time_and_near_the_oracle(small_sim: Path) -> None:
    result = train(small_sim, track=False, random_state=0, capacity_per_day=20)
    report = result.report
    assert report.holdout.kind == "time"
    test = report.test_frame
    # only rows of each issue's anchor carry its label
    post = test["anchor"] == "post"
    assert test.loc[~post, label_column("low_quality")].isna().all()
    assert test.loc[post, label_column("wrongful_enforcement")].isna().all()
    for issue in ("low_quality", "harmful_interactions"):
        m = report.overall[issue]
        assert m["oracle_pr_auc"] > 0
        # a looser bound than the default simulation's 0.85 (slow test): a few hundred
        # labelled test rows here, so PR-AUC moves by several points between seeds
        assert m["pr_auc_vs_oracle"] >= 0.7, (issue, m)
        assert m["roc_auc"] > 0.65
    # appeals are rare: a small run has a handful of labelled actions, but they are scored
    we = report.overall["wrongful_enforcement"]
    assert we["n"] > 0 and result.bundle.anchors["wrongful_enforcement"] == "moderation"
    assert set(report.segments["dimension"]) >= {"region", "format", "category"}
    # ~190 items a day: a capacity of 20 a day flags a minority of the test rows. The gate
    # may disable an issue on data this small; it must then say why, and not everything may go.
    enabled = [
        i for i in ("low_quality", "harmful_interactions") if i not in result.bundle.disabled
    ]
    assert enabled, result.bundle.disabled
    assert all(why.strip() for why in result.bundle.disabled.values())
    for issue in enabled:
        m = report.overall[issue]
        assert 0 < result.bundle.thresholds[issue] <= 1
        assert 0 < m["flagged"] < 0.5 * m["n"], (issue, m)


def test_tiktok_claims_precision_and_recall_at_least_099() -> None:
    result = train(TIKTOK_SPEC, track=False, random_state=0)
    claim = result.report.overall["claim"]
    assert claim["n"] > 3500  # the 20% test part of ~19k videos
    assert claim["precision_at_threshold"] >= 0.99, claim
    assert claim["recall_at_threshold"] >= 0.99, claim
    ban = result.report.overall["author_ban"]
    assert ban["roc_auc"] > 0.6  # a weak but real signal


@pytest.mark.slow
def test_default_simulation_reaches_085_of_the_oracle(tmp_path: Path) -> None:
    from simulator.config import SimConfig
    from simulator.core import simulate, write_simulation

    data = write_simulation(simulate(SimConfig()), tmp_path / "sim")
    result = train(data, track=False, random_state=0)
    for issue, m in result.report.overall.items():
        # the point estimate where the test window holds enough positives to measure it;
        # on a few dozen (wrongful_enforcement: ~12 appealed-and-overturned actions) PR-AUC
        # moves by 0.1 between seeds, so there the model must not be *significantly* below
        # (its bootstrap interval reaches 0.85 of the oracle)
        estimate = m["pr_auc"] if m["positives"] >= 50 else m.get("pr_auc_hi", m["pr_auc"])
        assert estimate >= 0.85 * m["oracle_pr_auc"], (issue, m)
    assert np.isfinite(result.report.primary_metric())


def test_too_few_rows_disable_every_issue_and_are_never_promoted(tmp_path: Path) -> None:
    from tests.support.flat import write_flat_dataset
    from training.registry import decide_promotion

    spec = write_flat_dataset(tmp_path, n=30, seed=1)
    result = train(spec, track=False, random_state=0)
    assert set(result.bundle.disabled) == {"spam", "ban"}
    for why in result.bundle.disabled.values():
        assert "too few labelled test rows to judge" in why, why
    assert result.bundle.enabled_issues == []
    decision = decide_promotion(result.bundle, result.report.test_frame, champion=None)
    assert not decision.promote  # not even as the first version
    assert "no issue passed the quality gate" in decision.reasons[0]


def test_design_matrix_in_blocks_equals_one_call(small_sim: Path) -> None:
    """Blocks of rows give the very matrices of one transform and one hashing of the frame."""
    from models.bundle import hashed_text
    from training.data import load_training_data
    from training.pipeline import design_matrix

    td = load_training_data(small_sim)
    frame = td.frame.iloc[:3000]
    transform = td.transform.fit(frame)
    want_x, want_text = transform.transform(frame), hashed_text(transform, frame)
    assert want_text is not None and want_text.nnz > 0
    for block_rows in (7, 1000, 5000):
        x, text = design_matrix(transform, frame, block_rows=block_rows)
        np.testing.assert_array_equal(x, want_x)
        assert text is not None and text.shape == want_text.shape
        assert (text != want_text).nnz == 0
    x, text = design_matrix(transform, frame.iloc[:0])
    assert x.shape == (0, want_x.shape[1]) and text is not None and text.shape[0] == 0


def _text_rows(n_items: int, seed: int) -> tuple:
    """Hashed-text-like rows: 3 rows an item, positive items use a few telling n-grams."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    items = np.repeat(np.arange(n_items), 3).astype(str)
    bad = rng.random(n_items) < 0.2
    y = np.repeat(bad, 3).astype(int)
    n = len(y)
    cols = rng.integers(0, 64, (n, 6))
    cols[y == 1, :2] = rng.integers(64, 70, (int(y.sum()), 2))
    data = np.ones(cols.size)
    x = sp.csr_matrix((data, (np.repeat(np.arange(n), 6), cols.ravel())), shape=(n, 80))
    x.sum_duplicates()
    return x, y, items


def test_item_sample_draws_whole_items_and_keeps_the_positive_rate() -> None:
    from training.split import item_sample

    _, y, items = _text_rows(3000, 0)
    assert item_sample(y, items, len(y), 0) is None  # few enough: all rows
    drawn = item_sample(y, items, 3000, 0)
    assert drawn is not None
    sample = drawn.rows
    assert abs(len(sample) - 3000) <= 6
    kept = set(items[sample])
    assert np.isin(items, list(kept)).sum() == len(sample)  # every row of a drawn item
    assert (drawn.items, drawn.of_items) == (len(kept), 3000)
    assert abs(y[sample].mean() - y.mean()) < 0.01
    np.testing.assert_array_equal(sample, item_sample(y, items, 3000, 0).rows)
    assert not np.array_equal(sample, item_sample(y, items, 3000, 1).rows)


def test_fit_text_bounded_is_the_cv_fit_below_the_bound_and_honest_above() -> None:
    from training.fit import fit_text_model_cv
    from training.pipeline import fit_text_bounded
    from training.split import item_sample

    x, y, items = _text_rows(1500, 1)
    rows = np.arange(len(y))
    want_model, want = fit_text_model_cv(x, y, items, random_state=0)
    model, got = fit_text_bounded(x, rows, y, items, random_state=0, max_rows=len(y))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.score(x), want_model.score(x))

    model, got = fit_text_bounded(x, rows, y, items, random_state=0, max_rows=1500)
    drawn = item_sample(y, items, 1500, 0)
    assert drawn is not None
    sample = drawn.rows
    rest = np.setdiff1d(rows, sample)
    # rows of items outside the sample: the sample model's own score (it never saw them)
    np.testing.assert_allclose(got[rest], model.score(x[rest]))
    # sampled rows: out of fold, as the fit on those rows alone gives them
    _, oof = fit_text_model_cv(x[sample], y[sample], items[sample], random_state=0)
    np.testing.assert_array_equal(got[sample], oof)
    assert pr_auc_of(y, got) > 0.9


def pr_auc_of(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p))


def test_labels_of_an_issue_nothing_trains_are_reported_not_silently_unused(
    tmp_path: Path,
) -> None:
    from features.io import load_dataset, write_dataset
    from simulator.config import SimConfig
    from simulator.core import simulate
    from training.data import intake_lines, load_training_data

    tables = simulate(SimConfig(n_items=300, days=3, seed=1)).tables
    labels = tables["labels"].copy()
    typo = labels.iloc[:7].assign(issue="lowquality")  # a typo of low_quality
    tables = {**tables, "labels": pd.concat([labels, typo], ignore_index=True)}
    folder = write_dataset(tables, tmp_path / "ds")
    assert len(load_dataset(folder)["labels"]) == len(labels) + 7  # valid by the contract
    td = load_training_data(folder)
    assert td.intake["unknown_label_issues"] == {"lowquality": 7}
    lines = intake_lines(td.intake)
    assert "  ignored 7 labels of issue(s) no model trains: 'lowquality' (7)" in lines
    (folder / "event.parquet").write_bytes((folder / "labels.parquet").read_bytes())
    assert "  not read (no contract table): event.parquet" in intake_lines(
        load_training_data(folder).intake
    )


def test_sample_rows_keeps_whole_items_and_each_issues_positive_rate(small_sim: Path) -> None:
    from training.data import intake_lines, load_training_data, sample_rows

    td = load_training_data(small_sim)
    n = len(td.frame)
    assert sample_rows(td, n, 0) is td and sample_rows(td, 0, 0) is td  # few enough; no limit
    part = sample_rows(td, n // 3, 0)
    frame = part.frame
    assert abs(len(frame) - n // 3) < 0.02 * n
    # whole items: every kept item has all of its rows
    per_item = td.frame["item_id"].value_counts()
    kept = frame["item_id"].value_counts()
    assert (kept == per_item[kept.index]).all()
    for issue in td.issues:
        col = label_column(issue.name)
        rate = (td.frame[col] == 1).sum() / td.frame[col].notna().sum()
        got = (frame[col] == 1).sum() / frame[col].notna().sum()
        assert got == pytest.approx(rate, rel=0.25), issue.name
    # the items with a positive label are drawn at the same share as the others
    pos = td.frame.groupby("item_id")[[label_column(i.name) for i in td.issues]].max().eq(1)
    pos_items = set(pos.index[pos.any(axis=1)])
    share_pos = len(pos_items & set(kept.index)) / len(pos_items)
    share_neg = (len(kept) - len(pos_items & set(kept.index))) / (len(per_item) - len(pos_items))
    assert share_pos == pytest.approx(share_neg, rel=0.05)
    # seeded
    assert frame.equals(sample_rows(td, n // 3, 0).frame)
    assert not frame["item_id"].equals(sample_rows(td, n // 3, 1).frame["item_id"])
    assert part.intake["sampled"]["of_rows"] == n and part.intake["rows"] == len(frame)
    assert part.intake["sampled"]["items"] == len(kept)
    assert part.intake["sampled"]["of_items"] == len(per_item)
    line = [s for s in intake_lines(part.intake) if "trained on a sample" in s]
    assert line and f"of {n:,} rows" in line[0]


def test_train_past_max_rows_fits_and_evaluates_on_the_sample(small_flat_spec: Path) -> None:
    full = train(small_flat_spec, track=False, random_state=0, capacity_per_day=50, max_rows=0)
    part = train(small_flat_spec, track=False, random_state=0, capacity_per_day=50, max_rows=400)
    assert full.report.overall["spam"]["n"] == pytest.approx(160, abs=2)  # 20% of 800 items
    assert part.report.overall["spam"]["n"] == pytest.approx(80, abs=3)  # 20% of ~400
    assert "sampled" not in full.report.extra["intake"]
    assert part.report.extra["intake"]["sampled"]["rows"] == pytest.approx(400, abs=2)
    with pytest.raises(ValueError, match="--max-rows"):
        train(small_flat_spec, track=False, max_rows=-1)
