"""`ledger dead-letters list|show|export|retry|purge`: the operator's side of the
dead-letter table. Listing never shows raw input (it may contain personal data); only
`show` and `export` do, and say so."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ledger.cli.common import (
    DbOption,
    JsonOption,
    PoliciesOption,
    check_output,
    command_group,
    count_progress,
    emit_json,
    err,
    escape_control,
    out,
    parse_time,
    plain,
    projector,
    settings,
    warn_if_dev_phone_key,
    writing,
)
from ledger.domain.time import format_instant, truncate_ms
from ledger.errors import EXIT_DEAD_LETTERS, LedgerError, UsageError

__all__ = ["dead_letters_app"]

RAW_HEADER = "raw input (may contain personal data)"

dead_letters_app = command_group(
    "Inspect, repair and retire dead letters: input the ledger rejected, kept with its "
    "reason, source position and raw bytes.\n\n"
    "`list` shows what was rejected and why (never the raw input); `show ID` and `export` "
    "show the raw input, which may contain personal data; `retry` applies dead letters "
    "again once the cause is fixed (e.g. a missing policy version shipped); `purge` deletes "
    "old ones (retention).\n\n"
    "Exit status: 0 success; 1 an error (unknown id, database); 2 a usage error; 3 a retry "
    "left something dead-lettered."
)


@dead_letters_app.callback()
def _dead_letters_group() -> None:
    # A callback keeps `dead-letters` a command group.
    pass


ReasonOption = Annotated[
    str | None,
    typer.Option(
        "--reason",
        help="Only dead letters whose reason contains TEXT (any case).",
        show_default=False,
    ),
]
SourceOption = Annotated[
    str | None,
    typer.Option(
        "--source",
        help="Only dead letters whose source key starts with S: kafka:account-events, "
        "file:<sha256> (file: for every file), redrive: (left by retries).",
        show_default=False,
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since", help="Only dead letters recorded at or after T (ISO 8601).", show_default=False
    ),
]
BeforeFilterOption = Annotated[
    str | None,
    typer.Option(
        "--before", help="Only dead letters recorded before T (ISO 8601).", show_default=False
    ),
]
UnresolvedOption = Annotated[
    bool,
    typer.Option(
        "--unresolved/--all",
        help="Only dead letters no retry has settled yet (default), or all of them.",
    ),
]

_ID = re.compile(r"#?([0-9]{1,18})")


def _dead_letter_id(value: str) -> int:
    """An id as printed (`17` or `#17`); anything else is a usage error of one line."""
    match = _ID.fullmatch(value.strip())
    if match is None:
        raise UsageError(f"dead letter id {value!r} is not a whole number (e.g. 17)")
    return int(match.group(1))


def _engine(db: str | None, *, create: bool = False) -> Any:
    """The store's engine; only a command that writes (`create`) makes a missing store."""
    from ledger.store.database import open_engine

    return open_engine(settings(db_url=db).db_url, create=create)


def _selection(
    reason: str | None,
    source: str | None,
    since: str | None,
    before: str | None,
    unresolved: bool,
) -> Any:
    from ledger.store.dead_letters import Selection

    return Selection(
        reason=reason,
        source=source,
        since=parse_time(since, "--since"),
        before=parse_time(before, "--before"),
        unresolved=unresolved,
    )


