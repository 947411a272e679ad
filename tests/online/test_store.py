"""Online store behaviour beyond parity: idempotent batches, expiry, clock rules."""

from __future__ import annotations

import pandas as pd
import pytest

from features.online import AsOfTooEarly, OnlineConfig, open_store
from features.online.ops import item_keys
from features.online.store import Lease

T0 = pd.Timestamp("2026-10-01 00:00:00", tz="UTC")


def _items(*ids: str, at: pd.Timestamp = T0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": list(ids),
            "creator_id": ["c1"] * len(ids),
            "created_at": [at] * len(ids),
            "format": ["video"] * len(ids),
            "duration_s": [10.0] * len(ids),
            "region": ["US"] * len(ids),
            "language": ["en"] * len(ids),
            "category": ["news"] * len(ids),
            "caption": ["hello"] * len(ids),
            "hashtags": ["fyp"] * len(ids),
            "audio_id": [None] * len(ids),
        }
    )


def _events(item: str, minutes: list[float], kind: str = "view", user: str = "u") -> pd.DataFrame:
    n = len(minutes)
    return pd.DataFrame(
        {
            "item_id": [item] * n,
            "user_id": [f"{user}{i}" for i in range(n)],
            "ts": [T0 + pd.Timedelta(minutes=m) for m in minutes],
            "kind": [kind] * n,
            "watch_frac": [0.5 if kind == "view" else None] * n,
            "reason": ["spam" if kind == "report" else None] * n,
            "text": ["you idiot" if kind == "comment" else None] * n,
        }
    )


def test_resent_batch_is_counted_once(store_factory) -> None:
    store = store_factory()
    store.apply({"items": _items("a")}, batch_id="items-1")
    first = store.apply({"events": _events("a", [1, 2, 3])}, batch_id="ev-1")
    again = store.apply({"events": _events("a", [1, 2, 3])}, batch_id="ev-1")
    assert (first.rows, first.duplicate) == (3, False)
    assert (again.rows, again.duplicate) == (0, True)
    snap = store.snapshot("a")
    assert snap["n_view"] == 3 and snap["n_viewers"] == 3
    # A different batch id is new data, even with equal rows (the documented rule).
    store.apply({"events": _events("a", [4])}, batch_id="ev-2")
    assert store.snapshot("a")["n_view"] == 4


def test_touched_items_are_counted_until_taken(store_factory) -> None:
    """`touched_count` is the re-scorer's backlog in the store: items changed and not yet
    taken, each once however many events it got; taking them lowers it."""
    store = store_factory()
    store.apply({"items": _items("a", "b", "c")}, batch_id="items-1")
    store.take_touched(10)  # posting touched them; start from an empty backlog
    assert store.touched_count() == 0
    store.apply({"events": pd.concat([_events("a", [1, 2, 3]), _events("b", [4])])})
    assert store.touched_count() == 2
    taken = store.take_touched(1)
    assert len(taken) == 1 and store.touched_count() == 1
    assert set(taken + store.take_touched(5)) == {"a", "b"}
    assert store.touched_count() == 0


def test_windows_and_comment_signals(store_factory) -> None:
    store = store_factory()
    store.apply({"items": _items("a")})
    store.apply({"events": _events("a", [10, 200, 300], kind="comment")})
    store.apply({"events": _events("a", [5, 350], kind="report")})
    as_of = (T0 + pd.Timedelta(minutes=371)).value
    snap = store.snapshot("a", as_of)
    assert snap["n_comment"] == 3 and snap["n_comment_1h"] == 0 and snap["n_comment_6h"] == 2
    assert snap["n_comment_toxic"] == 3 and snap["comment_mean_len"] == len("you idiot")
    assert snap["n_report_1h"] == 1 and snap["n_report_spam"] == 2 and snap["n_reporters"] == 2
    assert snap["mod_removed"] == 0 and snap["creator_n_items"] == 0


def test_snapshot_before_the_clock_is_refused(store_factory) -> None:
    store = store_factory()
    store.apply({"items": _items("a"), "events": _events("a", [30])})
    with pytest.raises(AsOfTooEarly, match="clock"):
        store.snapshot("a", (T0 + pd.Timedelta(minutes=10)).value)


