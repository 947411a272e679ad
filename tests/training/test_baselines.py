"""The strong baselines: each learns a separable problem, text-less data omits TF-IDF, and
inputs they cannot fit are refused with a clear message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from training.baselines import BASELINES, baseline_scores, documents, lgbm_params

WORDS = ["cat", "dog", "pasta", "goal", "music", "city", "night", "art"]


def _problem(n: int, seed: int, *, text: bool = True, signal: str = "both"):
    """Rows whose label shows in one tabular feature and/or in the caption words."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    tab_signal = signal in ("both", "tabular")
    x = np.column_stack(
        [
            rng.normal(size=n) + (1.5 * y if tab_signal else 0.0),
            rng.normal(size=n),
            rng.integers(0, 4, n).astype(float),  # a categorical code
        ]
    )
    x[rng.random(n) < 0.05, 1] = np.nan
    frame = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)]})
    if text:
        base = [" ".join(rng.choice(WORDS, 4)) for _ in range(n)]
        lure = np.where(rng.random(n) < 0.8, "win free coins now", "")
        frame["caption"] = [
            f"{b} {w}".strip() if yy and signal != "tabular" else b
            for b, w, yy in zip(base, lure, y, strict=True)
        ]
        frame["hashtags"] = [["fyp", "free"] if yy and i % 2 else ["fyp"] for i, yy in enumerate(y)]
    return frame, x, y


def _fit(n: int = 1200, **kw):
    frame, x, y = _problem(n, 1, **kw)
    cut = int(0.7 * n)
    scores = baseline_scores(
        frame.iloc[:cut],
        x[:cut],
        y[:cut],
        frame.iloc[cut:].reset_index(drop=True),
        x[cut:],
        text_columns=[c for c in ("caption", "hashtags") if c in frame.columns],
        categorical=[2],
        random_state=0,
    )
    return scores, y[cut:]


def test_every_baseline_beats_chance_on_a_separable_problem() -> None:
    scores, y_test = _fit()
    assert tuple(scores) == BASELINES
    for name, p in scores.items():
        assert p.shape == y_test.shape and np.all((p >= 0) & (p <= 1)), name
        assert roc_auc_score(y_test, p) > 0.8, name


def test_tfidf_reads_the_text_the_tabular_baselines_cannot() -> None:
    scores, y_test = _fit(signal="text")
    auc = {name: roc_auc_score(y_test, p) for name, p in scores.items()}
    assert auc["tfidf_logreg"] > 0.85
    assert auc["logreg_tabular"] < 0.65 and auc["lgbm_tabular"] < 0.65


def test_no_text_omits_tfidf_and_which_selects() -> None:
    scores, _ = _fit(text=False)
    assert set(scores) == {"logreg_tabular", "lgbm_tabular"}
    frame, x, y = _problem(300, 2)
    only = baseline_scores(
        frame, x, y, frame, x, text_columns=["caption"], categorical=[2], random_state=0,
        which=["lgbm_tabular"],
    )  # fmt: skip
    assert list(only) == ["lgbm_tabular"]
    empty = frame.assign(caption=None)
    scores = baseline_scores(
        empty, x, y, empty, x, text_columns=["caption"], categorical=[2], random_state=0
    )
    assert "tfidf_logreg" not in scores


def test_same_seed_same_scores() -> None:
    a, _ = _fit(n=600)
    b, _ = _fit(n=600)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_training_raises_a_clear_error(label: int) -> None:
    frame, x, _ = _problem(100, 3)
    y = np.full(100, label)
    with pytest.raises(ValueError, match="both classes"):
        baseline_scores(frame, x, y, frame, x, text_columns=[], categorical=[2], random_state=0)


def test_misaligned_or_unknown_inputs_are_refused() -> None:
    frame, x, y = _problem(100, 4)
    with pytest.raises(ValueError, match="do not match"):
        baseline_scores(
            frame, x[:50], y[:50], frame, x, text_columns=[], categorical=[], random_state=0
        )
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_scores(
            frame, x, y, frame, x, text_columns=[], categorical=[], random_state=0,
            which=["magic"],
        )  # fmt: skip
    y_missing = y.astype(float)
    y_missing[0] = np.nan
    with pytest.raises(ValueError, match="0 or 1"):
        baseline_scores(
            frame, x, y_missing, frame, x, text_columns=[], categorical=[], random_state=0
        )


def test_documents_join_columns_and_tag_lists() -> None:
    frame = pd.DataFrame(
        {"caption": ["hello", None, float("nan")], "hashtags": [["a", "b"], "c d", None]}
    )
    assert documents(frame, ["caption", "hashtags", "absent"]) == ["hello \n a b", "c d", ""]


def test_lgbm_leaves_grow_with_the_data() -> None:
    small, large = lgbm_params(200, 0), lgbm_params(100_000, 0)
    assert small["min_data_in_leaf"] < 20 < large["min_data_in_leaf"]
    assert 4 <= small["num_leaves"] < large["num_leaves"] <= 31
