"""A disabled issue through the API: null probability, its reason, never flagged nor queued."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from models.pyfunc import log_bundle
from serving.app import create_app
from serving.flag_writer import JsonlFlagSink
from serving.review.store import ReviewStore
from tests.support.review import add_analysts, login
from tests.support.serving import MODEL_NAME, SCORE_KEY, Registry, make_bundle, records, running

pytestmark = pytest.mark.anyio

REASON = "no usable threshold: no threshold reaches precision 0.100 on validation"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_disabled_issue_is_null_and_never_flagged(tmp_path: Path) -> None:
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        reg = Registry(root=tmp_path, tracking_uri=uri)
        # a threshold that flags 90% of rows: were the issue not disabled, it would flag
        bundle = make_bundle(random_state=0, flag_share=0.9)
        bundle.disabled = {"low_quality": REASON}
        exp = mlflow.create_experiment("disabled", artifact_location=(tmp_path / "a").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = log_bundle(bundle, registered_model_name=MODEL_NAME)
        reg.set_champion(str(info.registered_model_version))
        sink = JsonlFlagSink(tmp_path / "flags.jsonl")
        settings = reg.settings(tmp_path / "state")
        store = ReviewStore(settings.review_db_url)
        add_analysts(store, "ann")
        store.close()
        app = create_app(settings, flag_sink=sink, flag_flush_interval_s=0.05)
        recs = records(60)
        async with running(app, headers={"X-API-Key": SCORE_KEY}) as client:
            ones = [(await client.post("/v1/score", json=r)).json() for r in recs]
            batch = (await client.post("/v1/score", json={"items": recs})).json()["items"]
            info_body = (await client.get("/v1/models")).json()
            assert (await login(client)).status_code == 303
            page = (await client.get("/console")).text
        for body in ones + batch:
            assert body["probabilities"]["low_quality"] is None
            assert "low_quality" not in body["flagged"]
            assert body["disabled"] == {"low_quality": REASON}
        # the other issues still score and flag (90% of their rows reach the threshold)
        assert any("harmful_interactions" in b["flagged"] for b in ones + batch)
        post = [b for b in ones if recs[ones.index(b)]["anchor"] == "post"]
        assert all(b["probabilities"]["harmful_interactions"] is not None for b in post)
        assert info_body["thresholds"]["low_quality"] is None
        assert info_body["disabled"] == {"low_quality": REASON}
        assert "low_quality" in info_body["issues"]
        # the console notes it above the queue, with the reason
        assert "Not scored by the serving model" in page
        assert "<strong>low_quality</strong>" in page and "no usable threshold" in page
        written = JsonlFlagSink.read(sink.path)
        assert written  # flagged for the other issues
        for item in written:
            assert "low_quality" not in item["flagged"]
            assert "low_quality" not in item["scores"]
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
