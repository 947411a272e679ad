"""No flag lost when a re-scorer dies: items it took (touched, at a horizon, or with pending
moderation anchors) stay leased to it in the store until their flags are in the spool, and
any re-scorer takes them again once the lease has ended; each scored item's next horizon is
kept in the store, so a restarted re-scorer (or another worker) re-judges it there."""

from __future__ import annotations

import time
from functools import partial
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from features.online import OnlineConfig, StoreUnavailable
from serving.online import RESCORE_PAUSE_S, rescore_due
from tests.support.online import FullSpool, Spool, online_service
from tests.support.serving import make_bundle

CONFIG = OnlineConfig(horizon_h=48.0)
# Wall time after a take by which any lease has ended (they last about a minute here).
AFTER_LEASE_S = 3_600.0
T0 = time.time()


class Died(BaseException):
    """The re-scorer's process killed mid-pass: nothing of it runs after this (no except
    Exception clause sees it)."""


@pytest.fixture(scope="module")
def model() -> SimpleNamespace:
    bundle = make_bundle(n=400)
    for issue in bundle.issues.values():
        issue.threshold = 0.0  # every scored issue is over its threshold
    return SimpleNamespace(bundle=bundle, version="1")


def _worker(store: Any, at_s: float) -> Any:
    """A re-scorer (`OnlineService`, no debounce) whose wall clock reads `at_s`."""
    online = online_service(store)
    online.wall = lambda: at_s
    return online


def _items(sim_tables: dict[str, pd.DataFrame], n: int, start: pd.Timestamp) -> pd.DataFrame:
    """`n` simulated items re-dated one minute apart from `start`."""
    items = sim_tables["items"].head(n).reset_index(drop=True)
    return items.assign(created_at=[start + pd.Timedelta(minutes=k) for k in range(n)])


def _posted(store: Any, sim_tables: dict[str, pd.DataFrame], n: int = 5) -> list[str]:
    items = _items(sim_tables, n, pd.Timestamp("2026-03-01", tz="UTC"))
    store.apply({"creators": sim_tables["creators"], "items": items}, batch_id="posted")
    return sorted(items["item_id"])


def _queued_once(spool: Spool, ids: list[str]) -> None:
    post = [e["item_id"] for e in spool.entries if e["anchor"] == "post"]
    assert sorted(post) == sorted(ids), "each item's flags queued exactly once"


def test_items_a_dead_worker_took_are_scored_after_its_lease(
    sim_tables, store_factory, model
) -> None:
    store = store_factory(CONFIG)
    ids = _posted(store, sim_tables)
    dead = _worker(store, T0)
    assert sorted(dead.due()) == ids  # taken, then the worker is killed before scoring
    del dead

    spool = Spool()
    other = _worker(store, T0 + 1)
    assert other.due() == [], "taken items are leased to their taker"
    other.wall = lambda: T0 + AFTER_LEASE_S
    assert other.backlog() == len(ids), "due again, so counted in the backlog"
    items = other.due()
    assert sorted(items) == ids
    assert other.rescore(model, spool, items) == len(ids)
    _queued_once(spool, ids)
    # finished: the lease was released, so nothing comes back later
    later = _worker(store, T0 + 3 * AFTER_LEASE_S)
    assert later.due() == [] and later.backlog() == 0
    assert later.rescore(model, spool, ids) == 0  # scoring again queues nothing twice
    _queued_once(spool, ids)


def test_items_of_a_take_whose_reply_was_lost_come_back_after_the_lease(
    sim_tables, store_factory, model
) -> None:
    store = store_factory(CONFIG)
    ids = _posted(store, sim_tables)
    take = store.take_touched

    def reply_lost(*args: Any, **kwargs: Any) -> list[str]:
        take(*args, **kwargs)  # the store took them; the answer never arrived
        raise StoreUnavailable("connection reset")

    store.take_touched = reply_lost
    spool = Spool()
    worker = _worker(store, T0)
    assert rescore_due(worker, model, spool) == RESCORE_PAUSE_S
    store.take_touched = take
    assert worker.due() == [] and not spool.entries
    worker.wall = lambda: T0 + AFTER_LEASE_S
    assert rescore_due(worker, model, spool) == 0.0
    _queued_once(spool, ids)


