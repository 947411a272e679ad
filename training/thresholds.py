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
  independent draws), and the margin shrinks as 1/sqrt(items) as validation grows.

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


def share_upper_bounds(
    order_items: np.ndarray, n_rows: int, rows_flagged: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """Per candidate threshold: the flagged share plus its one-sided prediction margin.

    order_items: each row's item code (0..K-1), rows in descending score order; rows_flagged:
    how many rows each candidate flags (the top ones); ends: the index of each candidate's
    last flagged row. The share s = F/M (F flagged rows out of M) is a ratio over K items
    (clusters): Var(s) ~= K/(K-1) * sum_i (f_i - s m_i)^2 / M^2, with f_i and m_i item i's
    flagged and total rows. A new window of the same size has its own share with that
    variance, so their difference has twice it: bound = s + z sqrt(2 Var(s)). The sums are
    running totals along the ranking, so every candidate costs O(1): sum f_i^2 grows by
    2 c + 1 when an item's (c+1)-th row is flagged, sum f_i m_i by m_i.
    """
    k = int(order_items.max()) + 1 if len(order_items) else 0
    share = rows_flagged / n_rows
    if k < 2:
        return np.full(len(ends), np.inf)
    m = np.bincount(order_items, minlength=k).astype(np.float64)
    # c: how many earlier (higher-scored) rows of the same item come before each row
    stable = np.argsort(order_items, kind="stable")
    sorted_items = order_items[stable]
    starts = np.r_[0, np.flatnonzero(sorted_items[1:] != sorted_items[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_items)]))
    c = np.empty(len(order_items), dtype=np.float64)
    c[stable] = np.arange(len(sorted_items)) - run_start
    s_ff = np.cumsum(2.0 * c + 1.0)[ends]
    s_fm = np.cumsum(m[order_items])[ends]
    s_mm = float(np.sum(m * m))
    resid = np.maximum(s_ff - 2.0 * share * s_fm + share * share * s_mm, 0.0)
    var = k / (k - 1) * resid / float(n_rows) ** 2
    return share + _Z_ONE_SIDED_95 * np.sqrt(2.0 * var)


def choose_threshold(
    probs: np.ndarray,
    item_ids: np.ndarray,
    labels: np.ndarray,
    *,
    capacity_items: int | None = None,
    policy: ThresholdPolicy | None = None,
) -> ThresholdChoice:
    """The review threshold for one issue from its validation rows (see the module doc).

    probs: calibrated scores of every validation row of the issue's anchor (labelled or not:
    they all take review volume); item_ids: each row's item (an item is reviewed once, however
    many of its rows are flagged); labels: 1/0, NaN where unlabelled. `capacity_items`: how
    many distinct items the reviewers can take over the window (None: no time axis).
    """
    policy = policy or ThresholdPolicy()
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    ids = np.asarray(item_ids, dtype=object)
    keep = np.isfinite(p)
    p, y, ids = p[keep], y[keep], ids[keep]
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
    bound = share_upper_bounds(codes.reshape(-1), n, rows, ends)
    flagged_labelled = tp + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(flagged_labelled > 0, tp / np.maximum(flagged_labelled, 1), np.nan)
    recall = tp / total_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)

    volume = (bound <= cap + 1e-12) & (thresholds > ps[-1])
    if capacity_items is not None:
        volume &= items <= max(1, int(capacity_items))
    measurable = volume & (flagged_labelled >= MIN_FLAGGED_LABELLED)
    feasible = measurable & (precision >= floor - 1e-12)
    limits = f"at most {cap:.0%} of rows (with a {SHARE_CONFIDENCE:.0%} margin)" + (
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
        flagged_items=int(items[pick]),
        precision=float(precision[pick]),
        recall=float(recall[pick]),
        f1=float(f1[pick]),
        **common,  # type: ignore[arg-type]
    )
