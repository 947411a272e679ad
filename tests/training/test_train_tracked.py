"""train() logs through training.tracking: one run and one version; nothing on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
    frame["status"] = "ok"  # no positives of any issue: the job must stop before MLflow
    frame["ban"] = "active"
    frame.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"issue 'spam'.*issue 'ban'"):
        train(spec, settings=settings)
    assert not (settings.data_dir / "mlflow.db").exists()


def test_pure_noise_disables_every_issue_and_keeps_the_champion(
    small_flat_spec: Path, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "state")  # the name comes from the dataset
    first = train(small_flat_spec, settings=settings, random_state=0)
    assert first.model_name == "synthetic" and first.promoted
    # the same problem (same spec name and issues), labels shuffled: independent of features
    spec = write_flat_dataset(tmp_path / "noise", n=1200, seed=5)
    csv = tmp_path / "noise" / "items.csv"
    frame = pd.read_csv(csv)
    rng = np.random.default_rng(0)
    for col in ("status", "ban"):
        frame[col] = rng.permutation(frame[col].to_numpy())
    frame.to_csv(csv, index=False)
    noise = train(spec, settings=settings, random_state=0)
    assert noise.model_name == "synthetic"
    assert set(noise.bundle.disabled) == {"spam", "ban"}, noise.report.extra["gate"]
    assert not noise.promoted
    assert "no issue passed the quality gate" in noise.decision["reasons"][0]
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    champion = client.get_model_version_by_alias("synthetic", "champion")
    assert str(champion.version) == first.model_version  # no champion change
    # the run says why, per issue: tags and a JSON artifact
    run = client.get_run(noise.run_id)
    for issue in ("spam", "ban"):
        assert run.data.tags[f"surfacer.gate.{issue}"].startswith("disabled: ")
    gate = json.loads(
        Path(client.download_artifacts(noise.run_id, "gate.json", str(tmp_path))).read_text()
    )
    assert gate["spam"]["enabled"] is False and gate["spam"]["reasons"]
