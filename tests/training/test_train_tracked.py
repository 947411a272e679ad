"""train() logs through training.tracking: one run and one version; nothing on failure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from common.settings import Settings
from tests.support.flat import write_flat_dataset
from training.pipeline import train


def _settings(root: Path) -> Settings:
    return Settings(data_dir=root / "state", model_name="surfacer-test")


@pytest.mark.slow  # MLflow logs the pyfunc model (~30 s on this machine)
def test_tracked_training_registers_one_version(small_flat_spec: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    result = train(small_flat_spec, settings=settings, random_state=0)
    assert result.run_id and result.model_version == "1"
    assert result.promoted  # the first version has no champion to beat
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["spam.pr_auc"] == pytest.approx(result.metrics["spam"]["pr_auc"])
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    assert [str(v.version) for v in versions] == ["1"]
    # a rerun of the same job (same data, same seed) is idempotent: same numbers, no new version
    again = train(small_flat_spec, settings=settings, random_state=0)
    assert again.reused and again.run_id == result.run_id and again.model_version == "1"
    assert again.metrics == result.metrics
    assert len(client.search_model_versions(f"name='{settings.model_name}'")) == 1


def test_failed_training_leaves_no_run_and_no_version(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    spec = write_flat_dataset(tmp_path / "data", n=300, seed=2)
    csv = tmp_path / "data" / "items.csv"
    frame = pd.read_csv(csv)
    frame["status"] = "ok"  # no spam positives: the job must stop before MLflow
    frame.to_csv(csv, index=False)
    with pytest.raises(ValueError, match="issue 'spam'"):
        train(spec, settings=settings)
    assert not (settings.data_dir / "mlflow.db").exists()
