"""The simulated dataset: contract-valid, deterministic, realistic shapes, consistent truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import TABLE_ORDER
from features.io import load_dataset
from features.schema import ABUSE_LEXICON
from features.validate import validate_dataset
from simulator import SimConfig, Simulation, simulate
from simulator.vocab import CLEAN_COMMENTS, REGIONS, SPAM_COMMENTS, TOXIC_COMMENTS


def _ns(times: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds (fast comparisons on millions of rows)."""
    return times.dt.as_unit("ns").astype("int64").to_numpy()


def _fingerprint(sim: Simulation) -> dict[str, str]:
    out = {}
    for name, df in [*sim.tables.items(), ("truth", sim.truth)]:
        hashed = pd.util.hash_pandas_object(df, index=False).to_numpy()
        out[name] = hashlib.sha256(hashed.tobytes()).hexdigest()
    return out


def test_tables_are_contract_valid(sim: Simulation) -> None:
    assert list(sim.tables) == list(TABLE_ORDER)
    assert validate_dataset(sim.tables) == []
    for name, df in sim.tables.items():
        assert len(df) > 0, name


def test_same_seed_same_data_other_seed_other_data() -> None:
    config = SimConfig(n_items=800, days=8, seed=5)
    a, b = _fingerprint(simulate(config)), _fingerprint(simulate(config))
    assert a == b
    c = _fingerprint(simulate(SimConfig(n_items=800, days=8, seed=6)))
    assert all(a[name] != c[name] for name in a)


def test_written_folder_round_trips(sim: Simulation, written: Path) -> None:
    names = sorted(p.name for p in written.iterdir())
    assert names == sorted(
        [f"{t}.parquet" for t in TABLE_ORDER]
        + ["truth.parquet", "incidents.json", "simulation.json"]
    )
    loaded = load_dataset(written)
    for name, df in sim.tables.items():
        pd.testing.assert_frame_equal(loaded[name], df, check_dtype=False)
    truth = pd.read_parquet(written / "truth.parquet")
    pd.testing.assert_frame_equal(truth, sim.truth, check_dtype=False)
    incidents = json.loads((written / "incidents.json").read_text())
    assert incidents == json.loads(json.dumps(sim.incidents))
    config = json.loads((written / "simulation.json").read_text())
    assert config["seed"] == sim.config.seed and config["n_items"] == sim.config.n_items


def test_write_refuses_non_empty_folder_unless_overwrite(sim: Simulation, written: Path) -> None:
    from simulator import write_simulation

    with pytest.raises(FileExistsError, match="not empty"):
        write_simulation(sim, written)
    assert write_simulation(sim, written, overwrite=True) == written
    assert (written / "events.parquet").is_file()


def test_truth_matches_items_and_tables(sim: Simulation) -> None:
    items, truth, mod = sim.tables["items"], sim.truth, sim.tables["moderation"]
    assert truth["item_id"].tolist() == items["item_id"].tolist()
    for issue in ("low_quality", "harmful_interactions"):
        assert truth[issue].notna().all()
        assert truth[issue].isin([0, 1]).all()
        assert truth[f"p_{issue}"].between(0, 1).all()
    # wrongful_enforcement exists exactly for items with a remove/restrict action.
    first = mod[mod["action"] != "restore"].groupby("item_id")["ts"].min()
    actioned = truth.set_index("item_id")["wrongful_enforcement"].notna()
    assert set(actioned[actioned].index) == set(first.index)
    at = truth.set_index("item_id").loc[first.index, "actioned_at"]
    assert (at == first).all()
    violating = (truth["low_quality"] == 1) | (truth["harmful_interactions"] == 1)
    wrongful = truth["wrongful_enforcement"]
    assert (wrongful[wrongful.notna()] == (~violating)[wrongful.notna()].astype(int)).all()
    ids = {inc["id"] for inc in sim.incidents}
    assert set(truth["incident_id"].dropna()) == ids


def test_everything_happens_inside_the_window(sim: Simulation) -> None:
    start, end = sim.config.start, sim.config.end
    t = sim.tables
    for name, col in [
        ("items", "created_at"),
        ("events", "ts"),
        ("moderation", "ts"),
        ("appeals", "filed_at"),
        ("labels", "labeled_at"),
    ]:
        assert t[name][col].between(start, end, inclusive="left").all(), name
    created = t["items"].set_index("item_id")["created_at"]
    ev = t["events"]
    posted = _ns(created)[created.index.get_indexer(ev["item_id"])]
    assert (_ns(ev["ts"]) > posted).all()
    assert ev["ts"].is_monotonic_increasing
    resolved = t["appeals"]["resolved_at"]
    assert (resolved.dropna() > t["appeals"]["filed_at"][resolved.notna()]).all()
    pending = t["appeals"]["outcome"] == "pending"
    assert (pending == resolved.isna()).all()


