"""`ledger consume`: runs the projector service. A plugin of the `ledger` command line
(entry point `consume` in pyproject.toml); the wiring comes from `ledger.cli.common`."""

from __future__ import annotations

import logging
import re
import time
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
from ledger.domain.limits import quote
from ledger.errors import LedgerError, UsageError

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"

# The metrics endpoint of both services (`consume`, `changefeed`).
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus metrics at http://HOST:PORT/metrics, liveness at /healthz "
        "and readiness at /readyz (0: any free port, logged at start).",
        show_default=False,
    ),
]
MetricsHostOption = Annotated[
    str, typer.Option("--metrics-host", help="Address the metrics endpoint listens on.")
]


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
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = "127.0.0.1",
    allow_dev_key: Annotated[
        bool,
        typer.Option(
            "--allow-dev-key",
            help="Run even though LEDGER_PHONE_KEY is not set, hashing phones with the public "
            "development key (reversible: for development only).",
        ),
    ] = False,
    log_format: LogFormatOption = "text",
    changefeed: Annotated[
        bool,
        typer.Option(
            "--changefeed",
            help="Also run the changefeed's relay in this process: publish every decision to "
            "rulebook-changes and each user's current one to rulebook-current (see `ledger "
            "changefeed`); /readyz then reports both.",
        ),
    ] = False,
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
    service_log = _service_log(log_format, "ledger.consume")
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
            changefeed=changefeed,
        )
    raise typer.Exit(code)


def _service_log(log_format: str, name: str) -> ServiceLog:
    """A service's log, configured before anything else it does: the clients' chatter
    (kafka-python, Alembic) kept to warnings."""
    service_log = ServiceLog(log_format, name)
    service_log.configure(TEXT_FORMAT)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return service_log


