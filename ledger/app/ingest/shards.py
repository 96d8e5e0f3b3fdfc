"""Which worker of a parallel replay owns a user. Pure.

Users are independent (a user's history depends only on that user's events), so workers
that own disjoint sets of users can plan at the same time. The owner must be the same in
every process and on every run, so Python's salted `hash` will not do.
"""

from __future__ import annotations

import zlib

__all__ = ["owns", "shard_of", "shard_of_key"]


def shard_of(user_id: object, shards: int) -> int:
    """The shard (0 .. shards-1) of a user id. Anything that is not a text id (a record
    that names no user, or names one in the wrong type) belongs to shard 0, which
    dead-letters it."""
    if shards <= 1 or not isinstance(user_id, str):
        return 0
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % shards


def owns(shard: int, shards: int) -> _Owner:
    """A picklable predicate: is this user id shard `shard`'s?"""
    return _Owner(shard, shards)


class _Owner:
    __slots__ = ("shard", "shards")

    def __init__(self, shard: int, shards: int) -> None:
        self.shard = shard
        self.shards = shards

    def __call__(self, user_id: object) -> bool:
        return shard_of(user_id, self.shards) == self.shard


def shard_of_key(key: bytes | None, partition: int, shards: int) -> int:
    """The shard of a Kafka record, from its key, before it is decoded: producers key
    events by user id (`ledger publish` does), so this is the user's `shard_of`. A record
    without a key goes by its partition. Any choice is safe (the writer catches two shards
    planning one user: `ledger.app.ingest.pipeline`); this one makes it rare."""
    if shards <= 1:
        return 0
    if key is None:
        return partition % shards
    return zlib.crc32(key) % shards
