"""From validated contract rows to store operations: the ONE definition of the online update.

Both backends run the same operation list: the in-process store interprets it on dicts,
the Redis store ships it to Lua scripts (`features.online.redis_store`), so an update is
defined once. The in-process store applies a batch whole (or, when its batch id was seen,
not at all); Redis applies it in parts of whole item groups (`Plan.parts`), each atomic
and idempotent on its own. Events are pre-aggregated per item before they become
operations, which is what makes a batch of thousands of events cost a few operations per
item.

Every counter mirrors a column of `features.snapshot_frame` (read it next to this file):

- ``n:<kind>``: events per kind (`EVENT_KINDS`), the `n_<kind>` columns.
- the window blob (``w:<item>``): one packed (ts ns, kind code) record per event of a
  `VELOCITY_KINDS` kind, so 1 h / 6 h windows are counted exactly at any as_of.
- ``ws`` / ``wn``: sum and count of non-null `watch_frac` over views (`mean_watch_frac`).
- viewers ``v:<item>`` / reporters ``r:<item>``: sets of non-null user ids (distinct, exact).
- ``r:<reason>``: reports per reason; reasons outside `REPORT_REASONS` (or null) are "other".
- ``tx``: comments whose text matches `snapshot_frame.TOXIC_PATTERN` case-insensitively;
  ``ls`` / ``ln``: sum of text lengths and count of comments with text (`comment_mean_len`).
- ``t:<item>``: the latest `COMMENT_TEXT_LAST` comment texts (`comment_text`), a sorted set
  of ``<padded ts>:<arrival seq>:<text>`` members ordered by bytes, so by event time and,
  for equal times, by arrival (the events table's order); ``TEXTS`` adds and trims it, so
  a late comment within the bound lands in its place and older ones fall off.
- ``mn``: moderation actions; ``m:<action>``: the latest (ts, arrival) key of each action
  (`mod_removed` / `mod_restricted` compare remove/restrict with restore, as the kernel
  does with table order for equal timestamps); ``rm``: this item's removals.
- ``md:<item>``: the item's moderation log, field ``<padded ts>:<arrival seq>`` -> the
  row's action, source and policy (JSON), from which a moderation-anchored snapshot reads
  the moderation state just before its action; ``pa:<item>``: the log keys of the anchor
  actions (`snapshot_frame.ANCHOR_ACTIONS`) not yet scored, and the ``anchored`` set the
  items that have any (what the re-scorer takes first).
- ``ov``: this item's overturned, resolved appeals; the creator hash holds the sums over the
  creator's items (``ni`` items, ``rm`` removals, ``ov`` overturned), added when an item is
  first upserted so that rows arriving before their item still count.

Operations are tuples ``(name, *args)``; keys are relative (the store adds its prefix).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.contract import EVENT_KINDS, REPORT_REASONS
from features.pit import codes_for, to_ns
from features.schema import COMMENT_TEXT_LAST, ITEM_COLUMNS, VELOCITY_KINDS
from features.snapshot_frame import ANCHOR_ACTIONS, TOXIC_PATTERN

# A window record: event time in ns and the event kind's code in EVENT_KINDS.
WINDOW_DTYPE = np.dtype([("ts", "<i8"), ("kind", "i1")])
VELOCITY_CODES = np.array([EVENT_KINDS.index(k) for k in VELOCITY_KINDS], dtype=np.int8)
OTHER_REASON = REPORT_REASONS.index("other")
# The same test as the batch kernel's `str.contains(TOXIC_PATTERN, case=False)`.
_TOXIC = re.compile(TOXIC_PATTERN, re.IGNORECASE)
# Item fields kept as the item's static record (age_h is computed at read time).
ITEM_STATIC = tuple(c for c in ITEM_COLUMNS if c not in ("age_h", "creator_id"))
TS_WIDTH = 20  # ns timestamps as zero-padded text compare like numbers
SEQ_WIDTH = 12  # arrival sequence numbers, zero-padded (HMAXSEQ, TEXTS)
# A comment text entry is "<ts>:<seq>:<text>"; the text starts at this offset.
TEXT_OFFSET = TS_WIDTH + 1 + SEQ_WIDTH + 1


def pad_ts(ns: int) -> str:
    return f"{int(ns):0{TS_WIDTH}d}"


def item_key(item_id: str) -> str:
    return f"i:{item_id}"


def creator_key(creator_id: str) -> str:
    return f"c:{creator_id}"


def flags_key(item_id: str) -> str:
    """The item's final flag marks (a set): each issue, or ``<issue>@<action key>``, whose
    flag is in the spool."""
    return f"f:{item_id}"


def flag_claims_key(item_id: str) -> str:
    """The item's flag claims (a hash: mark -> wall ms the claim ends): marks a re-scorer
    is queueing now (`OnlineStore.claim_flags`)."""
    return f"fc:{item_id}"


def item_keys(item_id: str) -> tuple[str, ...]:
    """Every key holding one item's state (what expiry deletes)."""
    return (
        f"i:{item_id}",
        f"v:{item_id}",
        f"r:{item_id}",
        f"w:{item_id}",
        f"a:{item_id}",
        flags_key(item_id),
        flag_claims_key(item_id),
        f"t:{item_id}",
        f"md:{item_id}",
        f"pa:{item_id}",
    )


