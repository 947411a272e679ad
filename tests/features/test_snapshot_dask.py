"""The Dask engine gives exactly the pandas result on a real 2-worker LocalCluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
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


def many_creators(seed: int) -> dict[str, pd.DataFrame]:
    """random_tables with items spread over 20 creators of 1..9 items (7 in the creators
    table), so that a bucket's creators are a part of all creators, not every one."""
    tables = random_tables(seed, n_items=80, n_events=5000)
    items = tables["items"].copy()
    sizes = np.arange(len(items)) % 9 + 1
    items["creator_id"] = [f"c{c}" for c in np.repeat(np.arange(20), sizes[:20])[: len(items)]]
    items.loc[3, "creator_id"] = None  # a null creator is a creator of its own
    return {**tables, "items": items}


def test_a_bucket_gets_only_its_items_and_their_creators() -> None:
    from features.snapshot_dask import bucket_tables, item_buckets

    tables = many_creators(3)
    items = tables["items"]
    n = 6
    bucket = item_buckets(items["item_id"], n)
    seen: list[str] = []
    for b, share in enumerate(bucket_tables(tables, n)):
        assert set(share) == {"items", "_subset", "creators", "moderation", "appeals"}
        own = share["items"].iloc[share["_subset"]]
        assert set(own["item_id"]) == set(items["item_id"][bucket == b])
        seen += own["item_id"].tolist()
        # the other items are exactly the other items of the bucket's creators
        creator = items["creator_id"].fillna("<null>")
        want = items["item_id"][creator.isin(set(creator[bucket == b]))]
        assert sorted(share["items"]["item_id"]) == sorted(want)
        assert len(share["items"]) < len(items)
        ids = set(share["items"]["item_id"])
        for name in ("moderation", "appeals"):
            table = tables[name]
            assert share[name]["item_id"].isin(ids).all()
            assert len(share[name]) == table["item_id"].isin(ids).sum()
        assert set(share["creators"]["creator_id"]) == set(tables["creators"]["creator_id"]) & set(
            share["items"]["creator_id"].dropna()
        )
    assert sorted(seen) == sorted(items["item_id"])  # every item in exactly one bucket


@pytest.mark.parametrize("seed", [3, 11])
def test_dask_buckets_equal_pandas_with_many_creators(scheduler: str, seed: int) -> None:
    from features.snapshot_dask import build_snapshots_dask

    tables = many_creators(seed)
    want = build_snapshots(tables, as_of_max=END + 48 * H)
    as_of_max_ns = int(pd.Timestamp(END + 48 * H).as_unit("ns").value)
    got = build_snapshots_dask(
        tables,
        (1, 6, 24),
        include_moderation=True,
        as_of_max_ns=as_of_max_ns,
        scheduler=scheduler,
        npartitions=6,
    )
    assert want["creator_n_items"].max() > 3 and want["creator_prior_removals"].max() > 0
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_a_far_future_event_is_no_end_of_data_on_dask(
    scheduler: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The events stay on the cluster: their count, extremes and late rows decide the end
    of data exactly as the pandas engine does (one event dated 2099 moved it there)."""
    from features.snapshot_dask import snapshots_from_folder
    from simulator.config import SimConfig
    from simulator.core import simulate

    tables = dict(simulate(SimConfig(n_items=200, days=3, seed=2)).tables)
    far = tables["events"].iloc[[10]].assign(ts=pd.Timestamp("2099-01-01", tz="UTC"))
    tables["events"] = pd.concat([tables["events"], far], ignore_index=True)
    data = write_dataset(tables, tmp_path / "data")
    found: list = []
    want = build_snapshots(load_dataset(data), on_outliers=found.append)
    got, _ = snapshots_from_folder(
        data, (1.0, 6.0, 24.0), scheduler=scheduler, on_outliers=found.append
    )
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert found[0] == found[1]
    assert found[0].rows == {"events": 1}
    assert found[0].late[0].rows == (len(tables["events"]) - 1,)
    # written as a file (the CLI), the snapshots are the same
    out = tmp_path / "snap.parquet"
    assert run(["features", "build", "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), want, check_dtype=False)
    assert "warning: events.ts: dated far beyond the rest of the data" in capsys.readouterr().out
