"""The `ledger` command line, by command group; `ledger.cli.main` assembles it.

Kept light on purpose, free of typer and of rich until something is printed: the plugins
in `consumers/` and `infra/` import `ledger.cli.common`, which must not load the plugins
again while they are still being imported; and the console script must reach `main`
before the heavy imports. A plain `ledger history|current|explain` never makes them
(`ledger.cli.history.run_plain`, whose options are typer's, declared once in the typer-free
`ledger.cli.options`): what those commands share with the others lives here, and
`ledger.cli.common` hands it on to every command.
"""

from __future__ import annotations

import sys

# Commands that run until told to stop, and exit 0 when they are.
SERVICES = ("consume", "changefeed")

if sys.argv[1:2] and sys.argv[1] in SERVICES and sys.argv[0].endswith("ledger"):
    # Before anything else is imported (a tenth of a second on a busy machine): a service
    # asked to stop while it is still starting exits 0 like one asked later.
    from ledger.cli import signals

    signals.hold()

from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from ledger.config import Settings, settings_from_env
from ledger.domain.time import parse_instant
from ledger.errors import UsageError
from ledger.render.text import escape_control as escape_control
from ledger.render.text import json_text

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


def main() -> None:
    """The console script `ledger` (pyproject.toml): a plain read without typer, anything
    else through typer. Also `console_main`: once the submodule `ledger.cli.main` is
    imported, the package's `main` is that module, no longer this function."""
    args = sys.argv[1:]
    if args == ["--version"]:
        print(version_line())
        sys.exit(0)
    if args[:1] and args[0] in SERVICES:
        from ledger.cli import signals

        signals.hold()
    from ledger.cli.history import run_plain

    code = run_plain(args)
    if code is not None:
        sys.exit(code)
    from ledger.cli.main import app

    app()


console_main = main


def version_line() -> str:
    """`ledger --version`: the package's version and the event schema version it writes."""
    from importlib.metadata import PackageNotFoundError, version

    from ledger.codecs.releases import SCHEMA_VERSION

    try:
        package = version("jurisdiction-ledger")
    except PackageNotFoundError:  # run from a checkout that was never installed
        package = "(not installed)"
    return (
        f"jurisdiction-ledger {package} (writes event schema version {SCHEMA_VERSION}; "
        f"reads versions 1 to {SCHEMA_VERSION})"
    )


# --- consoles ----------------------------------------------------------------------------


@cache
def stdout_console() -> Console:
    from rich.console import Console

    # Piped output is read by people too (CI logs, `| less`): do not squeeze tables to 80
    # columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


@cache
def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


# --- printing what users and input supplied ----------------------------------------------
# Such text is printed as `plain(...)`: a Rich Text (never parsed as markup or emoji codes,
# so `[bold red]` in a user id is not styled and cannot raise MarkupError) with control
# characters spelled out (`ledger.render.text`). `--json` prints the exact text: JSON
# escapes control characters itself.


def plain(value: object) -> Text:
    """`value` as text for a Rich console or table cell: no markup, no control characters."""
    from rich.text import Text

    return Text(escape_control(str(value)))


def emit_json(obj: Any) -> None:
    sys.stdout.write(json_text(obj) + "\n")


# --- settings and values -----------------------------------------------------------------


def settings(**flags: Any) -> Settings:
    """The settings of one command: the environment, then the flags given (None = not
    given). Flags for Kafka are named `kafka_<field>`, see `Settings.with_overrides`."""
    return settings_from_env().with_overrides(**flags)


def parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value, date_means_midnight_utc=True)
    except ValueError as exc:
        raise UsageError(f"{option} {value!r}: {exc}") from None
