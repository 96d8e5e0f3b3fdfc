"""Set-up commands: the database schema (`db upgrade`) and the Kafka topics
(`topics create`)."""

from __future__ import annotations

from typing import Annotated

import typer

from ledger.cli.common import (
    DbOption,
    JsonOption,
    command_group,
    emit_json,
    err,
    escape_control,
    out,
    plain,
    settings,
)
from ledger.errors import LedgerError, UsageError
from ledger.sources import kafka_topics

db_app = command_group("Database maintenance.")
topics_app = command_group(
    "Create the ledger's Kafka topics (works on the local broker and on Apache Kafka).\n\n"
    "Connection security comes from LEDGER_KAFKA_* environment variables "
    "(LEDGER_KAFKA_SECURITY_PROTOCOL, LEDGER_KAFKA_SASL_MECHANISM, "
    "LEDGER_KAFKA_SASL_USERNAME, LEDGER_KAFKA_SASL_PASSWORD, LEDGER_KAFKA_SSL_CAFILE, "
    "LEDGER_KAFKA_SSL_CERTFILE, LEDGER_KAFKA_SSL_KEYFILE, ...); see docs/kafka.md."
)


def partitions_text(count: object) -> str:
    """A partition count in words: 1 partition, 6 partitions (? when the broker did not
    say)."""
    return f"{count} partition" if count == 1 else f"{count} partitions"


@topics_app.callback()
def _topics_group() -> None:
    # Without a callback Typer collapses a one-command app into that command.
    pass


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Create or migrate the store's tables to the newest schema.

    Every command that writes does this itself on an empty database (commands that only
    read refuse one); run it explicitly before deploying a new version against a shared
    database."""
    from ledger.store.database import upgrade

    before, after = upgrade(settings(db_url=db).db_url)
    if as_json:
        emit_json({"from": before, "to": after})
    elif before == after:
        out.print(f"database already at revision {after}")
    else:
        out.print(f"database migrated from {before or 'empty'} to revision {after}")


@topics_app.command("create")
def topics_create(
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            "-b",
            metavar="HOST:PORT",
            help="Kafka bootstrap servers, comma-separated (default: $LEDGER_BOOTSTRAP).",
            show_default=False,
        ),
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(
            "--topic",
            "-t",
            help="Event topic; its dead-letter topic is TOPIC.dlq (default: $LEDGER_TOPIC, "
            "else account-events).",
            show_default=False,
        ),
    ] = None,
    partitions: Annotated[
        int,
        typer.Option(
            "--partitions",
            min=1,
            help="Partitions of the event topic = the most consumers that can share the work.",
        ),
    ] = kafka_topics.DEFAULT_PARTITIONS,
    dlq_partitions: Annotated[
        int, typer.Option("--dlq-partitions", min=1, help="Partitions of the dead-letter topic.")
    ] = kafka_topics.DLQ_PARTITIONS,
    replication_factor: Annotated[
        int,
        typer.Option(
            "--replication-factor", min=1, help="Copies of each partition (1 on a single broker)."
        ),
    ] = kafka_topics.DEFAULT_REPLICATION,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the broker and for the topics.", min=1)
    ] = 15.0,
    as_json: JsonOption = False,
) -> None:
    """Create the event topic and TOPIC.dlq with explicit retention configs. Idempotent.

    Topics that already exist are left untouched and reported as such, with a warning
    when their partition count differs from --partitions (partitions are never changed
    here: that would move users to other partitions and break per-user order)."""
    import logging

    from kafka.errors import KafkaError

    # kafka-python logs every refused connection; that would bury the one error line.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    s = settings(kafka_bootstrap=bootstrap, kafka_topic=topic)
    server = s.kafka.require_bootstrap()
    try:
        specs = kafka_topics.topic_specs(
            s.kafka.topic, partitions, dlq_partitions, replication_factor
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        result = kafka_topics.ensure_topics(server, specs, timeout_s=timeout, **s.kafka.client)
    except (KafkaError, OSError) as exc:
        # str() of kafka-python errors can be empty (NoBrokersAvailable); keep the type.
        reason = str(exc) or type(exc).__name__
        raise LedgerError(f"cannot create topics on {server}: {reason}") from None
    if as_json:
        emit_json(result.to_json())
        return
    for spec in specs:
        state = "created" if spec.name in result.created else "already existed"
        have = result.partitions.get(spec.name, "?")
        out.print(plain(f"{spec.name}: {state} ({partitions_text(have)})"), soft_wrap=True)
    for name, (want, have) in result.mismatches().items():
        err.print(
            escape_control(
                f"warning: {name} has {partitions_text(have)}, not {want}; "
                "existing topics are not changed"
            ),
            soft_wrap=True,
            markup=False,
        )
