"""Splits: by time with no item crossing windows, or stratified for untimed data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.split import stratified_split, time_split


def test_time_split_trains_on_the_past_and_keeps_items_whole() -> None:
    rng = np.random.default_rng(0)
    n_items = 500
    created = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
        rng.uniform(0, 28 * 24, n_items), unit="h"
    )
    frame = pd.concat(
        [
            pd.DataFrame(
                {
                    "item_id": [f"i{i}" for i in range(n_items)],
                    "as_of": created + pd.Timedelta(hours=h),
                }
            )
            for h in (1, 6, 24)
        ],
        ignore_index=True,
    )
    result = time_split(frame)
    per_item = pd.Series(result.assignment).groupby(frame["item_id"]).nunique()
    assert (per_item == 1).all()
    first = frame.groupby("item_id")["as_of"].min()
    split_of = pd.Series(result.assignment, index=frame["item_id"]).groupby(level=0).first()
    assert first[split_of == "train"].max() < first[split_of == "valid"].min()
    assert first[split_of == "valid"].max() < first[split_of == "test"].min()
    shares = split_of.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.01)
    assert shares["test"] == pytest.approx(0.2, abs=0.01)


def test_time_split_refuses_missing_times() -> None:
    frame = pd.DataFrame({"item_id": ["a", "b", "c"], "as_of": [pd.NaT] * 3})
    with pytest.raises(ValueError, match="rows have no 'as_of'"):
        time_split(frame)


def test_stratified_split_keeps_the_label_rate_and_is_seeded() -> None:
    n = 1000
    strata = np.r_[np.ones(100), np.zeros(900)].astype(int)
    frame = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)]})
    a = stratified_split(frame, strata, random_state=1)
    b = stratified_split(frame, strata, random_state=1)
    c = stratified_split(frame, strata, random_state=2)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    assert (a.assignment != c.assignment).any()
    for name, share in (("train", 0.6), ("valid", 0.2), ("test", 0.2)):
        m = a.mask(name)
        assert m.mean() == pytest.approx(share, abs=0.002)
        assert strata[m].mean() == pytest.approx(0.1, abs=0.002)
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(frame, strata, (0.5, 0.5, 0.5))
