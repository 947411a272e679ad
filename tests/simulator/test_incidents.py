"""Planted incidents really move the rates they should, where and when they should."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator import Simulation

DAY = pd.Timedelta(days=1)


def _segment(items: pd.DataFrame, segment: dict[str, str]) -> np.ndarray:
    # Matched independently of the simulator's own code: hashtags by token, others by column.
    mask = np.ones(len(items), bool)
    for dim, value in segment.items():
        if dim == "hashtag":
            mask &= items["hashtags"].str.split().map(lambda tags, v=value: v in tags).to_numpy()
        else:
            mask &= (items[dim] == value).fillna(False).to_numpy()
    return mask


def _z(a: np.ndarray, b: np.ndarray) -> float:
    """Two-proportion z statistic of a vs b."""
    pooled = (a.sum() + b.sum()) / (len(a) + len(b))
    se = np.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)))
    return float((a.mean() - b.mean()) / se)


def _series(sim: Simulation, inc: dict) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """(time, value, applicable) per item for the incident's issue."""
    items, truth = sim.tables["items"], sim.truth
    if inc["issue"] == "wrongful_enforcement":
        value = truth["wrongful_enforcement"]
        return truth["actioned_at"], value.fillna(0).to_numpy(float), value.notna().to_numpy()
    return items["created_at"], truth[inc["issue"]].to_numpy(float), np.ones(len(items), bool)


@pytest.fixture(scope="module")
def windows(sim: Simulation) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for inc in sim.incidents:
        t, value, ok = _series(sim, inc)
        seg = _segment(sim.tables["items"], inc["segment"]) & ok
        start = pd.Timestamp(inc["start"])
        end = pd.Timestamp(inc["end"]) if inc["end"] else sim.config.end

        def in_(lo: pd.Timestamp, hi: pd.Timestamp, t: pd.Series = t) -> np.ndarray:
            return ((t >= lo) & (t < hi)).to_numpy()

        out[inc["id"]] = {
            "before": value[seg & in_(start - 7 * DAY, start)],
            "during": value[seg & in_(start, end)],
            "first_day": value[seg & in_(start, start + DAY)],
            "outside": value[~seg & ok & in_(start, end)],
            "after": value[seg & in_(end, sim.config.end)],
        }
    return out


def test_default_incidents_cover_the_three_kinds(sim: Simulation) -> None:
    kinds = {inc["kind"] for inc in sim.incidents}
    assert {"spam_campaign", "enforcement_misfire", "abuse_surge"} <= kinds
    days = sim.config.days
    for inc in sim.incidents:
        assert days / 2 <= inc["start_day"] < days
        assert inc["n_items"] > 0
    assert any(inc["end"] is not None for inc in sim.incidents)


@pytest.mark.parametrize(
    "incident_id", ["spam-lifehack", "misfire-us-video", "abuse-gaming", "spam-audio"]
)
def test_incident_moves_its_rate_in_its_segment(windows: dict, incident_id: str) -> None:
    w = windows[incident_id]
    during, before, outside = w["during"], w["before"], w["outside"]
    assert len(during) >= 30 and len(before) >= 30
    # Up against its own past and against the rest of the platform at the same time.
    assert during.mean() > 2 * before.mean()
    assert _z(during, before) > 3
    assert during.mean() > 2 * outside.mean()
    assert _z(during, outside) > 3
    # Visible from the first day on: what a 24 h detector gets to see.
    assert w["first_day"].mean() > 1.5 * before.mean()


def test_the_fixed_misfire_goes_back_to_normal(windows: dict) -> None:
    w = windows["misfire-us-video"]
    assert len(w["after"]) >= 20
    assert w["after"].mean() < w["during"].mean() / 2
    assert _z(w["during"], w["after"]) > 3


def test_misfire_shows_up_in_overturned_appeals(sim: Simulation) -> None:
    inc = next(i for i in sim.incidents if i["kind"] == "enforcement_misfire")
    items = sim.tables["items"].set_index("item_id")
    appeals = sim.tables["appeals"].join(items[["region", "format"]], on="item_id")
    seg = (appeals["region"] == "US") & (appeals["format"] == "video")
    start, end = pd.Timestamp(inc["start"]), pd.Timestamp(inc["end"])
    overturned = appeals["outcome"] == "overturned"
    filed = appeals["filed_at"]
    days_during = (end - start) / DAY
    per_day_during = (seg & overturned & (filed >= start) & (filed < end)).sum() / days_during
    per_day_before = (seg & overturned & (filed >= start - 7 * DAY) & (filed < start)).sum() / 7
    assert per_day_during > 2.5 * max(per_day_before, 0.1)
    truth = sim.truth.set_index("item_id")
    hit = truth.index[truth["incident_id"] == inc["id"]]
    assert (truth.loc[hit, "wrongful_enforcement"] == 1).all()
    mod = sim.tables["moderation"]
    policies = mod[mod["item_id"].isin(hit) & (mod["action"] != "restore")]["policy"]
    assert (policies == inc["policy"]).all()


def test_spam_campaigns_come_from_new_spam_accounts(sim: Simulation) -> None:
    items = sim.tables["items"].set_index("item_id")
    creators = sim.tables["creators"].set_index("creator_id")
    truth = sim.truth.set_index("item_id")
    for inc in (i for i in sim.incidents if i["kind"] == "spam_campaign"):
        planted = truth.index[truth["incident_id"] == inc["id"]]
        sub = items.loc[planted]
        assert _segment(sub.reset_index(), inc["segment"]).all()
        start = pd.Timestamp(inc["start"])
        end = pd.Timestamp(inc["end"]) if inc["end"] else sim.config.end
        assert sub["created_at"].between(start, end, inclusive="left").all()
        born = creators.loc[sub["creator_id"].unique(), "created_at"]
        assert born.between(start - 3 * DAY, start).all()
        assert truth.loc[planted, "spam_creator"].all()
        assert truth.loc[planted, "low_quality"].mean() > 0.8
        # One script: the planted captions share a handful of near-identical texts.
        assert sub["caption"].str.extract(r"^(FREE [^!]+!!!)")[0].nunique() == 1
