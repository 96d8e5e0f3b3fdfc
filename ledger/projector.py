"""Applying a batch of source records to the store: the one code path behind file replay,
the Kafka consumer and what-if replays.

One database transaction per batch holds the projection changes *and* the source
positions, so a batch is applied entirely or not at all, and a restarted reader resumes
exactly after the last applied record.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from ledger.events import Event, EventError, TermsAccepted, event_to_json_line
from ledger.facts import observe
from ledger.policy import PolicySet
from ledger.projection import UserChanges, UserProjection
from ledger.store import repository


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One item read from a source, decoded or not."""

    source: str  # stable key of the source: "file:<sha256>" or "kafka:<topic>"
    partition: int
    offset: int  # position within the partition; the next record is offset + 1
    position: str  # for people: "events.jsonl:17", "account-events[3]@1234"
    raw: bytes
    decoded: tuple[Event, datetime | None] | EventError


def event_problem(event: Event, policies: PolicySet) -> str | None:
    """Why a well-formed event cannot be applied (None: it can). Shared by the projector
    and `publish`, so what publish accepts is what the projector applies."""
    if isinstance(event.payload, TermsAccepted):
        return policies.acceptance_problem(event.payload.tos_version)
    return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: SourceRecord
    reason: str
    event_id: str | None = None
    user_id: str | None = None


@dataclass(slots=True)
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    already_applied: int = 0  # below the stored source position
    dead_letters: list[DeadLetter] = field(default_factory=list)
    users: set[str] = field(default_factory=set)
    assignments: Counter[str] = field(default_factory=Counter)  # of touched users, now

    @property
    def dead_lettered(self) -> int:
        return len(self.dead_letters)


