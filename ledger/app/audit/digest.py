"""`ledger digest`: a small document that pins the store's past (docs/audit.md).

The Merkle root over every user's (user_id, chain head, chain length), sorted by user id,
the highest application `seq` it covers, the numbers of users and events, the record time,
the pinned policy hashes, and the chain encoding the heads are under. Kept out of the
operator's reach (signed, see `ledger.app.audit.signing`), it lets `ledger verify --digest`
prove later that no event applied before it has changed, whatever the store says by then.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from datetime import datetime

from ledger.app.ports import AuditSource
from ledger.domain.audit.digest import Digest
from ledger.domain.audit.merkle import MerkleBuilder
from ledger.errors import LedgerError

__all__ = ["BLOCK_SIZE", "TakenDigest", "take_blocked_digest", "take_digest"]

_HEX = frozenset("0123456789abcdef")

# Leaves per recorded block (`ledger.app.audit.paths`): an audit path recomputes one block
# from the events, and a store of 190,000 users keeps 47 block roots per digest.
BLOCK_SIZE = 4096


@dataclass(frozen=True)
class TakenDigest:
    """A digest and the (first user id, root) of each block of `block_size` leaves of its
    tree, in leaf order, as the store records them beside it."""

    digest: Digest
    block_size: int
    blocks: list[tuple[str, bytes]]


def take_digest(source: AuditSource, now: datetime) -> Digest:
    """The digest of the store behind `source` at `now` (its record time), read from one
    snapshot in which every event up to the highest `seq` is committed: the chain heads
    the users rows hold then are exactly the chains up to that `seq`."""
    return take_blocked_digest(source, now).digest


def take_blocked_digest(
    source: AuditSource, now: datetime, block_size: int = BLOCK_SIZE
) -> TakenDigest:
    """`take_digest`, with the roots of its blocks of `block_size` leaves."""
    builder = MerkleBuilder(block_size)
    events = 0
    with source.snapshot(wait_for_writers=True) as snap, closing(snap.users()) as stored:
        seq = snap.max_app_seq()
        pins = snap.pins()
        # The heads are the store's, under the encoding it records (none: 1).
        encoding = snap.chain_encoding() or 1
        for user in stored:
            if user.events <= 0:
                continue  # no chain; verify leaves such users out of the root as well
            try:
                builder.add(user.user_id, user.chain_head, user.events)
            except ValueError as exc:
                raise LedgerError(f"cannot take a digest: {exc}: run `ledger verify`") from None
            events += user.events
    for version, hashed in sorted(pins.items()):
        if len(hashed) != 64 or not set(hashed) <= _HEX:
            # Pinned by the migration for a version this release does not ship.
            raise LedgerError(
                f"cannot take a digest: policy {version} is pinned without a content hash "
                "(decided before pinning, by a file this release does not ship): "
                "run `ledger verify`"
            )
    digest = Digest(
        root=builder.root().hex(),
        seq=seq,
        users=builder.count,
        events=events,
        recorded_at=now,
        policies=pins,
        chain_encoding=encoding,
    )
    return TakenDigest(digest, block_size, builder.blocks())
