"""The store opened for reading only, as the HTTP API (`ledger serve`) uses it.

Unlike `ledger.store.database.open_engine`, opening never migrates and never connects:
a service must come up while its database is still starting (it then answers 503 and
`/readyz` says why), and a reader must not change the schema under the writers. The
sessions are read-only at the database itself (SQLite `query_only`, PostgreSQL
`default_transaction_read_only`), so no code path of the server can write.

The queries (`ledger.queries.history`) are plain SQL run by the driver, whoever opened the
store: through an engine's pool (`EngineReader`: SQLAlchemy's errors, which the HTTP API
answers with 503), or on one connection of the driver itself, `sqlite3` or psycopg, without
SQLAlchemy at all (`connect_at_head`), for a command that asks one question and exits:
importing SQLAlchemy takes longer than the whole lookup.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ledger.errors import StoreUnavailable
from ledger.store.database import (
    HEAD_REVISION,
    current_revision,
    head_revision,
    missing_store,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine


class SqlReader(Protocol):
    """Runs one read-only SQL statement with positional parameters written as
    `placeholder` (the driver's own paramstyle), and returns its rows."""

    @property
    def placeholder(self) -> str: ...

    def rows(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]: ...


class EngineReader:
    """Plain SQL on a connection from the engine's pool: no statement to compile, and the
    driver's errors arrive wrapped as SQLAlchemy's, as from any other query."""

    __slots__ = ("_engine", "placeholder")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # sqlite3 takes `?`; psycopg takes `%s` ("format"/"pyformat").
        self.placeholder = "?" if engine.dialect.paramstyle == "qmark" else "%s"

    def rows(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        with self._engine.connect() as conn:
            return conn.exec_driver_sql(sql, tuple(params)).all()


class DriverReader:
    """Plain SQL on one read-only connection of `sqlite3` or psycopg (see
    `connect_at_head`); both drivers' connections execute statements themselves."""

    __slots__ = ("_connection", "placeholder")

    def __init__(self, connection: Any, placeholder: str) -> None:
        self._connection = connection
        self.placeholder = placeholder

    def rows(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        return self._connection.execute(sql, params).fetchall()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._connection.close()


def reader(source: Engine | SqlReader) -> SqlReader:
    """What the queries read through: a reader as given, an engine through its pool."""
    if isinstance(source, (DriverReader, EngineReader)):
        return source
    return EngineReader(source)  # type: ignore[arg-type]


# The busy timeout of the CLI's engines (`ledger.store.database.open_engine`): a reader in
# WAL mode waits only around a checkpoint or a recovery.
_SQLITE_TIMEOUT_S = 60.0
# Sessions as the writers' (UTC) and read-only at the server, as `open_reader`'s. A server
# that does not answer soon is left to `open_engine` to wait for and report.
_POSTGRESQL_OPTIONS = "-c timezone=UTC -c default_transaction_read_only=on"
_POSTGRESQL_CONNECT_TIMEOUT_S = 5


def connect_at_head(url: str) -> DriverReader | None:
    """A read-only connection of the driver itself to the store `url`, if `url` plainly names
    an existing SQLite file or a `postgresql+psycopg` database whose schema is at
    `HEAD_REVISION`. None for anything else: another backend or driver, a URL with query
    parameters, escapes or several hosts, a missing file, an older schema (opening
    migrates it), a server that does not answer, a file that is not a database. The caller
    then opens the store with `ledger.store.database.open_engine(url, create=False)`, which
    does or reports all of that (a missing store is refused, never created); so does a URL
    that SQLAlchemy might read differently from the driver."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            return _sqlite_at_head(url.removeprefix(prefix))
    prefix = "postgresql+psycopg://"
    if url.startswith(prefix) and not any(c in url for c in "?#%,"):
        # Without query or escapes, SQLAlchemy's URL and libpq's are the same URI.
        return _postgresql_at_head("postgresql://" + url.removeprefix(prefix))
    return None


def _sqlite_at_head(name: str) -> DriverReader | None:
    if not name or name == ":memory:" or any(c in name for c in "?#%"):
        return None
    path = Path(name)
    if not path.is_file():
        return None
    try:
        # mode=ro: nothing this connection runs can write, and it never creates the file.
        conn = sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=_SQLITE_TIMEOUT_S
        )
    except sqlite3.Error:
        return None
    return _at_head(DriverReader(conn, "?"), sqlite3.Error)


def _postgresql_at_head(conninfo: str) -> DriverReader | None:
    try:
        import psycopg
    except ImportError:
        return None
    try:
        conn = psycopg.connect(
            conninfo,
            options=_POSTGRESQL_OPTIONS,
            connect_timeout=_POSTGRESQL_CONNECT_TIMEOUT_S,
            autocommit=True,  # one statement, one snapshot, as through the engine
        )
    except psycopg.Error:
        return None
    return _at_head(DriverReader(conn, "%s"), psycopg.Error)


def _at_head(candidate: DriverReader, errors: type[Exception]) -> DriverReader | None:
    """`candidate` if its store is at `HEAD_REVISION`, else None (and it is closed)."""
    try:
        if candidate.rows("SELECT version_num FROM alembic_version", ()) == [(HEAD_REVISION,)]:
            return candidate
    except errors:  # no ledger schema, not a database, locked, ...
        pass
    candidate.close()
    return None


def _sqlite_reader(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA cache_size=-65536")  # KiB, as the writers' (grown on demand)
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def open_reader(url: str, *, pool_size: int = 8) -> Engine:
    """An engine that reads `url`; raises StoreUnavailable for a URL that cannot name a store (a
    missing SQLite file included: opening it would create an empty database)."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreUnavailable(f"not a database URL: {url!r} (e.g. sqlite:///ledger.db)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StoreUnavailable("an in-memory SQLite database has nothing to serve")
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            raise missing_store(url, path)
        # A reader in WAL mode waits for a writer's lock only around checkpoints.
        args: dict[str, object] = {"timeout": 5.0, "check_same_thread": False}
        kwargs: dict[str, object] = {}
    elif backend == "postgresql":
        # UTC sessions as the writers' (ledger.store.database); read-only transactions; a
        # host that does not answer is reported after seconds, not the OS's minutes.
        args = {
            "options": "-c timezone=UTC -c default_transaction_read_only=on",
            "connect_timeout": 5,
        }
        # A database restarted under the server leaves dead pooled connections: ping first.
        kwargs = {"pool_pre_ping": True}
    else:
        raise StoreUnavailable(f"cannot use database URL {url!r}: only SQLite and PostgreSQL")
    try:
        engine = create_engine(
            parsed,
            connect_args=args,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=10,
            **kwargs,
        )
    except (ArgumentError, ImportError) as exc:
        raise StoreUnavailable(f"cannot use database URL {url!r}: {exc}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_reader)
    return engine


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    revision: str | None
    head: str | None
    problem: str | None  # why not ready, one line


def readiness(engine: Engine) -> Readiness:
    """Whether the database answers and its schema is the one this code reads."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    head = head_revision()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            revision = current_revision(conn)
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines()
        reason = lines[0] if lines else type(orig).__name__
        return Readiness(False, None, head, f"the database does not answer: {reason}")
    if revision != head:
        found = revision or "no ledger schema"
        return Readiness(
            False,
            revision,
            head,
            f"the schema is at {found}, this server reads {head}: run `ledger db upgrade`",
        )
    return Readiness(True, revision, head, None)


def open_at_head(url: str, *, pool_size: int = 2) -> Engine:
    """A read-only engine on an existing store at the newest schema, for commands that read
    a whole store (audit, what-if): they never create, migrate or write what they read."""
    engine = open_reader(url, pool_size=pool_size)
    ready = readiness(engine)
    if not ready.ready:
        engine.dispose()
        problem = ready.problem or "the store cannot be read"
        if ready.problem is not None and ready.problem.startswith("the schema is at"):
            problem = (
                f"the store's schema is at {ready.revision or 'no ledger schema'}, this ledger "
                f"reads {ready.head}: run `ledger db upgrade` (or replay events into it first)"
            )
        raise StoreUnavailable(problem)
    return engine
