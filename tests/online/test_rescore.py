"""Re-scoring touched items: an item still over its threshold is queued once, and asks the
store about its flags once per process rather than on every pass."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pandas as pd

from features.online import OnlineConfig
from tests.support.online import Spool, online_service
from tests.support.serving import make_bundle

CONFIG = OnlineConfig(horizon_h=48.0)


def test_a_flagged_item_is_queued_once_and_not_asked_about_again(sim_tables, store_factory) -> None:
    bundle = make_bundle(n=400)
    for issue in bundle.issues.values():
        issue.threshold = 0.0  # every scored issue is over its threshold
    # but one post issue, under its threshold until the last pass
    dropped = sorted(n for n, issue in bundle.issues.items() if issue.anchor == "post")[0]
    bundle.issues[dropped].threshold = float("inf")
    model = SimpleNamespace(bundle=bundle, version="1")
    store = store_factory(CONFIG)
    items = sim_tables["items"].head(6)
    events = sim_tables["events"]
    store.apply(
        {
            "creators": sim_tables["creators"],
            "items": items,
            "events": events[events["item_id"].isin(items["item_id"])],
        },
        batch_id="setup",
    )
    ids = items["item_id"].tolist()
    calls: list[tuple[str, list[str]]] = []
    claim = store.claim_flags  # the round trip that asks the store about an item's flags

    def counted(item: str, issues: list[str], lease: Any) -> Any:
        calls.append((item, list(issues)))
        return claim(item, issues, lease)

    store.claim_flags = counted
    online, spool = online_service(store), Spool()
    assert online.rescore(model, spool, ids) == len(ids)
    assert len(calls) == len(ids)
    flagged = {e["item_id"]: e["flagged"] for e in spool.entries}
    assert set(flagged) == set(ids) and all(flagged.values())
    assert not any(dropped in f for f in flagged.values())

    # the next passes: nothing new to queue, and no round trip to find that out
    calls.clear()
    assert online.rescore(model, spool, ids) == 0
    assert online.rescore(model, spool, ids) == 0
    assert calls == [] and len(spool.entries) == len(ids)

    # another process (a second re-scorer) asks the store, which says: queued already
    other = online_service(store)
    assert other.rescore(model, spool, ids) == 0
    assert len(calls) == len(ids) and len(spool.entries) == len(ids)

    # an issue newly over its threshold is still asked about and queued, once
    bundle.issues[dropped].threshold = 0.0
    calls.clear()
    assert online.rescore(model, spool, ids) == len(ids)
    assert sorted(calls) == sorted((item, [dropped]) for item in ids)
    new = spool.entries[len(ids) :]
    assert sorted(e["item_id"] for e in new) == sorted(ids)
    assert all(e["flagged"] == [dropped] for e in new)
    assert online.rescore(model, spool, ids) == 0
    assert len(calls) == len(ids)
    assert (pd.Series([e["item_id"] for e in spool.entries]).value_counts() == 2).all()
