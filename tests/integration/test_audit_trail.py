"""The audit trail (docs/audit.md) end to end, on SQLite and the real PostgreSQL: a replayed store
verifies; every kind of tampering (events, history rows, policies) is named with its user
and kind; digests catch changes to the past even when the chains were rewritten to match;
the decision log holds every history row once and no phone number."""

from __future__ import annotations

import io
import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ledger.app.audit.decisions import export_decisions
from ledger.app.audit.digest import take_digest
from ledger.app.audit.signing import sign
from ledger.app.audit.verify import Finding, VerifyReport, verify
from ledger.app.ingest.projector import Projector, apply_deliveries
from ledger.app.ingest.replay import replay_files
from ledger.cli import audit as audit_commands
from ledger.cli import ingest
from ledger.cli.common import command_group
from ledger.codecs.policy_files import load_policies
from ledger.domain.audit.canonical import EVENT_CHAIN_FIELDS, canonical_event_v2
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.domain.audit.stable_ids import decision_id
from ledger.domain.time import parse_instant
from ledger.generate import generate_events, write_events
from ledger.resources import policies_dir
from ledger.store.audit_snapshot import SqlAuditSource
from ledger.store.database import open_engine
from ledger.store.rows import event_id_text
from ledger.store.schema import assignment_history, event_origins, events, metadata, users
from ledger.store.sql import SqlStore
from ledger.testing import batch_splits, event_streams

POLICIES = load_policies()
T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, tzinfo=UTC)

# The commands as ledger/cli/main.py registers them.
app = command_group("ledger, as far as the audit trail needs it")
app.command()(ingest.replay)
app.command()(audit_commands.verify)
app.command()(audit_commands.digest)
app.add_typer(audit_commands.decisions_app, name="decisions")


def ledger(db: str, *args: str, expect: int = 0, env: dict[str, str] | None = None) -> Any:
    argv = [*args, "--db", db]
    result = CliRunner().invoke(app, argv, env=env, catch_exceptions=False)
    assert result.exit_code == expect, (
        f"ledger {' '.join(argv)} exited {result.exit_code}, expected {expect}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def stream_file(path: Path, users: int = 40, seed: int = 5, first: int = 0) -> Path:
    """A generated stream whose events carry their own record times (one second apart),
    so two replays of it build the same store, and late deliveries supersede rows."""
    write_events(path, generate_events(users, seed))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for i, e in enumerate(lines):
        e["recorded_at"] = (T0 + timedelta(seconds=first + i)).isoformat()
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    return path


@dataclass
class Store:
    url: str
    engine: sa.Engine
    events_file: Path

    def verify(self, **kw: Any) -> VerifyReport:
        return verify(SqlAuditSource(self.engine), kw.pop("policies", POLICIES), **kw)

    def one(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).one()

    def run(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    path = stream_file(tmp_path / "events.jsonl")
    ledger(db_url, "replay", str(path))
    engine = sa.create_engine(db_url)
    yield Store(db_url, engine, path)
    engine.dispose()


def problems_of(report: VerifyReport, kind: str) -> list[Finding]:
    return [p for p in report.problems if p.kind == kind]


def assert_flagged(report: VerifyReport, user: str | None, kind: str) -> Finding:
    assert not report.ok
    found = [p for p in problems_of(report, kind) if p.user == user]
    assert found, f"no {kind} problem for {user}: {[str(p) for p in report.problems]}"
    return found[0]


# --- a clean store ---------------------------------------------------------------------


def test_a_replayed_store_verifies(store: Store) -> None:
    advanced: list[int] = []
    report = store.verify(chunk_users=7, progress=advanced.append)
    assert report.ok, [str(p) for p in report.problems]
    assert sum(advanced) == report.events and len(advanced) > 1
    counts = store.one(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM events), "
        "(SELECT count(*) FROM assignment_history)"
    )
    assert (report.users, report.events, report.history_rows) == tuple(counts)
    assert report.history_rows > report.users  # superseded rows are re-derived too
    result = json.loads(ledger(store.url, "verify", "--json").stdout)
    assert result["ok"] is True and result["problems"] == []
    one = json.loads(ledger(store.url, "verify", "--user", "u-000007", "--json").stdout)
    assert one["users"] == 1 and one["ok"] is True
    nobody = ledger(store.url, "verify", "--user", "nobody", expect=1)
    assert nobody.stderr == "ledger: error: no user 'nobody' in the store\n"


def test_chain_heads_do_not_depend_on_batches_or_backend(store: Store, tmp_path: Path) -> None:
    # The same stream applied one event per transaction, on SQLite, against the fixture's
    # one batch on its backend (SQLite or PostgreSQL): the same chains, the same root.
    other = f"sqlite:///{tmp_path / 'one-by-one.db'}"
    ledger(other, "replay", "--batch-size", "1", str(store.events_file))
    heads = []
    for url in (store.url, other):
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            q = sa.select(users.c.user_id, users.c.chain_head, users.c.events)
            heads.append(sorted(conn.execute(q).all()))
        heads.append(take_digest(SqlAuditSource(engine), NOW).root)
        engine.dispose()
    assert heads[0] == heads[2] and heads[1] == heads[3]


def test_snapshots_hold_while_writers_go_on(db_url: str, tmp_path: Path) -> None:
    # Two writers on disjoint users commit small batches while verify and digest run: each
    # verify sees whole batches only, and each digest covers every event up to its seq
    # (on PostgreSQL two writers draw application numbers concurrently, so a digest that
    # did not wait for them could claim an event still uncommitted).
    files = []
    for prefix, seed in (("a-", 8), ("b-", 9)):
        path = stream_file(tmp_path / f"{prefix}events.jsonl", users=30, seed=seed)
        path.write_text(path.read_text().replace('"user_id": "u-', f'"user_id": "{prefix}'))
        files.append(path)
    writers_engine = open_engine(db_url)
    failures: list[BaseException] = []

    def write(path: Path) -> None:
        try:
            projector = Projector(SqlStore(writers_engine), POLICIES, b"k", cache_users=0)
            replay_files(projector, [path], batch_size=3)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(path,)) for path in files]
    for t in threads:
        t.start()
    reader = sa.create_engine(db_url)
    digests = []
    while any(t.is_alive() for t in threads) or not digests:
        report = verify(SqlAuditSource(reader), POLICIES)
        assert report.ok, [str(p) for p in report.problems]
        digests.append(take_digest(SqlAuditSource(reader), NOW))
    for t in threads:
        t.join()
    assert failures == []
    assert len(digests) > 1
    for digest in digests:
        report = verify(SqlAuditSource(reader), POLICIES, digest=digest)
        assert report.ok, (digest.seq, [str(p) for p in report.problems])
    reader.dispose()
    writers_engine.dispose()


