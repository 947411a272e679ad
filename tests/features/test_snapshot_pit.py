"""The counting primitives behind snapshots, against brute force, on every packing path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.pit import GroupedTimes, TimeGrid, codes_for, to_ns


def brute_count(group: np.ndarray, ts: np.ndarray, g: int, t: int) -> int:
    return int(((group == g) & (ts < t)).sum())


@pytest.mark.parametrize(
    ("unit", "n_groups"),
    [
        (1_000_000_000, 7),  # whole seconds: the coarse grid
        (1_000, 7),  # microseconds
        (1, 7),  # nanoseconds
        (10**7 + 1, 2_000_000),  # ns times too wide to pack with 2M groups: dense ranks
    ],
)
def test_counts_and_sums_match_brute_force(unit: int, n_groups: int) -> None:
    rng = np.random.default_rng(unit % 97 + n_groups % 89)
    n = 3000
    group = rng.integers(0, 7, n) * (n_groups // 7)
    ts = 1_700_000_000_000_000_000 + rng.integers(0, 10**6, n) * unit
    values = rng.random(n)
    values[rng.random(n) < 0.1] = np.nan
    gt = GroupedTimes(group, ts, n_groups, values={"v": values}, keep_order=True)
    assert (gt.grid.uniques is not None) == (n_groups == 2_000_000)
    qg = np.repeat(np.unique(group), 40)
    # Query times: exactly on event times (the boundary), between them, and out of range.
    qt = np.concatenate(
        [
            rng.choice(ts, qg.size // 2),
            rng.integers(ts.min() - 5, ts.max() + 5, qg.size - qg.size // 2),
        ]
    )
    qt[:3] = [ts.min(), ts.max() + 1, ts.min() - 10**15]
    got = gt.count_before(qg, qt)
    want = [brute_count(group, ts, g, t) for g, t in zip(qg, qt, strict=True)]
    assert got.tolist() == want
    assert gt.count_before(qg[:1], np.array([np.iinfo(np.int64).min])).tolist() == [0]  # NaT
    sums = gt.sum_before("v", qg, qt)
    want_sums = [np.nansum(values[(group == g) & (ts < t)]) for g, t in zip(qg, qt, strict=True)]
    np.testing.assert_allclose(sums, want_sums, rtol=1e-9, atol=1e-9)
    lo = qt - 3600 * unit
    between = gt.count_between(qg, lo, qt)
    want_between = [
        int(((group == g) & (ts >= a) & (ts < b)).sum()) for g, a, b in zip(qg, lo, qt, strict=True)
    ]
    assert between.tolist() == want_between


@pytest.mark.parametrize("n_members", [50, 2**55])  # packed sort, and the lexsort fallback
def test_first_times_count_distinct_members(n_members: int) -> None:
    rng = np.random.default_rng(n_members % 1000)
    n = 2000
    group = rng.integers(0, 5, n)
    member = rng.integers(0, 50, n) * (n_members // 50)
    member[rng.random(n) < 0.1] = -1  # null users never count
    member[-1] = n_members - 1
    ts = rng.integers(0, 500, n) * 1_000_000_000
    gt = GroupedTimes(group, ts, 5, keep_order=True)
    distinct = gt.first_times(member, ts)
    for g in range(5):
        for t in np.unique(ts)[::7]:
            mask = (group == g) & (ts < t) & (member >= 0)
            assert distinct.count_before(np.array([g]), np.array([t]))[0] == len(set(member[mask]))
    with pytest.raises(ValueError, match="keep_order"):
        GroupedTimes(group, ts, 5).first_times(member, ts)


def test_empty_inputs() -> None:
    empty = np.zeros(0, np.int64)
    gt = GroupedTimes(empty, empty, 3, values={"v": np.zeros(0)}, keep_order=True)
    assert gt.count_before(np.array([0, 2]), np.array([5, 6])).tolist() == [0, 0]
    assert gt.sum_before("v", np.array([1]), np.array([5])).tolist() == [0.0]
    assert gt.first_times(empty, empty).count_before(np.array([1]), np.array([9])).tolist() == [0]
    assert TimeGrid(empty, 3).size == 1


def test_codes_and_times() -> None:
    codes = codes_for(pd.Series(["b", None, "zz", "a", "b"], dtype="str"), ["a", "b"])
    assert codes.tolist() == [1, -1, -1, 0, 1]
    ts = pd.Series([pd.Timestamp("2024-01-01 00:00:00.000001", tz="UTC"), pd.NaT])
    assert to_ns(ts).tolist() == [1_704_067_200_000_001_000, np.iinfo(np.int64).min]
