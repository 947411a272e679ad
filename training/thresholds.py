"""Review thresholds with a meaning: a bounded review volume at a precision worth reviewing.

One function, `choose_threshold`, picks each issue's threshold on the validation window:

- volume: the flagged share of the issue's rows stays at or below a cap (`max_share`, 20% by
  default, whatever the capacity; raised to 1.2 x the share of rows *known* to be positive
  where that is more, since a perfect model flags every positive: labelled positives over
  all rows, so a biased labelled sample such as appeals does not raise it), and with a time
  axis the distinct items flagged stay within the review capacity over the window;
- precision: among the flagged labelled rows, precision reaches a floor: twice the base rate
  (or halfway from the base rate to 1 when that is lower), or a configured minimum if higher;
- a threshold equal to the lowest score (it would flag every row) is never chosen;
- the cap must hold on rows the threshold has not seen (the next window's), not only on the
  validation rows it was chosen on: a threshold placed exactly at the cap on validation
  flags more than the cap on about half of all new samples. So the flagged share is bounded
  with a margin: its one-sided prediction bound for a new window as large as the validation
  window (`share_upper_bounds`, at SHARE_CONFIDENCE) must stay at or below the cap. The
  variance counts items, not rows (an item's horizons are flagged together, so they are not
  independent draws), and the margin shrinks as 1/sqrt(items) as validation grows;
- with a time axis, the cap must also hold if the flagged share keeps moving the way it moved
  across the validation window: the next window comes after it (time split), so a score
  distribution drifting upward flags more there than on validation, and a bound for "a new
  window like validation" is then not a 95% bound. Validation's items are ordered by their
  first time and cut into k equal blocks (k = MAX_TIME_BLOCKS with at least
  MIN_BLOCK_ITEMS items per block, else 2, else no time rule: `drift_bounds`). Two more
  bounds must stay within the cap:
  * the *later half*'s share plus the margin of a new window (the most recent level
    persists): it catches a level shift and part of a trend, at a small cost without drift;
  * the share carried one window length ahead (from validation's centre to the next
    window's) along the blocks' least-squares trend, upward only, with the trend's own
    variance added to the margin, both shrunk by empirical Bayes: a normal prior on the
    drift whose variance is estimated as tau^2 = max(0, delta^2 - se^2); posterior mean
    delta tau^2 / (tau^2 + se^2), variance se^2 tau^2 / (tau^2 + se^2). A trend within its
    noise counts as none (no cost without drift on most windows), one far above it counts
    in full, with its uncertainty.
  Measured on synthetic windows (tests/training/test_thresholds.py): without drift the
  flagged share is on average less than one stationary margin lower; with a linear drift
  several standard errors large the next window stays within the cap. Not caught in full:
  a drift of one to about three standard errors (the shrinkage takes part of it) and a
  share accelerating faster than linear (the trend is a line). Without a time axis (or too
  few items) the rule is the stationary bound alone, as before. Everything is relative
  (shares, their variances, item ranks), so nothing is tuned to one world;
- the flagged share only grows as the threshold falls, so the thresholds that hold the cap
  are taken as one run from the top: a lower threshold where noise lets the bound dip below
  the cap again is not taken (else the scan picks the most optimistic of many noisy bounds).

The floor is relative to the data's own base rate, so it means the same on any dataset: a
flag is at least twice as likely to be right as a random pick. Among the thresholds that meet
all of this, a capacity (timed data) takes the lowest one (use the review capacity, the
queue's rule until now), no capacity takes the best F1. When none does, the issue is
disabled with the reason: a threshold that flags everything, or flags at chance precision,
is worse than no flags.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Precision measured on fewer flagged labelled rows than this is noise, not a measurement.
MIN_FLAGGED_LABELLED = 5
DEFAULT_MAX_SHARE = 0.2
DEFAULT_PRECISION_LIFT = 2.0
# Where positives are common, the cap leaves room for a model that flags them all (plus some).
BASE_RATE_SLACK = 1.2
# One-sided confidence that a new window's flagged share stays within the cap (normal quantile).
SHARE_CONFIDENCE = 0.95
_Z_ONE_SIDED_95 = 1.6448536269514722
# A time block's share is a mean over its items: below this many items its normal
# approximation (and its variance estimate) is too rough to extrapolate a trend from.
MIN_BLOCK_ITEMS = 30
# Blocks for the trend: 4 equal blocks estimate a linear trend almost as well as one block per
# item (slope variance 12.8 vs 12 x the window share's) and show a level shift at its quarter.
MAX_TIME_BLOCKS = 4


@dataclass(frozen=True)
class ThresholdPolicy:
    """The limits a threshold must respect (from settings: SURFACER_FLAG_SHARE_CAP, ...)."""

    max_share: float = DEFAULT_MAX_SHARE
    precision_lift: float = DEFAULT_PRECISION_LIFT
    min_precision: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.max_share < 1:
            raise ValueError(f"flag share cap {self.max_share!r} must be in (0, 1)")
        if self.precision_lift < 1:
            raise ValueError(f"precision lift {self.precision_lift!r} must be >= 1")
        if not 0 <= self.min_precision < 1:
            raise ValueError(f"minimum precision {self.min_precision!r} must be in [0, 1)")

    @classmethod
    def from_settings(cls, settings: Any) -> ThresholdPolicy:
        return cls(
            max_share=float(settings.flag_share_cap),
            precision_lift=float(settings.precision_lift),
            min_precision=float(settings.min_precision),
        )

    def share_cap(self, positive_share: float) -> float:
        """The largest flagged share: max_share, or 1.2 x the share of rows known to be
        positive when that is more."""
        if not math.isfinite(positive_share):
            return self.max_share
        return max(self.max_share, BASE_RATE_SLACK * positive_share)

    def precision_floor(self, base_rate: float) -> float:
        """max(min_precision, min(lift x base rate, halfway from the base rate to 1))."""
        if not math.isfinite(base_rate):
            return max(self.min_precision, 0.0)
        relative = min(self.precision_lift * base_rate, (1.0 + base_rate) / 2.0)
        return max(self.min_precision, relative)


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what it does on validation, or why there is none."""

    threshold: float | None  # None: no threshold meets the limits; the issue is disabled
    reason: str | None
    rule: str  # "capacity" (lowest qualifying threshold) or "f1" (best qualifying F1)
    rows: int
    labelled: int
    base_rate: float
    precision_floor: float
    max_share: float  # the cap applied (see ThresholdPolicy.share_cap)
    capacity_items: int | None
    flagged_share: float = math.nan
    # the share's one-sided prediction bound for a new window of the validation's size: the
    # cap is held on this, not on the validation share itself
    flagged_share_bound: float = math.nan
    # with a time axis: how many time blocks validation was cut into (0: no time rule) and
    # the shrunk upward drift of the flagged share to the next window (see the module doc)
    time_blocks: int = 0
    share_drift: float = math.nan
    flagged_items: int = 0
    precision: float = math.nan
    recall: float = math.nan
    f1: float = math.nan

    @property
    def ok(self) -> bool:
        return self.threshold is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()
        }


