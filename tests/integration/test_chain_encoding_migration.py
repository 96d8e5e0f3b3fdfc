"""Migration 0006 on SQLite and PostgreSQL: a store at 0005 (links and heads under chain
encoding 1) with a signed digest taken there is upgraded; every link and head is then the
one a fresh replay writes under encoding 2, `ledger verify` passes, and the old digest
still verifies, before and after the store moves on. The downgrade gives back encoding 1.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from ledger.app.audit.digest import take_digest
from ledger.app.audit.signing import sign
from ledger.domain.audit.canonical import (
    EVENT_CHAIN_FIELDS,
    canonical_event,
    canonical_event_v2,
)
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.generate import generate_events, write_events
from ledger.store.audit_snapshot import SqlAuditSource, stored_chain_encoding
from ledger.store.database import (
    HEAD_REVISION,
    MIGRATIONS,
    _alembic_config,
    current_revision,
    open_engine,
)
from ledger.store.rows import event_id_bytes
from ledger.store.schema import UTCDateTime, events
from tests.support import Cli

T0 = datetime(2026, 3, 1, tzinfo=UTC)
AUDIT_KEY = "migration-test-audit-key"

State = tuple[dict[str, bytes], dict[str, tuple[bytes, int]]]


def stream_file(path: Path, users: int, seed: int, first: int = 0) -> Path:
    """Generated events with their own record times, so two replays build the same store."""
    write_events(path, generate_events(users, seed))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for i, e in enumerate(lines):
        e["recorded_at"] = (T0 + timedelta(seconds=first + i)).isoformat()
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    return path


def chain_state(url: str) -> State:
    """(event_id -> link, user -> (chain head, length)) as stored."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        links = dict(conn.execute(sa.text("SELECT event_id, link FROM events")).all())
        heads = conn.execute(sa.text("SELECT user_id, chain_head, events FROM users")).all()
    engine.dispose()
    return {e: bytes(v) for e, v in links.items()}, {u: (bytes(h), n) for u, h, n in heads}


# The chained columns as revisions 0005 and 0006 kept them (text ids, ISO text instants on
# SQLite); migration 0007 made the store compact, and `events` is that layout.
_TYPES_0006 = {
    "occurred_at": UTCDateTime(),
    "recorded_at": UTCDateTime(),
    "birth_date": sa.Date(),
    "phone_valid": sa.Boolean(),
    "seq": sa.Integer(),
}
EVENTS_0006 = sa.table(
    "events",
    *(sa.column(n, _TYPES_0006.get(n, sa.String())) for n in EVENT_CHAIN_FIELDS),
)


def recomputed(url: str, encode: Callable[[Mapping[str, Any]], bytes]) -> State:
    """The state the stored rows imply under an encoding, computed here from scratch."""
    engine = open_engine(url, migrate=False)
    links: dict[str, bytes] = {}
    heads: dict[str, tuple[bytes, int]] = {}
    with engine.connect() as conn:
        compact = "origin_id" in {c["name"] for c in sa.inspect(conn).get_columns("events")}
        table = events if compact else EVENTS_0006
        cols = [table.c[name] for name in EVENT_CHAIN_FIELDS]
        for row in conn.execute(sa.select(*cols).order_by(table.c.user_id, table.c.seq)):
            head, n = heads.get(row.user_id, (GENESIS, 0))
            link = next_link(head, encode(dict(row._mapping)))
            links[event_id_bytes(row.event_id) if compact else row.event_id] = link
            heads[row.user_id] = (link, n + 1)
    engine.dispose()
    return links, heads


def migrate(url: str, to: str) -> None:
    engine = open_engine(url, migrate=False)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        if to == "head":
            command.upgrade(cfg, to)
        else:
            command.downgrade(cfg, to)
    engine.dispose()


def encoding_and_revision(url: str) -> tuple[int | None, str | None]:
    engine = open_engine(url, migrate=False)
    with engine.connect() as conn:
        found = stored_chain_encoding(conn), current_revision(conn)
    engine.dispose()
    return found


