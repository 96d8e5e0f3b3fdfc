"""What the application needs from a store, as protocols. `ledger.store` implements them
twice: on SQL databases (SQLite, PostgreSQL) and in memory (what-if runs, tests)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from ledger.app.plan import BatchPlan, PositionKey
from ledger.domain.projection import UserProjection
from ledger.errors import LedgerError
from ledger.sources.records import SourceIdentity


class StoreConflict(LedgerError):
    """Another writer changed what this transaction read (it appended a user's next event,
    or recorded the same event id) first; nothing was written. Reload and apply again."""


class StoreRefused(LedgerError):
    """The store refused the data of this transaction (a value it cannot hold); nothing was
    written. Retrying the same data cannot succeed: isolate the record instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the database refused the batch: {reason}")
        self.reason = reason


class StoreUnavailable(LedgerError):
    """The store itself failed (connection lost, server down); nothing was written. The same
    transaction may succeed later."""


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
