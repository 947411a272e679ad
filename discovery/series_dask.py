"""Segment series on Dask: `series_counts` on contiguous chunks of the units, summed up.

The sums per (segment values, hour) are additive over any split of the units, so each worker
runs the pandas `series_counts` on its chunk (the item dimensions shipped once), the client
adds the chunks' counts in chunk order (`combine_counts`: first appearance order is kept, so
segments come out in the pandas order) and `series_from_counts` builds the same matrices.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from discovery.series import SegmentSeries, combine_counts, series_counts, series_from_counts
from discovery.signals import ItemDimensions

CHUNK_ROWS = 1_000_000  # units per task at most


def build_series_dask(
    units: pd.DataFrame,
    dims: ItemDimensions,
    *,
    client: Any,
    dims_future: Any = None,
    start: pd.Timestamp,
    n_hours: int,
    pairs: bool = True,
    platform_den: bool = False,
    min_num: float = 10.0,
    min_pair_num: float = 15.0,
    chunks: int | None = None,
) -> SegmentSeries:
    """`discovery.series.build_series` with the counting done on `client`'s workers.

    `dims_future` is `dims` already scattered (to ship it once for several signals).
    """
    from common.cluster import n_workers

    n = chunks or max(2 * n_workers(client), math.ceil(len(units) / CHUNK_ROWS))
    n = max(1, min(n, len(units)))
    size = math.ceil(len(units) / n) if len(units) else 1
    if dims_future is None:
        [dims_future] = client.scatter([dims], broadcast=True, hash=False)
    futures = [
        client.submit(
            series_counts,
            units.iloc[i : i + size],
            dims_future,
            start=start,
            n_hours=n_hours,
            pairs=pairs,
            pure=False,
        )
        for i in range(0, max(len(units), 1), size)
    ]
    counts = combine_counts(client.gather(futures))
    return series_from_counts(
        counts,
        start=start,
        n_hours=n_hours,
        platform_den=platform_den,
        min_num=min_num,
        min_pair_num=min_pair_num,
    )
