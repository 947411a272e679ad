"""`surfacer simulate`: writes the folder, prints a summary, rejects bad input with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.io import load_dataset
from surfacer.cli import run

SMALL = ["--items", "300", "--days", "4", "--seed", "3"]


def test_simulate_writes_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    assert run(["simulate", "--out", str(out), *SMALL]) == 0
    captured = capsys.readouterr()
    assert "rows per table" in captured.out and "incidents:" in captured.out
    assert "spam-lifehack" in captured.out
    assert "simulate" in captured.err  # the progress bar goes to stderr
    tables = load_dataset(out)
    assert len(tables) == 6
    assert len(tables["items"]) >= 300
    assert {p.name for p in out.iterdir()} >= {"truth.parquet", "incidents.json"}
    config = json.loads((out / "simulation.json").read_text())
    assert (config["n_items"], config["days"], config["seed"]) == (300, 4, 3)


def test_existing_folder_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert run(["simulate", "--out", str(out), *SMALL]) == 0
    before = pd.read_parquet(out / "items.parquet")
    assert run(["simulate", "--out", str(out), *SMALL[:4], "--seed", "4"]) == 2
    pd.testing.assert_frame_equal(pd.read_parquet(out / "items.parquet"), before)
    assert run(["simulate", "--out", str(out), *SMALL[:4], "--seed", "4", "--overwrite"]) == 0
    assert not pd.read_parquet(out / "items.parquet").equals(before)


@pytest.mark.parametrize(
    "bad",
    [["--items", "-5"], ["--days", "1"], ["--seed", "x"], ["--bogus"], ["--review-rate", "2"]],
)
def test_bad_options_exit_2(tmp_path: Path, bad: list[str]) -> None:
    out = tmp_path / "data"
    assert run(["simulate", "--out", str(out), *bad]) == 2
    assert not out.exists()


def test_custom_incidents_file(tmp_path: Path) -> None:
    spec = [
        {
            "id": "br-low-effort",
            "kind": "quality_drop",
            "start_day": 2,
            "end_day": 3,
            "segment": {"region": "BR"},
            "strength": 4,
        },
        {
            "id": "pets-abuse",
            "issue": "harmful_interactions",
            "kind": "abuse_surge",
            "start_day": 2.5,
            "end_day": None,
            "segment": {"category": "pets"},
            "strength": 3,
        },
    ]
    path = tmp_path / "incidents.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "data"
    assert run(["simulate", "--out", str(out), *SMALL, "--incidents", str(path)]) == 0
    written = json.loads((out / "incidents.json").read_text())
    assert [i["id"] for i in written] == ["br-low-effort", "pets-abuse"]
    assert written[0]["start"] == "2026-10-03T00:00:00+00:00"
    assert written[0]["end"] == "2026-10-04T00:00:00+00:00"
    assert written[1]["issue"] == "harmful_interactions" and written[1]["end"] is None
    truth = pd.read_parquet(out / "truth.parquet")
    assert set(truth["incident_id"].dropna()) <= {"br-low-effort", "pets-abuse"}


@pytest.mark.parametrize(
    ("incident", "message"),
    [
        ({"kind": "meteor"}, "unknown kind 'meteor'"),
        ({"segment": {"planet": "mars"}}, "unknown segment dimension 'planet'"),
        ({"segment": {"region": "XX"}}, "region='XX' is not simulated"),
        ({"start_day": 9}, "after the 4-day window"),
        ({"end_day": 1}, "end_day must be after start_day"),
        ({"strength": 0.5}, "strength must be > 1"),
        ({"colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_bad_incidents_file_exits_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], incident: dict, message: str
) -> None:
    base = {"id": "x", "kind": "abuse_surge", "start_day": 2, "segment": {"category": "gaming"}}
    path = tmp_path / "incidents.json"
    path.write_text(json.dumps([{**base, **incident}]))
    out = tmp_path / "data"
    assert run(["simulate", "--out", str(out), *SMALL, "--incidents", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_or_malformed_incidents_file(tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert run(["simulate", "--out", str(out), "--incidents", str(tmp_path / "no.json")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run(["simulate", "--out", str(out), "--incidents", str(bad)]) == 2
    assert not out.exists()