def test_a_lease_taken_over_is_not_released_by_its_first_taker(
    sim_tables, store_factory, model
) -> None:
    """A slow taker whose lease ended, and whose items another took, finishes: that frees
    only its own lease; the other's dies with it and the items come back once more."""
    store = store_factory(CONFIG)
    ids = _posted(store, sim_tables)
    slow = _worker(store, T0)
    taken = slow.due()
    assert sorted(taken) == ids
    dies = _worker(store, T0 + AFTER_LEASE_S)
    assert sorted(dies.due()) == ids  # the slow one's lease ended
    spool = Spool()
    assert slow.rescore(model, spool, taken) == len(ids)
    del dies  # killed before scoring
    last = _worker(store, T0 + 2 * AFTER_LEASE_S + 1)
    assert sorted(last.due()) == ids, "the second lease was not the first taker's to end"
    assert last.rescore(model, spool, ids) == 0
    _queued_once(spool, ids)


def test_a_restarted_worker_rejudges_scored_items_at_their_next_horizon(
    sim_tables, store_factory, model
) -> None:
    store = store_factory(CONFIG)
    ids = _posted(store, sim_tables)
    start = pd.Timestamp("2026-03-01", tz="UTC")
    first = _worker(store, T0)
    first.rescore(model, Spool(), first.due())
    del first  # restarted: a new process knows nothing of what the first scored

    def clock_to(hours: float, name: str) -> None:
        """Post one more item at `start` + hours: the store clock moves there."""
        item = _items(sim_tables, 1, start + pd.Timedelta(hours=hours))
        store.apply({"items": item.assign(item_id=name)}, batch_id=name)

    worker = _worker(store, T0)
    clock_to(0.5, "filler-0")
    assert worker.due() == ["filler-0"], "no horizon crossed yet"
    worker.rescore(model, Spool(), ["filler-0"])

    clock_to(1.1, "filler-1")  # every item is past its 1 h horizon (filler-0 not yet)
    due = worker.due()
    assert sorted(due) == sorted([*ids, "filler-1"])
    before = worker.scored
    worker.rescore(model, Spool(), due)
    assert worker.scored - before == len(due)
    assert worker.due() == [], "judged at this horizon: planned at the next one"

    clock_to(30, "filler-2")  # past 6 h and 24 h: judged once, then past the last horizon
    due = worker.due()
    assert sorted(due) == sorted([*ids, "filler-0", "filler-1", "filler-2"])
    worker.rescore(model, Spool(), due)
    assert store.horizons_planned() == 1  # only filler-2 (posted now) waits for a horizon

    clock_to(100, "filler-3")  # filler-2 expired before its 1 h horizon was judged
    due = worker.due()
    assert sorted(due) == ["filler-2", "filler-3"]
    worker.rescore(model, Spool(), due)
    assert store.horizons_planned() == 1, "expired items left the horizon set"


def _remove(item: pd.Series, hours: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [item["item_id"]],
            "ts": [item["created_at"] + pd.Timedelta(hours=hours)],
            "action": ["remove"],
            "source": ["auto"],
            "policy": ["spam"],
        }
    )


def test_anchors_a_dead_worker_took_are_scored_by_another_after_the_lease(
    sim_tables, store_factory, model
) -> None:
    store = store_factory(CONFIG)
    items = sim_tables["items"].head(1).reset_index(drop=True)
    store.apply({"creators": sim_tables["creators"], "items": items}, batch_id="i")
    store.apply({"moderation": _remove(items.iloc[0])}, batch_id="m-1")

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise Died

    store.anchor_snapshots, read = killed, store.anchor_snapshots
    dead, spool = _worker(store, T0), Spool()
    with pytest.raises(Died):
        dead.rescore_anchors(model, spool)
    store.anchor_snapshots = read

    other = _worker(store, T0 + 1)
    assert other.rescore_anchors(model, spool) == 0, "leased to the dead worker"
    other.wall = lambda: T0 + AFTER_LEASE_S
    assert other.rescore_anchors(model, spool) == 1
    [queued] = spool.items
    assert queued["item_id"] == items["item_id"][0] and queued["snapshot"]["action"] == "remove"
    later = _worker(store, T0 + 3 * AFTER_LEASE_S)
    assert later.rescore_anchors(model, spool) == 0 and len(spool.items) == 1


