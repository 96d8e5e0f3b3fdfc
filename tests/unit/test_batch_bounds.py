"""Batches end at their record count or their bytes, whichever comes first (a stream of
large records must not make one batch the record limit times the count), and a Kafka
record's worker follows its key."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ledger.app.ingest.replay import _file_batches
from ledger.app.ingest.shards import shard_of, shard_of_key
from ledger.codecs.avro import AvroCodec
from tests.factories import line, signup


def _msg(size: int | None) -> Any:
    return SimpleNamespace(value=None if size is None else b"x" * size)


@given(
    st.lists(st.one_of(st.none(), st.integers(0, 300)), max_size=60),
    st.integers(1, 400),
)
def test_a_poll_is_cut_into_consecutive_batches_within_the_bytes(
    sizes: list[int | None], limit: int
) -> None:
    from ledger.sources.kafka import by_bytes

    records = [_msg(n) for n in sizes]
    parts = list(by_bytes(records, limit))
    assert [r for part in parts for r in part] == records  # all of them, in order, once
    assert all(parts)
    weight = [sum(len(r.value or b"") for r in part) for part in parts]
    for part, w in zip(parts, weight, strict=True):
        assert len(part) == 1 or w <= limit  # a larger record goes alone
    for part, nxt in pairwise(parts):
        # No cut where the next record would still have fitted.
        assert sum(len(r.value or b"") for r in part) + len(nxt[0].value or b"") > limit


def test_a_file_batch_ends_at_its_bytes_before_its_count(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    lines = [line(signup(i, f"u{i}")) for i in range(40)]
    path.write_text("".join(line + "\n" for line in lines))
    width = len(lines[0]) + 1
    reached: dict[int, int] = {}
    batches = list(_file_batches(path, "k", 0, 1000, 10 * width, reached, AvroCodec()))
    assert sum(len(b) for b in batches) == 40
    assert len(batches) >= 4  # bytes, not the count of 1000, ended them
    assert all(len(b) <= 11 for b in batches)
    assert all(len(b) >= 9 for b in batches[:-1])
    by_count = list(_file_batches(path, "k", 0, 7, 1 << 30, {}, AvroCodec()))
    assert [len(b) for b in by_count] == [7, 7, 7, 7, 7, 5]


@given(st.text(max_size=30), st.integers(0, 50), st.integers(1, 9))
def test_a_record_keyed_by_its_user_goes_to_that_users_worker(
    user: str, partition: int, shards: int
) -> None:
    key = user.encode("utf-8", "surrogatepass")
    assert shard_of_key(key, partition, shards) == shard_of(user, shards)
    assert 0 <= shard_of_key(None, partition, shards) < shards
