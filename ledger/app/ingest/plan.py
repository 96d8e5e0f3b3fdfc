"""Planning one batch: which records are fresh, which are dead letters and why, what each
user's fold changes, and the positions reached. Pure: no I/O and no clock; the store
supplies what the plan reads (`ledger.app.ports`) and writes what it decides.

Two steps, because what must be read from the store depends on the first:
`screen` needs only the stored positions; `plan_batch` needs the owners of the screened
event ids and the screened users' projections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from ledger.domain.audit.canonical import EVENT_CHAIN_FIELDS, chain_bytes
from ledger.domain.audit.chain import next_link
from ledger.domain.audit.stable_ids import policy_hash
from ledger.domain.events import AccountErased, Event, EventError
from ledger.domain.facts import (
    Observation,
    ParsedPhone,
    observe,
    observed_fields,
    phone_key_fingerprint,
)
from ledger.domain.policy import PolicySet, event_problem
from ledger.domain.projection import (
    Erased,
    HistoryRow,
    UserChanges,
    UserProjection,
    UserSummary,
)
from ledger.sources.records import DeadLetter, SourceIdentity, SourceRecord

PositionKey = tuple[str, int]  # (source, partition)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A fresh record whose event is well-formed and may be applied."""

    record: SourceRecord
    event: Event
    recorded_at: datetime


@dataclass(slots=True)
class Screened:
    accepted: list[Accepted]
    dead_letters: list[DeadLetter]
    already_applied: int  # below the stored position of their partition
    positions: dict[PositionKey, int]  # next offset per partition once the batch is applied
    default_recorded_at: datetime

    @property
    def user_ids(self) -> list[str]:
        """The users of the accepted events, then those the dead letters name: a dead
        letter of an erased user is suppressed, so the planner must know whether they
        are."""
        named = [a.event.user_id for a in self.accepted]
        named += [d.user_id for d in self.dead_letters if d.user_id is not None]
        return list(dict.fromkeys(named))

    @property
    def event_ids(self) -> list[str]:
        return [a.event.event_id for a in self.accepted]


def screen(
    records: Sequence[SourceRecord],
    stored: Mapping[PositionKey, int],
    policies: PolicySet,
    default_recorded_at: datetime,
) -> Screened:
    """Drop records below the stored positions (applied already, perhaps by a consumer that
    owned the partition before a rebalance), dead-letter what cannot be applied, and give
    every other record its record time (its own, else `default_recorded_at`)."""
    accepted: list[Accepted] = []
    dead: list[DeadLetter] = []
    positions: dict[PositionKey, int] = dict(stored)
    already = 0
    for rec in records:
        key = (rec.source, rec.partition)
        positions[key] = max(positions.get(key, 0), rec.offset + 1)
        if rec.offset < stored.get(key, 0):
            already += 1
            continue
        if isinstance(rec.decoded, EventError):
            dead.append(DeadLetter.of(rec, str(rec.decoded)))
            continue
        event, recorded_at = rec.decoded
        problem = event_problem(event, policies)
        if problem:
            dead.append(DeadLetter.of(rec, problem, event.event_id, event.user_id))
            continue
        accepted.append(Accepted(rec, event, recorded_at or default_recorded_at))
    return Screened(accepted, dead, already, positions, default_recorded_at)


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    observation: Observation
    recorded_at: datetime  # never earlier than the user's previous record time
    source: str
    position: str
    seq: int  # the user's applied events so far, this one included
    link: bytes  # the user's hash chain after this event (docs/audit.md)
    # (partition, offset) of its record: the order in which a batch planned in several
    # shards is written, so that application order does not depend on the sharding.
    order: tuple[int, int] = (0, 0)


def chain_fields(obs: Observation, recorded_at: datetime, seq: int) -> dict[str, object]:
    """An applied event's fields as stored, which its chain link hashes (the planner hands
    the same values to `chain_bytes` directly, without building this dict)."""
    return dict(
        zip(
            EVENT_CHAIN_FIELDS,
            (
                obs.event_id,
                obs.user_id,
                obs.occurred_at,
                recorded_at,
                obs.type,
                *observed_fields(obs.payload),
                seq,
            ),
            strict=True,
        )
    )