# --- tampering with events ----------------------------------------------------------------


def test_an_edited_country_is_caught(store: Store) -> None:
    row = store.one(
        "SELECT event_id, user_id, seq, country FROM events WHERE type = 'Relocated' "
        "ORDER BY app_seq LIMIT 1"
    )
    store.run(
        "UPDATE events SET country = :c WHERE event_id = :e",
        c="FR" if row.country != "FR" else "DE",
        e=row.event_id,
    )
    problem = assert_flagged(store.verify(), row.user_id, "event_edited")
    # The raw row holds the id's 16 bytes (0007): the report names its text.
    assert problem.seq == row.seq and event_id_text(row.event_id) in problem.detail
    assert "the event was edited" in problem.detail


def test_a_deleted_event_is_caught(store: Store) -> None:
    row = store.one("SELECT user_id, events FROM users WHERE events >= 3 ORDER BY user_id LIMIT 1")
    store.run("DELETE FROM events WHERE user_id = :u AND seq = 2", u=row.user_id)
    problem = assert_flagged(store.verify(), row.user_id, "event_missing")
    assert problem.seq == 2 and "seq 2 missing" in problem.detail


def test_an_inserted_event_is_caught(store: Store) -> None:
    # Inserted with a correct link after the user's last one: only the users row, which
    # the writer keeps in the same transaction, gives it away.
    user = store.one("SELECT user_id, events, chain_head FROM users ORDER BY user_id LIMIT 1")
    top = store.one("SELECT max(app_seq) AS m FROM events").m
    fields = {name: None for name in EVENT_CHAIN_FIELDS}
    fields.update(
        event_id=str(uuid.uuid4()),
        user_id=user.user_id,
        occurred_at=datetime(2026, 6, 1, tzinfo=UTC),
        recorded_at=NOW,
        type="Relocated",
        country="JP",
        evidence="self_declared",
        seq=user.events + 1,
    )
    link = next_link(bytes(user.chain_head), canonical_event_v2(fields))
    with store.engine.begin() as conn:
        forged = conn.execute(
            event_origins.insert().values(source="forged", prefix="forged")
        ).inserted_primary_key
        assert forged is not None
        conn.execute(
            events.insert().values(**fields, origin_id=forged[0], app_seq=top + 1, link=link)
        )
    problem = assert_flagged(store.verify(), user.user_id, "event_inserted")
    assert problem.seq == user.events + 1


