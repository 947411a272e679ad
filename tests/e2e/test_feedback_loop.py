"""The label feedback loop end to end: simulate -> train -> serve -> score -> review queue ->
label via the API -> export labels into the dataset -> train again on the new labels."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from common.settings import Settings
from features.io import load_dataset
from features.snapshot import build_snapshots
from models.issues import DEFAULT_ISSUES
from serving.app import create_app
from serving.review.export import export_labels
from serving.review.store import ReviewStore
from simulator.config import SimConfig
from simulator.core import simulate, write_simulation
from tests.support.review import add_analysts, session_headers
from tests.support.serving import running
from training.data import load_training_data
from training.pipeline import train
from training.tracking import TAG_FINGERPRINT

pytestmark = pytest.mark.slow

KEYS = {"score-key": ["score"], "review-key": ["review"]}
ISSUES = DEFAULT_ISSUES
N_LABEL = 40


def snapshot_records(data: Path, horizon_h: float = 24.0, n: int = 1500) -> list[dict[str, Any]]:
    """Point-in-time snapshots of the dataset's items, as JSON records for /v1/score."""
    snaps = build_snapshots(load_dataset(data), (horizon_h,), include_moderation=False)
    snaps = snaps[snaps["anchor"] == "post"].sort_values("as_of").tail(n)
    return json.loads(snaps.to_json(orient="records", date_format="iso"))


async def score_and_review(
    settings: Settings, records: list[dict[str, Any]], truth: pd.DataFrame
) -> list[tuple[str, str, int]]:
    """Score through the API, then claim and label flagged items as the truth says."""
    app = create_app(settings, flag_flush_interval_s=0.05)
    add_analysts(app.state.review_store, "analyst")
    labelled: list[tuple[str, str, int]] = []
    async with running(app) as client:
        flagged = 0
        for i in range(0, len(records), 500):
            r = await client.post(
                "/v1/score",
                json={"items": records[i : i + 500]},
                headers={"X-API-Key": "score-key"},
            )
            assert r.status_code == 200, r.text
            flagged += sum(1 for x in r.json()["items"] if "low_quality" in x["flagged"])
        assert flagged >= N_LABEL
        review = {"X-API-Key": "review-key"}
        for _ in range(200):  # the flag writer is asynchronous: wait for the queue to fill
            page = await client.get(
                "/v1/review/items", params={"issue": "low_quality", "limit": 1}, headers=review
            )
            if page.json()["total"] == flagged:
                break
            await asyncio.sleep(0.05)
        assert page.json()["total"] == flagged
        analyst = await session_headers(client, "analyst")
        for _ in range(N_LABEL):
            c = await client.post(
                "/v1/review/claims", json={"issue": "low_quality"}, headers=analyst
            )
            assert c.status_code == 200, c.text
            claim = c.json()
            item = claim["item"]
            if item["stratum"] == "sample":  # samples are labelled for every issue
                truth_row = truth.loc[item["item_id"]]
                body = (
                    {"decision": "reject", "issue": "low_quality"}
                    if truth_row["low_quality"] == 1
                    else {"decision": "confirm"}
                )
            else:
                has = int(truth.loc[item["item_id"], "low_quality"] == 1)
                body = {"decision": "confirm" if has else "reject", "issue": "low_quality"}
            r = await client.post(
                f"/v1/review/items/{item['id']}/label",
                json={"lease": claim["lease"], **body},
                headers=analyst,
            )
            assert r.status_code == 200, r.text
            for lab in r.json()["labels"]:
                labelled.append((lab["item_id"], lab["issue"], lab["label"]))
        quality = (await client.get("/v1/review/quality", headers=review)).json()
        lq = next(q for q in quality["issues"] if q["issue"] == "low_quality")
        assert lq["flagged_labeled"] > 0 and lq["precision"] is not None
    return labelled


def test_flag_label_retrain_loop(tmp_path: Path) -> None:
    data = write_simulation(simulate(SimConfig(n_items=5000, days=14, seed=3)), tmp_path / "data")
    settings = Settings(
        data_dir=tmp_path / "state",
        model_name="loop",
        api_keys=KEYS,
        reload_interval_s=0,
        review_random_share=0.2,
    )
    first = train(data, settings=settings, random_state=0, issues=ISSUES)
    assert first.model_version is not None and first.promoted
    labels_before = pd.read_parquet(data / "labels.parquet")

    truth = pd.read_parquet(data / "truth.parquet").set_index("item_id")
    records = snapshot_records(data)
    labelled = asyncio.run(score_and_review(settings, records, truth))
    assert len({(i, s) for i, s, _ in labelled}) >= N_LABEL

    store = ReviewStore(settings.review_db_url)
    path, n = export_labels(store, data)
    n_review = len(store.labels_frame())
    store.close()
    assert path == data / "labels.parquet"
    assert n == len(labels_before) + n_review  # merged, nothing lost
    # Exporting again de-duplicates.
    store = ReviewStore(settings.review_db_url)
    assert export_labels(store, data)[1] == n
    store.close()

    # The next training job sees the analysts' labels: on each labelled (item, as_of) row
    # the latest label (the review) is the row's label.
    td = load_training_data(data, issues=ISSUES)
    review_labels = {(i, s): v for i, s, v in labelled}
    rows = td.frame.set_index("item_id")
    checked = 0
    for (item_id, issue), value in review_labels.items():
        if issue != "low_quality" or item_id not in rows.index:
            continue
        got = rows.loc[[item_id], f"label_{issue}"].dropna()
        assert (got == value).all(), (item_id, got.tolist(), value)
        checked += len(got)
    assert checked >= N_LABEL
    print(
        f"\nlabels {len(labels_before)} -> {n} (+{n_review} from review); "
        f"{checked} training rows carry review labels; fingerprint {first.fingerprint[:12]}"
    )

    second = train(data, settings=settings, random_state=0, issues=ISSUES)
    assert second.fingerprint != first.fingerprint
    assert second.model_version is not None and second.model_version != first.model_version
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    runs = {
        v: client.get_run(client.get_model_version("loop", v).run_id)
        for v in (first.model_version, second.model_version)
    }
    fingerprints = {v: r.data.tags.get(TAG_FINGERPRINT) for v, r in runs.items()}
    assert fingerprints[second.model_version] == second.fingerprint
    assert fingerprints[first.model_version] != fingerprints[second.model_version]
    print(
        f"model v{first.model_version} -> v{second.model_version}, fingerprint {second.fingerprint[:12]}"
    )
