"""`ledger changes`: the changefeed without Kafka (docs/changefeed.md). It prints the records
`GET /v1/changes` answers with and the relay publishes, read from the store through
read-only sessions that never create or migrate it."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from ledger.cli.common import DbOption, JsonOption, settings
from ledger.domain.limits import quote
from ledger.errors import StoreUnavailable, UsageError
from ledger.queries.changes import MAX_PAGE, MAX_SEQ, Change, next_after, page

if TYPE_CHECKING:
    from ledger.store.readonly import SqlReader

__all__ = ["changes"]

# Records read per query when no --limit is given: the largest page there is, so a long
# feed costs as few round trips as it can.
PAGE = MAX_PAGE

_WHOLE = re.compile(r"[0-9]{1,19}")


def _whole(value: str, option: str, low: int, high: int, meaning: str) -> int:
    """A whole number given as text, from `low` to `high`; anything else (a sign, a space,
    digits of another script, an underscore) is a usage error of one line quoting it."""
    if _WHOLE.fullmatch(value) and low <= int(value) <= high:
        return int(value)
    raise UsageError(f"{option} {quote(value)}: expected {meaning} from {low} to {high:,}")


@contextmanager
def _feed(db: str | None) -> Iterator[SqlReader]:
    """The store to read the feed from: a read-only connection of the driver itself when
    the store is at the newest schema, else a read-only engine, which refuses a store that
    is not there, one at an older schema (it asks for `ledger db upgrade`) and a database
    that does not answer, each in one line."""
    from ledger.store.readonly import EngineReader, connect_at_head, open_at_head

    url = settings(db_url=db).db_url
    direct = connect_at_head(url)
    if direct is not None:
        try:
            yield direct
        finally:
            direct.close()
        return
    engine = open_at_head(url, pool_size=1)
    try:
        yield EngineReader(engine)
    finally:
        engine.dispose()


def _driver_errors() -> tuple[type[Exception], ...]:
    """The errors of the drivers a `DriverReader` may hold (psycopg's only if it is loaded:
    a connection of it is then)."""
    import sqlite3

    found: list[type[Exception]] = [sqlite3.Error]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        found.append(psycopg.Error)
    return tuple(found)


def _page(feed: SqlReader, after: int, limit: int) -> list[Change]:
    """One page; a database that fails meanwhile is one line, as for any read."""
    from ledger.store.errors import translated_errors

    try:
        with translated_errors(reading=True):
            return page(feed, after=after, limit=limit)
    except _driver_errors() as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise StoreUnavailable(f"the database failed: {reason}") from None


def _records(feed: SqlReader, after: int, limit: int | None) -> Iterator[Change]:
    """Up to `limit` records past `after` (one page), or every one (`limit` None): page
    after page until one comes back short, which is the feed's end as of that page."""
    if limit is not None:
        yield from _page(feed, after, limit)
        return
    while True:
        found = _page(feed, after, PAGE)
        yield from found
        if len(found) < PAGE:
            return
        after = next_after(found, after)


def changes(
    after: Annotated[
        str,
        typer.Option(
            "--after",
            metavar="SEQ",
            help="Print the records with a seq above SEQ: the last seq a previous call "
            "printed (0: from the start of the feed).",
        ),
    ] = "0",
    limit: Annotated[
        str | None,
        typer.Option(
            "--limit",
            metavar="N",
            help=f"Print at most N records (1 to {MAX_PAGE:,}), one page. Without it: every "
            "record past SEQ, read a page at a time.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the changefeed: every decision the ledger recorded (a new assignment period,
    or a correction by a late event), in seq order, one JSON object per line.

    Each record is the one `GET /v1/changes` answers with and `ledger changefeed` publishes
    to Kafka: seq, decision_id, user_id, kind (assigned or corrected), valid_from,
    valid_to, assignment, policy, policy_hash, rule, reason, terms, recorded_at, app_seq
    and announced. To follow the feed without Kafka, keep the last seq printed and ask
    again with --after SEQ; deduplicate by decision_id. --json prints one document
    instead, as GET /v1/changes answers: {"changes": [...], "next_after": SEQ}.

    Example: `ledger changes --limit 500` prints the first 500 records; if the last of
    them has seq 731, `ledger changes --after 731` prints every record since (with --json,
    that seq is next_after). Seqs increase but may skip numbers.

    Exit status: 0, also when there is nothing past SEQ (nothing printed); 1 on errors (no
    store, a database that does not answer); 2 on usage errors (a negative --after, a
    --limit of 0)."""
    start = _whole(after, "--after", 0, MAX_SEQ, "a seq, a whole number")
    most = None if limit is None else _whole(limit, "--limit", 1, MAX_PAGE, "a whole number")
    write = sys.stdout.write
    with _feed(db) as feed:
        if not as_json:
            for change in _records(feed, start, most):
                write(json.dumps(change.to_json()) + "\n")
            return
        # The document is written as it is read: the whole feed never sits in memory.
        last = start
        write('{"changes": [')
        for n, change in enumerate(_records(feed, start, most)):
            write((", " if n else "") + json.dumps(change.to_json()))
            last = change.seq
        write(f'], "next_after": {last}}}\n')