def _consume(
    service_log: ServiceLog,
    service_class: Any,
    s: Any,
    *,
    allow_dev_key: bool,
    reset_positions: bool,
    metrics_host: str,
    metrics_port: int | None,
    changefeed: bool = False,
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
    if changefeed:
        changefeed_topics(s)  # a bad name is a usage error before anything starts
    metrics, relay_metrics, metrics_server = _metrics(
        s, metrics_host, metrics_port, changefeed=changefeed
    )
    relay = None
    try:
        with kafka_errors(server):
            the_projector = projector(s)
            if changefeed:
                relay = _start_relay(s, the_projector.store.engine, relay_metrics)
            service = service_class(
                s, the_projector, metrics=metrics, open_store=store_opener(s)
            )
            tune_gc_for_streaming()
            signals.hand_over(service.request_stop)
            return int(service.run(reset_positions=reset_positions))
    finally:
        if relay is not None:
            relay.close()
        if metrics_server is not None:
            metrics_server.close()


def _start_relay(s: Any, engine: Any, metrics: Any) -> Any:
    from consumers.changefeed import ChangefeedRelay, relay_thread
    from ledger.sources.kafka import make_producer
    from ledger.sources.kafka_topics import changefeed_topic_specs, ensure_topics

    specs = changefeed_topic_specs(*changefeed_topics(s))
    ensure_topics(
        s.kafka.require_bootstrap(),
        specs,
        bootstrap_timeout_ms=s.kafka.bootstrap_timeout_ms,
        **s.kafka.client,
    )
    relay = ChangefeedRelay(
        engine,
        make_producer(s.kafka, idempotent=True),
        topic=specs[0].name,
        current_topic=specs[1].name,
        metrics=metrics,
    )
    relay.thread = relay_thread(relay)
    relay.thread.start()
    logging.getLogger("ledger.consume").info(
        "relaying decisions to %s and %s", specs[0].name, specs[1].name
    )
    return relay


def _metrics(
    s: Any, host: str, port: int | None, *, changefeed: bool = False
) -> tuple[Any, Any, Any]:
    """The projector's metrics hooks, the relay's (with `changefeed`, on the same
    registry) and their HTTP server, started, when --metrics-port asks for them."""
    if port is None:
        return None, None, None
    from consumers.metrics import ProjectorMetrics, RelayMetrics

    # Liveness allows a batch as long as the group itself allows one, and some.
    metrics = ProjectorMetrics(stale_after_s=s.consumer.max_poll_interval_ms / 1000 + 30)
    relay = RelayMetrics(metrics.registry) if changefeed else None
    http = _serve(metrics, host, port, "ledger.consume", also=(relay,) if relay else ())
    return metrics, relay, http


def _serve(metrics: Any, host: str, port: int, logger: str, *, also: tuple[Any, ...] = ()) -> Any:
    """The metrics endpoint of a service, started, its address logged."""
    from consumers.metrics import MetricsServer

    try:
        http = MetricsServer(metrics, host, port, also=also)
    except OSError as exc:
        raise LedgerError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    http.start()
    bound_host, bound_port = http.address
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    logging.getLogger(logger).info(
        "metrics on %s/metrics, liveness on /healthz, readiness on /readyz",
        url,
        extra={
            "metrics_url": f"{url}/metrics",
            "liveness_url": f"{url}/healthz",
            "readiness_url": f"{url}/readyz",
        },
    )
    return http


def changefeed(
    bootstrap: BootstrapOption = None,
    db: DbOption = None,
    topic: Annotated[
        str | None,
        typer.Option(
            "--topic",
            help="The topic every decision goes to (default: $LEDGER_CHANGES_TOPIC, else "
            "rulebook-changes).",
            show_default=False,
        ),
    ] = None,
    current_topic: Annotated[
        str | None,
        typer.Option(
            "--current-topic",
            help="The compacted topic each user's current decision goes to (default: "
            "$LEDGER_CURRENT_TOPIC, else rulebook-current).",
            show_default=False,
        ),
    ] = None,
    partitions: Annotated[
        int,
        typer.Option(
            "--partitions",
            min=1,
            max=10_000,
            help="Partitions of the two topics when this creates them (existing topics are "
            "left as they are).",
        ),
    ] = 6,
    page_size: Annotated[
        int,
        typer.Option(
            "--page-size",
            min=1,
            max=10_000,
            help="Most decisions sent per round; the position is stored after each round.",
        ),
    ] = 2000,
    until_caught_up: Annotated[
        bool,
        typer.Option(
            "--until-caught-up",
            help="Exit 0 once every decision recorded so far is published, instead of "
            "waiting for more.",
        ),
    ] = False,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = "127.0.0.1",
    log_format: LogFormatOption = "text",
) -> None:
    """Relay the ledger's decisions to Kafka: the changefeed.

    Every change of a user's believed history (a new assignment period, a correction by a
    late event) is recorded in the store's outbox by the same transaction as the history
    itself. This relay publishes the outbox in order: each decision to TOPIC and each
    user's current decision to CURRENT-TOPIC (compacted: a reader gets the table), key =
    user id, Avro single-object encoded (schemas/changefeed/). It stores how far it got
    once the broker acknowledged (acks=all, idempotent producer), so after a crash it
    sends at most the last unacknowledged round again: consumers deduplicate by
    decision_id. Both topics are created with explicit configs if missing.

    Failures (broker or database) are logged and retried with a growing wait; /healthz
    answers 503 meanwhile. SIGTERM/SIGINT finish the current round and exit 0.

    Example: `ledger changefeed --bootstrap localhost:9092 --metrics-port 9310`; to run
    it beside the projector instead: `ledger consume --changefeed`.
    """
    service_log = _service_log(log_format, "ledger.changefeed")
    with service_log.errors():
        code = _changefeed(
            settings(
                db_url=db,
                kafka_bootstrap=bootstrap,
                kafka_changes_topic=topic,
                kafka_current_topic=current_topic,
            ),
            partitions=partitions,
            page_size=page_size,
            until_caught_up=until_caught_up,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
        )
    raise typer.Exit(code)


def _changefeed(
    s: Any,
    *,
    partitions: int,
    page_size: int,
    until_caught_up: bool,
    metrics_host: str,
    metrics_port: int | None,
) -> int:
    from consumers.changefeed import ChangefeedRelay
    from consumers.metrics import RelayMetrics
    from ledger.sources.kafka import make_producer
    from ledger.sources.kafka_topics import changefeed_topic_specs, ensure_topics
    from ledger.store.database import open_engine

    server = s.kafka.require_bootstrap()
    topic, current_topic = changefeed_topics(s, "--topic", "--current-topic")
    log = logging.getLogger("ledger.changefeed")
    metrics = RelayMetrics()
    http = None
    if metrics_port is not None:
        http = _serve(metrics, metrics_host, metrics_port, "ledger.changefeed")
    try:
        with kafka_errors(server):
            specs = changefeed_topic_specs(topic, current_topic, partitions)
            ensure_topics(
                server, specs, bootstrap_timeout_ms=s.kafka.bootstrap_timeout_ms, **s.kafka.client
            )
            relay = ChangefeedRelay(
                open_engine(s.db_url),
                make_producer(s.kafka, idempotent=True),
                topic=topic,
                current_topic=current_topic,
                metrics=metrics,
                page_size=page_size,
            )
            signals.hand_over(lambda *_: relay.stop())
            log.info(
                "relaying decisions to %s and %s from seq %d",
                topic,
                current_topic,
                relay.stored_position(),
                extra={"topic": topic, "current_topic": current_topic},
            )
            started = time.monotonic()
            published = relay.run(until_caught_up=until_caught_up)
            took = time.monotonic() - started
            log.info(
                "published %d decision(s) (%d current) in %.1f s, up to seq %s",
                published,
                relay.current_published,
                took,
                relay.position,
                extra={
                    "published": published,
                    "current_published": relay.current_published,
                    "seconds": round(took, 3),
                    "position": relay.position,
                },
            )
            relay.producer.close(timeout=10)
            return 0
    finally:
        if http is not None:
            http.close()


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def changefeed_topics(
    s: Any, changes_flag: str | None = None, current_flag: str | None = None
) -> tuple[str, str]:
    """The changefeed's two topic names from the settings, checked: a name Kafka refuses
    is a usage error before anything starts, naming the flag or variable it came from."""
    given = (
        (s.kafka.changes_topic, _source(changes_flag, "LEDGER_CHANGES_TOPIC")),
        (s.kafka.current_topic, _source(current_flag, "LEDGER_CURRENT_TOPIC")),
    )
    for value, where in given:
        if not _TOPIC_NAME.fullmatch(value) or value in (".", ".."):
            raise UsageError(
                f"{where} {quote(value)} is not a Kafka topic name "
                "(1 to 249 of a-z A-Z 0-9 . _ -)"
            )
    if s.kafka.changes_topic == s.kafka.current_topic:
        raise UsageError(
            f"the changes and current topics must differ (both {quote(s.kafka.changes_topic)})"
        )
    return s.kafka.changes_topic, s.kafka.current_topic


def _source(flag: str | None, variable: str) -> str:
    return variable if flag is None else f"{flag} (or {variable})"
