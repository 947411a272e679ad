"""Incidents as a system of record: incidents, their append-only history, evidence items.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
STATUSES = "'new', 'acknowledged', 'mitigating', 'resolved', 'verified', 'false_alarm'"


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("issue", sa.String(100), nullable=False),
        sa.Column("segment", sa.JSON, nullable=False),
        sa.Column("segment_key", sa.String(500), nullable=False),
        sa.Column("signal", sa.String(200), nullable=True),
        sa.Column("start", TS, nullable=False),
        sa.Column("end", TS, nullable=False),
        sa.Column("detected_at", TS, nullable=False),
        sa.Column("true_start", TS, nullable=True),
        sa.Column("severity", sa.Float, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("trend", sa.JSON, nullable=True),
        sa.Column("sample_pool", sa.JSON, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("notes", sa.Text, nullable=True),
        sa.Column("fix_at", TS, nullable=True),
        sa.Column("fix_description", sa.Text, nullable=True),
        sa.Column("effect", sa.JSON, nullable=True),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_incidents_status"),
    )
    op.create_index("ix_incidents_match", "incidents", ["issue", "status"])
    op.create_index("ix_incidents_detected", "incidents", ["detected_at"])

    op.create_table(
        "incident_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.Integer, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_incident_history_incident_id", "incident_history", ["incident_id"])

    op.create_table(
        "incident_items",
        sa.Column(
            "incident_id",
            sa.Integer,
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "review_item_id",
            sa.Integer,
            sa.ForeignKey("review_items.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("stratum", sa.String(16), nullable=False),
        sa.CheckConstraint("stratum IN ('flagged', 'unflagged')", name="ck_incident_items_stratum"),
    )
    op.create_index("ix_incident_items_review_item_id", "incident_items", ["review_item_id"])

    # Like review_history: the trail is append-only in the database itself.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER incident_history_no_{verb.lower()} BEFORE {verb} "
                "ON incident_history "
                "BEGIN SELECT RAISE(ABORT, 'incident_history is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION incident_history_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'incident_history is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER incident_history_append_only BEFORE UPDATE OR DELETE "
            "ON incident_history FOR EACH ROW EXECUTE FUNCTION incident_history_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS incident_history_append_only ON incident_history")
        op.execute("DROP FUNCTION IF EXISTS incident_history_append_only()")
    op.drop_table("incident_items")
    op.drop_table("incident_history")
    op.drop_table("incidents")
