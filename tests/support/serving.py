"""A tiny real ScoringBundle in a real MLflow store, and a real `surfacer serve` to test against.

The bundle is built from the real components (FeatureTransform, LightGBM boosters,
Calibrator) on a small synthetic snapshot frame, logged with `models.pyfunc.log_bundle`
into a SQLite MLflow store in a temporary folder, and given the `champion` alias.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from fastapi import FastAPI
from mlflow.tracking import MlflowClient

from common.settings import Settings
from features.transform import FeatureTransform
from models.bundle import Calibrator, IssueModel, ScoringBundle
from models.pyfunc import log_bundle

MODEL_NAME = "surfacer-test"
SCORE_KEY = "test-score-key"
ADMIN_KEY = "test-admin-key"
REVIEW_KEY = "test-review-key"
INGEST_KEY = "test-ingest-key"
API_KEYS = {
    SCORE_KEY: ["score"],
    ADMIN_KEY: ["admin", "score"],
    REVIEW_KEY: ["review"],
    INGEST_KEY: ["ingest", "score"],
}

CATEGORIES = ("comedy", "news", "music", "sports")
WORDS = ("amazing", "free", "giveaway", "click", "link", "dance", "cat", "recipe", "idiot", "trash")


def snapshot_frame(n: int, random_state: int = 0) -> pd.DataFrame:
    """Synthetic snapshot rows with the columns of features.schema that the bundle uses."""
    rng = np.random.default_rng(random_state)
    views = rng.lognormal(6, 1.5, n).round()
    reports = rng.binomial(views.astype(int), rng.uniform(0, 0.01, n)).astype(float)
    comments = rng.binomial(views.astype(int), 0.02).astype(float)
    toxic = rng.binomial(comments.astype(int), rng.uniform(0, 0.3, n)).astype(float)
    moderation = rng.random(n) < 0.25
    captions = [" ".join(rng.choice(WORDS, size=4)) for _ in range(n)]
    return pd.DataFrame(
        {
            "item_id": [f"it_{random_state}_{i:05d}" for i in range(n)],
            "as_of": pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(n), "min"),
            "anchor": np.where(moderation, "moderation", "post"),
            "horizon_h": np.where(moderation, np.nan, 1.0),
            "format": rng.choice(["video", "photo", "live"], n),
            "region": rng.choice(["US", "BR", "IN"], n),
            "language": rng.choice(["en", "pt", "hi"], n),
            "category": rng.choice(CATEGORIES, n),
            "caption": captions,
            "hashtags": rng.choice(["fyp", "fyp viral", "news", ""], n),
            "duration_s": rng.uniform(5, 120, n),
            "age_h": rng.uniform(0.5, 24, n),
            "n_view": views,
            "n_like": rng.binomial(views.astype(int), 0.05).astype(float),
            "n_share": rng.binomial(views.astype(int), 0.01).astype(float),
            "n_comment": comments,
            "n_report": reports,
            "n_not_interested": rng.binomial(views.astype(int), 0.02).astype(float),
            "n_viewers": (views * 0.9).round(),
            "n_comment_toxic": toxic,
            "mean_watch_frac": rng.uniform(0, 1, n),
            "creator_followers": rng.lognormal(7, 2, n).round(),
            "creator_verified": rng.random(n) < 0.2,
            "action": np.where(moderation, "remove", None),
            "action_source": np.where(moderation, rng.choice(["auto", "human"], n), None),
            "action_policy": np.where(moderation, rng.choice(["spam", "hate"], n), None),
            "mod_n_actions": np.where(moderation, 1.0, 0.0),
        }
    )


def _labels(frame: pd.DataFrame, rng: np.random.Generator) -> dict[str, np.ndarray]:
    report_rate = frame["n_report"] / (frame["n_view"] + 1)
    toxic_rate = frame["n_comment_toxic"] / (frame["n_comment"] + 1)
    z_lq = 400 * report_rate - 1.5 + rng.normal(0, 0.5, len(frame))
    z_hi = 12 * toxic_rate - 2.0 + rng.normal(0, 0.5, len(frame))
    z_we = np.where(frame["action_source"] == "auto", 0.8, -1.0) + rng.normal(0, 0.5, len(frame))
    return {
        "low_quality": (z_lq > 0).astype(int).to_numpy(),
        "harmful_interactions": (z_hi > 0).astype(int).to_numpy(),
        "wrongful_enforcement": (z_we > 0).astype(int),
    }


def make_bundle(random_state: int = 0, n: int = 800, flag_share: float = 0.3) -> ScoringBundle:
    """A small real ScoringBundle: transform + one LightGBM booster per issue, identity calibration.

    Thresholds flag about `flag_share` of the rows each issue applies to, so tests see flags.
    """
    rng = np.random.default_rng(random_state)
    frame = snapshot_frame(n, random_state)
    labels = _labels(frame, rng)
    transform = FeatureTransform.for_snapshots(min_category_count=2).fit(frame)
    x = transform.transform(frame)
    anchors = {
        "low_quality": "post",
        "harmful_interactions": "post",
        "wrongful_enforcement": "moderation",
    }
    issues: dict[str, IssueModel] = {}
    metrics: dict[str, Any] = {}
    for name, anchor in anchors.items():
        rows = np.flatnonzero(frame["anchor"].to_numpy() == anchor)
        booster = lgb.train(
            {
                "objective": "binary",
                "num_leaves": 7,
                "min_data_in_leaf": 5,
                "learning_rate": 0.2,
                "verbose": -1,
                "seed": random_state,
                "num_threads": 1,
            },
            lgb.Dataset(x[rows], labels[name][rows], feature_name=list(transform.feature_names_)),
            num_boost_round=15,
        )
        p = booster.predict(x[rows], num_threads=1)
        threshold = float(np.quantile(p, 1 - flag_share))
        issues[name] = IssueModel(
            name=name,
            anchor=anchor,
            booster=booster,
            calibrator=Calibrator("identity"),
            threshold=threshold,
            feature_names=list(transform.feature_names_),
        )
        metrics[name] = {
            "auc": 0.5 + 0.01 * random_state,
            "positives": int(labels[name][rows].sum()),
        }
    example = frame.iloc[0].to_dict()
    example = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in example.items()}
    example["as_of"] = example["as_of"].isoformat()
    return ScoringBundle(
        transform=transform,
        issues=issues,
        metadata={
            "trained_at": "2026-11-25T00:00:00+00:00",
            "metrics": metrics,
            "seed": random_state,
        },
        example_record=example,
    )


@dataclass
class Registry:
    """A SQLite MLflow store holding MODEL_NAME versions 1 and 2 (champion -> 1)."""

    root: Path
    tracking_uri: str
    name: str = MODEL_NAME
    versions: list[str] = field(default_factory=list)
    bundles: dict[str, ScoringBundle] = field(default_factory=dict)

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def set_champion(self, version: str) -> None:
        self.client().set_registered_model_alias(self.name, "champion", version)

    def settings(self, data_dir: Path, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "mlflow_tracking_uri": self.tracking_uri,
            "model_name": self.name,
            "api_keys": API_KEYS,
            "reload_interval_s": 0,
        }
        values.update(overrides)
        return Settings(**values)

    def serve_env(self, data_dir: Path) -> dict[str, str]:
        """`settings(data_dir)` as the environment of a real `surfacer serve` process."""
        return {
            "SURFACER_DATA_DIR": str(data_dir),
            "SURFACER_MLFLOW_TRACKING_URI": self.tracking_uri,
            "SURFACER_MODEL_NAME": self.name,
            "SURFACER_API_KEYS": json.dumps(API_KEYS),
            "SURFACER_RELOAD_INTERVAL_S": "0",
        }


@contextlib.asynccontextmanager
async def running(app: FastAPI, **client_kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an HTTP client speaking to it over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://surfacer.test", **client_kwargs
        ) as client:
            yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A `surfacer serve` subprocess on a loopback port."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serve_process(
    settings_env: dict[str, str], tmp_path: Path, *args: str, timeout_s: float = 180.0
) -> Iterator[ServerProcess]:
    """Run `surfacer serve` with `settings_env` until /readyz is 200; stop it with SIGTERM."""
    port = free_port()
    env = {**os.environ, **settings_env}
    log_path = tmp_path / f"serve-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "surfacer"), "serve", "--port", str(port), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"surfacer serve exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"surfacer serve not ready after {timeout_s}s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def records(n: int, random_state: int = 7) -> list[dict[str, Any]]:
    frame = snapshot_frame(n, random_state)
    out = []
    for row in frame.to_dict("records"):
        rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        rec["as_of"] = rec["as_of"].isoformat()
        rec["creator_verified"] = bool(rec["creator_verified"])
        out.append(rec)
    return out


def build_registry(root: Path) -> Registry:
    """MODEL_NAME versions 1 and 2 (bundles of seeds 0 and 1) in a SQLite store; champion -> 1.

    Sets MLflow's global tracking and registry URIs to the store (callers restore them).
    """
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    reg = Registry(root=root, tracking_uri=uri)
    exp = mlflow.create_experiment("serving-tests", artifact_location=(root / "art").as_uri())
    for seed in (0, 1):
        bundle = make_bundle(random_state=seed)
        with mlflow.start_run(experiment_id=exp):
            info = log_bundle(bundle, registered_model_name=MODEL_NAME)
        version = str(info.registered_model_version)
        reg.versions.append(version)
        reg.bundles[version] = bundle
    reg.set_champion(reg.versions[0])
    return reg
