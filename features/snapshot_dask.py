"""The Dask engine for snapshots: the same `snapshot_frame` on item-partitions of the events.

Events are split by a hash of item_id with dask.dataframe, so each partition holds every
event of its items. The small tables (items, creators, moderation, appeals) are split by the
same hash (`bucket_tables`): a bucket's task receives its own items, their creators and,
for creator history, the other items of those creators with their moderation and appeals
rows, so a task's memory follows its bucket, not the dataset. Rows come back in the same
order as the pandas engine.

From a dataset folder (`snapshots_from_folder`), the events are never whole on the client:
the workers read them piece by piece (a Parquet part, or row groups of one big file),
validate them and keep them on the cluster, spilling to disk under memory pressure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.pit import codes_for
from features.snapshot_frame import snapshot_frame

BUCKET = "_bucket"
# Each event's position in the events table: a bucket's events are put back in table order
# after the shuffle, so that every sum over an item's events adds in the pandas order (float
# sums in another order differ in the last bits, and a tree split can fall between them).
ROW = "_row"
# Events per item bucket. The buckets are the unit of work and of memory on a worker (the
# shuffled events of a bucket and snapshot_frame's arrays over them), so their count grows
# with the events rather than staying at a few per worker: with a fixed count, a bucket
# (and a worker's peak) grows with the data. About 50-100 MB of events in memory. Each task
# receives only its bucket's rows of the small tables (plus its creators' other items, see
# bucket_tables), so that part follows the bucket too.
EVENTS_PER_BUCKET = 500_000
SHUFFLE = "tasks"
# The columns that fix a snapshot row's place in the pandas engine's order (and its label).
KEY_COLUMNS = ("item_id", "as_of", "anchor")


@dataclass(frozen=True)
class PartStep:
    """What the workers do to each partition of snapshot rows before it comes back, so that
    the client receives the result (e.g. a partition's scores, `models.batch`) and never the
    rows themselves. `fn(part, **kwargs)` must keep the KEY_COLUMNS (the rows are put in the
    pandas engine's order from them); a kwarg may be a future (data scattered once)."""

    fn: Callable[..., pd.DataFrame]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


# Rows to bring back, from the KEY_COLUMNS of every snapshot row in the pandas engine's
# order and the small tables (labels...): a boolean mask that keeps whole items (training on
# a sample, `training.data`), or None for every row.
RowSelect = Callable[[pd.DataFrame, Mapping[str, pd.DataFrame]], "np.ndarray | None"]


def item_buckets(item_ids: pd.Series, n: int) -> np.ndarray:
    """Stable bucket 0..n-1 of each item_id (same on every worker and run)."""
    hashed = pd.util.hash_pandas_object(item_ids, index=False).to_numpy()
    return (hashed % np.uint64(n)).astype(np.int64)


def bucket_count(event_rows: int, workers: int) -> int:
    """Item buckets for `event_rows` events: two per worker at least (so every worker has
    work), and more as the events grow, so that a bucket stays near EVENTS_PER_BUCKET."""
    return max(2 * max(workers, 1), math.ceil(max(event_rows, 0) / EVENTS_PER_BUCKET))


def bucket_tables(small: Mapping[str, pd.DataFrame], n: int) -> Iterator[dict[str, Any]]:
    """The small tables cut into the `n` item buckets of the events, one dict per bucket.

    Bucket b gets the items hashed to b (its snapshot rows, positions in "_subset") and,
    because creator history counts a creator's posts, removals and overturned appeals over
    all their items, every other item of the same creators, with the moderation and appeals
    rows of all those items and the creators' rows. Rows keep their table order, so ties
    break as in the pandas engine. A bucket thus holds about (own items) x E[k^2]/E[k] item
    rows for k items per creator: a constant of the data's shape, not of its size.
    """
    items = small["items"]
    buckets = item_buckets(items["item_id"], n)
    # Only the tables snapshot_frame reads travel (labels, truth... stay on the client).
    # Same creator grouping as snapshot_frame (a null creator_id is one creator of its own).
    creator, uniques = pd.factorize(items["creator_id"], use_na_sentinel=False)
    n_creators = len(uniques)
    item_ids = pd.Index(items["item_id"])
    refs = {
        name: codes_for(small[name]["item_id"], item_ids)
        for name in ("moderation", "appeals")
        if name in small
    }
    creators = small.get("creators")
    # Each creators row as a creator code of the items (-1: no item of theirs).
    creator_code = None if creators is None else codes_for(creators["creator_id"], uniques)
    for b in range(n):
        own = buckets == b
        mine = np.zeros(n_creators, dtype=bool)
        mine[creator[own]] = True
        keep = mine[creator]  # own items and their creators' other items
        rows = np.flatnonzero(keep)
        part: dict[str, Any] = {"items": items.iloc[rows].reset_index(drop=True)}
        part["_subset"] = np.flatnonzero(own[rows])
        for name, code in refs.items():
            picked = _member(keep, code)
            part[name] = small[name].iloc[np.flatnonzero(picked)].reset_index(drop=True)
        if creators is not None and creator_code is not None:
            named = _member(mine, creator_code)
            part["creators"] = creators.iloc[np.flatnonzero(named)].reset_index(drop=True)
        yield part


def _member(mask: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """mask[codes] where codes >= 0, False for -1 (unknown), also when mask is empty."""
    if not mask.size:
        return np.zeros(codes.size, dtype=bool)
    return (codes >= 0) & mask[np.maximum(codes, 0)]


def _partition(
    events: pd.DataFrame | None,
    small: Mapping[str, Any],
    horizons_h: Sequence[float],
    include_moderation: bool,
    as_of_max_ns: int,
) -> pd.DataFrame:
    """Snapshot rows of one bucket's items from its events and its share of the small tables."""
    tables = {k: v for k, v in small.items() if not k.startswith("_")}
    if events is not None:
        if ROW in events.columns:
            events = events.sort_values(ROW, kind="stable")
        tables["events"] = events.reset_index(drop=True).drop(
            columns=[BUCKET, ROW], errors="ignore"
        )
    return snapshot_frame(
        tables,
        horizons_h,
        include_moderation=include_moderation,
        as_of_max_ns=as_of_max_ns,
        item_subset=small.get("_subset"),
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
    import dask.dataframe as dd

    from common.cluster import dask_client, n_workers

    events = tables.get("events")
    small = {k: v for k, v in tables.items() if k != "events"}
    with dask_client(scheduler, announce=progress) as client:
        n = npartitions or bucket_count(0 if events is None else len(events), n_workers(client))
        ddf = (
            None
            if events is None
            else dd.from_pandas(
                events.assign(**{ROW: np.arange(len(events), dtype=np.int64)}),
                npartitions=n,
                sort=False,
            )
        )
        return _snapshots_on(
            client, ddf, small, n, horizons_h, include_moderation, as_of_max_ns, progress
        )


def _snapshots_on(
    client: Any,
    events: Any,
    small: Mapping[str, pd.DataFrame],
    n: int,
    horizons_h: Sequence[float],
    include_moderation: bool,
    as_of_max_ns: int,
    progress: bool,
    *,
    step: PartStep | None = None,
    select: RowSelect | None = None,
) -> pd.DataFrame:
    """Shuffle the events (a dask DataFrame, or None) into `n` item buckets on the cluster and
    run `snapshot_frame` on each bucket; rows in the pandas engine's order.

    `step` runs on each bucket's rows on the worker and its result comes back instead of the
    rows. `select` sees the key columns of every row first (the rows stay on the cluster) and
    says which to bring back: the client then holds only those.
    """
    import dask

    from common.cluster import gather_with_progress

    if events is None:
        # No events: nothing to partition; one task on the cluster keeps the same path.
        [whole] = client.scatter([dict(small)], hash=False)
        parts = [
            dask.delayed(_partition)(None, whole, horizons_h, include_moderation, as_of_max_ns)
        ]
    else:
        ddf = events.assign(
            **{BUCKET: events["item_id"].map_partitions(item_buckets, n, meta=(BUCKET, "i8"))}
        )
        # Explicit divisions: partition i holds exactly bucket i (a shuffle on the cluster).
        # The task-based shuffle, not distributed's default p2p: on 100k items of the default
        # world p2p's buffers took a worker to 1.8 GB (killed under a 2 GB limit), tasks 1.1 GB.
        ddf = ddf.set_index(BUCKET, divisions=[*range(n + 1)], shuffle_method=SHUFFLE)
        parts = []
        # Each bucket's share of the small tables is sent on its own as it is cut, so the
        # client never holds all the shares at once and no worker receives the whole tables.
        for part, share in zip(ddf.to_delayed(), bucket_tables(small, n), strict=True):
            [future] = client.scatter([share], hash=False)
            parts.append(
                dask.delayed(_partition)(part, future, horizons_h, include_moderation, as_of_max_ns)
            )
    if step is not None:
        parts = [dask.delayed(step.fn)(part, **step.kwargs) for part in parts]
    desc = "snapshots (dask)"
    if select is not None:
        futures = client.compute(parts)  # the rows stay on the cluster (spilled if need be)
        keys = gather_with_progress(
            client, client.map(_key_columns, futures), desc, progress=progress, unit="partition"
        )
        ordered = pd.concat(keys, ignore_index=True)
        keys.clear()
        ordered = _reordered(ordered, _pandas_order(ordered, small))
        keep = select(ordered, small)
        if keep is not None:
            items = pd.unique(ordered["item_id"].to_numpy(dtype=object)[np.asarray(keep)])
            del ordered
            [wanted] = client.scatter([pd.Index(items)], broadcast=True, hash=False)
            futures = client.map(_of_items, futures, items=wanted)
        parts = futures
    frames = gather_with_progress(
        client,
        parts,
        desc if select is None else "rows (dask)",
        progress=progress,
        unit="partition",
    )
    out = pd.concat(frames, ignore_index=True)
    frames.clear()  # the partitions' copies: the client holds one copy of the rows from here
    return _reordered(out, _pandas_order(out, small))


def _pandas_order(rows: pd.DataFrame, small: Mapping[str, pd.DataFrame]) -> np.ndarray:
    """The order of the pandas engine's rows: items in table order, then as_of, anchor."""
    position = pd.Index(small["items"]["item_id"]).get_indexer(rows["item_id"])
    anchor = (rows["anchor"] == "moderation").to_numpy(dtype=np.int8)
    return np.lexsort((anchor, rows["as_of"].to_numpy(), position))


def _key_columns(part: pd.DataFrame) -> pd.DataFrame:
    return part[list(KEY_COLUMNS)]


def _of_items(part: pd.DataFrame, items: pd.Index) -> pd.DataFrame:
    """The rows of `part` whose item is one of `items`."""
    return part[part["item_id"].isin(items)].reset_index(drop=True)


def _reordered(frame: pd.DataFrame, order: np.ndarray) -> pd.DataFrame:
    """`frame.iloc[order]` with a fresh index, a column at a time: each column's old copy is
    dropped as its new one is made, so the rows are held about once, not twice (a 1M-item
    snapshot frame is some 2 GB)."""
    names = list(frame.columns)
    columns = {}
    for name in names:
        columns[name] = frame.pop(name).take(order).reset_index(drop=True)
    return pd.DataFrame(columns, columns=names)


def _read_checked(piece: Any, known_items: pd.Series | None) -> pd.DataFrame:
    """One piece of the events table, validated as the pandas loader would (ContractError
    with table row numbers)."""
    from features.dataset_dask import check_piece
    from features.validate import ContractError

    df = piece.read("events")
    check = check_piece("events", piece, known_items, frame=df)
    if check.problems or check.references:
        raise ContractError(check.problems + check.references, context="events")
    return df.assign(**{ROW: np.arange(piece.offset, piece.offset + len(df), dtype=np.int64)})


def snapshots_from_folder(
    path: str | Path,
    horizons_h: Sequence[float],
    *,
    include_moderation: bool = True,
    as_of_max: Any = None,
    scheduler: str | None = None,
    progress: bool = False,
    npartitions: int | None = None,
    on_outliers: Callable[[Any], None] | None = None,
    on_event_rows: Callable[[int], None] | None = None,
    step: PartStep | None = None,
    select: RowSelect | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Snapshots of a dataset folder on Dask, the events never all on the client.

    The small tables are read and validated on the client; the events are read by the
    workers one piece at a time (features.io.table_parts), validated there (same problems as
    the pandas loader), kept on the cluster (spilling to disk under memory pressure), and
    shuffled by item bucket for `snapshot_frame`. Returns (snapshots, the small tables);
    `on_outliers` gets the rows ignored as the end of data (`features.snapshot.OnOutliers`),
    before the snapshots are made (so that `select` can use it), `on_event_rows` the number
    of events read (the events table is not among the tables returned). With `step`, the frame is
    what it made of each partition on the workers (e.g. scores); with `select`, only the
    rows it keeps (see `_snapshots_on`).
    """
    import dask
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    from common.cluster import dask_client, n_workers
    from features.io import dataset_files, read_table, table_parts
    from features.snapshot import check_horizons, end_of_data
    from features.validate import check_dataset, coerce_table

    horizons = check_horizons(horizons_h)
    folder = Path(path)
    files = dataset_files(folder)
    if "items" not in files:
        raise FileNotFoundError(
            f"dataset folder {str(folder)!r} has no items table; expected items.parquet or "
            "items.csv"
        )
    small = {n: read_table(n, f) for n, f in files.items() if n != "events"}
    check_dataset(small, context=f"dataset {str(folder)!r}")
    with dask_client(scheduler, announce=progress) as client:
        events = None
        event_rows = 0
        if "events" in files:
            pieces = table_parts(files["events"])
            if pieces[0].file.suffix == ".parquet":
                schema = pq.read_schema(pieces[0].file).empty_table().to_pandas()
                meta = coerce_table("events", schema)
                meta[ROW] = pd.Series(dtype="int64")
            else:
                meta = pieces[0].read("events").iloc[:0].assign(**{ROW: np.int64(0)})
            [known] = client.scatter([small["items"]["item_id"]], broadcast=True, hash=False)
            delayed = [dask.delayed(_read_checked)(p, known) for p in pieces]
            events = dd.from_delayed(delayed, meta=meta, verify_meta=False)
            events = client.persist(events)
            event_rows = len(events)  # the persisted partitions' lengths (a CSV's too)
        n = npartitions or bucket_count(event_rows, n_workers(client))
        if as_of_max is None and events is not None and "ts" in meta.columns:
            as_of_max_ns, outliers = end_of_data_on(events, event_rows, small)
        else:
            as_of_max_ns, outliers = end_of_data(small, as_of_max)
        if on_outliers is not None:
            on_outliers(outliers)
        if on_event_rows is not None and events is not None:
            on_event_rows(event_rows)
        frame = _snapshots_on(
            client,
            events,
            small,
            n,
            horizons,
            include_moderation,
            as_of_max_ns,
            progress,
            step=step,
            select=select,
        )
    return frame, small


def end_of_data_on(events: Any, count: int, small: Mapping[str, pd.DataFrame]) -> tuple[int, Any]:
    """`features.snapshot.end_of_data` of the small tables and the `count` events on the
    cluster (a dask DataFrame with `ts`, validated: never null, and ROW): only the events'
    extremes and late rows come back to the client. Shared by the snapshots and by
    `surfacer data validate --engine dask` (`features.dataset_dask`), which warn of the
    same late rows."""
    import dask

    from features.pit import to_ns
    from features.timespan import (
        MAX_EXAMPLE_ROWS,
        LateRows,
        count_times,
        isolated_end,
        latest_time,
        needed,
        outliers_at,
        pooled_extremes,
    )

    ts = events["ts"]
    k = needed(count + count_times(small))
    low, high = dask.compute(ts.nsmallest(k), ts.nlargest(k))
    low, high = to_ns(low.dropna()), to_ns(high.dropna())
    found = isolated_end(*pooled_extremes(small, [(low, high, count)]))
    if found is None:
        return max([latest_time(small), *high.tolist()]), None
    end = pd.Timestamp(found[0], unit="ns", tz="UTC")
    late = events[events["ts"] > end]
    n_late, rows, first = dask.compute(
        late["ts"].count(), late[ROW].nsmallest(MAX_EXAMPLE_ROWS), late["ts"].min()
    )
    first_ns = int(pd.Timestamp(first).as_unit("ns").value) if n_late else 0
    more = [LateRows("events", "ts", tuple(sorted(int(r) for r in rows)), int(n_late), first_ns)]
    return found[0], outliers_at(small, *found, more=more if n_late else ())
