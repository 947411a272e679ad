"""Segment series: (numerator, denominator) count matrices per segment and hour.

A segment is a tuple of (dimension, value) pairs in `DIMENSIONS` order: () is the whole
platform, one pair a single dimension, two pairs a dimension pair. Rows of the matrices are
segments, columns hourly buckets on a grid that starts and ends at midnight UTC, so any coarser
scale (6 h, daily) is a reshape-and-sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from discovery.signals import DIMENSIONS, ItemDimensions

Segment = tuple[tuple[str, str], ...]


def segment_key(segment: Segment) -> str:
    """Readable, stable key: `region=BR,format=live`; `all` for the whole platform."""
    return ",".join(f"{d}={v}" for d, v in segment) or "all"


def parse_segment(text: str) -> Segment:
    """Parse `region=BR,format=live` into a canonical segment (dimension order of DIMENSIONS)."""
    text = text.strip()
    if text in ("", "all"):
        return ()
    pairs: dict[str, str] = {}
    for part in text.split(","):
        if "=" not in part:
            raise ValueError(
                f"segment part {part!r} is not dimension=value (e.g. region=BR,format=live)"
            )
        dim, value = (s.strip() for s in part.split("=", 1))
        if dim not in DIMENSIONS:
            raise ValueError(
                f"unknown segment dimension {dim!r}; expected one of {', '.join(DIMENSIONS)}"
            )
        pairs[dim] = value
    return canonical(pairs.items())


def canonical(pairs: Iterable[tuple[str, str]]) -> Segment:
    """Sort (dimension, value) pairs into DIMENSIONS order."""
    order = {d: i for i, d in enumerate(DIMENSIONS)}
    return tuple(sorted(((str(d), str(v)) for d, v in pairs), key=lambda p: order.get(p[0], 99)))


def contains(general: Segment, specific: Segment) -> bool:
    """True when every (dimension, value) of `general` is in `specific` (specific ⊆ general as sets of items)."""
    return set(general) <= set(specific)


@dataclass
class SegmentSeries:
    """Hourly count matrices for one signal over many segments."""

    segments: list[Segment]
    start: pd.Timestamp  # the first hourly bucket (midnight UTC)
    num: np.ndarray  # (n_segments, n_hours)
    den: np.ndarray

    @property
    def n_hours(self) -> int:
        return self.num.shape[1]

    def index(self, segment: Segment) -> int:
        return self.segments.index(segment)

    def times(self, width_h: int = 1) -> pd.DatetimeIndex:
        return pd.date_range(self.start, periods=self.n_hours // width_h, freq=f"{width_h}h")

    def aggregate(self, width_h: int) -> tuple[np.ndarray, np.ndarray]:
        """Counts summed into buckets of `width_h` hours (width must divide 24)."""
        if 24 % width_h:
            raise ValueError(f"bucket width {width_h} h does not divide a day")
        s, t = self.num.shape
        return (
            self.num.reshape(s, t // width_h, width_h).sum(axis=2),
            self.den.reshape(s, t // width_h, width_h).sum(axis=2),
        )


def hour_grid(units: Sequence[pd.DataFrame]) -> tuple[pd.Timestamp, int]:
    """Start (midnight) and length in hours of a whole-day grid covering every unit's ts."""
    lo = min(u["ts"].min() for u in units if len(u))
    hi = max(u["ts"].max() for u in units if len(u))
    start = pd.Timestamp(lo).floor("D")
    end = pd.Timestamp(hi).floor("D") + pd.Timedelta(days=1)
    return start, int((end - start) / pd.Timedelta(hours=1))


Counts = dict[tuple[str, ...], pd.DataFrame]


def build_series(
    units: pd.DataFrame,
    dims: ItemDimensions,
    *,
    start: pd.Timestamp,
    n_hours: int,
    pairs: bool = True,
    platform_den: bool = False,
    min_num: float = 10.0,
    min_pair_num: float = 15.0,
) -> SegmentSeries:
    """Series for the whole platform, every single-dimension value and (frequent) pairs.

    Segments whose total numerator over the whole range is below `min_num` (`min_pair_num` for
    pairs) are left out: they cannot reach significance and only dilute false-alarm control.
    The work is `series_counts` (sums per segment and hour, additive over any split of the
    units) then `series_from_counts`; the Dask engine (discovery.series_dask) runs the first
    on contiguous chunks of the units and adds them up with `combine_counts`.
    """
    counts = series_counts(units, dims, start=start, n_hours=n_hours, pairs=pairs)
    return series_from_counts(
        counts,
        start=start,
        n_hours=n_hours,
        platform_den=platform_den,
        min_num=min_num,
        min_pair_num=min_pair_num,
    )


def series_combos(dims: ItemDimensions, pairs: bool) -> list[tuple[str, ...]]:
    """The dimension tuples a series is kept for: () (the platform), singles, pairs."""
    available = dims.dimensions
    combos: list[tuple[str, ...]] = [(d,) for d in available]
    if pairs:
        combos += list(combinations(available, 2))
    return [(), *combos]


