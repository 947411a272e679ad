"""Issue-rate signals: per issue, (numerator, denominator) counts per item and hour.

Every signal is reduced to "units": rows of (item_id, ts, num, den) where `ts` is the hour the
counts belong to. Segments come from the item (region, format, ...), so any segment's series is
a group-by of units joined with item dimensions. With a scores file the numerator is "flagged by
the model"; without one it is a raw proxy from reports, comments, moderation and appeals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from features.schema import ABUSE_LEXICON

# The segment dimensions, in the fixed order used for segment keys.
DIMENSIONS: tuple[str, ...] = (
    "region",
    "format",
    "category",
    "language",
    "creator_tier",
    "hashtag",
    "audio_id",
)
TIER_EDGES: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
TIER_LABELS: tuple[str, ...] = ("<1k", "1k-10k", "10k-100k", "100k-1M", "1M+")
SPAM_REASONS = ("spam", "misleading")
ABUSE_REASONS = ("harassment", "hate")
ENFORCEMENT_ACTIONS = ("remove", "restrict")

Test = Literal["binomial", "poisson"]


@dataclass(frozen=True)
class Signal:
    """One issue-rate signal: its units and how its numerator is distributed given the rate."""

    name: str
    issue: str
    test: Test
    description: str
    units: pd.DataFrame = field(repr=False)  # item_id, ts (hour, UTC), num, den
    # Hours after a bucket ends before its counts are complete (cohort signals that watch each
    # item for a while after posting); added to detected_at.
    lag_h: float = 0.0
    # Count signals: every segment's denominator is the whole platform's posted items, so a
    # segment's rate is its count per platform item (volume surges of flagged items show).
    platform_den: bool = False


@dataclass(frozen=True)
class ItemDimensions:
    """Segment attributes per item: one row per item, and hashtags exploded (frequent ones)."""

    items: pd.DataFrame  # item_id + every dimension but hashtag (missing: in no segment)
    hashtags: pd.DataFrame  # item_id, hashtag (only frequent hashtags)

    @property
    def dimensions(self) -> tuple[str, ...]:
        present = set(self.items.columns)
        if len(self.hashtags):
            present.add("hashtag")
        return tuple(d for d in DIMENSIONS if d in present)


def creator_tier(follower_count: pd.Series) -> pd.Series:
    """Bucket follower counts into tiers (<1k ... 1M+); unknown stays missing."""
    codes = np.searchsorted(np.asarray(TIER_EDGES), follower_count.to_numpy(dtype=float), "right")
    out = pd.Series(
        np.asarray(TIER_LABELS, dtype=object)[np.minimum(codes, 4)], index=follower_count.index
    )
    return out.where(follower_count.notna()).astype("str")


def split_hashtags(hashtags: pd.Series) -> pd.DataFrame:
    """Explode space-separated hashtags into (row index, lower-cased tag) pairs, one per distinct tag."""
    tags = hashtags.fillna("").astype("str").str.lower().str.split()
    exploded = tags.explode().dropna()
    exploded = exploded[exploded.str.len() > 0]
    frame = pd.DataFrame({"row": exploded.index, "hashtag": exploded.to_numpy()})
    return frame.drop_duplicates()


def item_dimensions(
    tables: Mapping[str, pd.DataFrame],
    *,
    min_items: int = 30,
    max_hashtags: int = 60,
    max_audio: int = 60,
) -> ItemDimensions:
    """Segment attributes of every item; rare hashtags and sounds are no segment of their own."""
    items = tables["items"]
    out = pd.DataFrame({"item_id": items["item_id"].astype("str").to_numpy()})
    for dim in ("region", "format", "category", "language"):
        if dim in items.columns:
            out[dim] = items[dim].astype("str").fillna("unknown").to_numpy()
    creators = tables.get("creators")
    if creators is not None and "follower_count" in creators.columns:
        followers = items["creator_id"].map(creators.set_index("creator_id")["follower_count"])
        out["creator_tier"] = creator_tier(followers).fillna("unknown").to_numpy()
    if "audio_id" in items.columns:
        audio = items["audio_id"].astype("str")
        counts = audio.dropna().value_counts()
        frequent = set(counts[counts >= min_items].index[:max_audio])
        # Rare sounds belong to no audio segment (a pooled "other" is no root cause).
        out["audio_id"] = audio.where(audio.isin(frequent)).to_numpy()
    if "hashtags" in items.columns:
        pairs = split_hashtags(items["hashtags"].reset_index(drop=True))
        counts = pairs["hashtag"].value_counts()
        frequent = set(counts[counts >= min_items].index[:max_hashtags])
        pairs = pairs[pairs["hashtag"].isin(frequent)]
        hashtags = pd.DataFrame(
            {
                "item_id": out["item_id"].to_numpy()[pairs["row"].to_numpy()],
                "hashtag": pairs["hashtag"],
            }
        ).reset_index(drop=True)
    else:
        hashtags = pd.DataFrame(
            {"item_id": pd.Series([], dtype="str"), "hashtag": pd.Series([], dtype="str")}
        )
    return ItemDimensions(items=out, hashtags=hashtags)


def _hour(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, utc=True).dt.floor("h")


def _units(
    item_id: pd.Series, ts: pd.Series, num: pd.Series | np.ndarray, den: pd.Series | np.ndarray
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "item_id": item_id.astype("str").to_numpy(),
            "ts": _hour(ts).to_numpy(),
            "num": np.asarray(num, dtype=float),
            "den": np.asarray(den, dtype=float),
        }
    )
    frame = frame[frame["ts"].notna()]
    return frame.groupby(["item_id", "ts"], as_index=False, sort=False)[["num", "den"]].sum()


_TOKEN = re.compile(r"[a-z']+")


def is_toxic(text: pd.Series) -> np.ndarray:
    """Comments whose text contains a word of the shared abuse lexicon."""
    lowered = text.fillna("").astype("str").str.lower()
    pattern = r"\b(?:" + "|".join(sorted(ABUSE_LEXICON)) + r")\b"
    return lowered.str.contains(pattern, regex=True).to_numpy(dtype=bool)


def _flag_sets(flagged: pd.Series) -> list[frozenset[str]]:
    out: list[frozenset[str]] = []
    for value in flagged:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append(frozenset())
        elif isinstance(value, str):
            out.append(frozenset(t for t in re.split(r"[\s,;|]+", value) if t))
        else:
            out.append(frozenset(str(v) for v in value))
    return out


def score_signals(
    tables: Mapping[str, pd.DataFrame],
    scores: pd.DataFrame,
    *,
    threshold: float = 0.5,
    post_min_probability: float | None = None,
) -> list[Signal]:
    """Model-based signals: share of items (post anchor) or actions (moderation anchor) flagged.

    Post-anchored items count once, at their first scoring (earliest horizon), as flagged if
    that scoring flagged them and, given `post_min_probability`, gave the issue at least that
    probability; moderation-anchored rows count at the action time.
    """
    required = {"item_id", "as_of", "anchor"}
    missing = required - set(scores.columns)
    if missing:
        raise ValueError(
            f"scores file lacks columns {sorted(missing)}; expected item_id, as_of, anchor, one column per issue"
        )
    reserved = {"item_id", "as_of", "anchor", "flagged", "disabled", "horizon_h", "model_version"}
    issues = [
        c for c in scores.columns if c not in reserved and pd.api.types.is_numeric_dtype(scores[c])
    ]
    if not issues:
        raise ValueError(
            "scores file has no probability columns (one numeric column per issue expected)"
        )
    items_frame = tables["items"]
    known = scores["item_id"].astype("str").isin(items_frame["item_id"].astype("str"))
    if len(scores) and not known.any():
        # every unit would be dropped for lack of a segment: an empty, "nothing found" report
        raise ValueError(
            f"none of the scores file's {scores['item_id'].nunique():,} items (e.g. "
            f"{str(scores['item_id'].iloc[0])!r}) is an item of the dataset (e.g. "
            f"{str(items_frame['item_id'].iloc[0]) if len(items_frame) else 'none'!r}): "
            "were the scores made from another dataset?"
        )
    flags = _flag_sets(scores["flagged"]) if "flagged" in scores.columns else None
    created = pd.to_datetime(items_frame["created_at"], utc=True)
    signals: list[Signal] = []
    for issue in issues:
        rows = scores[scores[issue].notna()]
        if rows.empty:
            continue
        if flags is not None:
            hit = np.array(
                [issue in flags[i] for i in np.flatnonzero(scores[issue].notna())], dtype=float
            )
        else:
            hit = (rows[issue].to_numpy(dtype=float) >= threshold).astype(float)
        if post_min_probability is not None:
            # A review-capacity threshold flags a fixed volume (200 a day on 700 posts) where
            # the model is barely sure, so the flagged share follows its priors (category,
            # creator) and hardly moves when a segment's true rate does. Discovery counts the
            # items the (calibrated) model holds more likely than not to have the issue.
            weak = (rows["anchor"] == "post").to_numpy() & (
                rows[issue].to_numpy(dtype=float) < post_min_probability
            )
            hit = np.where(weak, 0.0, hit)
        rows = rows.assign(_hit=hit, item_id=rows["item_id"].astype("str"))
        post = rows[rows["anchor"] == "post"]
        mod = rows[rows["anchor"] != "post"]
        parts: list[pd.DataFrame] = []
        if len(post):
            # The first scoring of each item (its earliest horizon), counted when it happened:
            # later horizons know more but would put tomorrow's knowledge in today's bucket.
            first = post.sort_values("as_of", kind="stable").drop_duplicates("item_id")
            parts.append(
                _units(
                    first["item_id"], first["as_of"], first["_hit"].to_numpy(), np.ones(len(first))
                )
            )
        if len(post):
            units = pd.concat(parts, ignore_index=True)
            test: Test = "binomial"
            what = f"share of posted items the model flags for {issue}"
            # A campaign adds flagged items on top of a segment's organic ones: their count
            # rises far more than their share (which the extra items' own volume dilutes).
            # Only for issues campaigns bring (spam rings post new items; an abuse wave hits
            # existing items' comments): elsewhere a campaign's volume would move every
            # issue's count (the model flags some spam items as harmful too).
            if issue in COUNT_ISSUES:
                signals.append(
                    Signal(
                        name=f"{issue}:flagged_count",
                        issue=issue,
                        test="poisson",
                        description=f"posted items the model flags for {issue}, per item posted "
                        "on the whole platform",
                        units=units,
                        platform_den=True,
                    )
                )
        else:
            # Action-anchored issues: flagged actions per posted item. A misfiring rule adds
            # actions, so the share among actions moves far less than the volume.
            flagged_rows = mod[mod["_hit"] > 0]
            units = _per_item(items_frame, created, flagged_rows["item_id"], flagged_rows["as_of"])
            test = "poisson"
            what = f"actions the model flags for {issue}, per posted item"
            # A misfiring rule cites one policy: split by the policy each flagged action
            # cites, its count jumps far above that policy's own (small) baseline.
            policies = first_action_policy(tables)
            if len(policies) and len(flagged_rows):
                cited = flagged_rows["item_id"].map(policies)
                for policy, rows_p in flagged_rows.groupby(cited.to_numpy(), sort=True):
                    if len(rows_p) < MIN_POLICY_ACTIONS:
                        continue
                    signals.append(
                        Signal(
                            name=f"{issue}:flagged:{policy}",
                            issue=issue,
                            test="poisson",
                            description=f"{what}, citing policy {policy}",
                            units=_per_item(
                                items_frame, created, rows_p["item_id"], rows_p["as_of"]
                            ),
                        )
                    )
        signals.append(
            Signal(name=f"{issue}:flagged", issue=issue, test=test, description=what, units=units)
        )
    return signals


COUNT_ISSUES = ("low_quality",)  # issues that also get a count signal (campaigns add items)
MIN_POLICY_ACTIONS = 30  # a policy needs this many flagged actions to get its own signal


def first_action_policy(tables: Mapping[str, pd.DataFrame]) -> pd.Series:
    """The policy cited by each item's first remove/restrict action (item_id -> policy)."""
    moderation = tables.get("moderation")
    if moderation is None or not len(moderation) or "policy" not in moderation.columns:
        return pd.Series([], dtype="str")
    actions = moderation[moderation["action"].isin(ENFORCEMENT_ACTIONS)]
    actions = actions.sort_values("ts", kind="stable").drop_duplicates("item_id", keep="first")
    return pd.Series(
        actions["policy"].astype("str").str.lower().to_numpy(),
        index=actions["item_id"].astype("str").to_numpy(),
    )