@dataclass(frozen=True, slots=True)
class PlannedErasure:
    """An `AccountErased` applied: the writer deletes the user's personal data and links
    the erasure into the user's chain (`ledger.domain.audit.erasure`). The link is the
    writer's to compute, because it commits to what the erasure found in the store (the
    kept columns of every erased event, the history rows), which no plan holds; the event
    row is planned as any other, with the previous link in its place until then."""

    user_id: str
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    request_id: str
    seq: int


@dataclass(slots=True)
class BatchPlan:
    """Everything one batch writes, in one transaction."""

    events: list[AppliedEvent] = field(default_factory=list)
    # Rows believed for the first time. A row added and superseded at the same record time
    # was never believed at any record time and is left out: keeping it would make the
    # history depend on where batches happened to split.
    new_rows: list[tuple[str, HistoryRow]] = field(default_factory=list)
    # Rows from earlier batches now superseded; `record_interval_empty` ones are deleted,
    # for the same reason.
    superseded_rows: list[tuple[str, HistoryRow]] = field(default_factory=list)
    users: list[tuple[UserSummary, datetime]] = field(default_factory=list)  # (state, updated)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    positions: dict[PositionKey, int] = field(default_factory=dict)
    # The incarnation of each source the positions belong to, where the reader knows it.
    identities: dict[str, SourceIdentity] = field(default_factory=dict)
    duplicates: int = 0
    already_applied: int = 0
    recorded_at: datetime | None = None  # of the batch: dead letters and positions
    # version -> content hash of the policies deciding the batch (policy pinning, docs/audit.md)
    policy_hashes: dict[str, str] = field(default_factory=dict)
    # The fingerprint of the key the events' phone hashes were made with: the store records
    # it with its first events and refuses events made under another.
    phone_key_fingerprint: str | None = None
    erasures: list[PlannedErasure] = field(default_factory=list)
    # Records of users erased before them (this batch included): neither stored nor
    # dead-lettered (docs/data-protection.md).
    suppressed: int = 0

    def result(self) -> BatchResult:
        return BatchResult(
            applied=len(self.events),
            duplicates=self.duplicates,
            already_applied=self.already_applied,
            dead_letters=list(self.dead_letters),
            users={s.user_id for s, _ in self.users},
            suppressed=self.suppressed,
            erased=len(self.erasures),
        )


@dataclass(slots=True)
class EncodedPlan:
    """A plan as the store's own rows, built where it was planned (a parallel replay's
    worker), so that the writer only writes: tuples of values in the driver's form are
    cheap to send between processes, the plan's objects are not. `rest` is the plan with
    its events and rows taken out (dead letters, positions, counts). The store decides
    what a row holds; events are (order, row) so that parts merge in record order."""

    rest: BatchPlan
    events: list[tuple[tuple[int, int], tuple[Any, ...]]] = field(default_factory=list)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    superseded: list[tuple[Any, ...]] = field(default_factory=list)
    dropped: list[tuple[Any, ...]] = field(default_factory=list)  # empty record interval
    users: list[tuple[Any, ...]] = field(default_factory=list)
    policies_used: set[str] = field(default_factory=set)
    # The changefeed's rows, one per history row, with the id of the event that made it in
    # place of its app_seq, which only the writer knows.
    outbox: list[tuple[Any, ...]] = field(default_factory=list)

    def result(self) -> BatchResult:
        return BatchResult(
            applied=len(self.events),
            duplicates=self.rest.duplicates,
            already_applied=self.rest.already_applied,
            dead_letters=list(self.rest.dead_letters),
            users={row[0] for row in self.users},
            suppressed=self.rest.suppressed,
            erased=len(self.rest.erasures),
        )


