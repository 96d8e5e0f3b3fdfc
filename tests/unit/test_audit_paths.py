"""Audit paths (ledger.domain.audit.merkle): the streamed path of every leaf equals RFC 9162's
PATH as written there and leads to MerkleBuilder's root; a changed sibling, a wrong index
or (where the tree's shape differs) a wrong size does not; the path over recorded blocks
is the same path."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.audit.merkle import (
    Leaf,
    MerkleBuilder,
    PathBuilder,
    leaf_hash,
    node_hash,
    path_ranges,
    root_from_path,
    verify_audit_path,
)


def leaves_of(n: int, salt: int = 0) -> list[Leaf]:
    return [
        Leaf(f"user-{i:05d}", hashlib.sha256(f"{salt}/{i}".encode()).digest(), i % 5 + 1)
        for i in range(n)
    ]


def reference_mth(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return node_hash(reference_mth(hashes[:k]), reference_mth(hashes[k:]))


def reference_path(m: int, hashes: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1, PATH(m, D[n]), as written there."""
    n = len(hashes)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*reference_path(m, hashes[:k]), reference_mth(hashes[k:])]
    return [*reference_path(m - k, hashes[k:]), reference_mth(hashes[:k])]


def streamed_path(leaves: list[Leaf], index: int) -> list[bytes]:
    builder = PathBuilder(index, len(leaves))
    for leaf in leaves:
        builder.push(leaf_hash(*leaf))
    return builder.siblings()


def root_of(leaves: list[Leaf]) -> bytes:
    builder = MerkleBuilder()
    for leaf in leaves:
        builder.add(*leaf)
    return builder.root()


def shape(index: int, size: int) -> list[bool]:
    """Which side each sibling is on (True: left of the leaf), nearest first."""
    return [hi <= index for _, hi in path_ranges(index, size)]


def test_streamed_path_is_rfc9162_path_for_every_leaf_up_to_64() -> None:
    for n in range(1, 65):
        leaves = leaves_of(n)
        hashes = [leaf_hash(*leaf) for leaf in leaves]
        root = root_of(leaves)
        assert reference_mth(hashes) == root
        for m in range(n):
            path = streamed_path(leaves, m)
            assert path == reference_path(m, hashes), (n, m)
            assert verify_audit_path(leaves[m], m, n, path, root)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**16), st.data())
def test_every_path_verifies_and_no_altered_one_does(
    size: int, salt: int, data: st.DataObject
) -> None:
    leaves = leaves_of(size, salt)
    root = root_of(leaves)
    for index in range(size):
        path = streamed_path(leaves, index)
        leaf = leaves[index]
        assert verify_audit_path(leaf, index, size, path, root)
        # Any sibling with one bit flipped.
        if path:
            i = data.draw(st.integers(0, len(path) - 1), label="sibling")
            bit = data.draw(st.integers(0, 255), label="bit")
            flipped = bytearray(path[i])
            flipped[bit // 8] ^= 1 << (bit % 8)
            altered = [*path[:i], bytes(flipped), *path[i + 1 :]]
            assert not verify_audit_path(leaf, index, size, altered, root)
            assert not verify_audit_path(leaf, index, size, path[:-1], root)
            assert not verify_audit_path(leaf, index, size, [*path, path[0]], root)
        # Another leaf (head or length) at the same place.
        assert not verify_audit_path(leaf._replace(length=leaf.length + 1), index, size, path, root)
        # A wrong index, inside or outside the tree.
        wrong = data.draw(st.integers(-1, size).filter(lambda x, i=index: x != i), label="index")
        assert not verify_audit_path(leaf, wrong, size, path, root)
        # A wrong size: RFC 6962 paths do not name the size, so a size whose tree puts the
        # same siblings on the same sides checks alike (the digest's signed `users` is the
        # size); any other does not.
        other = data.draw(st.integers(0, 2 * size + 2).filter(lambda x: x != size), label="size")
        if verify_audit_path(leaf, index, other, path, root):
            assert index < other and shape(index, other) == shape(index, size)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.sampled_from([1, 2, 4, 8, 16, 64, 256]))
def test_path_over_recorded_blocks_is_the_same_path(size: int, block_size: int) -> None:
    leaves = leaves_of(size)
    builder = MerkleBuilder(block_size)
    for leaf in leaves:
        builder.add(*leaf)
    blocks = builder.blocks()
    assert [first for first, _ in blocks] == [leaf.user_id for leaf in leaves[::block_size]]
    for index in range(size):
        block = index // block_size
        inner = PathBuilder(index % block_size, min(block_size, size - block * block_size))
        for leaf in leaves[block * block_size : (block + 1) * block_size]:
            inner.push(leaf_hash(*leaf))
        outer = PathBuilder(block, len(blocks))
        for _, root in blocks:
            outer.push(root)
        assert inner.siblings() + outer.siblings() == streamed_path(leaves, index)


def test_path_builder_holds_log_n_state_and_refuses_a_wrong_count() -> None:
    assert path_ranges(5, 6) == [(4, 5), (0, 4)]
    assert len(path_ranges(0, 1 << 20)) == 20
    builder = PathBuilder(3, 4)
    for leaf in leaves_of(3):
        builder.push(leaf_hash(*leaf))
    with pytest.raises(ValueError, match="3 nodes were pushed"):
        builder.siblings()
    builder.push(leaf_hash(*leaves_of(4)[3]))
    with pytest.raises(ValueError, match="more than the 4 nodes"):
        builder.push(b"\x00" * 32)
    for index, size in ((0, 0), (-1, 3), (3, 3)):
        with pytest.raises(ValueError, match="not in a tree"):
            PathBuilder(index, size)
    with pytest.raises(ValueError, match="power of two"):
        MerkleBuilder(3)


def test_root_from_path_refuses_malformed_paths() -> None:
    leaf = leaf_hash("u", b"\x00" * 32, 1)
    assert root_from_path(leaf, 0, 1, []) == leaf
    assert root_from_path(leaf, 0, 1, [leaf]) is None  # too long
    assert root_from_path(leaf, 0, 2, []) is None  # too short
    assert root_from_path(leaf, 0, 2, [b"short"]) is None
    assert not verify_audit_path(Leaf("u", b"\x00" * 31, 1), 0, 1, [], leaf)
