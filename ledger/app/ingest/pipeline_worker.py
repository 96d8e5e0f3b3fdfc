"""One worker process of a parallel replay or consumer (`ledger.app.ingest.pipeline`).

Its batches come one of two ways. Of a file, every worker reads the whole file and cuts
the same batches (by record count and bytes), but validates, folds and plans only the
records of its own users (`ledger.app.ingest.shards`); of the others it only counts the
offsets, and plans ahead while the writer writes, at most `depth` batches ahead of the
writer's last commit. Of Kafka, the writer polls and sends each worker its share of every
batch ("batch"), raw, to decode and plan here. Either way it sends each batch's plan,
chain links and history rows included, to the writer.

Its users' projections are cached and advanced by every plan, as if the plan were
committed. The writer tells it which batches committed ("done") and, when a batch could
not be written as planned and was applied on the writer's sequential path instead,
"reset": then it forgets every cached user, reloads them from the store, and plans again
the batches after that one, under a new generation number so the writer can tell the
stale plans from the new ones. "drop" (a consumer's rebalance or failed batch) forgets the
batches in flight as well: the writer will poll them again from the stored positions.
"""

from __future__ import annotations

import gc
import os
import queue
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from ledger.app.ingest.plan import EncodedPlan, PositionKey, plan_batch, screen
from ledger.app.ingest.shards import owns
from ledger.app.ingest.user_cache import UserCache
from ledger.app.ports import ParallelStore, StoreUnavailable
from ledger.codecs.avro import AvroCodec
from ledger.domain.policy import PolicySet
from ledger.sources.files import read_shard
from ledger.sources.kafka import Fetched, to_source_record
from ledger.sources.records import SourceRecord

# How often a worker waiting for the writer looks whether its parent is still there: a
# SIGKILLed replay must not leave its workers behind.
PARENT_CHECK_S = 1.0
# Records planned between two full garbage collections. Under the streaming thresholds the
# writer hands down (`WorkerSpec.gc_threshold`) a full collection practically never comes,
# and the cyclic garbage planning leaves (about a thousand objects per 200k records, some
# holding a batch's worth of rows) piled up: a worker grew from 130 to 215 MB over a
# 1M-event replay. One collection every 200k records (about 0.3 s) keeps it near 145 MB.
COLLECT_EVERY_RECORDS = 200_000


@dataclass(frozen=True)
class WorkerSpec:
    shard: int
    shards: int
    open_store: Callable[[], ParallelStore]  # picklable: a module-level function or partial
    policies: PolicySet
    phone_key: bytes
    path: Path | None  # None: the writer sends the batches ("batch")
    key: str  # the file's source key
    start: int  # the file's stored position when the replay started
    batch_size: int
    batch_bytes: int
    default_recorded_at: datetime
    cache_bytes: int
    depth: int
    parent_pid: int
    codec: AvroCodec | None = None
    # The writer's collector thresholds (a streaming command raises them: the cached users
    # are many long-lived objects a young-generation collection would rescan again and
    # again), which a spawned process would not otherwise inherit.
    gc_threshold: tuple[int, ...] = field(default_factory=gc.get_threshold)


@dataclass(frozen=True, slots=True)
class ShardPlan:
    generation: int
    batch: int  # 0, 1, ... in file order
    shard: int
    first: int  # offset of the batch's first record (of any shard)
    end: int  # one past its last record's offset
    records: int  # records in the batch, all shards
    reached: int  # bytes of the file read once the batch was cut
    plan: EncodedPlan


@dataclass(frozen=True, slots=True)
class ShardDone:
    shard: int
    batches: int


@dataclass(frozen=True, slots=True)
class ShardFailed:
    shard: int
    error: str


@dataclass(frozen=True, slots=True)
class ShardUnavailable:
    """The store failed while a batch was planned: that batch fails as a write would
    (StoreUnavailable), and the worker waits for what the writer decides."""

    shard: int
    generation: int
    error: str


@dataclass(slots=True)
class _Batch:
    number: int
    first: int
    end: int
    records: int
    reached: int
    mine: list[SourceRecord]
    stored: dict[PositionKey, int]  # positions its records are screened against
    recorded_at: datetime  # for records that carry no record time of their own
    users: set[str] = field(default_factory=set)  # of its plan: pinned in the cache
    owners: dict[str, str] = field(default_factory=dict)  # event id -> user, of its plan


def _batches(items: Iterator[tuple[SourceRecord | int, int]], spec: WorkerSpec) -> Iterator[_Batch]:
    """The file's batches, cut where every worker cuts them: at `batch_size` records or
    once the batch's records reach `batch_bytes` (`reached` counts them all, this worker's
    or not)."""
    batch: _Batch | None = None
    number = 0
    stored = {(spec.key, 0): spec.start}
    for item, reached in items:
        offset = item if isinstance(item, int) else item.offset
        if batch is None:
            batch = _Batch(
                number, offset, offset + 1, 0, reached, [], stored, spec.default_recorded_at
            )
            began = reached
        batch.records += 1
        batch.end = offset + 1
        batch.reached = reached
        if not isinstance(item, int):
            batch.mine.append(item)
        if batch.records >= spec.batch_size or reached - began >= spec.batch_bytes:
            yield batch
            batch = None
            number += 1
    if batch is not None:
        yield batch


