"""The audit trail (docs/audit.md): a global application order and a per-user hash chain over
the events, the chain head with each user, the content hash of the deciding policy on each
history row, and the policies the store has used.

Events already stored get their application order by record time, then user and per-user
sequence (the order they were applied in within a user), and their chain links computed
user by user, a chunk of users at a time, so the upgrade runs in bounded memory. History
rows get the hash of the shipped policy of their version, which is pinned; a version not
shipped with this release gets an empty hash, which `ledger verify` reports.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import CreateSequence, DropSequence

from ledger.domain.audit.canonical import (
    EVENT_CHAIN_FIELDS,
    EVENT_CHAIN_LATER_FIELDS,
    canonical_event,
)
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.store.schema import EventId, Instant, UTCDateTime
from ledger.store.schema import events as _events_now

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHUNK_USERS = 1000

# The events table as this revision has it: event ids as text and instants as ISO text on
# SQLite (migration 0007 changed both in the current schema).
events = sa.Table(
    "events",
    sa.MetaData(),
    *(
        sa.Column(
            c.name,
            sa.String(36)
            if isinstance(c.type, EventId)
            else UTCDateTime()
            if isinstance(c.type, Instant)
            else c.type,
        )
        for c in _events_now.columns
        if c.name in (*EVENT_CHAIN_FIELDS, "link")
    ),
)


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.add_column("events", sa.Column("app_seq", sa.BigInteger))
    op.add_column("events", sa.Column("link", sa.LargeBinary(32)))
    op.add_column("users", sa.Column("chain_head", sa.LargeBinary(32)))
    op.add_column("assignment_history", sa.Column("policy_hash", sa.String(64)))
    pins = op.create_table(
        "policy_pins",
        sa.Column("version", sa.String(100), primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("pinned_at", UTCDateTime(), nullable=False),
    )
    op.execute(
        """
        UPDATE events SET app_seq = numbered.rn
        FROM (
            SELECT event_id AS e,
                   ROW_NUMBER() OVER (ORDER BY recorded_at, user_id, seq) AS rn
            FROM events
        ) AS numbered
        WHERE events.event_id = numbered.e
        """
    )
    if postgres:
        op.execute(CreateSequence(sa.Sequence("events_app_seq")))
        op.execute(
            "SELECT setval('events_app_seq', max(app_seq)) FROM events HAVING count(*) > 0"
        )
    _chain_stored_events(bind)
    _hash_stored_policies(bind, pins)
    with op.batch_alter_table("events") as batch:
        batch.alter_column("app_seq", existing_type=sa.BigInteger, nullable=False)
        batch.alter_column("link", existing_type=sa.LargeBinary(32), nullable=False)
        batch.create_unique_constraint("uq_events_app_seq", ["app_seq"])
    with op.batch_alter_table("users") as batch:
        batch.alter_column("chain_head", existing_type=sa.LargeBinary(32), nullable=False)
    with op.batch_alter_table("assignment_history") as batch:
        batch.alter_column("policy_hash", existing_type=sa.String(64), nullable=False)


def _chain_stored_events(bind: sa.Connection) -> None:
    users = sa.table("users", sa.column("user_id"), sa.column("chain_head"))
    # The columns of this revision: those of later revisions do not exist yet, and the
    # canonical form leaves them out when absent.
    columns = [events.c[n] for n in EVENT_CHAIN_FIELDS if n not in EVENT_CHAIN_LATER_FIELDS]
    set_link = (
        sa.update(events)
        .where(events.c.event_id == sa.bindparam("k_event"))
        .values(link=sa.bindparam("v_link"))
    )
    set_head = (
        sa.update(users)
        .where(users.c.user_id == sa.bindparam("k_user"))
        .values(chain_head=sa.bindparam("v_head"))
    )
    after: str | None = None
    while True:
        q = sa.select(users.c.user_id).order_by(users.c.user_id).limit(CHUNK_USERS)
        if after is not None:
            q = q.where(users.c.user_id > after)
        chunk = [r.user_id for r in bind.execute(q)]
        if not chunk:
            return
        after = chunk[-1]
        heads = dict.fromkeys(chunk, GENESIS)
        links = []
        rows = bind.execute(
            sa.select(*columns)
            .where(events.c.user_id.in_(chunk))
            .order_by(events.c.user_id, events.c.seq)
        )
        for row in rows:
            fields = dict(row._mapping)
            link = next_link(heads[row.user_id], canonical_event(fields))
            heads[row.user_id] = link
            links.append({"k_event": row.event_id, "v_link": link})
        if links:
            bind.execute(set_link, links)
        bind.execute(set_head, [{"k_user": u, "v_head": h} for u, h in heads.items()])
        # Events of users without a users row are not chained above; verify reports them.


def _hash_stored_policies(bind: sa.Connection, pins: sa.Table) -> None:
    from ledger.codecs.policy_files import load_policies
    from ledger.domain.audit.stable_ids import policy_hash

    shipped = load_policies()
    history = sa.table("assignment_history", sa.column("policy"), sa.column("policy_hash"))
    used = [r.policy for r in bind.execute(sa.select(history.c.policy).distinct())]
    now = datetime.now(UTC)
    for version in used:
        digest = policy_hash(shipped[version]) if version in shipped else ""
        bind.execute(
            sa.update(history).where(history.c.policy == version).values(policy_hash=digest)
        )
        if digest:
            bind.execute(sa.insert(pins).values(version=version, hash=digest, pinned_at=now))
    # Events without a link (a user without a users row) would block NOT NULL: give them
    # an all-zero link, which can never equal a computed one, so verify names them.
    bind.execute(sa.update(events).where(events.c.link.is_(None)).values(link=bytes(32)))


def downgrade() -> None:
    with op.batch_alter_table("assignment_history") as batch:
        batch.drop_column("policy_hash")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("chain_head")
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("uq_events_app_seq", type_="unique")
        batch.drop_column("link")
        batch.drop_column("app_seq")
    op.drop_table("policy_pins")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DropSequence(sa.Sequence("events_app_seq")))
