"""One definition, zero skew: the online store replays a simulated dataset in event-time
order and, at many random instants, reads exactly the snapshot `build_snapshots` computes
at the same as_of; the champion-style bundle then scores both to the same probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.online import OnlineConfig
from features.schema import SNAPSHOT_COLUMNS
from features.snapshot import build_snapshots
from tests.support.online import Replayer, check_parity, compare_rows, random_horizons, timeline
from tests.support.serving import make_bundle

FAR = pd.Timestamp("2100-01-01", tz="UTC")


def test_replay_parity_every_column(sim_tables, store_factory, rng) -> None:
    horizons = random_horizons(rng, 6, 23.5)
    batch = build_snapshots(sim_tables, horizons, include_moderation=False, as_of_max=FAR)
    store = store_factory(OnlineConfig(horizon_h=24.0))
    compared, problems = check_parity(store, sim_tables, batch)
    assert compared == len(batch) > 500
    assert not problems, f"{len(problems)} mismatches, e.g.\n" + "\n".join(problems[:10])
    # the comparison covers every snapshot column the batch produced
    assert set(batch.columns) == set(SNAPSHOT_COLUMNS)
    # and the data exercised what it should: windows, reports, comments, moderation, creators
    for col in (
        "n_view_1h",
        "n_report_6h",
        "n_comment_toxic",
        "mod_removed",
        "creator_prior_removals",
        "creator_n_items",
        "n_reporters",
    ):
        assert batch[col].sum() > 0, col


def test_out_of_order_rows_land_in_the_right_window(sim_tables, store_factory, rng) -> None:
    """All rows before an instant applied in random order and random batches (events before
    their items, moderation before its item) read the same snapshot as batch."""
    order = timeline(sim_tables)
    t = int(order["time"].quantile(0.6))
    before = order[order["time"] < t]
    shuffled = before.iloc[rng.permutation(len(before))].reset_index(drop=True)
    # A moderation action keeps its relative order with others at the same timestamp.
    store = store_factory(OnlineConfig(horizon_h=48.0))
    replay = Replayer(store, sim_tables, shuffled)
    cuts = np.sort(rng.choice(np.arange(1, len(shuffled)), size=40, replace=False))
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(shuffled)], strict=True):
        replay.apply_range(int(lo), int(hi))
    items = sim_tables["items"]
    created = items["created_at"].astype("int64").to_numpy() * 1000  # us -> ns
    alive = np.flatnonzero(created < t)
    picked = rng.choice(alive, size=min(25, alive.size), replace=False)
    checked = 0
    for i in picked:
        h = (t - int(created[i])) / 3.6e12
        row = build_snapshots(sim_tables, [h], include_moderation=False, as_of_max=FAR)
        row = row[row["item_id"] == items["item_id"].iloc[i]]
        assert len(row) == 1 and int(row["as_of"].iloc[0].value) == t
        snap = store.snapshot(items["item_id"].iloc[i], t)
        assert snap is not None
        diff = compare_rows(row.iloc[0].to_dict(), snap)
        assert not diff, diff
        checked += 1
    assert checked >= 10


def test_scores_match_batch_scoring(sim_tables, store_factory, rng) -> None:
    horizons = random_horizons(rng, 3, 20.0)
    batch = build_snapshots(sim_tables, horizons, include_moderation=False, as_of_max=FAR)
    store = store_factory()
    replay = Replayer(store, sim_tables)
    bundle = make_bundle(n=400)
    rows = batch.sort_values("as_of", kind="stable").reset_index(drop=True)
    online = []
    for as_of, group in rows.groupby("as_of", sort=True):
        replay.apply_before(int(as_of.value))
        online += store.snapshots(group["item_id"].tolist(), int(as_of.value))
    batch_probs = bundle.score_frame(rows)
    online_probs = [bundle.score_one(r) for r in online]
    for issue in bundle.issue_names:
        b = batch_probs[issue].to_numpy()
        o = np.array([np.nan if p[issue] is None else p[issue] for p in online_probs])
        np.testing.assert_allclose(o, b, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isfinite(batch_probs["low_quality"]).sum() == len(rows)
