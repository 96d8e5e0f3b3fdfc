"""The Kafka pipeline against a real Kafka-protocol broker (started by the project's own
launcher) and the real databases: publish, the consumer-group projector, crashes,
scale-out, poison messages, topic replay and export."""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line, event_to_json_line
from ledger.generate import generate_events
from ledger.sinks.dead_letter_topic import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
from ledger.store.schema import dead_letters, events
from tests.helpers import postgres
from tests.helpers.kafka import (
    consume_all,
    count,
    publish,
    stamped_stream,
    start_consumer,
    stop,
    wait_for,
)
from tests.support import Cli, chain_heads, history_rows

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

@pytest.fixture
def reference(tmp_path: Path) -> Iterator[tuple[Path, int, str]]:
    """A stamped stream and the SQLite file replay every projection is compared with."""
    path = tmp_path / "stream.jsonl"
    total = stamped_stream(path, users=400, seed=17)
    ref = f"sqlite:///{tmp_path / 'reference.db'}"
    Cli(ref).run("replay", str(path))
    yield path, total, ref


def test_projector_equals_file_replay(
    db_url: str, kafka_broker, kafka_topic: str, reference, tmp_path: Path
) -> None:
    path, total, ref = reference
    cli = Cli(db_url)
    assert publish(cli, kafka_broker.bootstrap, kafka_topic, path) == total
    log = tmp_path / "consumer.log"
    consume_all(kafka_broker.bootstrap, kafka_topic, db_url, log, total, group="g-equal")
    assert history_rows(db_url) == history_rows(ref)
    # The audit chains depend on the applied events, never on how they arrived.
    assert chain_heads(db_url) == chain_heads(ref)
    cli.run("verify")
    assert count(db_url, dead_letters) == 0
    text = log.read_text()
    assert "lag by partition" in text and "stopped" in text


def test_sigkill_at_random_points_loses_and_repeats_nothing(
    kafka_broker, kafka_topic: str, reference, tmp_path: Path, sqlite_url: str
) -> None:
    path, total, ref = reference
    publish(Cli(sqlite_url), kafka_broker.bootstrap, kafka_topic, path)
    log = tmp_path / "consumer.log"
    rng = random.Random(5)
    kills = []
    for n, share in enumerate(sorted(rng.uniform(0.1, 0.8) for _ in range(3))):
        # A fresh group per restart: positions live in the database, and rejoining the
        # old group would only wait out the killed member's session timeout.
        proc = start_consumer(
            kafka_broker.bootstrap, kafka_topic, sqlite_url, log, group=f"g-crash-{n}", batch=10
        )
        reached = wait_for(sqlite_url, kafka_topic, int(total * share))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        kills.append(reached)
    assert all(k < total for k in kills), f"kills came too late to test anything: {kills}"
    consume_all(kafka_broker.bootstrap, kafka_topic, sqlite_url, log, total, group="g-crash-end")
    assert count(sqlite_url, events) == count(ref, events)
    assert history_rows(sqlite_url) == history_rows(ref)
    assert chain_heads(sqlite_url) == chain_heads(ref)
    Cli(sqlite_url).run("verify")  # exit 0: chains whole, history re-derives


