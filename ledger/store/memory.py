"""The batch store in memory: the same port as the SQL store, for what-if runs and tests
that need the projector's full load/fold/write path without a database.

A transaction reads the committed state and stages its plan; the plan is applied only
when the transaction's block ends without an exception (as a SQL commit), and one lock
serialises transactions (as SQLite's single writer).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from ledger.app.ingest.plan import AppliedEvent, BatchPlan, PositionKey
from ledger.app.ports import HistoryTableRow, PhoneKeyChanged, PolicyChanged, StoreConflict
from ledger.domain.audit.chain import GENESIS
from ledger.domain.projection import Erased, HistoryRow, UserProjection, UserSummary
from ledger.domain.timeline import Entry
from ledger.sources.records import SourceIdentity


@dataclass(slots=True)
class StoredRow:
    entry: Entry
    recorded_at: datetime
    superseded_at: datetime | None = None
    policy_hash: str = ""


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    source: str
    position: str
    reason: str
    raw: bytes
    raw_size: int
    event_id: str | None
    user_id: str | None
    recorded_at: datetime | None
    partition: int
    offset: int


@dataclass(slots=True)
class _State:
    events: dict[str, AppliedEvent] = field(default_factory=dict)  # by event_id
    user_events: dict[str, list[str]] = field(default_factory=dict)  # user -> event ids
    history: dict[str, list[StoredRow]] = field(default_factory=dict)  # user -> rows
    users: dict[str, tuple[UserSummary, datetime]] = field(default_factory=dict)
    dead_letters: list[StoredDeadLetter] = field(default_factory=list)
    positions: dict[PositionKey, int] = field(default_factory=dict)
    identities: dict[str, SourceIdentity] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)  # policy version -> content hash
    phone_key: str | None = None  # the fingerprint of the key of the phone hashes
    # Erased users: what remains of them (a what-if run needs no more: their later events
    # are suppressed, and nothing is verified here).
    erased: dict[str, tuple[Erased, int]] = field(default_factory=dict)


class MemoryTransaction:
    def __init__(self, state: _State) -> None:
        self._state = state
        self.plan: BatchPlan | None = None

    def lock_positions(self, keys: Collection[PositionKey]) -> dict[PositionKey, int]:
        return {k: self._state.positions[k] for k in keys if k in self._state.positions}

    def lock_users(self, user_ids: Sequence[str]) -> None:
        pass  # transactions are serialised by the store's lock

    def event_owners(self, event_ids: Sequence[str]) -> dict[str, str]:
        events = self._state.events
        return {e: events[e].observation.user_id for e in event_ids if e in events}

    def load_users(self, user_ids: Sequence[str]) -> dict[str, UserProjection]:
        state = self._state
        out: dict[str, UserProjection] = {}
        for u in user_ids:
            if u in state.erased:
                mark, seq = state.erased[u]
                out[u] = UserProjection(
                    u, last_recorded_at=mark.erased_at, erased=mark, erased_events=seq
                )
                continue
            applied = [state.events[e] for e in state.user_events.get(u, ())]
            believed = sorted(
                (r for r in state.history.get(u, ()) if r.superseded_at is None),
                key=lambda r: r.entry.valid_from,
            )
            out[u] = UserProjection(
                u,
                [a.observation for a in applied],
                # New objects: the caller advances them, and the store must not change
                # with them before the commit.
                [HistoryRow(r.entry, r.recorded_at) for r in believed],
                max((a.recorded_at for a in applied), default=None),
                applied[-1].link if applied else GENESIS,
            )
        return out

    def write(self, plan: BatchPlan) -> None:
        self.plan = plan


class MemoryStore:
    def __init__(self, *, dead_letter_raw_bytes: int = 4 << 20) -> None:
        self._state = _State()
        self._lock = threading.Lock()
        self.raw_limit = dead_letter_raw_bytes

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        with self._lock:
            tx = MemoryTransaction(self._state)
            yield tx
            if tx.plan is not None:
                _apply(self._state, tx.plan, self.raw_limit)

    def stored_positions(self, source: str) -> dict[int, int]:
        return {p: o for (s, p), o in self._state.positions.items() if s == source}

    def assignment_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for summary, _ in self._state.users.values():
            name = (summary.latest.assignment if summary.latest else None) or "not signed up"
            counts[name] = counts.get(name, 0) + 1
        return counts

    def source_identity(self, source: str) -> SourceIdentity | None:
        return self._state.identities.get(source)

    def policy_pins(self) -> dict[str, str]:
        return dict(self._state.pins)

    def phone_key_fingerprint(self) -> str | None:
        return self._state.phone_key

    def scrub(self) -> None:
        pass  # nothing of an erased user is left in memory to scrub

    def reset_positions(self, source: str) -> int:
        with self._lock:
            keys = [k for k in self._state.positions if k[0] == source]
            for k in keys:
                del self._state.positions[k]
            self._state.identities.pop(source, None)
            return len(keys)

    # -- reading, for what-if runs and tests ----------------------------------------------
    def history(self, user_id: str) -> list[StoredRow]:
        """Every row of a user, believed and superseded, by valid_from then recorded_at."""
        rows = self._state.history.get(user_id, [])
        return sorted(rows, key=lambda r: (r.entry.valid_from, r.recorded_at))

    def user_ids(self) -> list[str]:
        return sorted(self._state.users)

    def history_rows(self) -> list[HistoryTableRow]:
        """Every history row as the SQL table's columns without its surrogate id, so the
        two stores compare directly."""
        return [
            HistoryTableRow(
                user_id,
                r.entry.valid_from,
                r.entry.valid_to,
                r.entry.assignment,
                r.entry.policy,
                r.entry.rule,
                r.entry.reason,
                dict(r.entry.facts),
                list(r.entry.evidence),
                r.recorded_at,
                r.superseded_at,
                r.policy_hash,
            )
            for user_id, rows in self._state.history.items()
            for r in rows
        ]

    @property
    def dead_letters(self) -> list[StoredDeadLetter]:
        return list(self._state.dead_letters)


def _check_keys(state: _State, plan: BatchPlan) -> None:
    """The SQL store's unique keys, checked the same way: an event id recorded already, or
    a user's sequence number taken, means another writer got there first."""
    last: dict[str, int] = {}
    for applied in plan.events:
        obs = applied.observation
        if obs.event_id in state.events:
            raise StoreConflict(f"event {obs.event_id} was recorded by another writer")
        expected = last.get(obs.user_id, len(state.user_events.get(obs.user_id, ()))) + 1
        if applied.seq != expected:
            raise StoreConflict(f"user {obs.user_id} has moved on past event {expected - 1}")
        last[obs.user_id] = expected


