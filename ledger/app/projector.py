"""Applying a batch of source records to a store: the one code path behind file replay,
topic replay and the Kafka consumer.

One store transaction per batch holds the projection changes *and* the source positions,
so a batch is applied entirely or not at all, and a restarted reader resumes exactly after
the last applied record. The decisions are made by the pure planner (`ledger.app.plan`);
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

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime

from ledger.app.plan import BatchResult, plan_batch, plan_refusal, screen
from ledger.app.ports import BatchStore, BatchTransaction, StoreConflict, StoreRefused
from ledger.domain.policy import PolicySet
from ledger.domain.projection import UserProjection
from ledger.sources.records import DeadLetter, SourceIdentity, SourceRecord

BeforeCommit = Callable[[Sequence[DeadLetter]], None]

# Plans of one record before a conflict is given up on; each retry reloads the users. A
# batch of several records is halved after its second conflict instead: fewer users, fewer
# collisions, and the halves that win are kept.
CONFLICT_RETRIES = 20


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
    ) -> None:
        self.store = store
        self.policies = policies
        self.phone_key = phone_key
        self.cache_users = cache_users
        self._cache: OrderedDict[str, UserProjection] = OrderedDict()

    def forget(self) -> None:
        """Drop cached state (another writer may have changed these users)."""
        self._cache.clear()

    def _projections(
        self, tx: BatchTransaction, user_ids: list[str]
    ) -> dict[str, UserProjection]:
        loaded = tx.load_users([u for u in user_ids if u not in self._cache])
        return {u: loaded[u] if u in loaded else self._cache[u] for u in user_ids}

    def _remember(self, projections: dict[str, UserProjection]) -> None:
        for user_id, proj in projections.items():
            self._cache[user_id] = proj
            self._cache.move_to_end(user_id)
        while len(self._cache) > self.cache_users:
            self._cache.popitem(last=False)

    def apply_batch(
        self,
        records: Sequence[SourceRecord],
        default_recorded_at: datetime,
        *,
        before_commit: BeforeCommit | None = None,
        identity: SourceIdentity | None = None,
    ) -> BatchResult:
        """Apply `records` in order. Record time is each record's own (Kafka timestamp,
        exported `recorded_at`) or `default_recorded_at`. `before_commit` gets the batch's
        dead letters inside the transaction (e.g. to publish them): if it raises, nothing
        is committed. A record the store refuses is dead-lettered and the others applied;
        StoreUnavailable, and StoreConflict after CONFLICT_RETRIES plans, reach the caller
        with nothing of the batch committed. `identity` is the incarnation of the records'
        source (a Kafka topic's id and partition count), stored with the positions."""
        if not records:
            return BatchResult()
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                return self._apply_once(records, default_recorded_at, before_commit, identity)
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
                plan = plan_batch(screened, owners, projections, self.policies, self.phone_key)
                if identity is not None:
                    plan.identities = {r.source: identity for r in records}
                tx.write(plan)
                if before_commit is not None:
                    before_commit(plan.dead_letters)
        except BaseException:
            # Their in-memory state already holds this batch, which did not commit.
            for user_id in touched:
                self._cache.pop(user_id, None)
            raise
        self._remember(projections)
        return plan.result()
