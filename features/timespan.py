"""Where the data ends: the latest timestamp of the bulk of the data, not of a stray row.

Snapshots keep a row only when its window was observed (as_of <= the end of data), so the
end of data decides which rows count as complete: one event dated 2099 would make every
item's 24 h row look observed, and training would read those empty windows as negatives.

The rule (`isolated_end`), relative to the data's own span and nothing else: pool every
timestamp that bounds the window (`WINDOW_TIME_COLUMNS`), sorted t[0] <= ... <= t[n-1].
The last k of them are *isolated* when the empty stretch before them, t[n-k] - t[n-k-1],
is longer than all the data before it, measured from its 1st percentile (so a stray row in
the far past does not stretch the span): t[n-k-1] - t[n // 100]. At most 1% of the
timestamps (k <= n // 100, so only data with at least 100 timestamps is judged) can be
isolated; the largest such k is taken, and the end of data is t[n-k-1]. A row is late when
one of its window timestamps is after it. Late rows are reported (`surfacer data
validate` prints them as warnings) and excluded from the end of data; an explicit
`as_of_max` is used as given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.pit import to_ns
from features.validate import Problem

# Timestamp columns that bound the data window when as_of_max is not given.
WINDOW_TIME_COLUMNS = {
    "items": ("created_at",),
    "events": ("ts",),
    "moderation": ("ts",),
    "appeals": ("filed_at", "resolved_at"),
}
# At most this share of the timestamps can be isolated (and only n // 100 of them).
MAX_ISOLATED_SHARE = 100  # 1 in 100
NS_PER_DAY = 86_400 * 10**9
MAX_EXAMPLE_ROWS = 5


def isolated_end(head: np.ndarray, tail: np.ndarray, n: int) -> tuple[int, int] | None:
    """(end of the bulk, the gap after it) in ns when the data ends in an isolated tail.

    `head` and `tail` are the n // 100 + 1 smallest and largest of the n pooled timestamps
    (any order); None when no tail is isolated (see the module doc for the rule).
    """
    k_max = n // MAX_ISOLATED_SHARE
    if k_max < 1:
        return None
    start = int(np.sort(head)[k_max])
    t = np.sort(tail)[-(k_max + 1) :]
    gaps = np.diff(t)  # gaps[i] is the empty stretch after t[i]
    span = t[:-1] - start
    isolated = np.flatnonzero((span > 0) & (gaps > span))
    if not isolated.size:
        return None
    i = int(isolated[0])  # the earliest cut: the largest isolated tail
    return int(t[i]), int(gaps[i])


@dataclass(frozen=True)
class LateRows:
    """Rows of one table whose window timestamp is after the end of data."""

    table: str
    column: str
    rows: tuple[int, ...]  # the first few, 0-based positions in the table
    count: int
    example: int  # the earliest late timestamp, ns


@dataclass(frozen=True)
class TimeOutliers:
    """Timestamps isolated far beyond the rest of the data, and where the data ends."""

    end_ns: int
    gap_ns: int
    late: tuple[LateRows, ...]  # per column
    rows: Mapping[str, int]  # late rows per table (a row once, however many columns are late)

    def describe(self) -> str:
        end = pd.Timestamp(self.end_ns, tz="UTC").isoformat()
        return f"after {self.gap_ns / NS_PER_DAY:,.1f} days without data (the data ends {end})"

    def problems(self) -> list[Problem]:
        """One warning per late column, in `Problem` form."""
        return [
            Problem(
                r.table,
                r.column,
                f"dated far beyond the rest of the data, {self.describe()}, e.g. "
                f"{pd.Timestamp(r.example, tz='UTC').isoformat()}; ignored as the end of data "
                "(snapshot rows after the end are not complete)",
                list(r.rows),
                r.count,
            )
            for r in self.late
        ]


def window_times(tables: Mapping[str, pd.DataFrame]) -> Iterable[tuple[str, str, np.ndarray]]:
    """(table, column, int64 ns per row, NaT as int64 min) of each window column present."""
    for name, columns in WINDOW_TIME_COLUMNS.items():
        frame = tables.get(name)
        if frame is None or len(frame) == 0:
            continue
        for col in columns:
            if col in frame.columns:
                yield name, col, to_ns(frame[col])


_NAT = np.iinfo(np.int64).min


def extremes(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest and k largest of `values` (unsorted; fewer when there are fewer)."""
    if values.size <= k:
        return values, values
    return np.partition(values, k - 1)[:k], np.partition(values, values.size - k)[-k:]


