"""The Dask engine gives exactly the pandas result on a real 2-worker LocalCluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from features.io import load_dataset, write_dataset
from features.snapshot import build_snapshots
from surfacer.cli import run
from tests.support.dask import local_scheduler
from tests.support.snapshot_tables import END, H, hand_tables, random_tables

pytestmark = [pytest.mark.dask, pytest.mark.slow]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with local_scheduler(processes=True) as address:
        yield address


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in ("item_id", "as_of", "anchor", "action") if k in frame.columns]
    return frame.sort_values(keys, na_position="first").reset_index(drop=True)


def test_dask_equals_pandas_on_random_tables(scheduler: str) -> None:
    tables = random_tables(7, n_items=80, n_events=5000)
    want = build_snapshots(tables, as_of_max=END + 48 * H)
    got = build_snapshots(tables, as_of_max=END + 48 * H, engine="dask", scheduler=scheduler)
    assert len(got) == len(want) > 250
    # Rows spread over several partitions, yet come back identical (same order even).
    pd.testing.assert_frame_equal(sort_rows(got), sort_rows(want))
    pd.testing.assert_frame_equal(got, want)


def test_dask_with_missing_tables(scheduler: str) -> None:
    tables = hand_tables()
    for drop in ("events", "moderation"):
        subset = {k: v for k, v in tables.items() if k != drop}
        want = build_snapshots(subset, as_of_max=END)
        got = build_snapshots(subset, as_of_max=END, engine="dask", scheduler=scheduler)
        pd.testing.assert_frame_equal(sort_rows(got), sort_rows(want))


def test_cli_build_on_dask(scheduler: str, tmp_path: Path) -> None:
    tables = hand_tables()
    tables["events"] = tables["events"][tables["events"]["item_id"] != "zz"]
    data = write_dataset(tables, tmp_path / "data")
    out = tmp_path / "snap.parquet"
    args = ["features", "build", "--data", str(data), "--out", str(out), "--engine", "dask"]
    assert run([*args, "--scheduler", scheduler, "--no-progress"]) == 0
    want = build_snapshots(load_dataset(data))
    pd.testing.assert_frame_equal(pd.read_parquet(out), want, check_dtype=False)