def test_a_spool_failure_mid_pass_loses_none_of_the_pass(sim_tables, store_factory, model) -> None:
    """The spool refuses one item's flags: that item and the ones after it in the pass are
    retried by the next pass (they were dropped: only the refused one was)."""
    store = store_factory(CONFIG)
    ids = _posted(store, sim_tables)
    worker, spool = _worker(store, T0), FullSpool(fail=1)
    assert rescore_due(worker, model, spool) == 0.0  # logged, not raised
    assert not spool.entries
    assert rescore_due(worker, model, spool) == 0.0
    _queued_once(spool, ids)
    assert worker.due() == [] and worker.backlog() == 0


def test_takes_and_releases_in_chunks_lease_every_item(
    sim_tables, store_factory, monkeypatch
) -> None:
    """Redis moves LEASE_CHUNK items per script (here 2): a take of several chunks leases
    each item it returns, and a finish of several chunks releases each."""
    from features.online import redis_store
    from features.online.store import Lease

    monkeypatch.setattr(redis_store, "LEASE_CHUNK", 2)
    store = store_factory(CONFIG)
    ids = _posted(store, sim_tables)
    first = Lease.starting(T0, 60.0)
    taken = store.take_touched(4, first)
    assert len(taken) == 4 and store.take_touched(10, first) == sorted(set(ids) - set(taken))
    after = Lease.starting(T0 + AFTER_LEASE_S, 60.0)
    assert store.touched_count(after.now_ms) == len(ids)
    again = store.take_touched(10, after)
    assert sorted(again) == ids
    store.finish_touched([(item, after.until_ms, None) for item in again])
    assert store.touched_count(after.until_ms + 1) == 0


class DyingSpool(Spool):
    """The spool of a re-scorer killed inside its append: its flag was claimed in the store
    and never reached the spool. `during` runs first (another worker's pass at that
    instant); with `dies` False the append then succeeds."""

    def __init__(self, during: Any = None, dies: bool = True) -> None:
        super().__init__()
        self.during, self.dies = during, dies

    def append_item(self, data: bytes) -> None:
        during, self.during = self.during, None
        if during is not None:
            during()
        if self.dies:
            raise Died
        super().append_item(data)


def _pass(worker: Any, model: Any, spool: Spool) -> None:
    worker.rescore(model, spool, worker.due())


def _all(*spools: Spool) -> Spool:
    both = Spool()
    both.entries = [e for s in spools for e in s.entries]
    return both


def test_a_worker_killed_between_claiming_a_flag_and_queueing_it_loses_no_flag(
    sim_tables, store_factory, model
) -> None:
    store = store_factory(CONFIG)
    ids = _posted(store, sim_tables)
    dead = _worker(store, T0)
    with pytest.raises(Died):
        dead.rescore(model, DyingSpool(), dead.due())
    del dead

    spool = Spool()
    other = _worker(store, T0 + 1)
    # the dead worker's claim lasts its lease: the flag might still reach its spool
    assert other.rescore(model, spool, ids) == len(ids) - 1 == len(spool.entries)
    other.wall = lambda: T0 + AFTER_LEASE_S
    assert sorted(other.due()) == ids
    assert other.rescore(model, spool, ids) == 1, "the ended claim is claimed again"
    _queued_once(spool, ids)
    later = _worker(store, T0 + 3 * AFTER_LEASE_S)
    assert later.due() == [] and later.rescore(model, spool, ids) == 0
    _queued_once(spool, ids)


