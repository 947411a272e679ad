"""Fixtures for discovery tests: synthetic seasonal count series and a small raw dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def raw_tables() -> dict[str, pd.DataFrame]:
    """A small contract-shaped dataset: 21 days, a spam-policy removal surge in region=BR,format=live."""
    rng = np.random.default_rng(7)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    n = 12_000
    created = start + pd.to_timedelta(rng.uniform(0, 21 * 24, n), unit="h")
    region = rng.choice(["US", "BR", "IN", "DE"], n, p=[0.4, 0.2, 0.3, 0.1])
    fmt = rng.choice(["video", "photo", "live"], n, p=[0.55, 0.2, 0.25])
    category = rng.choice(["gaming", "food", "news"], n)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:06d}" for i in range(n)],
            "creator_id": [f"c{i % 900:04d}" for i in range(n)],
            "created_at": created,
            "format": fmt,
            "duration_s": 10.0,
            "region": region,
            "language": np.where(region == "BR", "pt", "en"),
            "category": category,
            "caption": "a normal day",
            "hashtags": rng.choice(["fyp", "fyp cooking", "news"], n),
            "audio_id": None,
        }
    )
    surge = (created >= start + pd.Timedelta(days=15)) & (region == "BR") & (fmt == "live")
    p = np.where(surge, 0.5, 0.04)
    acted = rng.random(n) < p
    moderation = pd.DataFrame(
        {
            "item_id": items["item_id"][acted].to_numpy(),
            "ts": created[acted] + pd.to_timedelta(rng.uniform(0.2, 3, acted.sum()), unit="h"),
            "action": "remove",
            "source": "auto",
            "policy": "spam",
        }
    )
    return {"items": items, "moderation": moderation}
