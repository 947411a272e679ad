"""Initial review store: items, per-issue flags, labels, append-only history.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.String(200), nullable=False),
        sa.Column("as_of", TS, nullable=True),
        sa.Column("as_of_key", sa.String(40), nullable=False),
        sa.Column("anchor", sa.String(40), nullable=False),
        sa.Column("snapshot", sa.JSON, nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("flagged", sa.JSON, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("scored_at", TS, nullable=False),
        sa.Column("reach", sa.Float, nullable=False),
        sa.Column("priority", sa.Float, nullable=False),
        sa.Column("sampled", sa.Boolean, nullable=False),
        sa.Column("stratum", sa.String(16), nullable=False),
        sa.Column("sample_prob", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("item_id", "as_of_key", "model_version", name="uq_review_items_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'claimed', 'labeled', 'skipped')", name="ck_review_items_status"
        ),
        sa.CheckConstraint("stratum IN ('flagged', 'sample')", name="ck_review_items_stratum"),
    )
    op.create_index("ix_review_items_item_id", "review_items", ["item_id"])
    op.create_index("ix_review_items_queue", "review_items", ["status", "priority"])
    op.create_index("ix_review_items_stratum", "review_items", ["stratum", "status"])

    op.create_table(
        "review_flags",
        sa.Column(
            "review_item_id",
            sa.Integer,
            sa.ForeignKey("review_items.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("issue", sa.String(100), primary_key=True),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("priority", sa.Float, nullable=False),
    )
    op.create_index("ix_review_flags_issue", "review_flags", ["issue", "priority"])

    op.create_table(
        "review_labels",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "review_item_id",
            sa.Integer,
            sa.ForeignKey("review_items.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("item_id", sa.String(200), nullable=False),
        sa.Column("issue", sa.String(100), nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("labeled_at", TS, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.CheckConstraint("label IN (0, 1)", name="ck_review_labels_label"),
        sa.CheckConstraint(
            "decision IN ('confirm', 'reject', 'relabel')", name="ck_review_labels_decision"
        ),
    )
    op.create_index("ix_review_labels_review_item_id", "review_labels", ["review_item_id"])
    op.create_index("ix_review_labels_item_id", "review_labels", ["item_id"])
    op.create_index("ix_review_labels_issue", "review_labels", ["issue", "review_item_id"])

    op.create_table(
        "review_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("review_item_id", sa.Integer, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_review_history_review_item_id", "review_history", ["review_item_id"])

    # The audit trail is append-only in the database itself, not just by convention.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER review_history_no_{verb.lower()} BEFORE {verb} ON review_history "
                "BEGIN SELECT RAISE(ABORT, 'review_history is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION review_history_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'review_history is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER review_history_append_only BEFORE UPDATE OR DELETE ON review_history "
            "FOR EACH ROW EXECUTE FUNCTION review_history_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS review_history_append_only ON review_history")
        op.execute("DROP FUNCTION IF EXISTS review_history_append_only()")
    op.drop_table("review_history")
    op.drop_table("review_labels")
    op.drop_table("review_flags")
    op.drop_table("review_items")
