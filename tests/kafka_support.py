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
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import launcher
from ledger.config import settings_from_env
from ledger.sources import kafka_topics as topics

__all__ = ["FAST_GROUP_SETTINGS", "TEST_PARTITIONS", "kafka_broker", "kafka_topic"]

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