def tomb_key(item_id: str) -> str:
    return f"x:{item_id}"


EXPIRY_KEY = "exp"  # sorted set: item -> event time (s) its state expires
TOUCHED_KEY = "touched"  # set: items changed since the re-scorer last took them
ANCHORED_KEY = "anchored"  # set: items with moderation anchors not yet scored
META_KEY = "meta"  # hash: the store clock (latest applied timestamp, padded ns)
# The re-scorer's leases (sorted sets: item -> wall-clock ms its lease ends): items taken
# from `touched` (or from `hz` at a horizon) or from `anchored` stay here until their pass
# has queued their flags; a lease that ends first (its taker died) puts the item back.
TOUCHED_LEASES_KEY = "touched:leased"
ANCHORED_LEASES_KEY = "anchored:leased"
HORIZON_KEY = "hz"  # sorted set: scored item -> its next horizon (store-clock ms, rounded up)


@dataclass(frozen=True)
class OnlineConfig:
    """How long item state lives, in event time, and how far ahead of the wall clock an
    event time may be (`max_future_s`, the clock-skew bound).

    An item's state is kept until `horizon_h` (the last snapshot horizon) plus `late_s`
    after it was posted; events, moderation and appeals of an item arriving before then are
    applied exactly, in whatever order; later ones are dropped and counted as expired.
    """

    horizon_h: float = 24.0
    late_s: float = 600.0
    batch_ttl_s: float = 86_400.0
    # Rows dated more than this ahead of the wall clock are rejected before planning: one
    # such row would move the store clock (`meta`) forward, and every live snapshot, window
    # and expiry sweep reads that clock (items would expire early, windows look empty).
    max_future_s: float = 300.0

    @property
    def life_ns(self) -> int:
        return round(self.horizon_h * 3_600e9 + self.late_s * 1e9)


@dataclass(frozen=True)
class Part:
    """One atomic script's share of a batch: its operations, and the rows and items of the
    groups it holds (what it adds to the batch's answer when it is applied)."""

    ops: list[tuple[Any, ...]]
    rows: int
    items: frozenset[str]


