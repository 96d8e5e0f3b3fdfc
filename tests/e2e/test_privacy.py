"""Privacy by default (issue "Hostile input"): without LEDGER_PHONE_KEY every command
that stores phone hashes warns once, the projector service refuses to start unless told
to, and raw phone numbers are only ever shown by the commands that say they show raw
input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.factories import signup
from tests.support import Cli, eid, write_jsonl

WARNING = (
    "warning: LEDGER_PHONE_KEY is not set: phone hashes use the public development key and "
    "can be reversed; set it in every real deployment"
)
NO_BROKER = "127.0.0.1:1"  # nothing listens on port 1
PHONES = ["+8613912345678", "+16045550123", "+85251234567"]


def events() -> list[dict[str, str]]:
    return [signup(n, f"u-{n}", phone=phone) for n, phone in enumerate(PHONES, 1)]


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_PHONE_KEY", raising=False)
    monkeypatch.setenv("LEDGER_BOOTSTRAP", "")
    monkeypatch.setenv("LEDGER_KAFKA_BOOTSTRAP_TIMEOUT_MS", "1000")


@pytest.fixture
def with_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_PHONE_KEY", "a-real-secret")
    monkeypatch.setenv("LEDGER_BOOTSTRAP", "")
    monkeypatch.setenv("LEDGER_KAFKA_BOOTSTRAP_TIMEOUT_MS", "1000")


def test_replay_warns_once_without_a_key(cli: Cli, tmp_path: Path, no_key: None) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", events())
    result = cli.run("replay", str(path), "--batch-size", "1")  # three batches, one warning
    assert result.stderr.count(WARNING) == 1
    assert result.stderr.count("\n") == 1
    again = cli.run("replay", str(path), "--json")
    assert again.stderr.count(WARNING) == 1
    json.loads(again.stdout)  # stdout stays machine-readable
    # Read-only commands store no phones: no warning.
    for args in (("history", "u-1"), ("current", "u-1"), ("dead-letters", "list")):
        assert WARNING not in cli.run(*args).stderr


def test_no_warning_with_a_key(cli: Cli, tmp_path: Path, with_key: None) -> None:
    result = cli.run("replay", str(write_jsonl(tmp_path / "e.jsonl", events())))
    assert result.stderr == ""


def test_consume_refuses_the_development_key(sqlite_cli: Cli, no_key: None) -> None:
    started = time.monotonic()
    refused = sqlite_cli.run("consume", "--bootstrap", NO_BROKER, expect=2)
    assert time.monotonic() - started < 5  # refused before any broker is tried
    assert refused.stderr.startswith("ledger: error: LEDGER_PHONE_KEY is not set")
    assert "--allow-dev-key" in refused.stderr and refused.stderr.count("\n") == 1
    allowed = sqlite_cli.run("consume", "--bootstrap", NO_BROKER, "--allow-dev-key", expect=1)
    assert allowed.stderr.count(WARNING) == 1
    assert "cannot reach Kafka" in allowed.stderr
    help_text = sqlite_cli.run("consume", "--help", db=False).stdout
    assert "--allow-dev-key" in help_text


def test_consume_starts_with_a_key(sqlite_cli: Cli, with_key: None) -> None:
    result = sqlite_cli.run("consume", "--bootstrap", NO_BROKER, expect=1)
    assert "cannot reach Kafka" in result.stderr and WARNING not in result.stderr


def test_retry_warns_once(cli: Cli, tmp_path: Path, no_key: None) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("{broken\n[1]\n")
    cli.run("replay", str(path), expect=3)
    result = cli.run("dead-letters", "retry", expect=3)
    assert result.stderr.count(WARNING) == 1
    # Nothing to retry: nothing stored, no warning.
    cli.run("dead-letters", "purge", "--before", "2999-01-01", "--yes")
    assert WARNING not in cli.run("dead-letters", "retry").stderr


def test_raw_phones_only_where_raw_input_is_announced(
    cli: Cli, tmp_path: Path, with_key: None
) -> None:
    rejected = {**events()[0], "event_id": eid(9), "birth_date": "not a date"}
    cli.run("replay", str(write_jsonl(tmp_path / "e.jsonl", [*events(), rejected])), expect=3)
    engine = sa.create_engine(cli.db)
    try:
        with engine.connect() as conn:
            for table in ("events", "users", "assignment_history"):
                dumped = repr(conn.execute(sa.text(f"select * from {table}")).all())
                assert not any(p in dumped or p[1:] in dumped for p in PHONES), table
    finally:
        engine.dispose()
    [dead] = cli.json("dead-letters", "list")["dead_letters"]
    for args in (("dead-letters", "list"), ("dead-letters", "list", "--json")):
        assert PHONES[0] not in cli.run(*args).stdout
    shown = cli.run("dead-letters", "show", str(dead["id"])).stdout
    assert "raw input (may contain personal data)" in shown and PHONES[0] in shown
    out = tmp_path / "dead.jsonl"
    cli.run("dead-letters", "export", "-o", str(out))
    assert PHONES[0] in json.loads(out.read_text())["raw_text"]
