"""The Dask engine for snapshots: the same `snapshot_frame` on item-partitions of the events.

Events are split by a hash of item_id with dask.dataframe, so each partition holds every
event of its items; the small tables (items, creators, moderation, appeals) are broadcast
whole, since creator history spans items of other partitions. Rows come back in the same
order as the pandas engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features.snapshot_frame import snapshot_frame

BUCKET = "_bucket"


def item_buckets(item_ids: pd.Series, n: int) -> np.ndarray:
    """Stable bucket 0..n-1 of each item_id (same on every worker and run)."""
    hashed = pd.util.hash_pandas_object(item_ids, index=False).to_numpy()
    return (hashed % np.uint64(n)).astype(np.int64)


def _partition(
    events: pd.DataFrame | None,
    small: Mapping[str, pd.DataFrame],
    lo: float,
    hi: float,
    horizons_h: Sequence[float],
    include_moderation: bool,
    as_of_max_ns: int,
) -> pd.DataFrame:
    """Snapshot rows of the items whose bucket is in [lo, hi), from this partition's events."""
    items = small["items"]
    buckets = item_buckets(items["item_id"], int(small["_n_buckets"]["n"].iloc[0]))
    subset = np.flatnonzero((buckets >= lo) & (buckets < hi))
    tables = {k: v for k, v in small.items() if not k.startswith("_")}
    if events is not None:
        tables["events"] = events.reset_index(drop=True).drop(columns=[BUCKET], errors="ignore")
    return snapshot_frame(
        tables,
        horizons_h,
        include_moderation=include_moderation,
        as_of_max_ns=as_of_max_ns,
        item_subset=subset,
    )


def build_snapshots_dask(
    tables: Mapping[str, pd.DataFrame],
    horizons_h: Sequence[float],
    *,
    include_moderation: bool,
    as_of_max_ns: int,
    scheduler: str | None = None,
    progress: bool = False,
    npartitions: int | None = None,
) -> pd.DataFrame:
    """Snapshots computed on a Dask cluster (`scheduler` address, else common.cluster's
    choice: SURFACER_DASK_SCHEDULER or a LocalCluster sized to the machine)."""
    import dask
    import dask.dataframe as dd

    from common.cluster import dask_client, gather_with_progress, n_workers

    events = tables.get("events")
    small = {k: v for k, v in tables.items() if k != "events"}
    with dask_client(scheduler, announce=progress) as client:
        n = npartitions or 2 * n_workers(client)
        small["_n_buckets"] = pd.DataFrame({"n": [n]})
        [small_future] = client.scatter([small], broadcast=True, hash=False)
        if events is None:
            # No events: nothing to partition; one task on the cluster keeps the same path.
            parts = [
                dask.delayed(_partition)(
                    None,
                    small_future,
                    -np.inf,
                    np.inf,
                    horizons_h,
                    include_moderation,
                    as_of_max_ns,
                )
            ]
        else:
            ddf = dd.from_pandas(events, npartitions=n, sort=False)
            ddf = ddf.assign(
                **{BUCKET: ddf["item_id"].map_partitions(item_buckets, n, meta=(BUCKET, "i8"))}
            )
            # Explicit divisions: partition i holds exactly bucket i (a shuffle on the cluster).
            ddf = ddf.set_index(BUCKET, divisions=[*range(n + 1)])
            bounds = list(ddf.divisions)
            parts = []
            for i, part in enumerate(ddf.to_delayed()):
                lo = bounds[i] if i > 0 else -np.inf
                hi = bounds[i + 1] if i + 1 < len(bounds) - 1 else np.inf
                parts.append(
                    dask.delayed(_partition)(
                        part, small_future, lo, hi, horizons_h, include_moderation, as_of_max_ns
                    )
                )
        frames = gather_with_progress(
            client, parts, "snapshots (dask)", progress=progress, unit="partition"
        )
    out = pd.concat(frames, ignore_index=True)
    # Same row order as the pandas engine: items in table order, then as_of, anchor.
    position = pd.Index(tables["items"]["item_id"]).get_indexer(out["item_id"])
    anchor = (out["anchor"] == "moderation").to_numpy(dtype=np.int8)
    order = np.lexsort((anchor, out["as_of"].to_numpy(), position))
    return out.iloc[order].reset_index(drop=True)
