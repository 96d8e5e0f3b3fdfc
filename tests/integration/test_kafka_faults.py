"""Faults around the Kafka pipeline, against the real broker: conflicting event ids across
partitions, a record too large for the dead-letter topic, a topic recreated or a broker
restarted empty under stored positions, a consumer beside a replay, and SIGTERM at start."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from infra import launcher
from ledger.sinks.dead_letter_topic import DLQ_ENVELOPE
from ledger.sources import kafka_topics as topics
from ledger.store.schema import dead_letters, events
from tests.factories import avro, signup
from tests.helpers.kafka import (
    GROUP_FLAGS,
    LEDGER,
    consumed,
    count,
    publish,
    stamped_stream,
    start_consumer,
    stop,
    wait_for,
)
from tests.support import Cli, consistent, eid
from tools.common import believed, two_files_sharing_users

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def rows(db: str, table: sa.Table) -> list[sa.Row]:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        found = list(conn.execute(sa.select(table)))
    engine.dispose()
    return found


def dlq_records(bootstrap: str, topic: str, at_least: int) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    consumer.assign([TopicPartition(f"{topic}.dlq", 0)])
    consumer.seek_to_beginning()
    found: list = []
    deadline = time.monotonic() + 20
    while len(found) < at_least and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=300).values():
            found.extend(batch)
    consumer.close()
    return found


def wait_applied(db: str, event_ids: set[str], timeout: float = 60.0) -> None:
    """Until every one of `event_ids` is in the store (stored positions cannot tell, right
    after they were reset)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            missing = event_ids - {r.event_id for r in rows(db, events)}
        except sa.exc.DBAPIError:
            missing = event_ids
        if not missing:
            return
        assert time.monotonic() < deadline, f"{len(missing)} events never applied"
        time.sleep(0.1)


def recreate(bootstrap: str, topic: str, partitions: int) -> None:
    with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
        admin.delete_topics([topic, f"{topic}.dlq"])
    deadline = time.monotonic() + 20
    while True:
        try:
            result = topics.ensure_topics(bootstrap, topics.topic_specs(topic, partitions))
        except Exception:  # the deletion may still be settling
            result = None
        if result is not None and result.created and result.partitions[topic] == partitions:
            return
        assert time.monotonic() < deadline, "the topic could not be recreated"
        time.sleep(0.5)


def test_one_event_id_claimed_on_two_partitions_is_applied_once(
    kafka_broker, kafka_topic: str, tmp_path: Path, db_url: str
) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    first = producer.send(kafka_topic, key=b"u-first", value=avro(signup(1, "u-first"))).get(30)
    for n in range(100):  # a user whose key lands on another partition
        other = f"u-other-{n}"
        md = producer.send(kafka_topic, key=other.encode(), value=avro(signup(1, other))).get(30)
        if md.partition != first.partition:
            break
    producer.close()
    total = consumed_total = n + 2
    log = tmp_path / "consumer.log"
    proc = start_consumer(kafka_broker.bootstrap, kafka_topic, db_url, log, group="g-ids")
    wait_for(db_url, kafka_topic, consumed_total)
    stop(proc, log)
    applied = rows(db_url, events)
    dead = rows(db_url, dead_letters)
    # The store decides: exactly one record owns the id, every other claim is a dead letter
    # naming the conflict, and nothing is retried forever.
    assert len(applied) == 1 and applied[0].event_id == eid(1)
    assert len(dead) == total - 1
    assert all("already recorded for another user" in d.reason for d in dead)
    assert {d.user_id for d in dead} | {applied[0].user_id} == {"u-first"} | {
        f"u-other-{i}" for i in range(n + 1)
    }


def test_a_record_too_large_for_the_dlq_goes_there_as_an_envelope(
    kafka_broker, kafka_topic: str, tmp_path: Path, db_url: str
) -> None:
    huge = b"\xc3\x01" + b"z" * 1_500_000
    producer = KafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap, acks="all", max_request_size=4 << 20
    )
    md = producer.send(kafka_topic, key=b"u-1", value=huge).get(30)
    producer.send(kafka_topic, key=b"u-2", value=avro(signup(2, "u-2"))).get(30)
    producer.close()
    log = tmp_path / "consumer.log"
    proc = start_consumer(kafka_broker.bootstrap, kafka_topic, db_url, log, group="g-big")
    wait_for(db_url, kafka_topic, 2)
    stop(proc, log)
    (dead,) = rows(db_url, dead_letters)
    assert dead.raw_size == len(huge) and dead.raw == huge  # the table keeps the bytes
    assert [r.event_id for r in rows(db_url, events)] == [eid(2)]
    (record,) = dlq_records(kafka_broker.bootstrap, kafka_topic, 1)
    headers = dict(record.headers)
    assert headers[DLQ_ENVELOPE] == b"1"
    envelope = json.loads(record.value)
    assert envelope["size"] == len(huge)
    assert (envelope["partition"], envelope["offset"]) == (md.partition, md.offset)
    assert len(envelope["sha256"]) == 64 and envelope["reason"] == dead.reason