def test_items_expire_after_the_last_horizon(store_factory) -> None:
    config = OnlineConfig(horizon_h=1.0, late_s=60.0)
    store = store_factory(config)
    store.apply({"items": _items("old")})
    store.apply({"events": _events("old", [5, 20])})
    store.apply({"events": _events("old", [21], kind="comment")})
    assert store.snapshot("old")["n_view"] == 2
    lease = Lease.starting(1_000.0, 3_600.0)
    assert store.claim_flags("old", ["spam", "harm"], lease).claimed == ["spam", "harm"]
    store.mark_flagged("old", ["spam"])  # final; "harm" stays claimed
    later = T0 + pd.Timedelta(minutes=70)
    store.apply({"items": _items("new", at=later)})
    assert store.snapshot("old") is None  # swept: past 1 h + 60 s
    assert store.live_items() == 1
    if store.backend == "redis":  # every key of the item went, comment texts included
        assert not store.client.exists(*(store.prefix + k for k in item_keys("old")))
    # its final marks and claims went with it
    assert store.claim_flags("old", ["spam", "harm"], lease).claimed == ["spam", "harm"]
    # a straggler of the expired item is dropped and counted, not a fresh item
    result = store.apply({"events": _events("old", [25])})
    assert result.expired == 1
    assert store.snapshot("old") is None


def test_a_flag_claim_holds_until_it_ends_and_a_final_mark_is_never_claimed(
    store_factory,
) -> None:
    """The two phases of queueing a flag: a claim is exclusive until its lease ends (then
    anyone claims it again), given back only by its own token, and gone once final."""
    store = store_factory()
    a, b = Lease.starting(1_000.0, 60.0), Lease.starting(1_001.0, 60.0)
    after_b = Lease.starting(b.until_ms / 1000, 60.0)
    assert store.claim_flags("x", ["p", "q"], a) == (["p", "q"], [])
    assert store.claim_flags("x", ["p", "q", "r@k"], b) == (["r@k"], ["p", "q"])
    store.release_flags("x", ["p"], b.until_ms)  # not b's claim: kept
    store.release_flags("x", ["q"], a.until_ms)  # a's: given back
    assert store.claim_flags("x", ["p", "q"], b) == (["q"], ["p"])
    assert store.mark_flagged("x", ["p"]) == ["p"]  # final, a's claim dropped
    assert store.mark_flagged("x", ["p"]) == []
    assert store.claim_flags("x", ["p", "q", "r@k"], after_b) == (["q", "r@k"], [])
    store.release_flags("x", ["q"], b.until_ms)  # b's claims ended, and were taken again
    assert store.claim_flags("x", ["q"], after_b) == ([], ["q"])
    if store.backend == "redis":  # both keys carry the item keys' backstop TTL
        assert store.client.pttl(store.prefix + "f:x") > 0
        assert store.client.pttl(store.prefix + "fc:x") > 0


def test_unknown_store_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"memory.*redis"):
        open_store("postgres://x")


def test_replay_steps_table_by_table_give_the_same_state(sim_tables) -> None:
    """`surfacer replay` sends an hour of event time at a time, table by table: the store
    ends in the same state as with every row in strict time order."""
    import numpy as np

    from features.online.replay import chunks, timeline
    from serving.online_cli import STEP_NS

    order = timeline(sim_tables)
    times = order["time"].to_numpy()
    strict, stepped = open_store("memory"), open_store("memory")
    for name, frame in chunks(sim_tables, order, 0, len(order), 10**9):
        strict.apply({name: frame})
    pos = 0
    while pos < len(order):
        end = max(pos + 1, int(np.searchsorted(times, int(times[pos]) + STEP_NS, side="left")))
        for name, frame in chunks(sim_tables, order, pos, end, 500, by_table=True):
            stepped.apply({name: frame})
        pos = end
    ids = sim_tables["items"]["item_id"].tolist()
    a, b = strict.snapshots(ids), stepped.snapshots(ids)
    assert sum(s is not None for s in a) > 0
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            assert x is None and y is None
            continue
        assert {k: v for k, v in x.items() if k != "mean_watch_frac"} == {
            k: v for k, v in y.items() if k != "mean_watch_frac"
        }


