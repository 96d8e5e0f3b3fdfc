"""The parallel Kafka ingest (`ledger.app.ingest.pipeline_stream`) against the real broker
and both databases: `ledger consume` and `ledger replay --from-kafka` with worker
processes build the store a sequential file replay builds, including when the records'
keys do not follow their users (so two workers plan one user and batches fall back to
the sequential path), and a rebalance or a database outage drops the batches in flight
without losing or repeating one."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from kafka import KafkaProducer

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line
from ledger.config import settings_from_env
from ledger.domain.time import to_millis
from ledger.sources import kafka_topics as topics
from tests.helpers.kafka import publish, stamped_stream, start_consumer, stop, wait_for
from tests.support import Cli, chain_heads, consistent, history_rows
from tools.common import consumed

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    tmp = tmp_path_factory.mktemp("reference")
    path = tmp / "stream.jsonl"
    total = stamped_stream(path, users=300, seed=29)
    ref = f"sqlite:///{tmp / 'reference.db'}"
    Cli(ref).run("replay", str(path), "--workers", "0")
    return path, total, ref


def start(
    bootstrap: str, topic: str, db: str, log: Path, *, workers: int, group: str, batch: int = 150
) -> subprocess.Popen[bytes]:
    return start_consumer(bootstrap, topic, db, log, group=group, batch=batch, workers=workers)


def same_as_reference(db_url: str, ref: str) -> None:
    assert history_rows(db_url) == history_rows(ref)
    assert chain_heads(db_url) == chain_heads(ref)
    consistent(db_url)
    Cli(db_url).run("verify")


@pytest.mark.parametrize("workers", [1, 3])
def test_consumer_with_workers_equals_file_replay(
    db_url: str, kafka_broker, kafka_topic: str, reference, tmp_path: Path, workers: int
) -> None:
    path, total, ref = reference
    assert publish(Cli(db_url), kafka_broker.bootstrap, kafka_topic, path) == total
    log = tmp_path / "consumer.log"
    proc = start(
        kafka_broker.bootstrap, kafka_topic, db_url, log, workers=workers, group="g-workers"
    )
    try:
        wait_for(db_url, kafka_topic, total, timeout=120)
    finally:
        stop(proc, log)
    same_as_reference(db_url, ref)


def test_topic_replay_with_workers_equals_file_replay(
    db_url: str, kafka_broker, kafka_topic: str, reference
) -> None:
    path, total, ref = reference
    cli = Cli(db_url)
    assert publish(cli, kafka_broker.bootstrap, kafka_topic, path) == total
    summary = cli.json(
        "replay",
        "--from-kafka",
        "--bootstrap",
        kafka_broker.bootstrap,
        "--topic",
        kafka_topic,
        "--workers",
        "2",
        "--batch-size",
        "170",
    )
    assert summary["applied"] + summary["duplicates"] == total
    same_as_reference(db_url, ref)
    again = cli.json(
        "replay",
        "--from-kafka",
        "--bootstrap",
        kafka_broker.bootstrap,
        "--topic",
        kafka_topic,
        "--workers",
        "2",
    )
    assert again["applied"] == 0


@pytest.fixture
def one_partition_topic(kafka_broker) -> Iterator[str]:
    name = f"test-one-{os.urandom(6).hex()}"
    client = settings_from_env().kafka.client
    topics.ensure_topics(kafka_broker.bootstrap, topics.topic_specs(name, partitions=1), **client)
    yield name


def test_keys_that_do_not_follow_users_still_give_the_sequential_store(
    db_url: str, kafka_broker, one_partition_topic: str, reference, tmp_path: Path
) -> None:
    """Keyed by event id, a user's events land on every worker: batches where two workers
    plan one user, or one plans from a state another moved on, are applied on the
    sequential path, and the store is exactly the file replay's (one partition, so the
    order is the file's)."""
    path, total, ref = reference
    codec = AvroCodec()
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    for line in path.read_text().splitlines():
        event, recorded_at = event_from_json_line(line)
        assert recorded_at is not None
        producer.send(
            one_partition_topic,
            key=event.event_id.encode(),
            value=codec.encode(event),
            timestamp_ms=to_millis(recorded_at),
        )
    producer.flush()
    producer.close()
    log = tmp_path / "consumer.log"
    proc = start(
        kafka_broker.bootstrap, one_partition_topic, db_url, log, workers=3, group="g-keys"
    )
    try:
        wait_for(db_url, one_partition_topic, total, timeout=180)
    finally:
        stop(proc, log)
    same_as_reference(db_url, ref)
    assert "applied on the sequential path: two workers planned one user" in log.read_text()


def test_a_second_member_joining_drops_batches_in_flight_and_loses_none(
    db_url: str, kafka_broker, kafka_topic: str, reference, tmp_path: Path
) -> None:
    path, total, ref = reference
    assert publish(Cli(db_url), kafka_broker.bootstrap, kafka_topic, path) == total
    log = tmp_path / "consumers.log"
    first = start(
        kafka_broker.bootstrap, kafka_topic, db_url, log, workers=2, group="g-join", batch=40
    )
    try:
        wait_for(db_url, kafka_topic, 1, timeout=120)
        second = start(
            kafka_broker.bootstrap, kafka_topic, db_url, log, workers=2, group="g-join", batch=40
        )
        try:
            wait_for(db_url, kafka_topic, total, timeout=180)
        finally:
            stop(second, log)
    finally:
        stop(first, log)
    assert consumed(db_url, kafka_topic) == total
    same_as_reference(db_url, ref)
    assert "partitions revoked" in log.read_text()


def test_workers_do_not_outlive_a_killed_consumer(
    sqlite_url: str, kafka_broker, kafka_topic: str, reference, tmp_path: Path
) -> None:
    path, total, _ref = reference
    assert publish(Cli(sqlite_url), kafka_broker.bootstrap, kafka_topic, path) == total
    log = tmp_path / "consumer.log"
    proc = start(
        kafka_broker.bootstrap, kafka_topic, sqlite_url, log, workers=2, group="g-kill", batch=20
    )
    wait_for(sqlite_url, kafka_topic, 1, timeout=120)  # the workers are planning
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2, "the workers never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
