"""The promotion gate on real bundles, and alias moves/listing on a real SQLite registry."""

from __future__ import annotations

import dataclasses
import math

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from models.bundle import ScoringBundle
from tests.support import mlflow_store as ms
from training.evaluate import label_column
from training.registry import (
    CHAMPION,
    TAG_PREVIOUS_CHAMPION,
    decide_promotion,
    format_versions,
    list_versions,
    promote,
    rollback,
)


def _mix(lq: ScoringBundle, we: ScoringBundle) -> ScoringBundle:
    """A bundle taking low_quality from `lq` and wrongful_enforcement from `we`.

    Both were fitted with the same transform config on the same rows, so the transform of
    either serves both models.
    """
    return ScoringBundle(
        transform=lq.transform,
        issues={
            "low_quality": lq.issues["low_quality"],
            "wrongful_enforcement": we.issues["wrongful_enforcement"],
        },
        example_record=lq.input_example(),
    )


@pytest.fixture(scope="module")
def test_frame() -> object:
    return ms.data().test


@pytest.fixture(scope="module")
def b() -> dict[str, ScoringBundle]:
    return ms.bundles()


# --- decide_promotion -----------------------------------------------------------------------------


def test_no_champion_first_valid_model_wins(b: dict, test_frame) -> None:
    d = decide_promotion(b["bad"], test_frame, champion=None)
    assert d.promote
    assert "no champion yet" in d.reasons[0]
    assert set(d.candidate_metrics) == set(ms.ISSUES)


def test_candidate_without_any_defined_pr_auc_is_not_valid(b: dict, test_frame) -> None:
    no_positives = test_frame.assign(
        **{
            label_column(i): np.where(test_frame[label_column(i)].notna(), 0.0, np.nan)
            for i in ms.ISSUES
        }
    )
    d = decide_promotion(b["good"], no_positives, champion=None)
    assert not d.promote
    assert "not valid" in d.reasons[0]


def test_worse_candidate_is_rejected_per_issue_and_on_primary(b: dict, test_frame) -> None:
    d = decide_promotion(b["bad"], test_frame, champion=b["good"], champion_version="4")
    assert not d.promote
    text = "\n".join(d.reasons)
    for issue in ms.ISSUES:
        assert f"{issue}: PR-AUC dropped" in text
    assert "primary metric mean.pr_auc got worse" in text
    assert d.champion_version == "4"
    payload = d.to_dict()
    assert payload["promote"] is False and payload["champion_version"] == "4"


def test_better_candidate_is_promoted(b: dict, test_frame) -> None:
    d = decide_promotion(b["good"], test_frame, champion=b["medium"])
    assert d.promote, d.reasons
    assert d.candidate_primary > d.champion_primary
    assert all(d.candidate_metrics[i] > d.champion_metrics[i] for i in ms.ISSUES)


def test_retraining_the_same_model_is_not_worse(b: dict, test_frame) -> None:
    d = decide_promotion(b["good"], test_frame, champion=b["good"], tolerance=0.0)
    assert d.promote, d.reasons


def test_tolerance_only_covers_per_issue_drops_not_the_primary_metric(b: dict, test_frame) -> None:
    loose = decide_promotion(b["medium"], test_frame, champion=b["good"], tolerance=1.0)
    assert not loose.promote
    assert not any("dropped" in r for r in loose.reasons)
    assert any("got worse" in r for r in loose.reasons)


def test_tolerance_is_the_largest_allowed_drop(b: dict, test_frame) -> None:
    # champion: good everywhere; candidate: good low_quality, medium wrongful_enforcement
    mixed = _mix(b["good"], b["medium"])
    champ = decide_promotion(b["good"], test_frame, champion=None).candidate_metrics
    cand = decide_promotion(mixed, test_frame, champion=None).candidate_metrics
    drop = champ["wrongful_enforcement"] - cand["wrongful_enforcement"]
    assert drop > 0.03
    strict = decide_promotion(
        mixed, test_frame, champion=b["good"], tolerance=drop - 0.01, primary_issue="low_quality"
    )
    assert not strict.promote
    assert any("wrongful_enforcement: PR-AUC dropped" in r for r in strict.reasons)
    lenient = decide_promotion(
        mixed, test_frame, champion=b["good"], tolerance=drop + 0.01, primary_issue="low_quality"
    )
    assert lenient.promote, lenient.reasons
    assert lenient.primary == "low_quality.pr_auc"


