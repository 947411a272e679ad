"""The point-in-time snapshot kernel: `snapshot_frame` turns raw tables into snapshot rows.

"post" rows are taken at fixed horizons after posting, "moderation" rows at each remove or
restrict action (the moment `wrongful_enforcement` is judged). Every counter uses events
strictly before as_of, so labels that come later cannot leak in. Counting runs on int codes
with numpy (`features.pit`). Both engines call this one function: `features.snapshot` on the
whole data, `features.snapshot_dask` on each item-partition of the events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.contract import EVENT_KINDS, MODERATION_ACTIONS, REPORT_REASONS
from features.pit import GroupedTimes, codes_for, to_ns
from features.schema import (
    ABUSE_LEXICON,
    COMMENT_TEXT_LAST,
    COMMENT_TEXT_SEPARATOR,
    ITEM_COLUMNS,
    SNAPSHOT_COLUMNS,
    VELOCITY_KINDS,
    WINDOWS_H,
)

NS_PER_H = 3_600 * 1_000_000_000
NS_PER_D = 24 * NS_PER_H
ANCHORS = ("post", "moderation")
# Actions that open a "moderation" anchored row: the decisions an appeal can overturn.
ANCHOR_ACTIONS = ("remove", "restrict")
STAGES = ("anchors", "events", "creators", "moderation", "assemble")
# Word-boundary match of any lexicon word, case-insensitive: "a token of the text is abusive".
TOXIC_PATTERN = r"\b(?:" + "|".join(sorted(ABUSE_LEXICON)) + r")\b"

StageCallback = Callable[[str], None]


def snapshot_frame(
    tables: Mapping[str, pd.DataFrame],
    horizons_h: Sequence[float],
    *,
    include_moderation: bool,
    as_of_max_ns: int,
    item_subset: np.ndarray | None = None,
    on_stage: StageCallback | None = None,
) -> pd.DataFrame:
    """Snapshot rows of the items in `item_subset` (positions in `items`; default all).

    `tables["events"]` may hold just those items' events (a Dask partition): every other
    table is used whole, because creator history spans items of other partitions.
    """
    stage = on_stage or (lambda _name: None)
    items = tables["items"]
    item_ids = pd.Index(items["item_id"])
    if not item_ids.is_unique:
        dup = item_ids[item_ids.duplicated()].unique()[:5].tolist()
        raise ValueError(f"items.item_id must be unique, duplicated: {dup}")
    n_items = len(items)
    created_ns = to_ns(items["created_at"])
    in_subset: np.ndarray | None = None
    if item_subset is not None:
        in_subset = np.zeros(n_items, dtype=bool)
        in_subset[np.asarray(item_subset, dtype=np.int64)] = True
    moderation = tables.get("moderation")

    a = _anchors(
        items_n=n_items,
        created_ns=created_ns,
        horizons_h=horizons_h,
        moderation=moderation if include_moderation else None,
        item_ids=item_ids,
        in_subset=in_subset,
        as_of_max_ns=as_of_max_ns,
    )
    stage("anchors")
    cols: dict[str, Any] = {}
    events = tables.get("events")
    if events is not None:
        cols.update(_event_columns(events, item_ids, in_subset, a["item"], a["as_of"]))
    stage("events")

    # Creator codes are local to `items` (creators table or not): history is per creator.
    item_creator = pd.factorize(items["creator_id"], use_na_sentinel=False)[0].astype(np.int64)
    n_creators = int(item_creator.max()) + 1 if n_items else 0
    creators = tables.get("creators")
    if creators is not None:
        cols.update(_creator_columns(items, creators, a["item"], a["as_of"]))
    cols.update(
        _creator_history(
            tables, item_ids, item_creator, n_creators, created_ns, a["item"], a["as_of"]
        )
    )
    stage("creators")
    if moderation is not None:
        cols.update(_moderation_columns(moderation, item_ids, a))
    stage("moderation")

    out = _assemble(items, a, cols, moderation if moderation is not None else None)
    stage("assemble")
    return out


def _anchors(
    *,
    items_n: int,
    created_ns: np.ndarray,
    horizons_h: Sequence[float],
    moderation: pd.DataFrame | None,
    item_ids: pd.Index,
    in_subset: np.ndarray | None,
    as_of_max_ns: int,
) -> dict[str, np.ndarray]:
    """(item, as_of) rows: posts at each horizon, moderation rows at anchor actions."""
    subset = np.arange(items_n) if in_subset is None else np.flatnonzero(in_subset)
    hs = np.asarray(horizons_h, dtype=np.float64)
    item = np.repeat(subset, hs.size)
    horizon = np.tile(hs, subset.size)
    as_of = created_ns[item] + np.round(horizon * NS_PER_H).astype(np.int64)
    kind = np.zeros(item.size, dtype=np.int8)
    mod_row = np.full(item.size, -1, dtype=np.int64)
    if moderation is not None and len(moderation):
        m_item = codes_for(moderation["item_id"], item_ids)
        mask = moderation["action"].isin(ANCHOR_ACTIONS).to_numpy(dtype=bool) & (m_item >= 0)
        if in_subset is not None:
            mask &= in_subset[np.maximum(m_item, 0)]
        rows = np.flatnonzero(mask)
        m_item = m_item[rows]
        m_ts = to_ns(moderation["ts"])[rows]
        item = np.concatenate([item, m_item])
        as_of = np.concatenate([as_of, m_ts])
        horizon = np.concatenate([horizon, (m_ts - created_ns[m_item]) / NS_PER_H])
        kind = np.concatenate([kind, np.ones(rows.size, dtype=np.int8)])
        mod_row = np.concatenate([mod_row, rows])
    keep = as_of <= as_of_max_ns
    # Items in table order, then time: the same order whatever the engine or partitioning.
    order = np.lexsort((mod_row[keep], kind[keep], as_of[keep], item[keep]))
    return {
        "item": item[keep][order],
        "as_of": as_of[keep][order],
        "horizon": horizon[keep][order],
        "kind": kind[keep][order],
        "mod_row": mod_row[keep][order],
    }


def _subset_rows(mask: np.ndarray) -> np.ndarray | None:
    """Row positions where mask holds, or None when it holds everywhere (skip the copy)."""
    return None if mask.all() else np.flatnonzero(mask)


def _take(arr: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return arr if rows is None else arr[rows]


def _event_columns(
    events: pd.DataFrame,
    item_ids: pd.Index,
    in_subset: np.ndarray | None,
    a_item: np.ndarray,
    a_asof: np.ndarray,
) -> dict[str, np.ndarray]:
    """Counters, velocities, distinct users, watch, reasons and comment signals before as_of."""
    n_items = len(item_ids)
    e_item = codes_for(events["item_id"], item_ids)
    e_kind = codes_for(events["kind"], EVENT_KINDS).astype(np.int8)
    e_ts = to_ns(events["ts"])
    valid = (e_item >= 0) & (e_kind >= 0)
    if in_subset is not None and n_items:  # (no items: no event is valid already)
        valid &= in_subset[np.maximum(e_item, 0)]
    rows = _subset_rows(valid)
    del valid
    e_item, e_kind, e_ts = _take(e_item, rows), _take(e_kind, rows), _take(e_ts, rows)
    out: dict[str, np.ndarray] = {}

    n_kinds = len(EVENT_KINDS)
    group = e_item * n_kinds
    group += e_kind
    by_kind = GroupedTimes(group, e_ts, n_items * n_kinds)
    del group
    for k, kind in enumerate(EVENT_KINDS):
        g = a_item * n_kinds + k
        now = by_kind.position(g, a_asof)
        out[f"n_{kind}"] = now - by_kind.starts[g]
        if kind in VELOCITY_KINDS:
            for w in WINDOWS_H:
                out[f"n_{kind}_{w}h"] = now - by_kind.position(g, a_asof - w * NS_PER_H)
    del by_kind

    def positions(kind: str) -> np.ndarray:
        return np.flatnonzero(e_kind == EVENT_KINDS.index(kind))

    def column(name: str, pos: np.ndarray) -> pd.Series:
        # Map filtered positions back to rows of `events` before reading a column.
        src = pos if rows is None else rows[pos]
        return events[name].iloc[src]

    v, r = positions("view"), positions("report")
    users = _user_codes(events["user_id"], rows, np.concatenate([v, r]))

    # Views: mean watch fraction over views that have one; distinct viewers.
    watch = column("watch_frac", v).to_numpy(dtype=np.float64, na_value=np.nan)
    views = GroupedTimes(
        e_item[v], e_ts[v], n_items, values={"sum": watch, "n": (~np.isnan(watch)).astype(float)}
    )
    del watch
    w_sum = views.sum_before("sum", a_item, a_asof)
    w_n = views.sum_before("n", a_item, a_asof)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean_watch_frac"] = np.where(w_n > 0, w_sum / w_n, np.nan)
    viewers = views.first_times(users[: v.size], e_ts[v])
    del views
    out["n_viewers"] = viewers.count_before(a_item, a_asof)
    del viewers

    # Reports: per reason (unknown reasons count as "other") and distinct reporters.
    reason = codes_for(column("reason", r), REPORT_REASONS)
    reason[reason < 0] = REPORT_REASONS.index("other")
    n_reasons = len(REPORT_REASONS)
    by_reason = GroupedTimes(e_item[r] * n_reasons + reason, e_ts[r], n_items * n_reasons)
    for j, name in enumerate(REPORT_REASONS):
        out[f"n_report_{name}"] = by_reason.count_before(a_item * n_reasons + j, a_asof)
    reports = GroupedTimes(e_item[r], e_ts[r], n_items, keep_order=True)
    out["n_reporters"] = reports.first_times(users[v.size :], e_ts[r]).count_before(a_item, a_asof)

    # Comments: abusive ones and mean text length (over comments that have text).
    c = positions("comment")
    text = column("text", c)
    length = text.str.len().to_numpy(dtype=np.float64, na_value=np.nan)
    toxic = text.str.contains(TOXIC_PATTERN, case=False, regex=True, na=False)
    comments = GroupedTimes(
        e_item[c],
        e_ts[c],
        n_items,
        values={
            "len": length,
            "has_len": (~np.isnan(length)).astype(float),
            "toxic": toxic.to_numpy(dtype=np.float64),
        },
    )
    out["n_comment_toxic"] = comments.sum_before("toxic", a_item, a_asof).round().astype(np.int64)
    l_sum = comments.sum_before("len", a_item, a_asof)
    l_n = comments.sum_before("has_len", a_item, a_asof)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["comment_mean_len"] = np.where(l_n > 0, l_sum / l_n, np.nan)
    has_text = text.notna().to_numpy(dtype=bool)
    out["comment_text"] = latest_texts(
        text.to_numpy(dtype=object)[has_text],
        e_item[c][has_text],
        e_ts[c][has_text],
        a_item,
        a_asof,
    )
    return out


def latest_texts(
    texts: np.ndarray,
    t_item: np.ndarray,
    t_ts: np.ndarray,
    a_item: np.ndarray,
    a_asof: np.ndarray,
    last: int = COMMENT_TEXT_LAST,
) -> np.ndarray:
    """Per anchor row, the texts of its item strictly before as_of: the latest `last`, oldest
    first, joined by COMMENT_TEXT_SEPARATOR ("" when there are none).

    `texts` (no nulls), `t_item`, `t_ts` describe the comments in events-table order; ties
    in time keep that order (a stable sort), so the result is the same whatever the engine.
    """
    n = len(texts)
    out = np.full(a_item.size, "", dtype=object)
    if n == 0 or a_item.size == 0:
        return out
    order = np.lexsort((np.arange(n), t_ts, t_item))
    s_item, s_ts, s_text = t_item[order], t_ts[order], texts[order]
    # (item, time rank) as one sortable key: a comment is before as_of iff its time ranks
    # below the number of distinct comment times earlier than as_of
    times = np.unique(s_ts)
    stride = np.int64(times.size + 1)
    key = s_item * stride + np.searchsorted(times, s_ts, side="left")
    start = np.searchsorted(key, a_item * stride, side="left")
    stop = np.searchsorted(key, a_item * stride + np.searchsorted(times, a_asof, side="left"))
    first = np.maximum(start, stop - int(last))
    sep = COMMENT_TEXT_SEPARATOR
    for k in np.flatnonzero(stop > first).tolist():
        out[k] = sep.join(s_text[first[k] : stop[k]].tolist())
    return out


def _user_codes(user_id: pd.Series, rows: np.ndarray | None, pos: np.ndarray) -> np.ndarray:
    """Int codes (-1 for null) of user_id at filtered positions `pos`; equal users, equal codes.

    When most rows are needed, factorizing the whole column beats copying the strings out.
    """
    src = pos if rows is None else rows[pos]
    if src.size * 2 > len(user_id):
        return pd.factorize(user_id, use_na_sentinel=True)[0][src].astype(np.int64, copy=False)
    return pd.factorize(user_id.iloc[src], use_na_sentinel=True)[0].astype(np.int64, copy=False)


def _creator_columns(
    items: pd.DataFrame, creators: pd.DataFrame, a_item: np.ndarray, a_asof: np.ndarray
) -> dict[str, np.ndarray]:
    """Account age, followers and verified flag of the item's creator (NaN if unknown)."""
    code = codes_for(items["creator_id"], creators["creator_id"])[a_item]
    known = code >= 0
    safe = np.maximum(code, 0)
    c_created = to_ns(creators["created_at"]) if len(creators) else np.zeros(1, np.int64)
    followers = creators["follower_count"].to_numpy(dtype=np.float64, na_value=np.nan)
    verified = creators["verified"].to_numpy(dtype=np.float64, na_value=np.nan)
    if not len(creators):
        followers = verified = np.full(1, np.nan)
    return {
        "creator_age_d": np.where(known, (a_asof - c_created[safe]) / NS_PER_D, np.nan),
        "creator_followers": np.where(known, followers[safe], np.nan),
        "creator_verified": np.where(known, verified[safe], np.nan),
    }


