"""What the write path does when the store says no, on the real SQLite and PostgreSQL: a
record the database refuses is isolated by bisecting its batch and dead-lettered with the
database's own reason, the rest applied; an event id claimed by two users is a dead letter,
never a stuck batch."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from ledger.store.database import open_engine
from ledger.store.schema import dead_letters, events
from tests.factories import signup
from tests.support import Cli, eid, refuse_events_of, write_jsonl


def refuse_user(url: str, user: str) -> None:
    engine = open_engine(url)
    refuse_events_of(engine, user)
    engine.dispose()


def rows(url: str, table: sa.Table) -> list[sa.Row]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = list(conn.execute(sa.select(table)))
    engine.dispose()
    return found


def test_a_refused_record_is_bisected_out_and_the_rest_applied(cli: Cli, tmp_path: Path) -> None:
    cli.run("db", "upgrade")
    refuse_user(cli.db, "u-13")
    lines = [signup(n, f"u-{n}") for n in range(1, 41)]
    path = write_jsonl(tmp_path / "batch.jsonl", lines)
    summary = cli.json("replay", str(path), "--batch-size", "40", expect=3)
    assert (summary["applied"], summary["dead_lettered"]) == (39, 1)
    (dead,) = rows(cli.db, dead_letters)
    assert dead.position == "batch.jsonl:13"
    assert "the database refused it" in dead.reason and "no u-13 here" in dead.reason
    assert dead.user_id == "u-13" and json.loads(dead.raw) == lines[12]
    assert {r.event_id for r in rows(cli.db, events)} == {eid(n) for n in range(1, 41)} - {eid(13)}
    # Its position is passed: a second replay applies and refuses nothing more.
    again = cli.json("replay", str(path))
    assert (again["applied"], again["dead_lettered"], again["already_applied"]) == (0, 0, 40)


def test_one_event_id_for_two_users_in_one_batch_dead_letters_the_second(
    cli: Cli, tmp_path: Path
) -> None:
    """Was an IntegrityError traceback: the first user keeps the id, the second record is a
    dead letter naming the conflict, everything else is applied."""
    claimed = {**signup(5, "u-b"), "event_id": eid(1)}
    path = write_jsonl(tmp_path / "ids.jsonl", [signup(1, "u-a"), claimed, signup(2, "u-c")])
    summary = cli.json("replay", str(path), expect=3)
    assert (summary["applied"], summary["dead_lettered"]) == (2, 1)
    (dead,) = rows(cli.db, dead_letters)
    assert dead.position == "ids.jsonl:2"
    assert f"event_id {eid(1)} is already recorded for another user" in dead.reason
    assert cli.json("current", "u-a", "--at", "2026-02-01")["rule"] == "C2"
    cli.run("current", "u-b", expect=1)  # never applied: unknown user
    # And across batches and runs: the same claim again is dead-lettered again.
    later = write_jsonl(tmp_path / "later.jsonl", [claimed])
    assert cli.json("replay", str(later), expect=3)["dead_lettered"] == 1
