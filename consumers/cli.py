"""`ledger consume`: runs the projector service. A plugin of the `ledger` command line
(entry point `consume` in pyproject.toml); the wiring comes from `ledger.cli.common`."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from ledger.cli import signals
from ledger.cli.common import (
    DEV_KEY_WARNING,
    BootstrapOption,
    DbOption,
    ResetPositionsOption,
    TopicOption,
    WorkersOption,
    kafka_errors,
    projector,
    settings,
    store_opener,
    tune_gc_for_streaming,
    warn_if_dev_phone_key,
)
from ledger.cli.logs import LogFormatOption, ServiceLog
from ledger.errors import LedgerError, UsageError

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


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
    workers: WorkersOption = None,
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
    reset_positions: ResetPositionsOption = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus metrics at http://HOST:PORT/metrics and liveness at "
            "/healthz (0: any free port, logged at start).",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option("--metrics-host", help="Address the metrics endpoint listens on."),
    ] = "127.0.0.1",
    allow_dev_key: Annotated[
        bool,
        typer.Option(
            "--allow-dev-key",
            help="Run even though LEDGER_PHONE_KEY is not set, hashing phones with the public "
            "development key (reversible: for development only).",
        ),
    ] = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Run the projector: a consumer-group member that keeps the ledger current.

    Each batch commits its projection changes and the partitions' next offsets in one
    database transaction; on every partition assignment the consumer seeks to the stored
    offsets, so no event is lost or applied twice across crashes and rebalances. Bad
    input goes to TOPIC.dlq (headers name the reason and source position) and to the
    dead-letter table. A database outage pauses consumption and retries with backoff.
    Logs events/s, per-partition lag and dead letters periodically. SIGTERM/SIGINT finish
    the current batch, leave the group and exit 0.

    Refuses to start (exit 2) without LEDGER_PHONE_KEY unless --allow-dev-key is given.
    Stops with exit 1 and one line saying so when the topic is not the one the stored
    positions belong to (recreated, truncated, another partition count); --reset-positions
    is the way on once that is understood.

    --log-format json writes every log line, notice and the error that stops it as one
    JSON object (time, level, logger, message and fields such as applied, lag, position).
    """
    from consumers.projector import ProjectorService

    # Configured first: in JSON, even a setting refused below is a JSON line.
    service_log = ServiceLog(log_format, "ledger.consume")
    service_log.configure(TEXT_FORMAT)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with service_log.errors():
        code = _consume(
            service_log,
            ProjectorService,
            settings(
                db_url=db,
                kafka_bootstrap=bootstrap,
                kafka_topic=topic,
                consumer_group=group,
                consumer_batch_size=batch_size,
                workers=workers,
                consumer_session_timeout_ms=session_timeout_ms,
                consumer_log_every_s=log_every,
            ),
            allow_dev_key=allow_dev_key,
            reset_positions=reset_positions,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
        )
    raise typer.Exit(code)


def _consume(
    service_log: ServiceLog,
    service_class: Any,
    s: Any,
    *,
    allow_dev_key: bool,
    reset_positions: bool,
    metrics_host: str,
    metrics_port: int | None,
) -> int:
    """The service, from checking its settings to its exit status."""
    server = s.kafka.require_bootstrap()
    _ = s.kafka.isolation  # a bad LEDGER_KAFKA_ISOLATION_LEVEL before anything is changed
    # A service runs unattended: it stores nothing under a reversible key unless told to.
    if s.uses_dev_phone_key and not allow_dev_key:
        raise UsageError(
            "LEDGER_PHONE_KEY is not set: refusing to hash phones with the public development "
            "key in a service; set LEDGER_PHONE_KEY (or pass --allow-dev-key for development)"
        )
    if service_log.json:
        if s.uses_dev_phone_key:
            service_log.say(DEV_KEY_WARNING, logging.WARNING)
    else:
        warn_if_dev_phone_key(s)
    metrics, metrics_server = _metrics(s, metrics_host, metrics_port)
    try:
        with kafka_errors(server):
            service = service_class(
                s, projector(s), metrics=metrics, open_store=store_opener(s)
            )
            tune_gc_for_streaming()
            signals.hand_over(service.request_stop)
            return int(service.run(reset_positions=reset_positions))
    finally:
        if metrics_server is not None:
            metrics_server.close()


def _metrics(s: Any, host: str, port: int | None) -> tuple[Any, Any]:
    """The metrics hooks and their HTTP server, started, when --metrics-port asks for them."""
    if port is None:
        return None, None
    from consumers.metrics import MetricsServer, ProjectorMetrics

    # Liveness allows a batch as long as the group itself allows one, and some.
    metrics = ProjectorMetrics(stale_after_s=s.consumer.max_poll_interval_ms / 1000 + 30)
    try:
        http = MetricsServer(metrics, host, port)
    except OSError as exc:
        raise LedgerError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    http.start()
    bound_host, bound_port = http.address
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    logging.getLogger("ledger.consume").info(
        "metrics on %s/metrics, liveness on /healthz",
        url,
        extra={"metrics_url": f"{url}/metrics", "liveness_url": f"{url}/healthz"},
    )
    return metrics, http
