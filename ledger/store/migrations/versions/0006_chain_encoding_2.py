"""Chain encoding 2 (docs/audit.md): every stored link and chain head is recomputed under
the length-prefixed binary form, and the store records the encoding it is under in a new
table, `store_formats`, so `ledger verify` recomputes links as they were made. A downgrade
recomputes them under encoding 1 (canonical JSON) and drops the record.

Bounded memory on any store size: events are read in (user_id, seq) order a chunk at a
time (keyset pagination, no cursor held open across the updates), one user's chain at a
time carrying only its previous link; links are updated by primary key and chain heads by
user id, in batches. Digests taken before the upgrade name no encoding, so they are read
as encoding 1 and `ledger verify --digest` recomputes their chains under it from the
stored fields: they still verify.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from alembic import op

from ledger.domain.audit.canonical import canonical_event, canonical_event_v2
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Rows read per query, and link or head updates sent per statement.
CHUNK_EVENTS = 5000
UPDATE_ROWS = 1000

# The chained columns at this revision, named here so that a later column cannot be
# asked of a store that does not have it yet.
_CHAINED = (
    "event_id",
    "user_id",
    "occurred_at",
    "recorded_at",
    "type",
    "phone_region",
    "phone_valid",
    "phone_hash",
    "channel",
    "birth_date",
    "country",
    "evidence",
    "tos_version",
    "locale",
    "document_country",
    "document_kind",
    "seq",
)
# The events table as this revision holds it (text event ids; instants as ISO text on
# SQLite): the current layout is a later revision's (0007 made the store compact).
_TYPES: dict[str, Any] = {
    "occurred_at": UTCDateTime(),
    "recorded_at": UTCDateTime(),
    "phone_valid": sa.Boolean(),
    "birth_date": sa.Date(),
    "seq": sa.Integer(),
}
events = sa.table(
    "events",
    *(sa.column(name, _TYPES.get(name, sa.String())) for name in _CHAINED),
    sa.column("link", sa.LargeBinary()),
)
_FORMATS = "store_formats"
_CHAIN = "chain"


def upgrade() -> None:
    bind = op.get_bind()
    formats = op.create_table(
        _FORMATS,
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    rechain(bind, canonical_event_v2)
    bind.execute(sa.insert(formats).values(name=_CHAIN, version=2))


def downgrade() -> None:
    rechain(op.get_bind(), canonical_event)
    op.drop_table(_FORMATS)


def rechain(bind: sa.Connection, encode: Callable[[Mapping[str, Any]], bytes]) -> None:
    """Recompute every stored link and chain head with `encode`, user by user."""
    users = sa.table("users", sa.column("user_id"), sa.column("chain_head"))
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
    query = (
        sa.select(*(events.c[name] for name in _CHAINED))
        .order_by(events.c.user_id, events.c.seq)
        .limit(CHUNK_EVENTS)
    )
    links: list[dict[str, Any]] = []
    heads: list[dict[str, Any]] = []
    user: str | None = None
    prev = GENESIS
    after: tuple[str, int] | None = None
    while True:
        q = query
        if after is not None:
            # (user_id, seq) is unique and indexed (uq_events_user_seq): each chunk starts
            # where the last ended, in the same order the database sorts by.
            q = q.where(sa.tuple_(events.c.user_id, events.c.seq) > sa.tuple_(*after))
        rows = bind.execute(q).all()
        if not rows:
            break
        for row in rows:
            if row.user_id != user:
                if user is not None:
                    heads.append({"k_user": user, "v_head": prev})
                user, prev = row.user_id, GENESIS
            prev = next_link(prev, encode(dict(row._mapping)))
            links.append({"k_event": row.event_id, "v_link": prev})
        after = (rows[-1].user_id, rows[-1].seq)
        for i in range(0, len(links), UPDATE_ROWS):
            bind.execute(set_link, links[i : i + UPDATE_ROWS])
        for i in range(0, len(heads), UPDATE_ROWS):
            bind.execute(set_head, heads[i : i + UPDATE_ROWS])
        links, heads = [], []
    if user is not None:
        heads.append({"k_user": user, "v_head": prev})
    if links:
        bind.execute(set_link, links)
    if heads:
        bind.execute(set_head, heads)
    # A users row whose events are all gone keeps its head; `ledger verify` reports it.
