"""Asked as believed at a record time before the ledger recorded anything of a user, every
surface says that the ledger held no record of the user then, and when it first did: `current`,
`history` and `explain` as processes (text and `--json`) and the HTTP API, on a small
generated store.

Before, `explain` said the account "did not exist yet: it signed up on …", `current` said
"none (not signed up at that time)", the JSON answers gave a null assignment beside the
sign-up time, and `history` printed an empty table without a word."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from ledger.domain.time import format_instant
from ledger.store.schema import events
from tests.helpers.http import AUDITOR, LEDGER, serve_env, start_server

USER = "u-000042"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """60 generated users replayed; the record time of USER's first event; a server."""
    tmp = tmp_path_factory.mktemp("first-record")
    db = f"sqlite:///{tmp / 'ledger.db'}"
    stream = tmp / "events.jsonl"
    ledger("generate", "--users", "60", "--seed", "5", "-o", str(stream))
    ledger("replay", str(stream), "--db", db)
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        first = conn.execute(
            sa.select(sa.func.min(events.c.recorded_at)).where(events.c.user_id == USER)
        ).scalar_one()
    engine.dispose()
    server = start_server(db, tmp / "serve.log")
    try:
        yield SimpleNamespace(db=db, first=first, server=server)
    finally:
        server.stop()


def ledger(*args: str) -> str:
    done = subprocess.run(
        [LEDGER, *args], capture_output=True, text=True, env=serve_env(), timeout=120
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def ask(store: SimpleNamespace, *args: str) -> str:
    return ledger(*args, "--db", store.db)


def before(first: datetime) -> str:
    return format_instant(first - timedelta(days=1)) or ""


def test_explain_says_the_ledger_held_no_record_of_the_user(store: SimpleNamespace) -> None:
    then, first = before(store.first), format_instant(store.first)
    text = ask(store, "explain", USER, "--believed-at", then)
    assert text.startswith(
        f"The ledger held no record of account {USER} at {then}: its first event was "
        f"recorded at {first}; so it could not say which rulebook governed the account on "
    ), text
    assert "did not exist" not in text and "signed up" not in text
    doc = json.loads(ask(store, "explain", USER, "--believed-at", then, "--json"))
    assert (doc["on_record"], doc["first_recorded_at"]) == (False, first)
    assert doc["explanation"] == text.strip()


def test_current_says_no_record_not_not_signed_up(store: SimpleNamespace) -> None:
    then, first = before(store.first), format_instant(store.first)
    text = ask(store, "current", USER, "--believed-at", then)
    assert "the ledger held no record of" in " ".join(text.split())
    assert "not signed up" not in text
    doc = json.loads(ask(store, "current", USER, "--believed-at", then, "--json"))
    assert doc["assignment"] is None and doc["age_status"] == "unknown"
    # The sign-up time was not known then either: no answer beside the null assignment.
    assert doc["signup_at"] is None
    assert (doc["on_record"], doc["first_recorded_at"]) == (False, first)


def test_history_says_so_instead_of_an_empty_table(store: SimpleNamespace) -> None:
    then, first = before(store.first), format_instant(store.first)
    text = ask(store, "history", USER, "--believed-at", then)
    assert text == (
        f"The ledger held no record of {USER} at {then}: its first event was recorded at "
        f"{first}.\n"
    )
    doc = json.loads(ask(store, "history", USER, "--believed-at", then, "--json"))
    assert doc == {"user_id": USER, "entries": [], "on_record": False, "first_recorded_at": first}


def test_from_the_first_record_on_the_user_is_on_record(store: SimpleNamespace) -> None:
    first = format_instant(store.first) or ""
    for command in ("current", "history", "explain"):
        doc = json.loads(ask(store, command, USER, "--believed-at", first, "--json"))
        assert (doc["on_record"], doc["first_recorded_at"]) == (True, first), command
    now = json.loads(ask(store, "history", USER, "--json"))
    assert now["entries"] and (now["on_record"], now["first_recorded_at"]) == (True, None)
    text = ask(store, "history", USER, "--believed-at", first)
    assert "held no record" not in text and "valid from" in text


@pytest.mark.parametrize("endpoint", ["current", "history", "explain"])
def test_the_http_api_answers_the_same(store: SimpleNamespace, endpoint: str) -> None:
    then = before(store.first)
    got = store.server.json(
        f"/v1/users/{USER}/{endpoint}?believed_at={quote(then)}&at=2026-06-01", AUDITOR
    )
    extra = [] if endpoint == "history" else ["--at", "2026-06-01"]
    cli = json.loads(ask(store, endpoint, USER, "--believed-at", then, *extra, "--json"))
    assert got == cli
    assert (got["on_record"], got["first_recorded_at"]) == (False, format_instant(store.first))


def test_a_user_never_heard_of_is_still_unknown(store: SimpleNamespace) -> None:
    done = subprocess.run(
        [LEDGER, "history", "u-nobody", "--believed-at", "2026-01-01", "--db", store.db],
        capture_output=True,
        text=True,
        env={**os.environ, **serve_env()},
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.startswith("ledger: error: unknown user")
    assert store.server.get("/v1/users/u-nobody/history?believed_at=2026-01-01", AUDITOR)[0] == 404
