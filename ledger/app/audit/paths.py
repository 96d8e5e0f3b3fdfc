"""Audit paths against recorded digests (docs/audit.md): the RFC 6962 proof that one user's
leaf, as of a digest's `seq`, is part of the tree whose root the digest pins.

The path is computed in bounded memory. The store records, with each digest, the root of
every aligned block of `block_size` leaves (`ledger.app.audit.digest`): each is a node of
the digest's tree, and the tree over the block roots has the same shape as the tree over
the leaves, so the path is the path within the user's block, recomputed from the events as
of the digest's `seq` (one block of leaf hashes held), followed by the block's path among
the block roots (streamed, O(log n) state). A block that no longer hashes to what the
digest pinned, because an event it covers changed, gives a path that does not reach the
root: `Proof.holds` is then false.
"""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from ledger.app.ports import DigestRecords, DigestSnapshot, RecordedDigest
from ledger.domain.audit.digest import Digest, DigestError
from ledger.domain.audit.merkle import (
    Leaf,
    PathBuilder,
    leaf_hash,
    root_from_path,
    verify_audit_path,
)
from ledger.domain.limits import quote
from ledger.errors import LedgerError

__all__ = ["Proof", "StoreChanged", "audit_path", "read_recorded", "recorded_proof"]


class StoreChanged(LedgerError):
    """The store no longer holds the leaves a recorded digest was taken over: no path can
    be given against it. One line."""


@dataclass(frozen=True)
class Proof:
    """The audit path of `leaf` (a user's leaf as of the digest's `seq`) to the root of
    the recorded digest `digest_id`: leaf `leaf_index` of `tree_size`, `siblings` nearest
    the leaf first. `document` is the digest as it was written (signed when a key was
    configured); `root` is the root it states."""

    digest_id: int
    leaf: Leaf
    leaf_index: int
    tree_size: int
    siblings: list[bytes]
    root: bytes
    document: dict[str, Any]

    @property
    def holds(self) -> bool:
        """Whether the leaf leads along the path to the digest's root."""
        return verify_audit_path(
            self.leaf, self.leaf_index, self.tree_size, self.siblings, self.root
        )

    @property
    def computed_root(self) -> bytes | None:
        """The root the leaf and path lead to."""
        return root_from_path(leaf_hash(*self.leaf), self.leaf_index, self.tree_size, self.siblings)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest_id": self.digest_id,
            "leaf": {
                "user_id": self.leaf.user_id,
                "head": self.leaf.head.hex(),
                "length": self.leaf.length,
            },
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "siblings": [s.hex() for s in self.siblings],
            "root": self.root.hex(),
            "digest": self.document,
        }


def audit_path(records: DigestRecords, user_id: str, digest_id: int | None = None) -> Proof:
    """The audit path of `user_id` against the recorded digest `digest_id` (None: the
    newest), read from one snapshot. LedgerError (one line) when no such digest is recorded
    or the user has no leaf in it (no event up to its `seq`); StoreChanged when the store no
    longer has the digest's blocks of leaves. A path that does not reach the root (an event
    the digest covers changed since) is returned: see `Proof.holds`."""
    with records.snapshot() as snap:
        recorded = snap.recorded(digest_id)
        if recorded is None:
            if digest_id is None:
                raise LedgerError(
                    "no digest is recorded in the store: take one with `ledger digest`"
                )
            raise LedgerError(f"no digest #{digest_id} is recorded in the store")
        return recorded_proof(snap, recorded, user_id)


def recorded_proof(snap: DigestSnapshot, recorded: RecordedDigest, user_id: str) -> Proof:
    """`audit_path` within a snapshot the caller holds, against `recorded` (read from it):
    a subject export reads the user's events and the path from one snapshot."""
    document, digest = read_recorded(recorded)
    return _path(snap, recorded, document, digest, user_id)


def read_recorded(recorded: RecordedDigest) -> tuple[dict[str, Any], Digest]:
    """The recorded digest's document as written and the digest it states; StoreChanged
    when the recorded text is not a digest any more."""
    # The document as written is what was published; the columns beside it only repeat it.
    try:
        document = json.loads(recorded.document)
        return document, Digest.from_json(document)
    except (ValueError, DigestError) as exc:
        raise StoreChanged(
            f"digest #{recorded.id}: the recorded document is not a digest any more ({exc})"
        ) from None


def _path(
    snap: DigestSnapshot,
    recorded: RecordedDigest,
    document: dict[str, Any],
    digest: Digest,
    user_id: str,
) -> Proof:
    size, block_size, seq = digest.users, recorded.block_size, digest.seq
    where = f"digest #{recorded.id} (seq {seq:,})"
    none = LedgerError(f"user {quote(user_id)} has no leaf in {where}: no event up to its seq")
    if size == 0:
        raise none
    if block_size < 1 or block_size & (block_size - 1):
        raise StoreChanged(f"{where}: its recorded block size {block_size!r} is not a power of two")
    blocks = -(-size // block_size)
    # The user's block: the last one starting at or before the user id (code-point order).
    block, first, count = -1, "", 0
    with closing(snap.block_starts(recorded.id)) as starts:
        for i, start in enumerate(starts):
            count += 1
            if start <= user_id:
                block, first = i, start
    if count != blocks:
        raise StoreChanged(
            f"{where}: the store holds {count:,} block roots for it, its {size:,} leaves make "
            f"{blocks:,}: the recorded digest was changed"
        )
    if block < 0:
        raise none
    width = min(block_size, size - block * block_size)
    # One block of leaf hashes (at most `block_size`) is held: the user's place in it is
    # known only once it has been read.
    hashes: list[bytes] = []
    found: Leaf | None = None
    index = -1
    with closing(snap.leaves_as_of(first, seq)) as leaves:
        for leaf in leaves:
            if len(hashes) == width:
                break
            if not hashes and leaf.user_id != first:
                raise StoreChanged(
                    f"{where}: its block {block:,} starts at user {quote(first)}, the store's "
                    f"leaves as of seq {seq:,} at {quote(leaf.user_id)}: the events it covers "
                    "changed since"
                )
            if leaf.user_id == user_id:
                found, index = leaf, len(hashes)
            hashes.append(leaf_hash(*leaf))
    if len(hashes) != width:
        raise StoreChanged(
            f"{where}: block {block:,} has {width:,} leaves, the store has {len(hashes):,} "
            f"as of seq {seq:,}: the events it covers changed since"
        )
    if found is None:
        raise none
    inner = PathBuilder(index, width)
    for h in hashes:
        inner.push(h)
    outer = PathBuilder(block, blocks)
    try:
        with closing(snap.block_roots(recorded.id)) as roots:
            for root in roots:
                outer.push(bytes(root))
        above = outer.siblings()
    except ValueError:
        raise StoreChanged(f"{where}: its recorded block roots were changed") from None
    return Proof(
        digest_id=recorded.id,
        leaf=found,
        leaf_index=block * block_size + index,
        tree_size=size,
        siblings=inner.siblings() + above,
        root=bytes.fromhex(digest.root),
        document=document,
    )
