"""The `ledger` command line, by command group; `ledger.cli.main` assembles it.

Kept light on purpose, free of typer and of rich until something is printed: the plugins
in `consumers/` and `infra/` import `ledger.cli.common`, which must not load the plugins
again while they are still being imported; and the console script must reach `main`
before the heavy imports. A plain `ledger history|current|explain` never makes them
(`ledger.cli.history.run_plain`): what those commands share with the others lives here,
and `ledger.cli.common` hands it on to every command.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from ledger.config import Settings, settings_from_env
from ledger.domain.time import parse_instant
from ledger.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# Commands that run until told to stop, and exit 0 when they are.
SERVICES = ("consume",)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] and args[0] in SERVICES:
        from ledger.cli import signals

        signals.hold()
    from ledger.cli.history import run_plain

    code = run_plain(args)
    if code is not None:
        sys.exit(code)
    from ledger.cli.main import app

    app()


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
# User ids, reasons, positions and error messages quote input that anyone upstream wrote.
# Printed to a terminal, an ESC sequence in it could clear the screen, retitle the window
# or forge output, and Rich markup in it (`[bold red]`, `[/]`) would be styled or raise
# MarkupError. So such text is printed as `plain(...)`: a Rich Text (never parsed as markup
# or emoji codes) with control characters spelled out. `--json` prints the exact text: JSON
# escapes control characters itself.

# C0 and C1 controls, DEL, line/paragraph separators, and the bidirectional overrides that
# can make text display in another order than it reads ("Trojan Source").
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _spelled(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """`text` with every control character spelled out as `\\x1b`, `\\u202e`, ... Backslashes
    are left as they are, so ordinary text (Windows paths) reads as typed; `--json` is the
    exact form where it matters."""
    return _CONTROL.sub(_spelled, text)


def plain(value: object) -> Text:
    """`value` as text for a Rich console or table cell: no markup, no control characters."""
    from rich.text import Text

    return Text(escape_control(str(value)))


def emit_json(obj: Any) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=2)
    # json escapes C0 controls but passes DEL, C1 controls (U+009B is CSI to some terminals)
    # and bidi overrides through; they can only occur inside strings, where a \uXXXX escape
    # leaves the JSON value exactly the same.
    sys.stdout.write(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")


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