def _creator_history(
    tables: Mapping[str, pd.DataFrame],
    item_ids: pd.Index,
    item_creator: np.ndarray,
    n_creators: int,
    created_ns: np.ndarray,
    a_item: np.ndarray,
    a_asof: np.ndarray,
) -> dict[str, np.ndarray]:
    """The creator's items, removals of other items and overturned appeals before as_of."""
    a_creator = item_creator[a_item]
    posted = GroupedTimes(item_creator, created_ns, n_creators)
    out = {
        "creator_n_items": posted.count_before(a_creator, a_asof)
        - (created_ns[a_item] < a_asof).astype(np.int64)
    }
    moderation = tables.get("moderation")
    if moderation is not None:
        m_item = codes_for(moderation["item_id"], item_ids)
        rows = np.flatnonzero(
            (moderation["action"] == "remove").to_numpy(dtype=bool) & (m_item >= 0)
        )
        m_item, m_ts = m_item[rows], to_ns(moderation["ts"])[rows]
        by_creator = GroupedTimes(item_creator[m_item], m_ts, n_creators)
        by_item = GroupedTimes(m_item, m_ts, len(item_ids))
        out["creator_prior_removals"] = by_creator.count_before(
            a_creator, a_asof
        ) - by_item.count_before(a_item, a_asof)
    appeals = tables.get("appeals")
    if appeals is not None:
        ap_item = codes_for(appeals["item_id"], item_ids)
        resolved = appeals["resolved_at"].notna().to_numpy(dtype=bool)
        overturned = (appeals["outcome"] == "overturned").to_numpy(dtype=bool)
        rows = np.flatnonzero(resolved & overturned & (ap_item >= 0))
        r_ts = to_ns(appeals["resolved_at"].iloc[rows])
        by_creator = GroupedTimes(item_creator[ap_item[rows]], r_ts, n_creators)
        out["creator_prior_overturned"] = by_creator.count_before(a_creator, a_asof)
    return out


