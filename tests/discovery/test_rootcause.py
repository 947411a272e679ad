"""Drill-down: the segment that carries the change ranks first; nested alarms merge into one incident."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from discovery.incidents import Episode, merge_episodes, severity_floors
from discovery.rootcause import UnitFrame, drilldown, js_term, top_segment
from discovery.signals import ItemDimensions

START = pd.Timestamp("2026-03-01", tz="UTC")
CHANGE = START + pd.Timedelta(days=10)


def _unit_frame(random_state: int = 0) -> UnitFrame:
    """Items over 14 days; from day 10 the rate is five times higher in region=BR × format=live."""
    rng = np.random.default_rng(random_state)
    n = 40_000
    ts = (START + pd.to_timedelta(rng.uniform(0, 14 * 24, n), unit="h")).floor("h")
    region = rng.choice(["US", "BR", "IN"], n, p=[0.5, 0.3, 0.2])
    fmt = rng.choice(["video", "photo", "live"], n, p=[0.6, 0.25, 0.15])
    category = rng.choice(["gaming", "food"], n)
    hot = (ts >= CHANGE) & (region == "BR") & (fmt == "live")
    num = (rng.random(n) < np.where(hot, 0.25, 0.05)).astype(float)
    ids = [f"i{i}" for i in range(n)]
    items = pd.DataFrame({"item_id": ids, "region": region, "format": fmt, "category": category})
    hashtags = pd.DataFrame({"item_id": ids[:100], "hashtag": "fyp"})
    units = pd.DataFrame({"item_id": ids, "ts": ts, "num": num, "den": 1.0})
    return UnitFrame.build(units, ItemDimensions(items=items, hashtags=hashtags))


def test_js_term_is_zero_without_change_and_grows_with_it() -> None:
    assert js_term(np.array([0.2]), np.array([0.2]))[0] == 0.0
    small, large = js_term(np.array([0.1, 0.1]), np.array([0.15, 0.5]))
    assert 0 < small < large


def test_drilldown_ranks_the_planted_pair_first() -> None:
    uf = _unit_frame()
    table = drilldown(uf, CHANGE, CHANGE + pd.Timedelta(days=4))
    assert top_segment(table) == (("region", "BR"), ("format", "live"))
    first = table.iloc[0]
    assert first["ep"] > 0.5
    assert first["observed_rate"] > 2 * first["baseline_rate"]
    # An unrelated dimension holds its share of the excess, but its share did not move.
    food = table[table["segment"].map(lambda s: s == (("category", "food"),))]
    assert food.empty or food["surprise"].iloc[0] < 0.1 * first["surprise"]


def test_drilldown_without_a_change_explains_nothing_strongly() -> None:
    uf = _unit_frame()
    quiet = drilldown(uf, START + pd.Timedelta(days=7), START + pd.Timedelta(days=9))
    assert quiet["surprise"].max() < 0.01


def test_nested_alarms_merge_into_one_incident_on_the_specific_segment() -> None:
    uf = _unit_frame()
    end = CHANGE + pd.Timedelta(days=4)

    def ep(segment, hours):
        return Episode(
            signal="s",
            issue="low_quality",
            scale="daily",
            segment=segment,
            start=CHANGE,
            detected_at=CHANGE + pd.Timedelta(hours=hours),
            end=end,
            observed=100,
            expected=40,
            den=1000,
            pvalue=1e-8,
        )

    episodes = [
        ep((("region", "BR"),), 24),
        ep((("format", "live"),), 12),
        ep((("region", "BR"), ("format", "live")), 30),
        ep((("region", "US"), ("category", "food")), 24),  # conflicts with region=BR: separate
    ]
    incidents = merge_episodes(episodes, {"s": uf}, min_items=1)
    segments = [inc.segment for inc in incidents]
    assert (("region", "BR"), ("format", "live")) in segments
    merged = next(i for i in incidents if i.segment == (("region", "BR"), ("format", "live")))
    # Reported once the evidence since the start reaches the floor (no look-ahead), never
    # before the earliest alarm of the merged episodes.
    assert merged.evidence["first_alarm"] == (CHANGE + pd.Timedelta(hours=12)).isoformat()
    assert CHANGE + pd.Timedelta(hours=12) < merged.detected_at <= CHANGE + pd.Timedelta(hours=24)
    floorless = merge_episodes(episodes, {"s": uf}, min_items=1, min_severity=0.0)
    first = next(i for i in floorless if i.segment == merged.segment)
    assert first.detected_at == CHANGE + pd.Timedelta(hours=12)  # the earliest alarm
    assert len(merged.episodes) == 3
    assert merged.evidence["rate_ratio"] > 2
    assert merged.evidence["contribution"] > 0.5


def _waves(*waves: tuple[int, str | None, str]) -> UnitFrame:
    """14 days of items at a 5 % issue rate, 25 % from day `d` in each wave's (region or any,
    format)."""
    rng = np.random.default_rng(1)
    n = 40_000
    ts = (START + pd.to_timedelta(rng.uniform(0, 14 * 24, n), unit="h")).floor("h")
    region = rng.choice(["US", "BR", "IN"], n, p=[0.5, 0.3, 0.2])
    fmt = rng.choice(["video", "photo", "live"], n, p=[0.6, 0.25, 0.15])
    hot = np.zeros(n, dtype=bool)
    for day, reg, form in waves:
        wave = (ts >= START + pd.Timedelta(days=day)) & (fmt == form)
        hot |= wave if reg is None else wave & (region == reg)
    num = (rng.random(n) < np.where(hot, 0.25, 0.05)).astype(float)
    ids = [f"i{i}" for i in range(n)]
    items = pd.DataFrame({"item_id": ids, "region": region, "format": fmt, "category": "food"})
    hashtags = pd.DataFrame({"item_id": ids[:100], "hashtag": "fyp"})
    units = pd.DataFrame({"item_id": ids, "ts": ts, "num": num, "den": 1.0})
    return UnitFrame.build(units, ItemDimensions(items=items, hashtags=hashtags))


def _episode(
    segment,
    day: int = 0,
    *,
    start: pd.Timestamp | None = None,
    scale: str = "daily",
    detected_after: pd.Timedelta = pd.Timedelta(hours=12),
    end: pd.Timestamp = START + pd.Timedelta(days=14),
) -> Episode:
    """One low_quality episode of signal "s": from `start` (default day `day` after START)."""
    start = START + pd.Timedelta(days=day) if start is None else start
    return Episode(
        signal="s",
        issue="low_quality",
        scale=scale,
        segment=segment,
        start=start,
        detected_at=start + detected_after,
        end=end,
        observed=100,
        expected=40,
        den=1000,
        pvalue=1e-8,
    )


BR_LIVE = (("region", "BR"), ("format", "live"))
IN_PHOTO = (("region", "IN"), ("format", "photo"))


def test_a_new_wave_is_not_chained_into_a_running_incident_by_a_broad_segment() -> None:
    # A second, unrelated wave from day 10 also lifts the whole platform's rate a little, so
    # the empty segment alarms from day 10, nested in both waves. Episode by episode it would
    # join the running (hotter) first incident and carry the second wave in with it.
    uf = _waves((4, "BR", "live"), (10, "IN", "photo"))
    episodes = [_episode(BR_LIVE, 4), _episode((), 10), _episode(IN_PHOTO, 10)]
    incidents = merge_episodes(episodes, {"s": uf}, min_items=1, min_severity=0.0)
    by_segment = {inc.segment: inc for inc in incidents}
    assert set(by_segment) == {BR_LIVE, IN_PHOTO}
    assert by_segment[IN_PHOTO].start == START + pd.Timedelta(days=10)


def test_a_later_alarm_inside_a_running_incident_is_folded_into_it() -> None:
    # All live items run hot from day 8; region=BR × live crosses its own threshold only on
    # day 10, no hotter than live as a whole: a spill-over, not a new incident.
    uf = _waves((8, None, "live"))
    live = (("format", "live"),)
    episodes = [_episode(live, 8), _episode(BR_LIVE, 10)]
    incidents = merge_episodes(episodes, {"s": uf}, min_items=1)
    assert [inc.segment for inc in incidents] == [live]
    assert [s["segment"] for s in incidents[0].evidence["spillovers"]] == ["region=BR,format=live"]
    assert len(incidents[0].episodes) == 2


GAMING = (("category", "gaming"),)
MINECRAFT = (("hashtag", "minecraft"),)
LIFEHACK = (("hashtag", "lifehack"),)


def _tagged(gaming_rate: float, *, minecraft_rate: float | None = None, lifehack: bool = False):
    """14 days of items at a 5 % issue rate: category=gaming at `gaming_rate` from day 8,
    gaming items tagged minecraft (a fifth of them, and a few other items) at `minecraft_rate`
    from day 10 if given, and food items tagged lifehack at 30 % from day 10 if `lifehack`."""
    rng = np.random.default_rng(2)
    n = 40_000
    ts = (START + pd.to_timedelta(rng.uniform(0, 14 * 24, n), unit="h")).floor("h")
    category = rng.choice(["gaming", "food", "music"], n, p=[0.3, 0.4, 0.3])
    gaming = category == "gaming"
    minecraft = (gaming & (rng.random(n) < 0.2)) | (~gaming & (rng.random(n) < 0.005))
    lifehacks = (category == "food") & (rng.random(n) < 0.2)
    rate = np.full(n, 0.05)
    rate[gaming & (ts >= START + pd.Timedelta(days=8))] = gaming_rate
    day10 = ts >= START + pd.Timedelta(days=10)
    if minecraft_rate is not None:
        rate[gaming & minecraft & day10] = minecraft_rate
    if lifehack:
        rate[lifehacks & day10] = 0.3
    num = (rng.random(n) < rate).astype(float)
    ids = np.array([f"i{i}" for i in range(n)])
    items = pd.DataFrame({"item_id": ids, "category": category, "region": "US"})
    hashtags = pd.concat(
        [
            pd.DataFrame({"item_id": ids[minecraft], "hashtag": "minecraft"}),
            pd.DataFrame({"item_id": ids[lifehacks], "hashtag": "lifehack"}),
        ]
    )
    units = pd.DataFrame({"item_id": ids, "ts": ts, "num": num, "den": 1.0})
    return UnitFrame.build(units, ItemDimensions(items=items, hashtags=hashtags))


def test_a_hashtag_spillover_of_a_category_incident_is_folded_into_it() -> None:
    # An abuse wave in category=gaming from day 8; hashtag=minecraft (almost only on gaming
    # items, so the same items) crosses its threshold on day 10, no hotter than gaming as a
    # whole. Segment by segment the two do not nest (category vs hashtag): the fold rests on
    # the items they share.
    uf = _tagged(0.25)
    episodes = [_episode(GAMING, 8), _episode(MINECRAFT, 10)]
    incidents = merge_episodes(episodes, {"s": uf}, min_items=1)
    assert [inc.segment for inc in incidents] == [GAMING]
    (spill,) = incidents[0].evidence["spillovers"]
    assert spill["segment"] == "hashtag=minecraft"
    assert spill["shared_excess"] > 0.9
    assert spill["start"] == (START + pd.Timedelta(days=10)).isoformat()
    assert len(incidents[0].episodes) == 2


def test_an_unrelated_incident_during_a_running_one_stays_separate() -> None:
    # A spam wave on food items tagged lifehack from day 10, during the gaming wave: same issue,
    # overlapping time, segments that do not conflict, but no items in common.
    uf = _tagged(0.25, lifehack=True)
    episodes = [_episode(GAMING, 8), _episode(LIFEHACK, 10)]
    incidents = merge_episodes(episodes, {"s": uf}, min_items=1)
    assert sorted(inc.segment for inc in incidents) == sorted([GAMING, LIFEHACK])
    assert all("spillovers" not in inc.evidence for inc in incidents)


def test_a_hotter_new_wave_nested_in_a_running_incident_stays_separate() -> None:
    # gaming runs at twice its baseline from day 8; from day 10 its minecraft items run at
    # eight times: far more than the gaming wave explains, so a new incident of its own.
    uf = _tagged(0.10, minecraft_rate=0.40)
    episodes = [_episode(GAMING, 8), _episode(MINECRAFT, 10)]
    incidents = merge_episodes(episodes, {"s": uf}, min_items=1)
    assert len(incidents) == 2
    assert incidents[1].start == START + pd.Timedelta(days=10)
    assert "spillovers" not in incidents[0].evidence


def test_severity_floors_follow_the_size_of_each_scanned_family() -> None:
    """Bonferroni at family-wise alpha/2 within an issue's singles and within its pairs."""
    scanned = {("spam", False): 50, ("spam", True): 500, ("misfire", False): 12}
    floors = severity_floors(scanned, 0.05)
    assert floors[("spam", False)] == pytest.approx(np.log10(2 * 50 / 0.05))
    assert floors[("spam", True)] == pytest.approx(np.log10(2 * 500 / 0.05))
    # An issue scanned over a dozen segments (one family) is held to a lower bar.
    assert floors[("misfire", False)] == pytest.approx(np.log10(12 / 0.05))
    assert floors[("misfire", False)] < floors[("spam", False)] < floors[("spam", True)]


