"""The review store on real PostgreSQL: migrations and concurrent analysts losing no label.

Each run creates a fresh database and drops it at the end. Analysts are threads, each with
its own ReviewStore (own engine and connections), claiming with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from serving.flag_writer import FlagWriter, to_json
from serving.flag_writer import flagged_item as scored_item
from serving.review.ingest import StoreSink
from serving.review.models import HistoryEvent
from serving.review.store import NotClaimable, ReviewStore
from serving.spool import DEAD_LETTERS_FILE, SpoolWriter
from tests.support.postgres import temp_database, url
from tests.support.review import flagged_item
from tests.support.serving import records

pytestmark = pytest.mark.postgres

N_ANALYSTS = 8
N_ITEMS = 200


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with temp_database("surfacer_review") as name:
        yield url(name)


def test_migrate_on_empty_postgres(pg_url: str) -> None:
    store = ReviewStore(pg_url)
    assert store.revision() is None
    assert store.migrate() == ReviewStore.head()
    assert store.migrate() == ReviewStore.head()  # idempotent
    store.add_flagged([flagged_item(0)])
    with store.engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text("UPDATE review_history SET event = 'forged'"))
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM review_items"))  # history stays: no cascade into it
    store.close()


def test_concurrent_analysts_lose_no_label(pg_url: str) -> None:
    setup = ReviewStore(pg_url, random_share=0.0)
    setup.migrate()
    with setup.engine.begin() as conn:
        conn.execute(text("TRUNCATE review_labels, review_flags, review_items CASCADE"))
    setup.add_flagged([flagged_item(1000 + i, p=0.5 + (i % 50) / 100) for i in range(N_ITEMS)])
    barrier = threading.Barrier(N_ANALYSTS)
    claimed: dict[str, list[int]] = {f"analyst{i}": [] for i in range(N_ANALYSTS)}
    errors: list[BaseException] = []

    def analyst(name: str) -> None:
        store = ReviewStore(pg_url, random_share=0.0)
        try:
            barrier.wait()
            while (c := store.claim_next(name)) is not None:
                decision = "confirm" if c.item.id % 2 else "reject"
                store.label(c.item.id, c.lease, decision, note=f"by {name}")
                claimed[name].append(c.item.id)
        except BaseException as exc:  # surfaced below with the thread's name
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=analyst, args=(n,)) for n in claimed]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.perf_counter() - t0
    assert not errors, errors
    ids = [i for got in claimed.values() for i in got]
    per_analyst = {n: len(v) for n, v in claimed.items()}
    print(
        f"\n{N_ANALYSTS} analysts labelled {len(ids)} items in {elapsed:.2f}s "
        f"({len(ids) / elapsed:.0f} items/s); per analyst {per_analyst}"
    )
    # Each item reviewed by exactly one analyst, and all were reviewed.
    assert len(ids) == len(set(ids)) == N_ITEMS
    assert sum(1 for v in per_analyst.values() if v) >= 2  # the work was actually shared
    # Every label stored, once, by the analyst who held the lease.
    frame = setup.labels_frame()
    assert len(frame) == N_ITEMS and frame["item_id"].is_unique
    owner = {i: n for n, got in claimed.items() for i in got}
    with setup.engine.connect() as conn:
        rows = conn.execute(text("SELECT review_item_id, reviewer FROM review_labels")).all()
        assert {rid: who for rid, who in rows} == owner
        claims = Counter(
            rid
            for (rid,) in conn.execute(
                text("SELECT review_item_id FROM review_history WHERE event = 'claimed'")
            )
        )
    assert set(claims) == set(owner) and set(claims.values()) == {1}
    assert setup.stats().by_status == {"labeled": N_ITEMS}
    assert HistoryEvent.__tablename__ == "review_history"
    setup.close()


def test_racing_claims_on_one_item_have_one_winner(pg_url: str) -> None:
    setup = ReviewStore(pg_url)
    setup.migrate()
    setup.add_flagged([flagged_item(5000)])
    (row,) = setup.find("it_05000")
    barrier = threading.Barrier(N_ANALYSTS)
    outcomes: list[str] = []

    def grab(name: str) -> None:
        store = ReviewStore(pg_url)
        barrier.wait()
        try:
            store.claim(row.id, name)
            outcomes.append("won")
        except NotClaimable:
            outcomes.append("lost")
        finally:
            store.close()

    threads = [threading.Thread(target=grab, args=(f"a{i}",)) for i in range(N_ANALYSTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["lost"] * (N_ANALYSTS - 1) + ["won"]
    setup.close()


def test_items_postgres_refuses_are_dead_lettered_and_the_rest_stored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with temp_database("surfacer_poison") as name:
        _poison_in_a_batch(url(name), tmp_path)


def _poison_in_a_batch(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Past the API's checks (a spool written by an older worker, say): a 300-character id
    # and a NUL in an id, which PostgreSQL cannot hold, among good items.
    store = ReviewStore(pg_url)
    store.migrate()
    spool = SpoolWriter(tmp_path / "spool").start()
    recs = records(40, random_state=31)
    recs[7]["item_id"] = "x" * 300
    recs[21]["item_id"] = "nul\x00inside"
    at = datetime.now(UTC)
    for rec in recs:
        item = scored_item(rec, {"low_quality": 0.9}, ["low_quality"], {}, "pg", at)
        spool.append_item(to_json(item))
    spool.close()
    writer = FlagWriter(tmp_path / "spool", lambda: StoreSink(store, 1.0), poll_interval_s=0.01)
    stop = threading.Event()
    stop.set()
    writer.run(stop, drain_timeout_s=30)
    dead = [
        orjson.loads(x) for x in (tmp_path / "spool" / DEAD_LETTERS_FILE).read_bytes().splitlines()
    ]
    assert sorted(d["item_id"] for d in dead) == sorted([recs[7]["item_id"], recs[21]["item_id"]])
    assert all(d["error"] for d in dead)
    stored = {r.item_id for r in ReviewStore(pg_url).list_items(limit=500).items}
    assert stored == {r["item_id"] for r in recs} - {d["item_id"] for d in dead}
    assert writer.totals == {**writer.totals, "stored": 38, "dead_lettered": 2, "lost": 0}
    store.close()


def _state(store: ReviewStore) -> tuple[list, list, list]:
    """Items, flag rows and history of `store` without ids and clock times: what the two
    ingest methods must agree on."""
    with store.engine.connect() as conn:
        items = conn.execute(
            text(
                "SELECT item_id, as_of_key, model_version, anchor, as_of, snapshot::text, "
                "scores::text, flagged::text, reasons::text, scored_at, reach, priority, "
                "sampled, stratum, sample_prob, status, created_at = updated_at "
                "FROM review_items ORDER BY item_id, as_of_key, model_version"
            )
        ).all()
        flags = conn.execute(
            text(
                "SELECT i.item_id, i.model_version, f.issue, f.probability, f.priority "
                "FROM review_flags f JOIN review_items i ON i.id = f.review_item_id "
                "ORDER BY 1, 2, 3"
            )
        ).all()
        history = conn.execute(
            text(
                "SELECT i.item_id, i.model_version, h.event, h.actor, h.detail::jsonb "
                "FROM review_history h JOIN review_items i ON i.id = h.review_item_id "
                "ORDER BY 1, 2, h.id"
            )
        ).all()
    items = [
        (*r[:5], orjson.loads(r[5]), *(orjson.loads(x) for x in r[6:9]), *r[9:]) for r in items
    ]
    return items, flags, history


def test_copy_ingest_matches_executemany_ingest() -> None:
    # The same sequence of batches through both methods: first ingest, a replay (same
    # scoring time: nothing changes, no history), a newer scoring with other flags (flag rows
    # replaced, "rescored"), an older one arriving late (ignored), a sampled item that is now
    # flagged, and a duplicate inside one batch (the last wins).
    t0 = datetime(2026, 11, 2, tzinfo=UTC)

    def at(item, minutes: int):  # type: ignore[no-untyped-def]
        item.scored_at = t0 + timedelta(minutes=minutes)
        return item

    batches = [
        [at(flagged_item(i, p=0.6 + i / 100), 0) for i in range(30)]
        + [at(flagged_item(100, flagged=(), sampled=True), 0)],
        [at(flagged_item(i, p=0.6 + i / 100), 0) for i in range(30)],
        [
            at(flagged_item(i, p=0.99, flagged=("low_quality", "harmful_interactions")), 5)
            for i in range(10)
        ]
        + [at(flagged_item(i, p=0.1, flagged=()), 1) for i in range(10, 15)],
        [at(flagged_item(12, p=0.2), -5), at(flagged_item(100, p=0.8), 5)],
        [at(flagged_item(200, p=0.3), 0), at(flagged_item(200, p=0.9), 0)],
    ]
    states = {}
    touched = {}
    for method in ("executemany", "copy"):
        with temp_database("w14_ingest_same") as name:
            store = ReviewStore(url(name), random_share=0.0)
            store.migrate()
            touched[method] = [
                store.add_flagged(copy.deepcopy(b), sample_prob=0.25, method=method)
                for b in batches
            ]
            states[method] = _state(store)
            store.close()
    assert touched["copy"] == touched["executemany"] == [31, 0, 15, 1, 1]
    items, flags, history = states["copy"]
    assert states["copy"] == states["executemany"]
    assert len(items) == 32 and len(history) == 31 + 15 + 1 + 1
    by_id = {r[0]: r for r in items}
    assert by_id["it_00100"][13] == "flagged" and by_id["it_00100"][14] == 1.0
    assert {f[2] for f in flags if f[0] == "it_00003"} == {"low_quality", "harmful_interactions"}
    assert not [f for f in flags if f[0] == "it_00012"]  # rescored unflagged: flags gone