@dataclass
class Plan:
    """The operations of one batch and what they will do (for the caller's answer).

    Operations come in groups (one item's update, one creator's profile) that must run
    together: a group's GUARD or HSETNX_THEN skips operations after it. `marks` records
    where each group ends, its rows and its item, so that `parts` can cut a batch between
    groups."""

    ops: list[tuple[Any, ...]] = field(default_factory=list)
    rows: int = 0
    max_ts_ns: int | None = None
    items: set[str] = field(default_factory=set)
    marks: list[tuple[int, int, str | None]] = field(default_factory=list)

    def clock(self, ns: int) -> None:
        self.max_ts_ns = ns if self.max_ts_ns is None else max(self.max_ts_ns, ns)

    def mark(self, rows: int, item: str | None) -> None:
        """End a group: the operations appended since the last mark."""
        self.marks.append((len(self.ops), rows, item))

    def parts(self, batch_id: str | None, cfg: OnlineConfig, max_weight: int | None) -> list[Part]:
        """The batch as parts of at most `max_weight` operation values each (a group larger
        than that is a part of its own), each run as its own atomic script; None: one part.

        A script blocks Redis while it runs, so a 1,000-event batch as one script (3 ms on
        an idle machine, 8 ms beside 50k events/s of ingest) made every read arriving
        meanwhile wait for it. Cut into parts, a read waits for one part at most.

        Each part is idempotent on its own: part 0 is guarded by ``b:<batch id>`` (the key
        a whole batch always had) and part k by ``b:<batch id>#k``, so a batch re-sent after
        a crash between parts applies only the parts that had not run. The cut depends only
        on the batch's rows and `max_weight` (a constant of the store), so a re-sent batch
        is cut the same way. The store clock moves in part 0 (no applied row is ever later
        than the clock; a read between parts sees the rest of the batch as not yet arrived,
        as a late event would be) and the expiry sweep runs in the last part."""
        if self.marks and self.marks[-1][0] != len(self.ops):
            raise AssertionError("operations after the last group mark")
        groups: list[list[tuple[int, int, str | None]]] = [[]]
        weight, start = 0, 0
        for end, rows, item in self.marks:
            w = sum(map(len, self.ops[start:end]))
            if max_weight is not None and groups[-1] and weight + w > max_weight:
                groups.append([])
                weight = 0
            groups[-1].append((end, rows, item))
            weight += w
            start = end
        out: list[Part] = []
        start = 0
        for k, group in enumerate(groups):
            ops: list[tuple[Any, ...]] = []
            if batch_id is not None:
                key = f"b:{batch_id}" if k == 0 else f"b:{batch_id}#{k}"
                ops.append(("BATCH", str(round(cfg.batch_ttl_s * 1000)), key))
            if k == 0 and self.max_ts_ns is not None:
                ops.append(("HMAX", META_KEY, "clock", pad_ts(self.max_ts_ns)))
            end = group[-1][0] if group else start
            ops += self.ops[start:end]
            start = end
            if k == len(groups) - 1:
                ops.append(("SWEEP", str(round(cfg.late_s * 1000 + cfg.life_ns / 1e6)), "1000"))
            items = frozenset(i for _, _, i in group if i is not None)
            out.append(Part(ops, sum(r for _, r, _ in group), items))
        return out


def _expiry_s(ns: int) -> str:
    return repr(ns / 1e9)


def _guarded(plan: Plan, item_id: str, ops: list[tuple[Any, ...]], n_rows: int) -> None:
    """Ops of one item, skipped when the item's state has expired (its tombstone exists)."""
    plan.ops.append(("GUARD", tomb_key(item_id), str(len(ops) + 1), str(n_rows)))
    plan.ops += ops
    plan.ops.append(("SADD", TOUCHED_KEY, item_id))
    plan.items.add(item_id)
    plan.mark(n_rows, item_id)


