"""Point-in-time counting primitives on integer codes: "how many (and what sum) before t".

Snapshots ask, for many (group, t) pairs at once, how many events of a group happened
strictly before t. Sorting events once by a combined int64 key (group, time) turns each
question into one `np.searchsorted`, so no per-item Python loop and no string groupby runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_KEY_LIMIT = 2**62  # combined keys stay well inside int64
_NS_UNITS = (1_000_000_000, 1_000_000, 1_000, 1)  # s, ms, us, ns grids tried in this order


def to_ns(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Timestamps (any unit, tz-aware or naive-as-UTC) as int64 ns since the epoch; NaT -> min int64."""
    s = pd.Series(values) if not isinstance(values, pd.Series) else values
    if not isinstance(s.dtype, pd.DatetimeTZDtype) and s.dtype.kind != "M":
        s = pd.to_datetime(s, utc=True)
    return np.asarray(s.dt.as_unit("ns").array.asi8, dtype=np.int64)


def codes_for(
    values: pd.Series | np.ndarray, categories: Sequence[object] | pd.Index
) -> np.ndarray:
    """Position of each value in `categories` (int64, -1 when unknown or null).

    Arrow-backed strings are looked up with Arrow's `index_in` (one hash probe per row);
    anything else is factorized first so only the distinct values are looked up.
    """
    to_arrow = getattr(getattr(values, "array", None), "__arrow_array__", None)
    if to_arrow is not None and isinstance(values.dtype, pd.StringDtype):
        chunked = to_arrow()
        cat_arrow = getattr(getattr(categories, "array", None), "__arrow_array__", None)
        if cat_arrow is not None:  # e.g. an Index of item ids: no Python-level loop
            value_set = pa.chunked_array(cat_arrow()).combine_chunks().cast(chunked.type)
        else:
            value_set = pa.array([str(c) for c in categories], type=chunked.type)
        found = pc.fill_null(pc.index_in(chunked, value_set=value_set), -1)
        return found.to_numpy().astype(np.int64, copy=False)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    lookup = pd.Index(categories).get_indexer(uniques).astype(np.int64)
    # Appending -1 maps the NA sentinel (-1) to "unknown" through the same take.
    return np.append(lookup, -1)[codes]


