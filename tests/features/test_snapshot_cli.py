"""`surfacer features build`: a dataset folder in, one Parquet file of snapshots out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.io import load_dataset, write_dataset
from features.snapshot import build_snapshot_file, build_snapshots
from surfacer.cli import run
from tests.support.snapshot_tables import hand_tables


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    tables = hand_tables()
    tables["events"] = tables["events"][tables["events"]["item_id"] != "zz"]
    return write_dataset(tables, tmp_path / "data")


def test_build_writes_the_snapshots(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "snap.parquet"
    assert run(["features", "build", "--data", str(dataset), "--out", str(out)]) == 0
    # The 24 h rows end after the data does (latest timestamp: the restrict at 10 h).
    assert "wrote 9 snapshot rows (3 items)" in capsys.readouterr().out
    written = pd.read_parquet(out)
    want = build_snapshots(load_dataset(dataset))
    pd.testing.assert_frame_equal(written, want, check_dtype=False)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]

    # Other horizons, no progress bar; the file is replaced.
    args = ["features", "build", "--data", str(dataset), "--out", str(out), "--horizons", "2"]
    assert run([*args, "--no-progress"]) == 0
    again = pd.read_parquet(out)
    assert set(again.loc[again["anchor"] == "post", "horizon_h"]) == {2.0}


def test_build_function_reports_rows_and_time(dataset: Path, tmp_path: Path) -> None:
    result = build_snapshot_file(dataset, tmp_path / "s.parquet", [1, 6])
    assert (result.rows, result.items) == (9, 3)  # 6 post rows + 3 moderation rows
    assert result.seconds > 0 and result.path.is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--horizons", "1,x"], "horizons"),
        (["--horizons", "-1"], "positive"),
        # 1e9 h overflowed created_at + horizon in int64 ns: rows dated in 1734 were written
        (["--horizons", "1,1e9"], "at most 87,840 hours"),
        (["--engine", "spark"], "engine"),
    ],
)
def test_bad_options_are_user_errors(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "s.parquet"
    assert run(["features", "build", "--data", str(dataset), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_paths_are_user_errors(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["features", "build", "--data", str(dataset), "--out", str(tmp_path / "s.csv")]) == 2
    assert ".parquet" in capsys.readouterr().err
    missing = tmp_path / "nope"
    assert (
        run(["features", "build", "--data", str(missing), "--out", str(tmp_path / "s.parquet")])
        == 2
    )
    assert "nope" in capsys.readouterr().err
