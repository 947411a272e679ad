"""Live precision and recall per issue from analyst labels on flagged and sampled items.

Flagged items (inclusion probability 1) give precision directly. Unflagged items enter the
queue with a known probability p (a hash of the item id, so independent of the label); each
labeled one stands for 1/p items, scaled up by the labeled share of the sample, which
estimates the positives the model missed (Horvitz-Thompson).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from serving.review.schemas import IssueQuality

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for k successes out of n (None when n == 0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class IssueCounts:
    """What the store counted for one issue (see `issue_quality`)."""

    issue: str
    flagged: int  # items flagged for the issue
    flagged_labeled: int
    flagged_positive: int
    sampled: int  # random-sample items the issue applies to
    sampled_weight: float  # sum of 1/p over them: estimated unflagged population
    sampled_labeled: int
    sampled_positive: int


def _recall(p1: float, p2: float, flagged: int, unflagged: float) -> float | None:
    tp = p1 * flagged
    fn = p2 * unflagged
    if tp + fn <= 0:
        return None
    return tp / (tp + fn)


def issue_quality(c: IssueCounts) -> IssueQuality:
    """Precision of flagged items, estimated recall, and 95% intervals for one issue."""
    precision = c.flagged_positive / c.flagged_labeled if c.flagged_labeled else None
    p_ci = wilson(c.flagged_positive, c.flagged_labeled)
    recall = r_ci = tp_hat = fn_hat = None
    if precision is not None and c.sampled_labeled:
        rate = c.sampled_positive / c.sampled_labeled
        tp_hat = precision * c.flagged
        fn_hat = rate * c.sampled_weight
        recall = _recall(precision, rate, c.flagged, c.sampled_weight)
        s_ci = wilson(c.sampled_positive, c.sampled_labeled)
        if recall is not None and p_ci is not None and s_ci is not None:
            # Recall rises with precision and falls with the miss rate: pair opposite bounds.
            lo = _recall(p_ci[0], s_ci[1], c.flagged, c.sampled_weight)
            hi = _recall(p_ci[1], s_ci[0], c.flagged, c.sampled_weight)
            r_ci = (lo if lo is not None else 0.0, hi if hi is not None else 1.0)
    return IssueQuality(
        issue=c.issue,
        flagged=c.flagged,
        flagged_labeled=c.flagged_labeled,
        flagged_positive=c.flagged_positive,
        precision=precision,
        precision_ci=p_ci,
        sampled=c.sampled,
        sampled_labeled=c.sampled_labeled,
        sampled_positive=c.sampled_positive,
        est_positives_flagged=tp_hat,
        est_positives_missed=fn_hat,
        recall=recall,
        recall_ci=r_ci,
    )


def quality(counts: Iterable[IssueCounts]) -> list[IssueQuality]:
    """`issue_quality` for each issue, in the given order."""
    return [issue_quality(c) for c in counts]
