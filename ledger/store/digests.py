"""Recorded digests on a SQL store (docs/audit.md): `record_digest` keeps what `ledger
digest` wrote, and `SqlDigestRecords` reads it back with the leaves as of a digest's `seq`,
for audit paths (`ledger.app.audit.paths`).

A leaf as of `seq` is read from the events, never from the users row (which holds the chain
as it is now): the user's events with app_seq <= seq, in chain order, the last one's link
and their count. The users of one block are taken from the users table in code-point order
(`COLLATE "C"` on PostgreSQL, as the audit snapshot sorts), a chunk at a time, and their
events looked up by the (user_id, seq) key.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, select

from ledger.app.audit.digest import TakenDigest
from ledger.app.ports import RecordedDigest
from ledger.domain.audit.merkle import Leaf
from ledger.store.audit_snapshot import SqlAuditSnapshot, SqlAuditSource
from ledger.store.errors import translated_errors
from ledger.store.schema import digest_blocks, digests, events, users

__all__ = ["SqlDigestRecords", "SqlDigestSnapshot", "record_digest"]

# Users looked up per query when reading a block's leaves: a block's worth and a little
# more, as users without events by the digest's seq are passed over.
LEAF_CHUNK = 4608


def record_digest(engine: Engine, taken: TakenDigest, document: str, signature: str) -> int:
    """Records the digest `document` (the text written) with its block roots, in one
    transaction; returns its id."""
    d = taken.digest
    with translated_errors(), engine.begin() as conn:
        result = conn.execute(
            digests.insert().values(
                seq=d.seq,
                root=d.root,
                users=d.users,
                events=d.events,
                recorded_at=d.recorded_at,
                signature=signature,
                block_size=taken.block_size,
                document=document,
            )
        )
        (digest_id,) = result.inserted_primary_key or (None,)
        assert digest_id is not None
        if taken.blocks:
            conn.execute(
                digest_blocks.insert(),
                [
                    {"digest_id": digest_id, "block": i, "first_user_id": first, "root": root}
                    for i, (first, root) in enumerate(taken.blocks)
                ],
            )
    return int(digest_id)


class SqlDigestRecords:
    """`ledger.app.ports.DigestRecords` on a SQL store: snapshots as the audit's
    (`SqlAuditSource`), read-only."""

    def __init__(self, bind: Engine | Connection) -> None:
        self._source = SqlAuditSource(bind)

    @contextmanager
    def snapshot(self) -> Iterator[SqlDigestSnapshot]:
        with self._source.snapshot() as snap:
            yield SqlDigestSnapshot(snap.conn)


def _recorded(row: Any) -> RecordedDigest:
    return RecordedDigest(
        id=row.id,
        seq=row.seq,
        root=row.root,
        users=row.users,
        events=row.events,
        recorded_at=row.recorded_at,
        signature=row.signature,
        block_size=row.block_size,
        document=row.document,
    )


class SqlDigestSnapshot(SqlAuditSnapshot):
    """`ledger.app.ports.DigestSnapshot` on SQL."""

    def recorded(self, digest_id: int | None = None) -> RecordedDigest | None:
        q = select(digests)
        q = q.where(digests.c.id == digest_id) if digest_id is not None else q
        q = q.order_by(digests.c.id.desc()).limit(1)
        with translated_errors(reading=True):
            row = self.conn.execute(q).first()
        return None if row is None else _recorded(row)

    def recorded_digests(self) -> Generator[RecordedDigest, None, None]:
        for row in self._stream(select(digests).order_by(digests.c.id)):
            yield _recorded(row)

    def block_starts(self, digest_id: int) -> Generator[str, None, None]:
        b = digest_blocks.c
        q = select(b.first_user_id).where(b.digest_id == digest_id).order_by(b.block)
        for row in self._stream(q):
            yield row.first_user_id

    def block_roots(self, digest_id: int) -> Generator[bytes, None, None]:
        b = digest_blocks.c
        q = select(b.root).where(b.digest_id == digest_id).order_by(b.block)
        for row in self._stream(q):
            yield row.root

    def leaves_as_of(self, first_user_id: str, seq: int) -> Generator[Leaf, None, None]:
        u, e = users.c, events.c
        key = self._user_order(u.user_id)
        bound = key >= first_user_id
        while True:
            with translated_errors(reading=True):
                ids = (
                    self.conn.execute(
                        select(u.user_id).where(bound).order_by(key).limit(LEAF_CHUNK)
                    )
                    .scalars()
                    .all()
                )
            if not ids:
                return
            # The chunk's events by the (user_id, seq) key, in code-point order of users.
            q = (
                select(e.user_id, e.link)
                .where(e.user_id.in_(ids), e.app_seq <= seq)
                .order_by(self._user_order(e.user_id), e.seq)
            )
            with translated_errors(reading=True):
                rows = self.conn.execute(q).all()
            current: str | None = None
            head, length = b"", 0
            for user_id, link in rows:
                if user_id != current:
                    if current is not None:
                        yield Leaf(current, head, length)
                    current, length = user_id, 0
                head, length = bytes(link), length + 1
            if current is not None:
                yield Leaf(current, head, length)
            if len(ids) < LEAF_CHUNK:
                return
            bound = key > ids[-1]
