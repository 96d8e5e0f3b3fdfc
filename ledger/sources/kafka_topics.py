"""The ledger's topics as data, and idempotent creation with kafka-python's KafkaAdminClient.

Topics
------
``account-events``
    The event log, key = user_id so one user's events share a partition and stay
    ordered. 6 partitions by default (the unit of consumer parallelism),
    replication factor 1 (single local broker; raise it on a real cluster).
    Kept forever (``retention.ms=-1``): replaying the log must rebuild the ledger.
``account-events.dlq``
    Dead letters (undecodable or unappliable events, with their reason and
    source position). 1 partition: the volume is tiny and one total order of
    failures is what an operator wants to read and replay. Kept forever too,
    because nothing may be silently dropped.

``rulebook-changes``
    The changefeed (``ledger changefeed``): one record per decision, key = user_id, kept
    forever like the event log, since downstream systems rebuild from it.
``rulebook-current``
    Each user's current decision, key = user_id: ``cleanup.policy=compact``, so the broker
    keeps the last record per user and a new reader gets the table, not the history.

Every topic is created with explicit ``retention.ms`` and ``retention.bytes``:
the Tansu broker reports an empty config set for topics created without
configs, and some clients (e.g. quixstreams) then fail on the missing key.
Note that Tansu reports these values with source ``DEFAULT_CONFIG``, so read
them back with ``describe_configs(..., config_filter='all')``: kafka-python's
default filter ('modified') hides them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.config import (
    DEFAULT_CHANGES_TOPIC,
    DEFAULT_CURRENT_TOPIC,
    DEFAULT_TOPIC,
    dlq_topic,
)

DEFAULT_PARTITIONS = 6
DLQ_PARTITIONS = 1
DEFAULT_REPLICATION = 1

# Both topics are part of the audit trail: never expire them by age or size.
KEEP_FOREVER: Mapping[str, str] = {"retention.ms": "-1", "retention.bytes": "-1"}


@dataclass(frozen=True)
class TopicSpec:
    """One topic as data: what ensure_topics asks the broker for."""

    name: str
    partitions: int
    replication_factor: int = DEFAULT_REPLICATION
    configs: Mapping[str, str] = field(default_factory=lambda: dict(KEEP_FOREVER))

    def as_request(self) -> dict[str, Any]:
        """The dict form KafkaAdminClient.create_topics accepts."""
        return {
            "num_partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": dict(self.configs),
        }


@dataclass(frozen=True)
class TopicsResult:
    """Outcome of ensure_topics: which topics were created, which were already there."""

    created: list[str]
    existing: list[str]
    # Partition count actually reported by the broker for every topic in the spec.
    partitions: dict[str, int]
    specs: list[TopicSpec]

    def mismatches(self) -> dict[str, tuple[int, int]]:
        """Existing topics whose partition count differs from the spec: name -> (want, have)."""
        return {
            spec.name: (spec.partitions, self.partitions[spec.name])
            for spec in self.specs
            if spec.name in self.partitions and self.partitions[spec.name] != spec.partitions
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "existing": self.existing,
            "topics": [
                {
                    "name": spec.name,
                    "partitions": self.partitions.get(spec.name),
                    "requested_partitions": spec.partitions,
                    "replication_factor": spec.replication_factor,
                    "configs": dict(spec.configs),
                }
                for spec in self.specs
            ],
        }


def topic_specs(
    topic: str = DEFAULT_TOPIC,
    partitions: int = DEFAULT_PARTITIONS,
    dlq_partitions: int = DLQ_PARTITIONS,
    replication_factor: int = DEFAULT_REPLICATION,
) -> list[TopicSpec]:
    """The event topic and its dead-letter topic."""
    if partitions < 1 or dlq_partitions < 1:
        raise ValueError("partitions must be >= 1")
    if replication_factor < 1:
        raise ValueError("replication_factor must be >= 1")
    return [
        TopicSpec(topic, partitions, replication_factor),
        TopicSpec(dlq_topic(topic), dlq_partitions, replication_factor),
    ]


def changefeed_topic_specs(
    changes: str = DEFAULT_CHANGES_TOPIC,
    current: str = DEFAULT_CURRENT_TOPIC,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = DEFAULT_REPLICATION,
) -> list[TopicSpec]:
    """The changefeed's two topics: the decisions, kept forever, and the compacted table of
    each user's current one."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    if changes == current:
        raise ValueError(f"the changes and current topics must differ (both {changes!r})")
    return [
        TopicSpec(changes, partitions, replication_factor),
        TopicSpec(
            current,
            partitions,
            replication_factor,
            {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"},
        ),
    ]


def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec] | None = None,
    timeout_s: float = 30.0,
    **admin_kwargs: Any,
) -> TopicsResult:
    """Create every topic in *specs* that does not exist yet; existing ones are left alone.

    ``admin_kwargs`` go to KafkaAdminClient unchanged (security_protocol,
    sasl_mechanism, sasl_plain_username, ssl_cafile, request_timeout_ms, ...).
    Returns once the created topics are visible in metadata with a leader for
    every partition, so callers can produce straight away.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError, for_code

    specs = topic_specs() if specs is None else specs
    timeout_ms = int(timeout_s * 1000)
    admin_kwargs.setdefault("bootstrap_timeout_ms", timeout_ms)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **admin_kwargs)
    try:
        response = admin.create_topics(
            {spec.name: spec.as_request() for spec in specs},
            timeout_ms=timeout_ms,
            raise_errors=False,
        )
        created: list[str] = []
        existing: list[str] = []
        for entry in response["topics"]:
            error = for_code(entry["error_code"])
            if entry["error_code"] == 0:
                created.append(entry["name"])
            elif error is TopicAlreadyExistsError:
                existing.append(entry["name"])
            else:
                detail = entry.get("error_message") or error.__name__
                raise error(f"cannot create topic {entry['name']!r}: {detail}")
        if created:
            admin.wait_for_topics(created, timeout_ms=timeout_ms)
        described = admin.describe_topics([spec.name for spec in specs])
        partitions = {t["name"]: len(t.get("partitions") or []) for t in described}
    finally:
        admin.close()
    order = {spec.name: i for i, spec in enumerate(specs)}
    return TopicsResult(
        created=sorted(created, key=order.__getitem__),
        existing=sorted(existing, key=order.__getitem__),
        partitions=partitions,
        specs=list(specs),
    )