LOW_QUALITY_POLICIES = ("spam", "misinformation")
COMMENT_WINDOW_H = 6.0
ABUSE_POLICIES = ("harassment", "hate_speech", "hate")


def _per_item(
    items: pd.DataFrame, created: pd.Series, item_id: pd.Series, ts: pd.Series
) -> pd.DataFrame:
    """Units of an event count per item: numerator at the events' hours, denominator 1 per
    item at its posting hour (a rate of events per posted item, both known in real time)."""
    ids = items["item_id"].astype("str")
    parts = [_units(ids, created, np.zeros(len(items)), np.ones(len(items)))]
    if len(item_id):
        parts.append(_units(item_id, ts, np.ones(len(item_id)), np.zeros(len(item_id))))
    return pd.concat(parts, ignore_index=True)


def raw_signals(tables: Mapping[str, pd.DataFrame]) -> list[Signal]:
    """Proxy signals from raw tables when no scores are given (real-time: counted at event time).

    low_quality: auto-moderation actions citing spam/misinformation policies per posted item;
    harmful_interactions: share of new items with an abusive comment in their first hours;
    wrongful_enforcement: auto-moderation actions citing other policies per posted item (a
    misfiring rule shows up as enforcement volume first; appeals come days later).
    """
    items = tables["items"]
    created = pd.to_datetime(items["created_at"], utc=True)
    created_by_item = pd.Series(created.to_numpy(), index=items["item_id"].astype("str"))
    signals: list[Signal] = []
    moderation = tables.get("moderation")
    if moderation is not None and len(moderation):
        actions = moderation[
            moderation["action"].isin(ENFORCEMENT_ACTIONS) & (moderation["source"] == "auto")
        ]
        actions = actions.sort_values("ts").drop_duplicates("item_id", keep="first")
        policy = actions["policy"].astype("str").str.lower()
        lq = actions[policy.isin(LOW_QUALITY_POLICIES).to_numpy()]
        other = actions[(~policy.isin(LOW_QUALITY_POLICIES)).to_numpy()]
        signals.append(
            Signal(
                name="low_quality:spam_actions",
                issue="low_quality",
                test="poisson",
                description="auto-moderation actions citing spam or misinformation, per posted item",
                units=_per_item(items, created, lq["item_id"], lq["ts"]),
            )
        )
        signals.append(
            Signal(
                name="wrongful_enforcement:auto_actions",
                issue="wrongful_enforcement",
                test="poisson",
                description="auto-moderation actions citing other policies, per posted item",
                units=_per_item(items, created, other["item_id"], other["ts"]),
            )
        )
        # Per policy too: a misfiring rule cites one policy, far above that policy's baseline.
        cited = other["policy"].astype("str").str.lower().to_numpy()
        for name, rows_p in other.groupby(cited, sort=True):
            if len(rows_p) < MIN_POLICY_ACTIONS:
                continue
            signals.append(
                Signal(
                    name=f"wrongful_enforcement:auto_actions:{name}",
                    issue="wrongful_enforcement",
                    test="poisson",
                    description=f"auto-moderation actions citing policy {name}, per posted item",
                    units=_per_item(items, created, rows_p["item_id"], rows_p["ts"]),
                )
            )
    events = tables.get("events")
    if events is not None and len(events):
        comments = events[events["kind"] == "comment"]
        if len(comments):
            toxic = (
                is_toxic(comments["text"])
                if "text" in comments.columns
                else np.zeros(len(comments), bool)
            )
            # Cohort signal: items posted in the hour whose first `COMMENT_WINDOW_H` hours of
            # comments include an abusive one, among items with comments in that window. One
            # unit per item keeps the series binomial (comment counts are heavy-tailed), and
            # the cohort reacts as soon as affected items are posted.
            posted = comments["item_id"].astype("str").map(created_by_item)
            age_h = (pd.to_datetime(comments["ts"], utc=True) - posted).dt.total_seconds() / 3600
            early = (age_h <= COMMENT_WINDOW_H).to_numpy()
            frame = pd.DataFrame(
                {
                    "item_id": comments["item_id"].astype("str").to_numpy()[early],
                    "toxic": toxic[early],
                }
            )
            per_item = frame.groupby("item_id")["toxic"].any()
            ids = per_item.index.to_series()
            signals.append(
                Signal(
                    name="harmful_interactions:toxic_comments",
                    issue="harmful_interactions",
                    test="binomial",
                    description=(
                        f"share of new items with an abusive comment in their first {COMMENT_WINDOW_H:g} h "
                        "(among items with comments)"
                    ),
                    units=_units(
                        ids,
                        created_by_item.reindex(per_item.index),
                        per_item.to_numpy(),
                        np.ones(len(per_item)),
                    ),
                    lag_h=COMMENT_WINDOW_H,
                )
            )
    return signals


