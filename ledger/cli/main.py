"""The `ledger` command, assembled: the composition root, the only place that builds settings,
opens stores and hands them to the application and to the services.

The commands of the deployable parts outside the library (the projector service in
`consumers/`, the local broker in `infra/`) are plugins: each registers its command under
the entry-point group `jurisdiction_ledger.commands` (see pyproject.toml), so the library
never imports them and they join this command line when they are installed.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from ledger.cli import admin, dead_letters, generate, history, ingest
from ledger.cli.common import command_group

PLUGIN_GROUP = "jurisdiction_ledger.commands"

app = command_group(
    "Jurisdiction ledger: which rulebook (Xiaohongshu domestic or Rednote international) "
    "governs each user, since when, and why.\n\n"
    "Typical session: `ledger generate --users 1000 -o events.jsonl`, then "
    "`ledger replay events.jsonl`, then `ledger history u-000042` and "
    "`ledger explain u-000042`. The database is sqlite:///ledger.db in the working "
    "directory unless --db or LEDGER_DB names another (e.g. "
    "postgresql+psycopg://user@host/db).\n\n"
    "Exit status: 0 success; 1 an error (one line on stderr); 2 a usage error; "
    "3 finished, but some input was dead-lettered."
)
app.command()(generate.generate)
app.command()(ingest.replay)
app.command()(ingest.publish)
app.command()(ingest.export)
app.command()(history.current)
app.command()(history.history)
app.command()(history.explain)
app.add_typer(admin.db_app, name="db")
app.add_typer(admin.topics_app, name="topics")
app.add_typer(dead_letters.dead_letters_app, name="dead-letters")

for _plugin in entry_points(group=PLUGIN_GROUP):
    _command = _plugin.load()
    if isinstance(_command, typer.Typer):
        app.add_typer(_command, name=_plugin.name)
    else:
        app.command(_plugin.name)(_command)


def main() -> None:
    app()


__all__ = ["app", "main"]
