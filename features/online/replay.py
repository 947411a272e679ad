"""A dataset as the platform would have sent it: every row in event-time order.

`timeline` orders the rows of the tables the online store takes by when the platform
knows them: creator profiles first (static, and read whole by the batch snapshots), items
at created_at, events and moderation at ts, appeals once resolved (else when filed).
`surfacer replay` and the parity tests both walk it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from features.online.ops import ONLINE_TABLES
from features.pit import to_ns


def row_times(name: str, frame: pd.DataFrame) -> np.ndarray:
    """When a row of a table is known to the platform (ns)."""
    if name == "creators":
        return np.full(len(frame), np.iinfo(np.int64).min, dtype=np.int64)
    if name == "items":
        return to_ns(frame["created_at"])
    if name == "appeals":
        filed = to_ns(frame["filed_at"])
        resolved = frame["resolved_at"]
        res = np.where(resolved.notna(), to_ns(resolved.fillna(frame["filed_at"])), filed)
        return np.maximum(filed, res)
    return to_ns(frame["ts"])


def timeline(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """(time, table, row) of every row the online store takes, in event-time order (ties:
    table order of ONLINE_TABLES, then row order)."""
    parts = []
    for t, name in enumerate(ONLINE_TABLES):
        frame = tables.get(name)
        if frame is None or not len(frame):
            continue
        parts.append(
            pd.DataFrame({"time": row_times(name, frame), "table": t, "row": np.arange(len(frame))})
        )
    if not parts:
        return pd.DataFrame({"time": [], "table": [], "row": []}, dtype=np.int64)
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["time", "table", "row"], kind="stable").reset_index(drop=True)


def chunks(
    tables: Mapping[str, pd.DataFrame],
    order: pd.DataFrame,
    start: int,
    end: int,
    max_rows: int,
    *,
    by_table: bool = False,
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Rows order[start:end] as (table, frame) runs of consecutive same-table rows, each at
    most max_rows long, in order. `by_table`: one run per table (in ONLINE_TABLES order,
    rows in time order within it), far fewer requests; the store's state is the same
    whatever the order between tables (only moderation rows of equal time are ordered, and
    they keep their order)."""
    if end <= start:
        return
    chunk = order.iloc[start:end]
    if by_table:
        chunk = chunk.sort_values("table", kind="stable")
    table_codes = chunk["table"].to_numpy()
    rows = chunk["row"].to_numpy()
    cut = np.flatnonzero(table_codes[1:] != table_codes[:-1]) + 1
    for seg in np.split(np.arange(len(chunk)), cut):
        name = ONLINE_TABLES[int(table_codes[seg[0]])]
        for lo in range(0, seg.size, max_rows):
            part = seg[lo : lo + max_rows]
            yield name, tables[name].iloc[rows[part]].reset_index(drop=True)
