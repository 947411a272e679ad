"""Real bundles, reports and MLflow stores for the tracking, registry and pyfunc tests.

Bundles are built from real parts (a fitted FeatureTransform, LightGBM boosters trained on a
small synthetic snapshot frame, calibrators), and reports with training.evaluate's own metric
functions. The registry history (three training jobs in one SQLite store) is built once per
session because MLflow's SQLite migrations take seconds per new store.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from common.settings import Settings
from features.transform import FeatureTransform
from models.bundle import Calibrator, IssueModel, ScoringBundle
from training.evaluate import (
    EvaluationReport,
    Holdout,
    calibration_bins,
    holdout_metrics,
    label_column,
    pr_auc,
    pr_curve,
    segment_metrics,
)

ISSUES = {"low_quality": "post", "wrongful_enforcement": "moderation"}
T0 = pd.Timestamp("2026-03-01", tz="UTC")


def snapshot_frame(n: int, *, random_state: int) -> pd.DataFrame:
    """Snapshot-like rows (post and moderation anchored) with learnable label_<issue> columns."""
    rng = np.random.default_rng(random_state)
    anchor = np.where(rng.random(n) < 0.3, "moderation", "post")
    n_view = rng.poisson(200, n).astype(float)
    report_rate = rng.beta(1, 30, n)
    n_report = rng.binomial(n_view.astype(int), report_rate).astype(float)
    duration = rng.gamma(2.0, 15.0, n)
    region = rng.choice(["us", "br", "in", "de"], n)
    fmt = rng.choice(["video", "photo", "live"], n)
    policy_score = rng.normal(0, 1, n)
    captions = np.array(["buy now cheap", "my cat dancing", "follow for follow", "tutorial part 2"])
    caption = captions[rng.integers(0, len(captions), n)]
    z_lq = 60 * report_rate + 1.2 * (caption == "buy now cheap") - 0.03 * duration - 1.5
    z_we = 2.5 * policy_score - 1.0
    y_lq = (rng.random(n) < 1 / (1 + np.exp(-z_lq))).astype(float)
    y_we = (rng.random(n) < 1 / (1 + np.exp(-z_we))).astype(float)
    as_of = T0 + pd.to_timedelta(np.sort(rng.uniform(0, 30 * 24, n)), unit="h")
    return pd.DataFrame(
        {
            "item_id": [f"i{random_state}_{i}" for i in range(n)],
            "as_of": as_of,
            "anchor": anchor,
            "n_view": n_view,
            "n_report": n_report,
            "duration_s": duration,
            "policy_score": policy_score,
            "region": region,
            "format": fmt,
            "caption": caption,
            label_column("low_quality"): np.where(anchor == "post", y_lq, np.nan),
            label_column("wrongful_enforcement"): np.where(anchor == "moderation", y_we, np.nan),
        }
    )


def make_bundle(
    train: pd.DataFrame,
    *,
    issues: dict[str, str] | None = None,
    quality: str = "good",
    random_state: int = 0,
) -> ScoringBundle:
    """A real ScoringBundle trained on `train`.

    quality "good": true labels; "medium": 35% of labels flipped; "bad": labels permuted
    (no signal) — gives the gate candidates of known relative quality.
    """
    issues = issues or ISSUES
    rng = np.random.default_rng(random_state)
    transform = FeatureTransform(
        numeric=("duration_s", "policy_score"),
        counts=("n_view", "n_report"),
        categorical=("region", "format", "anchor"),
        text=("caption",),
        ratios=(("n_report", "n_view"),),
        hash_dim=2**10,
        min_category_count=1,
    ).fit(train)
    models: dict[str, IssueModel] = {}
    for issue, anchor in issues.items():
        rows = train[train["anchor"] == anchor]
        y = rows[label_column(issue)].to_numpy(dtype=float)
        if quality == "medium":
            flip = rng.random(len(y)) < 0.35
            y = np.where(flip, 1 - y, y)
        elif quality == "bad":
            y = rng.permutation(y)
        x = transform.transform(rows)
        booster = lgb.train(
            {
                "objective": "binary",
                "learning_rate": 0.1,
                "num_leaves": 7,
                "min_data_in_leaf": 10,
                "seed": random_state,
                "deterministic": True,
                "num_threads": 1,
                "verbosity": -1,
            },
            lgb.Dataset(x, label=y, categorical_feature=transform.categorical_indices_),
            num_boost_round=40,
        )
        models[issue] = IssueModel(
            name=issue,
            anchor=anchor,
            booster=booster,
            calibrator=Calibrator("identity"),
            threshold=0.5,
            feature_names=list(transform.feature_names_),
            best_iteration=40,
        )
    example = train.drop(columns=[c for c in train.columns if c.startswith("label_")]).iloc[0]
    return ScoringBundle(
        transform=transform,
        issues=models,
        metadata={"quality": quality, "random_state": random_state},
        example_record=example.to_dict(),
    )


def make_report(bundle: ScoringBundle, test: pd.DataFrame) -> EvaluationReport:
    """An EvaluationReport of `bundle` on `test`, made with training.evaluate's functions."""
    overall = holdout_metrics(bundle, test, k=20)
    probs = bundle.score_frame(test)
    segments, curves, calibration, importances = [], {}, {}, {}
    for issue, model in bundle.issues.items():
        y = test[label_column(issue)].to_numpy(dtype=float)
        p = probs[issue].to_numpy(dtype=float)
        # a fixed "baseline": the report-rate feature alone, as the scikit-learn model would be
        overall[issue]["baseline_pr_auc"] = pr_auc(y, test["n_report"].to_numpy(dtype=float))
        segments.append(
            segment_metrics(
                issue, test, y, p, threshold=model.threshold, dimensions=("region", "format")
            )
        )
        curves[issue] = pr_curve(y, p)
        calibration[issue] = calibration_bins(y, p)
        importances[issue] = pd.DataFrame(
            {
                "feature": model.feature_names,
                "gain": model.booster.feature_importance("gain"),
                "split": model.booster.feature_importance("split"),
            }
        ).sort_values("gain", ascending=False, ignore_index=True)
    holdout = Holdout(
        kind="time",
        start=test["as_of"].min(),
        end=test["as_of"].max(),
        random_state=0,
        n_rows=len(test),
        item_ids=tuple(test["item_id"]),
    )
    return EvaluationReport(
        overall=overall,
        segments=pd.concat(segments, ignore_index=True),
        pr_curves=curves,
        calibration=calibration,
        importances=importances,
        holdout=holdout,
        test_frame=test,
        capacity_per_day=20,
    )