def test_two_workers_scoring_an_item_at_once_queue_its_flags_once(
    sim_tables, store_factory, model
) -> None:
    """Worker A is appending an item's flag when B, which took the item again (touched
    meanwhile), scores it: B queues nothing of A's and leaves the item leased, so that
    when A dies there, the item comes back after B's lease and its flag is queued once."""
    for a_dies in (False, True):
        store = store_factory(CONFIG)
        ids = _posted(store, sim_tables)
        a, b = _worker(store, T0), _worker(store, T0 + 1)
        taken = a.due()
        again = _items(sim_tables, len(ids), pd.Timestamp("2026-03-01", tz="UTC"))
        store.apply({"items": again}, batch_id="touched-again")  # B can take them now
        spool_b = Spool()
        spool_a = DyingSpool(partial(_pass, b, model, spool_b), dies=a_dies)
        if a_dies:
            with pytest.raises(Died):
                a.rescore(model, spool_a, taken)
        else:
            a.rescore(model, spool_a, taken)
        # B queued every item but the one A was appending
        assert len(spool_b.entries) == len(ids) - 1
        spool_c = Spool()
        c = _worker(store, T0 + 1 + AFTER_LEASE_S)
        assert c.rescore(model, spool_c, c.due()) == int(a_dies)
        _queued_once(_all(spool_a, spool_b, spool_c), ids)
        assert c.due() == [] and c.backlog() == 0


def test_a_spool_failure_gives_the_claim_back_and_one_not_given_back_ends(
    sim_tables, store_factory, model
) -> None:
    """The spool refuses the flag: its claim is given back, so any worker's next score
    (before the lease ended) queues it. Should the store be unreachable to give it back,
    the claim ends with its lease and the flag is queued then."""
    store = store_factory(CONFIG)
    ids = _posted(store, sim_tables, n=1)
    worker = _worker(store, T0)
    assert rescore_due(worker, model, FullSpool(fail=1)) == 0.0
    spool = Spool()
    assert _worker(store, T0 + 1).rescore(model, spool, ids) == 1
    _queued_once(spool, ids)

    store = store_factory(CONFIG)
    ids = _posted(store, sim_tables, n=1)
    release = store.release_flags

    def unreachable(*args: Any) -> None:
        raise StoreUnavailable("connection reset")

    store.release_flags = unreachable
    worker, spool = _worker(store, T0), FullSpool(fail=1)
    rescore_due(worker, model, spool)  # the spool failed, then the store: logged
    store.release_flags = release
    assert rescore_due(worker, model, spool) == 0.0 and not spool.entries
    worker.wall = lambda: T0 + AFTER_LEASE_S
    assert rescore_due(worker, model, spool) == 0.0
    _queued_once(spool, ids)
    assert worker.due() == [] and worker.backlog() == 0


def test_anchors_of_a_worker_killed_between_claiming_and_queueing_are_queued_once(
    sim_tables, store_factory, model
) -> None:
    """As for post flags: an action's flag claimed by a worker killed in its append is
    queued once by another after the lease. A second action on the item arriving
    meanwhile has another worker take the item and score both: it queues the second and
    leaves the first pending (and the item leased) while the dead worker's claim lasts."""
    store = store_factory(CONFIG)
    items = sim_tables["items"].head(1).reset_index(drop=True)
    item = items.iloc[0]
    store.apply({"creators": sim_tables["creators"], "items": items}, batch_id="i")
    store.apply({"moderation": _remove(item)}, batch_id="m-1")
    dead = _worker(store, T0)
    spool = Spool()
    other = _worker(store, T0 + 1)

    def meanwhile() -> None:
        store.apply({"moderation": _remove(item, hours=2)}, batch_id="m-2")
        assert other.rescore_anchors(model, spool) == 1

    with pytest.raises(Died):
        dead.rescore_anchors(model, DyingSpool(meanwhile))
    assert other.rescore_anchors(model, spool) == 0, "leased by the pass that met the claim"
    other.wall = lambda: T0 + 1 + AFTER_LEASE_S
    assert other.rescore_anchors(model, spool) == 1
    hours = sorted(
        (pd.Timestamp(q["as_of"]) - item["created_at"]) / pd.Timedelta(hours=1) for q in spool.items
    )
    assert hours == [1.0, 2.0], "each action's flag queued once"
    later = _worker(store, T0 + 3 * AFTER_LEASE_S)
    assert later.rescore_anchors(model, spool) == 0 and len(spool.items) == 2
