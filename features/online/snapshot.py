"""Online state -> one snapshot row, with the columns and meaning of `build_snapshots`.

Both backends return the same raw state (`RawItem`); this module alone turns it into a
snapshot at an as_of, so reading is defined once. A snapshot is exact when every applied
row has a timestamp before as_of, which the stores guarantee by answering only at an as_of
after their clock (the latest applied timestamp).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from features.contract import EVENT_KINDS, REPORT_REASONS
from features.online.ops import TEXT_OFFSET, TS_WIDTH, pad_ts, window_records
from features.schema import (
    ACTION_COLUMNS,
    COMMENT_TEXT_LAST,
    COMMENT_TEXT_SEPARATOR,
    SNAPSHOT_COLUMNS,
    VELOCITY_KINDS,
    WINDOWS_H,
)
from features.snapshot_frame import NS_PER_D, NS_PER_H

_VELOCITY = [(k, EVENT_KINDS.index(k)) for k in VELOCITY_KINDS]
# (snapshot column, hash field) of the counters, and (window hours, [(column, kind code)]):
# the names once here rather than formatted on every read
_EVENT_COUNTS = [(f"n_{kind}", f"n:{kind}") for kind in EVENT_KINDS]
_REPORT_COUNTS = [(f"n_report_{reason}", f"r:{reason}") for reason in REPORT_REASONS]
_WINDOW_COUNTS = [(w, [(f"n_{kind}_{w}h", code) for kind, code in _VELOCITY]) for w in WINDOWS_H]


@dataclass(frozen=True)
class RawItem:
    """One item's stored state as a backend returns it (hash fields are text)."""

    item_id: str
    fields: dict[str, str]
    n_viewers: int
    n_reporters: int
    windows: bytes
    creator: dict[str, str] | None
    # the item's latest comment texts, "<ts>:<seq>:<text>" in (time, arrival) order
    comments: tuple[str, ...] = ()
    # read for the re-scorer's anchor pass only: the moderation log ("<ts>:<seq>", row JSON)
    # in (time, arrival) order, and the log keys of the pending anchors
    moderation: tuple[tuple[str, str], ...] = ()
    pending: tuple[str, ...] = ()


def _int(fields: dict[str, str], name: str) -> int:
    value = fields.get(name)
    return int(value) if value is not None else 0


