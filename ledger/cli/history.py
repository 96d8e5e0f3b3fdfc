"""Commands that ask the ledger: `current`, `history`, `explain`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from ledger.cli.common import (
    DbOption,
    JsonOption,
    emit_json,
    escape_control,
    out,
    parse_time,
    plain,
    settings,
)
from ledger.domain.time import format_instant

UserArgument = Annotated[str, typer.Argument(help="User id, e.g. u-000042.")]
AtOption = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="Valid time to ask about: ISO 8601 (2026-04-01 or 2026-04-01T12:00:00+08:00). "
        "Default: now.",
        show_default=False,
    ),
]
BelievedOption = Annotated[
    str | None,
    typer.Option(
        "--believed-at",
        help="Answer with what the ledger believed at this record time (before later-arriving "
        "events corrected it). ISO 8601.",
        show_default=False,
    ),
]


def _engine(db: str | None):  # type: ignore[no-untyped-def]
    from ledger.store.database import open_engine

    return open_engine(settings(db_url=db).db_url)


def current(
    user: UserArgument,
    at: AtOption = None,
    believed_at: BelievedOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which rulebook governs USER at a time, since when, and why.

    Shows the assignment at a valid time (default now), the policy and rule that decided
    it, the rulebook's age rule, content focus and data residency, and the user's age
    status at that time. With --believed-at: as the ledger believed it then."""
    from ledger.queries.history import current as query_current

    when = parse_time(at, "--at") or datetime.now(UTC)
    believed = parse_time(believed_at, "--believed-at")
    result = query_current(_engine(db), user, when, believed_at=believed)
    data = result.as_json()
    if as_json:
        emit_json(data)
        return
    # Every cell is plain(): user ids and stored values are data, never markup.
    t = Table(
        show_header=False, title=plain(f"{user} at {format_instant(when)}"), title_justify="left"
    )
    t.add_column(style="bold")
    t.add_column()
    if data["assignment"] is None:
        t.add_row("assignment", "none (not signed up at that time)")
    else:
        for key in ("assignment", "since", "until", "policy", "rule", "reason"):
            t.add_row(key, plain(data[key] if data[key] is not None else "open"))
        for key, value in (data["rulebook"] or {}).items():
            if key != "id":
                t.add_row(key.replace("_", " "), plain(value))
    t.add_row("age status", plain(data["age_status"]))
    out.print(t)


def history(
    user: UserArgument,
    show_all: Annotated[
        bool, typer.Option("--all", help="Include superseded rows (record-time history).")
    ] = False,
    believed_at: BelievedOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """USER's assignment history: one row per period, with policy, rule and reason.

    Rows tile valid time from signup. --json adds the facts each rule read and the events
    they came from. --all adds the rows the ledger once believed and later superseded
    (superseded_at = when a later-arriving event replaced them); --believed-at shows the
    history as the ledger believed it at that record time."""
    from ledger.queries.history import history as query_history
    from ledger.queries.history import row_json

    believed = parse_time(believed_at, "--believed-at")
    rows = query_history(_engine(db), user, include_superseded=show_all, believed_at=believed)
    if as_json:
        emit_json({"user_id": user, "entries": [row_json(r) for r in rows]})
        return
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
    out.print(t)


def explain(
    user: UserArgument,
    at: AtOption = None,
    believed_at: BelievedOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """A plain-language statement of which rulebook governs USER and why.

    Written for the user themself or an auditor: since when, the reason, the facts and
    events it rests on, what the rulebook means, and the age status."""
    from ledger.queries.history import explain as query_explain

    when = parse_time(at, "--at") or datetime.now(UTC)
    believed = parse_time(believed_at, "--believed-at")
    text = query_explain(_engine(db), user, when, believed_at=believed)
    if as_json:
        emit_json({"user_id": user, "at": format_instant(when), "explanation": text})
    else:
        sys.stdout.write(escape_control(text) + "\n")  # prose: let the terminal wrap it
