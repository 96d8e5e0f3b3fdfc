"""Shared fixtures: a fresh store on SQLite and on the real PostgreSQL, and the CLI; and
the markers a test earns by what it uses (pyproject.toml declares them):

- property: a Hypothesis test (`@given`);
- postgres: it asks for the PostgreSQL server (`pg_url`, `pg_admin`, `postgres_available`,
  or the postgresql case of `db_url`, whose parameter carries the mark);
- kafka: it asks for the broker (`kafka_broker`, `kafka_topic`).

Tests that start a broker of their own, or reach PostgreSQL another way, carry the mark
where they are written; so does `slow`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import postgres
from tests.helpers.kafka import (  # noqa: F401  (fixtures)
    kafka_broker,
    kafka_topic,
    no_consumer_outlives_its_test,
)
from tests.support import Cli

POSTGRES_FIXTURES = frozenset({"pg_url", "pg_admin", "postgres_available"})
KAFKA_FIXTURES = frozenset({"kafka_broker", "kafka_topic"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the marks must be there to select
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)
        used = set(getattr(item, "fixturenames", ()))
        if used & POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if used & KAFKA_FIXTURES:
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    hint = postgres.unreachable()
    if hint is not None:
        if postgres.REQUIRE_PG:
            pytest.fail(hint)
        pytest.skip(hint)
    return True


@pytest.fixture
def pg_url(postgres_available: bool) -> Iterator[str]:
    """A database of its own on the real PostgreSQL, dropped afterwards."""
    with postgres.fresh_database() as url:
        yield url


@pytest.fixture
def pg_admin(postgres_available: bool) -> Iterator[sa.Engine]:
    """An autocommit engine on the server's admin database (`postgres.PG_ADMIN_URL`), for
    what a test does to a whole database (an outage: `postgres.refuse_connections`)."""
    engine = postgres.admin_engine()
    yield engine
    engine.dispose()


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
