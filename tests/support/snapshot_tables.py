"""Hand-checked and random raw tables for the snapshot tests (pandas and Dask engines)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import EVENT_KINDS, REPORT_REASONS

T0 = pd.Timestamp("2024-01-01", tz="UTC")
H = pd.Timedelta(hours=1)
M = pd.Timedelta(minutes=1)
END = T0 + 48 * H


def at(offset: pd.Timedelta) -> pd.Timestamp:
    return T0 + offset


def hand_tables() -> dict[str, pd.DataFrame]:
    """Three items, two creators; every number below is checked by hand in the tests."""
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3"],
            "creator_id": ["c1", "c1", "c2"],
            "created_at": [T0, at(2 * H), at(1 * H)],
            "format": ["video", "photo", "live"],
            "duration_s": [12.0, None, 30.0],
            "region": ["us", "us", "br"],
            "language": ["en", "en", "pt"],
            "category": ["pets", "pets", "music"],
            "caption": ["hello", None, "ola"],
            "hashtags": ["a b", "", "c"],
            "audio_id": ["a1", None, None],
        }
    )
    creators = pd.DataFrame(
        {
            "creator_id": ["c1", "c2"],
            "created_at": [T0 - pd.Timedelta(days=10), T0 - pd.Timedelta(days=1)],
            "region": ["us", "br"],
            "verified": [True, False],
            "follower_count": [100, 5],
        }
    )
    ev = [
        # item, user, ts, kind, watch_frac, reason, text
        ("i1", "u1", at(10 * M), "view", 0.5, None, None),
        ("i1", "u1", at(20 * M), "view", 1.0, None, None),  # same viewer again
        ("i1", "u2", at(50 * M), "view", None, None, None),  # view without watch_frac
        ("i1", "u3", at(1 * H), "view", 0.25, None, None),  # exactly at the 1 h as_of
        ("i1", "u2", at(30 * M), "like", None, None, None),
        ("i1", "u4", at(40 * M), "report", None, "spam", None),
        ("i1", "u4", at(3 * H), "report", None, "weird-reason", None),  # unknown -> other
        ("i1", "u5", at(5 * H + 30 * M), "report", None, "harassment", None),
        ("i1", "u6", at(15 * M), "comment", None, None, "You are an IDIOT!"),
        ("i1", "u7", at(2 * H), "comment", None, None, "nice video"),
        ("i1", "u8", at(5 * H), "comment", None, None, None),  # comment without text
        ("i1", None, at(7 * H), "view", 0.75, None, None),  # anonymous view
        ("i3", "u1", at(1 * H + 30 * M), "view", 0.9, None, None),
        ("i3", "u1", at(1 * H + 40 * M), "share", None, None, None),
        ("zz", "u1", at(1 * H + 40 * M), "view", 0.9, None, None),  # unknown item: ignored
    ]
    events = pd.DataFrame(
        ev, columns=["item_id", "user_id", "ts", "kind", "watch_frac", "reason", "text"]
    )
    moderation = pd.DataFrame(
        {
            "item_id": ["i1", "i1", "i1", "i2"],
            "ts": [at(4 * H), at(8 * H), at(10 * H), at(3 * H)],
            "action": ["remove", "restore", "restrict", "remove"],
            "source": ["auto", "human", "human", "auto"],
            "policy": ["spam", "spam", "hate", "nudity"],
        }
    )
    appeals = pd.DataFrame(
        {
            "item_id": ["i2", "i1"],
            "filed_at": [at(3 * H + 30 * M), at(4 * H + 30 * M)],
            "resolved_at": [at(5 * H), pd.NaT],
            "outcome": ["overturned", "pending"],
        }
    )
    return {
        "items": items,
        "creators": creators,
        "events": events,
        "moderation": moderation,
        "appeals": appeals,
    }


def random_tables(seed: int, n_items: int = 30, n_events: int = 1500) -> dict[str, pd.DataFrame]:
    """Small random dataset with ties, boundary timestamps, nulls and unknown values."""
    rng = np.random.default_rng(seed)
    item_ids = [f"it{i:03d}" for i in range(n_items)]
    created = T0 + pd.to_timedelta(rng.integers(0, 48 * 60, n_items), unit="min")
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "creator_id": [f"c{c}" for c in rng.integers(0, 8, n_items)],
            "created_at": created,
            "format": rng.choice(["video", "photo", "live"], n_items),
            "duration_s": rng.uniform(1, 60, n_items),
            "region": "us",
            "language": "en",
            "category": rng.choice(["a", "b"], n_items),
            "caption": "cap",
            "hashtags": "x y",
            "audio_id": None,
        }
    )
    creators = pd.DataFrame(
        {
            "creator_id": [f"c{c}" for c in range(7)],  # c7 unknown on purpose
            "created_at": T0 - pd.to_timedelta(rng.integers(1, 400, 7), unit="D"),
            "region": "us",
            "verified": rng.random(7) < 0.3,
            "follower_count": rng.integers(0, 10_000, 7),
        }
    )
    e_item = rng.integers(0, n_items, n_events)
    # Half the events sit exactly on an hour after posting: as_of boundaries and window edges.
    offset_min = np.where(
        rng.random(n_events) < 0.5,
        rng.integers(0, 30, n_events) * 60,
        rng.integers(0, 30 * 60, n_events),
    )
    ts = created[e_item] + pd.to_timedelta(offset_min, unit="min")
    kinds = rng.choice(EVENT_KINDS, n_events, p=[0.5, 0.15, 0.05, 0.1, 0.08, 0.05, 0.04, 0.03])
    words = ["nice", "idiot", "Trash", "cool", "killer", "hate!", "ok", "x_die"]
    texts = [
        " ".join(rng.choice(words, rng.integers(1, 4)))
        if k == "comment" and rng.random() < 0.9
        else None
        for k in kinds
    ]
    events = pd.DataFrame(
        {
            "item_id": np.where(rng.random(n_events) < 0.02, "ghost", np.asarray(item_ids)[e_item]),
            "user_id": np.where(
                rng.random(n_events) < 0.05, None, [f"u{u}" for u in rng.integers(0, 40, n_events)]
            ),
            "ts": ts,
            "kind": kinds,
            "watch_frac": np.where(
                (kinds == "view") & (rng.random(n_events) < 0.9), rng.random(n_events), np.nan
            ),
            "reason": [
                rng.choice([*REPORT_REASONS, "odd", None]) if k == "report" else None for k in kinds
            ],
            "text": texts,
        }
    )
    n_mod = 25
    m_item = rng.integers(0, n_items, n_mod)
    moderation = pd.DataFrame(
        {
            "item_id": np.asarray(item_ids)[m_item],
            "ts": created[m_item] + pd.to_timedelta(rng.integers(0, 30, n_mod) * 60, unit="min"),
            "action": rng.choice(["remove", "restrict", "restore"], n_mod),
            "source": rng.choice(["auto", "human"], n_mod),
            "policy": rng.choice(["spam", "hate"], n_mod),
        }
    )
    n_ap = 12
    ap_item = rng.integers(0, n_items, n_ap)
    filed = created[ap_item] + pd.to_timedelta(rng.integers(0, 20, n_ap), unit="h")
    resolved = filed + pd.to_timedelta(rng.integers(1, 20, n_ap), unit="h")
    outcome = rng.choice(["upheld", "overturned", "pending"], n_ap)
    appeals = pd.DataFrame(
        {
            "item_id": np.asarray(item_ids)[ap_item],
            "filed_at": filed,
            "resolved_at": pd.Series(resolved).where(outcome != "pending"),
            "outcome": outcome,
        }
    )
    return {
        "items": items,
        "creators": creators,
        "events": events,
        "moderation": moderation,
        "appeals": appeals,
    }
