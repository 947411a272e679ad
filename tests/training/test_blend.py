"""The choice between model variants under selection noise: candidates that cannot be told
apart are blended (standardised log-odds averaged), and a blended issue scores, explains
and pickles alike on the batch and single-item paths."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

from tests.training.test_model_choice import _flat
from training.evaluate import pr_auc
from training.pipeline import _choose_variant, _Variant, blend_weights, train


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _candidate(name: str, scores: np.ndarray, n_tr: int, n_va: int) -> _Variant:
    # a booster-free variant whose one input column is its probability: training rows'
    # out-of-fold scores, then validation, test (= validation here) rows
    oof, va, te = scores[:n_tr], scores[n_tr : n_tr + n_va], scores[n_tr + n_va :]
    col = va.reshape(-1, 1)
    v = _Variant(name, None, 0, [f"{name}_score"], None, {}, col, te.reshape(-1, 1), col)
    v.oof = oof
    return v


def _two_views(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # the label depends on two latent signals; each candidate sees one of them (plus noise),
    # on very different log-odds scales: a plain average would follow the wider one
    rng = np.random.default_rng(seed)
    s1, s2 = rng.normal(size=n), rng.normal(size=n)
    y = (s1 + s2 + 0.5 * rng.normal(size=n) > 1.5).astype(int)
    a = _sigmoid(4.0 * (s1 + 0.3 * rng.normal(size=n)))
    b = _sigmoid(0.25 * (s2 + 0.3 * rng.normal(size=n)))
    return y, a, b


def test_a_blend_of_candidates_within_noise_is_not_worse_than_either_out_of_fold() -> None:
    n_tr, n_va = 1500, 750
    for seed in range(3):
        y, a, b = _two_views(seed)
        cands = {
            "tabular": _candidate("tabular", a, n_tr, n_va),
            "text": _candidate("text", b, n_tr, n_va),
        }
        items = np.array([f"i{k}" for k in range(len(y))], dtype=object)
        chosen = _choose_variant(
            cands,
            y_tr=y[:n_tr],
            y_va=y[n_tr : n_tr + n_va],
            groups_tr=items[:n_tr],
            groups_va=items[n_tr : n_tr + n_va],
            random_state=seed,
        )
        assert chosen.variant == "blend" and [p.variant for p in chosen.parts] == [
            "tabular",
            "text",
        ]
        assert chosen.oof is not None
        blend_oof = pr_auc(y[:n_tr], chosen.oof)
        parts_oof = [pr_auc(y[:n_tr], p.oof) for p in chosen.parts]
        assert blend_oof >= max(parts_oof), (seed, blend_oof, parts_oof)
        te = slice(n_tr + n_va, None)
        blend_te = pr_auc(y[te], chosen.raw(chosen.x_te))
        assert blend_te >= max(pr_auc(y[te], a[te]), pr_auc(y[te], b[te])) - 0.01
        # the weights undo the scales: a plain average of log-odds follows `a` alone
        plain = pr_auc(y[te], np.log(a[te] / (1 - a[te])) + np.log(b[te] / (1 - b[te])))
        assert blend_te > plain, (blend_te, plain)


def test_a_clearly_worse_candidate_stays_out_and_a_clear_winner_ships_alone() -> None:
    n_tr, n_va = 1500, 750
    y, a, b = _two_views(7)
    rng = np.random.default_rng(1)
    noise = rng.random(len(y))
    items = np.array([f"i{k}" for k in range(len(y))], dtype=object)
    kw = dict(
        y_tr=y[:n_tr],
        y_va=y[n_tr : n_tr + n_va],
        groups_tr=items[:n_tr],
        groups_va=items[n_tr : n_tr + n_va],
        random_state=0,
    )
    cands = {
        "tabular": _candidate("tabular", a, n_tr, n_va),
        "text": _candidate("text", b, n_tr, n_va),
        "linear": _candidate("linear", noise, n_tr, n_va),
    }
    chosen = _choose_variant(cands, **kw)
    assert chosen.variant == "blend"
    assert [p.variant for p in chosen.parts] == ["tabular", "text"]
    assert "blend" in cands and math.isfinite(cands["blend"].selection_score)
    # one strong candidate against pure noise: no blend, the strong one ships
    both = _sigmoid(3 * (np.log(a / (1 - a)) / 4 + np.log(b / (1 - b)) * 4))
    alone = {
        "tabular": _candidate("tabular", both, n_tr, n_va),
        "linear": _candidate("linear", noise, n_tr, n_va),
    }
    assert _choose_variant(alone, **kw).variant == "tabular"


def test_blend_weights_standardise_each_part() -> None:
    rng = np.random.default_rng(0)
    cols = np.column_stack([_sigmoid(3 * rng.normal(size=500)), _sigmoid(rng.normal(size=500))])
    w, offset = blend_weights(cols)
    z = np.log(cols / (1 - cols))
    parts = z * w  # each part's push on the blend's log-odds
    np.testing.assert_allclose(parts.std(axis=0), [0.5, 0.5], rtol=1e-9)
    np.testing.assert_allclose((z @ w + offset).mean(), 0.0, atol=1e-9)


def test_a_blended_issue_scores_and_explains_alike_online_and_in_batch(tmp_path: Path) -> None:
    # a caption-only signal at 600 rows: the text model and the stack cannot be told apart
    # on the validation rows, so the issue ships their blend
    spec = _flat(tmp_path / "blend", text_signal=True, n=600)
    result = train(spec, track=False, random_state=0, capacity_per_day=50)
    bundle = result.bundle
    model = bundle.issues["bad"]
    assert model.variant == "blend" and len(model.parts) >= 2, result.report.overall["bad"]
    assert len(model.blend_weights) == len(model.parts)
    frame = result.report.test_frame
    records = frame.head(30).to_dict("records")
    batch = bundle.score_frame(frame)["bad"].to_numpy()
    single = [bundle.score_one(r)["bad"] for r in records]
    np.testing.assert_allclose(batch[:30], single, rtol=1e-9)
    # the report's test scores are the bundle's scores of the same rows
    design = bundle.design_records(records)
    rows = bundle.model_rows(model, design.x, design.text)
    assert rows.shape[1] == sum(len(p.feature_names) for p in model.parts)
    contrib = model.contributions_rows(rows)
    for k, record in enumerate(records):
        row = bundle._model_row_one(model, bundle.transform.transform_one(record), record, {})
        np.testing.assert_allclose(row, rows[k], rtol=1e-12, equal_nan=True)
        raw = model.predict_one(row)
        # the reason codes add up to the blend's log-odds (bias last)
        one = model.contributions_one(row)
        np.testing.assert_allclose(one.sum(), math.log(raw / (1 - raw)), rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(one, contrib[k], rtol=1e-9, atol=1e-12)
    reasons = bundle.explain_one(records[0], "bad", top_k=len(model.feature_names))
    assert {r.feature for r in reasons} == set(model.feature_names)
    got = bundle.explain_design(records[:5], design.take(range(5)), "bad", top_k=4)
    want = [[r.to_dict() for r in bundle.explain_one(rec, "bad", top_k=4)] for rec in records[:5]]
    assert [[r["feature"] for r in g] for g in got] == [[r["feature"] for r in w] for w in want]
    again = pickle.loads(pickle.dumps(bundle))
    np.testing.assert_allclose(again.score_frame(frame)["bad"].to_numpy(), batch, rtol=1e-12)
    assert again.score_one(records[0]) == bundle.score_one(records[0])
