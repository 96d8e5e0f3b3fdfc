"""The Merkle root over every user's (user_id, chain head, chain length), as RFC 6962
defines it, built in one pass over the users. Pure."""

from __future__ import annotations

import hashlib

from ledger.domain.audit.canonical import canonical_json
from ledger.domain.limits import quote

__all__ = ["EMPTY_ROOT", "MerkleBuilder"]

# RFC 6962: the hash of an empty tree is the hash of the empty string.
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()


def _leaf_hash(user_id: str, head: bytes, length: int) -> bytes:
    return hashlib.sha256(b"\x00" + canonical_json([user_id, head.hex(), length])).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleBuilder:
    """The RFC 6962 Merkle Tree Hash of the users' leaves, built as they stream past in
    user_id order, holding only O(log n) hashes.

    The state is the roots of the perfect subtrees seen so far, largest first (one per set
    bit of the leaf count). RFC 6962 splits n leaves at the largest power of two below n,
    so its tree is exactly those subtrees joined right to left, which is what `root` does.

    User ids must arrive strictly increasing in Python's string order (code points). A
    store that sorts by a database collation must sort by code point too (`COLLATE "C"` on
    PostgreSQL): a different order is refused instead of giving another root.
    """

    __slots__ = ("_count", "_last", "_stack")

    def __init__(self) -> None:
        self._stack: list[tuple[bytes, int]] = []  # (subtree root, leaf count)
        self._last: str | None = None
        self._count = 0

    @property
    def count(self) -> int:
        """How many leaves were added."""
        return self._count

    def add(self, user_id: str, head: bytes, length: int) -> None:
        if not isinstance(user_id, str):
            raise ValueError(f"user id {quote(user_id)} is not a string")
        if self._last is not None and not user_id > self._last:
            raise ValueError(
                f"Merkle leaves must be sorted by user id, strictly increasing: "
                f"{quote(user_id)} came after {quote(self._last)}"
            )
        if isinstance(head, bytearray | memoryview):
            head = bytes(head)  # as some drivers hand back a stored link
        if not isinstance(head, bytes) or len(head) != 32:
            raise ValueError(f"chain head of {quote(user_id)} is not 32 bytes")
        if type(length) is not int or length < 0:
            raise ValueError(f"chain length of {quote(user_id)} is not a count: {length!r}")
        self._last = user_id
        self._count += 1
        node, size = _leaf_hash(user_id, head, length), 1
        stack = self._stack
        while stack and stack[-1][1] == size:
            left, _ = stack.pop()
            node, size = _node_hash(left, node), size * 2
        stack.append((node, size))

    def root(self) -> bytes:
        """The root over the leaves added so far (`EMPTY_ROOT` for none); more may follow."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][0]
        for left, _ in reversed(self._stack[:-1]):
            node = _node_hash(left, node)
        return node
