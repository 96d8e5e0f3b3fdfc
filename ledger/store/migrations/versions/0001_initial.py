"""Initial read model: events, users, assignment history, source positions, dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger.store.schema import ROW_ID, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("phone_region", sa.String(3)),
        sa.Column("phone_valid", sa.Boolean),
        sa.Column("phone_hash", sa.String(64)),
        sa.Column("channel", sa.String(100)),
        sa.Column("birth_date", sa.Date),
        sa.Column("country", sa.String(2)),
        sa.Column("evidence", sa.String(20)),
        sa.Column("tos_version", sa.String(100)),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("position", sa.Text, nullable=False),
    )
    op.create_index("ix_events_user", "events", ["user_id", "occurred_at"])
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("signup_at", UTCDateTime()),
        sa.Column("channel", sa.String(100)),
        sa.Column("birth_date", sa.Date),
        sa.Column("signup_phone_region", sa.String(3)),
        sa.Column("signup_phone_valid", sa.Boolean),
        sa.Column("signup_phone_hash", sa.String(64)),
        sa.Column("current_phone_region", sa.String(3)),
        sa.Column("current_phone_valid", sa.Boolean),
        sa.Column("current_phone_hash", sa.String(64)),
        sa.Column("residence", sa.String(2)),
        sa.Column("ip_country", sa.String(2)),
        sa.Column("tos_version", sa.String(100)),
        sa.Column("assignment", sa.String(40)),
        sa.Column("policy", sa.String(100)),
        sa.Column("rule", sa.String(40)),
        sa.Column("since", UTCDateTime()),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_users_assignment", "users", ["assignment"])
    op.create_table(
        "assignment_history",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("valid_from", UTCDateTime(), nullable=False),
        sa.Column("valid_to", UTCDateTime()),
        sa.Column("assignment", sa.String(40), nullable=False),
        sa.Column("policy", sa.String(100), nullable=False),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("facts", sa.JSON, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("superseded_at", UTCDateTime()),
    )
    op.create_index("ix_history_user", "assignment_history", ["user_id", "valid_from"])
    op.create_table(
        "source_positions",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("position", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("event_id", sa.String(36)),
        sa.Column("user_id", sa.String(200)),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("dead_letters", "source_positions", "assignment_history", "users", "events"):
        op.drop_table(table)
