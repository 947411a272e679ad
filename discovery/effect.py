"""Effect of a fix: difference-in-differences of an issue rate, with a day-clustered interval.

Treated segment vs a control (another segment, or the rest of the platform), before vs after
a change time. Rates are pooled (sum of numerators over sum of denominators) per period. The
interval treats each time bucket (a whole day by default) as a cluster, the same buckets for
treated and control, so shocks common to both (a quiet weekend) cancel as they do in the
estimate, and within-day correlation is never broken apart; its width is the counts' noise
plus whatever extra spread the days show, with Student's t for the few days a fix is
measured over (see `diff_in_diff`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from discovery.rootcause import UnitFrame
from discovery.series import Segment, segment_key
from discovery.signals import Signal, build_signals, item_dimensions


@dataclass(frozen=True)
class EffectResult:
    """DiD estimate (change in the treated rate beyond the control's) and its 95% interval."""

    issue: str
    signal: str
    segment: str
    control: str
    at: str
    did: float
    ci_low: float
    ci_high: float
    treated_before: float
    treated_after: float
    control_before: float
    control_after: float
    buckets_before: int
    buckets_after: int
    confidence: float
    # Per-bucket rates for the before/after chart: bucket starts (ISO), treated, control.
    series: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _rate(num: np.ndarray, den: np.ndarray) -> float:
    d = float(den.sum())
    return float(num.sum()) / d if d > 0 else float("nan")


def _period_variance(
    tn: np.ndarray, td: np.ndarray, cn: np.ndarray, cd: np.ndarray, days: np.ndarray
) -> tuple[float, float]:
    """Variance of (treated rate - control rate) pooled over the buckets `days` of one period,
    as (count noise, extra day-to-day variance).

    Count noise is the Poisson variance of the pooled counts (one event's worth when there
    were none). The extra part is what the buckets' spread shows beyond it: a cluster-robust
    (CR1) variance with each bucket a cluster (its influence on the difference of the two
    pooled rates linearised), minus the count noise, floored at zero. So whatever moves a
    whole day (a quiet day in the segment only, a drift of the incident over its days,
    overdispersed counts) widens the interval, and a handful of buckets whose spread comes
    out small by chance cannot shrink it below the counts' own noise.
    """
    n = len(days)
    t_den, c_den = td[days].sum(), cd[days].sum()
    t_rate, c_rate = tn[days].sum() / t_den, cn[days].sum() / c_den
    u = (tn[days] - t_rate * td[days]) / t_den - (cn[days] - c_rate * cd[days]) / c_den
    robust = n / (n - 1) * float(np.sum(u**2))
    counts = max(tn[days].sum(), 1.0) / t_den**2 + max(cn[days].sum(), 1.0) / c_den**2
    return counts, max(robust - counts, 0.0)


def diff_in_diff(
    treated: tuple[np.ndarray, np.ndarray],
    control: tuple[np.ndarray, np.ndarray],
    after: np.ndarray,
    *,
    confidence: float = 0.95,
) -> dict[str, float]:
    """DiD of pooled rates from per-bucket (num, den) of treated and control; `after` marks post buckets.

    The interval is did +- t * se: se from each period's count noise plus its extra
    day-to-day variance (`_period_variance`, cluster-robust over buckets), t from Student's
    t with the Welch-Satterthwaite degrees of freedom of the estimated extra variance.

    Why not a bootstrap of the buckets (as before): a fix is measured over a few days each
    side (2-7), and a percentile bootstrap over so few blocks is too narrow (its variance is
    short by (n - 1) / n, its tails are normal rather than t, and with 2-3 days it has only a
    handful of distinct resamples). On synthetic panels with a known effect it held the
    effect 64-90 % of the time where 95 % was claimed, and in bench/discovery.py (20k items,
    six worlds) 9 of 12 planted fixes.
    """
    tn, td = (np.asarray(a, dtype=float) for a in treated)
    cn, cd = (np.asarray(a, dtype=float) for a in control)
    after = np.asarray(after, dtype=bool)
    if not (len(tn) == len(td) == len(cn) == len(cd) == len(after)):
        raise ValueError("treated, control and after must have one value per time bucket")
    pre, post = np.flatnonzero(~after), np.flatnonzero(after)
    if len(pre) < 2 or len(post) < 2:
        raise ValueError(
            f"need at least 2 buckets before and after the change, got {len(pre)} and {len(post)}"
        )
    t0, t1 = _rate(tn[pre], td[pre]), _rate(tn[post], td[post])
    c0, c1 = _rate(cn[pre], cd[pre]), _rate(cn[post], cd[post])
    did = (t1 - t0) - (c1 - c0)
    lo = hi = float("nan")
    if np.isfinite(did):
        p0, e0 = _period_variance(tn, td, cn, cd, pre)
        p1, e1 = _period_variance(tn, td, cn, cd, post)
        var = p0 + e0 + p1 + e1
        # Welch-Satterthwaite: only the estimated extra variance is uncertain (n - 1 degrees
        # of freedom a period); the count noise follows from the counts themselves.
        spread = e0**2 / (len(pre) - 1) + e1**2 / (len(post) - 1)
        dof = var**2 / spread if spread > 0 else np.inf
        half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * float(np.sqrt(var))
        lo, hi = did - half, did + half
    return {
        "did": did,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "treated_before": t0,
        "treated_after": t1,
        "control_before": c0,
        "control_after": c1,
        "buckets_before": len(pre),
        "buckets_after": len(post),
    }


def _pick_signal(signals: list[Signal], issue: str, signal: str | None) -> Signal:
    pool = [s for s in signals if s.issue == issue and (signal is None or s.name == signal)]
    if not pool:
        names = sorted({s.name for s in signals})
        raise ValueError(
            f"no signal for issue {issue!r} (signal {signal!r}); available: {', '.join(names)}"
        )
    return pool[0]


def effect_of_fix(
    tables: Mapping[str, pd.DataFrame],
    issue: str,
    segment: Segment,
    at: pd.Timestamp,
    *,
    control: Segment | None = None,
    scores: pd.DataFrame | None = None,
    signal: str | None = None,
    window_days: float = 7.0,
    bucket_h: int = 24,
    confidence: float = 0.95,
) -> EffectResult:
    """DiD of the issue rate in `segment` vs `control` (default: everything outside the segment)."""
    if not segment:
        raise ValueError("segment must name at least one dimension=value (the treated segment)")
    at = pd.Timestamp(at)
    at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
    dims = item_dimensions(tables)
    sig = _pick_signal(build_signals(tables, scores), issue, signal)
    uf = UnitFrame.build(sig.units, dims)
    start = at - pd.Timedelta(days=window_days)
    end = at + pd.Timedelta(days=window_days)
    edges = pd.date_range(start, end, freq=f"{bucket_h}h")
    if len(edges) < 5:
        raise ValueError(f"window of {window_days} days holds too few {bucket_h} h buckets")
    t_mask = uf.mask(segment)
    if not t_mask.any():
        raise ValueError(f"segment {segment_key(segment)!r} has no data for issue {issue!r}")
    c_mask = uf.mask(control) & ~t_mask if control is not None else ~t_mask
    ts = uf.frame["ts"]
    bucket = np.searchsorted(edges.to_numpy(), ts.to_numpy(), side="right") - 1
    valid = (bucket >= 0) & (bucket < len(edges) - 1)
    n = len(edges) - 1

    def series(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = mask & valid
        return (
            np.bincount(bucket[m], weights=uf.frame["num"].to_numpy(float)[m], minlength=n),
            np.bincount(bucket[m], weights=uf.frame["den"].to_numpy(float)[m], minlength=n),
        )

    after = edges[:-1] >= at
    treated, control_counts = series(t_mask), series(c_mask)
    empty = [
        f"the {who} {side} it"
        for who, (_, den) in (("segment", treated), ("control", control_counts))
        for side, part in (("before", ~after), ("after", after))
        if not den[part].sum() > 0
    ]
    if empty:
        # diff_in_diff would answer NaN with nothing to say why (printed as null)
        span = f"{ts.min().isoformat()} .. {ts.max().isoformat()}" if len(ts) else "empty"
        raise ValueError(
            f"no data of issue {issue!r} for {' or '.join(empty)} within {window_days:g} "
            f"days of {at.isoformat()} (the signal's data spans {span}); pick a time inside "
            "the data, or a wider window"
        )

    def rates(counts: tuple[np.ndarray, np.ndarray]) -> list[float | None]:
        num, den = counts
        return [float(a / b) if b > 0 else None for a, b in zip(num, den, strict=True)]

    out = diff_in_diff(
        treated,
        control_counts,
        after,
        confidence=confidence,
    )
    return EffectResult(
        issue=issue,
        signal=sig.name,
        segment=segment_key(segment),
        control=segment_key(control) + " (minus treated)" if control is not None else "rest",
        at=at.isoformat(),
        confidence=confidence,
        series={
            "times": [t.isoformat() for t in edges[:-1]],
            "treated": rates(treated),
            "control": rates(control_counts),
        },
        **out,
    )
