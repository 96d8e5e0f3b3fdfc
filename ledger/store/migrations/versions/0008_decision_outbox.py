"""The changefeed's outbox and relay positions (docs/changefeed.md).

Every history row the ledger believes today is backfilled as one announced `assigned`
decision, in record-time order and without an application `seq` (the event that made it is
not recorded with the row), so a relay started on an upgraded store announces each user's
present history once, and `rulebook-current` gets every user. What was superseded before
the upgrade is not announced: it stays in `ledger decisions export`.

The tables are written out here rather than imported from `ledger.store.schema`, so that
a later change to the live schema cannot change what this migration did.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# As `ledger.store.schema` stores them in this revision: `Instant` (integer microseconds on
# SQLite), `UTCDateTime` (ISO text on SQLite), row ids (INTEGER PRIMARY KEY on SQLite).
_INSTANT = sa.BigInteger().with_variant(sa.DateTime(timezone=True), "postgresql")
_UTC = sa.String(26).with_variant(sa.DateTime(timezone=True), "postgresql")
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "decision_outbox",
        sa.Column("seq", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("valid_from", _INSTANT, nullable=False),
        sa.Column("recorded_at", _INSTANT, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("app_seq", sa.BigInteger()),
        sa.Column("announce", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "changefeed_positions",
        sa.Column("target", sa.Text(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
    )
    yes = "1" if op.get_bind().dialect.name == "sqlite" else "true"
    op.execute(
        "INSERT INTO decision_outbox (user_id, valid_from, recorded_at, kind, app_seq, announce) "
        f"SELECT user_id, valid_from, recorded_at, 'assigned', NULL, {yes} "
        "FROM assignment_history WHERE superseded_at IS NULL ORDER BY recorded_at, id"
    )


def downgrade() -> None:
    op.drop_table("changefeed_positions")
    op.drop_table("decision_outbox")
