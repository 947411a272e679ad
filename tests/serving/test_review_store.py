"""ReviewStore on real SQLite: migrations, idempotent ingest, leases, labels, history, export."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from serving.review.export import export_labels
from serving.review.quality import wilson
from serving.review.store import LeaseError, NotClaimable, ReviewStore
from tests.support.review import flagged_item


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    s = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}", random_share=0.0)
    s.migrate()
    yield s
    s.close()


def test_migrate_creates_schema_on_empty_db_and_is_idempotent(tmp_path: Path) -> None:
    s = ReviewStore(f"sqlite:///{tmp_path / 'sub' / 'review.db'}")
    assert s.revision() is None
    head = ReviewStore.head()
    assert s.migrate() == head
    assert s.migrate() == head
    tables = set(inspect(s.engine).get_table_names())
    assert {"review_items", "review_flags", "review_labels", "review_history"} <= tables
    assert {"analysts", "analyst_sessions"} <= tables
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    s.close()


def test_same_item_flagged_twice_is_one_updated_row(store: ReviewStore) -> None:
    store.add_flagged([flagged_item(1, p=0.7)])
    store.add_flagged([flagged_item(1, p=0.95, flagged=("low_quality", "harmful_interactions"))])
    page = store.list_items()
    assert page.total == 1
    row = page.items[0]
    assert row.scores["low_quality"] == pytest.approx(0.95)
    assert set(row.flagged) == {"low_quality", "harmful_interactions"}
    assert row.priority == pytest.approx(0.95 * 100)
    events = [h.event for h in store.history(row.id)]
    assert events == ["ingested", "rescored"]
    # Another model version or as_of is another review row.
    store.add_flagged([flagged_item(1, model_version="2"), flagged_item(1, as_of=None)])
    assert store.list_items().total == 3


def test_list_by_issue_status_priority_with_pagination(store: ReviewStore) -> None:
    items = [flagged_item(i, p=0.5 + i / 100, reach=10.0 * (i + 1)) for i in range(30)]
    items += [flagged_item(100 + i, flagged=("harmful_interactions",)) for i in range(5)]
    store.add_flagged(items)
    first = store.list_items(issue="low_quality", limit=10)
    assert first.total == 30 and len(first.items) == 10
    prios = [it.priority for it in first.items]
    assert prios == sorted(prios, reverse=True)
    assert first.items[0].item_id == "it_00029"
    second = store.list_items(issue="low_quality", limit=10, offset=10)
    assert not {i.id for i in first.items} & {i.id for i in second.items}
    assert store.list_items(issue="harmful_interactions").total == 5
    claim = store.claim_next("ann", issue="harmful_interactions")
    assert claim is not None and "harmful_interactions" in claim.item.flagged
    assert store.list_items(status="claimed").total == 1
    assert store.list_items(status="pending").total == 34


def test_lease_guards_label_skip_release(store: ReviewStore) -> None:
    store.add_flagged([flagged_item(i) for i in range(3)])
    a = store.claim_next("ann")
    b = store.claim_next("bob")
    assert a is not None and b is not None and a.item.id != b.item.id
    with pytest.raises(NotClaimable):
        store.claim(a.item.id, "bob")
    with pytest.raises(LeaseError):
        store.label(a.item.id, b.lease, "confirm")  # bob's lease is for another item
    with pytest.raises(LeaseError):
        store.label(a.item.id, "forged", "confirm")
    res = store.label(a.item.id, a.lease, "confirm", note="clear spam")
    assert [(lab.issue, lab.label) for lab in res.labels] == [("low_quality", 1)]
    with pytest.raises(LeaseError):  # labeled: the lease is spent
        store.label(a.item.id, a.lease, "reject")
    assert store.release(b.item.id, b.lease).status == "pending"
    c = store.claim(b.item.id, "cy")
    assert store.skip(b.item.id, c.lease).status == "skipped"
    events = [h.event for h in store.history(b.item.id)]
    assert events == ["ingested", "claimed", "released", "claimed", "skipped"]
    assert [h.actor for h in store.history(b.item.id)][1:] == ["bob", "bob", "cy", "cy"]


def test_expired_lease_returns_item_to_queue(store: ReviewStore) -> None:
    store.add_flagged([flagged_item(1)])
    t0 = datetime.now(UTC)
    a = store.claim_next("ann", now=t0)
    assert a is not None
    assert store.claim_next("bob", now=t0 + timedelta(seconds=10)) is None
    later = t0 + timedelta(seconds=store.lease_seconds + 1)
    b = store.claim_next("bob", now=later)
    assert b is not None and b.item.id == a.item.id
    with pytest.raises(LeaseError):  # ann's lease expired and bob holds it now
        store.label(a.item.id, a.lease, "confirm", now=later)
    store.label(b.item.id, b.lease, "reject", now=later)
    # An expired claim shows up as pending in lists and is recorded in history.
    store.add_flagged([flagged_item(2)])
    c = store.claim_next("cy", now=t0)
    assert c is not None
    assert store.expire_leases(now=later) == 1
    assert "lease_expired" in [h.event for h in store.history(c.item.id)]


def test_decisions_map_to_labels(store: ReviewStore) -> None:
    store.add_flagged([flagged_item(1, flagged=("low_quality", "harmful_interactions"))])
    store.add_flagged([flagged_item(2), flagged_item(3)])
    store.add_flagged([flagged_item(4, flagged=(), p=0.1, sampled=True)], sample_prob=0.2)
    store.add_flagged([flagged_item(5, flagged=(), p=0.1, sampled=True)], sample_prob=0.2)

    def decide(item_id: str, decision: str, issue: str | None = None) -> dict[str, int]:
        (row,) = store.find(item_id)
        lease = store.claim(row.id, "ann").lease
        res = store.label(row.id, lease, decision, issue=issue)
        return {lab.issue: lab.label for lab in res.labels}

    assert decide("it_00001", "confirm") == {"low_quality": 1, "harmful_interactions": 1}
    assert decide("it_00002", "reject") == {"low_quality": 0}
    assert decide("it_00003", "relabel", "harmful_interactions") == {
        "low_quality": 0,
        "harmful_interactions": 1,
    }
    # Sampled (unflagged): confirm means "none of its issues", reject needs the issue.
    assert decide("it_00004", "confirm") == {"low_quality": 0, "harmful_interactions": 0}
    (row,) = store.find("it_00005")
    assert row.stratum == "sample" and row.sample_prob == pytest.approx(0.2)
    lease = store.claim(row.id, "ann").lease
    with pytest.raises(ValueError, match="needs the issue"):
        store.label(row.id, lease, "reject")
    res = store.label(row.id, lease, "reject", issue="low_quality")
    assert {lab.issue: lab.label for lab in res.labels} == {
        "low_quality": 1,
        "harmful_interactions": 0,
    }


def test_random_share_interleaves_samples(tmp_path: Path) -> None:
    s = ReviewStore(f"sqlite:///{tmp_path / 'r.db'}", random_share=0.25)
    s.migrate()
    s.add_flagged([flagged_item(i, p=0.9) for i in range(40)])
    s.add_flagged(
        [flagged_item(100 + i, flagged=(), sampled=True) for i in range(40)], sample_prob=0.1
    )
    strata = []
    for _ in range(20):
        c = s.claim_next("ann")
        assert c is not None
        strata.append(c.item.stratum)
        s.label(c.item.id, c.lease, "confirm")
    assert Counter(strata)["sample"] == 5  # exactly a quarter, interleaved
    assert strata[0] == "sample" and strata[1:4] == ["flagged"] * 3
    s.close()


def test_history_is_append_only(store: ReviewStore) -> None:
    store.add_flagged([flagged_item(1)])
    with store.engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text("UPDATE review_history SET event = 'forged'"))
    with store.engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text("DELETE FROM review_history"))


def test_parallel_claims_on_sqlite_never_share_an_item(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ReviewStore(url).migrate()
    ReviewStore(url).add_flagged([flagged_item(i) for i in range(120)])
    claimed: dict[str, list[int]] = {}

    def analyst(name: str) -> None:
        s = ReviewStore(url, random_share=0.0)  # its own engine and connections
        mine = claimed.setdefault(name, [])
        while (c := s.claim_next(name)) is not None:
            s.label(c.item.id, c.lease, "confirm")
            mine.append(c.item.id)
        s.close()

    threads = [threading.Thread(target=analyst, args=(f"a{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for ids in claimed.values() for i in ids]
    assert len(ids) == len(set(ids)) == 120
    check = ReviewStore(url)
    frame = check.labels_frame()
    assert len(frame) == 120 and frame["item_id"].is_unique
    check.close()


def test_export_merges_and_deduplicates(store: ReviewStore, tmp_path: Path) -> None:
    store.add_flagged([flagged_item(i) for i in range(4)])
    for _ in range(3):
        c = store.claim_next("ann")
        store.label(c.item.id, c.lease, "confirm")
    ds = tmp_path / "ds"
    ds.mkdir()
    existing = pd.DataFrame(
        {
            "item_id": ["old_1", "old_2"],
            "issue": ["low_quality", "harmful_interactions"],
            "label": [0, 1],
            "labeled_at": pd.to_datetime(["2026-10-01", "2026-10-02"], utc=True),
            "source": ["import", "appeal"],
        }
    )
    existing.to_parquet(ds / "labels.parquet", index=False)
    path, n = export_labels(store, ds)
    assert path == ds / "labels.parquet" and n == 5
    path, n = export_labels(store, ds / "labels.parquet")  # again: no duplicates
    assert n == 5
    out = pd.read_parquet(path)
    assert list(out.columns) == ["item_id", "issue", "label", "labeled_at", "source"]
    assert sorted(out["source"]) == ["appeal", "import", "review", "review", "review"]
    assert set(out.loc[out["source"] == "review", "label"]) == {1}
    with pytest.raises(FileNotFoundError):
        export_labels(store, tmp_path / "missing" / "labels.parquet")


def test_quality_estimates_match_hand_computation(store: ReviewStore) -> None:
    # 20 flagged items, 10 labeled: 7 positive. 30 sampled at p=0.1, 20 labeled: 2 positive.
    store.add_flagged([flagged_item(i) for i in range(20)])
    store.add_flagged(
        [flagged_item(100 + i, flagged=(), p=0.1, sampled=True) for i in range(30)], sample_prob=0.1
    )
    for i in range(10):
        (row,) = store.find(f"it_{i:05d}")
        lease = store.claim(row.id, "ann").lease
        store.label(row.id, lease, "confirm" if i < 7 else "reject")
    for i in range(20):
        (row,) = store.find(f"it_{100 + i:05d}")
        lease = store.claim(row.id, "ann").lease
        if i < 2:
            store.label(row.id, lease, "relabel", issue="low_quality")
        else:
            store.label(row.id, lease, "confirm")
    (q,) = [x for x in store.quality(["low_quality"])]
    assert (q.flagged, q.flagged_labeled, q.flagged_positive) == (20, 10, 7)
    assert (q.sampled, q.sampled_labeled, q.sampled_positive) == (30, 20, 2)
    assert q.precision == pytest.approx(0.7)
    assert q.precision_ci == pytest.approx(wilson(7, 10))
    tp = 0.7 * 20
    fn = (2 / 20) * (30 / 0.1)  # miss rate x estimated unflagged population
    assert q.recall == pytest.approx(tp / (tp + fn))
    lo, hi = q.recall_ci
    assert lo < q.recall < hi
    assert wilson(0, 0) is None
