"""Effect of a fix: difference-in-differences of an issue rate, with a bootstrap interval.

Treated segment vs a control (another segment, or the rest of the platform), before vs after
a change time. Rates are pooled (sum of numerators over sum of denominators) per period; the
interval resamples time buckets within each period, the same buckets for treated and control,
so shocks common to both (a quiet weekend) cancel as they do in the estimate. Buckets are
whole days by default, so the resampling keeps each day's hours together (a day-block
bootstrap): within-day correlation is never broken apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from discovery.rootcause import UnitFrame
from discovery.series import Segment, segment_key
from discovery.signals import Signal, build_signals, item_dimensions


@dataclass(frozen=True)
class EffectResult:
    """DiD estimate (change in the treated rate beyond the control's) and its bootstrap CI."""

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


def diff_in_diff(
    treated: tuple[np.ndarray, np.ndarray],
    control: tuple[np.ndarray, np.ndarray],
    after: np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> dict[str, float]:
    """DiD of pooled rates from per-bucket (num, den) of treated and control; `after` marks post buckets."""
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

    def estimate(b: np.ndarray, a: np.ndarray) -> tuple[float, float, float, float, float]:
        t0, t1 = _rate(tn[b], td[b]), _rate(tn[a], td[a])
        c0, c1 = _rate(cn[b], cd[b]), _rate(cn[a], cd[a])
        return (t1 - t0) - (c1 - c0), t0, t1, c0, c1

    did, t0, t1, c0, c1 = estimate(pre, post)
    rng = np.random.default_rng(random_state)
    draws = np.empty(n_boot)
    for i in range(n_boot):
        b = rng.choice(pre, size=len(pre), replace=True)
        a = rng.choice(post, size=len(post), replace=True)
        draws[i] = estimate(b, a)[0]
    draws = draws[np.isfinite(draws)]
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail]) if len(draws) else (np.nan, np.nan)
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
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
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

    def rates(counts: tuple[np.ndarray, np.ndarray]) -> list[float | None]:
        num, den = counts
        return [float(a / b) if b > 0 else None for a, b in zip(num, den, strict=True)]

    out = diff_in_diff(
        treated,
        control_counts,
        after,
        n_boot=n_boot,
        confidence=confidence,
        random_state=random_state,
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
