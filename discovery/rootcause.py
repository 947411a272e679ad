"""Root cause: which segments explain a rate change (Adtributor-style drill-down).

For an anomaly window and the trailing baseline window before it, every segment (single
dimensions and pairs) gets an expected numerator (its anomaly-window denominator times its
baseline rate) and the actual numerator. Explanatory power (EP) is the segment's share of the
total excess; surprise is its term of the Jensen–Shannon divergence between the expected and
actual shares of the numerator. Segments that explain most of the change and moved most
surprisingly come first.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from discovery.series import DIMENSIONS, Segment, canonical, segment_key
from discovery.signals import ItemDimensions

MIN_EP = 0.3  # a root-cause segment must explain a good part of the excess on its own


# Bytes of segment masks and counting indexes a UnitFrame keeps: masks are a byte a unit row,
# so a count of them (2,000 before) grew with the data: 6 GB on 1M items of the default world.
CACHE_BYTES = 256 * 2**20


class UnitFrame:
    """A signal's units joined with item dimensions, for fast counts of any segment and time range.

    Rows are sorted by time so a time window is a slice. Counts come from each segment's
    rows and running sums of their numerators and denominators (`_index`): a window's count
    is a difference of two sums, found by binary search, not a pass over the window's
    rows (incident merging asks for tens of thousands of them). Masks and indexes are
    cached within CACHE_BYTES.
    """

    def __init__(
        self, frame: pd.DataFrame, dims: ItemDimensions, *, platform_den: bool = False
    ) -> None:
        # platform_den: a segment's denominator is the whole platform's (count signals).
        self.platform_den = platform_den
        self.frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
        self.dims = dims
        self._ts = self.frame["ts"].to_numpy(dtype="datetime64[ns]")
        self._num = self.frame["num"].to_numpy(dtype=float)
        self._den = self.frame["den"].to_numpy(dtype=float)
        # Integer codes per dimension: comparing ints is far faster than comparing strings.
        self._columns: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        for d in dims.items.columns:
            if d == "item_id":
                continue
            codes, uniques = pd.factorize(self.frame[d])
            self._columns[d] = (codes, {str(u): i for i, u in enumerate(uniques)})
        self._masks: dict[Segment, np.ndarray] = {}
        self._indexes: dict[Segment, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        self._cached_bytes = 0
        self._tag_rows: dict[str, np.ndarray] | None = None
        # (dimension, value) -> its rows (ascending int32): a dimension's values hold each
        # row at most once, so these take at most 4 bytes a row per dimension
        self._value_rows: dict[tuple[str, str], np.ndarray] = {}
        # running sums over all rows (leading 0): the platform's counts of any window
        self._all_num = np.concatenate([[0.0], np.cumsum(self._num)])
        self._all_den = np.concatenate([[0.0], np.cumsum(self._den)])

    @classmethod
    def build(
        cls, units: pd.DataFrame, dims: ItemDimensions, *, platform_den: bool = False
    ) -> UnitFrame:
        return cls(
            units.merge(dims.items, on="item_id", how="inner"), dims, platform_den=platform_den
        )

    def _tags(self) -> dict[str, np.ndarray]:
        if self._tag_rows is None:
            joined = self.dims.hashtags.merge(
                pd.DataFrame(
                    {"item_id": self.frame["item_id"], "_row": np.arange(len(self.frame))}
                ),
                on="item_id",
            )
            self._tag_rows = {
                tag: rows["_row"].to_numpy() for tag, rows in joined.groupby("hashtag", sort=False)
            }
        return self._tag_rows

    def mask(self, segment: Segment) -> np.ndarray:
        """The segment's rows as a boolean mask, set from `_rows`: one rule decides which rows
        a segment holds, for masks and counts alike."""
        if segment in self._masks:
            return self._masks[segment]
        out = np.zeros(len(self.frame), dtype=bool)
        out[self._indexes[segment][0] if segment in self._indexes else self._rows(segment)] = True
        if self._cache_room(out.nbytes):
            self._masks[segment] = out
        return out

    def _cache_room(self, nbytes: int) -> bool:
        """Whether `nbytes` more fit in the cache (and count them when they do)."""
        if self._cached_bytes + nbytes > CACHE_BYTES:
            return False
        self._cached_bytes += nbytes
        return True

    def _rows(self, segment: Segment) -> np.ndarray:
        """The segment's rows, ascending: those of its rarest (dimension, value), kept where
        the other dimensions match. A pass over the rarest value's rows, not over all rows:
        incident merging asks for many segments, most of them small intersections."""
        if not segment:
            return np.arange(len(self.frame), dtype=np.int32)
        parts = sorted(segment, key=lambda dv: len(self._rows_of(*dv)))
        rows = self._rows_of(*parts[0])
        for dim, value in parts[1:]:
            if not len(rows):
                break
            if dim in self._columns:  # the codes at these rows: no pass over the others
                codes, lookup = self._columns[dim]
                rows = rows[codes[rows] == lookup.get(value, -2)]
            else:  # a hashtag or an unknown dimension: binary search in its sorted rows
                rows = rows[_sorted_member(rows, self._rows_of(dim, value))]
        return rows

    def _rows_of(self, dim: str, value: str) -> np.ndarray:
        key = (dim, value)
        if key not in self._value_rows:
            if dim == "hashtag":
                rows = np.unique(self._tags().get(value, np.array([], dtype=np.int64)))
            elif dim in self._columns:
                codes, lookup = self._columns[dim]
                rows = np.flatnonzero(codes == lookup.get(value, -2))
            else:
                rows = np.array([], dtype=np.int64)
            self._value_rows[key] = rows.astype(np.int32)
        return self._value_rows[key]

    def _index(self, segment: Segment) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The segment's row positions (ascending, so in time order) and the running sums of
        their numerators and denominators, each with a leading 0. No denominator sums under
        platform_den: a segment's denominator is then the platform's, so they would go unused
        (8 bytes a row of the segment, cached)."""
        if segment in self._indexes:
            return self._indexes[segment]
        rows = self._rows(segment)
        den = None if self.platform_den else np.concatenate([[0.0], np.cumsum(self._den[rows])])
        out = (rows, np.concatenate([[0.0], np.cumsum(self._num[rows])]), den)
        if self._cache_room(sum(a.nbytes for a in out if a is not None)):
            self._indexes[segment] = out
        return out

    def _slice(self, start: pd.Timestamp, end: pd.Timestamp) -> slice:
        lo = np.searchsorted(self._ts, np.datetime64(start.tz_convert(None), "ns"), "left")
        hi = np.searchsorted(self._ts, np.datetime64(end.tz_convert(None), "ns"), "left")
        return slice(int(lo), int(hi))

    def window(self, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
        out = np.zeros(len(self.frame), dtype=bool)
        out[self._slice(start, end)] = True
        return out

    def sources(self, segment: Segment, start: pd.Timestamp, end: pd.Timestamp) -> int:
        """Distinct items contributing to the numerator (a pile-on under one item is one source)."""
        sl = self._slice(start, end)
        m = self.mask(segment)[sl] & (self._num[sl] > 0)
        return len(set(self.frame["item_id"].to_numpy()[sl][m]))

    def counts(
        self, segment: Segment, start: pd.Timestamp, end: pd.Timestamp
    ) -> tuple[float, float]:
        sl = self._slice(start, end)
        if not segment:  # every row: the platform's running sums
            return (
                float(self._all_num[sl.stop] - self._all_num[sl.start]),
                float(self._all_den[sl.stop] - self._all_den[sl.start]),
            )
        rows, num, den = self._index(segment)
        lo, hi = np.searchsorted(rows, [sl.start, sl.stop], "left")
        if den is None:  # platform_den: the platform's denominator of the window
            seg_den = self._all_den[sl.stop] - self._all_den[sl.start]
        else:
            seg_den = den[hi] - den[lo]
        return float(num[hi] - num[lo]), float(seg_den)


def _sorted_member(rows: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Which of `rows` are in `among` (ascending): a binary search each, no sort of either."""
    if not len(among):
        return np.zeros(len(rows), dtype=bool)
    at = np.minimum(np.searchsorted(among, rows), len(among) - 1)
    return among[at] == rows


def shrunk_rate(num: float, den: float, parent_rate: float, prior_events: float = 3.0) -> float:
    """Rate pulled towards the parent rate by `prior_events` pseudo-events (thin segments)."""
    parent_rate = max(parent_rate, 1e-9)
    return (num + prior_events) / (den + prior_events / parent_rate)


def excess(
    units: UnitFrame,
    segment: Segment,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    baseline_days: float = 7.0,
    baseline_end: pd.Timestamp | None = None,
) -> dict[str, float]:
    """Observed minus expected numerator of a segment in [start, end), baseline from the days
    before `baseline_end` (default `start`: an earlier end keeps a running incident's own
    excess out of the baseline of a later window)."""
    b1 = start if baseline_end is None else baseline_end
    b0 = b1 - pd.Timedelta(days=baseline_days)
    top_n, top_d = units.counts((), b0, b1)
    parent = top_n / top_d if top_d > 0 else 0.0
    bn, bd = units.counts(segment, b0, b1)
    an, ad = units.counts(segment, start, end)
    rate = shrunk_rate(bn, bd, parent)
    return {
        "num": an,
        "den": ad,
        "expected": ad * rate,
        "excess": an - ad * rate,
        "baseline_rate": rate,
        "observed_rate": an / ad if ad > 0 else 0.0,
        "baseline_num": bn,
        "baseline_den": bd,
    }


def js_term(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-element Jensen–Shannon divergence term between expected share p and actual share q."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(np.where(p > 0, p / m, 1.0)), 0.0)
        b = np.where(q > 0, q * np.log2(np.where(q > 0, q / m, 1.0)), 0.0)
    return 0.5 * (a + b)


def drilldown(
    units: UnitFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    baseline_days: float = 7.0,
    pairs: bool = True,
    within: Segment = (),
    min_num: float = 3.0,
    top_k: int = 20,
) -> pd.DataFrame:
    """Rank segments (single dimensions and pairs) by how well they explain the change in [start, end).

    Columns: segment, dimensions, expected, actual, den, baseline_rate, observed_rate, ep,
    surprise, dimension_surprise, explains (EP >= MIN_EP). Sorted: segments that explain the
    change on their own first, then by surprise (ties: more specific first).
    """
    b0 = start - pd.Timedelta(days=baseline_days)
    frame = units.frame[units.mask(within)]
    before = frame[(frame["ts"] >= b0) & (frame["ts"] < start)]
    after = frame[(frame["ts"] >= start) & (frame["ts"] < end)]
    parent = before["num"].sum() / before["den"].sum() if before["den"].sum() > 0 else 0.0
    available = [d for d in units.dims.dimensions if d not in dict(within)]
    combos: list[tuple[str, ...]] = [(d,) for d in available]
    if pairs:
        combos += list(combinations(available, 2))
    tags = units.dims.hashtags
    before_tags = before.merge(tags, on="item_id") if len(tags) else before
    after_tags = after.merge(tags, on="item_id") if len(tags) else after
    rows: list[pd.DataFrame] = []
    for keys in combos:
        with_tag = "hashtag" in keys
        b = (
            (before_tags if with_tag else before)
            .groupby(list(keys), sort=False)[["num", "den"]]
            .sum()
        )
        a = (
            (after_tags if with_tag else after)
            .groupby(list(keys), sort=False)[["num", "den"]]
            .sum()
        )
        table = a.add_suffix("_a").join(b.add_suffix("_b"), how="outer").fillna(0.0)
        if table.empty:
            continue
        rate = (table["num_b"] + 3.0) / (table["den_b"] + 3.0 / max(parent, 1e-9))
        expected = table["den_a"] * rate
        actual = table["num_a"]
        total_expected, total_actual = expected.sum(), actual.sum()
        change = total_actual - total_expected
        if total_expected <= 0 or total_actual <= 0 or change == 0:
            continue
        ep = (actual - expected) / change
        surprise = js_term(expected / total_expected, actual / total_actual)
        out = pd.DataFrame(
            {
                "segment": [
                    canonical(
                        (*within, *zip(keys, k if isinstance(k, tuple) else (k,), strict=True))
                    )
                    for k in table.index
                ],
                "dimensions": "×".join(keys),
                "expected": expected.to_numpy(),
                "actual": actual.to_numpy(),
                "den": table["den_a"].to_numpy(),
                "baseline_rate": rate.to_numpy(),
                "observed_rate": np.divide(
                    actual.to_numpy(),
                    table["den_a"].to_numpy(),
                    out=np.zeros(len(table)),
                    where=table["den_a"].to_numpy() > 0,
                ),
                "ep": ep.to_numpy(),
                "surprise": surprise,
            }
        )
        # Adtributor: a dimension's surprise sums its most surprising elements until they
        # explain most of the change (EP of each >= 0.1, cumulative >= 0.67).
        ordered = out[out["ep"] >= 0.1].sort_values("surprise", ascending=False)
        cum = ordered["ep"].cumsum().to_numpy()
        upto = int(np.searchsorted(cum, 0.67, side="left")) + 1
        dim_surprise = float(ordered["surprise"].to_numpy()[:upto].sum())
        out["dimension_surprise"] = dim_surprise
        rows.append(out[out["actual"] >= min_num])
    if not rows:
        return pd.DataFrame(
            columns=[
                "segment",
                "dimensions",
                "expected",
                "actual",
                "den",
                "baseline_rate",
                "observed_rate",
                "ep",
                "surprise",
                "dimension_surprise",
                "explains",
            ]
        )
    table = pd.concat(rows, ignore_index=True)
    table["explains"] = table["ep"] >= MIN_EP
    table["_specific"] = table["segment"].map(len)
    # Equivalent segments (language=pt where region=BR is all pt) tie: the earlier dimension wins.
    order = {d: i for i, d in enumerate(DIMENSIONS)}
    table["_order"] = table["segment"].map(lambda s: tuple(order.get(d, 99) for d, _ in s))
    # Aliased segments hold the same units (language=pt where region=BR is all pt): keep the
    # one on the earlier dimension.
    table = table.sort_values("_order")
    table = table[
        ~table.duplicated(["_specific", "actual", "den"], keep="first") | (table["den"] < 20)
    ]
    table = table.sort_values(
        ["explains", "surprise", "_specific", "_order"], ascending=[False, False, False, True]
    )
    return table.drop(columns=["_specific", "_order"]).head(top_k).reset_index(drop=True)


def top_segment(table: pd.DataFrame) -> Segment:
    """The best explaining segment of a drill-down table, or () when none explains the change."""
    hits = table[table["explains"]]
    return hits["segment"].iloc[0] if len(hits) else ()


def format_table(table: pd.DataFrame) -> list[dict[str, object]]:
    """JSON-ready rows of a drill-down table."""
    out = []
    for r in table.itertuples(index=False):
        out.append(
            {
                "segment": dict(r.segment),
                "key": segment_key(r.segment),
                "dimensions": r.dimensions,
                "expected": round(float(r.expected), 2),
                "actual": float(r.actual),
                "baseline_rate": float(r.baseline_rate),
                "observed_rate": float(r.observed_rate),
                "contribution": round(float(r.ep), 4),
                "surprise": round(float(r.surprise), 5),
                "dimension_surprise": round(float(r.dimension_surprise), 5),
            }
        )
    return out


__all__: Sequence[str] = (
    "UnitFrame",
    "drilldown",
    "excess",
    "format_table",
    "js_term",
    "top_segment",
)
