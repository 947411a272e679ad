"""Train / validation / test splits: by time for event data, stratified for untimed flat data.

Both keep every row of an item in one split: an item's later horizons must not sit in the
training set while its earlier ones are tested (the rows share text and history).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

SPLITS: tuple[str, ...] = ("train", "valid", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class SplitResult:
    """Split name per row ("train" / "valid" / "test") and the time bounds of each window."""

    assignment: np.ndarray  # object array of split names aligned with the frame's rows
    kind: str  # "time" or "stratified"
    bounds: dict[str, tuple[pd.Timestamp | None, pd.Timestamp | None]]

    def mask(self, name: str) -> np.ndarray:
        return self.assignment == name


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"split fractions {tuple(fractions)} must be three positive numbers summing to 1"
        )
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def time_split(
    frame: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS, *, time_col: str = "as_of"
) -> SplitResult:
    """Train on the past, validate and test on later windows.

    Each item is placed by its first `time_col` (its earliest snapshot); the cut points are
    the item-time quantiles at 60% and 80% (by default), so windows hold about 60/20/20 of
    the items and no item crosses a window boundary.
    """
    f_train, f_valid, _ = _check_fractions(fractions)
    if time_col not in frame.columns:
        raise ValueError(
            f"time split needs a {time_col!r} column; columns are {list(frame.columns)}"
        )
    times = pd.to_datetime(frame[time_col], utc=True)
    if times.isna().any():
        raise ValueError(
            f"time split: {int(times.isna().sum())} rows have no {time_col!r}; expected a time on every row"
        )
    ids = frame["item_id"].astype("object").to_numpy()
    t_ns = times.to_numpy(dtype="datetime64[ns]").astype("int64")
    item_first = pd.Series(t_ns).groupby(ids, sort=True).min()
    if len(item_first) < 3:
        raise ValueError(f"time split needs at least 3 items, got {len(item_first)}")
    # cut on sorted item times: the first 60% of items (by time) train, the next 20% validate
    order = np.sort(item_first.to_numpy(), kind="stable")
    cut1 = order[int(len(order) * f_train) - 1]
    cut2 = order[int(len(order) * (f_train + f_valid)) - 1]
    split_of_item = np.where(
        item_first.to_numpy() <= cut1,
        "train",
        np.where(item_first.to_numpy() <= cut2, "valid", "test"),
    )
    lookup = pd.Series(split_of_item, index=item_first.index)
    assignment = lookup.reindex(ids).to_numpy(dtype=object)
    bounds: dict[str, tuple[pd.Timestamp | None, pd.Timestamp | None]] = {}
    for name in SPLITS:
        m = assignment == name
        if not m.any():
            distinct = len(np.unique(order))
            raise ValueError(
                f"time split left the {name} window empty: the {len(order):,} items have "
                f"{distinct:,} distinct first times, and items at one time stay in one window, "
                f"so they cannot be cut {f_train:.0%}/{f_valid:.0%}/"
                f"{1 - f_train - f_valid:.0%}; need more distinct times"
            )
        bounds[name] = (times[m].min(), times[m].max())
    return SplitResult(assignment, "time", bounds)


def stratified_split(
    frame: pd.DataFrame,
    strata: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    random_state: int = 0,
) -> SplitResult:
    """A random split stratified by `strata` (one value per row; rows are items here).

    Used for flat datasets without a time column, where "the future" does not exist.
    """
    f_train, f_valid, f_test = _check_fractions(fractions)
    n = len(frame)
    if n < 10:
        raise ValueError(f"stratified split needs at least 10 rows, got {n}")
    idx = np.arange(n)
    strata = np.asarray(strata)
    counts = pd.Series(strata).value_counts()
    stratify = strata if counts.min() >= 3 else None
    rest, test = train_test_split(
        idx, test_size=f_test, stratify=stratify, random_state=random_state
    )
    rest_strata = strata[rest] if stratify is not None else None
    train, valid = train_test_split(
        rest,
        test_size=f_valid / (f_train + f_valid),
        stratify=rest_strata,
        random_state=random_state,
    )
    assignment = np.empty(n, dtype=object)
    assignment[train], assignment[valid], assignment[test] = "train", "valid", "test"
    return SplitResult(assignment, "stratified", {s: (None, None) for s in SPLITS})


class ItemSample(NamedTuple):
    """`item_sample`'s draw: the rows and how many items they hold, counted as the items
    are drawn (no second pass over the groups to count them)."""

    rows: np.ndarray  # positions of the sampled rows, ascending
    items: int  # items drawn
    of_items: int  # items among all the rows


def item_sample(
    y: np.ndarray, groups: np.ndarray, max_rows: int, random_state: int
) -> ItemSample | None:
    """A sample of about `max_rows` of the `len(y)` rows (`ItemSample`), or None when all
    of them are few enough.

    Whole items (`groups`) are drawn: an item's rows share its texts and history, and rows
    left out are scored by a model fitted on the sample, so they must belong to items it
    never saw. The same share is drawn of the items with a positive row (`y == 1`) as of the
    others, so the sample keeps the positive rate. Seeded: the same rows for the same data
    and seed. Used for a text model's fit (`training.pipeline.fit_text_bounded`) and for
    training on a sample of large data (`training.data.sample_rows`).
    """
    n = len(y)
    if n <= max_rows:
        return None
    uniq, inverse = np.unique(groups, return_inverse=True)
    positive = np.zeros(len(uniq), dtype=bool)
    positive[inverse[np.asarray(y) == 1]] = True
    share = max_rows / n
    rng = np.random.default_rng(random_state)
    keep = np.zeros(len(uniq), dtype=bool)
    for stratum in (positive, ~positive):
        members = np.flatnonzero(stratum)
        take = min(len(members), max(1, round(share * len(members)))) if len(members) else 0
        keep[rng.choice(members, take, replace=False)] = True
    return ItemSample(np.flatnonzero(keep[inverse]), int(keep.sum()), len(uniq))
