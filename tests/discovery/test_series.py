"""Segment series: the vectorized build agrees with a direct per-segment count; segment parsing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from discovery.series import build_series, hour_grid, parse_segment, segment_key, series_for
from discovery.signals import build_signals, creator_tier, item_dimensions


def test_parse_segment_round_trip_and_errors() -> None:
    seg = parse_segment("format=live, region=BR")
    assert seg == (("region", "BR"), ("format", "live"))
    assert segment_key(seg) == "region=BR,format=live"
    assert parse_segment("all") == ()
    with pytest.raises(ValueError, match="unknown segment dimension 'planet'"):
        parse_segment("planet=mars")
    with pytest.raises(ValueError, match="not dimension=value"):
        parse_segment("region")


def test_creator_tier_buckets() -> None:
    tiers = creator_tier(pd.Series([0, 999, 1000, 50_000, 2_000_000, None]))
    assert tiers.tolist()[:5] == ["<1k", "<1k", "1k-10k", "10k-100k", "1M+"]
    assert pd.isna(tiers.iloc[5])


def test_build_series_matches_direct_counts(raw_tables: dict[str, pd.DataFrame]) -> None:
    dims = item_dimensions(raw_tables)
    signal = build_signals(raw_tables)[0]
    start, n_hours = hour_grid([signal.units])
    assert start == start.floor("D") and n_hours % 24 == 0
    series = build_series(
        signal.units, dims, start=start, n_hours=n_hours, min_num=1, min_pair_num=1
    )
    for seg in [
        (),
        (("region", "BR"),),
        (("region", "BR"), ("format", "live")),
        (("hashtag", "cooking"),),
    ]:
        num, den = series_for(signal.units, dims, seg, start=start, n_hours=n_hours)
        i = series.index(seg)
        np.testing.assert_allclose(series.num[i], num)
        np.testing.assert_allclose(series.den[i], den)
    daily_num, _ = series.aggregate(24)
    np.testing.assert_allclose(daily_num.sum(axis=1), series.num.sum(axis=1))
