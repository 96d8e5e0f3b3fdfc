"""Every port of the application: the protocols the stores implement and the row types they
return. `ledger.store` implements them on SQL databases (SQLite, PostgreSQL) and in memory
(what-if runs, tests); the use cases under `ledger.app` depend only on this module.

- writing batches: `BatchStore`, `BatchTransaction` and the three ways a write fails;
- the audit trail's reads: `AuditSource`, `AuditSnapshot` and the `Stored*` rows;
- recorded digests and audit paths: `DigestRecords`, `DigestSnapshot`, `RecordedDigest`;
- retrying dead letters: `Rejected`, `RetryLedger`;
- the policy workbench: `UserHistory` (what-if input), `ReadableStore` (policy tests).
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ledger.app.ingest.plan import BatchPlan, EncodedPlan, PositionKey
from ledger.domain.audit.merkle import Leaf
from ledger.domain.facts import Observation
from ledger.domain.projection import HistoryRow, UserProjection
from ledger.errors import LedgerError

# How a store fails is part of every port here; the classes live with the other errors,
# light enough for the fast read path, which never imports this module.
from ledger.errors import StoreConflict as StoreConflict
from ledger.errors import StoreCorrupt as StoreCorrupt
from ledger.errors import StoreRefused as StoreRefused
from ledger.errors import StoreUnavailable as StoreUnavailable
from ledger.sources.records import SourceIdentity

Decided = tuple[str, str, str]  # (assignment, policy, rule)

# --- policy pinning ---------------------------------------------------------------------


class PolicyChanged(LedgerError):
    """A policy version the store has used before has other content now."""

    def __init__(self, changed: list[tuple[str, str, str]]) -> None:
        lines = [
            f"policy {version} is not the one this store used (pinned hash {pinned[:12]}…, "
            f"now {now[:12]}…)"
            for version, pinned, now in changed
        ]
        super().__init__(
            "; ".join(lines) + ": a changed policy must be published as a new version "
            "(a new terms version with its own file), never edited in place"
        )
        self.changed = changed

    @classmethod
    def check(cls, pins: Mapping[str, str], hashes: Mapping[str, str]) -> None:
        """Raise if a version in `hashes` (version -> content hash) is pinned otherwise."""
        changed = [(v, pins[v], h) for v, h in sorted(hashes.items()) if pins.get(v, h) != h]
        if changed:
            raise cls(changed)


# --- the phone key ----------------------------------------------------------------------


class PhoneKeyChanged(LedgerError):
    """The store's phone hashes were made with another LEDGER_PHONE_KEY than this writer's:
    hashes of one number under two keys never match, so the two would mix silently."""

    def __init__(self, stored: str, given: str) -> None:
        super().__init__(
            f"this store's phone hashes were made with another LEDGER_PHONE_KEY (fingerprint "
            f"{stored[:12]}…, this key's {given[:12]}…): every writer of a store must use the "
            "same key; set the one it was written with, or replay the events into a new "
            "store under the new key"
        )
        self.stored = stored
        self.given = given

    @classmethod
    def check(cls, stored: str | None, given: str) -> None:
        """Raise if the store records a fingerprint (None: none yet) other than `given`."""
        if stored is not None and stored != given:
            raise cls(stored, given)


# --- writing batches --------------------------------------------------------------------


class BatchTransaction(Protocol):
    """One batch's reads and writes; committed when the transaction's block ends without an
    exception, rolled back otherwise. A store raises StoreConflict, StoreRefused or
    StoreUnavailable (from the block, or from the commit) for what went wrong."""

    def lock_positions(self, keys: Collection[PositionKey]) -> dict[PositionKey, int]:
        """Stored next offsets of these partitions, held for this transaction, so a second
        writer of the same partitions waits (or finds them moved on)."""
        ...

    def lock_users(self, user_ids: Sequence[str]) -> None:
        """Hold these users for this transaction where the store can (a writer that shares
        them waits instead of losing the race at the write); a no-op where transactions
        are serialised anyway. Correctness never depends on it: the (user, seq) key does."""
        ...

    def event_owners(self, event_ids: Sequence[str]) -> dict[str, str]:
        """event_id -> user_id for the ids already recorded."""
        ...

    def load_users(self, user_ids: Sequence[str]) -> dict[str, UserProjection]:
        """Fresh projections of these users as stored (empty ones for unknown users); the
        caller may advance them freely."""
        ...

    def write(self, plan: BatchPlan) -> None: ...


class BatchStore(Protocol):
    def transaction(self) -> AbstractContextManager[BatchTransaction]: ...

    def stored_positions(self, source: str) -> dict[int, int]:
        """partition -> next offset for one source."""
        ...

    def assignment_counts(self) -> dict[str, int]:
        """Users per current assignment ("not signed up" for users without one)."""
        ...

    def source_identity(self, source: str) -> SourceIdentity | None:
        """The incarnation the source's stored positions belong to (None: not recorded)."""
        ...

    def policy_pins(self) -> dict[str, str]:
        """version -> content hash of every policy version the store has decided with
        (pinned when first used, by `write`)."""
        ...

    def reset_positions(self, source: str) -> int:
        """Forget a source's stored positions; returns how many partitions had one."""
        ...

    def phone_key_fingerprint(self) -> str | None:
        """The fingerprint of the phone key the store's hashes were made with (None: not
        recorded yet). `write` records it with the first events it stores, and refuses
        (PhoneKeyChanged) a plan made under another key, in the batch's transaction."""
        ...

    def scrub(self) -> None:
        """After a batch that erased users: make what the erasure deleted unreadable from
        the store's files too, where the store can (docs/data-protection.md)."""


