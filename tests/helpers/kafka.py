"""Pytest fixtures for tests against a real Kafka-protocol broker.

``kafka_broker`` (session): a Tansu broker started through ``infra.launcher`` on a
free port with its state (pid file, log) in a pytest tmp dir; stopped at the end.
Set ``LEDGER_TEST_BOOTSTRAP=host:port`` to run the same tests against an already
running broker instead (e.g. Apache Kafka from infra/compose.yaml); it is then
neither started nor stopped.

``kafka_topic`` (function): a fresh, uniquely named topic with 6 partitions plus
its ``.dlq``, created through ``ledger.sources.kafka_topics``; yields the topic name.

``FAST_GROUP_SETTINGS``: consumer-group timeouts that make a group join take ~3 s
instead of ~23 s with kafka-python 3's defaults (the join wait is about half the
session timeout on Tansu); 6000 ms is also Apache Kafka's minimum session timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from infra import launcher
from ledger.config import settings_from_env
from ledger.sources import kafka_topics as topics
from tests.support import Cli
from tools.common import GROUP_FLAGS, LEDGER, consumed, stamped_stream

__all__ = [
    "FAST_GROUP_SETTINGS",
    "GROUP_FLAGS",
    "LEDGER",
    "TEST_PARTITIONS",
    "consume_all",
    "consumed",
    "count",
    "kafka_broker",
    "kafka_topic",
    "no_consumer_outlives_its_test",
    "plant_pid_file",
    "publish",
    "stamped_stream",
    "start_consumer",
    "stop",
    "wait_for",
]

TEST_PARTITIONS = 6

FAST_GROUP_SETTINGS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 6000,
}

EXTERNAL_BOOTSTRAP_ENV = "LEDGER_TEST_BOOTSTRAP"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.BrokerInfo]:
    external = os.environ.get(EXTERNAL_BOOTSTRAP_ENV, "").strip()
    if external:
        _host, _, port = external.split(",")[0].rpartition(":")
        yield launcher.BrokerInfo(
            pid=0, port=int(port), bootstrap=external, log_path=Path(os.devnull), alive=True
        )
        return
    state_dir = tmp_path_factory.mktemp("kafka-broker")
    with launcher.running_broker(state_dir=state_dir) as info:
        yield info


@pytest.fixture
def kafka_topic(kafka_broker: launcher.BrokerInfo) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    specs = topics.topic_specs(name, partitions=TEST_PARTITIONS)
    topics.ensure_topics(kafka_broker.bootstrap, specs, **settings_from_env().kafka.client)
    yield name
    # Best effort: unique names already isolate tests, deleting only keeps the broker small.
    from kafka import KafkaAdminClient

    with (
        contextlib.suppress(Exception),
        KafkaAdminClient(
            bootstrap_servers=kafka_broker.bootstrap, **settings_from_env().kafka.client
        ) as admin,
    ):
        admin.delete_topics([spec.name for spec in specs], raise_errors=False)


# --- consumer processes and the stores they write -----------------------------------


def publish(cli: Cli, bootstrap: str, topic: str, path: Path) -> int:
    result = cli.json("publish", str(path), "--bootstrap", bootstrap, "--topic", topic, db=False)
    assert result["invalid"] == 0
    return result["sent"]


_SPAWNED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def no_consumer_outlives_its_test() -> Iterator[None]:
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def start_consumer(
    bootstrap: str,
    topic: str,
    db: str,
    log: Path,
    *,
    group: str,
    batch: int = 200,
    workers: int | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """`ledger consume` as a process of its own; `workers` None: the default count;
    `extra`: more options."""
    cmd = [
        LEDGER,
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--db",
        db,
        "--batch-size",
        str(batch),
        *GROUP_FLAGS,
        *(["--workers", str(workers)] if workers is not None else []),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    _SPAWNED.append(proc)
    return proc


def wait_for(db: str, topic: str, at_least: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = consumed(db, topic)
        if done >= at_least:
            return done
        time.sleep(0.05)
    raise AssertionError(f"only {consumed(db, topic)} of {at_least} records consumed")


def consume_all(bootstrap: str, topic: str, db: str, log: Path, total: int, group: str) -> None:
    """Run one consumer until the store has taken `total` records, then SIGTERM it."""
    proc = start_consumer(bootstrap, topic, db, log, group=group)
    try:
        wait_for(db, topic, total)
    finally:
        stop(proc, log)


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]


def count(db: str, table: sa.Table) -> int:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    engine.dispose()
    return n


def plant_pid_file(state_dir: Path, port: int, **record: object) -> Path:
    """A launcher pid file for `port` holding `record` (pid, binary, ...), as if a broker
    had been started there: how tests make the launcher meet processes it did not start."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"broker-{port}.pid"
    path.write_text(json.dumps({"port": port, "bootstrap": f"127.0.0.1:{port}", **record}))
    return path
