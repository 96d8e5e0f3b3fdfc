"""`ledger erase USER`: an erasure request answered (docs/data-protection.md).

The command makes one `AccountErased` event and either applies it through the
projector's one path, as a replay of one event recorded now, or, with --bootstrap,
produces it to the event topic (key = user_id, as `ledger publish`) for the projector
to apply. Either way the erasure is an event like any other: a replay of the log erases
the user again at the same point.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ledger.cli.common import (
    BootstrapOption,
    DbOption,
    JsonOption,
    TopicOption,
    emit_json,
    kafka_errors,
    settings,
)
from ledger.domain.events import Event, EventError, build_event
from ledger.domain.limits import quote
from ledger.domain.time import format_instant, truncate_ms
from ledger.errors import LedgerError, UsageError
from ledger.render.text import escape_control

# The source an erasure applied by this command is recorded under: its position counts
# the erasures applied so, and keeps each one's offset distinct (a stored position below
# an offset would skip it as applied already).
ERASE_SOURCE = "cli:erase"
APPLY_TRIES = 3


def erase(
    user: Annotated[str, typer.Argument(help="The user id to erase.", show_default=False)],
    request_id: Annotated[
        str,
        typer.Option(
            "--request-id",
            help="The erasure request's reference (up to 100 characters), kept with the "
            "erasure so that it can be matched to the request.",
            show_default=False,
        ),
    ],
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            help="A note (up to 500 characters): checked, sent with the event, never stored.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Do not ask for confirmation (required when standard input is not a terminal).",
        ),
    ] = False,
    bootstrap: BootstrapOption = None,
    topic: TopicOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Erase USER's personal data for good (docs/data-protection.md).

    Applies one AccountErased event, recorded now, to the store through the projector's
    one path; with --bootstrap, produces it to the event topic instead (key = user_id),
    for the projector to apply. Asks for confirmation on a terminal unless --yes. Prints
    what was deleted and kept. An already erased user is reported and nothing changes.
    Exit status: 0 erased, or erased already, or sent; 1 an unknown user (not in the
    store: send the erasure with --bootstrap if its events are still on their way),
    confirmation declined, or another error; 2 on usage errors.
    """
    if bootstrap is not None and db is not None:
        raise UsageError("give --bootstrap (send to the topic) or --db (apply), not both")
    if topic is not None and bootstrap is None:
        raise UsageError("--topic names the topic --bootstrap sends to: give --bootstrap too")
    now = truncate_ms(datetime.now(UTC))
    event = _erasure_event(user, request_id, reason, now)
    if not yes:
        if not interactive():
            raise UsageError(
                "erase deletes the user's personal data for good: give --yes when standard "
                "input is not a terminal"
            )
        where = "send the erasure of" if bootstrap is not None else "erase"
        if not typer.confirm(
            f"{where} {quote(user)} (request {quote(request_id)})? This cannot be undone",
            default=False,
            err=True,
        ):
            raise LedgerError("not confirmed: nothing erased")
    if bootstrap is not None:
        _send(event, bootstrap, topic, as_json)
    else:
        _apply(event, now, db, as_json)


def interactive() -> bool:
    """Whether there is someone at a terminal to ask."""
    return sys.stdin.isatty()


def _erasure_event(user: str, request_id: str, reason: str | None, now: datetime) -> Event:
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "occurred_at": format_instant(now),
        "type": "AccountErased",
        "request_id": request_id,
    }
    if reason is not None:
        fields["reason"] = reason
    try:
        event = build_event(fields)
    except EventError as exc:
        # The event's own checks, named as the command line names the fields.
        text = str(exc)
        for field, name in _NAMES.items():
            text = text.replace(f"field {field!r}", name)
        raise UsageError(text) from None
    # The event would carry control characters (a JSON producer may send them); the
    # operator's reference, kept and printed with every answer about the user, may not.
    if any(not c.isprintable() for c in request_id):
        raise UsageError(f"--request-id contains control characters: {quote(request_id)}")
    return event


_NAMES = {"user_id": "USER", "request_id": "--request-id", "reason": "--reason"}


