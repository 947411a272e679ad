"""Difference-in-differences recovers a known effect; its interval covers it as often as it claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from discovery.effect import diff_in_diff, effect_of_fix


def _panel(effect: float, random_state: int) -> tuple:
    rng = np.random.default_rng(random_state)
    days = 28
    after = np.arange(days) >= 14
    shock = rng.normal(0, 0.01, days)  # common to treated and control
    td = rng.poisson(2000, days).astype(float)
    cd = rng.poisson(8000, days).astype(float)
    tp = 0.10 + 0.02 * after + shock + np.where(after, effect, 0.0)
    cp = 0.06 + 0.02 * after + shock
    return (rng.binomial(td.astype(int), tp), td), (rng.binomial(cd.astype(int), cp), cd), after


@pytest.mark.parametrize("effect", [-0.04, 0.0, 0.03])
def test_did_recovers_a_known_effect(effect: float) -> None:
    treated, control, after = _panel(effect, random_state=11)
    out = diff_in_diff(treated, control, after)
    assert out["did"] == pytest.approx(effect, abs=0.01)
    assert out["ci_low"] <= effect <= out["ci_high"]
    assert out["ci_high"] - out["ci_low"] < 0.05


def _short_panel(rng: np.random.Generator, days: int, effect: float, day_sd: float) -> tuple:
    """`days` days before and after a fix of `effect`; the treated segment's own day-to-day
    shocks (relative sd `day_sd`) are not shared with the control."""
    after = np.arange(2 * days) >= days
    td = np.full(2 * days, 2000.0)
    cd = np.full(2 * days, 20000.0)
    tp = np.clip(0.01 * (1 + rng.normal(0, day_sd, 2 * days)) + effect * after, 1e-6, 1)
    return (
        (rng.binomial(2000, tp).astype(float), td),
        (rng.binomial(20000, 0.01, 2 * days).astype(float), cd),
        after,
    )


@pytest.mark.parametrize(("days", "day_sd"), [(2, 0.0), (3, 0.3), (5, 0.3)])
def test_interval_covers_a_known_effect_as_often_as_it_claims(days: int, day_sd: float) -> None:
    """Over repeated draws the 95% interval holds the true effect 90-99% of the time.

    A fix is measured over a few days each side; a percentile bootstrap of those days held
    the effect 68-87% of the time in these settings (too narrow), which this test rejects."""
    rng = np.random.default_rng(days)
    effect, draws, covered = -0.004, 400, 0
    for _ in range(draws):
        out = diff_in_diff(*_short_panel(rng, days, effect, day_sd))
        covered += out["ci_low"] <= effect <= out["ci_high"]
    assert 0.90 <= covered / draws <= 0.99


def test_no_events_after_the_fix_still_leaves_count_noise() -> None:
    """A thin segment with no event at all after the fix: the interval is not a point."""
    after = np.arange(6) >= 3
    treated = (np.array([3.0, 5.0, 4.0, 0.0, 0.0, 0.0]), np.full(6, 500.0))
    control = (np.full(6, 50.0), np.full(6, 5000.0))
    out = diff_in_diff(treated, control, after)
    assert out["did"] == pytest.approx(-0.008)
    assert out["ci_high"] - out["ci_low"] > 0.004


def test_did_needs_buckets_on_both_sides() -> None:
    treated, control, _ = _panel(0.0, 1)
    with pytest.raises(ValueError, match="at least 2 buckets"):
        diff_in_diff(treated, control, np.arange(28) >= 27)


def test_effect_of_fix_on_raw_tables(raw_tables: dict[str, pd.DataFrame]) -> None:
    at = pd.Timestamp("2026-01-16", tz="UTC")
    res = effect_of_fix(
        raw_tables,
        "low_quality",
        (("region", "BR"), ("format", "live")),
        at,
        window_days=5,
    )
    # The surge starts at day 15: the treated rate rises by about 0.46 per item, the rest does not.
    assert res.signal == "low_quality:spam_actions"
    assert 0.3 < res.did < 0.7
    assert 0.2 < res.ci_low < res.did < res.ci_high
    with pytest.raises(ValueError, match="no data"):
        effect_of_fix(raw_tables, "low_quality", (("region", "XX"),), at)


def test_a_fix_time_outside_the_data_is_refused_not_answered_with_nan(
    raw_tables: dict[str, pd.DataFrame],
) -> None:
    # the data spans 21 days from 2026-01-01: a fix a year later has no data on either side,
    # one at the very start none before it; the old answer was did = NaN (null in the JSON)
    segment = (("region", "BR"), ("format", "live"))
    with pytest.raises(ValueError, match=r"no data of issue 'low_quality' for the segment before"):
        effect_of_fix(raw_tables, "low_quality", segment, pd.Timestamp("2027-01-16", tz="UTC"))
    with pytest.raises(ValueError, match=r"segment before it or the control before it within 5"):
        effect_of_fix(
            raw_tables, "low_quality", segment, pd.Timestamp("2026-01-01", tz="UTC"), window_days=5
        )
