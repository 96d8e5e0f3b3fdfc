"""The local broker launcher, topic set-up and CLI sub-apps, against the real Tansu broker."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaConfigurationError

from infra import launcher
from ledger.sources import kafka_topics as topics
from tests.helpers.kafka import FAST_GROUP_SETTINGS, plant_pid_file

# Fixtures kafka_broker and kafka_topic come from tests/helpers/kafka.py via tests/conftest.py.


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process whose pid we plant in pid files; it must survive every stop()."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


# --------------------------------------------------------------------------- launcher


@pytest.mark.kafka
def test_start_status_stop_lifecycle(tmp_path: Path) -> None:
    info = launcher.start(state_dir=tmp_path)
    try:
        assert info.alive
        assert info.bootstrap == f"127.0.0.1:{info.port}"
        record = json.loads((tmp_path / f"broker-{info.port}.pid").read_text())
        assert record["pid"] == info.pid
        assert record["log_path"] == str(info.log_path.resolve())
        assert {"started_at", "binary", "bootstrap"} <= record.keys()
        assert [(b.pid, b.alive) for b in launcher.status(tmp_path)] == [(info.pid, True)]
        with pytest.raises(launcher.BrokerError, match="already running"):
            launcher.start(port=info.port, state_dir=tmp_path)
    finally:
        assert launcher.stop(state_dir=tmp_path) is True  # port=None: the only broker
    assert launcher.status(tmp_path) == []
    assert not Path(f"/proc/{info.pid}").exists()
    assert launcher.stop(info.port, state_dir=tmp_path) is False  # idempotent


@pytest.mark.kafka
def test_start_failure_reports_log_tail_and_cleans_up(tmp_path: Path) -> None:
    # This Tansu build has no file:// storage: the process exits at once.
    with pytest.raises(launcher.BrokerError) as excinfo:
        launcher.start(data_url="file:///nonexistent/", state_dir=tmp_path, timeout=10)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "UnsupportedStorageUrl" in message
    assert list(tmp_path.glob("*.pid")) == []


def test_stop_refuses_pid_file_naming_an_unrelated_process(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    pid_file = plant_pid_file(tmp_path, 1, pid=sleeper.pid, binary="/bin/sleep")
    assert launcher.status(tmp_path)[0].alive is False
    assert launcher.stop(1, state_dir=tmp_path) is False
    assert sleeper.poll() is None, "stop() killed a process that is not its broker"
    assert not pid_file.exists()


def test_stop_refuses_unrelated_process_even_if_binary_claimed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    binary = launcher.resolve_binary()
    plant_pid_file(tmp_path, 2, pid=sleeper.pid, binary=binary)
    assert launcher.stop(state_dir=tmp_path) is False
    assert sleeper.poll() is None


@pytest.mark.kafka
def test_stop_refuses_a_real_broker_that_is_not_the_recorded_one(
    tmp_path: Path, kafka_broker: launcher.BrokerInfo
) -> None:
    if kafka_broker.pid == 0:
        pytest.skip("external broker: no pid to impersonate")
    binary = launcher.resolve_binary()
    other_port = launcher.find_free_port()
    # Right binary and pid, wrong port: the pid file is not about this broker.
    plant_pid_file(tmp_path, other_port, pid=kafka_broker.pid, binary=binary)
    assert launcher.stop(other_port, state_dir=tmp_path) is False
    # Right pid, binary and port, but another process start time: a recycled pid.
    plant_pid_file(tmp_path, kafka_broker.port, pid=kafka_broker.pid, binary=binary, start_ticks=1)
    assert launcher.stop(kafka_broker.port, state_dir=tmp_path) is False
    assert launcher.status(kafka_broker.log_path.parent)[0].alive


# --------------------------------------------------------------------------- topics


def create_topics(bootstrap: str, topic: str, partitions: int = 6, **admin: object) -> list[str]:
    """The topic and its .dlq; returns the names that existed already."""
    return topics.ensure_topics(bootstrap, topics.topic_specs(topic, partitions), **admin).existing


@pytest.mark.kafka
def test_create_topics_is_idempotent_with_explicit_configs(
    kafka_broker: launcher.BrokerInfo,
) -> None:
    name = f"ev-{uuid.uuid4().hex[:8]}"
    assert create_topics(kafka_broker.bootstrap, topic=name) == []
    assert create_topics(kafka_broker.bootstrap, topic=name) == [name, f"{name}.dlq"]

    with KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap) as admin:
        described = {t["name"]: t for t in admin.describe_topics([name, f"{name}.dlq"])}
        assert len(described[name]["partitions"]) == 6
        assert len(described[f"{name}.dlq"]["partitions"]) == topics.DLQ_PARTITIONS
        # Tansu labels explicit topic configs DEFAULT_CONFIG, which the default
        # 'modified' filter hides: ask for all.
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all"
        )["topic"][name]
    assert configs["retention.ms"]["value"] == "-1"
    assert configs["retention.bytes"]["value"] == "-1"


@pytest.mark.kafka
def test_admin_kwargs_reach_kafka_python(kafka_broker: launcher.BrokerInfo) -> None:
    name = f"ev-{uuid.uuid4().hex[:8]}"
    create_topics(
        kafka_broker.bootstrap, topic=name, partitions=2, security_protocol="PLAINTEXT"
    )
    with pytest.raises(KafkaConfigurationError, match="sasl_bogus"):
        create_topics(kafka_broker.bootstrap, topic=name, sasl_bogus="x")


# --------------------------------------------------------------------------- round trip


@pytest.mark.kafka
def test_produce_consume_round_trip(kafka_broker: launcher.BrokerInfo, kafka_topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", linger_ms=5)
    sent = {}
    for i in range(60):
        key = f"user-{i % 10}".encode()
        producer.send(
            kafka_topic,
            key=key,
            value=f"event-{i}".encode(),
            timestamp_ms=1_700_000_000_000 + i,
            headers=[("event_type", b"PhoneChanged")],
        )
        sent.setdefault(key, []).append(f"event-{i}".encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        kafka_topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FAST_GROUP_SETTINGS,
    )
    received: dict[bytes, list[bytes]] = {}
    partitions_by_key: dict[bytes, set[int]] = {}
    deadline = time.monotonic() + 20
    try:
        while sum(map(len, received.values())) < 60 and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    received.setdefault(record.key, []).append(record.value)
                    partitions_by_key.setdefault(record.key, set()).add(tp.partition)
                    assert record.headers == [("event_type", b"PhoneChanged")]
                    assert 1_700_000_000_000 <= record.timestamp < 1_700_000_000_060
        # The high watermark from fetch responses is right even where end_offsets() is not.
        assignment = consumer.assignment()
        assert len(assignment) == 6
        assert sum(consumer.highwater(tp) or 0 for tp in assignment) == 60
    finally:
        consumer.close()
    assert received == sent  # per-key order preserved
    assert all(len(parts) == 1 for parts in partitions_by_key.values())


@pytest.mark.kafka
def test_seek_in_on_partitions_assigned(
    kafka_broker: launcher.BrokerInfo, kafka_topic: str
) -> None:
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    for i in range(10):
        producer.send(kafka_topic, value=str(i).encode(), partition=0)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        **FAST_GROUP_SETTINGS,
    )

    class SeekToStored(ConsumerRebalanceListener):
        # What the projector does: resume from offsets stored with the projection.
        def on_partitions_revoked(self, revoked: object) -> None:
            pass

        def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
            for tp in assigned:
                consumer.seek(tp, 7 if tp.partition == 0 else 0)

    consumer.subscribe([kafka_topic], listener=SeekToStored())
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    try:
        while len(values) < 3 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
    finally:
        consumer.close()
    assert values == [b"7", b"8", b"9"]
