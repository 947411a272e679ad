"""ORM tables of the review store: queued items, per-issue flags, labels, history, analysts.

A review item is one scored (item, as_of, model version); its flagged issues live in
`review_flags` (one row per issue, with that issue's priority) so the queue can be filtered
and ordered by issue with plain indexes on any database. `review_history` is append-only.
String sizes come from `serving.limits`, which the API models use too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from serving.limits import (
    ANALYST_NAME_MAX,
    ANCHOR_MAX,
    ISSUE_MAX,
    ITEM_ID_MAX,
    LEASE_MAX,
    MODEL_VERSION_MAX,
)

STATUSES = ("pending", "claimed", "labeled", "skipped")
DECISIONS = ("confirm", "reject", "relabel")
STRATA = ("flagged", "sample")


class Base(DeclarativeBase):
    """Declarative base; `Base.metadata` is what the initial migration creates."""


class ReviewItem(Base):
    """One scored item in the queue, flagged by the model or sampled for honest metrics."""

    __tablename__ = "review_items"
    __table_args__ = (
        UniqueConstraint("item_id", "as_of_key", "model_version", name="uq_review_items_key"),
        Index("ix_review_items_queue", "status", "priority"),
        Index("ix_review_items_stratum", "stratum", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(ITEM_ID_MAX), index=True)
    as_of: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # as_of as text ("" when unknown): NULLs never collide in a unique key, this does.
    as_of_key: Mapped[str] = mapped_column(String(40))
    anchor: Mapped[str] = mapped_column(String(ANCHOR_MAX))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    flagged: Mapped[list[Any]] = mapped_column(JSON)
    reasons: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_version: Mapped[str] = mapped_column(String(MODEL_VERSION_MAX))
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reach: Mapped[float] = mapped_column(Float, default=0.0)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    sampled: Mapped[bool] = mapped_column(Boolean, default=False)
    stratum: Mapped[str] = mapped_column(String(16))
    sample_prob: Mapped[float] = mapped_column(Float, default=1.0)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    lease_owner: Mapped[str | None] = mapped_column(String(ANALYST_NAME_MAX))
    lease_token: Mapped[str | None] = mapped_column(String(LEASE_MAX))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    flags: Mapped[list[ReviewFlag]] = relationship(
        back_populates="item", cascade="all, delete-orphan", lazy="selectin"
    )


class ReviewFlag(Base):
    """One flagged issue of a review item, with its probability and priority (prob x reach)."""

    __tablename__ = "review_flags"
    __table_args__ = (Index("ix_review_flags_issue", "issue", "priority"),)

    review_item_id: Mapped[int] = mapped_column(
        ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True
    )
    issue: Mapped[str] = mapped_column(String(ISSUE_MAX), primary_key=True)
    probability: Mapped[float] = mapped_column(Float)
    priority: Mapped[float] = mapped_column(Float)

    item: Mapped[ReviewItem] = relationship(back_populates="flags")


class Label(Base):
    """An analyst's answer for one issue of one reviewed item (1: has the issue, 0: not)."""

    __tablename__ = "review_labels"
    __table_args__ = (Index("ix_review_labels_issue", "issue", "review_item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_item_id: Mapped[int] = mapped_column(
        ForeignKey("review_items.id", ondelete="CASCADE"), index=True
    )
    item_id: Mapped[str] = mapped_column(String(ITEM_ID_MAX), index=True)
    issue: Mapped[str] = mapped_column(String(ISSUE_MAX))
    label: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16))
    reviewer: Mapped[str] = mapped_column(String(ANALYST_NAME_MAX))
    labeled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(Text)


class HistoryEvent(Base):
    """Append-only audit trail: ingest, claim, label, skip, release, lease expiry."""

    __tablename__ = "review_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_item_id: Mapped[int] = mapped_column(Integer, index=True)
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(ANALYST_NAME_MAX))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class Analyst(Base):
    """A person who reviews: a unique name and an Argon2 password hash (`review add-analyst`)."""

    __tablename__ = "analysts"
    __table_args__ = (UniqueConstraint("name", name="uq_analysts_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(ANALYST_NAME_MAX))
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AnalystSession(Base):
    """A login: the SHA-256 of its token (the token itself is never stored), its CSRF token
    and when it ends; logout sets `revoked_at`, so a copied cookie stops working too."""

    __tablename__ = "analyst_sessions"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_analyst_sessions_token_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    analyst_id: Mapped[int] = mapped_column(
        ForeignKey("analysts.id", ondelete="CASCADE"), index=True
    )
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


INCIDENT_STATUSES = (
    "new",
    "acknowledged",
    "mitigating",
    "resolved",
    "verified",
    "false_alarm",
)
SEGMENT_KEY_MAX = 500


class IncidentRow(Base):
    """An incident as a system of record: what discovery found, and what people did about it.

    Discovery upserts `issue`, `segment`, the window and the evidence; analysts move `status`
    (every move is in `incident_history`); a recorded fix (`fix_at`) is measured into
    `effect` once enough data after it exists. `sample_pool` holds scored items from the
    segment and window that acknowledging puts in the review queue.
    """

    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_match", "issue", "status"),
        Index("ix_incidents_detected", "detected_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # "rate" (discovery) or "model_health"
    issue: Mapped[str] = mapped_column(String(ISSUE_MAX))
    segment: Mapped[dict[str, Any]] = mapped_column(JSON)
    segment_key: Mapped[str] = mapped_column(String(SEGMENT_KEY_MAX))
    signal: Mapped[str | None] = mapped_column(String(ISSUE_MAX * 2))
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    true_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    severity: Mapped[float] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    trend: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sample_pool: Mapped[list[Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="new")
    owner: Mapped[str | None] = mapped_column(String(ANALYST_NAME_MAX))
    notes: Mapped[str | None] = mapped_column(Text)
    fix_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fix_description: Mapped[str | None] = mapped_column(Text)
    effect: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    runs: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IncidentEvent(Base):
    """Append-only trail of an incident: detected, updated, each transition, fix, effect."""

    __tablename__ = "incident_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, index=True)
    event: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(ANALYST_NAME_MAX))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class IncidentItem(Base):
    """A review item queued as evidence for an incident (flagged or unflagged by the model)."""

    __tablename__ = "incident_items"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    review_item_id: Mapped[int] = mapped_column(
        ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    stratum: Mapped[str] = mapped_column(String(16))