def _moderation_columns(
    moderation: pd.DataFrame, item_ids: pd.Index, a: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Actions so far and whether the item is removed / restricted just before as_of."""
    m_item = codes_for(moderation["item_id"], item_ids)
    m_act = codes_for(moderation["action"], MODERATION_ACTIONS)
    rows = np.flatnonzero((m_item >= 0) & (m_act >= 0))
    m_ts = to_ns(moderation["ts"])[rows]
    m_item, m_act = m_item[rows], m_act[rows]
    # Same (item, ts) order as GroupedTimes' keys; ties keep table order (a replay order).
    order = np.lexsort((rows, m_ts, m_item))
    m_item, m_ts, m_act = m_item[order], m_ts[order], m_act[order]
    actions = GroupedTimes(m_item, m_ts, len(item_ids))
    a_item, a_asof = a["item"], a["as_of"]
    pos = actions.position(a_item, a_asof)
    start = actions.starts[a_item]
    idx = np.arange(m_act.size)

    def last(action: str) -> np.ndarray:
        # Index of the latest such action at or before each position (-1 if none yet).
        marks = np.where(m_act == MODERATION_ACTIONS.index(action), idx, -1)
        latest = np.maximum.accumulate(marks) if marks.size else marks
        has = pos > start
        return np.where(has, latest[np.maximum(pos - 1, 0)] if marks.size else -1, -1)

    restore = last("restore")
    removed, restricted = last("remove"), last("restrict")
    # A restore undoes both states; only actions of this item (index >= start) count.
    return {
        "mod_n_actions": pos - start,
        "mod_removed": ((removed >= start) & (removed > restore)).astype(np.int64),
        "mod_restricted": ((restricted >= start) & (restricted > restore)).astype(np.int64),
    }


def _assemble(
    items: pd.DataFrame,
    a: Mapping[str, np.ndarray],
    cols: Mapping[str, Any],
    moderation: pd.DataFrame | None,
) -> pd.DataFrame:
    """One frame in SNAPSHOT_COLUMNS order, with stable dtypes whatever the partition."""
    a_item = a["item"]
    n = a_item.size
    data: dict[str, Any] = {
        "item_id": items["item_id"].iloc[a_item].reset_index(drop=True),
        "as_of": pd.Series(pd.to_datetime(a["as_of"], unit="ns", utc=True)),
        "anchor": pd.Series(np.asarray(ANCHORS, dtype=object)[a["kind"]], dtype="str"),
        "horizon_h": a["horizon"].astype(np.float64),
    }
    picked = items.iloc[a_item].reset_index(drop=True)
    for col in ITEM_COLUMNS:
        if col in picked.columns:
            data[col] = picked[col]
    data["age_h"] = (a["as_of"] - to_ns(items["created_at"])[a_item]) / NS_PER_H
    for name, values in cols.items():
        arr = np.asarray(values)
        if arr.dtype.kind == "O":  # text (comment_text)
            data[name] = pd.Series(arr, dtype="str")
        else:
            data[name] = arr.astype(np.int64) if arr.dtype.kind in "iub" else arr.astype(np.float64)
    if moderation is not None:
        is_mod = a["kind"] == ANCHORS.index("moderation")
        rows = a["mod_row"][is_mod]
        for out_name, src in (
            ("action", "action"),
            ("action_source", "source"),
            ("action_policy", "policy"),
        ):
            values = np.full(n, None, dtype=object)
            values[is_mod] = moderation[src].to_numpy(dtype=object)[rows]
            data[out_name] = pd.Series(values, dtype="str")
    frame = pd.DataFrame(data, index=pd.RangeIndex(n))
    return frame[[c for c in SNAPSHOT_COLUMNS if c in frame.columns]]