class _Worker:
    def __init__(self, spec: WorkerSpec, out: Queue[Any], control: Queue[Any]) -> None:
        self.spec = spec
        self.out = out
        self.control = control
        self.store = spec.open_store()
        self.generation = 0
        self.inflight: deque[_Batch] = deque()
        # Users of plans the writer has not committed stay pinned: the store does not
        # hold their state yet, so they could not be reloaded.
        self.cache = UserCache(spec.cache_bytes)
        self.stopped = False
        self.codec = spec.codec or AvroCodec()
        self.uncollected = 0  # records planned since the last full collection

    def run(self) -> None:
        if self.spec.path is None:
            while not self.stopped:
                self._handle_control(block=True)
        else:
            self._run_file(self.spec.path)

    def _run_file(self, path: Path) -> None:
        spec = self.spec
        items = read_shard(
            path,
            spec.key,
            spec.start,
            spec.codec,
            keep=owns(spec.shard, spec.shards),
        )
        count = 0
        for batch in _batches(items, spec):
            self._handle_control(block=False)
            while len(self.inflight) >= spec.depth and not self.stopped:
                self._handle_control(block=True)
            if self.stopped:
                return
            self.inflight.append(batch)
            self._plan(batch)
            count += 1
        self.out.put(ShardDone(spec.shard, count))
        while not self.stopped:
            self._handle_control(block=True)

    # -- the writer's answers -------------------------------------------------------------
    def _handle_control(self, *, block: bool) -> None:
        while True:
            try:
                message = (
                    self.control.get(timeout=PARENT_CHECK_S)
                    if block
                    else (self.control.get_nowait())
                )
            except queue.Empty:
                if os.getppid() != self.spec.parent_pid:
                    # The writer is gone: nobody will read what is still queued, and
                    # waiting to flush it would keep this process up for ever.
                    self.out.cancel_join_thread()
                    raise SystemExit(1) from None
                if block:
                    continue
                return
            kind = message[0]
            if kind == "done":
                self._settled(message[1])
            elif kind == "reset":
                self._reset(message[1], message[2])
            elif kind == "batch":
                self._fed(*message[1:])
            elif kind == "drop":
                self.generation = message[1]
                self.inflight.clear()
                self.cache.clear()
            else:  # "stop": the writer read all it needs, and may read nothing more
                self.out.cancel_join_thread()
                self.stopped = True
            return

    def _settled(self, number: int) -> None:
        while self.inflight and self.inflight[0].number <= number:
            self.cache.unpin(self.inflight.popleft().users)

    def _reset(self, number: int, generation: int) -> None:
        self._settled(number)
        self.generation = generation
        self.cache.clear()
        for batch in self.inflight:
            self._plan(batch)

    # -- planning --------------------------------------------------------------------------
    def _fed(
        self,
        number: int,
        generation: int,
        stored: dict[PositionKey, int],
        recorded_at: datetime,
        fetched: list[Fetched],
    ) -> None:
        """A batch the writer polled: this worker's share of its records, to plan."""
        if generation != self.generation:
            return  # sent before a "drop" this worker has already obeyed
        codec = self.codec
        mine = [to_source_record(f, codec) for f in fetched]
        batch = _Batch(number, 0, 0, len(mine), 0, mine, stored, recorded_at)
        self.inflight.append(batch)
        self._plan(batch)

    def _plan(self, batch: _Batch) -> None:
        self.uncollected += batch.records
        if self.uncollected >= COLLECT_EVERY_RECORDS:
            gc.collect()
            self.uncollected = 0
        try:
            self._plan_once(batch)
        except StoreUnavailable as exc:
            self.out.put(ShardUnavailable(self.spec.shard, self.generation, str(exc)))

    def _plan_once(self, batch: _Batch) -> None:
        spec = self.spec
        with self.store.reading() as view:
            screened = screen(batch.mine, batch.stored, spec.policies, batch.recorded_at)
            ids = screened.event_ids
            owners = view.event_owners(ids)
            # Ids of this worker's plans the writer has not committed yet: the store
            # cannot know them, and a second user's copy must still be refused.
            for earlier in self.inflight:
                if earlier is batch:
                    break
                for event_id in ids:
                    user = earlier.owners.get(event_id)
                    if user is not None:
                        owners.setdefault(event_id, user)
            user_ids = screened.user_ids
            missing = [u for u in user_ids if u not in self.cache]
            loaded = view.load_users(missing) if missing else {}
        projections = {u: loaded[u] if u in loaded else self.cache[u] for u in user_ids}
        plan = plan_batch(screened, owners, projections, spec.policies, spec.phone_key)
        batch.users = set(user_ids)
        batch.owners = {e.observation.event_id: e.observation.user_id for e in plan.events}
        self.cache.pin(batch.users)
        self.cache.remember(projections)
        self.out.put(
            ShardPlan(
                self.generation,
                batch.number,
                spec.shard,
                batch.first,
                batch.end,
                batch.records,
                batch.reached,
                self.store.encode(plan),
            )
        )


def run_worker(spec: WorkerSpec, out: Queue[Any], control: Queue[Any]) -> None:
    """A worker process's entry point. A failure is reported to the writer, which stops
    the replay with it, rather than left for the writer to find as a silent exit."""
    gc.set_threshold(*spec.gc_threshold)
    try:
        _Worker(spec, out, control).run()
    except SystemExit:
        raise
    except BaseException as exc:  # reported, then the process ends
        out.put(ShardFailed(spec.shard, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
