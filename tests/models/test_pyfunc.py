"""The ScoringBundle pyfunc flavour on a real MLflow store: log, load back, predict."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.types.schema import DataType

from models.bundle import ScoringBundle
from models.pyfunc import (
    BUNDLE_FILE,
    ScoringBundleModel,
    bundle_signature,
    load_bundle,
    load_bundle_from_dir,
    log_bundle,
)
from tests.support import mlflow_store as ms
from training.tracking import configure_mlflow


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> ms.History:
    history = ms.registry_history(tmp_path_factory)
    configure_mlflow(history.settings)  # global URIs for the fluent API used below
    return history


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    test = ms.data().test
    return test.drop(columns=[c for c in test.columns if c.startswith("label_")])


def _good_uri(history: ms.History) -> str:
    return f"models:/{history.settings.model_name}/{history.results['good'].model_version}"


def test_load_bundle_round_trip_scores_identically(history: ms.History, rows: pd.DataFrame) -> None:
    original = ms.bundles()["good"]
    loaded = load_bundle(_good_uri(history))
    assert isinstance(loaded, ScoringBundle)
    assert loaded.issue_names == original.issue_names
    assert loaded.thresholds == original.thresholds
    pd.testing.assert_frame_equal(loaded.score_frame(rows), original.score_frame(rows))
    record = rows.iloc[5].to_dict()
    assert loaded.score_one(record) == original.score_one(record)
    # by alias too (the good model is the champion), with explicit URIs while MLflow's
    # globals point at another, empty store: the explicit ones must win
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    elsewhere = f"sqlite:///{history.settings.data_dir / 'elsewhere.db'}"
    mlflow.set_tracking_uri(elsewhere)
    mlflow.set_registry_uri(elsewhere)
    try:
        by_alias = load_bundle(
            f"models:/{history.settings.model_name}@champion",
            tracking_uri=history.settings.tracking_uri,
        )
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    np.testing.assert_array_equal(
        by_alias.score_records(rows.head(20).to_dict("records")),
        original.score_records(rows.head(20).to_dict("records")),
    )


def test_pyfunc_predict_matches_the_bundle(history: ms.History, rows: pd.DataFrame) -> None:
    model = mlflow.pyfunc.load_model(_good_uri(history))
    out = model.predict(rows)
    expected = ms.bundles()["good"].score_frame(rows)
    assert list(out.columns) == list(ms.ISSUES)
    np.testing.assert_allclose(out.to_numpy(), expected.to_numpy(), equal_nan=True)
    # NaN exactly where the issue's anchor does not match the row's
    post = (rows["anchor"] == "post").to_numpy()
    assert out["low_quality"].notna().to_numpy().tolist() == post.tolist()
    assert out["wrongful_enforcement"].isna().to_numpy().tolist() == post.tolist()


def test_pyfunc_accepts_missing_optional_and_extra_columns(
    history: ms.History, rows: pd.DataFrame
) -> None:
    model = mlflow.pyfunc.load_model(_good_uri(history))
    partial = rows.head(10).drop(columns=["caption", "duration_s"]).assign(unused=1)
    out = model.predict(partial)
    expected = ms.bundles()["good"].score_frame(
        rows.head(10).drop(columns=["caption", "duration_s"])
    )
    np.testing.assert_allclose(out.to_numpy(), expected.to_numpy(), equal_nan=True)


def test_load_bundle_from_a_downloaded_folder(history: ms.History, tmp_path: Path) -> None:
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=_good_uri(history), dst_path=str(tmp_path))
    )
    assert (local / "MLmodel").is_file()
    assert (local / "artifacts" / BUNDLE_FILE).is_file()
    bundle = load_bundle_from_dir(local)
    rows = ms.data().test.head(30)
    pd.testing.assert_frame_equal(bundle.score_frame(rows), ms.bundles()["good"].score_frame(rows))
    with pytest.raises(FileNotFoundError, match="no MLmodel"):
        load_bundle_from_dir(tmp_path / "nowhere")


def test_log_bundle_registers_with_signature_and_example(history: ms.History) -> None:
    bundle = ms.bundles()["medium"]
    mlflow.set_experiment("pyfunc-tests")
    with mlflow.start_run():
        info = log_bundle(bundle, registered_model_name="surfacer_pyfunc_test")
    assert info.registered_model_version == 1
    assert {c.name for c in info.signature.outputs.inputs} == set(ms.ISSUES)
    example = mlflow.models.Model.load(info.model_uri).load_input_example()
    assert set(example.columns) == set(bundle.input_example())
    client = MlflowClient(
        tracking_uri=history.settings.tracking_uri, registry_uri=history.settings.tracking_uri
    )
    mv = client.get_model_version("surfacer_pyfunc_test", "1")
    assert mv.run_id == info.run_id


def test_signature_is_loose_about_columns_and_types() -> None:
    sig = bundle_signature(ms.bundles()["good"])
    specs = {c.name: c for c in sig.inputs.inputs}
    assert not any(c.required for c in specs.values())
    assert str(specs["as_of"].type) == "Any"  # tz-aware timestamps: MLflow datetime is naive
    assert specs["n_view"].type == DataType.double


def test_predict_takes_records_and_refuses_other_input() -> None:
    bundle = ms.bundles()["good"]
    model = ScoringBundleModel(bundle)
    records = ms.data().test.head(3).to_dict("records")
    np.testing.assert_allclose(
        model.predict(None, records).to_numpy(), bundle.score_records(records), equal_nan=True
    )
    one = model.predict(None, records[0])
    assert len(one) == 1
    with pytest.raises(ValueError, match="not a DataFrame"):
        model.predict(None, 42)
    with pytest.raises(ValueError, match="has no bundle"):
        ScoringBundleModel().predict(None, records)