class TimeGrid:
    """Order-preserving map of int64 ns timestamps onto small offsets 0..size-1.

    Uses the coarsest exact unit (s, ms, us, ns) the data sits on, or dense ranks when even
    that range is too wide to pack with a group code into one int64 key.
    """

    def __init__(self, ts_ns: np.ndarray, n_groups: int) -> None:
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        self.uniques: np.ndarray | None = None
        if ts_ns.size == 0:
            self.origin, self.unit, self.size = 0, 1, 1
            return
        self.origin = int(ts_ns.min())
        rel = ts_ns - self.origin
        span = int(rel.max())
        for unit in _NS_UNITS:
            if span // unit + 1 > _KEY_LIMIT // max(n_groups + 1, 1):
                continue  # even this unit is too wide; finer ones are wider still
            # A sample rules most units out before the full pass over every timestamp.
            if unit == 1 or not (np.any(rel[:4096] % unit) or np.any(rel % unit)):
                self.unit, self.size = unit, span // unit + 1
                return
        # Dense ranks always fit: at most len(ts) distinct values. (Sort-based: numpy's
        # hash-based np.unique is far slower on millions of int64.)
        sorted_ts = np.sort(ts_ns)
        distinct = np.ones(sorted_ts.size, dtype=bool)
        np.not_equal(sorted_ts[1:], sorted_ts[:-1], out=distinct[1:])
        self.uniques = sorted_ts[distinct]
        del sorted_ts, distinct
        self.unit, self.size = 0, int(self.uniques.size)
        if (n_groups + 1) * (self.size + 1) > _KEY_LIMIT:
            raise ValueError(f"cannot pack {n_groups} groups x {self.size} times into int64 keys")

    def offsets(self, ts_ns: np.ndarray) -> np.ndarray:
        """Exact offsets of data timestamps (those the grid was built from)."""
        if self.uniques is not None:
            return np.searchsorted(self.uniques, ts_ns, side="left").astype(np.int64)
        rel = np.asarray(ts_ns, dtype=np.int64) - self.origin
        if self.unit > 1:
            rel //= self.unit
        return rel

    def to_ns(self, offsets: np.ndarray) -> np.ndarray:
        """Timestamps back from exact offsets."""
        if self.uniques is not None:
            return self.uniques[offsets]
        return np.asarray(offsets, dtype=np.int64) * self.unit + self.origin

    def query(self, t_ns: np.ndarray) -> np.ndarray:
        """Offset q with: data offset < q  <=>  data timestamp < t (clipped to 0..size)."""
        t_ns = np.asarray(t_ns, dtype=np.int64)
        if self.uniques is not None:
            return np.searchsorted(self.uniques, t_ns, side="left").astype(np.int64)
        # ceil((t - origin) / unit) without float rounding; clip first so nothing overflows.
        rel = (
            np.clip(t_ns, self.origin - self.unit, self.origin + self.size * self.unit)
            - self.origin
        )
        return np.clip(-((-rel) // self.unit), 0, self.size)


class GroupedTimes:
    """Events sorted by (group, time), answering counts and sums over `time < t` per group.

    `values` are per-event numbers whose prefix sums are kept (NaN counts as 0; keep a
    separate indicator column to count the non-null ones). With values or `keep_order`,
    `order` holds the input positions in sorted order (stable: ties keep input order).

    Prefix sums restart at each group, so a group's sums add only its own events, in the
    same order whatever else is in the frame: the Dask engine, which sees a subset of the
    items per partition, gets the very same floats as the pandas engine.
    """

    def __init__(
        self,
        group: np.ndarray,
        ts_ns: np.ndarray,
        n_groups: int,
        values: Mapping[str, np.ndarray] | None = None,
        keep_order: bool = False,
    ) -> None:
        group = np.asarray(group, dtype=np.int64)
        self.n_groups = int(n_groups)
        self.grid = TimeGrid(ts_ns, self.n_groups)
        self.stride = self.grid.size + 1
        # Built in place: at 12M events every temporary array costs ~100 MB.
        key = group * self.stride
        off = self.grid.offsets(ts_ns)
        key += off
        del off
        self.sums: dict[str, np.ndarray] = {}
        self.order: np.ndarray | None = None
        if values or keep_order:
            self.order = np.argsort(key, kind="stable")
            self.key = key[self.order]
            del key
            sorted_group = group[self.order] if values else None
            for name, v in (values or {}).items():
                taken = np.asarray(v, dtype=np.float64)[self.order]
                np.nan_to_num(taken, copy=False, nan=0.0)
                cum = np.empty(taken.size + 1, dtype=np.float64)
                cum[0] = 0.0
                # cum[i + 1]: the sum of the group's events up to sorted position i
                cum[1:] = pd.Series(taken).groupby(sorted_group, sort=False).cumsum().to_numpy()
                self.sums[name] = cum
                del taken
        else:
            key.sort()
            self.key = key
        # Group starts from a bincount: cheaper than searching each group boundary.
        self.starts = np.zeros(self.n_groups + 1, dtype=np.int64)
        np.cumsum(np.bincount(group, minlength=self.n_groups), out=self.starts[1:])

    def __len__(self) -> int:
        return int(self.key.size)

    def position(self, group: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        """Index one past the last event of `group` strictly before `t`."""
        q = np.asarray(group, dtype=np.int64) * self.stride + self.grid.query(t_ns)
        return np.searchsorted(self.key, q, side="left")

    def count_before(self, group: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        """Events of `group` with time < t."""
        return self.position(group, t_ns) - self.starts[group]

    def count_between(self, group: np.ndarray, lo_ns: np.ndarray, hi_ns: np.ndarray) -> np.ndarray:
        """Events of `group` with lo <= time < hi."""
        return self.position(group, hi_ns) - self.position(group, lo_ns)

    def sum_before(self, name: str, group: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        """Sum of value `name` over events of `group` with time < t."""
        cum = self.sums[name]
        pos = self.position(group, t_ns)
        return np.where(pos > self.starts[group], cum[pos], 0.0)

    def first_times(self, member: np.ndarray, ts_ns: np.ndarray) -> GroupedTimes:
        """Earliest event of each distinct (group, member) pair, as a GroupedTimes of groups.

        A distinct-member count before t is then a plain count before t. `member` and
        `ts_ns` are per input event (as given to the constructor); null members (-1) are
        ignored. Needs `order` (built with values or keep_order).
        """
        if self.order is None:
            raise ValueError("first_times needs a GroupedTimes built with keep_order=True")
        n = self.order.size
        if n == 0:
            return GroupedTimes(np.zeros(0, np.int64), np.zeros(0, np.int64), self.n_groups)
        group = self.key // self.stride  # groups in sorted order
        m = np.asarray(member, dtype=np.int64)[self.order]
        # Rank within the group by time: an event's position in its (group, ts) run.
        rank = np.arange(n, dtype=np.int64)
        rank -= self.starts[group]
        width = int(rank.max()) + 1
        n_members = max(int(m.max()) + 1, 1)
        known = m >= 0
        if (self.n_groups + 1) * n_members * width < _KEY_LIMIT:
            # Packed (group, member, rank) in place over `group`: one sort, few temporaries.
            key = group
            key *= n_members
            key += m
            key *= width
            key += rank
            del m, rank
            if not known.all():
                key = key[known]
            key.sort()
            pair = key // width
            first = np.ones(key.size, dtype=bool)
            np.not_equal(pair[1:], pair[:-1], out=first[1:])
            f_group = pair[first] // n_members
            del pair
            key %= width
            f_rank = key[first]
            del key
        else:  # too wide to pack: sort the three columns instead
            idx = np.flatnonzero(known)
            g, mm, r = group[idx], m[idx], rank[idx]
            by = np.lexsort((r, mm, g))
            g, mm, r = g[by], mm[by], r[by]
            first = np.ones(g.size, dtype=bool)
            first[1:] = (g[1:] != g[:-1]) | (mm[1:] != mm[:-1])
            f_group, f_rank = g[first], r[first]
        f_ts = np.asarray(ts_ns, dtype=np.int64)[self.order[self.starts[f_group] + f_rank]]
        return GroupedTimes(f_group, f_ts, self.n_groups)