@dataclass(frozen=True)
class Data:
    train: pd.DataFrame
    test: pd.DataFrame


@functools.cache
def data() -> Data:
    frame = snapshot_frame(1600, random_state=7)
    return Data(
        train=frame.iloc[:1100].reset_index(drop=True),
        test=frame.iloc[1100:].reset_index(drop=True),
    )


@functools.cache
def bundles() -> dict[str, ScoringBundle]:
    d = data()
    return {q: make_bundle(d.train, quality=q, random_state=1) for q in ("medium", "bad", "good")}


def settings_for(root: Path, **overrides: object) -> Settings:
    """Settings on an embedded store under `root` (env-independent: explicit values win)."""
    values: dict[str, object] = {
        "data_dir": root,
        "mlflow_tracking_uri": None,
        "mlflow_registry_uri": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class History:
    """Three jobs in one store: medium (first: champion), bad (rejected), good (promoted)."""

    settings: Settings
    results: dict[str, object]
    seconds: dict[str, float]


_history: dict[str, History] = {}


def registry_history(tmp_path_factory: pytest.TempPathFactory) -> History:
    """Built once per session and shared by the tracking, registry and pyfunc tests."""
    if "h" in _history:
        return _history["h"]
    import time

    from training.tracking import dataset_fingerprint, log_training

    # a data_dir that does not exist yet: configure_mlflow must create it
    settings = settings_for(tmp_path_factory.mktemp("mlflow-store") / "state")
    d = data()
    fingerprint = dataset_fingerprint({"snapshots": d.train})
    results, seconds = {}, {}
    for quality, bundle in bundles().items():
        start = time.perf_counter()
        results[quality] = log_training(
            bundle,
            make_report(bundle, d.test),
            params={"quality": quality, "seed": 1, "data": "synthetic", "booster": {"rounds": 40}},
            dataset_fingerprint=fingerprint,
            settings=settings,
        )
        seconds[quality] = time.perf_counter() - start
    _history["h"] = History(settings=settings, results=results, seconds=seconds)
    return _history["h"]
