"""Benchmark: how much of the latent-state oracle a harmful_interactions model can reach.

    uv run python bench/harmful_ceiling.py --worlds default,1,2 --items 20000

Issue #10 asks for the simulator's `harmful_interactions` at >= 0.8 of the latent-state
oracle (`oracle_state_pr_auc`: the realized state of each item, scored against the noisy
labels). This bench separates what the snapshot features can carry from what the model
makes of them. On each world's labelled snapshot rows, with 5 folds by item (out-of-fold
scores, PR-AUC against the labels, as a share of the oracle's PR-AUC on the same rows):

- `tabular`: LightGBM on the snapshot's numeric and category columns;
- `+doc`: the same plus a TF-IDF + logistic-regression score of `comment_text` as one
  document (what the pipeline's comment text model does today);
- `+comments`: plus per-comment scores aggregated per row (max, mean, sum, count above 0.5)
  of a logistic regression fitted on single comments, each labelled with its item's label
  (distinct item x comment pairs), so one abusive comment among many is not diluted;
- `ceiling`: `+comments` fitted on the items' latent state instead of their labels: with
  noise-free training labels, what the same features can reach. A target above it cannot be
  met by better modelling of these snapshots, only by more information (later horizons,
  other sources).

Everything is fitted inside the folds (the comment models too), so no score has seen its row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_ROOT))

import lightgbm as lgb  # noqa: E402
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402
from sklearn.model_selection import GroupKFold  # noqa: E402

from features.schema import COMMENT_TEXT_SEPARATOR  # noqa: E402
from simulator.config import SimConfig  # noqa: E402
from simulator.core import simulate, write_simulation  # noqa: E402
from simulator.worlds import draw_world  # noqa: E402
from training.data import load_training_data  # noqa: E402
from training.evaluate import label_column  # noqa: E402

ISSUE = "harmful_interactions"
CATEGORICAL = ("format", "region", "language", "category")
FOLDS = 5
LGB_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "lambda_l2": 5.0,
    "feature_fraction": 0.7,
    "num_threads": 1,
    "deterministic": True,
    "seed": 0,
    "verbosity": -1,
}
ROUNDS = 300


def _world(cache: Path, world: str, items: int) -> Path:
    folder = cache / f"sim-{world}-{items}"
    if not (folder / "simulation.json").is_file():
        cfg = (
            SimConfig(n_items=items, seed=0)
            if world == "default"
            else draw_world(int(world)).config(n_items=items, seed=0)
        )
        write_simulation(simulate(cfg), folder, overwrite=True)
    return folder


def _rows(path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Labelled snapshot rows of the issue, their labels and their items' latent state."""
    td = load_training_data(path)
    frame = td.frame
    y = frame[label_column(ISSUE)]
    rows = frame[y.notna()].reset_index(drop=True)
    truth = td.truth.set_index(td.truth["item_id"].astype("object"))[ISSUE]
    state = rows["item_id"].astype("object").map(truth).astype(float).fillna(0).to_numpy()
    return rows, y[y.notna()].astype(int).to_numpy(), state.astype(int)