# --- tampering with the history --------------------------------------------------------------


def test_an_edited_assignment_is_caught(store: Store) -> None:
    row = store.one(
        "SELECT h.id, h.user_id, d.assignment, d.id AS decision FROM assignment_history AS h "
        "JOIN decisions AS d ON d.id = h.decision_id "
        "WHERE d.assignment <> 'undetermined' ORDER BY h.id LIMIT 1"
    )
    # The row's decision with another assignment (decisions are interned since 0007).
    store.run(
        "INSERT INTO decisions (assignment, policy, rule, reason, policy_hash) "
        "SELECT 'undetermined', policy, rule, reason, policy_hash FROM decisions WHERE id = :d",
        d=row.decision,
    )
    store.run(
        "UPDATE assignment_history SET decision_id = (SELECT max(id) FROM decisions) WHERE id = :i",
        i=row.id,
    )
    problem = assert_flagged(store.verify(), row.user_id, "history_differs")
    assert (problem.row, problem.field) == (row.id, "assignment")
    assert (problem.stored, problem.derived) == ("undetermined", row.assignment)


def test_a_deleted_history_row_is_caught(store: Store) -> None:
    row = store.one("SELECT id, user_id FROM assignment_history ORDER BY id DESC LIMIT 1")
    store.run("DELETE FROM assignment_history WHERE id = :i", i=row.id)
    report = store.verify()
    assert_flagged(report, row.user_id, "history_missing")
    assert {p.user for p in report.problems} == {row.user_id}


def test_a_superseded_row_made_believed_again_is_caught(store: Store) -> None:
    row = store.one(
        "SELECT id, user_id FROM assignment_history WHERE superseded_at IS NOT NULL "
        "ORDER BY id LIMIT 1"
    )
    store.run("UPDATE assignment_history SET superseded_at = NULL WHERE id = :i", i=row.id)
    problem = assert_flagged(store.verify(), row.user_id, "history_differs")
    assert (problem.row, problem.field, problem.stored) == (row.id, "superseded_at", None)


# --- policies ----------------------------------------------------------------------------------


def test_a_policy_edited_under_its_old_version_is_caught(store: Store, tmp_path: Path) -> None:
    edited = tmp_path / "policies"
    shutil.copytree(policies_dir(), edited)
    path = edited / "tos-2026-03-residency.toml"
    text = path.read_text()
    assert 'reason = "' in text
    path.write_text(text.replace('reason = "', 'reason = "(softened) ', 1))
    report = store.verify(policies=load_policies(edited))
    problem = assert_flagged(report, None, "policy_changed")
    assert "tos-2026-03-residency" in problem.detail
    # The command line says so too, with the policies directory given.
    result = ledger(store.url, "verify", "--policies", str(edited), "--json", expect=1)
    kinds = {p["kind"] for p in json.loads(result.stdout)["problems"]}
    assert "policy_changed" in kinds
    assert result.stderr.startswith("ledger: error: verification failed:")
    assert len(result.stderr.strip().splitlines()) == 1


# --- digests -----------------------------------------------------------------------------------


def relink(store: Store, user_id: str) -> None:
    """What a careful attacker does after editing a user's event: recompute every link and
    the users row's head, so the chain is whole again."""
    with store.engine.begin() as conn:
        rows = conn.execute(
            sa.select(events).where(events.c.user_id == user_id).order_by(events.c.seq)
        ).all()
        head = GENESIS
        for row in rows:
            head = next_link(
                head, canonical_event_v2({n: row._mapping[n] for n in EVENT_CHAIN_FIELDS})
            )
            conn.execute(events.update().where(events.c.event_id == row.event_id).values(link=head))
        conn.execute(users.update().where(users.c.user_id == user_id).values(chain_head=head))


