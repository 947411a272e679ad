"""Moderation anchors online: every remove / restrict applied to the store is scored once by
the re-scorer, on the snapshot `build_snapshots` makes for that moderation row, archived with
anchor "moderation", and its wrongful_enforcement flag queued for review once per action."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.online import OnlineConfig
from features.online.archive import LiveArchive, read_scores
from features.online.ops import ONLINE_TABLES
from features.snapshot import build_snapshots
from features.snapshot_frame import ANCHOR_ACTIONS
from models.batch import score_dataset
from serving.online import rescore_due
from tests.support.online import FullSpool, Replayer, Spool, compare_rows, online_service
from tests.support.serving import make_bundle

FAR = pd.Timestamp("2100-01-01", tz="UTC")
CONFIG = OnlineConfig(horizon_h=48.0)
ISSUE = "wrongful_enforcement"


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(n=400)


def _model(bundle: Any, threshold: float | None = None) -> SimpleNamespace:
    if threshold is not None:
        bundle.issues[ISSUE].threshold = threshold
    return SimpleNamespace(bundle=bundle, version="3")


@pytest.fixture(scope="module")
def tables(sim_tables) -> dict[str, pd.DataFrame]:
    """The simulated tables plus earlier actions on some actioned items (a restrict before
    the action, then a restore or a remove in between), so that the anchors' moderation state varies."""
    mod = sim_tables["moderation"]
    later = mod[mod["action"].isin(ANCHOR_ACTIONS)].head(8)
    restrict = later.assign(ts=later["ts"] - pd.Timedelta(minutes=30), action="restrict")
    restore = later.iloc[::2].assign(ts=later["ts"].iloc[::2] - pd.Timedelta(minutes=10))
    restore = restore.assign(action="restore")
    remove = later.iloc[1::2].assign(ts=later["ts"].iloc[1::2] - pd.Timedelta(minutes=20))
    remove = remove.assign(action="remove")
    extra = pd.concat([mod, restrict, restore, remove], ignore_index=True)
    return {**sim_tables, "moderation": extra.sort_values("ts", kind="stable", ignore_index=True)}


