"""Opening the store: engine creation, friendly connection errors, and migrations."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.errors import StoreUnavailable

# SQLAlchemy is imported where it is used: `HEAD_REVISION` serves the
# driver-level reader (`ledger.store.readonly.connect_at_head`) of a `ledger history` that
# must not spend a third of a second importing it.
if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration. Kept here so that a command on a current store never imports
# Alembic (a tenth of a second); a test checks it against Alembic's own head.
HEAD_REVISION = "0010"


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _sqlite_begin(conn: Connection) -> None:
    # pysqlite's own transaction handling cannot BEGIN IMMEDIATE; with its isolation level
    # off (below) the transaction starts here, as the connection's options ask.
    mode = conn.get_execution_options().get("ledger_sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


# SQLite's page cache per connection, in KiB: at most this much, grown on demand.
WRITER_CACHE_KIB = 65536


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, cache_kib: int = WRITER_CACHE_KIB) -> None:
    dbapi_connection.isolation_level = None  # transactions begin in _sqlite_begin
    # WAL lets queries read while a replay writes; NORMAL sync is durable at each commit
    # in WAL mode except on power loss, which the stored source positions make safe.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # An erasure must leave nothing readable in the file (docs/data-protection.md): freed
    # space is zeroed as it is freed, always, because B-tree rebalancing during ordinary
    # writes also leaves copies of cells behind in free space.
    cursor.execute("PRAGMA secure_delete=ON")
    # Event ids are random UUIDs, so inserts touch B-tree pages all over the file; with
    # SQLite's default 2 MB page cache that thrashes once the ledger outgrows it.
    cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    cursor.execute("PRAGMA temp_store=MEMORY")
    # Fewer, larger checkpoints: each one writes WAL pages back into the database file.
    cursor.execute("PRAGMA wal_autocheckpoint=16384")
    cursor.close()


def missing_store(url: str, path: Path) -> StoreUnavailable:
    """The error of a command that reads a SQLite store whose file is not there: opening it
    would create an empty database, and a mistyped path would then answer "unknown user"."""
    return StoreUnavailable(
        f"no ledger database at {url}: no such file {path} (replay events into it first)"
    )


def open_engine(
    url: str, *, migrate: bool = True, create: bool = True, cache_kib: int = WRITER_CACHE_KIB
) -> Engine:
    """An engine on `url`, migrated to the newest schema unless `migrate` is false.
    `cache_kib`: SQLite's page cache per connection (a reader that looks up a few rows
    per user needs far less than a writer inserting all over the indexes).

    `create` false is for commands that only read: a SQLite file that is not there, or a
    database without the ledger's tables, is refused (StoreUnavailable) instead of being
    created; a store at an older schema is still migrated."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreUnavailable(f"not a database URL: {url!r} (e.g. sqlite:///ledger.db)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        parent = path.resolve().parent
        if not parent.is_dir():
            raise StoreUnavailable(f"cannot open database {url}: directory {parent} does not exist")
        if not create and not path.is_file():
            raise missing_store(url, path)
    sqlite = parsed.get_backend_name() == "sqlite"
    # A writer waits this long for another's SQLite write lock (a batch, or a migration of
    # a large store) before it counts as contention.
    # PostgreSQL: sessions in UTC, whatever the server's default, so every stored instant
    # reads back (an instant near year 1 or 9999 may not exist in another zone).
    connect_args = {"timeout": 60.0} if sqlite else {"options": "-c timezone=UTC"}
    try:
        engine = create_engine(parsed, future=True, connect_args=connect_args)
    except (ArgumentError, ImportError) as exc:
        raise StoreUnavailable(f"cannot use database URL {url!r}: {exc}") from None
    if sqlite:
        event.listen(engine, "connect", partial(_sqlite_pragmas, cache_kib=cache_kib))
        event.listen(engine, "begin", _sqlite_begin)
    try:
        with engine.connect() as conn:
            if not create and current_revision(conn) is None:
                conn.rollback()
                engine.dispose()
                raise StoreUnavailable(
                    f"no ledger database at {parsed.render_as_string()}: the database has "
                    "no ledger tables (replay events into it first)"
                )
            if migrate:
                _upgrade(conn)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        where = parsed.render_as_string()
        raise StoreUnavailable(f"cannot reach database {where}: {reason}") from None
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"database {parsed.render_as_string()} failed: {exc}") from None
    return engine


def head_revision() -> str | None:
    return HEAD_REVISION


def current_revision(conn: Connection) -> str | None:
    """The store's schema revision (None: no schema yet), read as Alembic keeps it."""
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


# Any constant works; it only has to be the same for every ledger process.
_MIGRATION_LOCK = 0x4C454447  # "LEDG"


def _upgrade(conn: Connection) -> None:
    from sqlalchemy import text

    at_head = current_revision(conn) == head_revision()
    conn.rollback()
    if at_head:
        return
    # Several processes may start at once on an empty database: one migrates while the
    # others wait for its lock (SQLite's write lock, PostgreSQL's advisory lock), then
    # find the work done when they look again inside the lock.
    conn.execution_options(ledger_sqlite_begin="IMMEDIATE")
    with conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        if current_revision(conn) == head_revision():
            return
        from alembic import command

        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    conn.execution_options(ledger_sqlite_begin="DEFERRED")


def upgrade(url: str) -> tuple[str | None, str | None]:
    """Migrate to head; returns (revision before, revision after)."""
    from sqlalchemy.exc import OperationalError

    engine = open_engine(url, migrate=False)
    try:
        with engine.connect() as conn:
            before = current_revision(conn)
            _upgrade(conn)
            return before, current_revision(conn)
    except OperationalError as exc:
        raise StoreUnavailable(f"cannot reach database: {exc.orig}") from None
    finally:
        engine.dispose()