def merge_encoded(
    parts: Sequence[EncodedPlan], positions: Mapping[PositionKey, int]
) -> EncodedPlan:
    """`merge_plans` for plans already encoded."""
    merged = EncodedPlan(merge_plans([p.rest for p in parts], positions))
    for part in parts:
        merged.events.extend(part.events)
        merged.history.extend(part.history)
        merged.superseded.extend(part.superseded)
        merged.dropped.extend(part.dropped)
        merged.users.extend(part.users)
        merged.policies_used |= part.policies_used
        merged.outbox.extend(part.outbox)
    if len(parts) > 1:
        merged.events.sort(key=lambda e: e[0])
    return merged


@dataclass(slots=True)
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    already_applied: int = 0  # below the stored source position
    dead_letters: list[DeadLetter] = field(default_factory=list)
    users: set[str] = field(default_factory=set)
    suppressed: int = 0  # records of erased users, neither stored nor dead-lettered
    erased: int = 0  # users erased by the batch

    @property
    def dead_lettered(self) -> int:
        return len(self.dead_letters)

    def merged(self, other: BatchResult) -> BatchResult:
        """The result of two batches applied one after the other."""
        return BatchResult(
            self.applied + other.applied,
            self.duplicates + other.duplicates,
            self.already_applied + other.already_applied,
            self.dead_letters + other.dead_letters,
            self.users | other.users,
            self.suppressed + other.suppressed,
            self.erased + other.erased,
        )


@lru_cache(maxsize=16)
def _policy_hashes(policies: PolicySet) -> tuple[tuple[str, str], ...]:
    return tuple((v, policy_hash(p)) for v, p in sorted(policies.by_version.items()))


def policy_hashes(policies: PolicySet) -> dict[str, str]:
    """version -> content hash of every policy in the set (computed once per set)."""
    return dict(_policy_hashes(policies))


def plan_batch(
    screened: Screened,
    owners: Mapping[str, str],
    projections: Mapping[str, UserProjection],
    policies: PolicySet,
    phone_key: bytes,
    phones: Mapping[str, ParsedPhone] | None = None,
) -> BatchPlan:
    """Fold the screened events into their users' projections (which it advances: they are
    the working state of the batch) and return what to write. `owners` maps the event ids
    already recorded to their users; `projections` holds every screened user; `phones`,
    numbers parsed ahead (the others are parsed here)."""
    plan = BatchPlan(
        dead_letters=list(screened.dead_letters),
        positions=dict(screened.positions),
        already_applied=screened.already_applied,
        recorded_at=screened.default_recorded_at,
        policy_hashes=policy_hashes(policies),
        phone_key_fingerprint=phone_key_fingerprint(phone_key),
    )
    changes = UserChanges()
    touched: dict[str, datetime] = {}
    # An id recorded earlier in this very batch has an owner too: the first record wins,
    # as it would had the two arrived in separate batches.
    owners = dict(owners)
    for item in screened.accepted:
        event = item.event
        proj = projections[event.user_id]
        if proj.erased is not None:
            # Erased before (a replayed archive, a late delivery): not stored, and not
            # dead-lettered either, which would store it all the same.
            plan.suppressed += 1
            continue
        owner = owners.setdefault(event.event_id, event.user_id)
        if owner is not None and owner != event.user_id:
            plan.dead_letters.append(
                DeadLetter.of(
                    item.record,
                    f"event_id {event.event_id} is already recorded for another user",
                    event.event_id,
                    event.user_id,
                )
            )
            continue
        if isinstance(event.payload, AccountErased):
            if proj.knows(event.event_id):
                plan.duplicates += 1
            else:
                touched[event.user_id] = _plan_erasure(plan, proj, item, event.payload)
            continue
        obs = observe(event, phone_key, phones)
        if not proj.apply(obs, item.recorded_at, policies, changes):
            plan.duplicates += 1
            continue
        recorded_at = proj.last_recorded_at or item.recorded_at
        touched[event.user_id] = recorded_at
        seq = len(proj.observations)
        proj.chain_head = next_link(
            proj.chain_head,
            chain_bytes(
                obs.event_id,
                obs.user_id,
                obs.occurred_at,
                recorded_at,
                obs.type,
                observed_fields(obs.payload),
                seq,
            ),
        )
        plan.events.append(
            AppliedEvent(
                obs,
                recorded_at,
                item.record.source,
                item.record.position,
                seq,
                proj.chain_head,
                (item.record.partition, item.record.offset),
            )
        )
    plan.new_rows = [(u, row) for u, row in changes.new_rows if not row.record_interval_empty]
    plan.superseded_rows = list(changes.superseded_rows)
    plan.users = [(projections[u].summary(), at) for u, at in touched.items()]
    # A dead letter names its user: one of a user erased (before or in this batch) is
    # suppressed, so that nothing of theirs is stored after the erasure.
    kept: list[DeadLetter] = []
    for d in plan.dead_letters:
        named = projections.get(d.user_id) if d.user_id is not None else None
        if named is not None and named.erased is not None:
            plan.suppressed += 1
        else:
            kept.append(d)
    plan.dead_letters = kept
    return plan


