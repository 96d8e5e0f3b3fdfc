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
