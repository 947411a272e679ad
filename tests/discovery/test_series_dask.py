"""Segment series and discovery on a 2-worker LocalCluster: the pandas result."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from discovery.pipeline import discover
from discovery.series import build_series, combine_counts, hour_grid, series_counts
from discovery.series_dask import build_series_dask
from discovery.signals import build_signals, item_dimensions
from tests.support.dask import local_scheduler

pytestmark = [pytest.mark.dask, pytest.mark.slow]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with local_scheduler(processes=False) as address:
        yield address


def test_counts_add_up_over_chunks(raw_tables: dict[str, pd.DataFrame]) -> None:
    dims = item_dimensions(raw_tables)
    units = build_signals(raw_tables)[0].units
    start, n_hours = hour_grid([units])
    whole = series_counts(units, dims, start=start, n_hours=n_hours)
    cuts = [0, 1, len(units) // 3, len(units) // 2, len(units)]
    parts = [
        series_counts(units.iloc[a:b], dims, start=start, n_hours=n_hours)
        for a, b in pairwise(cuts)
    ]
    combined = combine_counts(parts)
    assert list(combined) == list(whole)
    for combo, frame in whole.items():
        pd.testing.assert_frame_equal(combined[combo], frame, check_dtype=False)


def test_dask_series_equal_pandas(raw_tables: dict[str, pd.DataFrame], scheduler: str) -> None:
    from distributed import Client

    dims = item_dimensions(raw_tables)
    with Client(scheduler) as client:
        for signal in build_signals(raw_tables):
            if not len(signal.units):
                continue
            start, n_hours = hour_grid([signal.units])
            kw = dict(start=start, n_hours=n_hours, platform_den=signal.platform_den)
            want = build_series(signal.units, dims, **kw)
            got = build_series_dask(signal.units, dims, client=client, chunks=5, **kw)
            assert got.segments == want.segments, signal.name
            np.testing.assert_allclose(got.num, want.num, rtol=1e-12)
            np.testing.assert_allclose(got.den, want.den, rtol=1e-12)


def test_discover_on_dask_finds_the_same_incidents(
    raw_tables: dict[str, pd.DataFrame], scheduler: str
) -> None:
    want = discover(raw_tables)
    got = discover(raw_tables, engine="dask", scheduler=scheduler)
    assert [i.key for i in got.incidents] == [i.key for i in want.incidents]
    assert [(i.signal, i.start, i.detected_at) for i in got.incidents] == [
        (i.signal, i.start, i.detected_at) for i in want.incidents
    ]
    assert got.signals == want.signals
    assert len(want.incidents) >= 1


def test_discovery_reads_only_the_event_kinds_it_declares() -> None:
    # --engine dask loads only these events; the result must not change
    from discovery.pipeline import EVENT_KINDS_USED
    from simulator.config import SimConfig
    from simulator.core import simulate

    tables = dict(simulate(SimConfig(n_items=3000, days=12, seed=3)).tables)
    events = tables["events"]
    assert set(events["kind"]) - set(EVENT_KINDS_USED)  # views, likes... too
    subset = {**tables, "events": events[events["kind"].isin(EVENT_KINDS_USED)]}
    want = discover(tables)
    got = discover(subset)
    assert [(i.key, i.signal, i.start) for i in got.incidents] == [
        (i.key, i.signal, i.start) for i in want.incidents
    ]
    assert got.signals == want.signals
    pd.testing.assert_frame_equal(got.clusters, want.clusters)
