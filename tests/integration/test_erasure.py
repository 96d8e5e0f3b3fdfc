"""Erasure (docs/data-protection.md) end to end, on SQLite and the real PostgreSQL: an
`AccountErased` applied through the projector's one path deletes the user's personal data
and keeps what the spec keeps; later records of the user are suppressed; readers answer
"erased"; the store verifies, older digests too, and tampering with what was kept is
caught; a replay of the log with the erasure builds the same store as live; nothing of
the user is left in the SQLite files or the exports."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledger.app.audit.decisions import export_decisions
from ledger.app.audit.digest import take_digest
from ledger.app.audit.verify import verify
from ledger.app.ingest.projector import Projector
from ledger.app.ingest.replay import ReplaySummary, replay_files
from ledger.codecs.policy_files import load_policies
from ledger.config import DEV_PHONE_KEY
from ledger.queries.history import ErasedUser, current, history
from ledger.store.audit_snapshot import SqlAuditSource
from ledger.store.database import open_engine
from ledger.store.rows import event_id_bytes
from ledger.store.sql import SqlStore
from tests.integration.test_audit_trail import stream_file
from tests.support import Cli, chain_heads

POLICIES = load_policies()
T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, tzinfo=UTC)
ERASURE_ID = "5e0c7f00-0000-4000-8000-00000000e001"


def replay(url: str, *paths: Path, retain: bool = False) -> ReplaySummary:
    engine = open_engine(url)
    try:
        projector = Projector(SqlStore(engine, retain_assignments=retain), POLICIES, DEV_PHONE_KEY)
        return replay_files(projector, list(paths), batch_size=50, now=NOW)
    finally:
        engine.dispose()


def erasure_file(path: Path, user: str, at: datetime, request_id: str = "DSR-7") -> Path:
    line = {
        "event_id": ERASURE_ID,
        "user_id": user,
        "occurred_at": at.isoformat(),
        "recorded_at": at.isoformat(),
        "type": "AccountErased",
        "request_id": request_id,
        "reason": "the account holder asked by e-mail",
    }
    path.write_text(json.dumps(line) + "\n")
    return path


def personal(stream: Path, user: str) -> dict[str, set[str]]:
    """What the input says of `user` that must not survive: event ids, birth dates."""
    lines = [json.loads(x) for x in stream.read_text().splitlines()]
    mine = [x for x in lines if x["user_id"] == user]
    return {
        "event_ids": {x["event_id"] for x in mine},
        "birth_dates": {x["birth_date"] for x in mine if x.get("birth_date")},
    }


def phone_hashes(url: str, user: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT phone_hash FROM events WHERE user_id = :u AND phone_hash IS NOT NULL"),
            {"u": user},
        ).scalars()
        hashes = set(found)
    engine.dispose()
    return hashes


def rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = list(conn.execute(sa.text(sql), params))
    engine.dispose()
    return found


def busy_user(stream: Path) -> str:
    """The user with the most events in the stream."""
    counts: dict[str, int] = {}
    for line in stream.read_text().splitlines():
        u = json.loads(line)["user_id"]
        counts[u] = counts.get(u, 0) + 1
    return max(sorted(counts), key=lambda u: counts[u])


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    return stream_file(tmp_path / "events.jsonl", users=30)


def with_bad_event(stream: Path, user: str, path: Path) -> Path:
    """A record of `user` the ledger dead-letters (a terms version no policy has)."""
    line = {
        "event_id": "5e0c7f00-0000-4000-8000-00000000d001",
        "user_id": user,
        "occurred_at": (T0 + timedelta(days=2)).isoformat(),
        "recorded_at": (T0 + timedelta(days=2)).isoformat(),
        "type": "TermsAccepted",
        "tos_version": "tos-unknown",
    }
    path.write_text(json.dumps(line) + "\n")
    return path


def test_an_erasure_deletes_keeps_and_suppresses_as_the_spec_says(
    db_url: str, stream: Path, tmp_path: Path
) -> None:
    user = busy_user(stream)
    replay(db_url, stream, with_bad_event(stream, user, tmp_path / "bad.jsonl"))
    assert rows(db_url, "SELECT count(*) FROM dead_letters WHERE user_id = :u", u=user)[0][0] == 1
    before = take_digest(SqlAuditSource(open_engine(db_url)), NOW)
    n = rows(db_url, "SELECT events FROM users WHERE user_id = :u", u=user)[0][0]

    at = T0 + timedelta(days=30)
    summary = replay(db_url, erasure_file(tmp_path / "erase.jsonl", user, at))
    assert (summary.applied, summary.erased, summary.suppressed) == (1, 1, 0)

    # Kept: per event its seq, app_seq, record time and link; nothing else.
    kept = rows(
        db_url,
        "SELECT seq, event_id, occurred_at, type, phone_hash, channel, birth_date, country, "
        "tos_version, locale, document_country, origin_offset, link, recorded_at "
        "FROM events WHERE user_id = :u ORDER BY seq",
        u=user,
    )
    assert [r[0] for r in kept] == list(range(1, n + 2))
    for r in kept[:-1]:
        assert r[1:12] == (None,) * 11 and len(bytes(r[12])) == 32 and r[13] is not None
    assert kept[-1][3] == "AccountErased"
    assert (
        rows(db_url, "SELECT count(*) FROM assignment_history WHERE user_id = :u", u=user)[0][0]
        == 0
    )
    assert rows(db_url, "SELECT count(*) FROM dead_letters WHERE user_id = :u", u=user)[0][0] == 0
    (urow,) = rows(
        db_url,
        "SELECT signup_at, channel, birth_date, signup_phone_hash, current_phone_hash, "
        "residence, tos_version, assignment, events FROM users WHERE user_id = :u",
        u=user,
    )
    assert tuple(urow) == (None,) * 8 + (n + 1,)
    (erased,) = rows(
        db_url, "SELECT request_id, seq, dead_letters FROM erasures WHERE user_id = :u", u=user
    )
    assert tuple(erased) == ("DSR-7", n + 1, 1)

    # Readers answer "erased", and only that.
    engine = open_engine(db_url)
    for read in (
        lambda: history(engine, user),
        lambda: history(engine, user, include_superseded=True),
        lambda: current(engine, user, NOW),
    ):
        with pytest.raises(ErasedUser) as caught:
            read()
        assert caught.value.to_json() == {
            "user_id": user,
            "erased_at": "2026-12-01T00:00:00Z",
            "request_id": "DSR-7",
        }

    # Verify: clean, the erased user counted; the digest from before still verifies.
    report = verify(SqlAuditSource(engine), POLICIES, digest=before)
    assert report.ok, report.problems[:3]
    assert report.erased == 1 and report.digest is not None and report.digest.matches
    after = take_digest(SqlAuditSource(engine), NOW)
    assert verify(SqlAuditSource(engine), POLICIES, digest=after).ok
    engine.dispose()

    # The original input again: the user stays erased, every record of theirs suppressed.
    # The same events in another file (a copy of the archive elsewhere: another source).
    again = tmp_path / "again.jsonl"
    again.write_text(
        "".join(
            json.dumps(json.loads(x), sort_keys=True) + "\n"
            for x in stream.read_text().splitlines()
        )
    )
    bad = with_bad_event(stream, user, tmp_path / "bad2.jsonl")
    bad.write_text(json.dumps(json.loads(bad.read_text()), sort_keys=True) + "\n")
    summary = replay(db_url, again, bad)
    assert summary.suppressed == n + 1 and summary.dead_lettered == 0
    assert rows(db_url, "SELECT count(*) FROM events WHERE user_id = :u", u=user)[0][0] == n + 1
    assert rows(db_url, "SELECT count(*) FROM dead_letters WHERE user_id = :u", u=user)[0][0] == 0
    assert verify(SqlAuditSource(open_engine(db_url)), POLICIES).ok


def test_records_after_the_erasure_in_the_same_batch_are_suppressed(
    db_url: str, stream: Path, tmp_path: Path
) -> None:
    """A live consumer: the user's events keep arriving around the erasure, in one batch."""
    user = busy_user(stream)
    lines = [json.loads(x) for x in stream.read_text().splitlines()]
    mine = [i for i, x in enumerate(lines) if x["user_id"] == user]
    cut = mine[len(mine) // 2]
    at = lines[cut]["recorded_at"]
    erase = json.loads(erasure_file(tmp_path / "e.jsonl", user, T0).read_text())
    erase["recorded_at"] = at
    mixed = tmp_path / "mixed.jsonl"
    out = [*lines[: cut + 1], erase, *lines[cut + 1 :]]
    mixed.write_text("".join(json.dumps(x) + "\n" for x in out))
    summary = replay(db_url, mixed)
    assert summary.suppressed == len(mine) - mine.index(cut) - 1
    assert summary.erased == 1
    n = rows(db_url, "SELECT events FROM users WHERE user_id = :u", u=user)[0][0]
    assert n == mine.index(cut) + 2
    assert verify(SqlAuditSource(open_engine(db_url)), POLICIES).ok


def test_a_replay_of_the_log_with_the_erasure_equals_the_live_store(
    db_url: str, stream: Path, tmp_path: Path, sqlite_url: str
) -> None:
    user = busy_user(stream)
    erase = erasure_file(tmp_path / "erase.jsonl", user, T0 + timedelta(days=40))
    replay(db_url, stream)
    replay(db_url, erase)  # live: the erasure arrives later, in a batch of its own
    log = tmp_path / "log.jsonl"
    log.write_text(stream.read_text() + erase.read_text())
    other = sqlite_url if db_url.startswith("postgresql") else f"sqlite:///{tmp_path}/b.db"
    replay(other, log)
    assert chain_heads(db_url) == chain_heads(other)
    roots = [take_digest(SqlAuditSource(open_engine(u)), NOW).root for u in (db_url, other)]
    assert roots[0] == roots[1]


def test_tampering_with_what_an_erasure_kept_is_caught(
    db_url: str, stream: Path, tmp_path: Path
) -> None:
    user = busy_user(stream)
    erasure = erasure_file(tmp_path / "erase.jsonl", user, T0 + timedelta(days=40))
    replay(db_url, stream, erasure, retain=True)
    engine = open_engine(db_url)
    retained = rows(
        db_url,
        "SELECT facts, evidence FROM assignment_history WHERE user_id = :u",
        u=user,
    )
    facts = [json.loads(f) if isinstance(f, str) else f for f, _ in retained]
    assert facts and all(f == {} for f in facts)
    assert verify(SqlAuditSource(engine), POLICIES).ok
    # `history --retained` shows the skeleton, and nothing else of the user.
    kept = Cli(db_url).json("history", user, "--retained", "--all")
    assert len(kept["retained"]) == len(retained) and kept["user_id"] == user
    believed = Cli(db_url).json("history", user, "--retained")["retained"]
    assert believed and all(r["superseded_at"] is None for r in believed)
    assert all(
        set(r) == {"valid_from", "valid_to", "assignment", "policy", "rule", "recorded_at",
                   "superseded_at"} and r["assignment"] for r in kept["retained"]
    )
    text = Cli(db_url).run("history", user, "--retained").stdout
    assert "erased at" in text and "retained history" in text
    # A user who was not erased: --retained changes nothing.
    [(other,)] = rows(db_url, "SELECT min(user_id) FROM users WHERE user_id <> :u", u=user)
    assert Cli(db_url).json("history", other, "--retained") == Cli(db_url).json("history", other)
    assert Cli(db_url).run("history", "u-nobody", "--retained", expect=1).stderr.startswith(
        "ledger: error: unknown user"
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE events SET link = :l WHERE user_id = :u AND seq = 1"),
            {"l": bytes(32), "u": user},
        )
    kinds = {p.kind for p in verify(SqlAuditSource(engine), POLICIES).problems}
    assert kinds == {"erasure_edited"}
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE assignment_history SET valid_to = valid_from WHERE id = "
                "(SELECT min(id) FROM assignment_history WHERE user_id = :u)"
            ),
            {"u": user},
        )
    kinds = {p.kind for p in verify(SqlAuditSource(engine), POLICIES).problems}
    assert "retained_edited" in kinds
    engine.dispose()


