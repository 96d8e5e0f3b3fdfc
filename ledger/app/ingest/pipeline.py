"""Parallel ingest: worker processes plan, this process only writes. A file's replay is
here; a Kafka consumer's is `ledger.app.ingest.pipeline_stream`, on the same parts.

Users are sharded over N workers (`ledger.app.ingest.shards`); each plans its users'
part of every batch with the one fold (`plan_batch`), chain links and history rows
included (`ledger.app.ingest.pipeline_worker`). The writer merges a batch's parts into
one plan and writes it in one transaction with the file's position, exactly as a
sequential replay would have (`merge_plans` puts events back in record order, so
application order, chains and answers do not depend on the number of workers).

Whatever the parts could not foresee falls back to the sequential path for that one
batch: the stored position moved (another writer), another writer's events for the same
users (StoreConflict), an event id that two workers' users both claim, or a value the
database refuses (StoreRefused, bisected there). `Projector.apply_batch` applies the
batch from the file's records, and the workers reload and plan again from the batch
after it.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from ledger.app.ingest.pipeline_worker import (
    ShardDone,
    ShardFailed,
    ShardPlan,
    ShardUnavailable,
    WorkerSpec,
    run_worker,
)
from ledger.app.ingest.plan import BatchResult, EncodedPlan, PositionKey, merge_encoded
from ledger.app.ingest.projector import BeforeCommit, Projector
from ledger.app.ports import ParallelStore, StoreConflict, StoreRefused, StoreUnavailable
from ledger.codecs.avro import AvroCodec
from ledger.errors import LedgerError
from ledger.sources.files import read_records
from ledger.sources.records import SourceIdentity

# Batches a worker plans ahead of the writer's last commit: enough to keep the writer
# busy, few enough that memory holds only a few batches' plans.
DEPTH = 2
# A worker's cached users, in estimated bytes (`cached_bytes`). Small: a worker needs only
# the users of the batches in flight, and a user it dropped costs one lookup when it comes
# back; and it keeps the whole process tree's memory flat, since it is full early.
WORKER_CACHE_BYTES = 24 << 20
# How long the writer waits for a plan before it looks whether the workers are alive.
POLL_S = 1.0


class _Unforeseen(Exception):
    """The merged plan cannot be written as planned; the batch goes the sequential way."""


@dataclass(frozen=True, slots=True)
class WrittenBatch:
    records: int
    reached: int  # bytes of the file read
    result: BatchResult


class _Workers:
    """The worker processes and the queues between them and the writer."""

    def __init__(self, specs: Sequence[WorkerSpec]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out: Queue[Any] = ctx.Queue()
        self.controls: list[Queue[Any]] = [ctx.Queue() for _ in specs]
        self.procs: list[BaseProcess] = []
        try:
            for spec, control in zip(specs, self.controls, strict=True):
                proc: BaseProcess = ctx.Process(
                    target=run_worker, args=(spec, self.out, control), daemon=True
                )
                proc.start()
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.controls)

    def send(self, shard: int, message: tuple[Any, ...]) -> None:
        self.controls[shard].put(message)

    def broadcast(self, message: tuple[Any, ...]) -> None:
        for control in self.controls:
            control.put(message)

    def receive(self, timeout: float, generation: int) -> Any:
        """The next message of any worker, or None after `timeout` seconds. A worker
        that failed or vanished stops the run with one line; one whose store failed while
        planning for `generation` fails the batch with StoreUnavailable."""
        try:
            message = self.out.get(timeout=timeout)
        except queue.Empty:
            for shard, proc in enumerate(self.procs):
                if not proc.is_alive():
                    raise LedgerError(
                        f"worker {shard} stopped (exit code {proc.exitcode}); nothing after "
                        "the last committed batch was applied, and running again continues "
                        "from there"
                    ) from None
            return None
        if isinstance(message, ShardFailed):
            raise LedgerError(f"worker {message.shard} failed: {message.error}")
        if isinstance(message, ShardUnavailable):
            if message.generation == generation:
                raise StoreUnavailable(message.error)
            return None
        return message

    def close(self) -> None:
        self.broadcast(("stop",))
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for q in (self.out, *self.controls):
            q.cancel_join_thread()  # a plan nobody reads must not keep this process up
            q.close()


def worker_specs(
    projector: Projector,
    open_store: Callable[[], ParallelStore],
    key: str,
    *,
    workers: int,
    path: Path | None = None,
    start: int = 0,
    batch_size: int = 0,
    batch_bytes: int = 0,
    record_time: datetime = datetime.min,
    codec: AvroCodec | None = None,
    depth: int = DEPTH,
) -> list[WorkerSpec]:
    """One spec per shard: a file's workers read `path` themselves from `start`, cutting
    batches as given; with no path they plan the batches the writer sends."""
    return [
        WorkerSpec(
            shard=shard,
            shards=workers,
            open_store=open_store,
            policies=projector.policies,
            phone_key=projector.phone_key,
            path=path,
            key=key,
            start=start,
            batch_size=batch_size,
            batch_bytes=batch_bytes,
            default_recorded_at=record_time,
            cache_bytes=WORKER_CACHE_BYTES,
            depth=depth,
            parent_pid=os.getpid(),
            codec=codec,
        )
        for shard in range(workers)
    ]


def write_parts(
    store: ParallelStore,
    parts: Sequence[EncodedPlan],
    positions: Mapping[PositionKey, int],
    screened_against: Mapping[PositionKey, int],
    *,
    identities: Mapping[str, SourceIdentity] | None = None,
    before_commit: BeforeCommit | None = None,
) -> EncodedPlan:
    """Merge a batch's parts and write them in one transaction with `positions`, the
    batch's source positions. Raises _Unforeseen when the parts cannot be written as they
    are: two of them claim one event id or plan one user, or the store's positions are not
    those the records were screened against (another writer moved them)."""
    plan = merge_encoded(parts, positions)
    ids = [row[0] for _, row in plan.events]
    if len(set(ids)) != len(ids):
        raise _Unforeseen("two workers' users claim one event id")
    users = [row[0] for row in plan.users]
    if len(set(users)) != len(users):
        raise _Unforeseen("two workers planned one user")
    if identities:
        plan.rest.identities = dict(identities)
    with store.transaction() as tx:
        stored = tx.lock_positions(set(positions))
        if any(stored.get(k, 0) != screened_against.get(k, 0) for k in positions):
            raise _Unforeseen("another writer moved the source's positions")
        tx.lock_users(users)
        tx.write_encoded(plan)
        if before_commit is not None:
            before_commit(plan.rest.dead_letters)
    if plan.rest.erasures:
        store.scrub()
    store.reclaim()
    return plan


def replay_file_parallel(
    projector: Projector,
    store: ParallelStore,
    open_store: Callable[[], ParallelStore],
    path: Path,
    key: str,
    start: int,
    *,
    workers: int,
    batch_size: int,
    batch_bytes: int,
    record_time: datetime,
    codec: AvroCodec | None = None,
) -> Iterator[WrittenBatch]:
    """Apply `path` from record `start` on with `workers` planning processes, yielding
    each batch once it is committed. The same result as `projector.apply_batches` over the
    same batches, whatever `workers` is."""
    writer = _Writer(projector, store, path, key, start, record_time, codec)
    specs = worker_specs(
        projector,
        open_store,
        key,
        workers=workers,
        path=path,
        start=start,
        batch_size=batch_size,
        batch_bytes=batch_bytes,
        record_time=record_time,
        codec=codec,
    )
    pool = _Workers(specs)
    try:
        yield from _write_in_order(writer, pool)
    finally:
        pool.close()


def _write_in_order(writer: _Writer, pool: _Workers) -> Iterator[WrittenBatch]:
    workers = len(pool)
    generation = 0
    pending: dict[int, dict[int, ShardPlan]] = {}
    totals: dict[int, int] = {}  # shard -> batches it cut
    number = 0  # the next batch to write
    while len(totals) < workers or any(number < t for t in totals.values()):
        parts = pending.get(number)
        if parts is not None and len(parts) == workers:
            del pending[number]
            ordered = [parts[s] for s in range(workers)]
            try:
                written = writer.write(ordered)
                pool.broadcast(("done", number))
            except (_Unforeseen, StoreConflict, StoreRefused):
                written = writer.apply_sequentially(ordered[0])
                generation += 1
                pending.clear()  # planned from a state that the batch did not leave
                pool.broadcast(("reset", number, generation))
            number += 1
            yield written
            continue
        message = pool.receive(POLL_S, generation)
        if isinstance(message, ShardDone):
            totals[message.shard] = message.batches
        elif message is not None and message.generation == generation and message.batch >= number:
            pending.setdefault(message.batch, {})[message.shard] = message
    if len(set(totals.values())) > 1:
        raise LedgerError(f"replay workers cut different batches: {totals}")


class _Writer:
    def __init__(
        self,
        projector: Projector,
        store: ParallelStore,
        path: Path,
        key: str,
        start: int,
        record_time: datetime,
        codec: AvroCodec | None,
    ) -> None:
        self.projector = projector
        self.store = store  # the projector's, able to write rows built ahead
        self.path = path
        self.key = key
        self.expected = start  # the file's stored position before the next batch
        self.record_time = record_time
        self.codec = codec

    def write(self, parts: list[ShardPlan]) -> WrittenBatch:
        first = parts[0]
        position = (self.key, 0)
        plan = write_parts(
            self.store,
            [p.plan for p in parts],
            {position: first.end},
            {position: self.expected},
        )
        self.expected = first.end
        return WrittenBatch(first.records, first.reached, plan.result())

    def apply_sequentially(self, part: ShardPlan) -> WrittenBatch:
        """The batch of `part` from the file's records, on the projector's own path."""
        items = read_records(self.path, self.key, part.first, self.codec)
        records = [
            r
            for r, _ in takewhile(lambda item: item[0].offset < part.end, items)
            if r.offset >= part.first  # a container's unreadable records come from the start
        ]
        self.projector.forget()
        try:
            result = self.projector.apply_batch(records, self.record_time)
        finally:
            self.projector.forget()  # the workers' plans move these users on, not this cache
        position = self.store.stored_positions(self.key).get(0, 0)
        self.expected = max(position, part.end)
        return WrittenBatch(part.records, part.reached, result)
