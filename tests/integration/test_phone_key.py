"""The phone key's fingerprint, on SQLite and PostgreSQL, as a user meets it: a store written
under one LEDGER_PHONE_KEY refuses a writer under another in one line instead of mixing
phone hashes that can never match (before, the second replay applied silently and `verify`
found nothing), and `ledger verify` checks the key it is given. The store keeps the
fingerprint, never the key. (The port's side of it: test_store_contract.py.)"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from ledger.store.database import _alembic_config, open_engine
from tests.factories import PHONE_CA, PHONE_CN, phone_change, signup
from tests.support import Cli, write_jsonl

ALPHA = "alpha-phone-key-0123456789"
BETA = "beta-phone-key-9876543210"
LABEL = b"jurisdiction-ledger phone-key fingerprint v1"


def fingerprint(key: str) -> str:
    return hmac.new(key.encode(), LABEL, hashlib.sha256).hexdigest()


@contextmanager
def phone_key(monkeypatch: pytest.MonkeyPatch, key: str | None) -> Iterator[None]:
    with monkeypatch.context() as env:
        if key is None:
            env.delenv("LEDGER_PHONE_KEY", raising=False)
        else:
            env.setenv("LEDGER_PHONE_KEY", key)
        yield


def stored(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM key_fingerprints"))]
    finally:
        engine.dispose()


def count_events(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    first = write_jsonl(tmp_path / "first.jsonl", [signup(1, "u-1", phone=PHONE_CN)])
    later = write_jsonl(
        tmp_path / "later.jsonl",
        [signup(2, "u-2", phone=PHONE_CN), phone_change(3, "u-1", phone=PHONE_CA)],
    )
    return first, later


def test_a_writer_under_another_key_is_refused_in_one_line(
    cli: Cli, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, later = files
    with phone_key(monkeypatch, ALPHA):
        cli.run("replay", str(first))
    with phone_key(monkeypatch, BETA):
        refused = cli.run("replay", str(later), expect=1)
    assert refused.stdout == ""
    assert refused.stderr == (
        "ledger: error: this store's phone hashes were made with another LEDGER_PHONE_KEY "
        f"(fingerprint {fingerprint(ALPHA)[:12]}…, this key's {fingerprint(BETA)[:12]}…): "
        "every writer of a store must use the same key; set the one it was written with, "
        "or replay the events into a new store under the new key\n"
    )
    assert count_events(cli.db) == 1
    with phone_key(monkeypatch, None):  # the development key is a key like another
        cli.run("replay", str(later), expect=1)
        cli.run("dead-letters", "retry", expect=1)  # every writer, as for the policies
    with phone_key(monkeypatch, ALPHA):
        assert cli.json("replay", str(later))["applied"] == 2


def test_the_store_keeps_the_fingerprint_never_the_key(
    cli: Cli, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with phone_key(monkeypatch, ALPHA):
        cli.run("replay", str(files[0]))
    [(purpose, kept, _recorded_at)] = stored(cli.db)
    assert (purpose, kept) == ("phone", fingerprint(ALPHA))
    engine = sa.create_engine(cli.db)
    try:
        with engine.connect() as conn:
            for table in sa.inspect(engine).get_table_names():
                dumped = repr(conn.execute(sa.text(f"SELECT * FROM {table}")).all())
                assert ALPHA not in dumped and ALPHA.encode().hex() not in dumped, table
    finally:
        engine.dispose()


def test_verify_checks_the_key_it_is_given(
    cli: Cli, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with phone_key(monkeypatch, ALPHA):
        cli.run("replay", str(files[0]))
        assert cli.json("verify")["phone_key"] == "matches"
    with phone_key(monkeypatch, None):  # an auditor need not hold the key
        assert cli.json("verify")["phone_key"] == "not checked"
    with phone_key(monkeypatch, BETA):
        report = json.loads(cli.run("verify", "--json", expect=1).stdout)
        failed = cli.run("verify", expect=1)
    assert report["phone_key"] == "differs" and not report["ok"]
    [finding] = report["problems"]
    assert finding["kind"] == "phone_key_changed" and finding["user"] is None
    assert (finding["stored"], finding["derived"]) == (fingerprint(ALPHA), fingerprint(BETA))
    assert failed.stderr.startswith("ledger: error: verification failed: 1 problem")
    assert failed.stderr.count("\n") == 1


def test_an_edited_fingerprint_is_refused_and_reported(
    cli: Cli, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with phone_key(monkeypatch, ALPHA):
        cli.run("replay", str(files[0]))
    for hostile in ("", "'; DROP TABLE events; --", "\x1b[2J" + "f" * 60):
        engine = sa.create_engine(cli.db)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE key_fingerprints SET fingerprint = :f"), {"f": hostile})
        engine.dispose()
        with phone_key(monkeypatch, ALPHA):
            refused = cli.run("replay", str(files[1]), expect=1)
            report = json.loads(cli.run("verify", "--json", expect=1).stdout)
        assert refused.stderr.count("\n") == 1 and "\x1b" not in refused.stderr
        assert report["phone_key"] == "differs"
    assert count_events(cli.db) == 1


def test_a_store_from_before_fingerprints_records_its_next_writer_s(
    cli: Cli, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with phone_key(monkeypatch, ALPHA):
        cli.run("replay", str(files[0]))
    engine = open_engine(cli.db, migrate=False)
    cfg = _alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
        conn.commit()
    engine.dispose()
    with phone_key(monkeypatch, ALPHA):
        cli.run("db", "upgrade")
        assert stored(cli.db) == []
        assert cli.json("verify")["phone_key"] == "not recorded"
        cli.run("replay", str(files[1]))
    assert [row[:2] for row in stored(cli.db)] == [("phone", fingerprint(ALPHA))]