class EncodingTransaction(BatchTransaction, Protocol):
    def write_encoded(self, encoded: EncodedPlan) -> None:
        """`write` for a plan whose rows were built ahead (`ParallelStore.encode`)."""


@runtime_checkable
class ParallelStore(Protocol):
    """A store a parallel replay can use: workers plan from read-only snapshots taken
    without the writer's lock and build the rows; the writer only writes them."""

    def reading(self) -> AbstractContextManager[BatchTransaction]: ...

    def encode(self, plan: BatchPlan) -> EncodedPlan: ...

    def transaction(self) -> AbstractContextManager[EncodingTransaction]: ...

    def reclaim(self) -> None:
        """Between batches: let the database reclaim what the readers' snapshots held."""

    def stored_positions(self, source: str) -> dict[int, int]: ...

    def scrub(self) -> None: ...


# --- the audit trail's reads ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredUser:
    user_id: str
    events: int  # the chain's length as the users row says
    chain_head: bytes


@dataclass(frozen=True, slots=True)
class StoredEvent:
    user_id: str
    seq: int
    app_seq: int
    link: bytes
    event_id: str | None  # None: erased
    recorded_at: datetime
    fields: Mapping[str, Any]  # the EVENT_CHAIN_FIELDS as stored
    observation: Observation | None  # None: the row cannot be read back as an event
    problem: str | None = None  # why not


@dataclass(frozen=True, slots=True)
class StoredHistory:
    id: int
    user_id: str
    valid_from: datetime
    recorded_at: datetime
    policy: str
    policy_hash: str
    row: HistoryRow | None  # None: the row cannot be read back (facts not an object, ...)
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class StoredErasure:
    """An erased user's `erasures` row (docs/data-protection.md)."""

    user_id: str
    app_seq: int
    seq: int
    request_id: str
    erased_at: datetime
    history_rows: int
    dead_letters: int
    retained_hash: bytes | None