def test_a_digest_catches_a_rewritten_past(db_url: str, tmp_path: Path) -> None:
    first = stream_file(tmp_path / "first.jsonl", users=20, seed=3)
    ledger(db_url, "replay", str(first))
    engine = sa.create_engine(db_url)
    store = Store(db_url, engine, first)
    before = take_digest(SqlAuditSource(engine), NOW)
    assert before.events == store.one("SELECT count(*) AS n FROM events").n
    # Later events (other users, later record times) arrive, then an early event is edited
    # where no history shows it and the user's chain is rewritten to match.
    later = stream_file(tmp_path / "later.jsonl", users=10, seed=4, first=10_000)
    text = later.read_text().replace('"user_id": "u-', '"user_id": "v-')
    later.write_text(text)
    ledger(db_url, "replay", str(later))
    row = store.one(
        "SELECT event_id, user_id FROM events WHERE phone_hash IS NOT NULL AND app_seq <= :s "
        "ORDER BY app_seq LIMIT 1",
        s=before.seq,
    )
    store.run("UPDATE events SET phone_hash = :h WHERE event_id = :e", h="f" * 64, e=row.event_id)
    relink(store, row.user_id)
    report = store.verify(digest=before)
    assert [p.kind for p in report.problems] == ["digest_root"]  # nothing else shows it
    assert report.digest is not None and not report.digest.matches
    assert "events applied before the digest changed" in report.problems[0].detail
    # A digest taken after the edit vouches for the store as it is now, and still passes
    # when more events arrive after it.
    after = take_digest(SqlAuditSource(engine), NOW)
    more = stream_file(tmp_path / "more.jsonl", users=5, seed=6, first=20_000)
    more.write_text(more.read_text().replace('"user_id": "u-', '"user_id": "w-'))
    ledger(db_url, "replay", str(more))
    report = store.verify(digest=after)
    assert report.ok, [str(p) for p in report.problems]
    assert report.digest is not None and report.digest.computed_events == after.events
    # An event applied after a digest is not the digest's to vouch for; the chain still
    # shows an edit of it.
    late = store.one(
        "SELECT event_id, user_id, seq FROM events WHERE phone_hash IS NOT NULL "
        "ORDER BY app_seq DESC LIMIT 1"
    )
    store.run("UPDATE events SET phone_hash = :h WHERE event_id = :e", h="e" * 64, e=late.event_id)
    report = store.verify(digest=after)
    assert report.digest is not None and report.digest.matches
    assert [(p.kind, p.user, p.seq) for p in report.problems] == [
        ("event_edited", late.user_id, late.seq)
    ]
    engine.dispose()