def test_primary_issue_decides_the_primary_metric(b: dict, test_frame) -> None:
    candidate = _mix(b["good"], b["medium"])  # better low_quality, worse wrongful_enforcement
    champion = _mix(b["medium"], b["good"])
    on_lq = decide_promotion(
        candidate, test_frame, champion=champion, tolerance=1.0, primary_issue="low_quality"
    )
    assert on_lq.promote, on_lq.reasons
    on_we = decide_promotion(
        candidate,
        test_frame,
        champion=champion,
        tolerance=1.0,
        primary_issue="wrongful_enforcement",
    )
    assert not on_we.promote
    assert any("wrongful_enforcement.pr_auc got worse" in r for r in on_we.reasons)


def test_candidate_with_another_issue_set_is_refused_with_the_reason(b: dict, test_frame) -> None:
    d = ms.data()
    lq_only = ms.make_bundle(
        d.train, issues={"low_quality": "post"}, quality="good", random_state=1
    )
    # a better model of more issues still models another problem: not over this champion
    decision = decide_promotion(b["good"], test_frame, champion=lq_only, champion_version="4")
    assert not decision.promote
    assert decision.reasons[0].startswith("issue set differs from champion v4's")
    assert "only in the candidate: ['wrongful_enforcement']" in decision.reasons[0]
    # the reverse: a candidate that drops an issue the champion serves
    reverse = decide_promotion(lq_only, test_frame, champion=b["good"], champion_version="4")
    assert not reverse.promote
    assert "only in the champion: ['wrongful_enforcement']" in reverse.reasons[0]


def test_candidate_with_every_issue_disabled_is_refused(b: dict, test_frame) -> None:
    off = dataclasses.replace(
        b["good"],
        disabled={
            "low_quality": "constant scores on the holdout",
            "wrongful_enforcement": "ROC-AUC interval includes 0.5",
        },
    )
    for champion in (None, b["bad"]):
        decision = decide_promotion(off, test_frame, champion=champion)
        assert not decision.promote
        assert "no issue passed the quality gate" in decision.reasons[0]
        assert "constant scores" in decision.reasons[0]


def test_candidate_disabling_an_issue_the_champion_scores_is_refused(b: dict, test_frame) -> None:
    part = dataclasses.replace(b["good"], disabled={"wrongful_enforcement": "no usable threshold"})
    decision = decide_promotion(part, test_frame, champion=b["bad"], champion_version="2")
    assert not decision.promote
    assert any(
        r.startswith("wrongful_enforcement: disabled in the candidate (no usable threshold)")
        for r in decision.reasons
    )
    # the first version may ship with an issue disabled: the other one is trustworthy
    first = decide_promotion(part, test_frame, champion=None)
    assert first.promote and set(first.candidate_metrics) == {"low_quality"}
    # and a champion that disabled it too is no reason to refuse
    both = decide_promotion(part, test_frame, champion=part, champion_version="2")
    assert both.promote, both.reasons
    assert any("disabled in the candidate and the champion" in r for r in both.reasons)


def test_champion_that_cannot_score_the_holdout_counts_as_missing(b: dict, test_frame) -> None:
    good = b["good"]
    # a champion whose boosters expect another feature layout: LightGBM refuses the matrix
    narrow = ms.make_bundle(ms.data().train, quality="good", random_state=1)
    narrow.transform = type(good.transform)(numeric=("duration_s",), min_category_count=1).fit(
        ms.data().train
    )
    decision = decide_promotion(good, test_frame, champion=narrow, champion_version="2")
    assert decision.promote, decision.reasons
    assert "cannot score the candidate's holdout" in decision.reasons[0]
    assert decision.champion_metrics == {}


def test_unloadable_champion_blocks_automatic_promotion(b: dict, test_frame) -> None:
    d = decide_promotion(
        b["good"], test_frame, champion=None, champion_version="3", champion_error="OSError: gone"
    )
    assert not d.promote
    assert "could not be loaded" in d.reasons[0]


def test_gate_arguments_are_checked(b: dict, test_frame) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        decide_promotion(b["good"], test_frame, champion=None, tolerance=-0.1)
    with pytest.raises(ValueError, match="primary issue 'nope'"):
        decide_promotion(b["good"], test_frame, champion=None, primary_issue="nope")


