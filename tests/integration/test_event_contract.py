"""The event contract against the real stores and the real broker (docs/event-contract.md):

- a store the version-1 code wrote (tests/data/schema-v1/store-v1.sql, at revision 0003)
  upgraded to the newest revision verifies as it is, and keeps verifying as events of
  version 2 arrive;
- a topic holding the version-1 messages mixed with version-2 ones builds the same
  histories and hash chains as a topic holding the same events all written at version 2;
- a ledger of version 1 (the version-1 codec alone) dead-letters what version 2 wrote,
  saying the writer schema is newer, and after the upgrade `ledger dead-letters retry`
  applies it: from an archive, and from a topic.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from ledger.app.ingest.projector import Projector
from ledger.app.ingest.replay import replay_files, replay_topic
from ledger.codecs.avro import AvroCodec
from ledger.codecs.policy_files import load_policies
from ledger.config import settings_from_env
from ledger.domain.events import Event, IdentityVerified, SignedUp
from ledger.sources.kafka import make_consumer
from ledger.store.database import HEAD_REVISION, _alembic_config, open_engine
from ledger.store.schema import (
    EventId,
    assignment_history,
    dead_letters,
    events,
    policy_pins,
    users,
)
from ledger.store.schema import source_positions as positions
from ledger.store.sql import SqlStore
from tests.support import Cli, chain_heads, history_rows

DATA = Path(__file__).parents[1] / "data" / "schema-v1"
V2 = AvroCodec(version=2)  # the writer of version 2 (the current one is newer)
V1 = AvroCodec(version=1)


def v1_archive() -> list[tuple[Event, datetime | None]]:
    with (DATA / "events-v1.avro").open("rb") as fo:
        return [item for _, item in V2.read_container(fo)]  # type: ignore[misc]


def v1_messages() -> list[tuple[str, bytes]]:
    lines = (DATA / "messages-v1.jsonl").read_text().splitlines()
    return [(m["key"], bytes.fromhex(m["value"])) for m in map(json.loads, lines)]


def version_2_events() -> list[Event]:
    """New facts for users of the version-1 stream, and a new user with a locale."""

    def event(n: int, user: str, payload: SignedUp | IdentityVerified) -> Event:
        at = datetime(2026, 10, 20, tzinfo=UTC)
        return Event(f"5e0c0000-0000-4000-8000-{n:012d}", user, at, payload)

    return [
        event(1, "u-000001", IdentityVerified("CN", "resident_id")),
        event(2, "u-000007", IdentityVerified("US", "passport")),
        event(3, "u-000900", SignedUp("+16045550123", "rednote-app", None, "en-CA")),
        event(4, "u-000900", IdentityVerified("CA", "passport")),
    ]


# --- a store version 1 wrote -------------------------------------------------------------

_TABLES = (events, users, assignment_history, policy_pins, positions, dead_letters)


def _type_0003(table: sa.Table, name: str) -> Any:
    """The type of a column of revision 0003: 0007 moved some columns into other tables
    (text, all of them) and stores event ids as bytes (they were text)."""
    if name not in table.c or isinstance(table.c[name].type, EventId):
        return sa.Text()
    return table.c[name].type


def _store_v1(url: str, tmp_path: Path) -> None:
    """The version-1 store at `url`: the SQL text itself on SQLite; on PostgreSQL its rows,
    copied into a database the migrations brought to revision 0003."""
    sqlite_path = tmp_path / "store-v1.db"
    with sqlite3.connect(sqlite_path) as conn:
        conn.executescript((DATA / "store-v1.sql").read_text())
    if url.startswith("sqlite"):
        sqlite_path.rename(url.removeprefix("sqlite:///"))
        return
    from alembic import command

    source = sa.create_engine(f"sqlite:///{sqlite_path}")
    target = open_engine(url, migrate=False)
    cfg = _alembic_config()
    with target.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    with source.connect() as read, target.begin() as write:
        for table in _TABLES:
            # The columns of revision 0003, read and written through the column types.
            names = [c["name"] for c in sa.inspect(source).get_columns(table.name)]
            then = sa.table(table.name, *(sa.column(n, _type_0003(table, n)) for n in names))
            rows = [dict(r._mapping) for r in read.execute(sa.select(then))]
            if rows:
                write.execute(sa.insert(then), rows)
        write.execute(sa.text("SELECT setval('events_app_seq', (SELECT max(app_seq) FROM events))"))
        for table in ("assignment_history", "dead_letters"):
            write.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) "
                    f"FROM {table} HAVING count(*) > 0"
                )
            )
    source.dispose()
    target.dispose()


def test_a_store_version_1_wrote_verifies_after_the_upgrade(db_url: str, tmp_path: Path) -> None:
    _store_v1(db_url, tmp_path)
    cli = Cli(db_url)
    before = history_rows(db_url)
    heads = chain_heads(db_url)
    assert len(heads) == 20
    assert cli.json("db", "upgrade") == {"from": "0003", "to": HEAD_REVISION}
    # Chain encoding 2 (migration 0006) recomputed every link and head from the stored
    # rows: each chain keeps its length and gets another head, which verify checks.
    upgraded = chain_heads(db_url)
    assert history_rows(db_url) == before
    assert {u: n for u, (_, n) in upgraded.items()} == {u: n for u, (_, n) in heads.items()}
    assert all(upgraded[u][0] != h for u, (h, _) in heads.items())
    heads = upgraded
    report = cli.json("verify")
    assert report["ok"] is True, report
    # Events of version 2 join the same chains, and the store still verifies.
    newer = tmp_path / "newer.avro"
    with newer.open("wb") as fo:
        V2.write_container(fo, [(e, None) for e in version_2_events()])
    assert cli.json("replay", str(newer))["applied"] == 4
    assert cli.json("verify")["ok"] is True
    after = chain_heads(db_url)
    assert after["u-000001"][1] == heads["u-000001"][1] + 1
    assert after["u-000001"][0] != heads["u-000001"][0]
    assert {u: h for u, h in after.items() if u not in ("u-000001", "u-000007", "u-000900")} == {
        u: h for u, h in heads.items() if u not in ("u-000001", "u-000007")
    }


# --- a ledger of version 1, then upgraded --------------------------------------------


def _version_1_ledger(url: str) -> Projector:
    """The projector of a ledger still at version 1 would differ only in its codec (the
    fold's code is today's), which the replays below are given."""
    return Projector(SqlStore(open_engine(url)), load_policies(), settings_from_env().phone_key)


def _newer(cli: Cli, reason: str) -> list[dict[str, object]]:
    letters = cli.json("dead-letters", "list")["dead_letters"]
    assert letters and all(reason in str(d["reason"]) for d in letters), letters
    return letters


def test_a_version_1_ledger_dead_letters_a_version_2_archive_and_retry_applies_it(
    db_url: str, tmp_path: Path
) -> None:
    archive = tmp_path / "newer.avro"
    with archive.open("wb") as fo:
        V2.write_container(fo, [*v1_archive(), *((e, None) for e in version_2_events())])
    summary = replay_files(_version_1_ledger(db_url), [archive], batch_size=50, codec=V1)
    # Version 1 reads the SignedUp of version 2 without its locale; the type it lacks is
    # dead-lettered, each record alone.
    assert (summary.applied, summary.duplicates, summary.dead_lettered) == (97, 1, 3)
    cli = Cli(db_url)
    letters = _newer(cli, "which event schema version 1 does not have: written with a newer")
    assert len(letters) == 3
    retried = cli.json("dead-letters", "retry")
    assert (retried["applied"], retried["dead_lettered_again"]) == (3, 0)
    assert cli.json("verify")["ok"] is True
    assert cli.json("dead-letters", "list")["dead_letters"] == []
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        kinds = conn.execute(
            sa.select(events.c.user_id, events.c.document_country, events.c.document_kind)
            .where(events.c.type == "IdentityVerified")
            .order_by(events.c.user_id)
        ).all()
    engine.dispose()
    assert [tuple(k) for k in kinds] == [
        ("u-000001", "CN", "resident_id"),
        ("u-000007", "US", "passport"),
        ("u-000900", "CA", "passport"),
    ]


def _send(bootstrap: str, topic: str, messages: list[tuple[str, bytes]], t0: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i, (key, value) in enumerate(messages):
        producer.send(topic, key=key.encode(), value=value, timestamp_ms=t0 + i)
    producer.flush()
    producer.close()


def _replay(url: str, bootstrap: str, topic: str, codec: AvroCodec = V2) -> object:
    settings = settings_from_env({"LEDGER_BOOTSTRAP": bootstrap})
    consumer = make_consumer(settings.kafka)
    try:
        return replay_topic(
            _version_1_ledger(url), consumer, topic, None, batch_size=40, codec=codec
        )
    finally:
        consumer.close()


@pytest.fixture
def second_topic(kafka_broker, kafka_topic: str) -> str:
    from ledger.sources import kafka_topics as topics
    from tests.helpers.kafka import TEST_PARTITIONS

    name = f"{kafka_topic}-all-v2"
    specs = topics.topic_specs(name, partitions=TEST_PARTITIONS)
    topics.ensure_topics(kafka_broker.bootstrap, specs, **settings_from_env().kafka.client)
    return name


def test_a_topic_mixing_versions_builds_the_histories_of_the_same_events_at_version_2(
    kafka_broker, kafka_topic: str, second_topic: str, tmp_path: Path
) -> None:
    released = v1_messages()
    newer = [(e.user_id, V2.encode(e)) for e in version_2_events()]
    # Every other version-1 message as it was written, the rest written again at version 2,
    # and the events only version 2 has; the other topic: all of them at version 2.
    mixed = [
        (key, value if i % 2 == 0 else V2.encode(*V2.decode(value)))
        for i, (key, value) in enumerate(released)
    ]
    assert {m[2:10].hex() for _, m in mixed} == {"fbbf6dbef5b71e3e", "3c13c5d50cd1fa3a"}
    all_v2 = [(key, V2.encode(*V2.decode(value))) for key, value in released]
    t0 = 1_790_000_000_000
    _send(kafka_broker.bootstrap, kafka_topic, [*mixed, *newer], t0)
    _send(kafka_broker.bootstrap, second_topic, [*all_v2, *newer], t0)
    a, b = f"sqlite:///{tmp_path / 'mixed.db'}", f"sqlite:///{tmp_path / 'v2.db'}"
    done = _replay(a, kafka_broker.bootstrap, kafka_topic)
    assert (done.applied, done.duplicates, done.dead_lettered) == (100, 1, 0)  # type: ignore[attr-defined]
    _replay(b, kafka_broker.bootstrap, second_topic)
    assert history_rows(a) == history_rows(b)
    assert chain_heads(a) == chain_heads(b)
    assert len(chain_heads(a)) == 21


def test_a_version_1_ledger_dead_letters_version_2_messages_and_retry_applies_them(
    kafka_broker, kafka_topic: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _send(
        kafka_broker.bootstrap,
        kafka_topic,
        [*v1_messages()[:30], *((e.user_id, V2.encode(e)) for e in version_2_events())],
        1_790_000_000_000,
    )
    done = _replay(url, kafka_broker.bootstrap, kafka_topic, codec=V1)
    # A message names its writer schema by fingerprint only: version 1 cannot read any
    # message of version 2, a SignedUp included.
    assert done.dead_lettered == 4  # type: ignore[attr-defined]
    cli = Cli(url)
    _newer(cli, "newer than this ledger's event schema version 1")
    retried = cli.json("dead-letters", "retry")
    assert retried["applied"] == 4
    history = cli.json("history", "u-000900")["entries"]
    assert [h["assignment"] for h in history] == ["rednote-international"]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        locale = conn.execute(
            sa.select(users.c.signup_locale).where(users.c.user_id == "u-000900")
        ).scalar_one()
    engine.dispose()
    assert locale == "en-CA"  # nothing of version 2 lost on this path
