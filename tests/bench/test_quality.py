"""bench/quality.py's own arithmetic: weighted (bootstrap) metrics equal sklearn's on the
resampled rows, item resampling keeps an item's rows together, subsample specs load."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module
    spec.loader.exec_module(module)
    return module


def test_weighted_metrics_equal_sklearn_on_resampled_rows(quality) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    p = np.round(rng.random(400) * 0.5 + 0.4 * y, 2)  # rounded: many ties
    idx = rng.integers(0, 400, 400)
    w = np.vstack([np.ones(400), np.bincount(idx, minlength=400)]).astype(float)
    m = quality.weighted_metrics(y, p, w, 0.6)
    for row, (yy, pp) in enumerate([(y, p), (y[idx], p[idx])]):
        assert m["pr_auc"][row] == pytest.approx(average_precision_score(yy, pp))
        assert m["roc_auc"][row] == pytest.approx(roc_auc_score(yy, pp))
        assert m["f1"][row] == pytest.approx(f1_score(yy, pp >= 0.6))
        assert m["flagged"][row] == pytest.approx(np.mean(pp >= 0.6))
    one_class = quality.weighted_metrics(np.zeros(5, int), np.arange(5.0), np.ones((1, 5)), 2)
    assert np.isnan(one_class["pr_auc"][0]) and np.isnan(one_class["roc_auc"][0])


def test_item_bootstrap_moves_an_items_rows_together(quality) -> None:
    items = np.array(["a", "a", "b", "c", "c", "c"])
    w = quality.item_weights(items, 50, seed=1)
    assert w.shape == (51, 6) and (w[0] == 1).all()
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all() and (w[:, 4] == w[:, 5]).all()
    # each resample draws as many items as there are (3), so weights per item sum to 3
    assert (w[:, [0, 2, 3]].sum(axis=1) == 3).all()
    point, lo, hi = quality.summarize(np.r_[0.5, np.linspace(0, 1, 101)])
    assert point == 0.5 and lo == pytest.approx(0.025) and hi == pytest.approx(0.975)


def test_subsample_spec_loads_with_its_own_name(quality, tmp_path: Path) -> None:
    from features.flat import load_flat, load_spec

    spec_path = quality.subsample_spec(300, 0, tmp_path)
    spec = load_spec(spec_path)
    assert spec.name == "tiktok_claims_300"
    assert load_flat(spec).n_source_rows == 300  # (the loader may then drop blank rows)


def test_volume_threshold_flags_at_most_the_share(quality) -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert np.mean(p >= quality.volume_threshold(p, 0.4)) == 0.4
    assert quality.volume_threshold(p, 0.0) == np.inf
    assert np.mean(p >= quality.volume_threshold(p, 1.0)) == 1.0
    tied = np.array([0.9, 0.5, 0.5, 0.5, 0.5])
    assert np.mean(tied >= quality.volume_threshold(tied, 0.6)) == 0.2  # ties left out


def _tiny_spec(folder: Path, name: str = "tiny_spam", rows: int = 400) -> Path:
    """A small flat dataset with a learnable label: spam texts and numbers differ from ham."""
    import pandas as pd

    rng = np.random.default_rng(3)
    spam = rng.random(rows) < 0.25
    words = np.array(["hello", "lunch", "meeting", "later", "thanks", "see", "you", "home"])
    bait = np.array(["win", "prize", "free", "claim", "cash", "now"])
    text = [" ".join(rng.choice(bait if s and rng.random() < 0.8 else words, 6)) for s in spam]
    links = rng.poisson(np.where(spam, 2.0, 0.3))
    frame = pd.DataFrame({"msg": text, "links": links, "kind": np.where(spam, "spam", "ham")})
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "tiny.csv", index=False)
    spec = folder / "tiny.toml"
    spec.write_text(
        f'name = "{name}"\npath = "tiny.csv"\ntext = ["msg"]\nnumeric = ["links"]\n'
        '[labels.spam]\ncolumn = "kind"\nequals = "spam"\n',
        encoding="utf-8",
    )
    return spec


def test_a_spec_joins_the_bench_under_its_name(quality, tmp_path: Path, capsys) -> None:
    import json

    spec = _tiny_spec(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["--no-tiktok", "--no-sim", "--spec", str(spec), "--out", str(out), "--boot", "10"]
    assert quality.main(argv) == 0
    result = json.loads((out / "quality.json").read_text())
    assert not result["errors"]
    rows = [r for r in result["rows"] if r["dataset"] == "tiny_spam"]
    assert {r["issue"] for r in rows} == {"spam"}
    assert not any(r["dataset"].startswith(("sim-", "tiktok")) for r in result["rows"])
    assert "tiny_spam" in capsys.readouterr().out


def test_bad_given_datasets_are_one_error_line(quality, tmp_path: Path, capsys) -> None:
    out = ["--out", str(tmp_path / "out"), "--no-tiktok", "--no-sim"]
    assert quality.main([*out, "--spec", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --spec") and "nope.toml' does not exist" in err
    (tmp_path / "bad.toml").write_text('name = "x"\n', encoding="utf-8")
    assert quality.main([*out, "--spec", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --spec") and "lacks required keys" in err
    spec = _tiny_spec(tmp_path / "a")
    assert quality.main([*out, "--spec", str(spec), "--spec", str(spec)]) == 2
    assert "given twice" in capsys.readouterr().err
    taken = _tiny_spec(tmp_path / "b", name="tiktok_claims_500")
    assert quality.main([*out, "--spec", str(taken)]) == 2
    assert "taken by a built-in dataset" in capsys.readouterr().err
    assert quality.main([*out, "--data", str(tmp_path / "a")]) == 2
    assert "no items table" in capsys.readouterr().err
    assert quality.main([*out]) == 2
    assert "no dataset selected" in capsys.readouterr().err
