"""Point-in-time snapshots: one row per (item, as_of) holding only what was known before as_of.

`build_snapshots` is the entry point for both engines: pandas runs the kernel
(`features.snapshot_frame.snapshot_frame`) on the whole data, Dask
(`features.snapshot_dask`) on each item-partition of the events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.progress import Progress
from features.schema import DEFAULT_HORIZONS_H
from features.snapshot_frame import STAGES, snapshot_frame
from features.timespan import TimeOutliers, latest_time, time_outliers

ENGINES = ("pandas", "dask")
MAX_HORIZON_H = 24 * 366 * 10
# Called once with the late rows ignored as the end of data (None: none, or as_of_max given).
OnOutliers = Callable[[TimeOutliers | None], None]


def build_snapshots(
    tables: Mapping[str, pd.DataFrame],
    horizons_h: Sequence[float] = DEFAULT_HORIZONS_H,
    *,
    include_moderation: bool = True,
    as_of_max: pd.Timestamp | None = None,
    engine: str = "pandas",
    scheduler: str | None = None,
    progress: bool = False,
    on_outliers: OnOutliers | None = None,
) -> pd.DataFrame:
    """Snapshot rows for every item (and moderation action) from raw tables.

    Rows whose as_of is after `as_of_max` (default: the latest timestamp in the data,
    ignoring timestamps isolated far beyond the rest, see `features.timespan`) are dropped,
    since their window is not complete yet; `on_outliers` gets those ignored rows (a
    `TimeOutliers`, or None). `engine="dask"` partitions events by
    item_id and runs on `scheduler` (an address, or None for a LocalCluster with a worker
    per available core).
    """
    horizons = check_horizons(horizons_h)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if "items" not in tables:
        raise ValueError(f"snapshots need the 'items' table; got tables {sorted(tables)}")
    as_of_max_ns, outliers = end_of_data(tables, as_of_max)
    if on_outliers is not None:
        on_outliers(outliers)
    if engine == "dask":
        from features.snapshot_dask import build_snapshots_dask

        return build_snapshots_dask(
            tables,
            horizons,
            include_moderation=include_moderation,
            as_of_max_ns=as_of_max_ns,
            scheduler=scheduler,
            progress=progress,
        )
    with Progress("snapshots", len(STAGES), unit="stage", enabled=progress) as bar:

        def on_stage(name: str) -> None:
            # called as a stage starts: the one before it is done
            if started:
                bar.update(1)
            started.append(name)
            bar.status(name)

        started: list[str] = []
        frame = snapshot_frame(
            tables,
            horizons,
            include_moderation=include_moderation,
            as_of_max_ns=as_of_max_ns,
            on_stage=on_stage,
        )
        bar.update(1)
        return frame


@dataclass(frozen=True)
class SnapshotBuild:
    """What `build_snapshot_file` wrote: where, how many rows, and how long it took."""

    path: Path
    rows: int
    items: int
    seconds: float
    outliers: TimeOutliers | None = None  # rows ignored as the end of data


def build_snapshot_file(
    data: str | Path,
    out: str | Path,
    horizons_h: Sequence[float] = DEFAULT_HORIZONS_H,
    *,
    include_moderation: bool = True,
    as_of_max: pd.Timestamp | None = None,
    engine: str = "pandas",
    scheduler: str | None = None,
    progress: bool = False,
) -> SnapshotBuild:
    """Load a dataset folder, build its snapshots and write them to one Parquet file.

    The file is written next to `out` and renamed into place, so readers never see half a
    file; an existing `out` is replaced.
    """
    from features.io import load_dataset

    out = Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"snapshot output must be a .parquet file, got {str(out)!r}")
    if out.exists() and out.is_dir():
        raise ValueError(f"snapshot output {str(out)!r} is a folder; expected a .parquet file")
    start = time.perf_counter()
    found: list[TimeOutliers | None] = []
    if engine == "dask" and Path(data).is_dir():
        # events are read, validated and shuffled by the workers, never whole on the client
        from features.snapshot_dask import snapshots_from_folder

        frame, tables = snapshots_from_folder(
            data,
            horizons_h,
            include_moderation=include_moderation,
            as_of_max=as_of_max,
            scheduler=scheduler,
            progress=progress,
            on_outliers=found.append,
        )
    else:
        tables = load_dataset(data, progress=progress)
        frame = build_snapshots(
            tables,
            horizons_h,
            include_moderation=include_moderation,
            as_of_max=as_of_max,
            engine=engine,
            scheduler=scheduler,
            progress=progress,
            on_outliers=found.append,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    return SnapshotBuild(
        out, len(frame), len(tables["items"]), seconds, found[0] if found else None
    )


def check_horizons(horizons_h: Sequence[float]) -> tuple[float, ...]:
    """Horizons as positive, distinct floats (hours after posting)."""
    horizons = tuple(float(h) for h in horizons_h)
    if not horizons:
        raise ValueError("horizons_h must name at least one horizon (hours), got none")
    bad = [h for h in horizons if not np.isfinite(h) or h <= 0]
    if bad:
        raise ValueError(f"horizons_h must be positive hours, got {bad}")
    # as_of is created_at + horizon in int64 nanoseconds: far beyond this it wraps around to
    # a time centuries before the post (a silently wrong, point-in-time-breaking row)
    huge = [h for h in horizons if h > MAX_HORIZON_H]
    if huge:
        raise ValueError(
            f"horizons_h must be at most {MAX_HORIZON_H:,} hours (10 years), got {huge}"
        )
    if len(set(horizons)) != len(horizons):
        raise ValueError(f"horizons_h must be distinct, got {list(horizons)}")
    return horizons


def resolve_as_of_max(tables: Mapping[str, pd.DataFrame], as_of_max: Any = None) -> int:
    """The last complete instant, in ns: `as_of_max` if given, else the end of data (the
    latest timestamp, ignoring timestamps isolated far beyond the rest: `features.timespan`)."""
    return end_of_data(tables, as_of_max)[0]


def end_of_data(
    tables: Mapping[str, pd.DataFrame], as_of_max: Any = None
) -> tuple[int, TimeOutliers | None]:
    """`resolve_as_of_max`, and the isolated late timestamps it ignored (None: none, or
    `as_of_max` was given and is used as it is)."""
    if as_of_max is not None:
        ts = pd.Timestamp(as_of_max)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return int(ts.as_unit("ns").value), None
    outliers = time_outliers(tables)
    return (latest_time(tables) if outliers is None else outliers.end_ns), outliers


def parse_horizons(text: str) -> tuple[float, ...]:
    """'1,6,24' -> (1.0, 6.0, 24.0), for the CLI."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"horizons must be comma-separated hours like '1,6,24', got {text!r}"
        ) from None
    return check_horizons(values)
