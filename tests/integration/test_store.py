"""The store on SQLite and the real PostgreSQL: migrations, idempotent replays, and the
same history on both databases. What every store implementation must do through the batch
port (the in-memory one included) is tests/integration/test_store_contract.py."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ledger.generate import generate_events, write_events
from ledger.store.database import head_revision, open_engine
from ledger.store.rows import event_id_text
from ledger.store.schema import assignment_history, events, metadata, users
from tests.support import Cli, history_rows


def test_migrations_create_exactly_the_models(db_url: str) -> None:
    engine = open_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_db_upgrade_command_is_idempotent(cli: Cli) -> None:
    assert cli.json("db", "upgrade") == {"from": None, "to": head_revision()}
    assert cli.json("db", "upgrade") == {"from": head_revision(), "to": head_revision()}


def test_second_replay_applies_nothing(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    write_events(path, generate_events(300, seed=5))
    first = cli.json("replay", str(path), "--batch-size", "97")
    assert first["applied"] > 300 and first["users"] == 300
    rows = history_rows(cli.db)
    second = cli.json("replay", str(path))
    assert (second["applied"], second["duplicates"], second["dead_lettered"]) == (0, 0, 0)
    assert second["already_applied"] == sum(1 for _ in path.open())
    assert history_rows(cli.db) == rows
    # The same events under another file name are all recognised by event id.
    copy = tmp_path / "copy.jsonl"
    copy.write_text(path.read_text() + "\n")
    third = cli.json("replay", str(copy))
    assert third["applied"] == 0 and third["duplicates"] == first["applied"] + first["duplicates"]
    assert history_rows(cli.db) == rows


def test_raw_phone_numbers_never_reach_the_read_model(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    write_events(path, generate_events(50, seed=9))
    phones = {json.loads(line)["phone"].lstrip("+") for line in path.open() if '"phone"' in line}
    cli.run("replay", str(path))
    engine = sa.create_engine(cli.db)
    with engine.connect() as conn:
        dumped = " ".join(
            str(tuple(r))
            for t in (events, users, assignment_history)
            for r in conn.execute(sa.select(t))
        )
    engine.dispose()
    leaked = [p for p in phones if len(p) > 6 and p in dumped]
    assert leaked == []


def test_sqlite_and_postgresql_build_identical_histories(
    sqlite_url: str, pg_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "gen.avro"
    write_events(path, generate_events(400, seed=11))
    # One record time for both, so the comparison covers recorded_at/superseded_at too.
    stamped = tmp_path / "stamped.jsonl"
    from ledger.codecs.avro import AvroCodec
    from ledger.codecs.jsonl import event_to_json_line
    from ledger.domain.time import parse_instant

    with path.open("rb") as fo, stamped.open("w") as out:
        for i, item in AvroCodec().read_container(fo):
            event, _ = item  # type: ignore[misc]
            out.write(
                event_to_json_line(
                    event,
                    parse_instant("2026-11-01T00:00:00Z").replace(microsecond=(i % 1000) * 1000),
                )
                + "\n"
            )
    for url in (sqlite_url, pg_url):
        Cli(url).run("replay", str(stamped), "--batch-size", "333", expect=None)
    assert history_rows(sqlite_url) == history_rows(pg_url)
    assert len(history_rows(sqlite_url)) > 400


def test_upgrade_from_0001_numbers_stored_events_per_user(db_url: str) -> None:
    """A store written before the per-user sequence existed gets one, by record time."""
    from alembic import command

    from ledger.store.database import _alembic_config

    engine = open_engine(db_url, migrate=False)
    cfg = _alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.commit()
        rows = [
            ("e3", "u-1", "2026-01-03"),
            ("e1", "u-1", "2026-01-01"),
            ("e2", "u-2", "2026-01-02"),
            ("e4", "u-1", "2026-01-02"),
        ]
        for event_id, user, day in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO events (event_id, user_id, occurred_at, recorded_at, type,"
                    " source, position) VALUES (:e, :u, :t, :t, 'Relocated', 's', 'p')"
                ),
                {"e": event_id, "u": user, "t": f"{day} 00:00:00.000000"},
            )
        conn.execute(
            sa.text(
                "INSERT INTO dead_letters (source, position, reason, raw, recorded_at)"
                " VALUES ('s', 'p', 'r', :raw, '2026-01-01 00:00:00.000000')"
            ),
            {"raw": b"abc"},
        )
        conn.commit()
    engine.dispose()
    engine = open_engine(db_url)  # migrates to head
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT event_id, seq FROM events")).all()
        seqs = {event_id_text(e): seq for e, seq in found}  # bytes since 0007
        sizes = conn.execute(sa.text("SELECT raw_size FROM dead_letters")).scalars().all()
    engine.dispose()
    assert seqs == {"e1": 1, "e4": 2, "e3": 3, "e2": 1}
    assert sizes == [3]
