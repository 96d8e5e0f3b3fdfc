"""The `ledger` command, assembled: the composition root, the only place that builds settings,
opens stores and hands them to the application and to the services.

The commands of the deployable parts outside the library (the projector service in
`consumers/`, the local broker in `infra/`) are plugins: each registers its command under
the entry-point group `jurisdiction_ledger.commands` (see pyproject.toml), so the library
never imports them and they join this command line when they are installed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main

from ledger.cli import admin, dead_letters, erase, generate, ingest
from ledger.cli import audit as audit_commands
from ledger.cli import changes as changes_commands
from ledger.cli import history as history_commands
from ledger.cli import impact as impact_commands
from ledger.cli import policy as policy_commands
from ledger.cli import schema as schema_commands
from ledger.cli import serve as serve_commands
from ledger.cli import subject as subject_commands
from ledger.cli.common import (
    LedgerGroup,
    command_group,
    typer_parameter,
    without_flag_placeholders,
)
from ledger.cli.options import READS, Command

if TYPE_CHECKING:
    # typer (0.29 on) vendors click: its groups are typed with the vendored Context.
    from typer._click.core import Context as ClickContext

PLUGIN_GROUP = "jurisdiction_ledger.commands"


@cache
def plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


class RootGroup(LedgerGroup):
    """The `ledger` group, whose plugin commands are loaded only when they are asked for (or
    listed by --help): `ledger history` neither scans the installed packages' entry points
    nor imports the broker, the benchmark or the consumer service."""

    def list_commands(self, ctx: ClickContext) -> list[str]:
        own = super().list_commands(ctx)
        return own + [name for name in plugins() if name not in own]

    def get_command(self, ctx: ClickContext, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in plugins():
            return command
        loaded = plugins()[cmd_name].load()
        if isinstance(loaded, typer.Typer):
            group = typer.main.get_group(loaded)
            group.name = cmd_name
            return group
        # As command_group: no shell completion of its own (the root offers it, for every
        # command), markdown help.
        single = typer.Typer(rich_markup_mode="markdown", add_completion=False)
        single.command(cmd_name)(loaded)
        return without_flag_placeholders(typer.main.get_command(single), ctx)


# --- the commands that ask the ledger --------------------------------------------------
# Their parameters are declared once, as data, in `ledger.cli.options`, where the console
# script's plain parser (`ledger.cli.history.run_plain`) finds them too; their code is in
# `ledger.cli.history`, free of typer. Here: their help, and typer's form of those
# declarations.


def declared_by(
    command: Command,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Gives a function that takes `**params` the parameters `command` declares, in typer's
    form (argument, then options, in order): typer reads them from its signature and calls
    it with every one of them, by name."""
    kind = inspect.Parameter.KEYWORD_ONLY
    signature = inspect.Signature(
        [
            inspect.Parameter(
                command.argument.param, kind, annotation=typer_parameter(command.argument)
            ),
            *(
                inspect.Parameter(
                    option.param, kind, default=option.default, annotation=typer_parameter(option)
                )
                for option in command.options
            ),
        ],
        return_annotation=None,
    )

    def declare(function: Callable[..., None]) -> Callable[..., None]:
        function.__signature__ = signature  # type: ignore[attr-defined]
        return function

    return declare


@declared_by(READS["current"])
def current(**params: Any) -> None:
    """Which rulebook governs USER at a time, since when, and why.

    Shows the assignment at a valid time (default now), the policy and rule that decided
    it, the rulebook's age rule, content focus and data residency, and the user's age
    status at that time. With --believed-at: as the ledger believed it then."""
    history_commands.current(**params)


@declared_by(READS["history"])
def history(**params: Any) -> None:
    """USER's assignment history: one row per period, with policy, rule and reason.

    Rows tile valid time from signup. --json adds the facts each rule read and the events
    they came from. --all adds the rows the ledger once believed and later superseded
    (superseded_at = when a later-arriving event replaced them); --believed-at shows the
    history as the ledger believed it at that record time."""
    history_commands.history(**params)


@declared_by(READS["explain"])
def explain(**params: Any) -> None:
    """A plain-language statement of which rulebook governs USER and why.

    Written for the user themself or an auditor: since when, the reason, the facts and
    events it rests on, what the rulebook means, and the age status."""
    history_commands.explain(**params)


app = command_group(
    "Jurisdiction ledger: which rulebook (Xiaohongshu domestic or Rednote international) "
    "governs each user, since when, and why.\n\n"
    "Typical session: `ledger generate --users 1000 -o events.jsonl`, then "
    "`ledger replay events.jsonl`, then `ledger history u-000042` and "
    "`ledger explain u-000042`. The database is sqlite:///ledger.db in the working "
    "directory unless --db or LEDGER_DB names another (e.g. "
    "postgresql+psycopg://user@host/db).\n\n"
    "Exit status: 0 success; 1 an error (one line on stderr); 2 a usage error; "
    "3 finished, but some input was dead-lettered.",
    cls=RootGroup,
    completion=True,
)
def _print_version(value: bool) -> None:
    if value:
        from ledger.cli import version_line
        from ledger.cli.common import out

        out.print(version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the package version and the event schema version it writes.",
        ),
    ] = False,
) -> None:
    pass


app.command()(generate.generate)
app.command()(ingest.replay)
app.command()(ingest.publish)
app.command()(ingest.export)
app.command()(current)
app.command()(history)
app.command()(explain)
app.command()(serve_commands.serve)
app.command()(serve_commands.timeline)
app.add_typer(admin.db_app, name="db")
app.add_typer(admin.topics_app, name="topics")
app.add_typer(dead_letters.dead_letters_app, name="dead-letters")
app.command()(impact_commands.impact)
app.add_typer(policy_commands.policy_app, name="policy")
app.command()(audit_commands.verify)
app.add_typer(audit_commands.digest_app, name="digest")
app.add_typer(audit_commands.decisions_app, name="decisions")
app.add_typer(subject_commands.subject_app, name="subject")
app.command()(erase.erase)
app.command()(changes_commands.changes)
app.add_typer(schema_commands.schema_app, name="schema")


def main() -> None:
    app()


__all__ = ["app", "main"]
