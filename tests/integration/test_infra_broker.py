"""The local broker launcher, topic set-up and CLI sub-apps, against the real Tansu broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaConfigurationError
from typer.testing import CliRunner

from infra import launcher
from infra.cli import broker_app
from ledger.cli.admin import topics_app
from ledger.config import kafka_client_settings
from ledger.errors import UsageError
from ledger.sources import kafka_topics as topics
from tests.helpers.kafka import FAST_GROUP_SETTINGS

# Fixtures kafka_broker and kafka_topic come from tests/helpers/kafka.py via tests/conftest.py.


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process whose pid we plant in pid files; it must survive every stop()."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _plant_pid_file(state_dir: Path, port: int, **record: object) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"broker-{port}.pid"
    path.write_text(json.dumps({"port": port, "bootstrap": f"127.0.0.1:{port}", **record}))
    return path


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
    pid_file = _plant_pid_file(tmp_path, 1, pid=sleeper.pid, binary="/bin/sleep")
    assert launcher.status(tmp_path)[0].alive is False
    assert launcher.stop(1, state_dir=tmp_path) is False
    assert sleeper.poll() is None, "stop() killed a process that is not its broker"
    assert not pid_file.exists()


def test_stop_refuses_unrelated_process_even_if_binary_claimed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    binary = launcher.resolve_binary()
    _plant_pid_file(tmp_path, 2, pid=sleeper.pid, binary=binary)
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
    _plant_pid_file(tmp_path, other_port, pid=kafka_broker.pid, binary=binary)
    assert launcher.stop(other_port, state_dir=tmp_path) is False
    # Right pid, binary and port, but another process start time: a recycled pid.
    _plant_pid_file(tmp_path, kafka_broker.port, pid=kafka_broker.pid, binary=binary, start_ticks=1)
    assert launcher.stop(kafka_broker.port, state_dir=tmp_path) is False
    assert launcher.status(kafka_broker.log_path.parent)[0].alive


def test_stop_with_several_brokers_needs_a_port(tmp_path: Path) -> None:
    _plant_pid_file(tmp_path, 3, pid=999_999_999)
    _plant_pid_file(tmp_path, 4, pid=999_999_999)
    with pytest.raises(launcher.BrokerError, match="several brokers"):
        launcher.stop(state_dir=tmp_path)


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


def test_client_settings_from_env() -> None:
    env = {
        "LEDGER_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "LEDGER_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "LEDGER_KAFKA_SASL_USERNAME": "ledger",
        "LEDGER_KAFKA_SASL_PASSWORD": "s3cret",
        "LEDGER_KAFKA_SSL_CAFILE": "/etc/ca.pem",
        "LEDGER_KAFKA_SSL_CHECK_HOSTNAME": "false",
        "LEDGER_KAFKA_CLIENT_ID": "",
        "UNRELATED": "x",
    }
    assert kafka_client_settings(env) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ledger",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/ca.pem",
        "ssl_check_hostname": False,
    }
    assert kafka_client_settings({}) == {}
    with pytest.raises(UsageError, match="LEDGER_KAFKA_SECURITY_PROTOCOL"):
        kafka_client_settings({"LEDGER_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(UsageError, match="SASL_PLAINTEXT or SASL_SSL"):
        kafka_client_settings({"LEDGER_KAFKA_SASL_MECHANISM": "PLAIN"})


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


# --------------------------------------------------------------------------- CLI


@pytest.mark.kafka
def test_cli_start_status_topics_stop(tmp_path: Path) -> None:
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path)]

    started = runner.invoke(broker_app, ["start", "--json", *state])
    assert started.exit_code == 0, started.output
    info = json.loads(started.stdout)
    try:
        status = runner.invoke(broker_app, ["status", "--json", *state])
        assert status.exit_code == 0, status.output
        assert [(b["port"], b["alive"]) for b in json.loads(status.stdout)] == [
            (info["port"], True)
        ]

        created = runner.invoke(
            topics_app,
            ["create", "--json", "--partitions", "6"],
            env={"LEDGER_BOOTSTRAP": info["bootstrap"]},
        )
        assert created.exit_code == 0, created.output
        assert json.loads(created.stdout)["created"] == ["account-events", "account-events.dlq"]
        again = runner.invoke(topics_app, ["create", "--bootstrap", info["bootstrap"]])
        assert again.exit_code == 0, again.output
        assert "already existed" in again.stdout
    finally:
        stopped = runner.invoke(broker_app, ["stop", *state])
    assert stopped.exit_code == 0, stopped.output
    assert "Stopped" in stopped.stdout
    status = runner.invoke(broker_app, ["status", "--json", *state])
    assert json.loads(status.stdout) == []


def test_cli_errors_are_one_line_on_stderr(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"LEDGER_BOOTSTRAP": ""}
    missing = runner.invoke(topics_app, ["create"], env=env)
    assert missing.exit_code == 2
    assert missing.stderr.startswith("ledger: error: no Kafka bootstrap servers")
    assert missing.stderr.count("\n") == 1

    unreachable = runner.invoke(
        topics_app, ["create", "-b", "127.0.0.1:1", "--timeout", "1"], env=env
    )
    assert unreachable.exit_code == 1
    assert unreachable.stderr.startswith("ledger: error: cannot create topics on 127.0.0.1:1")
    assert unreachable.stderr.count("\n") == 1

    _plant_pid_file(tmp_path, 5, pid=999_999_999)
    _plant_pid_file(tmp_path, 6, pid=999_999_999)
    several = runner.invoke(broker_app, ["stop", "--state-dir", str(tmp_path)])
    assert several.exit_code == 1
    assert "several brokers" in several.stderr


@pytest.mark.kafka
def test_broker_survives_the_cli_process(tmp_path: Path) -> None:
    """`broker start` in a separate process returns while the broker keeps running."""
    code = "from infra.cli import broker_app; broker_app()"
    cmd = [sys.executable, "-c", code, "start", "--json", "--state-dir", str(tmp_path)]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    info = json.loads(out.stdout)
    try:
        assert [b.alive for b in launcher.status(tmp_path)] == [True]
    finally:
        assert launcher.stop(info["port"], state_dir=tmp_path) is True
