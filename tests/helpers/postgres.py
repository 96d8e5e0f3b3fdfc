"""The PostgreSQL server the tests use: where it is (`PG_ADMIN_URL`, a user that may
CREATE DATABASE), whether it must be there (`REQUIRE_PG`), fresh databases on it, and an
outage of one database. The fixtures built on these (`postgres_available`, `pg_url`,
`pg_admin`, `db_url`) are in tests/conftest.py; a test needing a database per Hypothesis
example (a fixture would be shared by all) uses `fresh_database` directly."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "LEDGER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_PG = os.environ.get("LEDGER_REQUIRE_POSTGRES") == "1"
PG_HINT = (
    "PostgreSQL not reachable at {url} ({reason}); start it or set LEDGER_TEST_POSTGRES to a "
    "server where the user may CREATE DATABASE. CI sets LEDGER_REQUIRE_POSTGRES=1 so these "
    "tests cannot be skipped there."
)


def admin_engine() -> sa.Engine:
    """An engine on the admin database, in autocommit (CREATE/DROP DATABASE need it)."""
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def unreachable() -> str | None:
    """None when the server answers; otherwise the hint saying why not and what to do."""
    try:
        engine = admin_engine()
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return PG_HINT.format(url=PG_ADMIN_URL, reason=str(exc).splitlines()[0])


@contextmanager
def fresh_database(prefix: str = "ledger_test") -> Iterator[str]:
    """The URL of a database of its own, dropped afterwards (connections and all)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(
                hide_password=False
            )
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def refuse_connections(admin: sa.Engine, name: str) -> None:
    """An outage of one database: new connections refused, open ones terminated."""
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
            {"d": name},
        )


def allow_connections(admin: sa.Engine, name: str) -> None:
    """The end of `refuse_connections`'s outage."""
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