def test_the_floor_of_the_incident_issue_and_family_sets_when_it_is_reported() -> None:
    """A lower floor (an issue scanned over fewer segments) reports the same incident sooner;
    a floor above its whole-window evidence drops it."""
    uf = _unit_frame()
    end = CHANGE + pd.Timedelta(days=4)
    pair = (("region", "BR"), ("format", "live"))
    episodes = [
        _episode(pair, start=CHANGE, scale="hourly", detected_after=pd.Timedelta(hours=3), end=end)
    ]

    def reported(floor: float) -> list:
        return merge_episodes(
            episodes,
            {"s": uf},
            min_items=1,
            floors={("low_quality", True): floor, ("low_quality", False): 99.0},
        )

    (low,) = reported(2.0)
    (high,) = reported(8.0)
    assert low.segment == high.segment == pair  # the pair's floor applies, not the singles'
    assert low.evidence["floor"] == 2.0
    assert low.detected_at < high.detected_at
    assert reported(low.severity + 1.0) == []


def _plain_mask(uf: UnitFrame, segment) -> np.ndarray:
    """The segment's rows matched column by column in the frame (hashtags by item), apart
    from UnitFrame's own row matching, which masks and counts share."""
    out = np.ones(len(uf.frame), dtype=bool)
    for dim, value in segment:
        if dim == "hashtag":
            tags = uf.dims.hashtags
            tagged = tags.loc[tags["hashtag"] == value, "item_id"]
            out &= uf.frame["item_id"].isin(tagged).to_numpy()
        elif dim in uf.frame.columns:
            out &= (uf.frame[dim] == value).to_numpy()
        else:
            out[:] = False
    return out


