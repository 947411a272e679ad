"""Partitioned input: a table as a folder of Parquet parts reads like the single file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.io import (
    PartitionError,
    dataset_files,
    load_dataset,
    read_table,
    table_parts,
    write_dataset,
)
from features.snapshot import build_snapshots
from simulator.config import SimConfig
from simulator.core import simulate
from surfacer.cli import run


@pytest.fixture(scope="module")
def sim_tables() -> dict[str, pd.DataFrame]:
    """A small valid simulated dataset (the hand-made test tables break the contract)."""
    return dict(simulate(SimConfig(n_items=150, days=3, seed=1)).tables)


def sort_events(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns), kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("how", [3, "day"])
def test_parts_load_like_one_file(
    tmp_path: Path, how: int | str, sim_tables: dict[str, pd.DataFrame]
) -> None:
    tables = sim_tables
    single = load_dataset(write_dataset(tables, tmp_path / "one"))
    parted_path = write_dataset(tables, tmp_path / "parts", parts={"events": how})
    assert (parted_path / "events").is_dir()
    assert dataset_files(parted_path)["events"] == parted_path / "events"
    parted = load_dataset(parted_path)
    assert len(list((parted_path / "events").iterdir())) > 1
    for name in single:
        if name == "events":
            # parts hold the same rows, grouped by part
            pd.testing.assert_frame_equal(sort_events(parted[name]), sort_events(single[name]))
        else:
            pd.testing.assert_frame_equal(parted[name], single[name])
    want = build_snapshots(single)
    got = build_snapshots(parted)
    pd.testing.assert_frame_equal(got, want)


def test_bad_part_is_named(tmp_path: Path, sim_tables: dict[str, pd.DataFrame]) -> None:
    tables = sim_tables
    path = write_dataset(tables, tmp_path / "ds", parts={"events": 4})
    bad = path / "events" / "part-00002.parquet"
    frame = pd.read_parquet(bad)
    frame["ts"] = frame["ts"].astype("int64")  # a writer that forgot the timestamp type
    frame.drop(columns=["kind"]).to_parquet(bad, index=False)
    with pytest.raises(PartitionError) as err:
        read_table("events", path / "events")
    message = str(err.value)
    assert "part-00002.parquet" in message
    assert "'ts' is int64, expected timestamp" in message
    assert "missing column 'kind'" in message
    assert run(["data", "validate", str(path), "--no-progress"]) == 2


def test_a_part_that_is_not_parquet_is_named(
    tmp_path: Path, sim_tables: dict[str, pd.DataFrame]
) -> None:
    # the Dask engine reads Parquet metadata first (table_parts): pyarrow's message there did
    # not name the file
    path = write_dataset(sim_tables, tmp_path / "ds", parts={"events": 2})
    bad = path / "events" / "part-00001.parquet"
    bad.write_text("not parquet")
    for read in (
        lambda: table_parts(path / "events"),
        lambda: read_table("events", path / "events"),
    ):
        with pytest.raises(ValueError, match=r"part-00001\.parquet' is not a readable Parquet"):
            read()


def test_table_twice_is_refused(tmp_path: Path, sim_tables: dict[str, pd.DataFrame]) -> None:
    tables = sim_tables
    path = write_dataset(tables, tmp_path / "ds", parts={"events": 2})
    tables["events"].to_parquet(path / "events.parquet", index=False)
    with pytest.raises(ValueError, match="twice"):
        dataset_files(path)


def test_table_parts_split_big_files_by_row_group(
    tmp_path: Path, sim_tables: dict[str, pd.DataFrame]
) -> None:
    file = tmp_path / "events.parquet"
    sim_tables["events"].iloc[:3000].to_parquet(file, index=False, row_group_size=500)
    parts = table_parts(file, target_rows=1000)
    assert [p.rows for p in parts] == [1000, 1000, 1000]
    assert [p.offset for p in parts] == [0, 1000, 2000]
    back = pd.concat([p.read("events") for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(back, read_table("events", file))


def test_bad_partitioning_is_refused(tmp_path: Path, sim_tables: dict[str, pd.DataFrame]) -> None:
    tables = sim_tables
    with pytest.raises(ValueError, match="no item_id"):
        write_dataset(tables, tmp_path / "a", parts={"creators": 2})
    with pytest.raises(ValueError, match="part count"):
        write_dataset(tables, tmp_path / "b", parts={"events": 0})


def test_simulate_writes_parts(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--out", str(out), "--items", "60", "--days", "3", "--events-parts", "3"]
    assert run(args) == 0
    assert sorted(p.name for p in (out / "events").iterdir()) == [
        f"part-0000{i}.parquet" for i in range(3)
    ]
    assert len(load_dataset(out)["events"]) > 0
