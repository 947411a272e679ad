"""Candidate issues: near-duplicate captions group together; shared hashtags form ranked clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from discovery.clusters import candidate_clusters, near_duplicate_groups, normalize_text


def test_normalize_text_drops_urls_digits_and_emoji() -> None:
    assert normalize_text("WIN a FREE $500!!! http://bit.ly/x1 🔥🔥") == "win a free"


def test_near_duplicate_captions_group_together() -> None:
    texts = [
        "WIN A FREE IPHONE today only, click the link in bio http://a.io 🔥",
        "win a free iphone today only click the link in bio https://b.co/zz 💰💰",
        "Win a FREE iPhone TODAY only - click the link in bio!!!",
        "my grandma's secret lasagna recipe, so cozy",
        "My grandma's secret lasagna recipe — so cozy 😋",
        "training for the marathon, week 3 of 12",
        None,
        "",
    ]
    groups = near_duplicate_groups(texts, random_state=0)
    assert groups[0] == groups[1] == groups[2]
    assert groups[3] == groups[4]
    assert len({groups[0], groups[3], groups[5]}) == 3
    assert groups[6] == groups[7] == -1


def test_candidate_clusters_rank_a_spam_hashtag_first() -> None:
    rng = np.random.default_rng(0)
    n = 600
    start = pd.Timestamp("2026-02-01", tz="UTC")
    spam = np.arange(n) < 60
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n)],
            "creator_id": np.where(
                spam, [f"s{i % 6}" for i in range(n)], [f"c{i}" for i in range(n)]
            ),
            "created_at": start
            + pd.to_timedelta(
                np.where(spam, rng.uniform(9, 10, n), rng.uniform(0, 10, n)), unit="D"
            ),
            "caption": np.where(
                spam, "FREE COINS!!! claim now http://x.io", [f"day {i} vlog" for i in range(n)]
            ),
            "hashtags": np.where(spam, "fyp freecoins", "fyp"),
            "audio_id": None,
        }
    )
    flagged_ids = items["item_id"][spam | (rng.random(n) < 0.05)]
    moderation = pd.DataFrame(
        {
            "item_id": flagged_ids,
            "ts": start,
            "action": "remove",
            "source": "auto",
            "policy": "spam",
        }
    )
    table = candidate_clusters({"items": items, "moderation": moderation}, min_size=5)
    top = table.iloc[0]
    assert (top["kind"], top["key"]) in {
        ("hashtag", "freecoins"),
        ("caption", "free coins claim now"),
    }
    keys = set(zip(table["kind"], table["key"], strict=True))
    assert ("hashtag", "freecoins") in keys and ("caption", "free coins claim now") in keys
    tag = table[(table["kind"] == "hashtag") & (table["key"] == "freecoins")].iloc[0]
    assert tag["size"] == 60 and tag["flagged_share"] == 1.0 and tag["growth"] > 3
    fyp = table[(table["kind"] == "hashtag") & (table["key"] == "fyp")]
    assert fyp.empty or fyp.iloc[0]["score"] < tag["score"]