def test_comment_text_keeps_the_latest_in_time_then_arrival_order(store_factory) -> None:
    """Late comments land in their place, equal times keep arrival order, only the latest
    COMMENT_TEXT_LAST survive: the same string the batch rule gives for the same rows."""
    import numpy as np

    from features.pit import to_ns
    from features.schema import COMMENT_TEXT_LAST
    from features.snapshot_frame import latest_texts

    store = store_factory()
    store.apply({"items": _items("a", "b")})
    rng = np.random.default_rng(7)
    minutes = rng.integers(1, 40, size=3 * COMMENT_TEXT_LAST).astype(float)  # many ties
    texts = [None if k % 7 == 3 else f"c{k} é\nline" for k in range(minutes.size)]
    sent = []
    for lo in range(0, minutes.size, 37):  # batches whose times go back and forth
        frame = _events("a", list(minutes[lo : lo + 37]), kind="comment")
        frame["text"] = texts[lo : lo + 37]
        store.apply({"events": frame})
        sent.append(frame)
    events = pd.concat(sent, ignore_index=True)  # the events table, in arrival order
    as_of = (T0 + pd.Timedelta(minutes=41)).value
    has = events["text"].notna().to_numpy()
    expected = latest_texts(
        events["text"].to_numpy(dtype=object)[has],
        np.zeros(int(has.sum()), dtype=np.int64),
        to_ns(events["ts"])[has],
        np.zeros(1, dtype=np.int64),
        np.array([as_of], dtype=np.int64),
    )[0]
    snap = store.snapshot("a", as_of)
    assert snap["comment_text"] == expected
    assert len(expected.split("\n")) == 2 * COMMENT_TEXT_LAST  # each text holds one newline
    assert store.snapshot("b", as_of)["comment_text"] == ""


def test_future_bound_is_inclusive_and_per_column() -> None:
    """`future_problems`: a timestamp exactly at now + bound passes, one microsecond later
    is reported with its column and row; missing timestamps are not judged."""
    from features.online.ingest import future_problems

    now = pd.Timestamp("2026-11-01T00:00:00Z")
    frame = pd.DataFrame(
        {
            "filed_at": pd.to_datetime(
                [now + pd.Timedelta(seconds=30), now - pd.Timedelta(days=1)], utc=True
            ),
            "resolved_at": pd.to_datetime(
                [None, now + pd.Timedelta(seconds=30, microseconds=1)], utc=True
            ),
        }
    )
    (problem,) = future_problems("appeals", frame, 30, now.value)
    assert (problem.table, problem.column, problem.rows, problem.count) == (
        "appeals",
        "resolved_at",
        [1],
        1,
    )
    assert future_problems("appeals", frame, 31, now.value) == []


def test_a_read_checked_together_still_rejects_one_message_alone(store_factory) -> None:
    """`ingest_many` checks a read's messages of one table in one frame; a bad row in one
    message still rejects that message alone, with its own row number, and the others
    apply exactly once each (re-sent: duplicates)."""
    from features.online.errors import Batch, BatchRejected
    from features.online.ingest import ingest, ingest_many, json_columns

    store = store_factory()
    ingest(store, [Batch("items", columns=json_columns(_items("a", "b")))])
    good1 = json_columns(_events("a", [1, 2, 3]))
    bad = json_columns(_events("b", [1, 2]))
    bad["kind"][1] = "viewz"
    good2 = json_columns(_events("b", [4, 5, 6, 7], user="w"))
    messages = [
        ([Batch("events", columns=cols)], f"m{k}") for k, cols in enumerate([good1, bad, good2])
    ]
    first, rejected, second = ingest_many(store, messages)
    assert isinstance(rejected, BatchRejected)
    assert "events.kind" in str(rejected) and "(1 row: 1)" in str(rejected)
    assert (first.rows, second.rows) == (3, 4)
    assert store.snapshot("a")["n_view"] == 3 and store.snapshot("b")["n_view"] == 4
    again = ingest_many(store, [messages[0], messages[2]])
    assert [r.duplicate for r in again] == [True, True]
    assert store.snapshot("b")["n_view"] == 4
    # a read without a bad message: checked as one frame and cut back per message
    more = [
        ([Batch("events", columns=json_columns(_events("b", [8], user="x")))], "m3"),
        ([Batch("events", columns=json_columns(_events("a", [9, 10], user="y")))], "m4"),
    ]
    assert [r.rows for r in ingest_many(store, more)] == [1, 2]
    assert store.snapshot("a")["n_view"] == 5 and store.snapshot("b")["n_view"] == 5


