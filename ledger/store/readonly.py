"""The store opened for reading only, as the HTTP API (`ledger serve`) uses it.

Unlike `ledger.store.database.open_engine`, opening never migrates and never connects:
a service must come up while its database is still starting (it then answers 503 and
`/readyz` says why), and a reader must not change the schema under the writers. The
sessions are read-only at the database itself (SQLite `query_only`, PostgreSQL
`default_transaction_read_only`), so no code path of the server can write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ledger.store.database import StoreError, current_revision, head_revision


def _sqlite_reader(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA cache_size=-65536")  # KiB, as the writers' (grown on demand)
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def open_reader(url: str, *, pool_size: int = 8) -> Engine:
    """An engine that reads `url`; raises StoreError for a URL that cannot name a store (a
    missing SQLite file included: opening it would create an empty database)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"not a database URL: {url!r} (e.g. sqlite:///ledger.db)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StoreError("an in-memory SQLite database has nothing to serve")
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            raise StoreError(f"cannot open database {url}: no such file {path}")
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
        raise StoreError(f"cannot use database URL {url!r}: only SQLite and PostgreSQL")
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
        raise StoreError(f"cannot use database URL {url!r}: {exc}") from None
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
