"""Shared fixtures: a fresh store on SQLite and on the real PostgreSQL, and the CLI."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.kafka_support import (  # noqa: F401  (fixtures)
    kafka_broker,
    kafka_topic,
    no_consumer_outlives_its_test,
)
from tests.support import Cli

PG_ADMIN_URL = os.environ.get(
    "LEDGER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_PG = os.environ.get("LEDGER_REQUIRE_POSTGRES") == "1"
PG_HINT = (
    "PostgreSQL not reachable at {url} ({reason}); start it or set LEDGER_TEST_POSTGRES to a "
    "server where the user may CREATE DATABASE. CI sets LEDGER_REQUIRE_POSTGRES=1 so these "
    "tests cannot be skipped there."
)


def _pg_admin() -> sa.Engine:
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        engine = _pg_admin()
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return True
    except Exception as exc:
        message = PG_HINT.format(url=PG_ADMIN_URL, reason=str(exc).splitlines()[0])
        if REQUIRE_PG:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def pg_url(postgres_available: bool) -> Iterator[str]:
    """A database of its own on the real PostgreSQL, dropped afterwards."""
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded default and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def cli(db_url: str) -> Cli:
    return Cli(db_url)


@pytest.fixture
def sqlite_cli(sqlite_url: str) -> Cli:
    return Cli(sqlite_url)