class Projector:
    """Applies batches to the store.

    Users' projections stay cached (bounded, least recently used out) after a committed
    batch, so active users are not reloaded every batch. The cache is only correct while
    this projector is the sole writer for those users: a consumer calls `forget()` when
    its partitions change, and a failed batch drops every user it touched.
    """

    def __init__(
        self,
        engine: Engine,
        policies: PolicySet,
        phone_key: bytes,
        *,
        cache_users: int = 50_000,
    ) -> None:
        self.engine = engine
        self.policies = policies
        self.phone_key = phone_key
        self.cache_users = cache_users
        self._cache: OrderedDict[str, UserProjection] = OrderedDict()

    def forget(self) -> None:
        """Drop cached state (another writer may have changed these users)."""
        self._cache.clear()

    def _projections(self, conn: Connection, user_ids: list[str]) -> dict[str, UserProjection]:
        missing = [u for u in user_ids if u not in self._cache]
        loaded = repository.load_projections(conn, missing)
        return {u: loaded[u] if u in loaded else self._cache[u] for u in user_ids}

    def _remember(self, projections: dict[str, UserProjection], changes: UserChanges) -> None:
        for _, row in changes.new_rows:
            row.stored = True
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
        before_commit: Callable[[BatchResult], None] | None = None,
    ) -> BatchResult:
        """Apply `records` in order. Record time is each record's own (Kafka timestamp,
        exported `recorded_at`) or `default_recorded_at`. `before_commit` runs inside the
        transaction (e.g. to publish dead letters): if it raises, nothing is committed."""
        result = BatchResult()
        changes = UserChanges()
        touched: list[str] = []
        try:
            projections = self._apply(
                records, changes, result, default_recorded_at, before_commit, touched
            )
        except BaseException:
            # Their in-memory state already holds this batch, which did not commit.
            for user_id in touched:
                self._cache.pop(user_id, None)
            raise
        self._remember(projections, changes)
        return result

    def _validate(
        self, records: Sequence[SourceRecord], default_recorded_at: datetime, result: BatchResult
    ) -> list[tuple[SourceRecord, Event, datetime]]:
        valid: list[tuple[SourceRecord, Event, datetime]] = []
        for rec in records:
            if isinstance(rec.decoded, EventError):
                result.dead_letters.append(DeadLetter(rec, str(rec.decoded)))
                continue
            event, recorded_at = rec.decoded
            problem = event_problem(event, self.policies)
            if problem:
                result.dead_letters.append(DeadLetter(rec, problem, event.event_id, event.user_id))
                continue
            valid.append((rec, event, recorded_at or default_recorded_at))
        return valid

    def _apply(
        self,
        records: Sequence[SourceRecord],
        changes: UserChanges,
        result: BatchResult,
        default_recorded_at: datetime,
        before_commit: Callable[[BatchResult], None] | None,
        touched_users: list[str],
    ) -> dict[str, UserProjection]:
        with self.engine.begin() as conn:
            # Positions are read (and locked, where the database can) inside the
            # transaction: records below them were applied already, perhaps by another
            # consumer that owned the partition before a rebalance, and are skipped.
            stored = repository.lock_positions(conn, {(r.source, r.partition) for r in records})
            fresh = [r for r in records if r.offset >= stored.get((r.source, r.partition), 0)]
            result.already_applied = len(records) - len(fresh)
            valid = self._validate(fresh, default_recorded_at, result)
            user_ids = list(dict.fromkeys(e.user_id for _, e, _ in valid))
            touched_users.extend(user_ids)
            known = repository.known_event_users(conn, [e.event_id for _, e, _ in valid])
            projections = self._projections(conn, user_ids)
            event_rows: list[dict[str, Any]] = []
            touched: dict[str, datetime] = {}
            for rec, event, recorded_at in valid:
                owner = known.get(event.event_id)
                if owner is not None and owner != event.user_id:
                    result.dead_letters.append(
                        DeadLetter(
                            rec,
                            f"event_id {event.event_id} is already recorded for another user",
                            event.event_id,
                            event.user_id,
                        )
                    )
                    continue
                proj = projections[event.user_id]
                obs = observe(event, self.phone_key)
                if not proj.apply(obs, recorded_at, self.policies, changes):
                    result.duplicates += 1
                    continue
                result.applied += 1
                touched[event.user_id] = proj.last_recorded_at or recorded_at
                event_rows.append(
                    repository.event_values(
                        obs, proj.last_recorded_at or recorded_at, rec.source, rec.position
                    )
                )
            new_history = [
                repository.history_row_values(row_user, row)
                for row_user, row in changes.new_rows
                if not row.record_interval_empty
            ]
            superseded = [
                repository.superseded_values(user_id, row)
                for user_id, row in changes.superseded_rows
            ]
            user_rows = [repository.user_values(projections[u], at) for u, at in touched.items()]
            result.users = set(touched)
            result.assignments = Counter(r["assignment"] or "not signed up" for r in user_rows)
            positions: dict[tuple[str, int], int] = dict(stored)
            for rec in records:
                key = (rec.source, rec.partition)
                positions[key] = max(positions.get(key, 0), rec.offset + 1)
            repository.write_batch(
                conn,
                event_rows=event_rows,
                new_history=new_history,
                superseded=superseded,
                user_rows=user_rows,
                dead_letter_rows=[
                    {
                        "source": d.record.source,
                        "position": d.record.position,
                        "reason": d.reason,
                        "raw": _raw(d.record),
                        "event_id": d.event_id,
                        "user_id": d.user_id,
                        "recorded_at": default_recorded_at,
                    }
                    for d in result.dead_letters
                ],
                positions=[
                    {
                        "source": s,
                        "partition": p,
                        "next_offset": o,
                        "updated_at": default_recorded_at,
                    }
                    for (s, p), o in positions.items()
                ],
            )
            if before_commit is not None:
                before_commit(result)
        return projections


def _raw(record: SourceRecord) -> bytes:
    if record.raw or isinstance(record.decoded, EventError):
        return record.raw
    event, recorded_at = record.decoded
    return event_to_json_line(event, recorded_at).encode()
