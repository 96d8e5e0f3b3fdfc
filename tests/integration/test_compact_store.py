"""Migration 0007 (the compact store) on SQLite and PostgreSQL: a store at 0006 with real
data answers every question the same after the upgrade, verifies the same, and keeps its
links, chain heads, positions and history rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from typer.testing import CliRunner

from ledger.cli.main import app
from ledger.generate import generate_events, write_events
from ledger.store import rows as row_mapping
from ledger.store.database import HEAD_REVISION, _alembic_config, open_engine
from ledger.store.schema import EVENT_POSITION, EVENTS_WITH_ORIGIN, events
from tests.support import Cli, chain_heads, history_rows

KEY = {"LEDGER_AUDIT_KEY": "compact-store-test", "LEDGER_PHONE_KEY": "compact-store-phones"}


def ledger(db: str, *args: str, expect: int | tuple[int, ...] = 0) -> str:
    result = CliRunner().invoke(app, [*args, "--db", db], env=KEY, catch_exceptions=False)
    allowed = expect if isinstance(expect, tuple) else (expect,)
    assert result.exit_code in allowed, f"ledger {args}: {result.exit_code}\n{result.stderr}"
    return result.stdout


def _migrate(url: str, revision: str, *, down: bool) -> None:
    engine = open_engine(url, migrate=False)
    cfg = _alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
        conn.commit()
    engine.dispose()


def _positions(url: str) -> list[tuple[str, str]]:
    """(event_id, position) of every event, at 0006 or 0007."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        names = {c["name"] for c in sa.inspect(conn).get_columns("events")}
        if "position" in names:
            q = sa.text("SELECT event_id, position FROM events")
        else:
            q = sa.select(events.c.event_id, EVENT_POSITION).select_from(EVENTS_WITH_ORIGIN)
        found = sorted((str(e), str(p)) for e, p in conn.execute(q))
    engine.dispose()
    return found


def _answers(url: str, users: list[str], tmp_path: Path, name: str) -> dict[str, Any]:
    """What the commands say of the store: per user current, history and explain; the
    verify report; the decision log."""
    out: dict[str, Any] = {}
    for user in users:
        at = ("--at", "2026-06-01")
        out[f"current {user}"] = ledger(url, "current", user, *at, "--json", expect=(0, 1))
        out[f"history {user}"] = ledger(url, "history", user, "--all", "--json", expect=(0, 1))
        out[f"explain {user}"] = ledger(url, "explain", user, *at, expect=(0, 1))
    report = json.loads(ledger(url, "verify", "--json"))
    for timing in ("seconds", "events_per_second"):
        report.pop(timing)
    out["verify"] = report
    log = tmp_path / f"{name}.jsonl"
    ledger(url, "decisions", "export", "-o", str(log))
    out["decisions"] = log.read_text()
    return out


@pytest.fixture
def stream(tmp_path: Path) -> tuple[Path, Path]:
    first, late = tmp_path / "first.jsonl", tmp_path / "late.jsonl"
    events_ = list(generate_events(120, seed=17))
    write_events(first, events_[: len(events_) * 2 // 3])
    # The rest later: late events supersede history rows.
    write_events(late, events_[len(events_) * 2 // 3 :])
    return first, late


def test_a_store_at_0006_answers_the_same_after_the_upgrade(
    db_url: str, tmp_path: Path, stream: tuple[Path, Path]
) -> None:
    for path in stream:
        ledger(db_url, "replay", str(path), expect=(0, 3))
    users = sorted({json.loads(line)["user_id"] for line in stream[0].read_text().splitlines()})
    users = [*users[:25], "u-nobody"]
    digest = tmp_path / "digest.json"
    ledger(db_url, "digest", "-o", str(digest))
    rows, heads, positions = history_rows(db_url), chain_heads(db_url), _positions(db_url)
    assert len(rows) > 100 and len(positions) > 300
    before = _answers(db_url, users, tmp_path, "before")
    # The store as 0006 kept it: the layout the old code wrote, with the same rows.
    _migrate(db_url, "0006", down=True)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        names = {c["name"] for c in sa.inspect(conn).get_columns("events")}
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"source", "position"} <= names and "origin_id" not in names
    assert "decisions" not in tables and "event_origins" not in tables
    assert history_rows(db_url) == rows
    assert chain_heads(db_url) == heads
    assert _positions(db_url) == positions

    assert Cli(db_url).json("db", "upgrade") == {"from": "0006", "to": HEAD_REVISION}
    assert history_rows(db_url) == rows
    assert chain_heads(db_url) == heads
    assert _positions(db_url) == positions
    assert _answers(db_url, users, tmp_path, "after") == before
    ledger(db_url, "verify", "--digest", str(digest))
    # The store goes on: a replay of the same file applies nothing twice, a new one appends.
    ledger(db_url, "replay", str(stream[0]), expect=(0, 3))
    assert history_rows(db_url) == rows
    more = tmp_path / "more.jsonl"
    write_events(more, generate_events(10, seed=18))
    ledger(db_url, "replay", str(more), expect=(0, 3))
    assert json.loads(ledger(db_url, "verify", "--json"))["ok"] is True


def test_positions_split_and_join_back() -> None:
    for position in ("ev.avro#0", "ev.avro#12", "t[3]@9007", "#007", "name", "", "a#-1", "x#0"):
        prefix, offset = row_mapping.split_position(position)
        assert row_mapping.join_position(prefix, offset) == position
    assert row_mapping.split_position("ev.avro#12") == ("ev.avro#", 12)
    assert row_mapping.split_position("#007") == ("#007", None)
    assert row_mapping.split_position("t[3]@" + "9" * 30) == ("t[3]@" + "9" * 30, None)