def test_nothing_of_an_erased_user_is_left_in_the_sqlite_files_or_the_exports(
    sqlite_url: str, stream: Path, tmp_path: Path
) -> None:
    user = busy_user(stream)
    replay(sqlite_url, stream, with_bad_event(stream, user, tmp_path / "bad.jsonl"))
    secrets = personal(stream, user)
    hashes = phone_hashes(sqlite_url, user)
    assert hashes and secrets["event_ids"]
    # Birth dates other users share are no evidence either way.
    others = {
        json.loads(x).get("birth_date")
        for x in stream.read_text().splitlines()
        if json.loads(x)["user_id"] != user
    }
    births = secrets["birth_dates"] - others
    replay(sqlite_url, erasure_file(tmp_path / "erase.jsonl", user, T0 + timedelta(days=40)))

    db = Path(sa.make_url(sqlite_url).database or "")
    files = [p for p in (db, Path(f"{db}-wal")) if p.exists()]
    blob = b"".join(p.read_bytes() for p in files)
    for event_id in secrets["event_ids"] | {"5e0c7f00-0000-4000-8000-00000000d001"}:
        assert event_id.encode() not in blob
        assert event_id_bytes(event_id) not in blob
    for h in hashes:
        assert h.encode() not in blob
    for b in births:
        assert b.encode() not in blob

    engine = open_engine(sqlite_url)
    out = io.StringIO()
    export_decisions(SqlAuditSource(engine), out)
    exported = out.getvalue()
    for event_id in secrets["event_ids"]:
        assert event_id not in exported
    engine.dispose()


def test_ledger_retain_assignments_decides_what_ledger_erase_keeps(
    db_url: str, stream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variable, read once into the settings, reaches the store `ledger erase` writes
    with: with it the skeleton is kept, without it nothing is."""
    cli = Cli(db_url)
    cli.run("replay", str(stream))
    first, second = sorted({json.loads(x)["user_id"] for x in stream.read_text().splitlines()})[:2]
    monkeypatch.setenv("LEDGER_RETAIN_ASSIGNMENTS", "1")
    cli.run("erase", first, "--request-id", "KEEP-1", "--yes")
    kept = cli.json("history", first, "--retained", "--all")["retained"]
    assert kept and all(r["assignment"] and r["rule"] for r in kept)
    monkeypatch.setenv("LEDGER_RETAIN_ASSIGNMENTS", "0")
    cli.run("erase", second, "--request-id", "DROP-1", "--yes")
    assert cli.json("history", second, "--retained", "--all")["retained"] == []
    monkeypatch.setenv("LEDGER_RETAIN_ASSIGNMENTS", "yes")
    refused = cli.run("history", first, "--retained", expect=2)
    assert refused.stderr.startswith("ledger: error: LEDGER_RETAIN_ASSIGNMENTS=")
