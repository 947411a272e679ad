"""The snapshot schema: one row per (item, as_of), the hand-off between snapshot and transform.

`features.snapshot` produces these columns (those whose source table is missing are absent,
not zero); `features.transform` turns a snapshot row, as a DataFrame row or as a plain dict
posted to the scoring service, into the model's feature vector.
"""

from __future__ import annotations

from features.contract import EVENT_KINDS, REPORT_REASONS

# Identity of a snapshot row.
KEY_COLUMNS = ("item_id", "as_of")
# "post" rows are taken at a horizon after posting; "moderation" rows at a moderation action.
ANCHOR_COLUMNS = ("anchor", "horizon_h")

# Copied from `items` (and the age of the item at as_of, in hours).
ITEM_COLUMNS = (
    "creator_id",
    "created_at",
    "format",
    "duration_s",
    "region",
    "language",
    "category",
    "caption",
    "hashtags",
    "audio_id",
    "age_h",
)

# From `events`, strictly before as_of.
EVENT_COUNT_COLUMNS = tuple(f"n_{k}" for k in EVENT_KINDS)
WINDOWS_H = (1, 6)
VELOCITY_KINDS = ("view", "like", "share", "comment", "report", "not_interested")
VELOCITY_COLUMNS = tuple(f"n_{k}_{w}h" for w in WINDOWS_H for k in VELOCITY_KINDS)
REPORT_REASON_COLUMNS = tuple(f"n_report_{r}" for r in REPORT_REASONS)
EVENT_OTHER_COLUMNS = (
    "n_viewers",  # distinct user_id among views
    "n_reporters",  # distinct user_id among reports
    "mean_watch_frac",  # NaN when no views yet
    "n_comment_toxic",  # comments whose text hits the abuse lexicon
    "comment_mean_len",  # NaN when no comments yet
)
EVENT_COLUMNS = EVENT_COUNT_COLUMNS + VELOCITY_COLUMNS + REPORT_REASON_COLUMNS + EVENT_OTHER_COLUMNS

# From `creators` and the creator's own history (items, moderation, appeals) before as_of.
CREATOR_COLUMNS = (
    "creator_age_d",
    "creator_followers",
    "creator_verified",
)
CREATOR_HISTORY_COLUMNS = (
    "creator_n_items",  # items the creator posted before as_of (this one excluded)
    "creator_prior_removals",  # removals of the creator's other items before as_of
    "creator_prior_overturned",  # overturned appeals of the creator's items resolved before as_of
)

# From `moderation` (state of this item just before as_of) and, for "moderation" anchors,
# the action being judged.
MODERATION_COLUMNS = (
    "mod_n_actions",
    "mod_removed",  # 1 if the item is removed as of just before as_of
    "mod_restricted",
)
ACTION_COLUMNS = ("action", "action_source", "action_policy")

SNAPSHOT_COLUMNS = (
    KEY_COLUMNS
    + ANCHOR_COLUMNS
    + ITEM_COLUMNS
    + EVENT_COLUMNS
    + CREATOR_COLUMNS
    + CREATOR_HISTORY_COLUMNS
    + MODERATION_COLUMNS
    + ACTION_COLUMNS
)

DEFAULT_HORIZONS_H = (1.0, 6.0, 24.0)

# A comment is "toxic" when a token of its text is in this lexicon. Short and explicit on
# purpose: it is a signal for the model, not a classifier.
ABUSE_LEXICON = frozenset(
    {
        "idiot",
        "stupid",
        "loser",
        "ugly",
        "trash",
        "kill",
        "hate",
        "die",
        "pathetic",
        "disgusting",
        "moron",
        "scum",
    }
)