def test_heavy_tails(sim: Simulation) -> None:
    views = sim.tables["events"].query("kind == 'view'").groupby("item_id").size()
    views = views.reindex(sim.tables["items"]["item_id"], fill_value=0).sort_values()[::-1]
    top1 = views.iloc[: len(views) // 100].sum() / views.sum()
    assert top1 > 0.15, top1  # the top 1% of items get a large share of the views
    assert views.iloc[0] > 50 * max(views.median(), 1)
    followers = sim.tables["creators"]["follower_count"]
    assert followers.quantile(0.999) > 100 * followers.median()
    n_events = len(sim.tables["events"]) / len(sim.tables["items"])
    assert 40 < n_events < 80, n_events


def test_daily_rhythm_in_local_time(sim: Simulation) -> None:
    items = sim.tables["items"]
    offset = items["region"].map({r: v[1] for r, v in REGIONS.items()})
    local_hour = (items["created_at"].dt.hour + items["created_at"].dt.minute / 60 + offset) % 24
    evening = local_hour.between(18, 22, inclusive="left").mean() / 4
    night = local_hour.between(2, 6, inclusive="left").mean() / 4
    assert evening > 4 * night
    # Views follow the viewers' day too, and decay after posting.
    ev = sim.tables["events"].query("kind == 'view'")
    region = items.set_index("item_id")["region"]
    ev_offset = region.loc[ev["item_id"]].map({r: v[1] for r, v in REGIONS.items()}).to_numpy()
    ev_hour = (ev["ts"].dt.hour.to_numpy() + ev_offset) % 24
    assert ((ev_hour >= 18) & (ev_hour < 22)).mean() > 2.5 * ((ev_hour >= 2) & (ev_hour < 6)).mean()
    created = items.set_index("item_id")["created_at"]
    age_h = (_ns(ev["ts"]) - _ns(created)[created.index.get_indexer(ev["item_id"])]) / 3.6e12
    assert np.median(age_h) < 12 and (age_h < 24).mean() > 2 * (age_h >= 48).mean()


def test_engagement_depends_on_quality(sim: Simulation) -> None:
    ev, truth = sim.tables["events"], sim.truth.set_index("item_id")
    views = ev[ev["kind"] == "view"]
    lq = truth.loc[views["item_id"], "low_quality"].to_numpy() == 1
    assert views["watch_frac"].between(0, 1).all()
    assert views["watch_frac"][lq].mean() < views["watch_frac"][~lq].mean() - 0.15
    assert ev.loc[ev["kind"] != "view", "watch_frac"].isna().all()
    assert views["user_id"].isna().mean() == pytest.approx(0.12, abs=0.02)
    assert ev.loc[ev["kind"] != "view", "user_id"].notna().all()
    counts = ev.groupby(["item_id", "kind"]).size().unstack(fill_value=0)
    counts = counts.reindex(truth.index, fill_value=0)
    reports_per_view = counts["report"] / counts["view"].clip(lower=1)
    bad = (truth["low_quality"] == 1) | (truth["harmful_interactions"] == 1)
    assert reports_per_view[bad].mean() > 5 * reports_per_view[~bad].mean()
    reasons = ev.loc[ev["kind"] == "report", "reason"]
    assert reasons.notna().all() and ev.loc[ev["kind"] != "report", "reason"].isna().all()


def test_comments_carry_text_and_abuse_lexicon_tracks_harm(sim: Simulation) -> None:
    assert all(set(c.split()) & ABUSE_LEXICON for c in TOXIC_COMMENTS)
    assert not any(set(c.split()) & ABUSE_LEXICON for c in CLEAN_COMMENTS + SPAM_COMMENTS)
    ev = sim.tables["events"]
    comments = ev[ev["kind"] == "comment"]
    assert comments["text"].notna().all() and ev.loc[ev["kind"] != "comment", "text"].isna().all()
    toxic = comments["text"].str.split().map(lambda words: bool(set(words) & ABUSE_LEXICON))
    harmful = sim.truth.set_index("item_id").loc[comments["item_id"], "harmful_interactions"]
    harmful = harmful.to_numpy() == 1
    assert toxic[harmful].mean() > 0.25
    assert toxic[~harmful].mean() < 0.05


def test_items_look_real(sim: Simulation) -> None:
    items = sim.tables["items"]
    assert items["duration_s"][items["format"] == "photo"].isna().all()
    assert items["duration_s"][items["format"] != "photo"].notna().all()
    live = items["duration_s"][items["format"] == "live"].median()
    video = items["duration_s"][items["format"] == "video"].median()
    assert live > 20 * video
    assert 0.02 < items["caption"].isna().mean() < 0.2
    spam = sim.truth["lq_kind"].eq("spam").to_numpy()
    spammy = items["caption"].str.contains(r"FREE|http", regex=True, na=False).to_numpy()
    assert spammy[spam].mean() > 0.6 and spammy[~spam].mean() < 0.03
    assert set(items["language"][items["region"] == "JP"]) == {"ja"}
    assert items["hashtags"].str.split().map(len).mean() > 1.5


def test_moderator_false_positives_and_appeals(sim: Simulation) -> None:
    truth = sim.truth.set_index("item_id")
    actioned = truth[truth["wrongful_enforcement"].notna()]
    assert 0.05 < actioned["wrongful_enforcement"].mean() < 0.35
    mod = sim.tables["moderation"]
    assert set(mod["source"]) == {"auto", "human"}
    assert set(mod["action"]) == {"remove", "restrict", "restore"}
    appeals = sim.tables["appeals"].join(truth["wrongful_enforcement"], on="item_id")
    filed = (
        appeals.groupby("wrongful_enforcement").size()
        / actioned.groupby("wrongful_enforcement").size()
    )
    assert filed[1] > 2 * filed[0]
    done = appeals[appeals["outcome"] != "pending"]
    overturned = done.assign(o=done["outcome"] == "overturned").groupby("wrongful_enforcement").o
    rate = overturned.mean()
    assert rate[1] > 0.55 and rate[0] < 0.25
    # Every overturn restores the item, at the moment the appeal was resolved.
    restores = mod[mod["action"] == "restore"].set_index("item_id")["ts"].sort_index()
    ov = done[done["outcome"] == "overturned"].set_index("item_id")["resolved_at"].sort_index()
    assert restores.index.tolist() == ov.index.tolist()
    assert (restores == ov).all()


def test_removed_items_stop_getting_events(sim: Simulation) -> None:
    mod, ev = sim.tables["moderation"], sim.tables["events"]
    removed = mod[mod["action"] == "remove"].groupby("item_id")["ts"].min()
    restored = set(mod.loc[mod["action"] == "restore", "item_id"])
    removed = removed[~removed.index.isin(restored)]
    sub = ev[ev["item_id"].isin(removed.index)]
    assert len(sub) > 0
    assert (_ns(sub["ts"]) < _ns(removed)[removed.index.get_indexer(sub["item_id"])]).all()


def test_labels_review_sample_and_appeal_outcomes(sim: Simulation) -> None:
    labels, truth = sim.tables["labels"], sim.truth.set_index("item_id")
    review = labels[labels["source"] == "review"]
    assert set(review["issue"]) == {"low_quality", "harmful_interactions"}
    n_reviewed = review["item_id"].nunique()
    assert n_reviewed / len(truth) == pytest.approx(sim.config.review_rate, abs=0.05)
    created = sim.tables["items"].set_index("item_id")["created_at"]
    posted = created.loc[review["item_id"]].reset_index(drop=True)
    delay = (review["labeled_at"].reset_index(drop=True) - posted).dt.total_seconds()
    assert delay.between(24 * 3600, 96 * 3600).all()
    lq = review[review["issue"] == "low_quality"]
    agree = (lq["label"].to_numpy() == truth.loc[lq["item_id"], "low_quality"].to_numpy()).mean()
    assert agree == pytest.approx(1 - sim.config.label_noise, abs=0.02)
    appeal = labels[labels["source"] == "appeal"]
    assert set(appeal["issue"]) == {"wrongful_enforcement"}
    resolved = sim.tables["appeals"].query("outcome != 'pending'")
    assert len(appeal) == len(resolved)
    merged = appeal.merge(resolved, on="item_id")
    assert ((merged["label"] == 1) == (merged["outcome"] == "overturned")).all()
    assert (merged["labeled_at"] == merged["resolved_at"]).all()


@pytest.mark.parametrize("n_items", [50, 400])
def test_tiny_runs_still_valid(n_items: int) -> None:
    sim = simulate(SimConfig(n_items=n_items, days=3, seed=2))
    assert validate_dataset(sim.tables) == []
    assert np.isfinite(sim.truth["p_low_quality"]).all()