def _plan_erasure(
    plan: BatchPlan, proj: UserProjection, item: Accepted, payload: AccountErased
) -> datetime:
    """Plan the erasure of `proj`'s user by `item` as the last event of their chain, and
    mark the projection erased (the batch's later events of the user are suppressed).
    Returns its record time."""
    event = item.event
    recorded_at = item.recorded_at
    if proj.last_recorded_at is not None and recorded_at < proj.last_recorded_at:
        recorded_at = proj.last_recorded_at  # record time never runs backwards for a user
    seq = proj.events + 1
    obs = Observation(event.event_id, event.user_id, event.occurred_at, payload)
    plan.events.append(
        AppliedEvent(
            obs,
            recorded_at,
            item.record.source,
            item.record.position,
            seq,
            proj.chain_head,  # the writer puts the erasure's own link in its place
            (item.record.partition, item.record.offset),
        )
    )
    plan.erasures.append(
        PlannedErasure(
            event.user_id, event.event_id, event.occurred_at, recorded_at, payload.request_id, seq
        )
    )
    proj.erased = Erased(recorded_at, payload.request_id)
    proj.erased_events = seq
    proj.last_recorded_at = recorded_at
    return recorded_at


def merge_plans(parts: Sequence[BatchPlan], positions: Mapping[PositionKey, int]) -> BatchPlan:
    """One batch planned in parts by workers that own disjoint users, as the one plan its
    transaction writes: events and dead letters back in record order, `positions` the
    batch's (no part saw all of its records)."""
    first = parts[0]
    plan = BatchPlan(
        positions=dict(positions),
        recorded_at=first.recorded_at,
        policy_hashes=dict(first.policy_hashes),
        phone_key_fingerprint=first.phone_key_fingerprint,
    )
    for part in parts:
        plan.events.extend(part.events)
        plan.new_rows.extend(part.new_rows)
        plan.superseded_rows.extend(part.superseded_rows)
        plan.users.extend(part.users)
        plan.dead_letters.extend(part.dead_letters)
        plan.duplicates += part.duplicates
        plan.already_applied += part.already_applied
        plan.identities.update(part.identities)
        plan.erasures.extend(part.erasures)
        plan.suppressed += part.suppressed
    if len(parts) > 1:
        plan.events.sort(key=lambda e: e.order)
        plan.dead_letters.sort(key=lambda d: (d.record.partition, d.record.offset))
    return plan


def plan_refusal(
    record: SourceRecord, stored: Mapping[PositionKey, int], reason: str, recorded_at: datetime
) -> BatchPlan:
    """A record the store refused to hold, alone: dead-lettered with the store's reason, its
    position passed, so the records after it can be applied."""
    key = (record.source, record.partition)
    if record.offset < stored.get(key, 0):
        return BatchPlan(positions=dict(stored), already_applied=1, recorded_at=recorded_at)
    ids: tuple[str | None, str | None] = (None, None)
    if not isinstance(record.decoded, EventError):
        ids = (record.decoded[0].event_id, record.decoded[0].user_id)
    return BatchPlan(
        dead_letters=[DeadLetter.of(record, f"the database refused it: {reason}", *ids)],
        positions={**stored, key: record.offset + 1},
        recorded_at=recorded_at,
    )