@pytest.mark.postgres
def test_scale_out_survivor_takes_over(
    kafka_broker, kafka_topic: str, reference, tmp_path: Path, pg_url: str
) -> None:
    path, total, ref = reference
    lines = path.read_text().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2 :]))
    cli = Cli(pg_url)
    half = publish(cli, kafka_broker.bootstrap, kafka_topic, first)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a, b = (
        start_consumer(kafka_broker.bootstrap, kafka_topic, pg_url, log, group="g-scale")
        for log in logs
    )
    try:
        wait_for(pg_url, kafka_topic, half)
        deadline = time.monotonic() + 30
        while not all("partitions assigned" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, "both members never got partitions"
            time.sleep(0.2)
        b.send_signal(signal.SIGKILL)  # midway: half the stream is still to come
        b.wait(timeout=10)
        publish(cli, kafka_broker.bootstrap, kafka_topic, second)
        wait_for(pg_url, kafka_topic, total, timeout=90)
    finally:
        stop(a, logs[0])
    assert history_rows(pg_url) == history_rows(ref)
    # The survivor ended up owning all six partitions.
    assert logs[0].read_text().count("partitions assigned") >= 2


def test_poison_messages_go_to_the_dlq_and_the_table(
    kafka_broker, kafka_topic: str, tmp_path: Path, sqlite_url: str
) -> None:
    codec = AvroCodec()
    good = [e for e in generate_events(30, seed=3)]
    unique = {e.event_id: e for e in good}
    sample, _ = event_from_json_line(event_to_json_line(good[0]))
    bad_version = json.loads(event_to_json_line(good[0]))
    bad_version.update(
        type="TermsAccepted",
        tos_version="tos-2099",
        event_id="00000000-0000-4000-8000-0000000000aa",
    )
    bad_version.pop("phone"), bad_version.pop("channel"), bad_version.pop("birth_date", None)
    poison = {
        "undecodable bytes": b"definitely not avro",
        "unknown fingerprint": b"\xc3\x01" + b"\x00" * 8 + codec.encode(sample)[10:],
        "truncated": codec.encode(sample)[:-4],
        "unknown tos version": codec.encode(event_from_json_line(json.dumps(bad_version))[0]),
    }
    reasons = {
        "undecodable bytes": "missing C3 01 header",
        "unknown fingerprint": "unknown writer schema fingerprint",
        "truncated": "truncated or corrupt Avro body",
        "unknown tos version": "unknown terms version 'tos-2099'",
    }
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    where: dict[str, tuple[int, int]] = {}
    bad = iter(poison.items())
    for i, event in enumerate(good):
        producer.send(kafka_topic, key=event.user_id.encode(), value=codec.encode(event))
        if i % 25 == 0:
            name, raw = next(bad, (None, None))
            if name:
                md = producer.send(kafka_topic, key=event.user_id.encode(), value=raw).get(30)
                where[name] = (md.partition, md.offset)
    producer.flush()
    producer.close()
    assert len(where) == len(poison)
    total = len(good) + len(poison)
    log = tmp_path / "consumer.log"
    consume_all(kafka_broker.bootstrap, kafka_topic, sqlite_url, log, total, group="g-dlq")

    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        rows = {r.position: r for r in conn.execute(sa.select(dead_letters))}
        applied = {r.event_id for r in conn.execute(sa.select(events.c.event_id))}
    engine.dispose()
    assert applied == set(unique)  # every good event, exactly once
    for name, (partition, offset) in where.items():
        row = rows[f"{kafka_topic}[{partition}]@{offset}"]
        assert reasons[name] in row.reason and row.raw == poison[name]

    dlq = KafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    dlq.assign([TopicPartition(f"{kafka_topic}.dlq", 0)])
    seen: dict[tuple[int, int], dict[str, str]] = {}
    deadline = time.monotonic() + 20
    while len(seen) < len(poison) and time.monotonic() < deadline:
        for records in dlq.poll(timeout_ms=300).values():
            for r in records:
                headers = {k: v.decode() for k, v in r.headers}
                assert headers[DLQ_TOPIC] == kafka_topic
                seen[(int(headers[DLQ_PARTITION]), int(headers[DLQ_OFFSET]))] = headers
    dlq.close()
    assert set(seen) == set(where.values())
    for name, key in where.items():
        assert reasons[name] in seen[key][DLQ_REASON]


def test_topic_replay_equals_export_replay(kafka_broker, kafka_topic: str, tmp_path: Path) -> None:
    source = tmp_path / "plain.jsonl"
    source.write_text("".join(event_to_json_line(e) + "\n" for e in generate_events(150, 8)))
    topic_db = f"sqlite:///{tmp_path / 'topic.db'}"
    file_db = f"sqlite:///{tmp_path / 'file.db'}"
    cli = Cli(topic_db)
    sent = publish(cli, kafka_broker.bootstrap, kafka_topic, source)
    kafka = ["--from-kafka", "--bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic]
    summary = cli.json("replay", *kafka, "--from-beginning")
    assert summary["applied"] + summary["duplicates"] == sent
    assert {"applied", "duplicates", "dead_lettered", "users"} <= set(summary)
    archive = tmp_path / "topic.avro"
    exported = Cli(file_db).json(
        "export",
        "--bootstrap",
        kafka_broker.bootstrap,
        "--topic",
        kafka_topic,
        "-o",
        str(archive),
        db=False,
    )
    assert exported["written"] == sent
    Cli(file_db).run("replay", str(archive))
    assert history_rows(topic_db) == history_rows(file_db)
    # Continuing from the stored positions finds nothing new; later start times neither.
    again = cli.json("replay", *kafka)
    assert (again["applied"], again["duplicates"]) == (0, 0)
    late = cli.json("replay", *kafka, "--from-time", "2099-01-01T00:00:00Z")
    assert late["applied"] == 0
    picked = Cli(f"sqlite:///{tmp_path / 'part.db'}").json(
        "replay", *kafka, "--from-offset", "0:0,1:999999"
    )
    assert 0 < picked["applied"] + picked["duplicates"] < sent


@pytest.mark.postgres
def test_database_outage_is_retried_without_skipping(
    kafka_broker, kafka_topic: str, reference, tmp_path: Path, pg_url: str, pg_admin: sa.Engine
) -> None:
    path, total, ref = reference
    publish(Cli(pg_url), kafka_broker.bootstrap, kafka_topic, path)
    name = sa.engine.make_url(pg_url).database
    log = tmp_path / "consumer.log"
    proc = start_consumer(
        kafka_broker.bootstrap, kafka_topic, pg_url, log, group="g-outage", batch=20
    )
    try:
        before = wait_for(pg_url, kafka_topic, total // 4)
        postgres.refuse_connections(pg_admin, name)
        time.sleep(4)  # the outage: every batch and every reconnect fails meanwhile
        assert proc.poll() is None, "the consumer died during the outage"
        postgres.allow_connections(pg_admin, name)
        wait_for(pg_url, kafka_topic, total)
    finally:
        postgres.allow_connections(pg_admin, name)
        stop(proc, log)
    assert before < total, "the outage came after the consumer had finished"
    assert "retrying in" in log.read_text()
    assert history_rows(pg_url) == history_rows(ref)
