"""Topic configuration as data, and idempotent creation with kafka-python's KafkaAdminClient.

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

Every topic is created with explicit ``retention.ms`` and ``retention.bytes``:
the Tansu broker reports an empty config set for topics created without
configs, and some clients (e.g. quixstreams) then fail on the missing key.
Note that Tansu reports these values with source ``DEFAULT_CONFIG``, so read
them back with ``describe_configs(..., config_filter='all')``: kafka-python's
default filter ('modified') hides them.

Client settings from the environment (``client_settings_from_env``)
--------------------------------------------------------------------
All optional; unset or empty variables are ignored. Values become kafka-python
keyword arguments accepted by KafkaAdminClient, KafkaProducer and KafkaConsumer.

=====================================  ===============================================
``LEDGER_BOOTSTRAP``                   host:port[,host:port...] (see bootstrap_from_env)
``LEDGER_KAFKA_SECURITY_PROTOCOL``     security_protocol: PLAINTEXT, SSL,
                                       SASL_PLAINTEXT or SASL_SSL
``LEDGER_KAFKA_SASL_MECHANISM``        sasl_mechanism: PLAIN, SCRAM-SHA-256,
                                       SCRAM-SHA-512, OAUTHBEARER, GSSAPI
``LEDGER_KAFKA_SASL_USERNAME``         sasl_plain_username (also used by SCRAM)
``LEDGER_KAFKA_SASL_PASSWORD``         sasl_plain_password (also used by SCRAM)
``LEDGER_KAFKA_SSL_CAFILE``            ssl_cafile: CA bundle (PEM) to verify the broker
``LEDGER_KAFKA_SSL_CERTFILE``          ssl_certfile: client certificate (mutual TLS)
``LEDGER_KAFKA_SSL_KEYFILE``           ssl_keyfile: client private key (mutual TLS)
``LEDGER_KAFKA_SSL_PASSWORD``          ssl_password: password of the private key
``LEDGER_KAFKA_SSL_CHECK_HOSTNAME``    ssl_check_hostname: true/false (default true)
``LEDGER_KAFKA_CLIENT_ID``             client_id shown in broker logs and quotas
=====================================  ===============================================

Example::

    settings = client_settings_from_env()
    existing = create_topics("broker:9092", partitions=6, **settings)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_TOPIC",
    "DLQ_PARTITIONS",
    "DLQ_SUFFIX",
    "ENV_VARS",
    "TopicSpec",
    "TopicsResult",
    "bootstrap_from_env",
    "client_settings_from_env",
    "create_topics",
    "dlq_name",
    "ensure_topics",
    "topic_specs",
]

DEFAULT_TOPIC = "account-events"
DEFAULT_PARTITIONS = 6
DLQ_SUFFIX = ".dlq"
DLQ_PARTITIONS = 1
DEFAULT_REPLICATION = 1

# Both topics are part of the audit trail: never expire them by age or size.
KEEP_FOREVER: Mapping[str, str] = {"retention.ms": "-1", "retention.bytes": "-1"}

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")

# env var -> kafka-python keyword argument
ENV_VARS: Mapping[str, str] = {
    "LEDGER_KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "LEDGER_KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "LEDGER_KAFKA_SASL_USERNAME": "sasl_plain_username",
    "LEDGER_KAFKA_SASL_PASSWORD": "sasl_plain_password",
    "LEDGER_KAFKA_SSL_CAFILE": "ssl_cafile",
    "LEDGER_KAFKA_SSL_CERTFILE": "ssl_certfile",
    "LEDGER_KAFKA_SSL_KEYFILE": "ssl_keyfile",
    "LEDGER_KAFKA_SSL_PASSWORD": "ssl_password",
    "LEDGER_KAFKA_SSL_CHECK_HOSTNAME": "ssl_check_hostname",
    "LEDGER_KAFKA_CLIENT_ID": "client_id",
}
BOOTSTRAP_ENV = "LEDGER_BOOTSTRAP"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class TopicSpec:
    """One topic as data: what create_topics asks the broker for."""

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

    def to_dict(self) -> dict[str, Any]:
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


def dlq_name(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


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
        TopicSpec(dlq_name(topic), dlq_partitions, replication_factor),
    ]


def bootstrap_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(BOOTSTRAP_ENV, "").strip()
    return value or None


def client_settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """kafka-python keyword arguments from the ``LEDGER_KAFKA_*`` variables (module docstring).

    Raises ValueError on a value kafka-python would only reject later and less clearly.
    """
    env = os.environ if environ is None else environ
    settings: dict[str, Any] = {}
    for var, kwarg in ENV_VARS.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        if kwarg == "security_protocol":
            value: Any = raw.upper()
            if value not in SECURITY_PROTOCOLS:
                raise ValueError(f"{var}={raw!r} is not one of {', '.join(SECURITY_PROTOCOLS)}")
        elif kwarg == "sasl_mechanism":
            value = raw.upper()
        elif kwarg == "ssl_check_hostname":
            lowered = raw.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(f"{var}={raw!r} must be true or false")
            value = lowered in _TRUE
        else:
            value = raw
        settings[kwarg] = value
    # Credentials without a SASL protocol would be silently ignored by kafka-python.
    protocol = settings.get("security_protocol", "PLAINTEXT")
    if "sasl_mechanism" in settings and not protocol.startswith("SASL_"):
        raise ValueError(
            "LEDGER_KAFKA_SASL_MECHANISM needs LEDGER_KAFKA_SECURITY_PROTOCOL="
            "SASL_PLAINTEXT or SASL_SSL"
        )
    return settings


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


def create_topics(
    bootstrap: str,
    topic: str = DEFAULT_TOPIC,
    partitions: int = DEFAULT_PARTITIONS,
    **admin_kwargs: Any,
) -> list[str]:
    """Create *topic* and ``<topic>.dlq`` if missing; return the names that already existed.

    Idempotent: running it again is harmless and returns both names. Use
    ensure_topics for the full picture (created, existing, partition counts).
    """
    return ensure_topics(bootstrap, topic_specs(topic, partitions), **admin_kwargs).existing
