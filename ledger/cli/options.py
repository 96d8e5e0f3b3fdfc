"""The parameters of `ledger current|history|explain`, declared once, as data.

Both parsers of those commands are built from these declarations, so they cannot disagree
about an option's name, type, default or help:

- typer's: `ledger.cli.main` gives each of the three commands the parameters declared here
  (`ledger.cli.common.typer_parameter` turns a declaration into typer's `Annotated` form),
  and `ledger.cli.common` declares the `--db` and `--json` every other command shares from
  `DB` and `JSON`;
- the plain one: `ledger.cli.history.plain_call`, which runs a plain command line without
  loading typer (for start-up time), takes its flags and options from `READS`.

tests/e2e/test_cli_parsing.py holds what typer makes of them to what the plain parser does.
Free of typer, like `ledger.cli.history`: the console script imports this before it knows
whether it needs typer at all.
"""

from __future__ import annotations

from collections.abc import Mapping

# Plain classes, not dataclasses: a dataclass compiles its methods when it is defined, which
# here cost the console script about 3 ms of its start-up (measured), for nothing it needs.


class Argument:
    """A positional parameter: one word of text, required."""

    __slots__ = ("help", "param")

    def __init__(self, param: str, help: str) -> None:
        self.param, self.help = param, help

    def __repr__(self) -> str:
        return f"Argument({self.param!r})"


class Option:
    """`--name` on the command line, filling the parameter `param`.

    A flag (`type` bool) is True when given, without a value, and False when not. Any other
    option (`type` str) takes one value, `--name VALUE` or `--name=VALUE`, and is None when
    not given: the command then decides, and the help says how (typer shows no default).
    Nothing else (short names, `--x/--no-x` pairs, repetition, other types or defaults) is
    declared here: the plain parser would have to learn it first."""

    __slots__ = ("help", "name", "param", "type")

    def __init__(self, name: str, param: str, type: type[bool] | type[str], help: str) -> None:
        if not name.startswith("--") or "/" in name or "=" in name:
            raise ValueError(f"{name!r}: an option is one long name, --name")
        if type not in (bool, str):
            raise ValueError(f"{name}: an option is a flag (bool) or takes text (str)")
        self.name, self.param, self.type, self.help = name, param, type, help

    def __repr__(self) -> str:
        return f"Option({self.name!r})"

    @property
    def is_flag(self) -> bool:
        return self.type is bool

    @property
    def default(self) -> bool | None:
        return False if self.is_flag else None


class Command:
    """A command that asks the ledger: its one argument, then its options, in the order
    `--help` lists them."""

    __slots__ = ("argument", "name", "options")

    def __init__(self, name: str, argument: Argument, options: tuple[Option, ...]) -> None:
        self.name, self.argument, self.options = name, argument, options

    def __repr__(self) -> str:
        return f"Command({self.name!r})"

    def defaults(self) -> dict[str, bool | None]:
        """The value of every option not given."""
        return {option.param: option.default for option in self.options}


# --- shared with every command ----------------------------------------------------------

DB = Option(
    "--db",
    "db",
    str,
    "SQLAlchemy URL of the store, e.g. postgresql+psycopg://user@host/db "
    "(default: $LEDGER_DB, else sqlite:///ledger.db).",
)
JSON = Option("--json", "as_json", bool, "Print machine-readable JSON.")

# --- the commands that ask the ledger ---------------------------------------------------

USER = Argument("user", "User id, e.g. u-000042.")
AT = Option(
    "--at",
    "at",
    str,
    "Valid time to ask about: ISO 8601 (2026-04-01 or 2026-04-01T12:00:00+08:00). Default: now.",
)
BELIEVED_AT = Option(
    "--believed-at",
    "believed_at",
    str,
    "Answer with what the ledger believed at this record time (before later-arriving "
    "events corrected it). ISO 8601.",
)
ALL = Option("--all", "show_all", bool, "Include superseded rows (record-time history).")
RETAINED = Option(
    "--retained",
    "retained",
    bool,
    "For an erased user: the history skeleton kept for legal retention (valid and record "
    "times, assignment, policy, rule; LEDGER_RETAIN_ASSIGNMENTS=1 at the erasure), chosen "
    "with --all and --believed-at as history rows are. Changes nothing for other users.",
)

READS: Mapping[str, Command] = {
    command.name: command
    for command in (
        Command("current", USER, (AT, BELIEVED_AT, DB, JSON)),
        Command("history", USER, (ALL, BELIEVED_AT, RETAINED, DB, JSON)),
        Command("explain", USER, (AT, BELIEVED_AT, DB, JSON)),
    )
}