def _apply(state: _State, plan: BatchPlan, raw_limit: int) -> None:
    _check_keys(state, plan)
    if plan.events and plan.phone_key_fingerprint is not None:
        PhoneKeyChanged.check(state.phone_key, plan.phone_key_fingerprint)
        state.phone_key = state.phone_key or plan.phone_key_fingerprint
    used = {row.entry.policy for _, row in plan.new_rows}
    PolicyChanged.check(state.pins, {v: plan.policy_hashes[v] for v in used})
    for applied in plan.events:
        state.events[applied.observation.event_id] = applied
        state.user_events.setdefault(applied.observation.user_id, []).append(
            applied.observation.event_id
        )
    for user_id, row in plan.superseded_rows:
        rows = state.history[user_id]
        i = next(
            i
            for i, r in enumerate(rows)
            if r.entry.valid_from == row.entry.valid_from and r.recorded_at == row.recorded_at
        )
        if row.record_interval_empty:
            del rows[i]
        else:
            rows[i].superseded_at = row.superseded_at
    for user_id, row in plan.new_rows:
        state.history.setdefault(user_id, []).append(
            StoredRow(
                row.entry,
                row.recorded_at,
                row.superseded_at,
                plan.policy_hashes[row.entry.policy],
            )
        )
        state.pins.setdefault(row.entry.policy, plan.policy_hashes[row.entry.policy])
    for summary, updated_at in plan.users:
        state.users[summary.user_id] = (summary, updated_at)
    for d in plan.dead_letters:
        raw, size = d.raw(raw_limit)
        state.dead_letters.append(
            StoredDeadLetter(
                d.record.source,
                d.record.position,
                d.reason,
                raw,
                size,
                d.event_id,
                d.user_id,
                plan.recorded_at,
                d.record.partition,
                d.record.offset,
            )
        )
    state.positions.update(plan.positions)
    state.identities.update(plan.identities)
    for erasure in plan.erasures:
        user = erasure.user_id
        for event_id in state.user_events.pop(user, []):
            state.events.pop(event_id, None)
        state.history.pop(user, None)
        state.dead_letters = [d for d in state.dead_letters if d.user_id != user]
        state.erased[user] = (Erased(erasure.recorded_at, erasure.request_id), erasure.seq)
