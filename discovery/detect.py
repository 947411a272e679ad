"""Count-aware anomaly detection on many rate series at once.

Baseline: a trailing-window rate per series (level), times a time-of-day profile learned on the
top-level series (rates have a daily rhythm; segments are too sparse to learn their own), shrunk
towards the platform rate so thin segments do not get a zero baseline. Test: the binomial or
Poisson upper tail of the observed numerator given the denominator and the baseline rate,
with counts deflated by a per-series overdispersion factor (quasi-likelihood). False alarms are
controlled by Benjamini–Hochberg across all series in each bucket, a minimum count, a minimum
rate ratio and persistence (k consecutive significant buckets). A second pass recomputes the
baseline without the buckets found significant, so an incident does not hide in its own baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special

Test = Literal["binomial", "poisson"]


@dataclass(frozen=True)
class DetectorConfig:
    """Parameters of `detect_counts` for one bucket scale."""

    period: int = 24  # buckets per daily cycle (24 hourly, 1 daily: no profile)
    window: int = 168  # trailing buckets in the baseline (7 days hourly)
    min_history: int = 48  # no tests before this many buckets of history
    alpha: float = 0.01  # BH false-discovery rate across series per bucket
    persistence: int = 2  # consecutive significant buckets before an alarm
    min_count: float = 5.0  # observed numerator at least this
    min_ratio: float = 1.5  # observed / expected at least this
    min_excess: float = 3.0  # observed - expected at least this
    prior_events: float = 3.0  # shrinkage towards the platform rate, in expected events
    profile_events: float = 20.0  # shrinkage of the time-of-day profile towards flat
    max_dispersion: float = 20.0
    passes: int = 2


@dataclass
class Detection:
    """Per series and bucket: baseline rate, expected count, p-value, and which buckets alarm."""

    rate: np.ndarray  # baseline rate p0
    expected: np.ndarray  # den * p0
    pvalue: np.ndarray  # NaN where not tested
    significant: np.ndarray  # BH-rejected and past min count/ratio/excess
    alarm: np.ndarray  # significant and part of a run of >= persistence buckets
    run_start: np.ndarray  # index of the first bucket of the current significant run (-1 if none)
    dispersion: np.ndarray  # (n_series,)


def trailing_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum over the `window` buckets strictly before each bucket, along the last axis."""
    c = np.concatenate([np.zeros((*x.shape[:-1], 1)), np.cumsum(x, axis=-1)], axis=-1)
    t = np.arange(x.shape[-1])
    lo = np.maximum(t - window, 0)
    return c[..., t] - c[..., lo]


def predictive_tail(
    observed: np.ndarray, shape: np.ndarray, rate: np.ndarray, exposure: np.ndarray
) -> np.ndarray:
    """P(X >= observed) when X ~ Poisson(exposure * lam) and lam ~ Gamma(shape, rate).

    The baseline rate is itself estimated from a trailing window; integrating over its Gamma
    posterior gives a negative-binomial predictive tail, so thin segments with a noisy
    baseline do not produce tiny p-values. Continuous in the counts (for overdispersion).
    """
    observed = np.asarray(observed, dtype=float)
    out = np.ones_like(observed)
    pos = (observed > 0) & (exposure > 0)
    q = exposure / (rate + exposure)
    out[pos] = special.betainc(observed[pos], shape[pos], q[pos])
    return out