def _comment_features(
    rows: pd.DataFrame, target: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (doc score, per-comment aggregates) of every row, fitted on `target`."""
    hv = HashingVectorizer(n_features=2**18, ngram_range=(1, 2), alternate_sign=False, norm=None)
    docs = rows["comment_text"].fillna("").tolist()
    parts = [d.split(COMMENT_TEXT_SEPARATOR) if d else [] for d in docs]
    owner = np.repeat(np.arange(len(rows)), [len(p) for p in parts])
    texts = np.array([t for p in parts for t in p], dtype=object)
    h_doc, h_com = hv.transform(docs), hv.transform(texts.tolist())
    items = rows["item_id"].astype(str).to_numpy()
    doc = np.zeros(len(rows))
    agg = np.zeros((len(rows), 4))
    for tr, te in folds:
        tf = TfidfTransformer().fit(h_doc[tr])
        lr = LogisticRegression(C=4.0, max_iter=300).fit(tf.transform(h_doc[tr]), target[tr])
        doc[te] = lr.predict_proba(tf.transform(h_doc[te]))[:, 1]
        in_tr = np.zeros(len(rows), bool)
        in_tr[tr] = True
        mine = in_tr[owner]
        # one training example per distinct (item, comment): an item's snapshots repeat them
        pairs = pd.DataFrame(
            {"item": items[owner[mine]], "text": texts[mine], "y": target[owner[mine]]}
        ).drop_duplicates(["item", "text"])
        if pairs["y"].nunique() < 2:
            continue
        h_pairs = hv.transform(pairs["text"].tolist())
        tc = TfidfTransformer(sublinear_tf=True).fit(h_pairs)
        lc = LogisticRegression(C=1.0, max_iter=300).fit(tc.transform(h_pairs), pairs["y"])
        other = ~mine
        s = lc.predict_proba(tc.transform(h_com[other]))[:, 1]
        scored = pd.DataFrame({"row": owner[other], "p": s, "high": (s > 0.5).astype(float)})
        stats = scored.groupby("row").agg(
            max=("p", "max"), mean=("p", "mean"), sum=("p", "sum"), high=("high", "sum")
        )
        agg[stats.index.to_numpy()] = stats.to_numpy()
    return doc, agg


def _oof(x: pd.DataFrame, target: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]):
    out = np.zeros(len(x))
    for tr, te in folds:
        booster = lgb.train(LGB_PARAMS, lgb.Dataset(x.iloc[tr], target[tr]), ROUNDS)
        out[te] = booster.predict(x.iloc[te])
    return out


def _named(agg: np.ndarray) -> dict[str, np.ndarray]:
    return {f"comment_{k}": agg[:, j] for j, k in enumerate(("max", "mean", "sum", "high"))}


def evaluate(path: Path) -> dict[str, float]:
    rows, y, state = _rows(path)
    numeric = [
        c for c in rows.columns if rows[c].dtype.kind in "fiub" and not c.startswith("label_")
    ]
    x = rows[numeric].astype(float)
    for c in CATEGORICAL:
        if c in rows:
            x[c] = rows[c].astype("category").cat.codes
    items = rows["item_id"].astype(str).to_numpy()
    folds = list(GroupKFold(FOLDS).split(x, y, items))
    oracle = average_precision_score(y, state)
    out = {"rows": float(len(y)), "positives": float(y.sum()), "oracle": oracle}
    doc, agg = _comment_features(rows, y, folds)
    x_doc = x.assign(doc_score=doc)
    x_all = x_doc.assign(**_named(agg))
    out["tabular"] = average_precision_score(y, _oof(x, y, folds))
    out["+doc"] = average_precision_score(y, _oof(x_doc, y, folds))
    out["+comments"] = average_precision_score(y, _oof(x_all, y, folds))
    s_doc, s_agg = _comment_features(rows, state, folds)
    x_state = x.assign(doc_score=s_doc, **_named(s_agg))
    out["ceiling"] = average_precision_score(y, _oof(x_state, state, folds))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="default,1,2", help="'default' and/or world seeds")
    parser.add_argument("--items", type=int, default=20_000, help="items of the simulated world")
    parser.add_argument(
        "--out",
        type=Path,
        default=_ROOT / ".surfacer" / "bench" / "ceiling",
        help="where the simulated world is written",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scorers = ("tabular", "+doc", "+comments", "ceiling")
    print(f"{ISSUE}: out-of-fold PR-AUC / latent-state oracle PR-AUC, {FOLDS} folds by item")
    print(f"{'world':<10}{'rows':>8}{'pos':>7}{'oracle':>8}" + "".join(f"{s:>11}" for s in scorers))
    for world in [w for w in args.worlds.split(",") if w]:
        t0 = time.perf_counter()
        r = evaluate(_world(args.out, world, args.items))
        print(
            f"{world:<10}{int(r['rows']):>8}{int(r['positives']):>7}{r['oracle']:>8.3f}"
            + "".join(f"{r[s] / r['oracle']:>11.3f}" for s in scorers)
            + f"   ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
