"""Point-in-time snapshots: exact counts on hand-built tables, boundaries, no future leakage,
missing tables, and every column against a slow row-by-row reference on random tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from features.contract import EVENT_KINDS, REPORT_REASONS
from features.schema import (
    ABUSE_LEXICON,
    ACTION_COLUMNS,
    CREATOR_COLUMNS,
    EVENT_COLUMNS,
    MODERATION_COLUMNS,
    SNAPSHOT_COLUMNS,
    VELOCITY_KINDS,
    WINDOWS_H,
)
from features.snapshot import build_snapshots, parse_horizons, resolve_as_of_max
from tests.support.snapshot_tables import END, T0, H, M, at, hand_tables, random_tables


def row(snap: pd.DataFrame, item: str, as_of: pd.Timestamp, anchor: str = "post") -> pd.Series:
    hit = snap[(snap["item_id"] == item) & (snap["as_of"] == as_of) & (snap["anchor"] == anchor)]
    assert len(hit) == 1, f"expected one {anchor} row for {item} at {as_of}, got {len(hit)}"
    return hit.iloc[0]


@pytest.fixture(scope="module")
def snap() -> pd.DataFrame:
    return build_snapshots(hand_tables(), as_of_max=END)


def test_rows_and_columns(snap: pd.DataFrame) -> None:
    # 3 items x 3 horizons + the two removes and one restrict; the restore opens no row.
    assert len(snap) == 12
    assert list(snap.columns) == list(SNAPSHOT_COLUMNS)
    assert (snap["anchor"] == "moderation").sum() == 3
    mod = snap[snap["anchor"] == "moderation"].sort_values("as_of")
    assert mod["item_id"].tolist() == ["i2", "i1", "i1"]
    assert mod["action"].tolist() == ["remove", "remove", "restrict"]
    assert mod["action_source"].tolist() == ["auto", "auto", "human"]
    assert mod["action_policy"].tolist() == ["nudity", "spam", "hate"]
    assert mod["horizon_h"].tolist() == [1.0, 4.0, 10.0]
    post = snap[snap["anchor"] == "post"]
    assert post["action"].isna().all()
    assert sorted(post["horizon_h"].unique()) == [1.0, 6.0, 24.0]
    assert (snap["age_h"] == (snap["as_of"] - snap["created_at"]) / H).all()


def test_counts_at_one_hour_exclude_the_boundary_event(snap: pd.DataFrame) -> None:
    r = row(snap, "i1", at(1 * H))
    assert r["n_view"] == 3  # the view at exactly as_of is not yet known
    assert r["n_viewers"] == 2
    assert r["mean_watch_frac"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2, null ignored
    assert r["n_like"] == 1
    assert r["n_report"] == 1 and r["n_report_spam"] == 1 and r["n_reporters"] == 1
    assert r["n_comment"] == 1 and r["n_comment_toxic"] == 1
    assert r["comment_mean_len"] == len("You are an IDIOT!")
    assert r["n_view_1h"] == 3 and r["n_view_6h"] == 3
    assert r["n_share"] == 0 and r["n_follow"] == 0
    assert r["creator_n_items"] == 0  # i2 is posted at 2 h
    assert r["creator_prior_removals"] == 0
    assert r["creator_prior_overturned"] == 0
    assert r["mod_n_actions"] == 0 and r["mod_removed"] == 0 and r["mod_restricted"] == 0
    assert r["creator_age_d"] == pytest.approx(10 + 1 / 24)
    assert r["creator_followers"] == 100 and r["creator_verified"] == 1


def test_counts_at_six_hours(snap: pd.DataFrame) -> None:
    r = row(snap, "i1", at(6 * H))
    assert r["n_view"] == 4 and r["n_viewers"] == 3
    assert r["mean_watch_frac"] == pytest.approx((0.5 + 1.0 + 0.25) / 3)
    assert r["n_view_1h"] == 0 and r["n_view_6h"] == 4
    assert r["n_report"] == 3 and r["n_reporters"] == 2
    assert (r["n_report_spam"], r["n_report_other"], r["n_report_harassment"]) == (1, 1, 1)
    assert sum(r[f"n_report_{x}"] for x in REPORT_REASONS) == r["n_report"]
    assert r["n_report_1h"] == 1  # the 5:30 report only
    assert r["n_comment"] == 3 and r["n_comment_toxic"] == 1
    assert r["comment_mean_len"] == pytest.approx((17 + 10) / 2)  # textless comment ignored
    assert r["creator_n_items"] == 1  # i2, posted at 2 h
    assert r["creator_prior_removals"] == 1  # i2 removed at 3 h
    assert r["creator_prior_overturned"] == 1  # i2's appeal overturned at 5 h
    assert (r["mod_n_actions"], r["mod_removed"], r["mod_restricted"]) == (1, 1, 0)


def test_moderation_state_replays_restore(snap: pd.DataFrame) -> None:
    r24 = row(snap, "i1", at(24 * H))
    assert (r24["mod_n_actions"], r24["mod_removed"], r24["mod_restricted"]) == (3, 0, 1)
    assert r24["n_viewers"] == 3  # the anonymous view counts as a view, not a viewer
    assert r24["n_view"] == 5
    first = row(snap, "i1", at(4 * H), "moderation")
    # The action being judged is not part of the state before it.
    assert (first["mod_n_actions"], first["mod_removed"]) == (0, 0)
    assert first["creator_prior_removals"] == 1
    restrict = row(snap, "i1", at(10 * H), "moderation")
    assert (restrict["mod_n_actions"], restrict["mod_removed"], restrict["mod_restricted"]) == (
        2,
        0,
        0,
    )
    i2 = row(snap, "i2", at(3 * H), "moderation")
    assert i2["creator_n_items"] == 1 and i2["creator_prior_removals"] == 0


def test_item_without_events_has_zero_counts_and_nan_means(snap: pd.DataFrame) -> None:
    r = row(snap, "i2", at(3 * H))
    assert all(r[c] == 0 for c in EVENT_COLUMNS if c.startswith("n_"))
    assert np.isnan(r["mean_watch_frac"]) and np.isnan(r["comment_mean_len"])
    r3 = row(snap, "i3", at(2 * H))
    assert (r3["n_view"], r3["n_share"], r3["n_viewers"]) == (1, 1, 1)
    assert r3["creator_verified"] == 0 and r3["creator_followers"] == 5


def test_as_of_max_drops_incomplete_windows() -> None:
    snap = build_snapshots(hand_tables(), as_of_max=at(7 * H))
    assert (snap["as_of"] <= at(7 * H)).all()
    keys = sorted(zip(snap["item_id"], snap["as_of"] - T0, snap["anchor"], strict=True))
    assert keys == [
        ("i1", 1 * H, "post"),
        ("i1", 4 * H, "moderation"),
        ("i1", 6 * H, "post"),
        ("i2", 3 * H, "moderation"),
        ("i2", 3 * H, "post"),
        ("i3", 2 * H, "post"),
        ("i3", 7 * H, "post"),  # exactly at as_of_max: complete, kept
    ]


def test_default_as_of_max_is_the_latest_timestamp() -> None:
    tables = hand_tables()
    assert resolve_as_of_max(tables) == at(10 * H).value * 1  # the restrict at 10 h
    snap = build_snapshots(tables)
    assert snap["as_of"].max() == at(10 * H)
    assert len(snap) == len(snap[snap["as_of"] <= at(10 * H)])


def test_horizons_are_a_parameter() -> None:
    snap = build_snapshots(hand_tables(), [0.5, 2], include_moderation=False, as_of_max=END)
    assert len(snap) == 6 and set(snap["horizon_h"]) == {0.5, 2.0}
    assert (snap["anchor"] == "post").all()
    assert row(snap, "i1", at(30 * M))["n_view"] == 2
    assert parse_horizons("1, 6,24") == (1.0, 6.0, 24.0)
    with pytest.raises(ValueError, match="positive"):
        build_snapshots(hand_tables(), [0, 1])
    with pytest.raises(ValueError, match="horizons"):
        parse_horizons("1,six")
    with pytest.raises(ValueError, match="engine"):
        build_snapshots(hand_tables(), engine="spark")
    with pytest.raises(ValueError, match="items"):
        build_snapshots({"events": hand_tables()["events"]})


def test_missing_tables_make_their_columns_absent() -> None:
    tables = hand_tables()
    only_items = build_snapshots({"items": tables["items"]}, as_of_max=END)
    assert len(only_items) == 9
    for group in (EVENT_COLUMNS, CREATOR_COLUMNS, MODERATION_COLUMNS, ACTION_COLUMNS):
        assert not set(group) & set(only_items.columns)
    assert "creator_prior_removals" not in only_items.columns
    assert "creator_prior_overturned" not in only_items.columns
    assert row(only_items, "i1", at(24 * H))["creator_n_items"] == 1  # items alone suffice

    no_events = build_snapshots({k: v for k, v in tables.items() if k != "events"}, as_of_max=END)
    assert not set(EVENT_COLUMNS) & set(no_events.columns)
    assert set(MODERATION_COLUMNS) <= set(no_events.columns)
    assert "creator_prior_overturned" in no_events.columns

    # An events table that is present but empty gives zeros, not absence.
    empty = dict(tables, events=tables["events"].iloc[:0])
    snap = build_snapshots(empty, as_of_max=END)
    assert (snap["n_view"] == 0).all() and snap["mean_watch_frac"].isna().all()


def test_planted_future_changes_no_snapshot_row() -> None:
    """Events, moderation, appeals and items at or after as_of must not change the row."""
    cut = at(6 * H)
    tables = hand_tables()
    before = build_snapshots(tables, as_of_max=END)
    kept = before[before["as_of"] <= cut]

    planted = dict(tables)
    future = []
    for item in ["i1", "i2", "i3"]:
        for dt in (pd.Timedelta(0), 1 * M, 3 * H):  # exactly at the cut, and after it
            for kind in EVENT_KINDS:
                text = "die loser" if kind == "comment" else None
                reason = "hate" if kind == "report" else None
                future.append((item, f"f{len(future)}", cut + dt, kind, 0.1, reason, text))
    planted["events"] = pd.concat(
        [tables["events"], pd.DataFrame(future, columns=tables["events"].columns)],
        ignore_index=True,
    )
    planted["moderation"] = pd.concat(
        [
            tables["moderation"],
            pd.DataFrame(
                {
                    "item_id": ["i1", "i2", "i3", "i3"],
                    "ts": [cut, cut, cut + H, cut],
                    "action": ["restore", "remove", "restrict", "remove"],
                    "source": "auto",
                    "policy": "spam",
                }
            ),
        ],
        ignore_index=True,
    )
    planted["appeals"] = pd.concat(
        [
            tables["appeals"],
            pd.DataFrame(
                {
                    "item_id": ["i1", "i2", "i3"],
                    "filed_at": [cut - H, cut - H, cut],
                    "resolved_at": [cut, cut + H, cut],
                    "outcome": "overturned",
                }
            ),
        ],
        ignore_index=True,
    )
    new_items = tables["items"].iloc[[0, 2]].assign(item_id=["n1", "n2"], created_at=[cut, cut])
    planted["items"] = pd.concat([tables["items"], new_items], ignore_index=True)

    after = build_snapshots(planted, as_of_max=END)
    keys = ["item_id", "as_of", "anchor", "action"]
    same = kept[keys].merge(after, on=keys, how="left")
    assert len(same) == len(kept) == 6
    pd.testing.assert_frame_equal(
        same[list(kept.columns)].reset_index(drop=True), kept.reset_index(drop=True)
    )
    # And the plant is real: rows after the cut do see it.
    assert row(after, "i1", at(24 * H))["n_follow"] == 3
    assert row(after, "i1", at(24 * H))["creator_prior_overturned"] == 3


# ---------------------------------------------------------------------------------------------
# Random tables against a slow, obviously-correct reference


def reference_snapshots(tables: dict[str, pd.DataFrame], horizons: list[float]) -> pd.DataFrame:
    """Row-by-row snapshots straight from the definitions (slow; small data only)."""
    items, events, mod = tables["items"], tables["events"], tables["moderation"]
    creators, appeals = tables["creators"], tables["appeals"]
    creator_of = dict(zip(items["item_id"], items["creator_id"], strict=True))
    rows = []
    for it in items.itertuples():
        anchors = [(it.created_at + h * H, "post", h) for h in horizons]
        for m in mod[
            (mod["item_id"] == it.item_id) & mod["action"].isin(["remove", "restrict"])
        ].itertuples():
            anchors.append((m.ts, "moderation", (m.ts - it.created_at) / H, m))
        for anchor in anchors:
            as_of, kind, h = anchor[:3]
            r: dict[str, object] = {"item_id": it.item_id, "as_of": as_of, "anchor": kind}
            r["horizon_h"] = h
            r["action"] = anchor[3].action if kind == "moderation" else None
            ev = events[(events["item_id"] == it.item_id) & (events["ts"] < as_of)]
            for k in EVENT_KINDS:
                r[f"n_{k}"] = int((ev["kind"] == k).sum())
            for w in WINDOWS_H:
                for k in VELOCITY_KINDS:
                    r[f"n_{k}_{w}h"] = int(((ev["kind"] == k) & (ev["ts"] >= as_of - w * H)).sum())
            views = ev[ev["kind"] == "view"]
            r["n_viewers"] = views["user_id"].dropna().nunique()
            r["mean_watch_frac"] = views["watch_frac"].dropna().mean()
            reps = ev[ev["kind"] == "report"]
            reason = reps["reason"].where(reps["reason"].isin(REPORT_REASONS), "other")
            for x in REPORT_REASONS:
                r[f"n_report_{x}"] = int((reason == x).sum())
            r["n_reporters"] = reps["user_id"].dropna().nunique()
            com = ev[ev["kind"] == "comment"]["text"].dropna()
            r["n_comment_toxic"] = sum(
                any(tok in ABUSE_LEXICON for tok in re.findall(r"\w+", t.lower())) for t in com
            )
            r["comment_mean_len"] = com.str.len().mean() if len(com) else np.nan
            c = creators[creators["creator_id"] == it.creator_id]
            r["creator_age_d"] = (
                (as_of - c["created_at"].iloc[0]) / pd.Timedelta(days=1) if len(c) else np.nan
            )
            r["creator_followers"] = float(c["follower_count"].iloc[0]) if len(c) else np.nan
            r["creator_verified"] = float(c["verified"].iloc[0]) if len(c) else np.nan
            others = items[
                (items["creator_id"] == it.creator_id) & (items["item_id"] != it.item_id)
            ]
            r["creator_n_items"] = int((others["created_at"] < as_of).sum())
            rem = mod[(mod["action"] == "remove") & (mod["ts"] < as_of)]
            r["creator_prior_removals"] = int(rem["item_id"].isin(others["item_id"]).sum())
            own_items = {i for i, cr in creator_of.items() if cr == it.creator_id}
            over = appeals[
                (appeals["outcome"] == "overturned")
                & (appeals["resolved_at"] < as_of)
                & appeals["item_id"].isin(own_items)
            ]
            r["creator_prior_overturned"] = len(over)
            mine = mod[(mod["item_id"] == it.item_id) & (mod["ts"] < as_of)].sort_values(
                "ts", kind="stable"
            )
            removed = restricted = 0
            for action in mine["action"]:
                if action == "remove":
                    removed = 1
                elif action == "restrict":
                    restricted = 1
                else:
                    removed = restricted = 0
            r["mod_n_actions"], r["mod_removed"], r["mod_restricted"] = (
                len(mine),
                removed,
                restricted,
            )
            rows.append(r)
    return pd.DataFrame(rows)


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(
        ["item_id", "as_of", "anchor", "action"], na_position="first"
    ).reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_row_by_row_reference(seed: int) -> None:
    tables = random_tables(seed)
    horizons = [1.0, 6.0, 24.0]
    got = build_snapshots(tables, horizons, as_of_max=END + 48 * H)
    want = reference_snapshots(tables, horizons)
    assert len(got) == len(want) > 90
    got, want = sort_rows(got), sort_rows(want)
    cols = [c for c in want.columns if c not in ("item_id", "as_of", "anchor", "action")]
    assert got["item_id"].tolist() == want["item_id"].tolist()
    assert (got["as_of"] == want["as_of"]).all()
    pd.testing.assert_frame_equal(got[cols], want[cols], check_dtype=False, rtol=1e-9)
    # The random data exercises what it should.
    assert got["n_comment_toxic"].max() > 0 and got["mod_removed"].max() == 1
    assert got["creator_followers"].isna().any() and got["creator_prior_overturned"].max() > 0