def test_a_recreated_topic_stops_the_consumer_until_told_to_reset(
    kafka_broker, kafka_topic: str, tmp_path: Path, db_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    stamped_stream(before, users=60, seed=31)
    stamped_stream(after, users=40, seed=32)
    cli = Cli(db_url)
    sent_before = publish(cli, bootstrap, kafka_topic, before)
    log = tmp_path / "consumer.log"
    proc = start_consumer(bootstrap, kafka_topic, db_url, log, group="g-re")
    wait_for(db_url, kafka_topic, sent_before)
    stop(proc, log)
    applied_before = count(db_url, events)

    recreate(bootstrap, kafka_topic, partitions=4)
    sent_after = publish(cli, bootstrap, kafka_topic, after)
    proc = start_consumer(bootstrap, kafka_topic, db_url, log, group="g-re")
    assert proc.wait(timeout=60) == 1
    assert "was recreated" in log.read_text()
    assert count(db_url, events) == applied_before  # nothing applied, nothing skipped
    kafka = ["--bootstrap", bootstrap, "--topic", kafka_topic]
    gone = cli.run("replay", "--from-kafka", *kafka, expect=1)
    (error,) = [line for line in gone.stderr.splitlines() if line.startswith("ledger: error:")]
    assert "was recreated" in error and "--reset-positions" in error

    again = [LEDGER, "consume", *kafka, "--group", "g-re", "--db", db_url, *GROUP_FLAGS]
    proc = subprocess.Popen(
        [*again, "--reset-positions"], stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    ids_after = {json.loads(line)["event_id"] for line in after.open()}
    wait_applied(db_url, ids_after)
    stop(proc, log)
    assert consumed(db_url, kafka_topic) == sent_after
    stored = {r.event_id for r in rows(db_url, events)}
    assert ids_after <= stored  # every event published after the recreation is applied
    assert len(stored) == applied_before + len(ids_after)


def test_a_broker_restarted_empty_is_detected_not_skipped(tmp_path: Path, sqlite_url: str) -> None:
    """A broker with memory storage restarted on the same port: the topic comes back empty
    (created again with the same name); the running consumer stops instead of waiting at
    its old offsets with a lag of zero, and every event published afterwards is applied
    once it is told to reset."""
    state = tmp_path / "broker"
    info = launcher.start(state_dir=state)
    port, bootstrap = info.port, info.bootstrap
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    cli = Cli(sqlite_url)
    try:
        topics.ensure_topics(bootstrap, topics.topic_specs(topic, 3))
        before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
        stamped_stream(before, users=30, seed=41)
        stamped_stream(after, users=30, seed=42)
        sent = publish(cli, bootstrap, topic, before)
        log = tmp_path / "consumer.log"
        proc = start_consumer(bootstrap, topic, sqlite_url, log, group="g-restart")
        wait_for(sqlite_url, topic, sent)
        launcher.stop(port, state_dir=state)
        launcher.start(port=port, state_dir=state)
        topics.ensure_topics(bootstrap, topics.topic_specs(topic, 3))
        sent_after = publish(cli, bootstrap, topic, after)
        assert proc.wait(timeout=90) == 1, log.read_text()[-3000:]
        text = log.read_text()
        assert "was recreated" in text or "below the stored position" in text
        # A new group: the stopped consumer left "g-restart" in the middle of re-joining the
        # restarted broker, and Tansu (unlike Apache Kafka, which expires such a member
        # after the rebalance timeout) keeps that group waiting for it.
        again = [LEDGER, "consume", "--bootstrap", bootstrap, "--topic", topic]
        again += ["--group", "g-after", "--db", sqlite_url, "--reset-positions", *GROUP_FLAGS]
        proc = subprocess.Popen(again, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        wait_applied(sqlite_url, {json.loads(line)["event_id"] for line in after.open()})
        stop(proc, log)
        assert consumed(sqlite_url, topic) == sent_after
    finally:
        launcher.stop(port, state_dir=state)


@pytest.mark.postgres
def test_a_consumer_and_a_replay_on_one_store_equal_a_sequential_replay(
    kafka_broker, kafka_topic: str, tmp_path: Path, pg_url: str
) -> None:
    whole, a, b = two_files_sharing_users(tmp_path, users=800)
    sent = publish(Cli(pg_url), kafka_broker.bootstrap, kafka_topic, a)
    log = tmp_path / "consumer.log"
    proc = start_consumer(kafka_broker.bootstrap, kafka_topic, pg_url, log, group="g-mix")
    replay = subprocess.run(
        [LEDGER, "replay", str(b), "--db", pg_url, "--batch-size", "200"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode in (0, 3), replay.stderr[-2000:]
    wait_for(pg_url, kafka_topic, sent, timeout=120)
    stop(proc, log)
    ref = f"sqlite:///{tmp_path / 'reference.db'}"
    Cli(ref).run("replay", str(whole), expect=None)
    consistent(pg_url)
    assert believed(pg_url) == believed(ref)


def test_sigterm_right_after_start_exits_cleanly(
    kafka_broker, kafka_topic: str, db_url: str
) -> None:
    # A signal before the interpreter has run a line cannot be caught by any Python program;
    # from then on it is held for the service (ledger.cli.signals).
    for delay in (0.1, 0.2, 0.5):
        cmd = [LEDGER, "consume", "--bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic]
        proc = subprocess.Popen(
            [*cmd, "--db", db_url, *GROUP_FLAGS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (delay, err.decode()[-2000:])
    assert consumed(db_url, kafka_topic) == 0
