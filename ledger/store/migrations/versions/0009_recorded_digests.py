"""Recorded digests (docs/audit.md): every `ledger digest` is kept in the store with the
roots of its blocks of leaves, so an audit path can be given later for any user against
any digest that was published. Nothing is backfilled: digests taken before this revision
were not kept by the store (their files still verify with `ledger verify --digest`).

The tables are written out here rather than imported from `ledger.store.schema`, so that
a later change to the live schema cannot change what this migration did.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# As `ledger.store.schema` stores them in this revision: `Instant` (integer microseconds on
# SQLite), row ids (INTEGER PRIMARY KEY on SQLite).
_INSTANT = sa.BigInteger().with_variant(sa.DateTime(timezone=True), "postgresql")
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "digests",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("users", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", _INSTANT, nullable=False),
        sa.Column("signature", sa.String(32), nullable=False),
        sa.Column("block_size", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
    )
    op.create_table(
        "digest_blocks",
        sa.Column("digest_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("block", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("first_user_id", sa.String(200), nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("digest_blocks")
    op.drop_table("digests")
