"""The text model (TF-IDF, char n-grams, C by cross-validation), size-aware LightGBM, and
the per-issue choice between stacked, text-only and tabular-only models."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score

from features.transform import hashed_texts
from models.bundle import VARIANTS, TextModel
from training.fit import BoosterParams, fit_booster, fit_text_model, fit_text_model_cv
from training.pipeline import train

COMMON = [f"w{k}" for k in range(30)]
SIGNAL = ["alpha", "beta", "gamma", "delta"]


def _noisy_common_words(n: int, seed: int) -> tuple[list[list[str]], np.ndarray]:
    # every text: 5 to 200 common words whose counts are noise; positives add one rare
    # signal word among them (and a few negatives do too: label noise). Without IDF the
    # signal word weighs little in a long text's l2-normalised term frequencies.
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    rows = []
    for label in y:
        words = rng.choice(COMMON, size=int(rng.integers(5, 200))).tolist()
        if label or rng.random() < 0.05:
            words.insert(int(rng.integers(0, len(words))), str(rng.choice(SIGNAL)))
        rows.append([" ".join(words)])
    return rows, y


def test_tfidf_text_model_beats_the_term_frequency_model_when_common_words_are_noise() -> None:
    rows, y = _noisy_common_words(1200, 0)
    hashed = hashed_texts(rows, 1 << 12, (1, 2))
    tr, te = np.arange(800), np.arange(800, 1200)
    # the model before IDF: SGD on l2-normalised term frequencies
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        old = SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=30, tol=1e-4, random_state=0)
        old.fit(hashed[tr], y[tr])
    old_auc = roc_auc_score(y[te], old.decision_function(hashed[te]))
    groups = np.arange(800).astype(str)
    new, oof = fit_text_model_cv(hashed[tr], y[tr], groups, random_state=0)
    new_auc = roc_auc_score(y[te], new.score(hashed[te]))
    assert new.idf_ is not None and new.C_ is not None
    assert new_auc > old_auc + 0.02, (new_auc, old_auc)
    assert roc_auc_score(y[tr], oof) > 0.7  # honest out-of-fold scores still rank


def test_tfidf_text_model_paths_agree_and_pickle_compactly() -> None:
    rows, y = _noisy_common_words(300, 1)
    hashed = sp.hstack(
        [hashed_texts(rows, 1 << 10, (1, 2)), hashed_texts(rows, 1 << 10, (1, 1))], format="csr"
    )
    model = fit_text_model(hashed, y, C=4.0, blocks=((0, 1 << 10), (1 << 10, 1 << 11)))
    batch = model.score(hashed)
    single = [model.score_ngrams(hashed[i].indices, hashed[i].data) for i in range(40)]
    np.testing.assert_allclose(batch[:40], single, rtol=1e-9)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.score(hashed), batch, rtol=1e-12)
    # the x of TextModel.features is TF-IDF, l2-normalised per block
    x = model.features(hashed[:5]).toarray()
    for block in ((0, 1 << 10), (1 << 10, 1 << 11)):
        np.testing.assert_allclose(np.linalg.norm(x[:, block[0] : block[1]], axis=1), 1.0)
    # a model of the old kind (no IDF) still scores its rows as a plain dot product
    plain = TextModel(np.linspace(-1, 1, 1 << 11), 0.1)
    np.testing.assert_allclose(
        plain.score(hashed[:3]), 1 / (1 + np.exp(-(hashed[:3] @ plain.coef_ + 0.1)))
    )


def test_small_data_lightgbm_grows_real_trees() -> None:
    # 200 rows of a learnable problem: with 50-row leaves there would be at most 3 leaves
    rng = np.random.default_rng(0)
    x = rng.normal(size=(260, 4))
    y = ((x[:, 0] + 0.5 * x[:, 1] ** 2 + 0.3 * rng.normal(size=260)) > 0.5).astype(int)
    groups = np.arange(200).astype(str)
    booster, best, oof = fit_booster(
        x[:200],
        y[:200],
        x[200:],
        y[200:],
        feature_names=["a", "b", "c", "d"],
        categorical=[],
        params=BoosterParams(),
        groups=groups,
    )
    trees = booster.dump_model()["tree_info"]
    leaves = [t["num_leaves"] for t in trees]
    assert best > 1 and len(trees) == best
    assert sum(n > 2 for n in leaves) > 1, leaves
    assert oof is not None and roc_auc_score(y[:200], oof) > 0.8  # k-fold early stopping
    scaled = BoosterParams().for_rows(200)
    assert scaled.min_data_in_leaf < 50 and scaled.num_leaves > 3
    assert BoosterParams().for_rows(100_000) == BoosterParams()


def _flat(folder: Path, *, text_signal: bool, n: int = 600, seed: int = 0) -> Path:
    # a flat dataset whose label depends only on the caption (text_signal) or only on a
    # numeric column, non-linearly; the other side is noise
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    words = ["river", "stone", "cloud", "piano", "lemon", "tiger", "paper", "glass"]
    captions = []
    for label in y:
        w = rng.choice(words, size=6).tolist()
        # the signal words (as long as the others: text statistics cannot see them) mark 70%
        # of the positives and 8% of the negatives
        if text_signal and rng.random() < (0.7 if label else 0.08):
            w[int(rng.integers(0, 6))] = str(rng.choice(["zorbx", "quall", "frind"]))
        captions.append(" ".join(w))
    cols = {f"x{k}": rng.normal(size=n) for k in range(12)}
    if not text_signal:
        # positives sit far out on either side of x0: trees see it, a linear model cannot
        far = rng.choice([-1.0, 1.0], size=n) * (2.0 + np.abs(rng.normal(size=n)))
        cols["x0"] = np.where(y == 1, far, 0.8 * cols["x0"])
    frame = pd.DataFrame({"id": [f"i{k}" for k in range(n)], "caption": captions, **cols})
    frame["label"] = np.where(y == 1, "bad", "ok")
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "items.csv", index=False)
    spec = folder / "spec.toml"
    numeric = ", ".join(f'"x{k}"' for k in range(12))
    spec.write_text(
        'name = "choice"\npath = "items.csv"\nid = "id"\ntext = ["caption"]\n'
        f'numeric = [{numeric}]\n[labels.bad]\ncolumn = "label"\nequals = "bad"\n'
    )
    return spec


@pytest.mark.parametrize(
    ("text_signal", "n", "allowed"),
    [(True, 600, {"text", "linear", "stacked"}), (False, 1200, {"tabular", "stacked"})],
)
def test_each_issue_ships_what_reads_its_signal(
    tmp_path: Path, text_signal: bool, n: int, allowed: set[str]
) -> None:
    # the label is in the caption only (or in a numeric column only): whatever ships (one
    # variant, or a blend of those that cannot be told apart) reads that side
    spec = _flat(tmp_path / str(text_signal), text_signal=text_signal, n=n)
    result = train(spec, track=False, random_state=0, capacity_per_day=50)
    model = result.bundle.issues["bad"]
    shipped = {p.variant for p in model.parts} if model.parts else {model.variant}
    assert shipped <= allowed, (shipped, result.report.overall["bad"])
    assert result.report.overall["bad"]["variant"] == VARIANTS.index(model.variant)
    # scoring honours the variant, on the batch and the single-item paths alike
    frame = result.report.test_frame
    batch = result.bundle.score_frame(frame)["bad"].to_numpy()
    records = frame.head(20).to_dict("records")
    single = [result.bundle.score_one(r)["bad"] for r in records]
    np.testing.assert_allclose(batch[:20], single, rtol=1e-9)
    reasons = result.bundle.explain_one(records[0], "bad", top_k=3)
    assert {r.feature for r in reasons} <= set(model.feature_names)
    if model.variant == "text":
        assert model.booster is None and model.text_model.dense_ is None
        assert [r.feature for r in reasons] == ["text_score"]
    if not text_signal:
        assert "text_score" not in model.feature_names or "stacked" in shipped
    assert result.report.overall["bad"]["pr_auc"] > 0.6
    again = pickle.loads(pickle.dumps(result.bundle))
    np.testing.assert_allclose(again.score_frame(frame)["bad"].to_numpy(), batch, rtol=1e-12)


def test_issue_models_pickled_before_variants_load_as_stacked(tmp_path: Path) -> None:
    spec = _flat(tmp_path / "old", text_signal=False, n=300)
    result = train(spec, track=False, random_state=0, capacity_per_day=50)
    model = result.bundle.issues["bad"]
    state = model.__getstate__()
    del state["variant"], state["group_models"]  # what an earlier version pickled
    old = type(model).__new__(type(model))
    old.__setstate__(state)
    assert old.variant == "stacked" and old.group_models == {}


def test_linear_variant_scores_text_and_features_on_every_path(tmp_path: Path) -> None:
    # a label that is linear in one numeric column and in the caption's words: the linear
    # variant is among the candidates; whichever ships, a bundle forced to it scores alike
    spec = _flat(tmp_path / "linear", text_signal=True, n=400)
    result = train(spec, track=False, random_state=0, capacity_per_day=50)
    bundle = result.bundle
    model = bundle.issues["bad"]
    from training.fit import fit_text_model

    frame = result.report.test_frame
    x = bundle.transform.transform(frame)
    hashed = bundle.transform.text_hashed(frame)
    y = (frame["label_bad"].to_numpy(float) > 0).astype(int)
    blocks = tuple(b for g in bundle.transform.hashed_groups for b in g.blocks)
    linear = fit_text_model(
        hashed,
        y,
        C=1.0,
        blocks=blocks,
        dense_x=x,
        categorical=bundle.transform.categorical_indices_,
    )
    assert linear.dense_ is not None
    model.booster, model.variant, model.text_model = None, "linear", linear
    model.feature_names, model.group_models, model.stacked = ["linear_score"], {}, ()
    model.parts, model.blend_weights = (), ()  # whatever shipped, possibly a blend
    batch = bundle.score_frame(frame)["bad"].to_numpy()
    records = frame.head(15).to_dict("records")
    single = [bundle.score_one(r)["bad"] for r in records]
    np.testing.assert_allclose(batch[:15], single, rtol=1e-9)
    np.testing.assert_allclose(
        model.calibrator.transform(linear.score(hashed, x)), batch, rtol=1e-12
    )
    assert [r.feature for r in bundle.explain_one(records[0], "bad")] == ["linear_score"]
    again = pickle.loads(pickle.dumps(bundle))
    np.testing.assert_allclose(again.score_frame(frame)["bad"].to_numpy(), batch, rtol=1e-12)


def test_the_shipped_variant_learns_from_the_validation_rows_too() -> None:
    # the training window never shows the signal word "omega"; the validation window does:
    # the refitted text model (train + validation, cross-fitted) learns it, the train-only
    # one cannot, and the validation scores handed to calibration are out of fold
    from training.pipeline import _refit_on_seen, _Variant

    rng = np.random.default_rng(5)
    n = 900
    y = (rng.random(n) < 0.3).astype(int)
    tr, va, te = np.arange(400), np.arange(400, 700), np.arange(700, n)
    rows = []
    for k, label in enumerate(y):
        words = rng.choice(COMMON, size=12).tolist()
        if label and rng.random() < 0.8:
            words[0] = "alpha" if k < 400 else "omega"
        rows.append([" ".join(words)])
    hashed = hashed_texts(rows, 1 << 11, (1, 1))
    items = np.array([f"i{k}" for k in range(n)], dtype=object)
    model, _ = fit_text_model_cv(hashed[tr], y[tr], items[tr], random_state=0)
    blocks = ((0, 1 << 11),)
    cols = [model.score(hashed[idx]).reshape(-1, 1) for idx in (va, te, va)]
    chosen = _Variant("text", None, 0, ["text_score"], model, {}, *cols, text_blocks=blocks)
    x_all = np.zeros((n, 1))
    kw = dict(text_all=hashed, x_all=x_all, item_ids=items, categorical=(), random_state=0)
    got = _refit_on_seen(
        chosen, params=BoosterParams(), rows=(tr, va, te, va), y_tr=y[tr], y_va=y[va], **kw
    )
    assert got is not None
    refit, oof_va = got
    assert refit.variant == "text" and len(oof_va) == len(va)
    assert refit.text_model.C_ == model.C_  # the C chosen on the training rows is kept
    before = roc_auc_score(y[te], chosen.x_te[:, 0])
    after = roc_auc_score(y[te], refit.x_te[:, 0])
    assert after > before + 0.1, (before, after)
    # out of fold: not the refitted model's own (in-sample) scores of those rows
    assert not np.allclose(oof_va, refit.x_va[:, 0])
    assert roc_auc_score(y[va], oof_va) > 0.6
    # a boosted variant with too many rows for cross-validated rounds keeps its fit
    boosted = _Variant("tabular", object(), 10, ["x"], None, {}, *cols, x_tr=cols[0])
    small = BoosterParams(cv_below_rows=100)
    assert (
        _refit_on_seen(boosted, params=small, rows=(tr, va, te, va), y_tr=y[tr], y_va=y[va], **kw)
        is None
    )