def late_rows(table: str, column: str, ns: np.ndarray, end_ns: int) -> LateRows | None:
    late = np.flatnonzero(ns > end_ns)
    if not late.size:
        return None
    rows = tuple(int(i) for i in late[:MAX_EXAMPLE_ROWS])
    return LateRows(table, column, rows, int(late.size), int(ns[late].min()))


def time_outliers(tables: Mapping[str, pd.DataFrame]) -> TimeOutliers | None:
    """The isolated late rows of in-memory tables, or None when the data has none."""
    found = isolated_end(*pooled_extremes(tables))
    return None if found is None else outliers_at(tables, *found)


def pooled_extremes(
    tables: Mapping[str, pd.DataFrame], more: Iterable[tuple[np.ndarray, np.ndarray, int]] = ()
) -> tuple[np.ndarray, np.ndarray, int]:
    """(head, tail, n) for `isolated_end` over the tables' window timestamps, plus `more`:
    the (smallest, largest, count) of timestamps held elsewhere (e.g. events on a cluster,
    which must give at least `needed(n)` of each)."""
    columns = [ns[ns != _NAT] for _, _, ns in window_times(tables)]
    more = list(more)
    n = sum(v.size for v in columns) + sum(m[2] for m in more)
    parts = [extremes(v, needed(n)) for v in columns] + [(m[0], m[1]) for m in more]
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), 0
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), n


def count_times(tables: Mapping[str, pd.DataFrame]) -> int:
    """How many window timestamps (not null) the tables hold."""
    return sum(int((ns != _NAT).sum()) for _, _, ns in window_times(tables))


def needed(n: int) -> int:
    """How many of the smallest and largest timestamps `isolated_end` reads out of n."""
    return n // MAX_ISOLATED_SHARE + 1


def outliers_at(
    tables: Mapping[str, pd.DataFrame], end_ns: int, gap_ns: int, more: Iterable[LateRows] = ()
) -> TimeOutliers:
    """The tables' rows dated after `end_ns` (plus `more`, found elsewhere)."""
    late = list(more)
    per_table: dict[str, np.ndarray] = {}
    for t, c, ns in window_times(tables):
        found = late_rows(t, c, ns, end_ns)
        if found is not None:
            late.append(found)
            per_table[t] = per_table.get(t, np.zeros(ns.size, dtype=bool)) | (ns > end_ns)
    late.sort(key=lambda r: list(WINDOW_TIME_COLUMNS).index(r.table))
    rows = {r.table: r.count for r in late if r.table not in per_table}
    rows |= {t: int(mask.sum()) for t, mask in per_table.items()}
    return TimeOutliers(end_ns, gap_ns, tuple(late), rows)


def latest_time(tables: Mapping[str, pd.DataFrame]) -> int:
    """The latest window timestamp of the tables in ns (int64 min when there is none)."""
    latest = _NAT
    for _, _, ns in window_times(tables):
        if ns.size:
            latest = max(latest, int(ns.max()))
    return latest


def drop_late(
    tables: Mapping[str, pd.DataFrame], outliers: TimeOutliers | None
) -> dict[str, pd.DataFrame]:
    """The tables without their rows dated after the end of data (as they are without)."""
    if outliers is None:
        return dict(tables)
    out = dict(tables)
    for name in outliers.rows:
        if name not in tables:
            continue
        df = tables[name]
        late = np.zeros(len(df), dtype=bool)
        for col in WINDOW_TIME_COLUMNS[name]:
            if col in df.columns:
                late |= to_ns(df[col]) > outliers.end_ns
        out[name] = df.loc[~late]
    return out