def _none(value: Any) -> Any:
    """A JSON-safe scalar: NaN / NA / NaT -> None, numpy -> Python."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def item_ops(plan: Plan, items: pd.DataFrame, cfg: OnlineConfig) -> None:
    """Upsert items: static fields replace the old ones; the creator is fixed at first sight."""
    created = to_ns(items["created_at"])
    cols = [c for c in ITEM_STATIC if c in items.columns and c != "created_at"]
    values = {c: items[c].astype(object).tolist() for c in cols}
    ids = items["item_id"].tolist()
    creators = items["creator_id"].tolist()
    for i, item_id in enumerate(ids):
        static = {c: _none(values[c][i]) for c in cols}
        static["created_at"] = int(created[i])
        key, ckey = item_key(item_id), creator_key(creators[i])
        first = [
            ("HINCRBY", ckey, "ni", "1"),
            ("ADDFROM", ckey, "rm", key, "rm"),
            ("ADDFROM", ckey, "ov", key, "ov"),
            ("ZADD", EXPIRY_KEY, "", _expiry_s(int(created[i]) + cfg.life_ns), item_id),
        ]
        ops = [
            ("HSET", key, "s", json.dumps(static, separators=(",", ":"))),
            # anchors of moderation rows that came before their item are scored now
            ("SADDIFKEY", ANCHORED_KEY, item_id, f"pa:{item_id}"),
            ("HSETNX_THEN", key, "cid", creators[i], str(len(first))),
            *first,
        ]
        _guarded(plan, item_id, ops, 1)
        plan.clock(int(created[i]))
    plan.rows += len(ids)


def creator_ops(plan: Plan, creators: pd.DataFrame) -> None:
    """Upsert creators: account age, followers and verified flag (the creators columns)."""
    created = to_ns(creators["created_at"])
    followers = creators["follower_count"].astype(object).tolist()
    verified = creators["verified"].astype(object).tolist()
    for i, cid in enumerate(creators["creator_id"].tolist()):
        static = {
            "created_at": int(created[i]),
            "followers": _none(followers[i]),
            "verified": _none(verified[i]),
        }
        # A profile is static and may be sent at any time: it does not move the clock.
        plan.ops.append(("HSET", creator_key(cid), "s", json.dumps(static)))
        plan.mark(1, None)
    plan.rows += len(creators)


def moderation_ops(plan: Plan, moderation: pd.DataFrame, cfg: OnlineConfig) -> None:
    """Moderation actions, in the order given (equal timestamps keep that order).

    Each action is logged with its arrival sequence (``MODLOG``); an anchor action (remove,
    restrict) also becomes a pending moderation anchor of its item for the re-scorer."""
    ts = to_ns(moderation["ts"])
    sources = moderation["source"].astype(object).tolist()
    policies = moderation["policy"].astype(object).tolist()
    for i, (item_id, action) in enumerate(
        zip(moderation["item_id"].tolist(), moderation["action"].tolist(), strict=True)
    ):
        key = item_key(item_id)
        anchor = action in ANCHOR_ACTIONS
        row = json.dumps(
            {"action": action, "source": _none(sources[i]), "policy": _none(policies[i])},
            separators=(",", ":"),
        )
        ops: list[tuple[Any, ...]] = [
            ("HINCRBY", key, "mn", "1"),
            ("HMAXSEQ", key, f"m:{action}", pad_ts(ts[i])),
            ("MODLOG", f"md:{item_id}", pad_ts(ts[i]), row, f"pa:{item_id}" if anchor else ""),
        ]
        if anchor:
            ops.append(("SADD", ANCHORED_KEY, item_id))
        if action == "remove":
            ops += [("HINCRBY", key, "rm", "1"), ("LINKINCR", key, "rm", "1")]
        ops.append(("ZADD", EXPIRY_KEY, "NX", _expiry_s(int(ts[i]) + cfg.life_ns), item_id))
        _guarded(plan, item_id, ops, 1)
        plan.clock(int(ts[i]))
    plan.rows += len(moderation)


def appeal_ops(plan: Plan, appeals: pd.DataFrame, cfg: OnlineConfig) -> None:
    """Appeals upserted by (item_id, filed_at): an appeal counts once it is resolved as
    overturned, and stops counting if a later upsert says otherwise."""
    filed = to_ns(appeals["filed_at"])
    resolved = appeals["resolved_at"].notna().to_numpy(dtype=bool)
    res_ns = np.where(resolved, to_ns(appeals["resolved_at"].fillna(appeals["filed_at"])), 0)
    outcome = appeals["outcome"].tolist()
    for i, item_id in enumerate(appeals["item_id"].tolist()):
        counts = "1" if resolved[i] and outcome[i] == "overturned" else "0"
        ops = [
            ("APPEAL", f"a:{item_id}", pad_ts(filed[i]), counts, item_key(item_id)),
            ("ZADD", EXPIRY_KEY, "NX", _expiry_s(int(filed[i]) + cfg.life_ns), item_id),
        ]
        _guarded(plan, item_id, ops, 1)
        plan.clock(int(max(filed[i], res_ns[i])))
    plan.rows += len(appeals)


def _split(codes: np.ndarray, n: int) -> list[np.ndarray]:
    """Row positions per code 0..n-1 (stable)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1))
    return [order[bounds[j] : bounds[j + 1]] for j in range(n)]


