"""The Merkle root over every user's (user_id, chain head, chain length), as RFC 6962
defines it, built in one pass over the users; and audit paths from one leaf to that root
(RFC 6962 §2.1.1, RFC 9162 §2.1.3), computed and checked in one pass too. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

from ledger.domain.audit.canonical import canonical_json
from ledger.domain.limits import quote

__all__ = [
    "EMPTY_ROOT",
    "Leaf",
    "MerkleBuilder",
    "PathBuilder",
    "leaf_hash",
    "node_hash",
    "path_ranges",
    "root_from_path",
    "verify_audit_path",
]

# RFC 6962: the hash of an empty tree is the hash of the empty string.
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()


class Leaf(NamedTuple):
    """One user's leaf: their id, chain head (the last link) and chain length."""

    user_id: str
    head: bytes
    length: int


def leaf_hash(user_id: str, head: bytes, length: int) -> bytes:
    """SHA-256(0x00 || canonical JSON of [user_id, head as lowercase hex, length])."""
    return hashlib.sha256(b"\x00" + canonical_json([user_id, head.hex(), length])).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an inner node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


_leaf_hash = leaf_hash
_node_hash = node_hash


class _Subtree:
    """The RFC 6962 hash of a run of nodes (leaf hashes, or the roots of equal aligned
    blocks) pushed in order, in O(log n) state: the roots of the perfect subtrees so far,
    largest first, joined right to left at the end (RFC 6962 splits at the largest power of
    two below n, so its tree is exactly those subtrees)."""

    __slots__ = ("count", "stack")

    def __init__(self) -> None:
        self.stack: list[tuple[bytes, int]] = []  # (subtree root, node count)
        self.count = 0

    def push(self, node: bytes) -> None:
        self.count += 1
        size = 1
        stack = self.stack
        while stack and stack[-1][1] == size:
            left, _ = stack.pop()
            node, size = _node_hash(left, node), size * 2
        stack.append((node, size))

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        node = self.stack[-1][0]
        for left, _ in reversed(self.stack[:-1]):
            node = _node_hash(left, node)
        return node


class MerkleBuilder:
    """The RFC 6962 Merkle Tree Hash of the users' leaves, built as they stream past in
    user_id order, holding only O(log n) hashes.

    The state is the roots of the perfect subtrees seen so far, largest first (one per set
    bit of the leaf count). RFC 6962 splits n leaves at the largest power of two below n,
    so its tree is exactly those subtrees joined right to left, which is what `root` does.

    With `block_size` (a power of two) it also keeps the root of every aligned block of
    that many leaves and the user id that starts it (`blocks`): each block is a subtree of
    the final tree, and the tree over the blocks' roots has the same shape as the tree over
    the leaves, so an audit path needs only one block's leaves again (`ledger.app.audit.paths`).

    User ids must arrive strictly increasing in Python's string order (code points). A
    store that sorts by a database collation must sort by code point too (`COLLATE "C"` on
    PostgreSQL): a different order is refused instead of giving another root.
    """

    __slots__ = ("_block", "_blocks", "_count", "_first", "_last", "_stack")

    def __init__(self, block_size: int | None = None) -> None:
        if block_size is not None and (block_size < 1 or block_size & (block_size - 1)):
            raise ValueError(f"a block size must be a power of two, got {block_size!r}")
        self._stack: list[tuple[bytes, int]] = []  # (subtree root, leaf count)
        self._last: str | None = None
        self._count = 0
        self._block = block_size
        self._blocks: list[tuple[str, bytes]] = []  # (first user id, root) of whole blocks
        self._first = ""  # the user id that starts the block being built

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
        block = self._block
        if block is not None and self._count % block == 0:
            self._first = user_id
        self._last = user_id
        self._count += 1
        node, size = _leaf_hash(user_id, head, length), 1
        if block == 1:
            self._blocks.append((user_id, node))
        stack = self._stack
        while stack and stack[-1][1] == size:
            left, _ = stack.pop()
            node, size = _node_hash(left, node), size * 2
            if size == block:
                self._blocks.append((self._first, node))
        stack.append((node, size))

    def root(self) -> bytes:
        """The root over the leaves added so far (`EMPTY_ROOT` for none); more may follow."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][0]
        for left, _ in reversed(self._stack[:-1]):
            node = _node_hash(left, node)
        return node

    def blocks(self) -> list[tuple[str, bytes]]:
        """With a block size: (first user id, subtree root) of each block of that many
        leaves in order, the last one partial when the count is not a multiple of it
        (none for no leaves). Its roots are the blocks' RFC 6962 hashes."""
        if self._block is None:
            raise ValueError("this builder keeps no blocks (no block size given)")
        out = list(self._blocks)
        partial = [node for node, size in self._stack if size < self._block]
        if partial:
            node = partial[-1]
            for left in reversed(partial[:-1]):
                node = _node_hash(left, node)
            out.append((self._first, node))
        return out


