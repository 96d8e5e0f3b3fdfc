"""`ledger consume`: runs the projector service. A plugin of the `ledger` command line
(entry point `consume` in pyproject.toml); the wiring comes from `ledger.cli.common`."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from ledger.cli.common import (
    BootstrapOption,
    DbOption,
    TopicOption,
    kafka_errors,
    projector,
    settings,
    tune_gc_for_streaming,
)


def consume(
    bootstrap: BootstrapOption = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group", help="Consumer group id.  [default: ledger-projector]", show_default=False
        ),
    ] = None,
    topic: TopicOption = None,
    db: DbOption = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Most records per batch/transaction.  [default: 2000]",
            show_default=False,
        ),
    ] = None,
    session_timeout_ms: Annotated[
        int | None,
        typer.Option(
            "--session-timeout-ms",
            help="Group session timeout; a rebalance takes about half of it.  [default: 10000]",
            show_default=False,
        ),
    ] = None,
    log_every: Annotated[
        float | None,
        typer.Option(
            "--log-every",
            help="Seconds between progress log lines.  [default: 10]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the projector: a consumer-group member that keeps the ledger current.

    Each batch commits its projection changes and the partitions' next offsets in one
    database transaction; on every partition assignment the consumer seeks to the stored
    offsets, so no event is lost or applied twice across crashes and rebalances. Bad
    input goes to TOPIC.dlq (headers name the reason and source position) and to the
    dead-letter table. A database outage pauses consumption and retries with backoff.
    Logs events/s, per-partition lag and dead letters periodically. SIGTERM/SIGINT finish
    the current batch, leave the group and exit 0.
    """
    from consumers.projector import ProjectorService

    s = settings(
        db_url=db,
        kafka_bootstrap=bootstrap,
        kafka_topic=topic,
        consumer_group=group,
        consumer_batch_size=batch_size,
        consumer_session_timeout_ms=session_timeout_ms,
        consumer_log_every_s=log_every,
    )
    server = s.kafka.require_bootstrap()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    with kafka_errors(server):
        service = ProjectorService(s, projector(s))
        tune_gc_for_streaming()
        service.install_signal_handlers()
        code = service.run()
    raise typer.Exit(code)
