"""The audit trail's write side on SQLite and PostgreSQL: links and chain heads written with
every batch, policy pinning, and migration 0003 computing both for a store written before
it existed. (`ledger verify`, digests and the decision log: test_audit_trail.py.)"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from ledger.app.ingest.projector import Projector
from ledger.codecs.policy_files import load_policies
from ledger.domain.audit.canonical import EVENT_CHAIN_FIELDS, canonical_event_v2
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.domain.events import Event, IdentityVerified, SignedUp
from ledger.generate import generate_events, write_events
from ledger.resources import policies_dir
from ledger.sources.files import read_records, source_key
from ledger.store.database import _alembic_config, open_engine
from ledger.store.schema import events
from ledger.store.sql import SqlStore
from tests.support import Cli

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _chain_state(url: str) -> tuple[dict[str, bytes], dict[str, tuple[bytes, int]], list]:
    """(event_id -> link, user -> (chain head, events), history (user, valid_from,
    recorded_at, policy_hash))."""
    engine = open_engine(url, migrate=False)
    with engine.connect() as conn:
        links = dict(conn.execute(sa.text("SELECT event_id, link FROM events")).all())
        heads = {
            u: (bytes(h), n)
            for u, h, n in conn.execute(sa.text("SELECT user_id, chain_head, events FROM users"))
        }
        hashes = sorted(
            conn.execute(
                sa.text(
                    "SELECT h.user_id, h.valid_from, h.recorded_at, d.policy_hash"
                    " FROM assignment_history AS h JOIN decisions AS d ON d.id = h.decision_id"
                )
            ).all()
        )
    engine.dispose()
    return {e: bytes(v) for e, v in links.items()}, heads, hashes


def test_links_recompute_from_the_stored_rows(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    write_events(path, generate_events(120, seed=3))
    cli.json("replay", str(path), "--batch-size", "37")
    engine = open_engine(cli.db)
    cols = [events.c[name] for name in EVENT_CHAIN_FIELDS]
    heads: dict[str, bytes] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(*cols, events.c.link).order_by(events.c.user_id, events.c.seq)
        )
        for row in rows:
            fields = {name: row._mapping[name] for name in EVENT_CHAIN_FIELDS}
            link = next_link(heads.get(row.user_id, GENESIS), canonical_event_v2(fields))
            assert bytes(row.link) == link, row.event_id
            heads[row.user_id] = link
        stored = dict(conn.execute(sa.text("SELECT user_id, chain_head FROM users")).all())
        app_seqs = (
            conn.execute(sa.text("SELECT app_seq FROM events ORDER BY user_id, seq"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert {u: bytes(h) for u, h in stored.items()} == heads
    assert sorted(app_seqs) == list(range(1, len(app_seqs) + 1))


def test_chain_heads_do_not_depend_on_batches_or_parse_workers(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    write_events(path, generate_events(150, seed=9))
    policies = load_policies()
    states = []
    for batch_size, workers in ((10_000, 0), (1, 0), (40, 1)):
        engine = open_engine(db_url)
        with engine.begin() as conn:
            for table in ("events", "users", "assignment_history", "source_positions"):
                conn.execute(sa.text(f"DELETE FROM {table}"))
        projector = Projector(SqlStore(engine), policies, b"k", parse_workers=workers)
        records = [r for r, _ in read_records(path, source_key(path))]
        batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
        for _ in projector.apply_batches(batches, NOW):
            pass
        engine.dispose()
        states.append(_chain_state(db_url))
    assert states[0] == states[1] == states[2]
    assert len(states[0][0]) > 150


def test_a_policy_edited_under_its_version_is_refused_at_start(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    write_events(path, generate_events(60, seed=4))
    cli.json("replay", str(path))
    edited = tmp_path / "policies"
    shutil.copytree(policies_dir(), edited)
    engine = open_engine(cli.db)
    with engine.connect() as conn:
        pinned = conn.execute(sa.text("SELECT version FROM policy_pins")).scalars().all()
    engine.dispose()
    assert "tos-2023-legacy" in pinned
    victim = edited / "tos-2023-legacy.toml"
    text = victim.read_text()
    assert 'reason = "' in text
    victim.write_text(text.replace('reason = "', 'reason = "Edited: ', 1))
    more = tmp_path / "more.jsonl"
    write_events(more, generate_events(10, seed=5))
    result = cli.run("replay", str(more), "--policies", str(edited), expect=1)
    assert "publish" in result.stderr and "new version" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    # Nothing of the refused run was applied; the shipped policies still work.
    assert cli.json("replay", str(more))["applied"] > 0


def version_1_events(events: Iterable[Event]) -> Iterator[Event]:
    """The stream without what event schema version 2 added."""
    for e in events:
        if isinstance(e.payload, SignedUp):
            yield replace(e, payload=replace(e.payload, locale=None))
        elif not isinstance(e.payload, IdentityVerified):
            yield e


def test_upgrade_to_0003_computes_what_the_writer_would_have(cli: Cli, tmp_path: Path) -> None:
    """A store at 0002 (the writer's rows without the audit columns) gets the same links,
    heads and policy hashes from the migration as the writer wrote. Such a store holds
    events of schema version 1 only: a downgrade below 0005 drops what version 2 added."""
    path = tmp_path / "gen.jsonl"
    write_events(path, version_1_events(generate_events(200, seed=11)))
    cli.json("replay", str(path), "--batch-size", "53")
    written = _chain_state(cli.db)
    engine = open_engine(cli.db, migrate=False)
    cfg = _alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
        conn.commit()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("events")}
        assert "link" not in columns and "app_seq" not in columns
    engine.dispose()
    open_engine(cli.db).dispose()  # migrates to head
    assert _chain_state(cli.db) == written
    engine = open_engine(cli.db)
    with engine.connect() as conn:
        per_user = conn.execute(
            sa.text("SELECT user_id, seq, app_seq FROM events ORDER BY user_id, seq")
        ).all()
        pins = conn.execute(sa.text("SELECT count(*) FROM policy_pins")).scalar()
    engine.dispose()
    assert pins and pins > 0
    last: dict[str, int] = {}
    for user, _seq, app_seq in per_user:
        assert app_seq > last.get(user, 0)
        last[user] = app_seq
    # The store goes on from there: a later replay appends to the migrated chains.
    more = tmp_path / "more.jsonl"
    write_events(more, generate_events(20, seed=12))
    assert cli.json("replay", str(more))["applied"] > 0