def test_many_items_read_in_chunks_equal_one_by_one(store_factory) -> None:
    """`snapshots` of more items than one read takes (READ_CHUNK) answers every item, in
    order, as `snapshot` does one by one; unknown items stay None in their place."""
    from features.online.store import READ_CHUNK

    store = store_factory()
    ids = [f"i{k:04d}" for k in range(READ_CHUNK * 2 + 7)]
    store.apply({"items": _items(*ids)})
    store.apply({"events": pd.concat([_events(i, [1 + k % 5]) for k, i in enumerate(ids)])})
    asked = [*ids[:3], "unknown", *ids[3:]]
    many = store.snapshots(asked)
    assert len(many) == len(asked) and many[3] is None
    for item, snap in zip(asked, many, strict=True):
        assert snap == store.snapshot(item, snap["as_of"].value) if snap else item == "unknown"


def test_apply_many_applies_each_batch_on_its_own_in_order(store_factory) -> None:
    """`apply_many` (the stream consumer's: with Redis, each batch's script is sent while
    the next is planned): every batch atomic and idempotent under its own id, answers in
    the order given, a seen id a no-op alone."""
    store = store_factory()
    store.apply({"items": _items("a", "b")}, batch_id="items")
    first = store.apply({"events": _events("a", [1])}, batch_id="m1")
    results = store.apply_many(
        [
            ([("events", _events("a", [2, 3]))], "m2"),
            ([("events", _events("a", [1]))], "m1"),  # re-delivered
            ([("events", _events("b", [4]))], "m3"),
        ]
    )
    assert first.rows == 1
    assert [(r.rows, r.duplicate, r.items) for r in results] == [
        (2, False, ("a",)),
        (0, True, ()),
        (1, False, ("b",)),
    ]
    assert store.snapshot("a")["n_view"] == 3 and store.snapshot("b")["n_view"] == 1


def test_the_async_snapshot_is_the_json_record_of_the_snapshot(store_factory) -> None:
    """What GET score reads (`snapshot_async`, Python datetimes made without pandas) is
    `json_record` of the snapshot at the same as_of: equal values, equal JSON bytes."""
    import asyncio

    import orjson

    from features.online.snapshot import python_time
    from serving.online import json_record

    store = store_factory()
    # a creation time with nanoseconds, which the datetimes drop
    store.apply({"items": _items("x", at=T0 + pd.Timedelta(nanoseconds=123_456_789))})
    store.apply({"events": _events("x", [1, 2, 90], kind="comment")})

    async def main():
        try:
            return await store.snapshot_async("x")
        finally:
            await store.aclose()

    got = asyncio.run(main())
    want = json_record(store.snapshot("x", store.now_ns()))  # nothing applied meanwhile
    assert got == want
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
    assert orjson.dumps(got) == orjson.dumps(want)
    for ns in (0, 1, 999, 1000, 1_799_999_999_123_456_789, -1, -1001):
        stamp = pd.Timestamp(ns, unit="ns", tz="UTC").to_pydatetime(warn=False)
        assert python_time(ns) == stamp and python_time(ns).utcoffset() == stamp.utcoffset()


def _many_items_batch(n_items: int) -> tuple[list[str], pd.DataFrame]:
    ids = [f"p{k:03d}" for k in range(n_items)]
    events = pd.concat(
        [
            _events(i, [1 + k % 7, 2 + k % 5], kind=("view", "comment", "report")[k % 3])
            for k, i in enumerate(ids)
        ],
        ignore_index=True,
    )
    return ids, events


def test_a_batch_cut_into_parts_keeps_groups_whole_and_under_the_bound() -> None:
    """`Plan.parts`: every part but a single oversized group stays within the bound, no
    group (whose GUARD skips the operations after it) is split, part 0 moves the clock
    and only the last part sweeps; rows and items add up to the whole batch's."""
    from features.online.ops import plan_tables

    cfg = OnlineConfig()
    ids, events = _many_items_batch(60)
    plan = plan_tables([("items", _items(*ids)), ("events", events)], cfg)
    whole = plan.parts("b1", cfg, None)
    parts = plan.parts("b1", cfg, 200)
    assert len(whole) == 1 and len(parts) > 3
    assert [op[0] for op in whole[0].ops[:2]] == ["BATCH", "HMAX"]
    assert whole[0].ops[2:-1] == plan.ops and whole[0].ops[-1][0] == "SWEEP"
    body = [op for p in parts for op in p.ops if op[0] not in ("BATCH", "HMAX", "SWEEP")]
    assert body == plan.ops
    assert [p.ops[0] for p in parts] == [
        ("BATCH", parts[0].ops[0][1], "b:b1" if k == 0 else f"b:b1#{k}") for k in range(len(parts))
    ]
    assert [op[0] for op in parts[0].ops[:2]] == ["BATCH", "HMAX"]
    assert [sum(op[0] == "SWEEP" for op in p.ops) for p in parts] == [0] * (len(parts) - 1) + [1]
    for p in parts:
        ops = p.ops
        for j, op in enumerate(ops):  # every skip stays inside its part
            if op[0] == "GUARD":
                assert j + int(op[2]) < len(ops)
            if op[0] == "HSETNX_THEN":
                assert j + int(op[4]) < len(ops)
        groups = [op for op in ops if op[0] not in ("BATCH", "HMAX", "SWEEP")]
        assert sum(len(op) for op in groups) <= 200 or sum(o[0] == "GUARD" for o in groups) == 1
    assert sum(p.rows for p in parts) == plan.rows == 60 + len(events)
    assert frozenset().union(*(p.items for p in parts)) == frozenset(ids)


