"""The database's errors as the ledger's: the one translator every store module uses.

Each failure becomes one exception of `ledger.errors` with the database's own words on one
line: a race with another writer (StoreConflict), data the database refuses
(StoreRefused), a database that cannot be used (StoreUnavailable), a stored row that cannot
be read back (StoreCorrupt).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)

from ledger.errors import StoreConflict, StoreCorrupt, StoreRefused, StoreUnavailable


@contextmanager
def translated_errors(*, reading: bool = False) -> Iterator[None]:
    """SQLAlchemy's errors, and values a column cannot convert, as the ledger's. `reading`:
    a value that does not convert was read back (StoreCorrupt), not refused on its way in
    (StoreRefused)."""
    try:
        yield
    except IntegrityError as exc:
        # The planner never writes one event id or one (user, seq) twice, so a violated
        # unique key means another writer committed them first; any other integrity
        # error (a check, a trigger) is the database refusing the data.
        if _unique_violation(exc):
            raise StoreConflict(f"another writer got there first: {reason(exc)}") from exc
        raise StoreRefused(reason(exc)) from exc
    except OperationalError as exc:
        if _contention(exc):
            raise StoreConflict(f"another writer holds the rows: {reason(exc)}") from exc
        raise StoreUnavailable(f"the database failed: {reason(exc)}") from exc
    except DataError as exc:
        raise StoreRefused(reason(exc)) from exc
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"the database failed: {reason(exc)}") from exc
    except (UnicodeError, ValueError, OverflowError) as exc:
        if reading:
            # A column type could not convert a stored value (a timestamp that is not one):
            # nothing the ledger writes, so someone wrote it outside the ledger.
            raise StoreCorrupt(
                f"a stored row cannot be read ({type(exc).__name__}: {exc}): it was written "
                "outside the ledger"
            ) from exc
        raise StoreRefused(reason(exc)) from exc


def reason(exc: BaseException) -> str:
    """The database's own words, one line."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


def _unique_violation(exc: IntegrityError) -> bool:
    code = getattr(exc.orig, "sqlstate", None)
    return code == "23505" or "UNIQUE constraint failed" in str(exc.orig)


def _contention(exc: OperationalError) -> bool:
    """Lost a race with another writer rather than lost the database: SQLite's busy lock
    (after its timeout), PostgreSQL's deadlock and serialization failures."""
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40P01", "40001") or "database is locked" in str(exc.orig)