def _send(event: Event, bootstrap: str, topic: str | None, as_json: bool) -> None:
    from ledger.codecs.avro import AvroCodec
    from ledger.sources.kafka import make_producer

    s = settings(kafka_bootstrap=bootstrap, kafka_topic=topic)
    server = s.kafka.require_bootstrap()
    with kafka_errors(server):
        producer = make_producer(s.kafka)
        try:
            future = producer.send(
                s.kafka.topic, key=event.user_id.encode(), value=AvroCodec().encode(event)
            )
            producer.flush()
            meta = future.get(timeout=60)
        finally:
            producer.close(timeout=30)
    answer = {
        "user_id": event.user_id,
        "request_id": _request_id(event),
        "event_id": event.event_id,
        "topic": s.kafka.topic,
        "partition": meta.partition,
        "offset": meta.offset,
    }
    if as_json:
        emit_json(answer)
    else:
        line = (
            f"sent the erasure of {event.user_id} (request {_request_id(event)}) to "
            f"{s.kafka.topic}[{meta.partition}]@{meta.offset}; the projector applies it"
        )
        sys.stdout.write(escape_control(line) + "\n")


def _request_id(event: Event) -> str:
    return getattr(event.payload, "request_id", "")


def _apply(event: Event, now: datetime, db: str | None, as_json: bool) -> None:
    from ledger.app.ingest.projector import Projector
    from ledger.cli.common import policy_set
    from ledger.queries.erasure import erasure_report, erasure_state
    from ledger.sources.records import SourceRecord
    from ledger.store.database import open_engine
    from ledger.store.sql import SqlStore

    s = settings(db_url=db)
    rules = policy_set(None)
    # Not created: a mistyped path has nobody to erase (migrated, as every writer does).
    engine = open_engine(s.db_url, create=False)
    store = SqlStore(
        engine,
        dead_letter_raw_bytes=s.limits.dead_letter_raw_bytes,
        retain_assignments=s.retain_assignments,
    )
    wired = Projector(store, rules, s.phone_key)
    try:
        before = erasure_state(engine, event.user_id)
        if before.erasure is None:
            if not before.events:
                raise LedgerError(
                    f"unknown user {quote(event.user_id[:60])}: no events for this user in "
                    "the ledger, nothing erased (if its events are still on their way, send "
                    "the erasure to the topic with --bootstrap)"
                )
            for _ in range(APPLY_TRIES):
                offset = wired.store.stored_positions(ERASE_SOURCE).get(0, 0)
                record = SourceRecord(
                    ERASE_SOURCE, 0, offset, f"ledger erase {event.user_id}", b"", (event, now)
                )
                result = wired.apply_batch([record], now)
                if not result.already_applied:
                    break  # else another `ledger erase` took the offset: the next one
            if result.dead_letters:
                raise LedgerError(f"not erased: {result.dead_letters[0].reason}")
        after = erasure_state(engine, event.user_id)
    finally:
        engine.dispose()
    if after.erasure is None:
        raise LedgerError(f"{event.user_id}: the erasure was not recorded; try again")
    report = erasure_report(after, already=before.erasure is not None)
    if as_json:
        emit_json(report)
    else:
        sys.stdout.write(escape_control(report_line(report)) + "\n")


def report_line(report: dict[str, Any]) -> str:
    erased = f"{report['user_id']} erased at {report['erased_at']} (request {report['request_id']})"
    if report["already_erased"]:
        return f"{erased}: erased already, nothing changed"
    d, k = report["deleted"], report["kept"]
    retained = (
        f", the history skeleton of {k['history_rows']} rows (LEDGER_RETAIN_ASSIGNMENTS=1)"
        if k["history_rows"]
        else ""
    )
    return (
        f"{erased}: deleted the personal fields of {d['events']:,} events, "
        f"{d['history_rows']:,} history rows, {d['dead_letters']:,} dead letters and the "
        f"user's changefeed rows; kept the account id, {k['event_links']:,} event links"
        f"{retained} and the erasure"
    )