def _as_ns(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["as_of"] = out["as_of"].astype("datetime64[ns, UTC]")
    return out.sort_values(["item_id", "as_of"], kind="stable").reset_index(drop=True)


def test_replayed_actions_score_as_batch_moderation_rows(
    tables, store_factory, bundle, tmp_path: Path
) -> None:
    """Replay in time order, re-scoring right after each remove / restrict: the anchors'
    snapshots equal build_snapshots' moderation rows column for column, the archive's scores
    equal `surfacer score` of those rows, and each flagged action is queued once."""
    batch = build_snapshots(tables, [1.0], include_moderation=True, as_of_max=FAR)
    expected = batch[batch["anchor"] == "moderation"]
    assert len(expected) > 10
    by_key = {(r["item_id"], r["as_of"].value): r for r in expected.to_dict("records")}
    assert len(by_key) == len(expected)
    # half the actions look wrongful to the test model
    batch_scores = score_dataset(bundle, expected.reset_index(drop=True))
    model = _model(bundle, float(np.median(batch_scores[ISSUE])))
    batch_scores = score_dataset(bundle, expected.reset_index(drop=True))  # flagged anew

    store = store_factory(CONFIG)
    archive = LiveArchive(tmp_path / "live", background=False)
    online, spool = online_service(store, archive), Spool()
    replay = Replayer(store, tables)
    order = replay.order
    moderation = ONLINE_TABLES.index("moderation")
    is_anchor = tables["moderation"]["action"].isin(ANCHOR_ACTIONS).to_numpy()
    table, row = order["table"].to_numpy(), order["row"].to_numpy()
    stops = [i for i in range(len(order)) if table[i] == moderation and is_anchor[row[i]]]
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    problems: list[str] = []
    for i in stops:
        replay.apply_range(replay.pos, i + 1)
        replay.pos = i + 1
        items = store.take_anchored(100)
        assert items, "an applied remove / restrict left no pending anchor"
        for _, snap in store.anchor_snapshots(items):
            key = (snap["item_id"], snap["as_of"].value)
            assert key not in seen, f"{key} read twice: its anchor was not forgotten"
            seen[key] = snap
            diff = compare_rows(by_key[key], snap)
            if diff:
                problems.append(f"{key}: " + "; ".join(diff))
        for item in items:  # give them back: the re-scorer's own pass scores them
            store.requeue_anchored(item)
        online.rescore_anchors(model, spool)
    replay.apply_range(replay.pos, len(order))
    assert not problems, "\n".join(problems[:10])
    assert set(seen) == set(by_key)
    for col in ("mod_n_actions", "mod_restricted", "mod_removed"):  # the state varied
        assert len({s[col] for s in seen.values()}) > 1, col
    assert online.rescore_anchors(model, spool) == 0 and online.anchors_scored == len(by_key)

    archive.flush()
    scores = read_scores(tmp_path / "live")
    assert scores is not None and set(scores["anchor"]) == {"moderation"}
    assert set(scores["model_version"]) == {"3"}
    pd.testing.assert_frame_equal(
        _as_ns(scores.drop(columns="model_version")),
        _as_ns(batch_scores),
        check_exact=False,
        rtol=1e-9,
        atol=1e-12,
    )
    assert scores[ISSUE].notna().all()

    wrongful = _as_ns(batch_scores)
    wrongful = wrongful[wrongful["flagged"].str.contains(ISSUE)]
    assert len(wrongful) > 0
    queued = sorted(
        (q["item_id"], pd.Timestamp(q["as_of"]).value) for q in spool.items if ISSUE in q["flagged"]
    )
    assert queued == sorted(
        zip(wrongful["item_id"], wrongful["as_of"].map(lambda t: t.value), strict=True)
    )
    for q in spool.entries:  # only anchors were scored here
        assert q["anchor"] == "moderation" and q["flagged"] == [ISSUE]
        assert q["reasons"][ISSUE], "a queued action carries its reason codes"
        assert q["snapshot"]["action"] in ANCHOR_ACTIONS


def _one_item(sim_tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    items = sim_tables["items"].head(1).reset_index(drop=True)
    creators = sim_tables["creators"]
    return {"items": items, "creators": creators[creators["creator_id"] == items["creator_id"][0]]}


def _action(item: pd.Series, hours: float, action: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [item["item_id"]],
            "ts": [item["created_at"] + pd.Timedelta(hours=hours)],
            "action": [action],
            "source": ["auto"],
            "policy": ["spam"],
        }
    )


def test_flag_queued_once_per_action_and_restore_opens_none(
    sim_tables, store_factory, bundle
) -> None:
    store = store_factory(CONFIG)
    online, spool = online_service(store), Spool()
    model = _model(bundle, 0.0)  # every action looks wrongful
    part = _one_item(sim_tables)
    item = part["items"].iloc[0]
    store.apply(part, batch_id="i")
    store.apply({"moderation": _action(item, 1, "remove")}, batch_id="m-1")

    # the spool took the flag, then the pass died before forgetting the anchor: the retry
    # scores the action again and queues nothing new
    real_done = store.done_anchors
    store.done_anchors = lambda *a: (_ for _ in ()).throw(RuntimeError("crash"))
    with pytest.raises(RuntimeError):
        online.rescore_anchors(model, spool)
    store.done_anchors = real_done
    assert len(spool.items) == 1
    assert online.rescore_anchors(model, spool) == 0 and len(spool.items) == 1
    assert store.take_anchored(10) == []

    store.apply({"moderation": _action(item, 2, "restore")}, batch_id="m-2")
    assert store.take_anchored(10) == [], "a restore opened an anchor"
    # the stream consumers' path (one atomic script per message)
    [result] = store.apply_many([([("moderation", _action(item, 3, "remove"))], "m-3")])
    assert not result.duplicate
    assert rescore_due(online, model, spool) == 0.0
    assert len(spool.items) == 2, "a second remove of the item is judged on its own"
    first, second = spool.items
    assert [q["flagged"] for q in spool.items] == [[ISSUE], [ISSUE]]
    assert pd.Timestamp(second["as_of"]) == item["created_at"] + pd.Timedelta(hours=3)
    assert (first["snapshot"]["mod_n_actions"], first["snapshot"]["mod_removed"]) == (0, 0)
    assert (second["snapshot"]["mod_n_actions"], second["snapshot"]["mod_removed"]) == (2, 0)
    assert second["snapshot"]["horizon_h"] == pytest.approx(3.0)


def test_action_before_its_item_is_scored_once_the_item_arrives(
    sim_tables, store_factory, bundle
) -> None:
    store = store_factory(CONFIG)
    online, spool = online_service(store), Spool()
    model = _model(bundle, 0.0)
    part = _one_item(sim_tables)
    item = part["items"].iloc[0]
    store.apply({"moderation": _action(item, 1, "restrict")}, batch_id="m-1")
    assert online.rescore_anchors(model, spool) == 0 and not spool.items
    store.apply(part, batch_id="i")
    assert online.rescore_anchors(model, spool) == 1
    [queued] = spool.items
    assert queued["snapshot"]["action"] == "restrict" and queued["anchor"] == "moderation"
    assert online.anchors_scored == 1


def test_spool_failure_leaves_the_action_pending(sim_tables, store_factory, bundle) -> None:
    store = store_factory(CONFIG)
    online, spool = online_service(store), FullSpool(fail=1)
    model = _model(bundle, 0.0)
    part = _one_item(sim_tables)
    item = part["items"].iloc[0]
    store.apply(part, batch_id="i")
    store.apply({"moderation": _action(item, 1, "remove")}, batch_id="m-1")
    assert rescore_due(online, model, spool) == 0.0  # logged, not raised
    assert not spool.items and online.anchors_scored == 0
    assert rescore_due(online, model, spool) == 0.0
    assert len(spool.items) == 1 and online.anchors_scored == 1
    assert rescore_due(online, model, spool) == 0.0 and len(spool.items) == 1
