"""The bitemporal projection of one user, in memory. Pure.

Applying an observation recomputes the user's valid-time history and compares it with
what was believed: entries still believed are kept untouched, entries no longer believed
get `superseded_at` (record time), new entries are recorded with `recorded_at`. Because
each observation is applied with its own record time, the full bitemporal history depends
only on the sequence of (event, record time), never on how that sequence was batched.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ledger.domain.audit.chain import GENESIS
from ledger.domain.facts import Facts, Observation
from ledger.domain.policy import PolicySet
from ledger.domain.timeline import Entry, Timeline, TimelineBuilder


@dataclass(slots=True, eq=False)
class HistoryRow:
    entry: Entry
    recorded_at: datetime
    superseded_at: datetime | None = None
    # Set when the row is first believed (not read back from a store): the event whose
    # application made it, and whether it changed the decision for valid time the ledger
    # had already seen events up to, i.e. a late event corrected an earlier belief. The
    # changefeed announces the row with both (docs/changefeed.md).
    origin: str | None = None
    corrects: bool = False

    def believed_at(self, record_time: datetime) -> bool:
        """Whether the ledger held this belief at `record_time`."""
        return self.recorded_at <= record_time and (
            self.superseded_at is None or self.superseded_at > record_time
        )

    @property
    def record_interval_empty(self) -> bool:
        # Believed and replaced at the same record time: nobody could ever have seen it.
        return self.superseded_at is not None and self.superseded_at <= self.recorded_at


@dataclass(slots=True)
class UserChanges:
    """What applying observations changed since the changes began (one batch): rows
    believed for the first time, and rows from before that are believed no longer. A row
    both added and superseded within the changes is only in `new_rows`, with its
    `superseded_at` set."""

    new_rows: list[tuple[str, HistoryRow]] = field(default_factory=list)  # (user_id, row)
    superseded_rows: list[tuple[str, HistoryRow]] = field(default_factory=list)
    _new: set[int] = field(default_factory=set)  # id() of the rows in new_rows

    def added(self, user_id: str, row: HistoryRow) -> None:
        self.new_rows.append((user_id, row))
        self._new.add(id(row))

    def superseded(self, user_id: str, row: HistoryRow) -> None:
        # new_rows keeps every row it names alive, so an id() seen here is that row's.
        if id(row) not in self._new:
            self.superseded_rows.append((user_id, row))


@dataclass(frozen=True, slots=True)
class UserSummary:
    """A user's current state in one record: the facts at the end of valid time, the keyed
    hashes of the signup and current phones, and the latest history entry."""

    user_id: str
    facts: Facts
    signup_phone_hash: str | None
    current_phone_hash: str | None
    latest: Entry | None
    events: int
    chain_head: bytes  # the link of the user's last applied event (docs/audit.md)


@dataclass(frozen=True, slots=True)
class Erased:
    """That a user was erased, and by which request (docs/data-protection.md): all the
    ledger still says about them."""

    erased_at: datetime  # the erasure's record time
    request_id: str


@dataclass(slots=True)
class UserProjection:
    user_id: str
    observations: list[Observation] = field(default_factory=list)
    believed: list[HistoryRow] = field(default_factory=list)
    last_recorded_at: datetime | None = None
    chain_head: bytes = GENESIS  # advanced by the planner, which hashes what it stores
    # Set once the user is erased: their later events are suppressed, never folded.
    erased: Erased | None = None
    # Applied events, the erased ones included (`observations` holds only the live ones).
    erased_events: int = 0
    _ids: set[str] = field(default_factory=set)
    _builder: TimelineBuilder | None = None

    def __post_init__(self) -> None:
        self.observations.sort(key=lambda o: o.order_key)
        self._ids = {o.event_id for o in self.observations}

    @property
    def timeline(self) -> Timeline | None:
        """The history as of the observations applied so far (None before the first);
        built on demand: a batch reads it once per user, not once per event."""
        return self._builder.timeline() if self._builder is not None else None

    @property
    def facts(self) -> Facts:
        return self.timeline.facts if self.timeline else Facts()

    @property
    def events(self) -> int:
        """The length of the user's chain."""
        return self.erased_events or len(self.observations)

    def summary(self) -> UserSummary:
        if self.erased is not None:
            # Nothing personal: the writer keeps only the chain's length and head.
            return UserSummary(
                self.user_id, Facts(), None, None, None, self.events, self.chain_head
            )
        timeline = self.timeline
        ev = timeline.evidence if timeline else {}
        phones = {o.event_id: o.phone for o in self.observations if o.phone is not None}
        signup_phone = phones.get(ev.get("signup_phone_region", ""))
        current_phone = phones.get(ev.get("current_phone_region", ""))
        return UserSummary(
            user_id=self.user_id,
            facts=timeline.facts if timeline else Facts(),
            signup_phone_hash=signup_phone.digest if signup_phone else None,
            current_phone_hash=current_phone.digest if current_phone else None,
            latest=timeline.entries[-1] if timeline and timeline.entries else None,
            events=len(self.observations),
            chain_head=self.chain_head,
        )

    def knows(self, event_id: str) -> bool:
        """Whether the event is among the user's applied ones."""
        return event_id in self._ids

    def apply(
        self, obs: Observation, recorded_at: datetime, policies: PolicySet, changes: UserChanges
    ) -> bool:
        """Apply one observation; False (and nothing changes) if its event_id is known."""
        if obs.event_id in self._ids:
            return False
        self._ids.add(obs.event_id)
        # Valid time the ledger had heard of before this event: a changed decision before it
        # is a correction, one after it is news.
        horizon = self.observations[-1].occurred_at if self.observations else None
        # Record time never runs backwards for a user, so superseded_at >= recorded_at.
        if self.last_recorded_at is not None and recorded_at < self.last_recorded_at:
            recorded_at = self.last_recorded_at
        self.last_recorded_at = recorded_at
        builder = self._builder
        if builder is not None and builder.policies is policies and builder.can_extend(obs):
            self.observations.append(obs)
            builder.extend(obs)
        else:
            bisect.insort(self.observations, obs, key=lambda o: o.order_key)
            builder = self._builder = TimelineBuilder(self.observations, policies)
        self._reconcile(builder.entries, recorded_at, changes, obs.event_id, horizon)
        return True

    def _reconcile(
        self,
        entries: Sequence[Entry],
        recorded_at: datetime,
        changes: UserChanges,
        origin: str,
        horizon: datetime | None,
    ) -> None:
        # Extending the fold leaves earlier entries as the very same objects: those rows
        # are still believed without hashing them (what follows compares by value).
        same = 0
        believed = self.believed
        for row, entry in zip(believed, entries, strict=False):
            if row.entry is not entry:
                break
            same += 1
        if same == len(believed) == len(entries):
            return
        rest = entries[same:]
        wanted = set(rest)
        kept: dict[Entry, HistoryRow] = {}
        replaced: list[Entry] = []
        for row in believed[same:]:
            if row.entry in wanted and row.entry not in kept:
                kept[row.entry] = row
                continue
            row.superseded_at = recorded_at
            replaced.append(row.entry)
            changes.superseded(self.user_id, row)
        for entry in rest:
            if entry not in kept:
                corrects = horizon is not None and _corrects(entry, replaced, horizon)
                row = HistoryRow(entry, recorded_at, origin=origin, corrects=corrects)
                kept[entry] = row
                changes.added(self.user_id, row)
        self.believed = believed[:same] + [kept[e] for e in rest]


def _corrects(entry: Entry, replaced: Sequence[Entry], horizon: datetime) -> bool:
    """Whether `entry` decides otherwise than a replaced entry did for some valid time
    before `horizon`. Valid time after the horizon was only ever the open end of the last
    period, a forecast, so a new period there is news, not a correction."""
    for old in replaced:
        if old.decision_key == entry.decision_key:
            continue
        start = max(entry.valid_from, old.valid_from)
        end = min(t for t in (entry.valid_to, old.valid_to, horizon) if t is not None)
        if start < end:
            return True
    return False