def event_ops(plan: Plan, events: pd.DataFrame, cfg: OnlineConfig) -> None:
    """Events pre-aggregated per item: counters, sums, distinct users and window records."""
    n = len(events)
    plan.rows += n
    if not n:
        return
    item_codes, item_ids = pd.factorize(events["item_id"])
    item_codes = item_codes.astype(np.int64)
    # Arrow-backed strings coded with Arrow's index_in (pandas get_indexer on the column
    # cast to objects took 0.75 ms of a 1,000-event message, this 0.08 ms)
    kind = codes_for(events["kind"], EVENT_KINDS)  # validated: every kind is known
    ts = to_ns(events["ts"])
    n_items, n_kinds = len(item_ids), len(EVENT_KINDS)
    counts = np.bincount(item_codes * n_kinds + kind, minlength=n_items * n_kinds).reshape(
        n_items, n_kinds
    )
    max_ts = np.full(n_items, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(max_ts, item_codes, ts)

    is_view = kind == EVENT_KINDS.index("view")
    watch = events["watch_frac"].to_numpy(dtype=np.float64, na_value=np.nan)
    has_watch = is_view & ~np.isnan(watch)
    w_sum = np.bincount(item_codes[has_watch], watch[has_watch], minlength=n_items)
    w_n = np.bincount(item_codes[has_watch], minlength=n_items)

    is_report = kind == EVENT_KINDS.index("report")
    reason = codes_for(events["reason"], REPORT_REASONS)
    reason = np.where(reason < 0, OTHER_REASON, reason)
    n_reasons = len(REPORT_REASONS)
    reasons = np.bincount(
        item_codes[is_report] * n_reasons + reason[is_report], minlength=n_items * n_reasons
    ).reshape(n_items, n_reasons)

    is_comment = kind == EVENT_KINDS.index("comment")
    c_pos = np.flatnonzero(is_comment)
    texts = events["text"].to_numpy(dtype=object)[c_pos]
    has_text = np.fromiter((isinstance(t, str) for t in texts), dtype=bool, count=c_pos.size)
    lengths = np.fromiter(
        (len(t) if isinstance(t, str) else 0 for t in texts), dtype=np.int64, count=c_pos.size
    )
    toxic = np.fromiter(
        (isinstance(t, str) and _TOXIC.search(t) is not None for t in texts),
        dtype=np.int64,
        count=c_pos.size,
    )
    c_items = item_codes[c_pos]
    # comment texts per item, in row order (equal times keep the order they arrived in)
    t_pos = np.flatnonzero(has_text)
    per_item_texts = _split(c_items[t_pos], n_items)
    c_ts = ts[c_pos]
    l_sum = np.bincount(c_items, lengths, minlength=n_items).astype(np.int64)
    l_n = np.bincount(c_items[has_text], minlength=n_items)
    tox = np.bincount(c_items, toxic, minlength=n_items).astype(np.int64)

    users = events["user_id"].to_numpy(dtype=object)
    viewers = _members(item_codes, users, is_view, n_items)
    reporters = _members(item_codes, users, is_report, n_items)

    velocity = np.isin(kind, VELOCITY_CODES)
    v_pos = np.flatnonzero(velocity)
    records = np.empty(v_pos.size, dtype=WINDOW_DTYPE)
    records["ts"], records["kind"] = ts[v_pos], kind[v_pos]
    per_item_windows = _split(item_codes[v_pos], n_items)

    kind_names = [f"n:{k}" for k in EVENT_KINDS]
    reason_names = [f"r:{r}" for r in REPORT_REASONS]
    comment = EVENT_KINDS.index("comment")
    # Python lists once: the loop below runs per item, and reading numpy arrays element by
    # element (numpy scalars, int() and str() of each) was most of planning a message.
    counts_l, reasons_l = counts.tolist(), reasons.tolist()
    w_n_l, w_sum_l = w_n.tolist(), w_sum.tolist()
    l_sum_l, l_n_l, tox_l, max_ts_l = l_sum.tolist(), l_n.tolist(), tox.tolist(), max_ts.tolist()
    for j, item_id in enumerate(item_ids.tolist()):
        key = item_key(item_id)
        row = counts_l[j]
        ops: list[tuple[Any, ...]] = [
            ("HINCRBY", key, kind_names[k], str(c)) for k, c in enumerate(row) if c
        ]
        if w_n_l[j]:
            ops.append(("HINCRBYFLOAT", key, "ws", repr(w_sum_l[j])))
            ops.append(("HINCRBY", key, "wn", str(w_n_l[j])))
        if row[comment]:
            ops += [
                ("HINCRBY", key, "ls", str(l_sum_l[j])),
                ("HINCRBY", key, "ln", str(l_n_l[j])),
                ("HINCRBY", key, "tx", str(tox_l[j])),
            ]
        t_rows = t_pos[per_item_texts[j]]
        if t_rows.size:
            # only the latest COMMENT_TEXT_LAST of this batch can survive the trim
            t_rows = t_rows[np.argsort(c_ts[t_rows], kind="stable")][-COMMENT_TEXT_LAST:]
            pairs: list[str] = []
            for r in t_rows.tolist():
                pairs += [pad_ts(c_ts[r]), texts[r]]
            ops.append(("TEXTS", f"t:{item_id}", str(COMMENT_TEXT_LAST), *pairs))
        ops += [("HINCRBY", key, reason_names[r], str(c)) for r, c in enumerate(reasons_l[j]) if c]
        if viewers[j]:
            ops.append(("SADD", f"v:{item_id}", *viewers[j]))
        if reporters[j]:
            ops.append(("SADD", f"r:{item_id}", *reporters[j]))
        rows = per_item_windows[j]
        if rows.size:
            ops.append(("APPEND", f"w:{item_id}", records[rows].tobytes()))
        ops.append(("ZADD", EXPIRY_KEY, "NX", _expiry_s(max_ts_l[j] + cfg.life_ns), item_id))
        _guarded(plan, item_id, ops, sum(row))
    plan.clock(int(ts.max()))


def _members(
    item_codes: np.ndarray, users: np.ndarray, mask: np.ndarray, n_items: int
) -> list[list[str]]:
    """Distinct non-null user ids per item among rows in `mask`, in order of first
    appearance. One dict of (item, user) pairs: for the batches ingest sees (a stream
    message or an API batch, hundreds to thousands of rows) it took a tenth of the time of
    a pandas drop_duplicates, whose fixed cost per call was a quarter of planning a
    1,000-event message."""
    out: list[list[str]] = [[] for _ in range(n_items)]
    sel = np.flatnonzero(mask)
    pairs = zip(item_codes[sel].tolist(), users[sel].tolist(), strict=True)
    for item, user in dict.fromkeys(pairs):
        if isinstance(user, str):
            out[item].append(user)
    return out


TABLE_PLANNERS = {
    "creators": lambda plan, df, cfg: creator_ops(plan, df),
    "items": item_ops,
    "moderation": moderation_ops,
    "appeals": appeal_ops,
    "events": event_ops,
}
# Tables the online store takes, in the order a mixed batch is applied (creators before
# the items that name them, items before the rows about them).
ONLINE_TABLES = tuple(TABLE_PLANNERS)


def plan_tables(tables: Iterable[tuple[str, pd.DataFrame]], cfg: OnlineConfig) -> Plan:
    """One plan for validated tables (name, frame), applied in ONLINE_TABLES order."""
    plan = Plan()
    given: dict[str, list[pd.DataFrame]] = {}
    for name, frame in tables:
        given.setdefault(name, []).append(frame)
    for name in ONLINE_TABLES:
        frames = [f for f in given.get(name, ()) if len(f)]
        if frames:
            frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            TABLE_PLANNERS[name](plan, frame, cfg)
    return plan


def window_records(blob: bytes | None) -> np.ndarray:
    """The packed window records of an item (empty when none)."""
    if not blob:
        return np.zeros(0, dtype=WINDOW_DTYPE)
    return np.frombuffer(blob, dtype=WINDOW_DTYPE)
