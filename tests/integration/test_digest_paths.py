"""Recorded digests and audit paths (docs/audit.md), on SQLite and the real PostgreSQL:
`ledger digest` records what it writes; every user's path verifies against the recorded
root; paths against an older digest use the leaf as of its seq, exactly as a fresh
computation over the events up to that seq gives them; a changed link breaks the path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from ledger.app.audit.digest import take_blocked_digest
from ledger.app.audit.paths import audit_path
from ledger.app.audit.signing import sign
from ledger.domain.audit.merkle import Leaf, MerkleBuilder, PathBuilder, leaf_hash
from ledger.generate import generate_events, write_events
from ledger.store.audit_snapshot import SqlAuditSource
from ledger.store.database import open_engine
from ledger.store.digests import SqlDigestRecords, record_digest
from ledger.store.schema import events
from tests.support import Cli

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, tzinfo=UTC)


def stream_file(path: Path, users: int, seed: int, first: int = 0) -> Path:
    """A generated stream whose events carry their own record times."""
    write_events(path, generate_events(users, seed))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for i, e in enumerate(lines):
        e["recorded_at"] = (T0 + timedelta(seconds=first + i)).isoformat()
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    return path


def user_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(events.c.user_id).distinct()).scalars())


def leaves_up_to(engine: sa.Engine, seq: int) -> list[Leaf]:
    """The leaves of a store cut at `seq`, from nothing but the event rows."""
    chains: dict[str, tuple[bytes, int]] = {}
    with engine.connect() as conn:
        q = sa.select(events.c.user_id, events.c.link).where(events.c.app_seq <= seq)
        for user_id, link in conn.execute(q.order_by(events.c.user_id, events.c.seq)):
            chains[user_id] = (bytes(link), chains.get(user_id, (b"", 0))[1] + 1)
    return [Leaf(u, *chains[u]) for u in sorted(chains)]


def record(engine: sa.Engine, block_size: int) -> int:
    taken = take_blocked_digest(SqlAuditSource(engine), NOW, block_size)
    document = sign(taken.digest)
    return record_digest(engine, taken, json.dumps(document, indent=2) + "\n", "none")


def test_ledger_digest_records_what_it_writes_and_every_path_verifies(
    db_url: str, tmp_path: Path
) -> None:
    cli = Cli(db_url)
    cli.run("replay", str(stream_file(tmp_path / "a.jsonl", 60, 5)))
    written = tmp_path / "digest.json"
    summary = cli.json("digest", "-o", str(written))
    listed = cli.json("digest", "list")
    document = json.loads(written.read_text())
    assert [(d["id"], d["seq"], d["root"], d["signature"]) for d in listed] == [
        (summary["id"], document["seq"], document["root"], "none")
    ]
    engine = open_engine(db_url, migrate=False)
    try:
        with SqlDigestRecords(engine).snapshot() as snap:
            recorded = snap.recorded()
            assert recorded is not None and recorded.document == written.read_text()
        # Every user's path, against the newest digest (one block) and against a digest
        # recorded in blocks of 4 leaves (the path then crosses recorded block roots).
        small = record(engine, 4)
        for user_id in user_ids(engine):
            for digest_id in (None, summary["id"], small):
                proof = audit_path(SqlDigestRecords(engine), user_id, digest_id)
                assert proof.holds, (user_id, digest_id)
                assert proof.root.hex() == document["root"]
                assert proof.tree_size == document["users"]
        shown = cli.json("digest", "path", user_ids(engine)[7])
    finally:
        engine.dispose()
    # Without --digest-id: the newest recorded digest, the one in blocks of 4.
    assert shown["leaf_index"] == 7 and shown["digest_id"] == small
    assert shown["digest"]["root"] == document["root"]
    assert shown["leaf"]["user_id"] == user_ids(engine)[7]


def test_paths_against_an_older_digest_use_the_leaves_as_of_its_seq(
    db_url: str, tmp_path: Path
) -> None:
    cli = Cli(db_url)
    cli.run("replay", str(stream_file(tmp_path / "a.jsonl", 30, 5)))
    engine = open_engine(db_url, migrate=False)
    try:
        first = record(engine, 4)
        with SqlDigestRecords(engine).snapshot() as snap:
            recorded = snap.recorded(first)
            assert recorded is not None
            seq = recorded.seq
        before = leaves_up_to(engine, seq)
        known = {leaf.user_id for leaf in before}
        # More events: new users and (the same ids, another seed) existing ones.
        cli.run("replay", str(stream_file(tmp_path / "b.jsonl", 45, 9, first=10_000)))
        second = record(engine, 4)
        after = leaves_up_to(engine, 10**12)
        assert len(after) > len(before)
        assert {leaf.user_id: leaf for leaf in after}.keys() >= known
        assert any(leaf not in before for leaf in after if leaf.user_id in known)
        builder = MerkleBuilder()
        for leaf in before:
            builder.add(*leaf)
        for index, leaf in enumerate(before):
            proof = audit_path(SqlDigestRecords(engine), leaf.user_id, first)
            assert proof.holds and proof.leaf == leaf and proof.leaf_index == index
            fresh = PathBuilder(index, len(before))
            for other in before:
                fresh.push(leaf_hash(*other))
            assert proof.siblings == fresh.siblings()
            assert proof.root == builder.root()
            assert audit_path(SqlDigestRecords(engine), leaf.user_id, second).holds
        # A user who had no event by the first digest has no leaf in it.
        late = next(leaf.user_id for leaf in after if leaf.user_id not in known)
        result = cli.run("digest", "path", late, "--digest-id", str(first), expect=1)
        assert "has no leaf" in result.stderr and result.stderr.count("\n") == 1
    finally:
        engine.dispose()


def test_a_changed_link_before_the_digest_breaks_the_path(db_url: str, tmp_path: Path) -> None:
    cli = Cli(db_url)
    cli.run("replay", str(stream_file(tmp_path / "a.jsonl", 20, 5)))
    cli.run("digest", "-o", str(tmp_path / "d.json"))
    engine = open_engine(db_url, migrate=False)
    try:
        victim = user_ids(engine)[3]
        assert audit_path(SqlDigestRecords(engine), victim).holds
        with engine.begin() as conn:
            conn.execute(
                events.update()
                .where(events.c.user_id == victim, events.c.seq == 1)
                .values(link=b"\x42" * 32)
            )
        # Its first link is the whole chain's head only for a one-event user: change the
        # last covered one as well, as an editor rewriting the chain would.
        with engine.begin() as conn:
            last = conn.execute(
                sa.select(sa.func.max(events.c.seq)).where(events.c.user_id == victim)
            ).scalar()
            conn.execute(
                events.update()
                .where(events.c.user_id == victim, events.c.seq == last)
                .values(link=b"\x43" * 32)
            )
        proof = audit_path(SqlDigestRecords(engine), victim)
        assert not proof.holds
        other = user_ids(engine)[4]
    finally:
        engine.dispose()
    result = cli.run("digest", "path", victim, expect=1)
    assert "does not lead to the root" in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""
    # The leaves of the block changed, so every path through it does not reach the root.
    cli.run("digest", "path", other, expect=1)