@dead_letters_app.command("list")
def list_command(
    reason: ReasonOption = None,
    source: SourceOption = None,
    since: SinceOption = None,
    before: BeforeFilterOption = None,
    unresolved: UnresolvedOption = True,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most N, oldest first.")
    ] = 50,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List dead letters: id, record time, position, reason, size, event and user ids and
    resolution. Never shows the raw input (see `show`)."""
    from ledger.store import dead_letters as dl

    sel = _selection(reason, source, since, before, unresolved)
    engine = _engine(db)
    rows = dl.list_dead_letters(engine, sel, limit)
    total, _ = dl.count(engine, sel)
    if as_json:
        from ledger.queries.dead_letters import listed_json

        emit_json({"total": total, "dead_letters": [listed_json(r) for r in rows]})
        return
    what = "unresolved dead letters" if unresolved else "dead letters"
    if not rows:
        out.print(f"no {what}")
        return
    t = Table(title=f"{what}: {len(rows):,} of {total:,}", title_justify="left")
    for col in ("id", "recorded at", "position", "reason", "bytes", "event", "user"):
        t.add_column(col, overflow="fold")
    if not unresolved:
        t.add_column("resolution", overflow="fold")
    for r in rows:
        # Every value here may quote hostile input: plain() prints it as data.
        cells = [
            str(r.id),
            format_instant(r.recorded_at),
            r.position,
            r.reason,
            f"{r.raw_size:,}",
            r.event_id or "",
            r.user_id or "",
        ]
        if not unresolved:
            cells.append(r.resolution or "unresolved")
        t.add_row(*[plain(c) for c in cells])
    out.print(t)
    if total > len(rows):
        err.print(f"{total - len(rows):,} more: raise --limit or narrow the selection")


@dead_letters_app.command("show")
def show_command(
    # Named `id`: Typer shows the parameter name in the usage line.
    id: Annotated[str, typer.Argument(help="Dead letter id, e.g. 17.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one dead letter WITH ITS RAW INPUT, which may contain personal data (phone
    numbers, birth dates).

    Text is printed with control characters escaped (\\x1b), bytes that are not UTF-8 as
    \\xNN; --json gives the exact bytes as raw_base64 (and raw_text when they are UTF-8)."""
    from ledger.store import dead_letters as dl

    wanted = _dead_letter_id(id)
    row = dl.get(_engine(db), wanted)
    if row is None:
        raise LedgerError(f"no dead letter #{wanted}")
    if as_json:
        from ledger.queries.dead_letters import full_json

        emit_json(full_json(row))
        return
    raw = row.raw or b""
    t = Table(show_header=False, title=f"dead letter #{row.id}", title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    kept = "all kept" if not row.truncated else f"only the first {len(raw):,} kept"
    for key, value in (
        ("recorded at", format_instant(row.recorded_at)),
        ("source", row.source),
        ("position", row.position),
        ("reason", row.reason),
        ("event id", row.event_id or "—"),
        ("user id", row.user_id or "—"),
        ("size", f"{row.raw_size:,} bytes ({kept})"),
        (
            "resolution",
            f"{row.resolution} ({format_instant(row.resolved_at)})"
            if row.resolved_at
            else "unresolved",
        ),
    ):
        t.add_row(key, plain(value))
    out.print(t)
    out.print(RAW_HEADER, markup=False)
    # Raw bytes: written directly (up to megabytes; no need for Rich's layout), as text
    # with anything undecodable as \xNN and every control character spelled out.
    sys.stdout.write(escape_control(raw.decode("utf-8", "backslashreplace")) + "\n")


@dead_letters_app.command("export")
def export_command(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="File to write (.jsonl), created mode 0600.")
    ],
    reason: ReasonOption = None,
    source: SourceOption = None,
    since: SinceOption = None,
    before: BeforeFilterOption = None,
    unresolved: UnresolvedOption = True,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write dead letters WITH THEIR RAW INPUT (may contain personal data) to a JSON Lines
    file: one object per dead letter with every column, the raw bytes as raw_base64, and as
    raw_text when they are UTF-8 text."""
    from ledger.queries.dead_letters import full_json
    from ledger.store import dead_letters as dl

    if output.suffix != ".jsonl":
        raise UsageError(f"{output}: dead letters are exported as JSON Lines; name it *.jsonl")
    sel = _selection(reason, source, since, before, unresolved)
    check_output(output)
    engine = _engine(db)
    chosen = dl.ids(engine, sel)
    written = 0
    with writing(output):
        # Owner-only from the start: the file holds raw input, perhaps personal data.
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8", newline="\n") as fo:
            for row in dl.iter_with_raw(engine, chosen):
                # ASCII-only JSON: safe to `cat`, whatever bytes the raw input holds.
                fo.write(json.dumps(full_json(row)) + "\n")
                written += 1
    if as_json:
        emit_json({"path": str(output), "written": written})
    else:
        out.print(
            plain(f"wrote {written:,} dead letters with their raw input to {output}"),
            soft_wrap=True,
        )


@dead_letters_app.command("retry")
def retry_command(
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="Dead letters to retry (default: every unresolved one, or those --reason names).",
            show_default=False,
        ),
    ] = None,
    reason: ReasonOption = None,
    policies: PoliciesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply dead letters again once the cause is fixed (a missing policy version shipped,
    say), through the same path as a replay.

    The raw input is decoded again (a JSON line, or an Avro message from Kafka) and applied
    as a retry run of its own (source redrive:<uuid>); the event keeps the dead letter's
    original position. Each dead letter is then resolved as "applied", "duplicate" or
    "dead-lettered again as #N". One whose raw input was cut to the size limit cannot be
    retried and stays unresolved. Record time is the time of the retry.

    Exit status: 0; 3 when something is still dead-lettered afterwards; 1 on errors
    (unknown id); 2 on usage errors."""
    from ledger.app.ingest.retry import retry_dead_letters
    from ledger.store import dead_letters as dl

    if ids and reason is not None:
        raise UsageError("give dead letter ids, or --reason, not both")
    wanted = list(dict.fromkeys(_dead_letter_id(v) for v in ids or ()))
    s = settings(db_url=db)
    wired = projector(s, policies)
    engine = wired.store.engine
    if wanted:
        known = set(dl.ids(engine, dl.Selection(unresolved=False, ids=wanted)))
        missing = [i for i in wanted if i not in known]
        if missing:
            raise LedgerError(f"no dead letter #{missing[0]}")
        chosen = wanted
    else:
        chosen = dl.ids(engine, dl.Selection(reason=reason))
    if chosen:
        warn_if_dev_phone_key(s)  # about to store phone hashes
    shown, advance = count_progress(len(chosen), "retry")
    with shown:
        summary = retry_dead_letters(
            wired,
            dl.iter_with_raw(engine, chosen),
            dl.SqlDeadLetters(engine),
            now=truncate_ms(datetime.now(UTC)),
            progress=advance,
        )
    if as_json:
        emit_json(summary.to_json())
    else:
        _render_retry(summary)
    if summary.still_dead:
        raise typer.Exit(EXIT_DEAD_LETTERS)


