"""`comment_text`: the latest comments strictly before as_of, point in time (features.schema)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import COMMENT_TEXT_LAST, column_kind
from features.snapshot import build_snapshots
from features.snapshot_frame import latest_texts


def _brute(texts, items, ts, item, as_of, last):  # type: ignore[no-untyped-def]
    before = [(t, k, x) for k, (x, i, t) in enumerate(zip(texts, items, ts, strict=True))]
    picked = sorted((t, k, x) for t, k, x in before if items[k] == item and t < as_of)
    return "\n".join(x for _, _, x in picked[-last:]) if picked else ""


def test_latest_texts_match_brute_force_with_ties_and_boundaries() -> None:
    rng = np.random.default_rng(3)
    n = 400
    items = rng.integers(0, 6, n)
    ts = rng.integers(0, 50, n) * 1_000  # many ties in time
    texts = np.array([f"c{k}" for k in range(n)], dtype=object)
    a_item = np.repeat(np.arange(7), 12)  # item 6 has no comments
    a_asof = np.concatenate([[0, 1_000, 49_000, 50_000], rng.integers(0, 51_000, 80)])[
        : a_item.size
    ]
    for last in (1, 3, COMMENT_TEXT_LAST):
        got = latest_texts(texts, items, ts, a_item, a_asof, last=last)
        want = [_brute(texts, items, ts, i, t, last) for i, t in zip(a_item, a_asof, strict=True)]
        assert got.tolist() == want


def test_snapshot_comment_text_never_holds_a_later_comment(tables) -> None:  # type: ignore[no-untyped-def]
    events = tables["events"]
    item = tables["items"]["item_id"].iloc[0]
    created = pd.Timestamp(tables["items"]["created_at"].iloc[0])
    rows = pd.DataFrame(
        {
            "item_id": [item] * 3,
            "user_id": [events["user_id"].iloc[0]] * 3,
            "kind": ["comment"] * 3,
            "ts": [
                created + pd.Timedelta(minutes=30),  # before the 1 h snapshot
                created + pd.Timedelta(hours=1),  # exactly at as_of: not before it
                created + pd.Timedelta(hours=3),  # after the 1 h, before the 6 h snapshot
            ],
            "text": ["early words", "boundary words", "late words"],
        }
    )
    tables["events"] = pd.concat([events, rows], ignore_index=True)
    snap = build_snapshots(tables, horizons_h=(1.0, 6.0), include_moderation=False)
    mine = snap[(snap["item_id"] == item) & (snap["anchor"] == "post")].set_index("horizon_h")
    one, six = mine.loc[1.0, "comment_text"], mine.loc[6.0, "comment_text"]
    assert "early words" in one
    assert "boundary words" not in one and "late words" not in one
    assert "early words" in six and "boundary words" in six and "late words" in six
    assert column_kind("comment_text") == "string"
    # every snapshot row: only comments strictly before its as_of
    ev = tables["events"]
    comments = ev[(ev["kind"] == "comment") & ev["text"].notna()]
    for _, r in snap.sample(min(len(snap), 40), random_state=0).iterrows():
        mine_c = comments[(comments["item_id"] == r["item_id"]) & (comments["ts"] < r["as_of"])]
        later = comments[(comments["item_id"] == r["item_id"]) & (comments["ts"] >= r["as_of"])]
        got = r["comment_text"].split("\n") if r["comment_text"] else []
        assert len(got) == min(len(mine_c), COMMENT_TEXT_LAST)
        assert not (set(got) - set(mine_c["text"]))
        assert not (set(got) & (set(later["text"]) - set(mine_c["text"])))