class AuditSnapshot(Protocol):
    """Reads of one consistent snapshot. Every stream is sorted by user id in code-point
    order (Python's string order), events by (user_id, seq), history rows by (user_id, id).
    Streams are generators: the reader closes those it leaves unfinished before the
    snapshot ends."""

    def users(self, user: str | None = None) -> Generator[StoredUser, None, None]: ...

    def events(self, user: str | None = None) -> Generator[StoredEvent, None, None]: ...

    def history(self, user: str | None = None) -> Generator[StoredHistory, None, None]: ...

    def erasures(self, user: str | None = None) -> Generator[StoredErasure, None, None]: ...

    def decisions(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Generator[StoredHistory, None, None]:
        """History rows recorded in [since, until), by record time, then row id."""
        ...

    def event_sequences(self, event_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """event_id -> (app_seq, seq) of the stored ones among `event_ids`."""
        ...

    def pins(self) -> dict[str, str]:
        """Pinned policy versions: version -> hex content hash."""
        ...

    def phone_key_fingerprint(self) -> str | None:
        """The recorded fingerprint of the store's phone key (None: not recorded)."""
        ...

    def max_app_seq(self) -> int:
        """The highest application sequence number (0 for an empty store)."""
        ...

    def chain_encoding(self) -> int | None:
        """The chain encoding the store records its links and heads are computed under
        (None: not recorded, a store from before the record, which is under encoding 1);
        whatever number is stored, unchecked."""
        ...


class AuditSource(Protocol):
    def snapshot(self, *, wait_for_writers: bool = False) -> AbstractContextManager[AuditSnapshot]:
        """One read-only snapshot. `wait_for_writers`: one in which no application number
        below the highest visible is still uncommitted (what a digest needs)."""
        ...


# --- recorded digests and audit paths ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedDigest:
    """A digest as the store recorded it when `ledger digest` wrote it: `document` is the
    JSON text exactly as written; the other fields repeat it (the document is what counts)
    but for `block_size`, the leaves per recorded block root."""

    id: int
    seq: int
    root: str
    users: int
    events: int
    recorded_at: datetime
    signature: str  # the document's signature algorithm ("none": unsigned)
    block_size: int
    document: str


class DigestSnapshot(Protocol):
    """Reads of one consistent snapshot of the recorded digests and the events."""

    def recorded(self, digest_id: int | None = None) -> RecordedDigest | None:
        """The recorded digest `digest_id` (None: the newest), or None if there is none."""
        ...

    def recorded_digests(self) -> Generator[RecordedDigest, None, None]:
        """Every recorded digest, oldest first."""
        ...

    def block_starts(self, digest_id: int) -> Generator[str, None, None]:
        """The user id that starts each recorded block of the digest, in block order."""
        ...

    def block_roots(self, digest_id: int) -> Generator[bytes, None, None]:
        """The root of each recorded block of the digest, in block order."""
        ...

    def leaves_as_of(self, first_user_id: str, seq: int) -> Generator[Leaf, None, None]:
        """From `first_user_id` on, in code-point order, every user's leaf as of `seq`:
        the link of their last event with app_seq <= seq and how many such events there
        are. Users without one are not leaves. The reader closes it when it has enough."""
        ...


class DigestRecords(Protocol):
    def snapshot(self) -> AbstractContextManager[DigestSnapshot]:
        """One read-only snapshot."""
        ...


# --- retrying dead letters --------------------------------------------------------------


class Rejected(Protocol):
    """A stored dead letter, as much of it as a retry run reads."""

    @property
    def id(self) -> int: ...
    @property
    def source(self) -> str: ...
    @property
    def position(self) -> str: ...
    @property
    def raw(self) -> bytes | None: ...
    @property
    def raw_size(self) -> int: ...
    @property
    def resolved_at(self) -> datetime | None: ...
    @property
    def resolution(self) -> str | None: ...


class RetryLedger(Protocol):
    """The dead-letter table, as a retry run writes it."""

    def resolve(self, dead_letter_id: int, resolved_at: datetime, resolution: str) -> bool:
        """Mark an unresolved dead letter; False if another run settled it first."""
        ...

    def dead_letter_at(self, source: str, partition: int, offset: int) -> int | None:
        """The id of the dead letter recorded for this source position."""
        ...


# --- the policy workbench ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserHistory:
    """One user as the what-if reads them: the stored observations (any order) and the
    assignment the ledger believes at the time compared (None: not signed up then)."""

    user_id: str
    observations: Sequence[Observation]
    current: Decided | None


class HistoryTableRow(NamedTuple):
    """One history row as the SQL table holds it, without its surrogate id: what a store
    returns when every row is compared (memory against SQL, one run against another)."""

    user_id: str
    valid_from: datetime
    valid_to: datetime | None
    assignment: str
    policy: str
    rule: str
    reason: str
    facts: dict[str, Any]
    evidence: list[str]
    recorded_at: datetime
    superseded_at: datetime | None
    policy_hash: str

    def believed_entry(self) -> tuple[Any, ...]:
        """The row without its record times and policy hash: what two runs must agree on
        whatever the record times they ran at."""
        return (
            self.user_id,
            self.valid_from,
            self.valid_to,
            self.assignment,
            self.policy,
            self.rule,
            self.reason,
            self.facts,
            self.evidence,
        )


class ReadableStore(BatchStore, Protocol):
    def history_rows(self) -> list[HistoryTableRow]:
        """Every history row, believed and superseded."""
        ...
