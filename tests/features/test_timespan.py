"""Hostile timestamps: a few rows dated far beyond the data must not move the end of data,
and `data validate` warns about what follows the contract but is probably wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.io import load_dataset
from features.snapshot import build_snapshots, resolve_as_of_max
from features.timespan import isolated_end
from features.validate import dataset_warnings, label_conflicts
from surfacer.cli import run

FAR = pd.Timestamp("2099-01-01", tz="UTC")
DAY = 86_400 * 10**9


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simulator.config import SimConfig
    from simulator.core import simulate, write_simulation

    out = tmp_path_factory.mktemp("sim") / "sim"
    return write_simulation(simulate(SimConfig(n_items=300, days=4, seed=1)), out)


def _with_late_row(tables: dict[str, pd.DataFrame], table: str) -> dict[str, pd.DataFrame]:
    """A copy of the table's first row dated FAR (every window column of it)."""
    df = tables[table]
    row = df.iloc[[0]].copy()
    for col in {"events": ["ts"], "moderation": ["ts"], "appeals": ["filed_at", "resolved_at"]}[
        table
    ]:
        row[col] = FAR
    return {**tables, table: pd.concat([df, row], ignore_index=True)}


@pytest.mark.parametrize("table", ["events", "moderation", "appeals"])
def test_one_far_future_row_does_not_move_the_end_of_data(sim: Path, table: str) -> None:
    """One row dated 2099 made the end of data 2099: every item's unobserved 24 h window
    was kept as complete (and read as a negative by training). Now the end is where the
    rest of the data ends, and the late row is reported."""
    clean = load_dataset(sim)
    end = resolve_as_of_max(clean)
    hostile = _with_late_row(clean, table)
    assert resolve_as_of_max(hostile) == end
    found: list = []
    got = build_snapshots(hostile, on_outliers=found.append)
    want = build_snapshots(hostile, as_of_max=pd.Timestamp(end, unit="ns", tz="UTC"))
    pd.testing.assert_frame_equal(got, want)
    (outliers,) = found
    assert outliers.end_ns == end
    assert outliers.rows == {table: 1}
    assert {(r.table, r.rows) for r in outliers.late} == {(table, (len(hostile[table]) - 1,))}
    build_snapshots(clean, on_outliers=found.append)
    # an explicit as_of_max is used as it is
    beyond = build_snapshots(hostile, as_of_max=FAR, on_outliers=found.append)
    assert len(beyond) > len(got)
    assert found[1:] == [None, None]


def _spread(n: int, days: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.uniform(0, days * DAY, n).astype(np.int64))


def _end(values: np.ndarray) -> tuple[int, int] | None:
    return isolated_end(values, values, values.size)


def test_the_rule_is_relative_to_the_datas_own_span() -> None:
    bulk = _spread(1000, 30)
    last = int(bulk[-1])
    assert _end(bulk) is None
    # a gap longer than the data before it isolates the rows after it
    assert _end(np.append(bulk, last + 40 * DAY)) == (last, 40 * DAY)
    # a late row within the data's own scale is data
    assert _end(np.append(bulk, last + 10 * DAY)) is None
    # so is a later burst of more than 1% of the rows
    assert _end(np.append(bulk, np.full(20, last + 400 * DAY))) is None
    # two far clusters (1% in all) are both isolated
    assert _end(np.append(bulk, [last + 400 * DAY] * 5 + [last + 9000 * DAY] * 5))[0] == last
    # a stray row in the far past does not stretch the span (measured from the 1st percentile)
    far_past = np.append(bulk, [bulk[0] - 20_000 * DAY, last + 40 * DAY])
    assert _end(far_past) == (last, 40 * DAY)
    # a tail that thins out gradually (appeals resolved days later) is not isolated
    tail = last + np.cumsum(np.geomspace(DAY / 100, 5 * DAY, 10)).astype(np.int64)
    assert _end(np.append(bulk, tail)) is None
    # fewer than 100 timestamps are not judged
    assert _end(np.append(_spread(98, 30), 10**6 * DAY)) is None


def test_late_data_is_judged_at_any_scale() -> None:
    """The same shapes an hour long or ten years long: no constant of the default world."""
    for days in (1 / 24, 3650):
        bulk = _spread(500, days, seed=3)
        gap = int(2 * days * DAY)
        assert _end(np.append(bulk, bulk[-1] + gap)) == (int(bulk[-1]), gap)
        assert _end(np.append(bulk, bulk[-1] + gap // 4)) is None


def test_validate_warns_and_still_passes(
    sim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from features.io import write_dataset

    tables = _with_late_row(load_dataset(sim), "events")
    events = tables["events"].copy()
    created = tables["items"].set_index("item_id")["created_at"]
    events.loc[3, "ts"] = created[events.loc[3, "item_id"]] - pd.Timedelta("2s")  # clock skew
    labels = tables["labels"]
    flipped = labels.iloc[[0]].assign(label=1 - labels["label"].iloc[0])
    tables = {**tables, "events": events, "labels": pd.concat([labels, flipped])}
    assert dataset_warnings(load_dataset(sim)) == []
    late, early, conflict = dataset_warnings(tables)
    assert (late.table, late.column, late.count) == ("events", "ts", 1)
    assert late.rows == [len(events) - 1] and "2099-01-01" in late.message
    assert (early.table, early.column, early.count, early.rows) == ("events", "ts", 1, [3])
    assert "before the item's created_at (by up to 0 days 00:00:02)" in early.message
    assert (conflict.table, conflict.count, conflict.rows) == ("labels", 2, [0, len(labels)])

    folder = write_dataset(tables, tmp_path / "hostile")
    assert run(["data", "validate", str(folder), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3, out
    assert any("dated far beyond the rest of the data" in w and "2099-01-01" in w for w in warnings)
    assert any("before the item's created_at (by up to 0 days 00:00:02)" in w for w in warnings)
    assert any("labeled both 0 and 1" in w for w in warnings)


def test_label_conflicts_need_the_same_time() -> None:
    t = pd.Timestamp("2026-01-01", tz="UTC")
    labels = pd.DataFrame(
        {
            "item_id": ["a", "a", "a", "b", "b"],
            "issue": ["x", "x", "y", "x", "x"],
            "label": [0, 1, 1, 0, 1],
            "labeled_at": [t, t, t, t, t + pd.Timedelta("1s")],
        }
    )
    assert label_conflicts(labels).tolist() == [True, True, False, False, False]