def path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges [lo, hi) whose subtree hashes are the audit path of leaf `index` in a
    tree of `size` leaves, nearest the leaf first (RFC 9162 §2.1.3.1: PATH(m, D[n]) is
    PATH(m, D[0:k]) : MTH(D[k:n]) for m < k, else PATH(m - k, D[k:n]) : MTH(D[0:k]), k the
    largest power of two below n). With the leaf itself they tile [0, size)."""
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        raise ValueError(f"leaf index {index!r} is not in a tree of {size!r} leaves")
    lo, hi = 0, size
    ranges: list[tuple[int, int]] = []
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


class PathBuilder:
    """The audit path of node `index` among `size` nodes pushed in order, in O(log n)
    state: each sibling range of `path_ranges` is hashed as its nodes stream past (the
    ranges are disjoint, so one is being built at a time), and never more is held.

    The nodes are leaf hashes for a path to the root over leaves; they may as well be the
    roots of aligned equal blocks (`MerkleBuilder.blocks`), for the part of a path above
    the blocks."""

    __slots__ = ("_hashes", "_next", "_order", "_pos", "_ranges", "_sub", "index", "node", "size")

    def __init__(self, index: int, size: int) -> None:
        self._ranges = path_ranges(index, size)
        self.index, self.size = index, size
        self._order = sorted(range(len(self._ranges)), key=lambda i: self._ranges[i][0])
        self._hashes: list[bytes | None] = [None] * len(self._ranges)
        self._next = 0
        self._sub = _Subtree()
        self._pos = 0
        self.node: bytes | None = None  # the node at `index`, once pushed

    @property
    def count(self) -> int:
        """How many nodes were pushed."""
        return self._pos

    def push(self, node: bytes) -> None:
        pos = self._pos
        if pos >= self.size:
            raise ValueError(f"more than the {self.size} nodes of the tree were pushed")
        self._pos = pos + 1
        if pos == self.index:
            self.node = node
            return
        k = self._order[self._next]
        self._sub.push(node)
        if pos == self._ranges[k][1] - 1:
            self._hashes[k] = self._sub.root()
            self._sub = _Subtree()
            self._next += 1

    def siblings(self) -> list[bytes]:
        """The path, nearest the node first, once all `size` nodes were pushed."""
        if self._pos != self.size:
            raise ValueError(f"{self._pos} nodes were pushed, the tree has {self.size}")
        return [h for h in self._hashes if h is not None]


def root_from_path(node: bytes, index: int, size: int, siblings: Sequence[bytes]) -> bytes | None:
    """The root that node `index` of a tree of `size` leads to along `siblings`, exactly as
    RFC 9162 §2.1.3.2 checks an inclusion proof; None where that check fails before the
    root (an index outside the tree, a path too long or too short, a sibling that is not
    32 bytes)."""
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, node
    for p in siblings:
        if not isinstance(p, bytes) or len(p) != 32 or sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_audit_path(
    leaf: Leaf, index: int, size: int, siblings: Sequence[bytes], root: bytes
) -> bool:
    """Whether `leaf`, as leaf `index` of a tree of `size` leaves, leads along `siblings`
    (nearest the leaf first) to `root` (RFC 6962 §2.1.1, checked as RFC 9162 §2.1.3.2)."""
    user_id, head, length = leaf
    if not isinstance(user_id, str) or not isinstance(head, bytes) or len(head) != 32:
        return False
    if type(length) is not int or length < 0:
        return False
    return root_from_path(_leaf_hash(user_id, head, length), index, size, siblings) == root