def test_an_upgraded_store_is_a_fresh_replay_and_keeps_its_old_digests(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_AUDIT_KEY", AUDIT_KEY)
    first = stream_file(tmp_path / "first.jsonl", users=30, seed=21)
    cli = Cli(db_url)
    cli.json("replay", str(first), "--batch-size", "17")
    migrate(db_url, "0005")
    assert encoding_and_revision(db_url) == (None, "0005")
    at_0005 = chain_state(db_url)
    # What revision 0005 held: every link and head under encoding 1.
    assert at_0005 == recomputed(db_url, canonical_event)

    engine = open_engine(db_url, migrate=False)
    taken = take_digest(SqlAuditSource(engine), T0 + timedelta(days=1))
    engine.dispose()
    document = sign(taken, hmac_key=AUDIT_KEY.encode())
    # A digest of encoding 1 is byte for byte what the ledger wrote before the field existed.
    assert taken.chain_encoding == 1 and "chain_encoding" not in document
    old_digest = tmp_path / "digest-0005.json"
    old_digest.write_text(json.dumps(document, indent=2))

    migrate(db_url, "head")
    assert encoding_and_revision(db_url) == (2, HEAD_REVISION)
    upgraded = chain_state(db_url)
    assert upgraded == recomputed(db_url, canonical_event_v2)
    assert upgraded[1].keys() == at_0005[1].keys()
    for user, (head, length) in at_0005[1].items():
        assert upgraded[1][user][1] == length and upgraded[1][user][0] != head

    assert cli.json("verify")["ok"] is True
    report = cli.json("verify", "--digest", str(old_digest))
    assert report["ok"] is True, report
    assert report["digest"]["matches"] is True and report["digest"]["chain_encoding"] == 1

    # The same events replayed into a new store under encoding 2: the same links and heads.
    fresh = Cli(f"sqlite:///{tmp_path / 'fresh.db'}")
    fresh.json("replay", str(first), "--batch-size", "1000")
    assert chain_state(fresh.db) == upgraded

    # The store moves on: the old digest still verifies, a new one says encoding 2.
    more = stream_file(tmp_path / "more.jsonl", users=8, seed=22, first=100_000)
    assert cli.json("replay", str(more))["applied"] > 0
    assert cli.json("verify", "--digest", str(old_digest))["ok"] is True
    new_digest = tmp_path / "digest-0006.json"
    cli.run("digest", "-o", str(new_digest))
    assert json.loads(new_digest.read_text())["chain_encoding"] == 2
    report = cli.json("verify", "--digest", str(new_digest))
    assert report["ok"] is True and report["digest"]["chain_encoding"] == 2

    # An event applied before the old digest and changed since is still caught through it,
    # even with every link after it rewritten under encoding 2.
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        victim = conn.execute(
            sa.text("SELECT user_id FROM users ORDER BY user_id LIMIT 1")
        ).scalar_one()
        conn.execute(
            events.update()
            .where(events.c.user_id == victim, events.c.seq == 1)
            .values(occurred_at=T0 - timedelta(days=400))
        )
    engine.dispose()
    _relink(db_url, victim)
    assert cli.json("verify", "--digest", str(new_digest), expect=1)["digest"]["matches"] is False
    assert cli.json("verify", "--digest", str(old_digest), expect=1)["digest"]["matches"] is False


def _relink(url: str, user_id: str) -> None:
    """A careful attacker's repair under the store's encoding: every link and the head."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(events).where(events.c.user_id == user_id).order_by(events.c.seq)
        ).all()
        head = GENESIS
        for row in rows:
            fields = {n: row._mapping[n] for n in EVENT_CHAIN_FIELDS}
            head = next_link(head, canonical_event_v2(fields))
            conn.execute(events.update().where(events.c.event_id == row.event_id).values(link=head))
        conn.execute(
            sa.text("UPDATE users SET chain_head = :h WHERE user_id = :u"),
            {"h": head, "u": user_id},
        )
    engine.dispose()


def _migration_0006() -> ModuleType:
    path = MIGRATIONS / "versions" / "0006_chain_encoding_2.py"
    spec = importlib.util.spec_from_file_location("migration_0006", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_downgrade_gives_back_encoding_1_and_chunks_do_not_show(
    db_url: str, tmp_path: Path
) -> None:
    cli = Cli(db_url)
    cli.json("replay", str(stream_file(tmp_path / "s.jsonl", users=25, seed=23)))
    at_head = chain_state(db_url)
    migrate(db_url, "0005")
    at_0005 = chain_state(db_url)
    assert at_0005 == recomputed(db_url, canonical_event)
    migrate(db_url, "head")
    assert chain_state(db_url) == at_head
    # Chunks and update batches far smaller than a user's chain or the store: keyset pages
    # end inside users' chains, and the result is the same (on the layout 0006 rechained).
    migrate(db_url, "0006")
    at_0006 = chain_state(db_url)
    module = _migration_0006()
    module.CHUNK_EVENTS, module.UPDATE_ROWS = 7, 3
    engine = open_engine(db_url, migrate=False)
    with engine.begin() as conn:
        module.rechain(conn, canonical_event)
    assert chain_state(db_url) == at_0005
    with engine.begin() as conn:
        module.rechain(conn, canonical_event_v2)
    engine.dispose()
    assert chain_state(db_url) == at_0006
    migrate(db_url, "head")
    assert chain_state(db_url) == at_head
    assert cli.json("verify")["ok"] is True


def test_an_edited_encoding_record_is_reported(db_url: str, tmp_path: Path) -> None:
    cli = Cli(db_url)
    cli.json("replay", str(stream_file(tmp_path / "s.jsonl", users=6, seed=24)))
    engine = sa.create_engine(db_url)
    for version, kind in ((7, "chain_encoding"), (1, "event_edited")):
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE store_formats SET version = :v"), {"v": version})
        report = cli.json("verify", expect=1)
        kinds = {p["kind"] for p in report["problems"]}
        assert kind in kinds, report
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE store_formats SET version = 2"))
    engine.dispose()
    assert cli.json("verify")["ok"] is True
