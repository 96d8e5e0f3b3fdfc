"""Erasure (docs/data-protection.md): the `erasures` table, one row per erased user, and the
event columns an erasure empties made nullable (an erased event keeps only its seq,
application seq, record time, origin and stored link).

The table is written out here rather than imported from `ledger.store.schema`, so that a
later change to the live schema cannot change what this migration did. On SQLite, making
columns nullable rebuilds the events table (Alembic's batch mode): a copy of every row,
once.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_INSTANT = sa.BigInteger().with_variant(sa.DateTime(timezone=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("app_seq", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("erased_at", _INSTANT, nullable=False),
        sa.Column("history_rows", sa.Integer(), nullable=False),
        sa.Column("dead_letters", sa.Integer(), nullable=False),
        sa.Column("retained_hash", sa.LargeBinary(32)),
    )
    with op.batch_alter_table("events") as batch:
        batch.alter_column("event_id", existing_type=sa.LargeBinary(16), nullable=True)
        batch.alter_column("occurred_at", existing_type=_INSTANT, nullable=True)
        batch.alter_column("type", existing_type=sa.String(20), nullable=True)


def downgrade() -> None:
    op.drop_table("erasures")
