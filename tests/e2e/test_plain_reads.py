"""`ledger history|current|explain` as a process: a plain command line runs without typer
and SQLAlchemy (`ledger.cli.history.run_plain`), reads a store at the newest schema through
`sqlite3` or psycopg (`ledger.store.readonly.connect_at_head`), and prints, fails and exits
exactly as the typer command does; anything else goes to typer, any other store to the
engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from typer.testing import CliRunner

from ledger.cli.history import run_plain
from ledger.cli.main import app
from ledger.queries import history as queries
from ledger.store.database import HEAD_REVISION, _alembic_config, open_engine
from ledger.store.readonly import (
    DriverReader,
    EngineReader,
    connect_at_head,
    open_reader,
    reader,
)
from tests.factories import PHONE_CA, PHONE_CN, PHONE_UK, phone_change, relocation, signup
from tests.support import write_jsonl

LEDGER = str(Path(sys.executable).with_name("ledger"))
HOSTILE = "u-\x1b[31m[bold]x\u202e"
# What a plain `history --json` must not load; the time of each is a multiple of the query's.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "typer",
    "pydantic",
    "rich",
    "kafka",
    "fastavro",
    "fastapi",
    "uvicorn",
    "psycopg",
    "phonenumbers",
    "pycountry",
)


def _events() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A user whose late relocation supersedes a belief, a hostile user id, and a user with
    events but no signup; the late relocation comes in a second file."""
    first = [
        signup(
            1,
            "u-5",
            at="2026-04-01T00:00:00Z",
            phone=PHONE_CA,
            birth_date="2012-05-01",
            recorded_at="2026-04-01T00:00:01Z",
        ),
        phone_change(
            2, "u-5", at="2026-05-02T00:00:00Z", phone=PHONE_UK, recorded_at="2026-05-02T00:00:01Z"
        ),
        signup(3, HOSTILE),
        phone_change(4, "u-nosignup", at="2026-01-10T09:00:00Z", phone=PHONE_CN),
    ]
    late = [relocation(5, "u-5", at="2026-04-10T00:00:00Z", recorded_at="2026-05-20T00:00:00Z")]
    return first, late


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store at the newest schema with a superseded row and a hostile user id."""
    tmp = tmp_path_factory.mktemp("plain")
    url = f"sqlite:///{tmp / 'ledger.db'}"
    first, late = _events()
    for name, events in (("first", first), ("late", late)):
        path = write_jsonl(tmp / f"{name}.jsonl", events)
        result = CliRunner().invoke(app, ["replay", str(path), "--db", url])
        assert result.exit_code == 0, result.stderr
    return url


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}


def _typer(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, args, env={"LEDGER_DB": ""}, catch_exceptions=False, prog_name="ledger"
    )
    return result.exit_code, result.stdout, result.stderr


def _process(args: list[str]) -> tuple[int, str, str]:
    done = subprocess.run(
        [LEDGER, *args], capture_output=True, text=True, env=_environment(), timeout=60
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["history", "u-5"],
        ["history", "u-5", "--json"],
        ["history", "u-5", "--all"],
        ["history", "u-5", "--all", "--json"],
        ["history", "u-5", "--believed-at", "2026-05-10"],
        ["history", "u-5", "--believed-at=2026-05-10", "--json"],
        ["history", "u-5", "--believed-at", "2026-03-01"],  # before the first record
        ["history", "u-5", "--believed-at", "2026-03-01", "--json"],
        ["history", HOSTILE],
        ["history", HOSTILE, "--json"],
        ["history", "u-nosignup", "--json"],
        ["history", "u-404"],
        ["history", "u-5", "--believed-at", "soon"],
        ["current", "u-5", "--at", "2026-04-15"],
        ["current", "u-5", "--at", "2026-04-15", "--believed-at", "2026-05-10", "--json"],
        ["current", "u-5", "--at", "2026-04-15", "--believed-at", "2026-03-01"],
        ["current", "u-nosignup", "--at", "2026-04-15"],
        ["current", "u-404", "--at", "2026-04-15"],
        ["current", "u-5", "--at=soon"],
        ["explain", "u-5", "--at", "2026-04-15"],
        ["explain", HOSTILE, "--at", "2026-04-15", "--json"],
        ["explain", "u-nosignup", "--at", "2026-04-15", "--json"],
        ["explain", "u-5", "--at", "2026-04-15", "--believed-at", "2026-03-01"],
        ["history", "u-5", "--json", "--json"],  # typer's (repeated option)
        ["history", "--json"],  # typer's usage error (no user)
    ],
    ids=repr,
)
def test_a_plain_read_prints_fails_and_exits_as_typer(store: str, args: list[str]) -> None:
    assert _process([*args, "--db", store]) == _typer([*args, "--db", store])


@pytest.mark.parametrize(
    "make",
    ["missing", "not-a-database", "directory-missing", "not-a-url"],
)
def test_a_store_the_reader_declines_fails_as_before(tmp_path: Path, make: str) -> None:
    path = tmp_path / "ledger.db"
    if make == "not-a-database":
        path.write_text("this is not a database\n" * 100)
    url = {
        "directory-missing": f"sqlite:///{tmp_path / 'no' / 'ledger.db'}",
        "not-a-url": "nonsense",
    }.get(make, f"sqlite:///{path}")
    args = ["history", "u-1", "--json", "--db", url]
    typer_result = _typer(args)
    assert _process(args) == typer_result
    assert typer_result[0] == 1
    if make == "missing":  # a command that reads never creates the store
        assert not list(tmp_path.glob("ledger.db*"))


@pytest.mark.parametrize("command", ["history", "current", "explain"])
def test_a_mistyped_store_path_is_refused_not_created(tmp_path: Path, command: str) -> None:
    """Before, `ledger history u-000042 --db sqlite:///new.db` created an empty new.db and
    answered "unknown user"; a command that reads now says the store is not there."""
    done = subprocess.run(
        [LEDGER, command, "u-000042", "--db", "sqlite:///new.db"],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=tmp_path,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "ledger: error: no ledger database at sqlite:///new.db: no such file new.db "
        "(replay events into it first)\n"
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.postgres
def test_a_database_without_the_ledger_s_tables_is_refused_not_filled(pg_url: str) -> None:
    result = _typer(["history", "u-1", "--db", pg_url])
    assert result[0] == 1 and "the database has no ledger tables" in result[2]
    assert _process(["history", "u-1", "--db", pg_url]) == result
    engine = sa.create_engine(pg_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def _loaded_by(args: list[str]) -> set[str]:
    """The top-level packages a `ledger ARGS` process imports; it must succeed."""
    probe = (
        "import json, sys\n"
        "from ledger.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
    )
    report = json.loads(done.stderr.splitlines()[-1])
    assert report["code"] == 0, done.stderr
    assert json.loads(done.stdout)
    return {m.split(".")[0] for m in report["modules"]}


def test_a_plain_history_loads_no_heavy_library(store: str) -> None:
    loaded = _loaded_by(["history", "u-5", "--json", "--db", store])
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.postgres
def test_a_plain_read_on_postgresql_uses_psycopg_alone(pg_url: str, tmp_path: Path) -> None:
    first, late = _events()
    for name, events in (("first", first), ("late", late)):
        path = write_jsonl(tmp_path / f"{name}.jsonl", events)
        assert CliRunner().invoke(app, ["replay", str(path), "--db", pg_url]).exit_code == 0
    for args in (
        ["history", "u-5", "--all", "--json"],
        ["history", HOSTILE],
        ["current", "u-5", "--at", "2026-04-15"],
        ["explain", "u-nosignup", "--at", "2026-04-15", "--json"],
        ["explain", "u-5", "--at", "2026-04-15", "--believed-at", "2026-03-01"],
        ["history", "u-404"],
    ):
        assert _process([*args, "--db", pg_url]) == _typer([*args, "--db", pg_url])
    loaded = _loaded_by(["history", "u-5", "--json", "--db", pg_url])
    assert loaded.isdisjoint(set(HEAVY) - {"psycopg"}), sorted(loaded & set(HEAVY))
    direct = connect_at_head(pg_url)
    assert isinstance(direct, DriverReader)
    engine = open_engine(pg_url)
    at = datetime(2026, 4, 15, tzinfo=UTC)
    for user in ("u-5", HOSTILE, "u-nosignup"):
        a, b = (queries.history(s, user, include_superseded=True) for s in (engine, direct))
        assert [(r.entry, r.recorded_at, r.superseded_at) for r in a] == [
            (r.entry, r.recorded_at, r.superseded_at) for r in b
        ]
        assert queries.current(engine, user, at).to_json() == (
            queries.current(direct, user, at).to_json()
        )
    direct.close()
    engine.dispose()
    # What SQLAlchemy might read otherwise than libpq is left to it.
    for url in (f"{pg_url}?sslmode=disable", pg_url.replace("psycopg", "psycopg2")):
        assert connect_at_head(url) is None


def _downgrade(url: str, revision: str) -> None:
    engine = open_engine(url, migrate=False)
    cfg = _alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()
    engine.dispose()


def _revision(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    return str(revision)


def test_an_older_store_is_migrated_by_a_plain_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, late = _events()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for name, events in (("first", first), ("late", late)):
        path = write_jsonl(tmp_path / f"{name}.jsonl", events)
        assert CliRunner().invoke(app, ["replay", str(path), "--db", url]).exit_code == 0
    expected = _typer(["history", "u-5", "--all", "--json", "--db", url])
    _downgrade(url, "0002")
    assert connect_at_head(url) is None
    capsys.readouterr()
    assert run_plain(["history", "u-5", "--all", "--json", "--db", url]) == 0
    assert (0, capsys.readouterr().out, "") == expected
    assert _revision(url) == HEAD_REVISION


def test_the_reader_takes_only_a_sqlite_file_at_the_newest_schema(
    store: str, tmp_path: Path
) -> None:
    direct = connect_at_head(store)
    assert isinstance(direct, DriverReader)
    direct.close()
    missing = tmp_path / "missing.db"
    assert connect_at_head(f"sqlite:///{missing}") is None
    assert not missing.exists(), "opening a missing store is open_engine's to do"
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00" * 4096)
    empty = tmp_path / "empty.db"
    empty.touch()
    store_path = store.removeprefix("sqlite:///")
    for url in (
        f"sqlite:///{garbage}",
        f"sqlite:///{empty}",
        f"sqlite:///{store_path}?mode=ro",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://127.0.0.1:1/x",
        "nonsense",
    ):
        assert connect_at_head(url) is None, url


def test_both_readers_read_the_same(store: str) -> None:
    engine = open_engine(store)
    direct = connect_at_head(store)
    assert direct is not None
    at = datetime(2026, 4, 15, tzinfo=UTC)
    believed = datetime(2026, 5, 10, tzinfo=UTC)
    for user in ("u-5", HOSTILE, "u-nosignup"):
        for kwargs in ({}, {"include_superseded": True}, {"believed_at": believed}):
            a, b = (queries.history(s, user, **kwargs) for s in (engine, direct))
            assert [(r.entry, r.recorded_at, r.superseded_at) for r in a] == [
                (r.entry, r.recorded_at, r.superseded_at) for r in b
            ]
        assert queries.current(engine, user, at).to_json() == (
            queries.current(direct, user, at).to_json()
        )
        assert queries.explain(engine, user, at, believed_at=believed) == queries.explain(
            direct, user, at, believed_at=believed
        )
    with pytest.raises(queries.UnknownUser):
        queries.history(direct, "u-404")
    direct.close()
    engine.dispose()


def test_an_engine_reports_database_errors_as_sqlalchemy_does(tmp_path: Path) -> None:
    """The HTTP API answers SQLAlchemy's errors with 503: reading through an engine keeps
    them SQLAlchemy's."""
    garbage = tmp_path / "garbage.db"
    garbage.write_text("this is not a database\n" * 100)
    engine = open_reader(f"sqlite:///{garbage}")
    assert isinstance(reader(engine), EngineReader)
    with pytest.raises(sa.exc.DatabaseError):
        queries.history(engine, "u-1")
    engine.dispose()
