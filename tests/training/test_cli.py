"""`surfacer train` and `surfacer score` through the real CLI entry point."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from common.console import render
from surfacer.cli import run
from training.jobs import load_model, metrics_table


def test_train_prints_metrics_and_score_writes_parquet(
    small_flat_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle_path = tmp_path / "bundle.pkl"
    code = run(
        [
            "train",
            "--data",
            str(small_flat_spec),
            "--no-track",
            "--seed",
            "1",
            "--capacity",
            "30",
            "--bundle-out",
            str(bundle_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    # what was read, dropped and repaired, and the labels per issue, come first
    assert lines[0].startswith("data: read 800 source rows; 800 training rows; dropped 0")
    assert any(line.startswith("labels spam: train ") for line in lines)
    start = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    assert lines[start].split() == ["metric", "spam", "ban"]  # a column per issue
    table = lines[start + 2 : next(i for i, x in enumerate(lines) if x.startswith("quality gate"))]
    rows = {line.split()[0]: line.split()[1:] for line in table if line.strip()}
    for metric in ("flagged_share", "precision_at_threshold", "recall_at_threshold"):
        assert metric in rows
    assert "f1_at_threshold" in rows and "mcc_at_threshold" in rows
    # the quality gate's decision for each issue
    assert any(line.startswith("quality gate spam: ") for line in lines)
    assert any(line.startswith("quality gate ban: ") for line in lines)
    assert all(int(v.replace(",", "")) > 0 for v in rows["n"])  # counts print as integers
    assert all(0 <= float(v) <= 1 for v in rows["pr_auc"])
    assert "holdout: stratified split" in out and "not tracked" in out
    # time and memory per stage, so a run at scale says which stage needs the memory
    stages = next(line for line in lines if line.startswith("stages: "))
    for stage in ("load", "transform", "fit", "evaluate"):
        assert re.search(rf"\b{stage} [0-9.]+ s [0-9.]+ GB", stages), stages
    bundle = load_model(str(bundle_path))
    assert bundle.issue_names == ["spam", "ban"]
    assert bundle.metadata["capacity_per_day"] == 30

    scores = tmp_path / "scores" / "scores.parquet"
    code = run(
        ["score", "--data", str(small_flat_spec), "--model", str(bundle_path), "--out", str(scores)]
    )
    assert code == 0
    frame = pd.read_parquet(scores)
    assert len(frame) == 800
    assert list(frame.columns) == [
        "item_id",
        "as_of",
        "anchor",
        "spam",
        "ban",
        "flagged",
        "disabled",
    ]
    assert frame["spam"].between(0, 1).all()
    assert "scored 800 rows" in capsys.readouterr().out

    # New items come without labels: a file without the label columns scores every row,
    # with the same scores as the labelled copy.
    new = tmp_path / "new"
    new.mkdir()
    source = pd.read_csv(small_flat_spec.parent / "items.csv")
    source.drop(columns=["status", "ban"]).to_csv(new / "items.csv", index=False)
    (new / "spec.toml").write_text(small_flat_spec.read_text())
    new_scores = tmp_path / "new_scores.parquet"
    argv = ["score", "--data", str(new / "spec.toml"), "--model", str(bundle_path)]
    assert run([*argv, "--out", str(new_scores)]) == 0, capsys.readouterr().err
    unlabelled = pd.read_parquet(new_scores)
    pd.testing.assert_frame_equal(unlabelled, frame)
    capsys.readouterr()

    # A blank number is a missing value: the row is scored. Rows the loader drops (an
    # unreadable number) get no score: the command says how many and why, not only
    # "scored 797 rows" (a reader would take those for every row of the file).
    source.loc[[3, 10, 20], "views"] = None
    source["views"] = source["views"].astype("object")
    source.loc[[5, 6, 7], "views"] = "lots"
    source.to_csv(new / "items.csv", index=False)
    assert run([*argv, "--out", str(new_scores)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    again = pd.read_parquet(new_scores)
    assert len(again) == 797 and {"v00003", "v00010", "v00020"} <= set(again["item_id"])
    assert "scored 797 rows" in out
    assert "not scored 3 source rows" in out and "  3: not a number: views" in out


def test_bad_input_exits_2_with_a_message(
    small_flat_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["train", "--data", str(tmp_path / "missing"), "--no-track"]) == 2
    assert "does not exist" in capsys.readouterr().err
    weird = tmp_path / "data.txt"
    weird.write_text("x")
    assert run(["train", "--data", str(weird), "--no-track"]) == 2
    assert "neither a dataset folder nor a .toml" in capsys.readouterr().err
    out = tmp_path / "s.parquet"
    assert run(["score", "--data", str(small_flat_spec), "--model", "nope", "--out", str(out)]) == 2
    assert "neither a file" in capsys.readouterr().err
    assert not out.exists()


def test_issue_option_trains_a_subset(
    small_flat_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle_path = tmp_path / "spam.pkl"
    argv = ["train", "--data", str(small_flat_spec), "--no-track", "--issue", "spam"]
    assert run([*argv, "--bundle-out", str(bundle_path)]) == 0
    assert load_model(str(bundle_path)).issue_names == ["spam"]
    capsys.readouterr()
    assert run(["train", "--data", str(small_flat_spec), "--no-track", "--issue", "nope"]) == 2
    assert "unknown issue(s) ['nope']" in capsys.readouterr().err


def test_max_rows_option_trains_on_a_sample_and_says_so(
    small_flat_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(small_flat_spec), "--no-track", "--issue", "spam"]
    assert run([*argv, "--max-rows", "300"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"trained on a sample: \d{3} of 800 rows \(\d{3} of 800 whole items", out)
    assert run([*argv, "--max-rows", "-5"]) == 2
    assert "--max-rows" in capsys.readouterr().err


def test_train_output_in_a_log_is_stage_lines_and_a_table(
    small_flat_spec: Path, tmp_path: Path
) -> None:
    # A real process writing to pipes (a log): MLflow is imported fresh, as in production.
    env = {**os.environ, "SURFACER_DATA_DIR": str(tmp_path / "state")}
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "surfacer", "train", "--data", str(small_flat_spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    stages = [line.split(" (")[0] for line in proc.stderr.splitlines()]
    assert stages[0] == "train: load" and "train: log" in stages
    # fit and evaluate run once per issue, and their lines name it
    fits = [s.removeprefix("train: fit ") for s in stages if s.startswith("train: fit ")]
    assert fits and len(set(fits)) == len(fits) and all(f.isidentifier() for f in fits), stages
    assert stages[-1].startswith("train: done")
    # MLflow's chatter and its no-action warnings stay out of the output
    for noise in ("INFO mlflow", "CloudPickle", "pip version", "Downloading artifacts"):
        assert noise not in proc.stderr + proc.stdout
    assert proc.stdout.splitlines()[0].startswith("data: read ")
    assert any(line.split() == ["metric", "spam", "ban"] for line in proc.stdout.splitlines())
    # registered under the spec's name, with a note on how to serve it
    assert "model synthetic version 1, promoted to @champion" in proc.stdout
    assert "SURFACER_MODEL_NAME=synthetic" in proc.stdout


def test_metrics_table_has_a_column_per_issue_and_reads_as_numbers() -> None:
    text = render(
        metrics_table(
            {
                "a": {"n": 12000.0, "positives": 10.0, "pr_auc": 0.5},
                "b": {"n": 3.0, "positives": 1.0, "pr_auc": float("nan")},
            }
        )
    )
    rows = [line.split() for line in text.splitlines()]
    assert rows[0] == ["metric", "a", "b"]
    assert rows[2:] == [["n", "12,000", "3"], ["positives", "10", "1"], ["pr_auc", "0.5000", "-"]]


def test_score_refuses_a_bad_model_or_output_with_one_line_and_writes_nothing(
    small_flat_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_bundle = tmp_path / "items.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(not_a_bundle)
    out = tmp_path / "s.parquet"
    argv = ["score", "--data", str(small_flat_spec), "--out", str(out)]
    assert run([*argv, "--model", str(not_a_bundle)]) == 2
    assert "is not a pickled ScoringBundle" in capsys.readouterr().err
    assert not out.exists()
    # a folder or a non-Parquet name as --out: refused before any work, no temp file left
    bundle = tmp_path / "missing.pkl"
    for bad in (tmp_path, tmp_path / "scores.csv"):
        code = run(
            ["score", "--data", str(small_flat_spec), "--model", str(bundle), "--out", str(bad)]
        )
        assert code == 2
        assert "scores output" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.parquet"]


def test_score_names_a_model_missing_from_the_registry(
    small_flat_spec: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SURFACER_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("SURFACER_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SURFACER_MLFLOW_REGISTRY_URI", raising=False)
    out = tmp_path / "s.parquet"
    for ref in ("models:/nope@champion", "models:/nope/3"):
        argv = ["score", "--data", str(small_flat_spec), "--model", ref, "--out", str(out)]
        assert run(argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "is not in the registry" in errors[0], err
        assert "Traceback" not in err
    assert not out.exists()


def test_a_flat_time_too_coarse_to_split_says_what_to_do(
    small_flat_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a date column with one value (a day's export): every item is at the same time, so a
    # time split cannot cut it; the spec's time is optional, and the error says so
    source = pd.read_csv(small_flat_spec.parent / "items.csv")
    source["day"] = "2026-03-01"
    source.to_csv(tmp_path / "items.csv", index=False)
    spec = small_flat_spec.read_text().replace(
        'id = "id"\n', 'id = "id"\ntime = "day"\ntimezone = "UTC"\n'
    )
    (tmp_path / "spec.toml").write_text(spec)
    assert run(["train", "--data", str(tmp_path / "spec.toml"), "--no-track"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: time split left the valid window empty")
    assert "800 items have 1 distinct first times" in err
    assert "leave `time` out of the spec" in err
