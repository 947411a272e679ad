"""Model-score signals: which scored rows count as flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from discovery.pipeline import DiscoveryConfig, discover
from discovery.signals import build_signals


def _scores(items: pd.DataFrame, p_lq: np.ndarray) -> pd.DataFrame:
    """One post row per item at posting + 1 h, flagged for low_quality wherever p >= 0.1 (a
    review-capacity threshold), and one moderation row flagged for wrongful_enforcement."""
    post = pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy(),
            "as_of": pd.to_datetime(items["created_at"], utc=True) + pd.Timedelta(hours=1),
            "anchor": "post",
            "low_quality": p_lq,
            "wrongful_enforcement": np.nan,
        }
    )
    post["flagged"] = np.where(p_lq >= 0.1, "low_quality", "")
    mod = pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy()[:1],
            "as_of": post["as_of"].to_numpy()[:1],
            "anchor": "moderation",
            "low_quality": np.nan,
            "wrongful_enforcement": [0.02],
            "flagged": ["wrongful_enforcement"],
        }
    )
    return pd.concat([post, mod], ignore_index=True)


def test_post_flags_need_the_minimum_probability_action_flags_do_not() -> None:
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "created_at": pd.to_datetime(["2026-01-01 00:10"] * 3, utc=True),
            "region": "US",
        }
    )
    scores = _scores(items, np.array([0.2, 0.8, 0.05]))
    lax = {s.name: s for s in build_signals({"items": items}, scores)}
    strict = {s.name: s for s in build_signals({"items": items}, scores, post_min_probability=0.5)}
    assert lax["low_quality:flagged"].units["num"].sum() == 2  # the capacity flags: a and b
    assert strict["low_quality:flagged"].units["num"].sum() == 1  # only b is more likely than not
    assert strict["low_quality:flagged"].units["den"].sum() == 3
    # the action-anchored issue keeps the scores' own flags (p = 0.02 < 0.5)
    assert strict["wrongful_enforcement:flagged"].units["num"].sum() == 1


def test_discovery_ignores_a_rise_of_only_weakly_flagged_items(raw_tables) -> None:
    # The planted BR/live surge, seen by a model that flags its items at the review queue's lax
    # threshold but never holds them likely bad: a rise of capacity flags alone, not an issue.
    items = raw_tables["items"]
    rng = np.random.default_rng(0)
    created = pd.to_datetime(items["created_at"], utc=True)
    surge = (
        (created >= pd.Timestamp("2026-01-16", tz="UTC"))
        & (items["region"] == "BR")
        & (items["format"] == "live")
    ).to_numpy()
    p = np.where(rng.random(len(items)) < 0.03, 0.9, 0.02)  # confident flags, steady everywhere
    p = np.where(surge & (rng.random(len(items)) < 0.5), 0.3, p)
    scores = _scores(items, p)
    tables = {"items": items}
    lax = discover(tables, scores, config=DiscoveryConfig(post_min_probability=None))
    assert any(
        i.issue == "low_quality" and dict(i.segment).get("region") == "BR" for i in lax.incidents
    )
    strict = discover(tables, scores)
    assert not [i for i in strict.incidents if i.issue == "low_quality"]
