"""The one error root of the ledger and the exit-code table every command uses.

Pure: imports nothing, so every layer (the pure core included) can raise these.

| code | meaning |
|---|---|
| 0 | success |
| 1 | an error: the command line was fine, but something failed (missing file, unreachable
      database or broker, unknown user, invalid policy files, ...) |
| 2 | a usage error: the command line itself is wrong (unknown or conflicting options, a
      missing required option, a malformed option value) |
| 3 | finished, but some input was dead-lettered (or, for `publish`, not sent) |
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DEAD_LETTERS = 3


class LedgerError(Exception):
    """Every failure the ledger reports to a person: the message is one line (PolicyError
    may add one indented line per problem), `exit_code` is the process exit status."""

    exit_code = EXIT_ERROR


class UsageError(LedgerError):
    """The command line is wrong: conflicting or missing options, malformed values."""

    exit_code = EXIT_USAGE


# --- what a store reports ---------------------------------------------------------------
# One exception per meaning, raised by every store (`ledger.store.errors` translates the
# database's own errors into these) and caught by the use cases through `ledger.app.ports`.


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
    """The store cannot be used: a URL that names no store, a database that does not answer
    or failed (connection lost, server down). Nothing was written; once the cause is gone
    the same work may succeed."""


class StoreCorrupt(LedgerError):
    """A stored row cannot be read back as the ledger writes it: someone wrote it outside
    the ledger."""

