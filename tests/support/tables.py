"""Small raw datasets: all six contract tables (`make_tables`) and seasonal count series."""

from __future__ import annotations

import numpy as np
import pandas as pd

T0 = pd.Timestamp("2026-01-05 10:00", tz="UTC")


def make_tables() -> dict[str, pd.DataFrame]:
    """A tiny dataset that satisfies the contract (every table, every column kind)."""
    hours = pd.to_timedelta
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4"],
            "creator_id": ["c1", "c1", "c2", "c3"],
            "created_at": [T0, T0 + hours("1h"), T0 + hours("2h"), T0 + hours("3h")],
            "format": ["video", "photo", "live", "video"],
            "duration_s": [12.5, None, 300.0, 0.0],
            "region": ["us", "de", "br", "us"],
            "language": ["en", "de", "pt", "en"],
            "category": ["comedy", "food", "music", "comedy"],
            "caption": ["funny cat", None, "live set", "win money now"],
            "hashtags": ["cat funny", "", "music", "free money"],
            "audio_id": ["a1", None, "a2", None],
        }
    )
    creators = pd.DataFrame(
        {
            "creator_id": ["c1", "c2", "c3"],
            "created_at": [T0 - hours("300D"), T0 - hours("20D"), T0 - hours("1D")],
            "region": ["us", "br", "us"],
            "verified": [True, False, False],
            "follower_count": [120_000, 35, 0],
        }
    )
    events = pd.DataFrame(
        {
            "item_id": ["i1", "i1", "i2", "i4", "i4", "i3"],
            "user_id": ["u1", "u2", None, "u3", "u1", "u9"],
            "ts": [T0 + hours(f"{m}min") for m in (5, 7, 65, 190, 200, 130)],
            "kind": ["view", "like", "view", "report", "comment", "share"],
            "watch_frac": [0.8, None, 1.0, None, None, None],
            "reason": [None, None, None, "spam", None, None],
            "text": [None, None, None, None, "scam!!", None],
        }
    )
    moderation = pd.DataFrame(
        {
            "item_id": ["i4", "i2"],
            "ts": [T0 + hours("4h"), T0 + hours("5h")],
            "action": ["remove", "restrict"],
            "source": ["auto", "human"],
            "policy": ["spam", "nudity"],
        }
    )
    appeals = pd.DataFrame(
        {
            "item_id": ["i4", "i2"],
            "filed_at": [T0 + hours("6h"), T0 + hours("7h")],
            "resolved_at": [T0 + hours("30h"), pd.NaT],
            "outcome": ["upheld", "pending"],
        }
    )
    labels = pd.DataFrame(
        {
            "item_id": ["i1", "i4", "i4"],
            "issue": ["low_quality", "low_quality", "harmful_interactions"],
            "label": [0, 1, 1],
            "labeled_at": [T0 + hours("2D"), T0 + hours("2D"), T0 + hours("3D")],
            "source": ["review", "review", "import"],
        }
    )
    return {
        "items": items,
        "creators": creators,
        "events": events,
        "moderation": moderation,
        "appeals": appeals,
        "labels": labels,
    }


DAY_PROFILE = 1.0 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 6) / 24)


def seasonal_counts(
    n_series: int, days: int, *, rate: float = 0.03, mean_den: float = 40.0, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Hourly (num, den) with a daily rhythm in volume and in rate; row 0 is the sum of the rest."""
    rng = np.random.default_rng(random_state)
    t = days * 24
    hour = np.arange(t) % 24
    volume = (
        np.exp(rng.normal(np.log(mean_den), 1.0, n_series))[:, None] * DAY_PROFILE[hour][None, :]
    )
    den = rng.poisson(volume).astype(float)
    base = np.exp(rng.normal(np.log(rate), 0.5, n_series))[:, None]
    p = np.clip(base * (1 + 0.25 * np.cos(2 * np.pi * hour / 24))[None, :], 0, 1)
    num = rng.binomial(den.astype(int), p).astype(float)
    num[0], den[0] = num[1:].sum(axis=0), den[1:].sum(axis=0)
    return num, den
