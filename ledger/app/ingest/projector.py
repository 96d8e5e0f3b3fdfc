"""Applying a batch of source records to a store: the one code path behind file replay,
topic replay and the Kafka consumer.

One store transaction per batch holds the projection changes *and* the source positions,
so a batch is applied entirely or not at all, and a restarted reader resumes exactly after
the last applied record. The decisions are made by the pure planner (`ledger.app.ingest.plan`);
this module only moves data between it, the store and the user cache, and decides what to
do when the store says no:

- StoreConflict (another writer appended to one of the batch's users first): the batch is
  planned again from the stored state, a few times, with a growing random pause.
- StoreRefused (a value the database cannot hold): the batch is bisected until the record
  is alone; that record is dead-lettered with the database's reason and the rest applied.
- StoreUnavailable: raised to the caller, who retries the same batch later (the consumer
  with backoff) or stops with one line (a replay).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from ledger.app.ingest.parent_watch import exit_with_parent
from ledger.app.ingest.plan import BatchResult, plan_batch, plan_refusal, policy_hashes, screen
from ledger.app.ingest.user_cache import UserCache
from ledger.app.ports import (
    BatchStore,
    BatchTransaction,
    PhoneKeyChanged,
    PolicyChanged,
    StoreConflict,
    StoreRefused,
)
from ledger.domain.events import Event, EventError
from ledger.domain.facts import ParsedPhone, event_phones, parse_phones, phone_key_fingerprint
from ledger.domain.policy import PolicySet
from ledger.domain.projection import UserProjection
from ledger.sources.records import DeadLetter, SourceIdentity, SourceRecord

BeforeCommit = Callable[[Sequence[DeadLetter]], None]

# Plans of one record before a conflict is given up on; each retry reloads the users. A
# batch of several records is halved after its second conflict instead: fewer users, fewer
# collisions, and the halves that win are kept.
CONFLICT_RETRIES = 20


def _phones_of(records: Sequence[SourceRecord]) -> list[str]:
    return [
        phone
        for r in records
        if not isinstance(r.decoded, EventError)
        for phone in event_phones(r.decoded[0])
    ]


class Projector:
    """Applies batches to a store.

    Users' projections stay cached (bounded, least recently used out) after a committed
    batch, so active users are not reloaded every batch. A cached projection is checked
    against the store where it matters, at the write: its next event carries the user's
    next sequence number, which collides with a stored one if another writer appended in
    between (StoreConflict), and then the batch reloads its users. A consumer also calls
    `forget()` when its partitions change, and a failed batch drops every user it touched.
    """

    def __init__(
        self,
        store: BatchStore,
        policies: PolicySet,
        phone_key: bytes,
        *,
        cache_users: int = 50_000,
        cache_bytes: int = 128 << 20,
        parse_workers: int = 0,
    ) -> None:
        self.store = store
        self.policies = policies
        self.phone_key = phone_key
        self.parse_workers = parse_workers
        self.cache = UserCache(cache_bytes, cache_users)
        # Refused before anything is applied: decisions under an edited policy would
        # contradict the ones the store already holds under the same version.
        PolicyChanged.check(store.policy_pins(), policy_hashes(policies))
        # Likewise phone hashes under another key (checked again in each batch's
        # transaction, where a writer that started at the same moment is caught).
        PhoneKeyChanged.check(store.phone_key_fingerprint(), phone_key_fingerprint(phone_key))

    def forget(self) -> None:
        """Drop cached state (another writer may have changed these users)."""
        self.cache.clear()

    def _projections(
        self, tx: BatchTransaction, user_ids: list[str]
    ) -> dict[str, UserProjection]:
        loaded = tx.load_users([u for u in user_ids if u not in self.cache])
        return {u: loaded[u] if u in loaded else self.cache[u] for u in user_ids}

    def apply_batch(
        self,
        records: Sequence[SourceRecord],
        default_recorded_at: datetime,
        *,
        before_commit: BeforeCommit | None = None,
        identity: SourceIdentity | None = None,
        phones: Mapping[str, ParsedPhone] | None = None,
    ) -> BatchResult:
        """Apply `records` in order. Record time is each record's own (Kafka timestamp,
        exported `recorded_at`) or `default_recorded_at`. `before_commit` gets the batch's
        dead letters inside the transaction (e.g. to publish them): if it raises, nothing
        is committed. A record the store refuses is dead-lettered and the others applied;
        StoreUnavailable, and StoreConflict after CONFLICT_RETRIES plans, reach the caller
        with nothing of the batch committed. `identity` is the incarnation of the records'
        source (a Kafka topic's id and partition count), stored with the positions. `phones`
        holds numbers parsed ahead (`apply_batches`)."""
        if not records:
            return BatchResult()
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                return self._apply_once(
                    records, default_recorded_at, before_commit, identity, phones
                )
            except StoreConflict:
                if len(records) > 1 and attempt >= 2:
                    return self._halves(records, default_recorded_at, before_commit, identity)
                if attempt == CONFLICT_RETRIES:
                    raise
                # The other writer is mid-stream too; a random pause keeps two writers
                # from colliding on every retry.
                time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
            except StoreRefused as refused:
                return self._isolate(
                    records, default_recorded_at, before_commit, identity, refused
                )
        raise AssertionError("unreachable")

    def apply_batches(
        self,
        batches: Iterable[Sequence[SourceRecord]],
        default_recorded_at: datetime,
        *,
        identity: SourceIdentity | None = None,
    ) -> Iterator[tuple[Sequence[SourceRecord], BatchResult]]:
        """`apply_batch` on each batch in turn, yielding each with its result. With
        `parse_workers`, worker processes parse the next batch's phone numbers while this
        one is applied (a tenth of a replay's time, and it needs nothing but the numbers);
        the first batch is parsed here, so a replay of one batch starts no process."""
        pool: ProcessPoolExecutor | None = None
        pending: tuple[Sequence[SourceRecord], Future[dict[str, ParsedPhone]] | None] | None
        pending = None
        try:
            for batch in batches:
                ahead: Future[dict[str, ParsedPhone]] | None = None
                if self.parse_workers > 0 and pending is not None:
                    if pool is None:
                        pool = ProcessPoolExecutor(
                            self.parse_workers,
                            mp_context=multiprocessing.get_context("spawn"),
                            initializer=exit_with_parent,
                            initargs=(os.getpid(),),
                        )
                    ahead = pool.submit(parse_phones, _phones_of(batch))
                if pending is not None:
                    yield pending[0], self._apply_ahead(*pending, default_recorded_at, identity)
                pending = (batch, ahead)
            if pending is not None:
                yield pending[0], self._apply_ahead(*pending, default_recorded_at, identity)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _apply_ahead(
        self,
        batch: Sequence[SourceRecord],
        ahead: Future[dict[str, ParsedPhone]] | None,
        default_recorded_at: datetime,
        identity: SourceIdentity | None,
    ) -> BatchResult:
        phones = None
        if ahead is not None:
            try:
                phones = ahead.result()
            except (BrokenProcessPool, OSError):
                # The worker died (killed, out of memory): parsing here instead loses
                # nothing but time.
                phones = None
        return self.apply_batch(batch, default_recorded_at, identity=identity, phones=phones)

    def _isolate(
        self,
        records: Sequence[SourceRecord],
        default_recorded_at: datetime,
        before_commit: BeforeCommit | None,
        identity: SourceIdentity | None,
        refused: StoreRefused,
    ) -> BatchResult:
        if len(records) == 1:
            return self._refuse(records[0], default_recorded_at, before_commit, identity, refused)
        # The half holding the bad record is bisected again, log2(batch) levels at most.
        return self._halves(records, default_recorded_at, before_commit, identity)

    def _halves(
        self,
        records: Sequence[SourceRecord],
        default_recorded_at: datetime,
        before_commit: BeforeCommit | None,
        identity: SourceIdentity | None,
    ) -> BatchResult:
        # In order, each its own transaction, so positions only ever move forward.
        mid = len(records) // 2
        left, right = (
            self.apply_batch(h, default_recorded_at, before_commit=before_commit, identity=identity)
            for h in (records[:mid], records[mid:])
        )
        return left.merged(right)

    def _refuse(
        self,
        record: SourceRecord,
        default_recorded_at: datetime,
        before_commit: BeforeCommit | None,
        identity: SourceIdentity | None,
        refused: StoreRefused,
    ) -> BatchResult:
        with self.store.transaction() as tx:
            stored = tx.lock_positions({(record.source, record.partition)})
            plan = plan_refusal(record, stored, refused.reason, default_recorded_at)
            if identity is not None:
                plan.identities = {record.source: identity}
            tx.write(plan)
            if before_commit is not None:
                before_commit(plan.dead_letters)
        return plan.result()

    def _apply_once(
        self,
        records: Sequence[SourceRecord],
        default_recorded_at: datetime,
        before_commit: BeforeCommit | None,
        identity: SourceIdentity | None,
        phones: Mapping[str, ParsedPhone] | None = None,
    ) -> BatchResult:
        touched: list[str] = []
        try:
            with self.store.transaction() as tx:
                stored = tx.lock_positions({(r.source, r.partition) for r in records})
                screened = screen(records, stored, self.policies, default_recorded_at)
                touched.extend(screened.user_ids)
                tx.lock_users(screened.user_ids)
                owners = tx.event_owners(screened.event_ids)
                projections = self._projections(tx, screened.user_ids)
                plan = plan_batch(
                    screened, owners, projections, self.policies, self.phone_key, phones
                )
                if identity is not None:
                    plan.identities = {r.source: identity for r in records}
                tx.write(plan)
                if before_commit is not None:
                    before_commit(plan.dead_letters)
        except BaseException:
            # Their in-memory state already holds this batch, which did not commit.
            for user_id in touched:
                self.cache.drop(user_id)
            raise
        self.cache.remember(projections)
        if plan.erasures:
            self.store.scrub()
        return plan.result()


Delivery = tuple[Event, datetime]  # an event and the record time it arrives with


def apply_deliveries(
    projector: Projector,
    batches: Iterable[Sequence[Delivery]],
    now: datetime,
    *,
    source: str = "deliveries",
) -> list[BatchResult]:
    """Apply events already decoded, batch by batch, as records of one partition of
    `source` numbered from 0: how the policy tests and the property tests drive the
    projector's one code path without a file or a topic."""
    results: list[BatchResult] = []
    offset = 0
    for batch in batches:
        records = [
            SourceRecord(source, 0, offset + i, f"#{offset + i}", b"", (event, recorded_at))
            for i, (event, recorded_at) in enumerate(batch)
        ]
        offset += len(records)
        results.append(projector.apply_batch(records, now))
    return results