def _share_moments(order_items: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate threshold: the flagged share of these rows and its variance over items.

    order_items: each row's item (any integer codes), rows in descending score order; ends:
    the index of each candidate's last flagged row (-1: none flagged). The share s = F/M (F
    flagged rows out of M) is a ratio over K items (clusters): Var(s) ~= K/(K-1) *
    sum_i (f_i - s m_i)^2 / M^2, with f_i and m_i item i's flagged and total rows. The sums
    are running totals along the ranking, so every candidate costs O(1): sum f_i^2 grows by
    2 c + 1 when an item's (c+1)-th row is flagged, sum f_i m_i by m_i. Fewer than two items:
    infinite variance (one cluster says nothing about the spread).
    """
    n = len(order_items)
    share = (ends + 1) / max(n, 1)
    _, codes = np.unique(order_items, return_inverse=True)
    codes = codes.reshape(-1)
    k = int(codes.max()) + 1 if n else 0
    if k < 2:
        return share, np.full(len(ends), np.inf)
    m = np.bincount(codes, minlength=k).astype(np.float64)
    # c: how many earlier (higher-scored) rows of the same item come before each row
    stable = np.argsort(codes, kind="stable")
    sorted_items = codes[stable]
    starts = np.r_[0, np.flatnonzero(sorted_items[1:] != sorted_items[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_items)]))
    c = np.empty(n, dtype=np.float64)
    c[stable] = np.arange(n) - run_start
    s_ff = np.r_[0.0, np.cumsum(2.0 * c + 1.0)][ends + 1]
    s_fm = np.r_[0.0, np.cumsum(m[codes])][ends + 1]
    s_mm = float(np.sum(m * m))
    resid = np.maximum(s_ff - 2.0 * share * s_fm + share * share * s_mm, 0.0)
    return share, k / (k - 1) * resid / float(n) ** 2


def share_upper_bounds(
    order_items: np.ndarray, n_rows: int, rows_flagged: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """Per candidate threshold: the flagged share plus its one-sided prediction margin.

    order_items: each row's item code, rows in descending score order; rows_flagged: how
    many rows each candidate flags (the top ones); ends: the index of each candidate's last
    flagged row. A new window of the same size has its own share with the variance of
    `_share_moments`, so their difference has twice it: bound = s + z sqrt(2 Var(s)).
    """
    share, var = _share_moments(order_items, ends)
    return share + _Z_ONE_SIDED_95 * np.sqrt(2.0 * var)


def time_blocks(n_items: int) -> int:
    """How many equal time blocks a validation window of n_items items is cut into for the
    drift rule: MAX_TIME_BLOCKS, fewer when a block would hold fewer than MIN_BLOCK_ITEMS
    items, 0 when not even two blocks would (no time rule)."""
    for k in (MAX_TIME_BLOCKS, 2):
        if n_items >= k * MIN_BLOCK_ITEMS:
            return k
    return 0


def drift_bounds(
    order_items: np.ndarray, item_times: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per candidate threshold: the flagged share's bound for the next window allowing for
    drift across the validation window (see the module doc), the shrunk upward drift, and
    the number of time blocks (0: too few items, the stationary bound is returned as is).

    order_items: each row's item code 0..K-1, rows in descending score order; item_times:
    each item's first time (indexed by code); ends: each candidate's last flagged row.
    """
    share, var = _share_moments(order_items, ends)
    z = _Z_ONE_SIDED_95
    stationary = share + z * np.sqrt(2.0 * var)
    n_items = len(item_times)
    k = time_blocks(n_items)
    if k == 0:
        return stationary, np.zeros(len(ends)), 0
    # items in time order (ties by code, so the cut is deterministic), k equal blocks
    rank = np.empty(n_items, dtype=np.int64)
    rank[np.lexsort((np.arange(n_items), item_times))] = np.arange(n_items)
    row_block = (rank * k // n_items)[order_items]

    def moments_of(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sub_ends = np.cumsum(rows)[ends] - 1
        return _share_moments(order_items[rows], sub_ends)

    blocks = [moments_of(row_block == b) for b in range(k)]
    # the later half: the most recent level, with the margin of a new window's share
    late_share, late_var = moments_of(row_block >= k // 2)
    late = late_share + z * np.sqrt(late_var + var)
    # the trend in window lengths (block centres at (b + 0.5) / k), carried one window ahead:
    # from validation's centre to the next window's
    x = (np.arange(k) + 0.5) / k
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    delta = sum(w[b] * blocks[b][0] for b in range(k))
    se2 = sum(w[b] ** 2 * blocks[b][1] for b in range(k))
    # empirical Bayes: prior N(0, tau^2) on the drift, tau^2 = max(0, delta^2 - se^2) (its
    # moment estimate); posterior mean delta tau^2 / (tau^2 + se^2), variance se^2 tau^2 /
    # (tau^2 + se^2). No visible trend: both 0 (the stationary bound); a trend far above its
    # noise: delta and se^2, the full bound of a linear trend carried one window ahead.
    # A downward trend counts as none (upward only: it never loosens the cap).
    tau2 = np.where(delta > 0, np.maximum(delta * delta - se2, 0.0), 0.0)
    keep = tau2 / np.where(tau2 > 0, tau2 + se2, 1.0)
    drift, post_var = delta * keep, se2 * keep
    trend = share + drift + z * np.sqrt(2.0 * var + post_var)
    return np.maximum.reduce([stationary, late, trend]), drift, k


def choose_threshold(
    probs: np.ndarray,
    item_ids: np.ndarray,
    labels: np.ndarray,
    *,
    capacity_items: int | None = None,
    policy: ThresholdPolicy | None = None,
    times: np.ndarray | None = None,
) -> ThresholdChoice:
    """The review threshold for one issue from its validation rows (see the module doc).

    probs: calibrated scores of every validation row of the issue's anchor (labelled or not:
    they all take review volume); item_ids: each row's item (an item is reviewed once, however
    many of its rows are flagged); labels: 1/0, NaN where unlabelled. `capacity_items`: how
    many distinct items the reviewers can take over the window (None: no time axis).
    `times`: each row's time (datetime64 or numbers; an item's time is its earliest row's),
    which turns on the drift rule; None keeps the stationary bound alone.
    """
    policy = policy or ThresholdPolicy()
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    ids = np.asarray(item_ids, dtype=object)
    keep = np.isfinite(p)
    p, y, ids = p[keep], y[keep], ids[keep]
    t = None
    if times is not None:
        t = np.asarray(times)
        if np.issubdtype(t.dtype, np.datetime64):
            t = t.astype("datetime64[ns]").astype(np.int64)
        t = t.astype(np.float64)[keep]
    n = len(p)
    is_pos, is_neg = y == 1, y == 0
    labelled = int(is_pos.sum() + is_neg.sum())
    total_pos = int(is_pos.sum())
    base = total_pos / labelled if labelled else math.nan
    floor = policy.precision_floor(base)
    cap = policy.share_cap(total_pos / n if n else math.nan)
    rule = "capacity" if capacity_items is not None else "f1"
    common = {
        "rule": rule,
        "rows": n,
        "labelled": labelled,
        "base_rate": base,
        "precision_floor": floor,
        "max_share": cap,
        "capacity_items": capacity_items,
    }

    def refuse(reason: str) -> ThresholdChoice:
        return ThresholdChoice(threshold=None, reason=reason, **common)  # type: ignore[arg-type]

    if n == 0:
        return refuse("no validation rows to choose a threshold on")
    if total_pos == 0 or total_pos == labelled:
        return refuse(
            f"validation labels are one class ({labelled} labelled, {total_pos} positive): "
            "precision cannot be measured"
        )
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    # candidate thresholds: each distinct score; flagging p >= t takes its whole tie group
    ends = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])
    if len(ends) == 1:
        return refuse(f"scores are constant on validation ({ps[0]:.6g} for every row)")
    thresholds = ps[ends]
    rows = ends + 1
    tp = np.cumsum(is_pos[order])[ends]
    fp = np.cumsum(is_neg[order])[ends]
    first = np.zeros(n, dtype=np.int64)
    _, first_idx, codes = np.unique(ids[order].astype(str), return_index=True, return_inverse=True)
    first[first_idx] = 1
    items = np.cumsum(first)[ends]
    share = rows / n
    codes = codes.reshape(-1)
    if t is None:
        bound = share_upper_bounds(codes, n, rows, ends)
        drift, blocks = np.zeros(len(ends)), 0
    else:
        item_times = np.full(len(first_idx), np.inf)
        np.minimum.at(item_times, codes, t[order])
        bound, drift, blocks = drift_bounds(codes, item_times, ends)
    flagged_labelled = tp + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(flagged_labelled > 0, tp / np.maximum(flagged_labelled, 1), np.nan)
    recall = tp / total_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)

    # the flagged share only grows as the threshold falls, so the thresholds that hold the
    # cap are one run from the top: once the bound reaches the cap, a lower threshold where
    # noise lets it dip again is not taken (the scan would pick the most optimistic of many
    # noisy bounds). Bounds above the cap before the run starts (a few flagged rows, whose
    # trend is noise) do not end it.
    under = bound <= cap + 1e-12
    started = np.logical_or.accumulate(under)
    volume = started & np.logical_and.accumulate(under | ~started) & (thresholds > ps[-1])
    if capacity_items is not None:
        volume &= items <= max(1, int(capacity_items))
    measurable = volume & (flagged_labelled >= MIN_FLAGGED_LABELLED)
    feasible = measurable & (precision >= floor - 1e-12)
    margin = "margin" if t is None else "margin, allowing for drift"
    limits = f"at most {cap:.0%} of rows (with a {SHARE_CONFIDENCE:.0%} {margin})" + (
        f" and {int(capacity_items)} items (the review capacity)"
        if capacity_items is not None
        else ""
    )
    if not feasible.any():
        if not volume.any():
            if share[0] > cap:
                return refuse(
                    f"no threshold flags {limits}: the top score is shared by "
                    f"{share[0]:.0%} of validation rows"
                )
            if drift[0] > 0:
                return refuse(
                    f"no threshold flags {limits}: the flagged share rises across the "
                    f"validation window, so even the fewest flags ({share[0]:.1%}) may exceed "
                    f"the cap on the next window (bound {bound[0]:.1%})"
                )
            return refuse(
                f"no threshold flags {limits}: with {n} validation rows even the fewest "
                f"flags ({share[0]:.1%}) may exceed the cap on new rows (bound "
                f"{bound[0]:.1%}); validation is too small to hold the cap"
            )
        if not measurable.any():
            return refuse(
                f"too few labelled rows among those a threshold may flag ({limits}): at most "
                f"{int(flagged_labelled[volume].max())}, need {MIN_FLAGGED_LABELLED} to "
                "measure precision"
            )
        best = int(np.nanargmax(np.where(measurable, precision, -1.0)))
        return refuse(
            f"no threshold flagging {limits} reaches precision {floor:.3f} on validation "
            f"(base rate {base:.3f}); the best is {precision[best]:.3f} flagging "
            f"{share[best]:.1%} of rows"
        )
    idx = np.flatnonzero(feasible)
    # capacity: use the reviewers' capacity (the lowest qualifying threshold, most flags);
    # f1: the best F1, the higher threshold on ties
    pick = int(idx[-1]) if rule == "capacity" else int(idx[np.argmax(f1[idx])])
    return ThresholdChoice(
        threshold=float(thresholds[pick]),
        reason=None,
        flagged_share=float(share[pick]),
        flagged_share_bound=float(bound[pick]),
        time_blocks=blocks,
        share_drift=float(drift[pick]) if blocks else math.nan,
        flagged_items=int(items[pick]),
        precision=float(precision[pick]),
        recall=float(recall[pick]),
        f1=float(f1[pick]),
        **common,  # type: ignore[arg-type]
    )