def disabled_issues(scores: pd.DataFrame) -> dict[str, str]:
    """Issues a scores file marks as disabled in the model that scored it, and why.

    `surfacer score` writes a `disabled` column (the disabled issues' names, comma-separated)
    and the reasons in the frame's attrs (Parquet metadata); a file without the reasons still
    says which issues were disabled.
    """
    reasons = dict((scores.attrs or {}).get("disabled") or {})
    if "disabled" in scores.columns and len(scores):
        for value in pd.unique(scores["disabled"].astype("str")):
            for name in str(value).split(","):
                if name.strip():
                    reasons.setdefault(name.strip(), "disabled in the model")
    return {str(k): str(v) for k, v in reasons.items()}


def build_signals(
    tables: Mapping[str, pd.DataFrame],
    scores: pd.DataFrame | None = None,
    *,
    threshold: float = 0.5,
    post_min_probability: float | None = None,
) -> list[Signal]:
    """Signals from the scores file when given (model-flagged shares), else raw proxies."""
    if "items" not in tables:
        raise ValueError(
            "dataset has no 'items' table; discovery needs items for segments and volumes"
        )
    if scores is not None:
        return score_signals(
            tables, scores, threshold=threshold, post_min_probability=post_min_probability
        )
    return raw_signals(tables)
