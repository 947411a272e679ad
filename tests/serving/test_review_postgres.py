"""The review store on real PostgreSQL: migrations and concurrent analysts losing no label.

Each run creates a fresh database and drops it at the end. Analysts are threads, each with
its own ReviewStore (own engine and connections), claiming with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

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
