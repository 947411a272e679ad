"""Validation on Dask: part by part, the same verdict and messages as the pandas path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.dataset_dask import check_folder_dask, validate_folder_dask
from features.io import PartitionError, load_dataset, table_summary, write_dataset
from features.validate import ContractError, dataset_warnings
from simulator.config import SimConfig
from simulator.core import simulate
from surfacer.cli import run
from tests.support.dask import local_scheduler

pytestmark = [pytest.mark.dask, pytest.mark.slow]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with local_scheduler(processes=False) as address:
        yield address


@pytest.fixture(scope="module")
def sim_tables() -> dict[str, pd.DataFrame]:
    return dict(simulate(SimConfig(n_items=150, days=3, seed=2)).tables)


def broken(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Problems scattered over the whole events table (so over every part)."""
    out = dict(tables)
    events = tables["events"].copy()
    rng = np.random.default_rng(0)
    n = len(events)
    ghost = rng.choice(n, 40, replace=False)
    events["item_id"] = events["item_id"].astype("object")
    events.loc[events.index[ghost], "item_id"] = "ghost"
    kind = events["kind"].astype("object")
    kind.iloc[rng.choice(n, 25, replace=False)] = "teleport"
    events["kind"] = kind
    labels = tables["labels"].copy()
    labels["label"] = labels["label"].astype("int64")
    labels.loc[labels.index[:3], "label"] = 7
    out["events"] = events
    out["labels"] = labels
    return out


def write_raw(tables: dict[str, pd.DataFrame], folder: Path, parts: int | None) -> Path:
    """Write tables without validation (as a producer with a bug would)."""
    folder.mkdir(parents=True)
    for name, df in tables.items():
        if name == "events" and parts:
            (folder / "events").mkdir()
            for i, chunk in enumerate(np.array_split(np.arange(len(df)), parts)):
                df.iloc[chunk].to_parquet(folder / "events" / f"part-{i:05d}.parquet", index=False)
        else:
            df.to_parquet(folder / f"{name}.parquet", index=False, row_group_size=1000)
    return folder