def test_parts_give_the_state_of_the_whole_batch_and_a_resend_after_a_crash_counts_once(
    store_factory,
) -> None:
    """The same batch applied whole and in parts gives equal snapshots; when only its first
    parts ran (the writer died between scripts), re-sending it applies the rest alone and
    answers their rows, and a third send is a duplicate."""
    from features.online.ops import plan_tables

    ids, events = _many_items_batch(40)
    whole, cut = store_factory(), store_factory()
    cut.part_weight = 150
    for store in (whole, cut):
        store.apply({"items": _items(*ids)}, batch_id="items")
        store.apply({"events": events}, batch_id="ev")
    as_of = whole.now_ns()
    assert cut.now_ns() == as_of
    assert [cut.snapshot(i, as_of) for i in ids] == [whole.snapshot(i, as_of) for i in ids]

    crashed = store_factory()
    crashed.part_weight = 150
    crashed.apply({"items": _items(*ids)}, batch_id="items")
    parts = plan_tables([("events", events)], crashed.config).parts("ev", crashed.config, 150)
    assert len(parts) >= 3
    for part in parts[:2]:  # the writer dies after two parts
        assert crashed._run(part.ops)[0]
    resent = crashed.apply({"events": events}, batch_id="ev")
    assert not resent.duplicate
    assert resent.rows == sum(p.rows for p in parts[2:]) < len(events)
    assert set(resent.items) == set().union(*(p.items for p in parts[2:]))
    assert crashed.apply({"events": events}, batch_id="ev").duplicate
    assert [crashed.snapshot(i, as_of) for i in ids] == [whole.snapshot(i, as_of) for i in ids]


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(["spam", None, "nudity", "zzz"]),  # Arrow-backed strings
        pd.Series(["spam", None, "zzz"], dtype=object),
        pd.Series([None, None], dtype=object),  # all null: Arrow sees type null
        pd.Series(["spam", "x", None], dtype="category"),
        pd.Series([], dtype=object),
    ],
    ids=["arrow", "object", "all-null", "category", "empty"],
)
def test_codes_equal_the_pandas_indexer_for_every_column_kind(values: pd.Series) -> None:
    """The planner's codes of kinds and reasons (`codes_for`: Arrow's index_in on
    Arrow-backed strings) are pandas' `get_indexer` on the same column: -1 for null and
    unknown values."""
    from features.contract import REPORT_REASONS
    from features.pit import codes_for

    expected = pd.Index(REPORT_REASONS).get_indexer(values.astype(object))
    got = codes_for(values, REPORT_REASONS)
    assert got.dtype == "int64" and got.tolist() == expected.tolist()


@pytest.mark.redis
def test_parts_sent_in_one_pipeline_load_the_script_when_redis_lost_it() -> None:
    """A message's parts go to Redis as EVALSHA in one pipeline; when Redis answers NOSCRIPT
    (restarted, scripts flushed) the script is loaded and those parts run again, once."""
    from tests.online.conftest import make_store

    store = make_store("redis")
    try:
        store.part_weight = 120
        ids, events = _many_items_batch(30)
        store.apply({"items": _items(*ids)}, batch_id="items")
        store._apply.sha = "0" * 40  # what Redis does not know
        (result,) = store.apply_many([([("events", events)], "ev")])
        assert (result.rows, result.duplicate) == (len(events), False)
        assert store._apply.sha != "0" * 40
        views = int((events["kind"] == "view").sum())
        assert sum(store.snapshot(i)["n_view"] for i in ids) == views
        assert store.apply_many([([("events", events)], "ev")])[0].duplicate
    finally:
        store.clear()
        store.close()
