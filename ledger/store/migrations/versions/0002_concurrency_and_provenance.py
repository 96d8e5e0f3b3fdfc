"""Per-user event sequence (optimistic concurrency), topic identity with stored positions,
bounded dead letters with their source position and resolution.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("events", sa.Column("seq", sa.Integer))
    # Events already stored are numbered per user by record time, then by the order they
    # were inserted in (rowid on SQLite; on PostgreSQL the physical order, which is the
    # insert order for a table whose rows are never updated).
    row = "rowid" if bind.dialect.name == "sqlite" else "ctid"
    op.execute(
        f"""
        UPDATE events SET seq = numbered.rn
        FROM (
            SELECT {row} AS r,
                   ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY recorded_at, {row}) AS rn
            FROM events
        ) AS numbered
        WHERE events.{row} = numbered.r
        """
    )
    with op.batch_alter_table("events") as batch:
        batch.alter_column("seq", existing_type=sa.Integer, nullable=False)
        batch.create_unique_constraint("uq_events_user_seq", ["user_id", "seq"])

    op.add_column("source_positions", sa.Column("topic_id", sa.String(64)))
    op.add_column("source_positions", sa.Column("partition_count", sa.Integer))

    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("raw_size", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("partition", sa.Integer))
        batch.add_column(sa.Column("offset", sa.BigInteger))
        batch.add_column(sa.Column("resolved_at", UTCDateTime()))
        batch.add_column(sa.Column("resolution", sa.Text))
    op.execute("UPDATE dead_letters SET raw_size = length(raw)")
    with op.batch_alter_table("dead_letters") as batch:
        batch.alter_column("raw_size", existing_type=sa.BigInteger, nullable=False)
    op.create_index("ix_dead_letters_recorded", "dead_letters", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_dead_letters_recorded", "dead_letters")
    with op.batch_alter_table("dead_letters") as batch:
        for column in ("resolution", "resolved_at", "offset", "partition", "raw_size"):
            batch.drop_column(column)
    with op.batch_alter_table("source_positions") as batch:
        batch.drop_column("partition_count")
        batch.drop_column("topic_id")
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("uq_events_user_seq", type_="unique")
        batch.drop_column("seq")