def benjamini_hochberg(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """Column-wise BH: reject per bucket (column) across series (rows); NaN p-values are not tested."""
    p = np.where(np.isnan(pvalues), np.inf, pvalues)
    order = np.argsort(p, axis=0, kind="stable")
    sorted_p = np.take_along_axis(p, order, axis=0)
    m = np.isfinite(p).sum(axis=0)
    k = np.arange(1, p.shape[0] + 1)[:, None]
    ok = sorted_p <= k / np.maximum(m, 1) * alpha
    kmax = np.max(np.where(ok, k, 0), axis=0)
    ranks = np.empty_like(order)
    np.put_along_axis(
        ranks, order, np.arange(p.shape[0])[:, None].repeat(p.shape[1], axis=1), axis=0
    )
    return (ranks + 1) <= kmax[None, :]


def run_lengths(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Length of the run of True ending at each bucket, and the index where that run started."""
    s, t = flags.shape
    length = np.zeros((s, t), dtype=int)
    start = np.full((s, t), -1, dtype=int)
    run = np.zeros(s, dtype=int)
    for j in range(t):
        run = np.where(flags[:, j], run + 1, 0)
        length[:, j] = run
        start[:, j] = np.where(run > 0, j - run + 1, -1)
    return length, start


def _profile(num: np.ndarray, den: np.ndarray, mask: np.ndarray, cfg: DetectorConfig) -> np.ndarray:
    """Multiplicative time-of-day factor per bucket from the top-level series (trailing window)."""
    t = num.shape[0]
    if cfg.period <= 1:
        return np.ones(t)
    n_all = trailing_sum(num * mask, cfg.window)
    d_all = trailing_sum(den * mask, cfg.window)
    rate = np.divide(n_all, d_all, out=np.zeros(t), where=d_all > 0)
    phase = np.arange(t) % cfg.period
    out = np.ones(t)
    for h in range(cfg.period):
        on = phase == h
        n_h = trailing_sum(np.where(on, num * mask, 0.0), cfg.window)
        d_h = trailing_sum(np.where(on, den * mask, 0.0), cfg.window)
        f = (n_h + cfg.profile_events) / (d_h * rate + cfg.profile_events)
        out[on] = f[on]
    return out


def _pooled(raw: np.ndarray, events: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Median dispersion per group over series with enough events (own value if none)."""
    gid = np.zeros(len(raw), dtype=int) if groups is None else np.asarray(groups)
    out = raw.copy()
    for g in np.unique(gid):
        members = gid == g
        rich = members & (events >= 20)
        if rich.sum() >= 3:
            out[members] = np.median(raw[rich])
    return np.maximum(out, 1.0)


def detect_counts(
    num: np.ndarray,
    den: np.ndarray,
    *,
    test: Test = "binomial",
    config: DetectorConfig | None = None,
    parent_row: int = 0,
    groups: np.ndarray | None = None,
    families: np.ndarray | None = None,
) -> Detection:
    """Detect upward rate anomalies in every row of (num, den); row `parent_row` is the platform total.

    `groups` (one id per row) pools the overdispersion estimate: the median over a group's
    series is used, so an incident in one series does not inflate its own dispersion.
    `families` (one id per row) splits the Benjamini–Hochberg correction, e.g. single
    dimensions apart from the far more numerous dimension pairs.
    """
    cfg = config or DetectorConfig()
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    if num.shape != den.shape or num.ndim != 2:
        raise ValueError(
            f"num and den must be 2-D arrays of one shape, got {num.shape} and {den.shape}"
        )
    s, t = num.shape
    mask = np.ones_like(num)
    result: Detection | None = None
    for _ in range(max(cfg.passes, 1)):
        profile = _profile(num[parent_row], den[parent_row], mask[parent_row], cfg)
        expected_den = den * profile[None, :]
        sn = trailing_sum(num * mask, cfg.window)
        se = trailing_sum(expected_den * mask, cfg.window)
        top_rate = np.divide(
            sn[parent_row], se[parent_row], out=np.zeros(t), where=se[parent_row] > 0
        )
        top_rate = np.maximum(top_rate, 0.5 / (se[parent_row] + 1.0))
        prior = cfg.prior_events / top_rate
        level = (sn + cfg.prior_events) / (se + prior[None, :])
        rate = np.clip(level * profile[None, :], 1e-9, 1 - 1e-9 if test == "binomial" else np.inf)
        expected = den * rate
        tested = (np.arange(t)[None, :] >= cfg.min_history) & (den > 0)
        # Overdispersion per series: pooled Pearson statistic over tested, unmasked buckets,
        # shrunk towards 1 when the series has few events.
        var = expected * (1 - rate) if test == "binomial" else expected.copy()
        use = tested & (mask > 0) & (var > 0)
        # Squared residuals are capped at 16 variances (|Pearson residual| <= 4): a bucket that
        # far off is an anomaly (often the incident itself, in the buckets after the first
        # significant one), not everyday overdispersion; uncapped, one lasting incident
        # inflated its group's dispersion tenfold and hid itself and its neighbours.
        resid = np.where(use, np.minimum((num - expected) ** 2, 16.0 * var), 0.0).sum(axis=1)
        total_var = np.where(use, var, 0.0).sum(axis=1)
        raw = np.divide(resid, total_var, out=np.ones(s), where=total_var > 0)
        events = np.where(use, num, 0.0).sum(axis=1)
        raw = 1.0 + np.maximum(raw - 1.0, 0.0) * events / (events + 100.0)
        phi = _pooled(raw, events, groups)
        phi = np.minimum(phi, cfg.max_dispersion)
        shape = (sn + cfg.prior_events) / phi[:, None]
        post_rate = (se + prior[None, :]) / phi[:, None]
        p = predictive_tail(num / phi[:, None], shape, post_rate, expected_den / phi[:, None])
        p = np.where(tested, p, np.nan)
        fam = np.zeros(s, dtype=int) if families is None else np.asarray(families)
        rejected = np.zeros_like(p, dtype=bool)
        for f in np.unique(fam):
            rows = fam == f
            rejected[rows] = benjamini_hochberg(p[rows], cfg.alpha)
        significant = (
            rejected
            & (num >= cfg.min_count)
            & (num >= cfg.min_ratio * expected)
            & (num - expected >= cfg.min_excess)
        )
        length, start = run_lengths(significant)
        alarm = length >= cfg.persistence
        result = Detection(
            rate=rate,
            expected=expected,
            pvalue=p,
            significant=significant,
            alarm=alarm,
            run_start=start,
            dispersion=phi,
        )
        mask = (~significant).astype(float)
    assert result is not None
    return result
