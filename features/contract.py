"""The raw-table data contract (version 1) as code.

One `TableSpec` per raw table of DESIGN.md: column kinds, nullability, allowed values and
uniqueness. Validation and loaders read these specs; nothing else hard-codes column lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CONTRACT_VERSION = 1

ColumnKind = Literal["str", "timestamp", "float", "int", "bool"]

FORMATS = ("video", "photo", "live")
EVENT_KINDS = (
    "view",
    "like",
    "share",
    "comment",
    "report",
    "not_interested",
    "download",
    "follow",
)
MODERATION_ACTIONS = ("remove", "restrict", "restore")
MODERATION_SOURCES = ("auto", "human")
APPEAL_OUTCOMES = ("upheld", "overturned", "pending")
LABEL_SOURCES = ("review", "appeal", "import")
# Report reasons are free text in the contract; these are the ones the simulator and the
# feature module know by name (anything else counts as "other").
REPORT_REASONS = ("spam", "misleading", "harassment", "hate", "nudity", "violence", "other")
# The longest item id the live path holds: online ingest refuses longer ones
# (features.online.ingest), and the scoring API's ids and the review store's item_id column
# (serving.limits) are sized by it, so an item ingested online can always be read back with
# GET /v1/items/{id}/score and its flags fit the review store. Files are not limited.
ITEM_ID_MAX = 200


@dataclass(frozen=True)
class Column:
    """One column of a raw table: its kind and what values it may hold."""

    name: str
    kind: ColumnKind
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    unique: bool = False
    value_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class TableSpec:
    """A raw table: its columns and whether a dataset must have it."""

    name: str
    columns: tuple[Column, ...]
    required: bool = False
    key: tuple[str, ...] = field(default_factory=tuple)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")


ITEMS = TableSpec(
    "items",
    (
        Column("item_id", "str", unique=True),
        Column("creator_id", "str"),
        Column("created_at", "timestamp"),
        Column("format", "str", allowed=FORMATS),
        Column("duration_s", "float", nullable=True, value_range=(0.0, float("inf"))),
        Column("region", "str"),
        Column("language", "str"),
        Column("category", "str"),
        Column("caption", "str", nullable=True),
        Column("hashtags", "str"),
        Column("audio_id", "str", nullable=True),
    ),
    required=True,
    key=("item_id",),
)

CREATORS = TableSpec(
    "creators",
    (
        Column("creator_id", "str", unique=True),
        Column("created_at", "timestamp"),
        Column("region", "str"),
        Column("verified", "bool"),
        Column("follower_count", "int", value_range=(0, float("inf"))),
    ),
    key=("creator_id",),
)

EVENTS = TableSpec(
    "events",
    (
        Column("item_id", "str"),
        Column("user_id", "str", nullable=True),
        Column("ts", "timestamp"),
        Column("kind", "str", allowed=EVENT_KINDS),
        Column("watch_frac", "float", nullable=True, value_range=(0.0, 1.0)),
        Column("reason", "str", nullable=True),
        Column("text", "str", nullable=True),
    ),
)

MODERATION = TableSpec(
    "moderation",
    (
        Column("item_id", "str"),
        Column("ts", "timestamp"),
        Column("action", "str", allowed=MODERATION_ACTIONS),
        Column("source", "str", allowed=MODERATION_SOURCES),
        Column("policy", "str"),
    ),
)

APPEALS = TableSpec(
    "appeals",
    (
        Column("item_id", "str"),
        Column("filed_at", "timestamp"),
        Column("resolved_at", "timestamp", nullable=True),
        Column("outcome", "str", allowed=APPEAL_OUTCOMES),
    ),
)

LABELS = TableSpec(
    "labels",
    (
        Column("item_id", "str"),
        Column("issue", "str"),
        Column("label", "int", value_range=(0, 1)),
        Column("labeled_at", "timestamp"),
        Column("source", "str", allowed=LABEL_SOURCES),
    ),
)

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (ITEMS, CREATORS, EVENTS, MODERATION, APPEALS, LABELS)
}
TABLE_ORDER: tuple[str, ...] = tuple(TABLES)
