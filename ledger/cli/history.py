"""Commands that ask the ledger: `current`, `history`, `explain`.

Plain functions, without typer. Their arguments and options are declared once, as data, in
`ledger.cli.options`: `ledger.cli.main` makes typer commands of those declarations, which
call these; the console script calls them straight from a plain command line (`run_plain`,
its table built from the same declarations), so `ledger history u-000042 --json` loads
neither typer (and the pydantic it validates parameters with) nor SQLAlchemy, and reads a
store already at the newest schema through the driver itself (`sqlite3`, psycopg). Anything
else on the command line goes to typer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ledger.cli import emit_json, escape_control, parse_time, plain, settings, stdout_console
from ledger.cli.options import READS
from ledger.domain.time import format_instant
from ledger.errors import EXIT_OK, LedgerError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ledger.store.readonly import DriverReader


@contextmanager
def _store(db: str | None) -> Iterator[Engine | DriverReader]:
    """The configured store, to read: a read-only connection of the driver when the store is
    at the newest schema (`connect_at_head`), else the engine of a command that reads
    (which migrates an older store, and refuses one that is not there rather than create
    an empty one)."""
    from ledger.store.readonly import connect_at_head

    url = settings(db_url=db).db_url
    direct = connect_at_head(url)
    if direct is None:
        from ledger.store.database import open_engine

        yield open_engine(url, create=False)
        return
    try:
        yield direct
    finally:
        direct.close()


# Called with every parameter `ledger.cli.options` declares for the command, by name: the
# defaults are declared there, not here.


@contextmanager
def _erased_answer(as_json: bool) -> Iterator[None]:
    """An erased user's answer, for every read: one line, "erased at T (request ID)", or
    its JSON; exit 0, since the ledger answered (docs/data-protection.md)."""
    from ledger.queries.history import ErasedUser

    try:
        yield
    except ErasedUser as erased:
        if as_json:
            emit_json(erased.to_json())
        else:
            sys.stdout.write(escape_control(str(erased)) + "\n")


def current(
    *, user: str, at: str | None, believed_at: str | None, db: str | None, as_json: bool
) -> None:
    with _erased_answer(as_json):
        _current(user=user, at=at, believed_at=believed_at, db=db, as_json=as_json)


def _current(
    *, user: str, at: str | None, believed_at: str | None, db: str | None, as_json: bool
) -> None:
    from ledger.queries.history import current as query_current

    when = parse_time(at, "--at") or datetime.now(UTC)
    believed = parse_time(believed_at, "--believed-at")
    with _store(db) as store:
        result = query_current(store, user, when, believed_at=believed)
    data = result.to_json()
    if as_json:
        emit_json(data)
        return
    from rich.table import Table

    # Every cell is plain(): user ids and stored values are data, never markup.
    t = Table(
        show_header=False, title=plain(f"{user} at {format_instant(when)}"), title_justify="left"
    )
    t.add_column(style="bold")
    t.add_column()
    if not result.recorded.on_record:
        text = result.recorded.no_record_text(user)
        t.add_row("assignment", plain(f"none: {text[0].lower()}{text[1:]}"))
    elif data["assignment"] is None:
        t.add_row("assignment", "none (not signed up at that time)")
    else:
        for key in ("assignment", "since", "until", "policy", "rule", "reason"):
            t.add_row(key, plain(data[key] if data[key] is not None else "open"))
        for key, value in (data["rulebook"] or {}).items():
            if key != "id":
                t.add_row(key.replace("_", " "), plain(value))
    t.add_row("age status", plain(data["age_status"]))
    stdout_console().print(t)


def history(
    *,
    user: str,
    show_all: bool,
    believed_at: str | None,
    retained: bool,
    db: str | None,
    as_json: bool,
) -> None:
    if retained and _retained(
        user=user, show_all=show_all, believed_at=believed_at, db=db, as_json=as_json
    ):
        return
    with _erased_answer(as_json):
        _history(user=user, show_all=show_all, believed_at=believed_at, db=db, as_json=as_json)


def _retained(
    *, user: str, show_all: bool, believed_at: str | None, db: str | None, as_json: bool
) -> bool:
    """`history --retained` of an erased user: the line every read of them answers, then
    what the erasure kept of their history, chosen as `history` chooses rows. False for a
    user who was not erased: their history is the answer, as without --retained."""
    from ledger.queries.history import NotErased, retained_history

    believed = parse_time(believed_at, "--believed-at")
    with _store(db) as store:
        try:
            answer = retained_history(
                store, user, include_superseded=show_all, believed_at=believed
            )
        except NotErased:
            return False
    if as_json:
        emit_json(answer.to_json())
        return True
    sys.stdout.write(escape_control(str(answer.erased)) + "\n")
    if not answer.rows:
        sys.stdout.write("nothing retained (the erasure ran without LEDGER_RETAIN_ASSIGNMENTS=1,"
                         " or no row matches)\n")
        return True
    from rich.table import Table

    t = Table(title=plain(f"retained history of {user}"), title_justify="left")
    for col in ("valid from", "valid to", "assignment", "policy", "rule", "recorded at",
                "superseded at"):
        t.add_column(col)
    for vf, vt, assignment, policy, rule, rec, sup in answer.rows:
        cells = [format_instant(vf), format_instant(vt) or "open", assignment, policy, rule,
                 format_instant(rec), format_instant(sup) or "—"]
        t.add_row(*[plain(c or "") for c in cells], style="dim" if sup else None)
    stdout_console().print(t)
    return True


def _history(
    *, user: str, show_all: bool, believed_at: str | None, db: str | None, as_json: bool
) -> None:
    from ledger.queries.history import history_answer

    believed = parse_time(believed_at, "--believed-at")
    with _store(db) as store:
        answer = history_answer(store, user, include_superseded=show_all, believed_at=believed)
    if as_json:
        emit_json(answer.to_json())
        return
    if not answer.recorded.on_record:
        # Not an empty table: the ledger had not heard of the user yet, which is no history.
        sys.stdout.write(escape_control(answer.recorded.no_record_text(user)) + ".\n")
        return
    rows = answer.rows
    from rich.table import Table

    t = Table(title=plain(f"history of {user}"), title_justify="left")
    for col in ("valid from", "valid to", "assignment", "policy", "rule", "recorded at"):
        t.add_column(col)
    if show_all:
        t.add_column("superseded at")
    for r in rows:
        cells = [
            format_instant(r.entry.valid_from),
            format_instant(r.entry.valid_to) or "open",
            r.entry.assignment,
            r.entry.policy,
            r.entry.rule,
            format_instant(r.recorded_at),
        ]
        if show_all:
            cells.append(format_instant(r.superseded_at) or "—")
        t.add_row(*[plain(c or "") for c in cells], style="dim" if r.superseded_at else None)
    stdout_console().print(t)


def explain(
    *, user: str, at: str | None, believed_at: str | None, db: str | None, as_json: bool
) -> None:
    with _erased_answer(as_json):
        _explain(user=user, at=at, believed_at=believed_at, db=db, as_json=as_json)


def _explain(
    *, user: str, at: str | None, believed_at: str | None, db: str | None, as_json: bool
) -> None:
    from ledger.queries.history import explain_json

    when = parse_time(at, "--at") or datetime.now(UTC)
    believed = parse_time(believed_at, "--believed-at")
    with _store(db) as store:
        doc = explain_json(store, user, when, believed_at=believed)
    if as_json:
        emit_json(doc)
    else:
        # prose: let the terminal wrap it
        sys.stdout.write(escape_control(doc["explanation"]) + "\n")


# --- a plain command line, without typer ------------------------------------------------


COMMANDS: Mapping[str, Callable[..., None]] = {
    "current": current,
    "history": history,
    "explain": explain,
}
# Each command's flags and options taking a value, by parameter: from the declarations
# typer's commands are made of (`ledger.cli.options`), never spelled out here.
FLAGS: Mapping[str, Mapping[str, str]] = {
    name: {option.name: option.param for option in command.options if option.is_flag}
    for name, command in READS.items()
}
VALUED: Mapping[str, Mapping[str, str]] = {
    name: {option.name: option.param for option in command.options if not option.is_flag}
    for name, command in READS.items()
}


def plain_call(args: Sequence[str]) -> tuple[Callable[..., None], dict[str, Any]] | None:
    """The command and the arguments given that `args` (the command line after `ledger`) asks
    for, if it is a plain call of a command above: one user id, and each of the command's
    options at most once (`--db URL` or `--db=URL`), none with a value that looks like an
    option. None for anything else, which typer then parses and answers as it always has:
    help, a misspelt, repeated or abbreviated option, `--`, a missing user."""
    if not args or args[0] not in COMMANDS:
        return None
    flags, valued = FLAGS[args[0]], VALUED[args[0]]
    argument = READS[args[0]].argument.param
    params: dict[str, Any] = {}
    rest = iter(args[1:])
    for arg in rest:
        if not arg.startswith("-"):
            if argument in params:
                return None
            params[argument] = arg
            continue
        option, has_value, value = arg.partition("=")
        given: str | bool | None
        if option in flags and not has_value:
            name, given = flags[option], True
        elif option in valued and has_value:
            name, given = valued[option], value
        elif option in valued:
            name, given = valued[option], next(rest, None)
            if given is None or given.startswith("-"):
                return None
        else:
            return None
        if name in params:
            return None
        params[name] = given
    if argument not in params:
        return None
    return COMMANDS[args[0]], params


def run_plain(args: Sequence[str]) -> int | None:
    """Runs a plain call (`plain_call`), the options not given at their declared defaults,
    and returns its exit status; None, having done nothing, for any other command line.
    Failures are reported by the handler every command has (`ledger.cli.common.failed`)."""
    call = plain_call(args)
    if call is None:
        return None
    command, given = call
    try:
        command(**(READS[args[0]].defaults() | given))
    except (LedgerError, OSError) as exc:
        # Only now typer and rich: the error line is printed as for any command.
        from ledger.cli.common import failed

        return failed(exc)
    return EXIT_OK
