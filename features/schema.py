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
    "comment_text",  # the latest comments' text, see COMMENT_TEXT_LAST
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

# What kind of value each snapshot column holds, in one place: the scoring API validates
# posted snapshots by these kinds (`column_kind`). Columns not named here are plain numbers.
TIME_COLUMNS = ("as_of", "created_at")
BOOL_COLUMNS = ("creator_verified",)
STRING_COLUMNS = (
    "anchor",
    "creator_id",
    "format",
    "region",
    "language",
    "category",
    "caption",
    "hashtags",
    "audio_id",
    "comment_text",
    *ACTION_COLUMNS,
)
COUNT_COLUMNS = (
    EVENT_COUNT_COLUMNS
    + VELOCITY_COLUMNS
    + REPORT_REASON_COLUMNS
    + ("n_viewers", "n_reporters", "n_comment_toxic", "creator_followers")
    + CREATOR_HISTORY_COLUMNS
    + ("mod_n_actions",)
)
NON_NEGATIVE_COLUMNS = ("duration_s", "age_h", "horizon_h", "creator_age_d", "comment_mean_len")
FRACTION_COLUMNS = ("mean_watch_frac",)

_KINDS = {
    "item_id": "id",
    **dict.fromkeys(TIME_COLUMNS, "time"),
    **dict.fromkeys(BOOL_COLUMNS, "bool"),
    **dict.fromkeys(STRING_COLUMNS, "string"),
    **dict.fromkeys(COUNT_COLUMNS, "count"),
    **dict.fromkeys(NON_NEGATIVE_COLUMNS, "non_negative"),
    **dict.fromkeys(FRACTION_COLUMNS, "fraction"),
}


def column_kind(name: str) -> str:
    """The kind of a snapshot column: id, time, bool, string, count (a number >= 0),
    non_negative, fraction (0..1) or number (anything else, e.g. 0/1 flags)."""
    return _KINDS.get(name, "number")


DEFAULT_HORIZONS_H = (1.0, 6.0, 24.0)

# `comment_text`: the text of the item's latest COMMENT_TEXT_LAST comments strictly before
# as_of, oldest first, joined by "\n" (a newline inside a comment stays as it is). Comments are
# `events` rows of kind "comment"; those with a null `text` are skipped (not counted among
# the last COMMENT_TEXT_LAST either: the latest 50 comments *with text*). Ties in `ts` keep
# the events table's order. No comment with text before as_of: "" (empty, never null, when
# the events table exists). An online feature store reproduces it from the same rule: keep
# the last 50 comment texts per item, join them by "\n" at scoring time.
COMMENT_TEXT_LAST = 50
COMMENT_TEXT_SEPARATOR = "\n"

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
