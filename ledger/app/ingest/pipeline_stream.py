"""A Kafka reader's parallel ingest: this process polls and writes, worker processes
decode and plan (`ledger.app.ingest.pipeline_worker`), up to `depth` batches ahead.

Each polled batch is split among the workers by record key (`shard_of_key`: producers key
events by user id, so each worker plans its own users), sent raw, and written back in one
transaction with the batch's positions by `write_parts`, the file replay's writer. What the
parts could not foresee (two workers planning one user, an event id claimed twice, another
writer's events or positions, a value the database refuses) is applied on the projector's
sequential path for that batch, after which the workers reload their users and plan the
batches in flight again. `drop` forgets every batch in flight: a consumer calls it when
its partitions change or a batch fails, and polls them again from the stored positions.

The same guarantees as the sequential path: one transaction per batch with its positions,
dead letters published before it commits, the user's sequence checked at the write.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kafka.consumer.fetcher import ConsumerRecord

from ledger.app.ingest.pipeline import (
    DEPTH,
    _Unforeseen,
    _Workers,
    worker_specs,
    write_parts,
)
from ledger.app.ingest.pipeline_worker import ShardPlan
from ledger.app.ingest.plan import BatchResult, PositionKey
from ledger.app.ingest.projector import BeforeCommit, Projector
from ledger.app.ingest.shards import shard_of_key
from ledger.app.ports import ParallelStore, StoreConflict, StoreRefused
from ledger.codecs.avro import AvroCodec
from ledger.sources.kafka import Fetched, to_source_record
from ledger.sources.records import SourceIdentity

log = logging.getLogger("ledger.ingest")


@dataclass(slots=True)
class _InFlight:
    number: int
    records: list[ConsumerRecord]  # as polled, for the sequential path
    stored: dict[PositionKey, int]  # positions its records were screened against
    positions: dict[PositionKey, int]  # once it is applied
    recorded_at: datetime
    parts: dict[int, ShardPlan] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """A batch once committed: its records as polled, and what applying them did."""

    records: list[ConsumerRecord]
    result: BatchResult


class StreamPipeline:
    """Batches of Kafka records in, committed batches out, in the order they went in."""

    def __init__(
        self,
        projector: Projector,
        store: ParallelStore,
        open_store: Callable[[], ParallelStore],
        key: str,
        *,
        workers: int,
        codec: AvroCodec | None = None,
        depth: int = DEPTH,
    ) -> None:
        self.projector = projector
        self.store = store
        self.key = key
        self.depth = depth
        self.generation = 0
        self.number = 0
        self.inflight: deque[_InFlight] = deque()
        # Positions after the last batch sent: the next batch is screened against them.
        self.ahead: dict[PositionKey, int] = {}
        self.pool = _Workers(
            worker_specs(projector, open_store, key, workers=workers, codec=codec, depth=depth)
        )

    def __enter__(self) -> StreamPipeline:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()

    @property
    def full(self) -> bool:
        return len(self.inflight) >= self.depth

    @property
    def busy(self) -> bool:
        return bool(self.inflight)

    def positioned(self, partitions: Iterable[int], stored: Mapping[int, int]) -> None:
        """The store's positions of `partitions`, as read when the reader sought them
        (none: from the beginning): the batches after them are screened against them."""
        for partition in partitions:
            self.ahead[(self.key, partition)] = stored.get(partition, 0)

    def submit(self, records: Sequence[ConsumerRecord], recorded_at: datetime) -> None:
        """Send a polled batch to the workers (at most `depth` batches are in flight)."""
        stored: dict[PositionKey, int] = {}
        positions: dict[PositionKey, int] = {}
        shares: list[list[Fetched]] = [[] for _ in range(len(self.pool))]
        shards = len(shares)
        for msg in records:
            k = (self.key, msg.partition)
            if k not in stored:
                stored[k] = positions[k] = self.ahead.get(k, 0)
            positions[k] = max(positions[k], msg.offset + 1)
            shares[shard_of_key(msg.key, msg.partition, shards)].append(Fetched.of(msg))
        batch = _InFlight(self.number, list(records), stored, positions, recorded_at)
        self.inflight.append(batch)
        for shard, share in enumerate(shares):
            self.pool.send(
                shard, ("batch", batch.number, self.generation, stored, recorded_at, share)
            )
        self.ahead.update(positions)
        self.number += 1

    def drop(self) -> None:
        """Forget every batch in flight; nothing of them is written. The caller reads them
        again from the stored positions (and tells them with `positioned`)."""
        self.generation += 1
        self.inflight.clear()
        self.ahead = {}
        self.pool.broadcast(("drop", self.generation))

    def next_written(
        self,
        timeout: float,
        *,
        identity: SourceIdentity | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> StreamBatch | None:
        """Write the oldest batch in flight once all its parts are in; None when they were
        not within `timeout` seconds. A store failure (StoreUnavailable) reaches the caller
        with nothing of the batch written; the batches in flight stay until `drop`."""
        if not self.inflight:
            return None
        batch = self.inflight[0]
        while len(batch.parts) < len(self.pool):
            message = self.pool.receive(timeout, self.generation)
            if message is None:
                return None
            if not isinstance(message, ShardPlan) or message.generation != self.generation:
                continue
            for waiting in self.inflight:
                if waiting.number == message.batch:
                    waiting.parts[message.shard] = message
        identities = {self.key: identity} if identity is not None else None
        try:
            plan = write_parts(
                self.store,
                [batch.parts[s].plan for s in range(len(self.pool))],
                batch.positions,
                batch.stored,
                identities=identities,
                before_commit=before_commit,
            )
            result = plan.result()
            self.inflight.popleft()
            self.pool.broadcast(("done", batch.number))
        except (_Unforeseen, StoreConflict, StoreRefused) as exc:
            log.info(
                "batch of %d records applied on the sequential path: %s",
                len(batch.records),
                exc,
                extra={"records": len(batch.records), "reason": str(exc)},
            )
            result = self._apply_sequentially(batch, identity, before_commit)
        return StreamBatch(batch.records, result)

    def _apply_sequentially(
        self,
        batch: _InFlight,
        identity: SourceIdentity | None,
        before_commit: BeforeCommit | None,
    ) -> BatchResult:
        codec = AvroCodec()
        records = [to_source_record(m, codec) for m in batch.records]
        self.projector.forget()
        try:
            result = self.projector.apply_batch(
                records, batch.recorded_at, before_commit=before_commit, identity=identity
            )
        finally:
            self.projector.forget()  # the workers' plans move these users on, not this cache
        self.inflight.popleft()
        # The batches after it were screened against positions the store may not hold now
        # (another writer's); their plans are checked against the store's at the write.
        self.generation += 1
        for waiting in self.inflight:
            waiting.parts.clear()
        self.pool.broadcast(("reset", batch.number, self.generation))
        return result


def pipelined(
    pipeline: StreamPipeline,
    batches: Iterable[list[ConsumerRecord]],
    recorded_at: datetime,
    *,
    identity: SourceIdentity | None = None,
    poll_s: float = 1.0,
) -> Iterator[StreamBatch]:
    """Every batch of `batches` through `pipeline`, yielded once committed (a topic replay
    reads ahead while the workers plan and this process writes)."""
    for records in batches:
        while pipeline.full:
            written = pipeline.next_written(poll_s, identity=identity)
            if written is not None:
                yield written
        pipeline.submit(records, recorded_at)
    while pipeline.busy:
        written = pipeline.next_written(poll_s, identity=identity)
        if written is not None:
            yield written