def _render_retry(summary: Any) -> None:
    if not summary.outcomes:
        out.print("nothing to retry: no unresolved dead letters match")
        return
    t = Table(title=f"retry {summary.run}", title_justify="left")
    for col in ("id", "position", "outcome", "reason"):
        t.add_column(col, overflow="fold")
    for o in summary.outcomes:
        t.add_row(
            plain(o.dead_letter_id), plain(o.position), plain(o.detail), plain(o.reason or "")
        )
    out.print(t)
    counts = summary.to_json()
    out.print(
        f"{counts['applied']:,} applied, {counts['duplicates']:,} duplicates, "
        f"{counts['dead_lettered_again']:,} dead-lettered again, "
        f"{counts['not_retryable']:,} not retryable, "
        f"{counts['already_resolved']:,} already resolved",
        markup=False,
    )
    if summary.still_dead:
        err.print(
            f"{summary.still_dead:,} still dead-lettered: see `ledger dead-letters list`",
            markup=False,
        )


@dead_letters_app.command("purge")
def purge_command(
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Delete dead letters recorded before T (ISO 8601; 2026-01-01 means 00:00 UTC).",
            show_default=False,
        ),
    ],
    yes: Annotated[
        bool, typer.Option("--yes", help="Delete them; without it, only say what would go.")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete dead letters recorded before T, resolved or not (retention: their raw input
    may contain personal data).

    Without --yes nothing is deleted: it prints how many would be (a dry run). Export them
    first if they are to be kept (`export --all --before T -o FILE.jsonl`)."""
    from ledger.store import dead_letters as dl

    cutoff = parse_time(before, "--before")
    assert cutoff is not None
    engine = _engine(db, create=True)
    matched, unresolved = dl.count(engine, dl.Selection(before=cutoff, unresolved=False))
    deleted = dl.purge(engine, cutoff) if yes else 0
    if as_json:
        emit_json(
            {
                "before": format_instant(cutoff),
                "matched": matched,
                "unresolved": unresolved,
                "deleted": deleted,
                "dry_run": not yes,
            }
        )
        return
    when = format_instant(cutoff)
    if yes:
        out.print(f"deleted {deleted:,} dead letters recorded before {when}", markup=False)
    else:
        out.print(
            f"would delete {matched:,} dead letters recorded before {when} "
            f"({unresolved:,} of them unresolved); nothing deleted: run again with --yes",
            markup=False,
        )