def test_decision_json_has_no_nan(b: dict, test_frame) -> None:
    lq_only = ms.make_bundle(
        ms.data().train, issues={"low_quality": "post"}, quality="good", random_state=1
    )
    payload = decide_promotion(b["good"], test_frame, champion=lq_only).to_dict()
    for value in [*payload["candidate_metrics"].values(), *payload["champion_metrics"].values()]:
        assert value is None or math.isfinite(value)


# --- aliases, listing, rollback on the real registry ---------------------------------------------


@pytest.fixture(scope="module")
def cli_registry(tmp_path_factory: pytest.TempPathFactory) -> ms.Settings:
    """Three versions under a fresh model name, registered from the history runs' models."""
    history = ms.registry_history(tmp_path_factory)
    settings = history.settings.model_copy(update={"model_name": "surfacer_aliases"})
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    client.create_registered_model(settings.model_name)
    # MLflow's registry resolves a `models:/m-...` source through a client on the *global*
    # tracking URI, whatever this client was given; point it at this store meanwhile.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        for quality in ("medium", "bad", "good"):
            src = client.get_model_version(
                history.settings.model_name, history.results[quality].model_version
            )
            client.create_model_version(
                settings.model_name, source=src.source, run_id=src.run_id, model_id=src.model_id
            )
    finally:
        mlflow.set_tracking_uri(previous)
    return settings


def test_list_versions_shows_aliases_runs_and_metrics(cli_registry, tmp_path_factory) -> None:
    history = ms.registry_history(tmp_path_factory)
    rows = list_versions(history.settings)
    assert [r.version for r in rows] == ["3", "2", "1"]
    by_version = {r.version: r for r in rows}
    assert by_version["3"].aliases == ["challenger", "champion"]
    assert by_version["2"].aliases == []
    assert by_version["3"].run_id == history.results["good"].run_id
    assert set(by_version["3"].metrics) == {
        "mean.pr_auc",
        "low_quality.pr_auc",
        "wrongful_enforcement.pr_auc",
    }
    table = format_versions(rows)
    assert table.splitlines()[0].split()[:5] == [
        "version",
        "aliases",
        "run_id",
        "created",
        "mean.pr_auc",
    ]
    assert "challenger,champion" in table
    assert format_versions([]) == "no model versions registered"


def test_promote_moves_alias_and_rollback_goes_back(cli_registry) -> None:
    settings = cli_registry
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    first = promote(settings, 1)
    assert (first.alias, first.before, first.after) == (CHAMPION, None, "1")
    second = promote(settings, "3")
    assert (second.before, second.after) == ("1", "3")
    assert client.get_model_version(settings.model_name, "3").tags[TAG_PREVIOUS_CHAMPION] == "1"
    other = promote(settings, 2, alias="challenger")
    assert (other.alias, other.before, other.after) == ("challenger", None, "2")

    back = rollback(settings)
    assert (back.before, back.after) == ("3", "1")
    held = client.get_model_version_by_alias(settings.model_name, CHAMPION)
    assert str(held.version) == "1"
    with pytest.raises(LookupError, match="no previous version"):
        rollback(settings)  # version 1 was the first champion: nothing further back


def test_promote_unknown_version_is_a_lookup_error(cli_registry) -> None:
    with pytest.raises(LookupError, match="no version '99'"):
        promote(cli_registry, 99)
    empty = cli_registry.model_copy(update={"model_name": "never_registered"})
    assert list_versions(empty) == []
    with pytest.raises(LookupError, match="no 'champion' alias"):
        rollback(empty)


def test_cli_models_and_promote(
    cli_registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from surfacer.cli import run

    settings = cli_registry
    monkeypatch.setenv("SURFACER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SURFACER_MODEL_NAME", settings.model_name)
    monkeypatch.delenv("SURFACER_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SURFACER_MLFLOW_REGISTRY_URI", raising=False)
    promote(settings, 3)  # a known starting point, whatever ran before
    target = "2"
    assert run(["promote", target]) == 0
    assert f"{settings.model_name}@champion: v3 -> v{target}" in capsys.readouterr().out
    assert run(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"model {settings.model_name}"  # the one SURFACER_MODEL_NAME names
    assert lines[1].startswith("version")
    row = next(line for line in lines[2:] if line.split()[0] == target)
    assert "champion" in row.split()[1]
    assert run(["promote", "--rollback"]) == 0
    assert f"v{target} -> v3" in capsys.readouterr().out

    assert run(["promote"]) == 2
    assert "either a VERSION or --rollback" in capsys.readouterr().err
    assert run(["promote", "77"]) == 2
    assert "no version '77'" in capsys.readouterr().err
