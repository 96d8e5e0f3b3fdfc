"""The fingerprint of the phone key (HMAC-SHA256 of a fixed label under LEDGER_PHONE_KEY,
never the key): recorded with the first events a writer stores, so that a writer under
another key is refused instead of mixing phone hashes that can never match, and `ledger
verify` can check the key it is given.

A store written before this revision has no fingerprint: the next writer records its own
key's (the migration cannot know which key the stored hashes were made with).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_fingerprints",
        sa.Column("purpose", sa.String(32), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_fingerprints")