@pytest.mark.parametrize("platform_den", [False, True])
def test_counts_equal_the_masked_sums_of_the_window(platform_den: bool) -> None:
    """Counts come from running sums per segment; they must be the plain masked sums of
    the window's rows, for any segment (hashtag included), window and edge. The mask is
    matched here from the frame, so a wrong row rule in UnitFrame cannot pass as its own
    reference."""
    base = _unit_frame(3)
    uf = UnitFrame(base.frame, base.dims, platform_den=platform_den)
    rng = np.random.default_rng(0)
    segments = [
        (),
        (("region", "BR"),),
        (("region", "BR"), ("format", "live")),
        (("hashtag", "fyp"),),
        (("hashtag", "fyp"), ("region", "US")),
        (("category", "food"), ("format", "photo"), ("region", "IN")),
        (("region", "nowhere"),),
        (("no_such_dimension", "x"),),
    ]
    plain = {seg: _plain_mask(uf, seg) for seg in segments}
    for seg in segments:
        np.testing.assert_array_equal(uf.mask(seg), plain[seg], err_msg=str(seg))
    ts = uf.frame["ts"]
    for _ in range(60):
        a, b = sorted(START + pd.to_timedelta(rng.uniform(-24, 15 * 24, 2), unit="h"))
        window = ((ts >= a) & (ts < b)).to_numpy()
        for seg in segments:
            m = window & plain[seg]
            want_den = uf.frame["den"][window].sum() if platform_den else uf.frame["den"][m].sum()
            assert uf.counts(seg, a, b) == (uf.frame["num"][m].sum(), want_den), (seg, a, b)


def test_cached_masks_and_indexes_stay_within_their_byte_budget(monkeypatch) -> None:
    import discovery.rootcause as rc

    uf = _unit_frame()
    monkeypatch.setattr(rc, "CACHE_BYTES", 20 * len(uf.frame))  # a handful of masks
    end = START + pd.Timedelta(days=14)
    for k in range(200):
        uf.counts((("category", f"c{k}"),), START, end)  # new segments, each a mask and index
    kept = sum(m.nbytes for m in uf._masks.values())
    kept += sum(a.nbytes for idx in uf._indexes.values() for a in idx if a is not None)
    assert kept <= 20 * len(uf.frame) and uf._cached_bytes == kept
    assert uf.counts((("region", "BR"),), START, end)[1] > 0  # past the budget: still counted