def test_digest_signatures_on_the_command_line(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "digest.json"
    key = {"LEDGER_AUDIT_KEY": "auditor-secret-1"}
    ledger(store.url, "digest", "-o", str(path), env=key)
    document = json.loads(path.read_text())
    assert document["signature"]["alg"] == "HMAC-SHA256"
    assert document["events"] == store.one("SELECT count(*) AS n FROM events").n
    ledger(store.url, "verify", "--digest", str(path), env=key)
    wrong = ledger(
        store.url, "verify", "--digest", str(path), env={"LEDGER_AUDIT_KEY": "guess"}, expect=1
    )
    assert "HMAC-SHA256 signature does not match" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    # A digest edited after signing: the same error, whatever was changed.
    document["root"] = "0" * 64
    path.write_text(json.dumps(document))
    changed = ledger(store.url, "verify", "--digest", str(path), env=key, expect=1)
    assert "does not match" in changed.stderr
    # Missing, not JSON, malformed: one line each.
    missing = ledger(store.url, "verify", "--digest", str(tmp_path / "nope.json"), expect=1)
    assert "cannot read digest" in missing.stderr
    path.write_text("{not json")
    assert "not JSON" in ledger(store.url, "verify", "--digest", str(path), expect=1).stderr
    path.write_text(json.dumps({"format": "jurisdiction-ledger-digest/1"}))
    assert "is missing" in ledger(store.url, "verify", "--digest", str(path), expect=1).stderr


def test_an_ed25519_signed_digest(store: Store, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = tmp_path / "audit.key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / "audit.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path = tmp_path / "digest.json"
    ledger(store.url, "digest", "--private-key", str(private), "-o", str(path))
    ledger(store.url, "verify", "--digest", str(path), "--public-key", str(public))
    other = tmp_path / "other.pub"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    result = ledger(
        store.url, "verify", "--digest", str(path), "--public-key", str(other), expect=1
    )
    assert "Ed25519 signature does not match" in result.stderr


# --- the decision log ----------------------------------------------------------------------------


def test_the_decision_log_holds_every_row_once_and_no_phone_number(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "decisions.jsonl"
    ledger(store.url, "decisions", "export", "-o", str(out))
    text = out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600  # facts hold birth dates
    lines = [json.loads(line) for line in text.splitlines()]
    with store.engine.connect() as conn:
        h = assignment_history.c
        rows = conn.execute(sa.select(h.user_id, h.valid_from, h.recorded_at)).all()
    expected = {decision_id(r.user_id, r.valid_from, r.recorded_at) for r in rows}
    ids = [line["decision_id"] for line in lines]
    assert len(ids) == len(set(ids)) == len(rows)
    assert set(ids) == expected
    times = [parse_instant(line["recorded_at"]) for line in lines]
    assert times == sorted(times)
    seqs = {e["seq"] for line in lines for e in line["evidence"]}
    assert None not in seqs and all(e["user_seq"] >= 1 for line in lines for e in line["evidence"])
    ledger(store.url, "decisions", "export", "-o", str(tmp_path / "log.txt"), expect=2)
    # Slicing by record time gives the same rows, each once.
    middle = lines[len(lines) // 2]["recorded_at"]
    parts = [
        ledger(store.url, "decisions", "export", "-o", "-", *args).stdout
        for args in (("--until", middle), ("--since", middle))
    ]
    assert sorted("".join(parts).splitlines()) == sorted(text.splitlines())
    # Every phone number the stream carried, in every form it could be written in.
    phones = {
        json.loads(line)["phone"]
        for line in store.events_file.read_text().splitlines()
        if "phone" in json.loads(line)
    }
    assert len(phones) > 20
    forms = set()
    for phone in phones:
        forms.add(phone)
        forms.add(phone.lstrip("+"))
        number = phonenumbers.parse(phone)
        forms.add(str(number.national_number))
        for fmt in (phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.E164):
            forms.add(phonenumbers.format_number(number, fmt))
    leaked = sorted(f for f in forms if len(f.replace(" ", "")) >= 6 and f in text)
    assert leaked == []


# --- property: any stream, any batching -----------------------------------------------------------


def fresh_sqlite(path: Path) -> sa.Engine:
    engine = open_engine(f"sqlite:///{path}", migrate=False)
    metadata.create_all(engine)
    return engine


def apply(engine: sa.Engine, batches: list[list[Any]]) -> None:
    projector = Projector(SqlStore(engine), POLICIES, b"audit-property-key", cache_users=0)
    for result in apply_deliveries(projector, batches, T0, source="prop"):
        assert result.dead_letters == []


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_any_stream_in_any_batches_verifies_with_the_same_root(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    stream = data.draw(event_streams(max_users=3))
    deliveries = [(e, T0 + timedelta(milliseconds=i)) for i, e in enumerate(stream)]
    batches = data.draw(batch_splits(deliveries))
    where = tmp_path_factory.mktemp("prop")
    roots = []
    for name, split in (("one", [deliveries]), ("split", batches)):
        engine = fresh_sqlite(where / f"{name}.db")
        apply(engine, split)
        report = verify(SqlAuditSource(engine), POLICIES)
        assert report.ok, [str(p) for p in report.problems]
        digest = take_digest(SqlAuditSource(engine), NOW)
        assert verify(SqlAuditSource(engine), POLICIES, digest=digest).ok
        roots.append(digest.root)
        engine.dispose()
    assert roots[0] == roots[1]


def test_the_library_signs_and_exports_what_the_commands_write(store: Store) -> None:
    digest = take_digest(SqlAuditSource(store.engine), NOW)
    document = sign(digest, hmac_key=b"k")
    assert {k: v for k, v in document.items() if k != "signature"} == digest.to_json()
    buffer = io.StringIO()
    written = export_decisions(SqlAuditSource(store.engine), buffer)
    assert written == store.one("SELECT count(*) AS n FROM assignment_history").n
    assert len(buffer.getvalue().splitlines()) == written