def comment_text(entries: tuple[str, ...], as_of_ns: int) -> str:
    """`comment_text` at as_of from the stored entries (sorted by time, then arrival): the
    latest COMMENT_TEXT_LAST strictly before as_of, oldest first, joined ("" when none).
    The stores only answer after their clock, so every entry is before as_of there; the
    filter keeps the rule exact for any reader."""
    cut = pad_ts(as_of_ns)
    before = [e for e in entries if e[:TS_WIDTH] < cut]
    return COMMENT_TEXT_SEPARATOR.join(e[TEXT_OFFSET:] for e in before[-COMMENT_TEXT_LAST:])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def python_time(ns: int) -> datetime:
    """`pd.Timestamp(ns, tz="UTC").to_pydatetime(warn=False)` without pandas: the instant
    floored to whole microseconds (a Timestamp's nanosecond field is 0-999, dropped)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _pandas_time(ns: int) -> pd.Timestamp:
    return pd.Timestamp(ns, unit="ns", tz="UTC")


def assemble(raw: RawItem, as_of_ns: int, *, python_times: bool = False) -> dict[str, Any] | None:
    """The snapshot row of an item at as_of (anchor "post"), or None if the item is unknown
    (no `items` row upserted yet): the batch builds rows only for items in `items`.

    `as_of` and `created_at` are pandas Timestamps, or with `python_times` the datetimes
    `serving.online.json_record` would make of them (what a JSON answer carries)."""
    f = raw.fields
    if "s" not in f or "cid" not in f:
        return None
    stamp = python_time if python_times else _pandas_time
    static = json.loads(f["s"])
    created = int(static.pop("created_at"))
    # float(int) / int, as numpy divides int64 arrays (Python's int / int rounds differently
    # once the difference passes 2**53 ns, about 104 days).
    age_h = float(as_of_ns - created) / NS_PER_H
    row: dict[str, Any] = {
        "item_id": raw.item_id,
        "as_of": stamp(as_of_ns),
        "anchor": "post",
        "horizon_h": age_h,
        "creator_id": f["cid"],
        "created_at": stamp(created),
        **static,
        "age_h": age_h,
    }
    get = f.get
    for column, field in _EVENT_COUNTS:
        row[column] = int(get(field, 0))  # = _int(f, field): hash values are never None
    rec = window_records(raw.windows)
    ts = rec["ts"]
    before = ts < as_of_ns
    for w, columns in _WINDOW_COUNTS:
        inside = before & (ts >= as_of_ns - w * NS_PER_H)
        kinds = np.bincount(rec["kind"][inside].astype(np.int64), minlength=len(EVENT_KINDS))
        for column, code in columns:
            row[column] = int(kinds[code])
    for column, field in _REPORT_COUNTS:
        row[column] = int(get(field, 0))
    row["n_viewers"] = raw.n_viewers
    row["n_reporters"] = raw.n_reporters
    wn = _int(f, "wn")
    row["mean_watch_frac"] = float(f["ws"]) / wn if wn else math.nan
    row["n_comment_toxic"] = _int(f, "tx")
    ln = _int(f, "ln")
    row["comment_mean_len"] = _int(f, "ls") / ln if ln else math.nan
    row["comment_text"] = comment_text(raw.comments, as_of_ns)

    c = raw.creator or {}
    cs = json.loads(c["s"]) if "s" in c else None
    if cs is not None:
        followers, verified = cs["followers"], cs["verified"]
        row["creator_age_d"] = float(as_of_ns - int(cs["created_at"])) / NS_PER_D
        row["creator_followers"] = math.nan if followers is None else float(followers)
        row["creator_verified"] = math.nan if verified is None else float(verified)
    else:
        row["creator_age_d"] = row["creator_followers"] = row["creator_verified"] = math.nan
    # This item is in its creator's count (it is known and was posted before as_of).
    row["creator_n_items"] = _int(c, "ni") - 1
    row["creator_prior_removals"] = _int(c, "rm") - _int(f, "rm")
    row["creator_prior_overturned"] = _int(c, "ov")

    restore = f.get("m:restore", "")
    row["mod_n_actions"] = _int(f, "mn")
    row["mod_removed"] = int(f.get("m:remove", "") > restore)
    row["mod_restricted"] = int(f.get("m:restrict", "") > restore)
    for name in ACTION_COLUMNS:
        row[name] = None
    return {c: row[c] for c in SNAPSHOT_COLUMNS if c in row}


def assemble_anchor(raw: RawItem, key: str, *, python_times: bool = False) -> dict[str, Any] | None:
    """The "moderation" snapshot row of the item's moderation action logged under `key`
    ("<padded ts>:<seq>"), as `build_snapshots` makes it for that row: as_of = the action's
    time, horizon_h = the item's age then, the action columns from the row, and the
    moderation state just before it. None if the item is unknown (no `items` row yet).

    Exact, whatever was applied after the action, for every column that carries its time
    in the store: the 1 h / 6 h windows and the counts of the velocity kinds (from the
    window records), `comment_text`, the `mod_*` state (from the moderation log, ordered by
    time then arrival as the kernel orders by time then table order), this item's own
    removals (taken out of `creator_prior_removals` whatever their time), and the
    as_of-based ages. The cumulative columns without timestamps (`n_download`,
    `n_follow`, `n_report_<reason>`, `n_viewers`, `n_reporters`, `mean_watch_frac`,
    `n_comment_toxic`, `comment_mean_len`) and the creator history (`creator_n_items`,
    `creator_prior_removals` of other items, `creator_prior_overturned`) count every row
    applied when the state is read: they equal the batch values when no row of the item
    (for the creator columns: of the creator's items) with a time at or after the action
    was applied before the re-scorer read the anchor. docs/architecture.md ("Moderation
    anchors") states the bound.
    """
    log = dict(raw.moderation)
    if key not in log:
        raise ValueError(f"item {raw.item_id!r} has no moderation action {key!r} in its log")
    as_of_ns = int(key[:TS_WIDTH])
    row = assemble(raw, as_of_ns, python_times=python_times)
    if row is None:
        return None
    row["anchor"] = "moderation"
    # what the kernel computes for a moderation anchor: (ts - created) / NS_PER_H
    row["horizon_h"] = row["age_h"]
    rec = window_records(raw.windows)
    kinds = rec["kind"][rec["ts"] < as_of_ns].astype(np.int64)
    counts = np.bincount(kinds, minlength=len(EVENT_KINDS))
    for kind, code in _VELOCITY:
        row[f"n_{kind}"] = int(counts[code])
    cut = pad_ts(as_of_ns)
    latest = {"remove": "", "restrict": "", "restore": ""}
    n_before = 0
    for log_key, payload in raw.moderation:  # in (time, arrival) order
        if log_key[:TS_WIDTH] >= cut:
            break
        n_before += 1
        latest[json.loads(payload)["action"]] = log_key
    row["mod_n_actions"] = n_before
    row["mod_removed"] = int(latest["remove"] > latest["restore"])
    row["mod_restricted"] = int(latest["restrict"] > latest["restore"])
    action = json.loads(log[key])
    row["action"] = action["action"]
    row["action_source"] = action["source"]
    row["action_policy"] = action["policy"]
    return {c: row[c] for c in SNAPSHOT_COLUMNS if c in row}