def planted(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A valid dataset with what `dataset_warnings` warns of, spread over the events' parts:
    a far-future event and appeal, events and a moderation row dated before their item
    (the largest lead not in the first part), and a pair of conflicting labels."""
    out = dict(tables)
    created = tables["items"].set_index("item_id")["created_at"]
    events = tables["events"].copy()
    n = len(events)
    ts = events["ts"].copy()
    ts.iloc[2 * n // 3] = pd.Timestamp("2099-01-01", tz="UTC")
    for row, lead in ((n // 10, "2s"), (n // 2, "3h"), (n - 5, "1min")):
        ts.iloc[row] = created[events["item_id"].iloc[row]] - pd.Timedelta(lead)
    events["ts"] = ts
    moderation = tables["moderation"].copy()
    moderation.loc[1, "ts"] = created[moderation.loc[1, "item_id"]] - pd.Timedelta("5s")
    appeals = tables["appeals"].copy()
    appeals.loc[0, "resolved_at"] = pd.Timestamp("2099-06-01", tz="UTC")
    labels = tables["labels"]
    flipped = labels.iloc[[2]].assign(label=1 - labels["label"].iloc[2])
    out |= {"events": events, "moderation": moderation, "appeals": appeals}
    out["labels"] = pd.concat([labels, flipped], ignore_index=True)
    return out


@pytest.mark.parametrize("parts", [None, 4, "csv"])
def test_same_warnings_as_pandas(
    scheduler: str, sim_tables: dict[str, pd.DataFrame], tmp_path: Path, parts: int | str | None
) -> None:
    path = write_raw(planted(sim_tables), tmp_path / "ds", parts if parts != "csv" else None)
    if parts == "csv":  # one piece, read as text (the times too)
        events = pd.read_parquet(path / "events.parquet")
        (path / "events.parquet").unlink()
        events.to_csv(path / "events.csv", index=False)
    want = dataset_warnings(load_dataset(path))
    kinds = [(p.table, p.column, p.message.split(",")[0]) for p in want]
    assert kinds == [
        ("events", "ts", "dated far beyond the rest of the data"),
        ("appeals", "resolved_at", "dated far beyond the rest of the data"),
        ("events", "ts", "dated before the item's created_at (by up to 0 days 03:00:00)"),
        ("moderation", "ts", "dated before the item's created_at (by up to 0 days 00:00:05)"),
        ("labels", "label", "the same item"),
    ]
    assert want[2].count == 3
    # small pieces: a single events file is read as several row-group pieces too
    got = check_folder_dask(path, scheduler=scheduler, target_rows=1000)
    assert [str(p) for p in got.warnings] == [str(p) for p in want]
    assert got.warnings == want
    pd.testing.assert_frame_equal(got.summary, table_summary(load_dataset(path)))
    clean = write_raw(sim_tables, tmp_path / "clean", parts if parts != "csv" else None)
    assert check_folder_dask(clean, scheduler=scheduler, target_rows=1000).warnings == []


@pytest.mark.parametrize("parts", [None, 4])
def test_valid_dataset_same_summary(
    scheduler: str, sim_tables: dict[str, pd.DataFrame], tmp_path: Path, parts: int | None
) -> None:
    path = write_dataset(sim_tables, tmp_path / "ds", parts={"events": parts} if parts else None)
    got = validate_folder_dask(path, scheduler=scheduler, target_rows=1000)
    want = table_summary(load_dataset(path))
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("parts", [None, 4])
def test_same_problems_as_pandas(
    scheduler: str, sim_tables: dict[str, pd.DataFrame], tmp_path: Path, parts: int | None
) -> None:
    path = write_raw(broken(sim_tables), tmp_path / "bad", parts)
    with pytest.raises(ContractError) as want:
        load_dataset(path)
    with pytest.raises(ContractError) as got:
        # small pieces: a single events file is read as several row-group pieces too
        validate_folder_dask(path, scheduler=scheduler, target_rows=1000)
    assert [str(p) for p in got.value.problems] == [str(p) for p in want.value.problems]
    assert str(got.value) == str(want.value)
    assert any("ghost" in str(p) for p in got.value.problems)


def test_bad_part_named_on_dask(
    scheduler: str, sim_tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    path = write_dataset(sim_tables, tmp_path / "ds", parts={"events": 3})
    bad = path / "events" / "part-00001.parquet"
    pd.read_parquet(bad).drop(columns=["ts"]).to_parquet(bad, index=False)
    with pytest.raises(PartitionError, match=r"part-00001\.parquet"):
        validate_folder_dask(path, scheduler=scheduler)


def test_cli_validate_on_dask(
    scheduler: str, sim_tables: dict[str, pd.DataFrame], tmp_path: Path, capsys
) -> None:
    path = write_dataset(sim_tables, tmp_path / "ds", parts={"events": 2})
    args = ["data", "validate", str(path), "--engine", "dask", "--scheduler", scheduler]
    assert run([*args, "--no-progress"]) == 0
    assert "valid (6 tables)" in capsys.readouterr().out
    bad = write_raw(broken(sim_tables), tmp_path / "bad", 2)
    assert run(["data", "validate", str(bad), "--engine", "dask", "--scheduler", scheduler]) == 2
    assert "item_id not in items" in capsys.readouterr().err


def test_cli_validate_on_dask_prints_the_warnings(
    scheduler: str, sim_tables: dict[str, pd.DataFrame], tmp_path: Path, capsys
) -> None:
    path = write_raw(planted(sim_tables), tmp_path / "ds", 3)
    assert run(["data", "validate", str(path), "--no-progress"]) == 0
    want = capsys.readouterr().out
    args = ["data", "validate", str(path), "--engine", "dask", "--scheduler", scheduler]
    assert run([*args, "--no-progress"]) == 0
    got = capsys.readouterr().out
    warnings = [line for line in got.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 5, got
    assert warnings == [line for line in want.splitlines() if line.startswith("warning: ")]
    assert "note:" not in got


@pytest.mark.parametrize("parts", [None, 3])
def test_snapshots_from_folder_equal_pandas(
    scheduler: str, sim_tables: dict[str, pd.DataFrame], tmp_path: Path, parts: int | None
) -> None:
    from features.snapshot import build_snapshots
    from features.snapshot_dask import snapshots_from_folder

    path = write_dataset(sim_tables, tmp_path / "ds", parts={"events": parts} if parts else None)
    want = build_snapshots(load_dataset(path))
    got, small = snapshots_from_folder(path, (1, 6, 24), scheduler=scheduler, npartitions=3)
    assert "events" not in small
    # bit for bit: per-item sums add the same floats in the same order on every partition
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_buckets_grow_with_the_events() -> None:
    from features.snapshot_dask import EVENTS_PER_BUCKET, bucket_count

    assert bucket_count(0, 2) == 4  # two per worker at least
    assert bucket_count(10 * EVENTS_PER_BUCKET, 2) == 10
    assert bucket_count(10 * EVENTS_PER_BUCKET + 1, 2) == 11
    # ten times the events, ten times the buckets: a bucket's size stays the same
    assert bucket_count(100 * EVENTS_PER_BUCKET, 2) == 10 * bucket_count(10 * EVENTS_PER_BUCKET, 2)


def test_snapshots_in_many_buckets_equal_pandas(
    scheduler: str,
    sim_tables: dict[str, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import features.snapshot_dask as snapshot_dask
    from features.snapshot import build_snapshots

    path = write_dataset(sim_tables, tmp_path / "ds", parts={"events": 2})
    # buckets sized by the events (no npartitions): here small buckets, so that there are many
    monkeypatch.setattr(snapshot_dask, "EVENTS_PER_BUCKET", max(1, len(sim_tables["events"]) // 9))
    assert snapshot_dask.bucket_count(len(sim_tables["events"]), 2) >= 9
    want = build_snapshots(load_dataset(path))
    got, _ = snapshot_dask.snapshots_from_folder(path, (1, 6, 24), scheduler=scheduler)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_snapshots_from_folder_report_bad_events(
    scheduler: str, sim_tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    from features.snapshot_dask import snapshots_from_folder

    path = write_raw(broken(sim_tables), tmp_path / "bad", 2)
    (path / "labels.parquet").unlink()
    sim_tables["labels"].to_parquet(path / "labels.parquet", index=False)
    with pytest.raises(ContractError, match="item_id not in items"):
        snapshots_from_folder(path, (1, 6, 24), scheduler=scheduler)


def test_load_dataset_dask_keeps_only_the_asked_event_kinds(
    scheduler: str, sim_tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    from features.dataset_dask import load_dataset_dask

    path = write_dataset(sim_tables, tmp_path / "ds", parts={"events": 3})
    want = load_dataset(path)
    got = load_dataset_dask(path, event_kinds=("comment", "report"), scheduler=scheduler)
    assert list(got) == list(want)
    events = want["events"]
    kept = events[events["kind"].isin(["comment", "report"])].reset_index(drop=True)
    assert 0 < len(kept) < len(events)
    pd.testing.assert_frame_equal(got["events"], kept)
    for name in want:
        if name != "events":
            pd.testing.assert_frame_equal(got[name], want[name])