def series_counts(
    units: pd.DataFrame,
    dims: ItemDimensions,
    *,
    start: pd.Timestamp,
    n_hours: int,
    pairs: bool = True,
) -> Counts:
    """(num, den) summed per (segment values, hour) for every combo, in order of first
    appearance; a combo whose source is empty (no hashtags) is absent."""
    frame = units.merge(dims.items, on="item_id", how="inner")
    hour = ((frame["ts"] - start) / pd.Timedelta(hours=1)).astype(int).to_numpy()
    frame = frame.assign(_h=hour)
    frame = frame[(frame["_h"] >= 0) & (frame["_h"] < n_hours)]
    with_tags = (
        frame.merge(dims.hashtags, on="item_id", how="inner") if len(dims.hashtags) else None
    )
    counts: Counts = {}
    for keys in series_combos(dims, pairs):
        source = with_tags if "hashtag" in keys else frame
        if source is None:
            continue
        counts[keys] = source.groupby([*keys, "_h"], as_index=False, sort=False)[
            ["num", "den"]
        ].sum()
    return counts


def combine_counts(parts: Sequence[Counts]) -> Counts:
    """Counts of contiguous chunks of the units (in order) -> the counts of all of them."""
    keys = list(dict.fromkeys(k for part in parts for k in part))
    out: Counts = {}
    for combo in keys:
        frames = [part[combo] for part in parts if combo in part]
        out[combo] = (
            pd.concat(frames, ignore_index=True)
            .groupby([*combo, "_h"], as_index=False, sort=False)[["num", "den"]]
            .sum()
        )
    return out


def series_from_counts(
    counts: Counts,
    *,
    start: pd.Timestamp,
    n_hours: int,
    platform_den: bool = False,
    min_num: float = 10.0,
    min_pair_num: float = 15.0,
) -> SegmentSeries:
    """The segment count matrices from `series_counts` (see `build_series`)."""
    segments: list[Segment] = [()]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    nums: list[np.ndarray] = []
    dens: list[np.ndarray] = []

    def add(grouped: pd.DataFrame, keys: list[str], threshold: float) -> None:
        totals = grouped.groupby(keys, sort=False)["num"].transform("sum")
        grouped = grouped[totals.to_numpy() >= threshold]
        if grouped.empty:
            return
        gb = grouped.groupby(keys, sort=False)
        codes = gb.ngroup().to_numpy()
        uniques = gb.size().index  # same order as ngroup with sort=False
        base = len(segments)
        for u in uniques:
            values = u if isinstance(u, tuple) else (u,)
            segments.append(canonical(zip(keys, values, strict=True)))
        rows.append(codes + base)
        cols.append(grouped["_h"].to_numpy())
        nums.append(grouped["num"].to_numpy(dtype=float))
        dens.append(grouped["den"].to_numpy(dtype=float))

    top = counts[()]
    rows.append(np.zeros(len(top), dtype=int))
    cols.append(top["_h"].to_numpy())
    nums.append(top["num"].to_numpy(dtype=float))
    dens.append(top["den"].to_numpy(dtype=float))
    for keys, grouped in counts.items():
        if keys:
            add(grouped, list(keys), min_num if len(keys) == 1 else min_pair_num)
    num = np.zeros((len(segments), n_hours))
    den = np.zeros((len(segments), n_hours))
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    np.add.at(num, (r, c), np.concatenate(nums))
    np.add.at(den, (r, c), np.concatenate(dens))
    if platform_den:
        den[:] = den[0]  # every segment's count is a rate per item posted on the platform
    return SegmentSeries(segments=segments, start=start, num=num, den=den)


def segment_mask(frame: pd.DataFrame, dims: ItemDimensions, segment: Segment) -> np.ndarray:
    """Rows of a units frame (with item dimension columns merged) that belong to `segment`."""
    mask = np.ones(len(frame), dtype=bool)
    for dim, value in segment:
        if dim == "hashtag":
            ids = set(dims.hashtags.loc[dims.hashtags["hashtag"] == value, "item_id"])
            mask &= frame["item_id"].isin(ids).to_numpy()
        elif dim in frame.columns:
            mask &= (frame[dim].astype("str") == value).to_numpy()
        else:
            raise ValueError(f"segment dimension {dim!r} is not available in this dataset")
    return mask


def series_for(
    units: pd.DataFrame,
    dims: ItemDimensions,
    segment: Segment,
    *,
    start: pd.Timestamp,
    n_hours: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Hourly (num, den) of any one segment, computed directly from units."""
    frame = units.merge(dims.items, on="item_id", how="inner")
    frame = frame[segment_mask(frame, dims, segment)]
    hour = ((frame["ts"] - start) / pd.Timedelta(hours=1)).astype(int).to_numpy()
    keep = (hour >= 0) & (hour < n_hours)
    num = np.bincount(
        hour[keep], weights=frame["num"].to_numpy(dtype=float)[keep], minlength=n_hours
    )
    den = np.bincount(
        hour[keep], weights=frame["den"].to_numpy(dtype=float)[keep], minlength=n_hours
    )
    return num, den


__all__ = [
    "DIMENSIONS",
    "Segment",
    "SegmentSeries",
    "build_series",
    "canonical",
    "combine_counts",
    "contains",
    "hour_grid",
    "parse_segment",
    "segment_key",
    "segment_mask",
    "series_counts",
    "series_for",
    "series_from_counts",
]
