"""The `ledger` command line."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from sqlalchemy import Engine

from infra.cli import broker_app, topics_app
from ledger.policy import PolicyError, PolicySet
from ledger.policy_files import load_policies
from ledger.queries import UnknownUser
from ledger.store.database import StoreError, open_engine
from ledger.timeutil import format_instant, parse_instant

EXIT_ERROR = 1
EXIT_DEAD_LETTERS = 3
DEV_PHONE_KEY = b"jurisdiction-ledger-development-key"

app = typer.Typer(
    help=(
        "Jurisdiction ledger: which rulebook (Xiaohongshu domestic or Rednote international) "
        "governs each user, since when, and why.\n\n"
        "Typical session: `ledger generate --users 1000 -o events.jsonl`, then "
        "`ledger replay events.jsonl`, then `ledger history u-000042` and "
        "`ledger explain u-000042`. The database is sqlite:///ledger.db in the working "
        "directory unless --db or LEDGER_DB names another (e.g. "
        "postgresql+psycopg://user@host/db)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")

# Piped output is read by people too (CI logs, `| less`): do not squeeze tables to 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="LEDGER_DB",
        help="SQLAlchemy URL of the store (default sqlite:///ledger.db; env LEDGER_DB).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
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


def tune_gc_for_streaming() -> None:
    """Long replays keep many small long-lived objects (cached users); CPython's default
    gen-0 threshold of 700 makes the collector rescan them constantly (measured: replay
    30% slower). Nothing in the ledger relies on prompt cyclic collection."""
    gc.set_threshold(200_000, 50, 1000)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"ledger: error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known failures become one line on stderr and a non-zero exit, never a traceback."""
    try:
        yield
    except (StoreError, UnknownUser, OSError) as exc:
        fail(str(exc).strip("'\""))
    except PolicyError as exc:
        fail("invalid policy files:\n  " + "\n  ".join(exc.problems))


def phone_key() -> bytes:
    key = os.environ.get("LEDGER_PHONE_KEY")
    return key.encode() if key else DEV_PHONE_KEY


def engine_for(db: str | None) -> Engine:
    return open_engine(db)


def policies() -> PolicySet:
    return load_policies()


def parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value, date_means_midnight_utc=True)
    except ValueError as exc:
        fail(f"{option} {value!r}: {exc}")


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


# --- generate ------------------------------------------------------------------------------


@app.command()
def generate(
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write: .jsonl or .avro.")],
    users: Annotated[int, typer.Option("--users", min=1, help="How many users.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Write a realistic, deterministic synthetic event stream.

    Sign-ups spread over 2024-2026 (so every terms version binds), phones from mainland
    China, HK, MO, TW, US, CA, GB, DE, SG and JP with a few invalid numbers, phone changes,
    relocations of every evidence kind, terms acceptances, some duplicates and some events
    delivered late.
    """
    from ledger.generate import generate_events, write_events

    if output.suffix not in (".jsonl", ".avro"):
        fail(f"{output}: unknown file type {output.suffix!r} (use .jsonl or .avro)")
    with user_errors():
        count = write_events(output, generate_events(users, seed))
    if as_json:
        emit_json({"path": str(output), "users": users, "seed": seed, "events": count})
    else:
        out.print(f"wrote {count:,} events for {users:,} users to {output}")


# --- replay --------------------------------------------------------------------------------


def _progress_hook(
    paths: list[Path],
) -> tuple[AbstractContextManager[Any], Callable[..., None] | None]:
    """A progress bar over the files' bytes on a terminal; nothing when piped."""
    if not err.is_terminal:
        return nullcontext(), None
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[events]:,} events"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    tasks = {p: progress.add_task(p.name, total=p.stat().st_size, events=0) for p in paths}

    def hook(path: Path, done: int, n: int) -> None:
        task = tasks[path]
        events = progress.tasks[task].fields["events"] + n
        progress.update(task, completed=done, events=events)

    return progress, hook


def render_summary(summary: Any, title: str) -> None:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("events applied", f"{summary.applied:,}")
    t.add_row("duplicates (ignored)", f"{summary.duplicates:,}")
    t.add_row("dead-lettered", f"{summary.dead_lettered:,}")
    if summary.already_applied:
        t.add_row("already applied earlier (skipped)", f"{summary.already_applied:,}")
    t.add_row("users in the ledger", f"{summary.users:,}")
    for assignment, n in sorted(summary.assignments.items()):
        t.add_row(f"  {assignment}", f"{n:,}")
    t.add_row("time", f"{summary.seconds:.1f} s")
    t.add_row("throughput", f"{summary.events_per_second:,.0f} events/s")
    out.print(t)
    if summary.dead_letter_samples:
        err.print("dead letters (first ones):", markup=False)
        for line in summary.dead_letter_samples:
            err.print(f"  {line}", markup=False, soft_wrap=True)


BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        envvar="LEDGER_BOOTSTRAP",
        help="Kafka bootstrap servers, host:port[,host:port] (env LEDGER_BOOTSTRAP). "
        "SASL/TLS settings come from LEDGER_KAFKA_* variables (see README).",
        show_default=False,
    ),
]
TopicOption = Annotated[str, typer.Option("--topic", help="The event topic.")]


def kafka_settings() -> dict[str, Any]:
    from infra.topics import client_settings_from_env

    try:
        return client_settings_from_env()
    except ValueError as exc:
        fail(str(exc))


def need_bootstrap(bootstrap: str | None) -> str:
    if not bootstrap:
        fail("no Kafka bootstrap servers: pass --bootstrap HOST:PORT or set LEDGER_BOOTSTRAP")
    return bootstrap


@contextmanager
def kafka_errors(bootstrap: str) -> Iterator[None]:
    from kafka.errors import KafkaError

    from ledger.sources.kafka import KafkaSourceError

    try:
        yield
    except KafkaError as exc:
        if "Unable to bootstrap" in str(exc):
            fail(f"cannot reach Kafka at {bootstrap} (no broker answered)")
        fail(f"Kafka at {bootstrap}: {exc}")
    except KafkaSourceError as exc:
        fail(f"Kafka at {bootstrap}: {exc}")


def parse_offsets(value: str) -> dict[int, int]:
    """`0:120,3:7` -> {0: 120, 3: 7}."""
    out: dict[int, int] = {}
    for part in value.split(","):
        p, sep, o = part.strip().partition(":")
        if not sep or not p.isdigit() or not o.isdigit():
            fail(f"--from-offset {value!r}: expected PARTITION:OFFSET[,PARTITION:OFFSET...]")
        out[int(p)] = int(o)
    return out


def _count_progress(
    total: int | None, label: str
) -> tuple[AbstractContextManager[Any], Callable[[int], None]]:
    """A running event count on a terminal; nothing when piped."""
    if not err.is_terminal:
        return nullcontext(), lambda n: None
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        TextColumn("{task.completed:,} events"),
        TimeRemainingColumn(),
        console=err,
    )
    task = progress.add_task(label, total=total)
    return progress, lambda n: progress.advance(task, n)


@app.command()
def replay(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Event files (.jsonl or .avro), applied in order.", show_default=False),
    ] = None,
    db: DbOption = None,
    from_kafka: Annotated[
        bool, typer.Option("--from-kafka", help="Replay the topic instead of files.")
    ] = False,
    bootstrap: BootstrapOption = None,
    topic: TopicOption = "account-events",
    from_beginning: Annotated[
        bool,
        typer.Option("--from-beginning", help="Start at the beginning of every partition."),
    ] = False,
    from_offset: Annotated[
        str | None,
        typer.Option(
            "--from-offset",
            help="Start offsets, PARTITION:OFFSET[,...]; other partitions from the beginning.",
            show_default=False,
        ),
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(
            "--from-time",
            help="Start at the first record with a timestamp at or after TIME (ISO 8601).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Events per database transaction.")
    ] = 5000,
    as_json: JsonOption = False,
) -> None:
    """Apply event files, or a Kafka topic, to the ledger.

    Files: already applied events are skipped (each file's stored position, and event
    ids), so a second replay of the same file applies nothing.

    --from-kafka: rebuilds (fresh database) or continues a projection from the topic and
    stops when caught up with the high watermark seen at start. Without --from-* it
    continues from the stored positions, which it shares with `ledger consume`.

    Bad lines or records are dead-lettered with their reason and position and the replay
    goes on. Exit status: 0, or 3 when anything was dead-lettered (1 on errors).
    """
    from ledger.projector import Projector
    from ledger.replay import replay_files, replay_topic
    from ledger.sources.files import SourceError, check_path
    from ledger.sources.kafka import StartAt, make_consumer

    if from_kafka == bool(files):
        fail("give event files, or --from-kafka, not both (and not neither)")
    if not from_kafka and (from_beginning or from_offset or from_time):
        fail("--from-beginning/--from-offset/--from-time need --from-kafka")
    if sum(map(bool, (from_beginning, from_offset, from_time))) > 1:
        fail("use only one of --from-beginning, --from-offset, --from-time")
    with user_errors():
        if not from_kafka:
            assert files
            for f in files:
                try:
                    check_path(f)
                except SourceError as exc:
                    fail(str(exc))
        projector = Projector(engine_for(db), policies(), phone_key())
        tune_gc_for_streaming()
        if from_kafka:
            server = need_bootstrap(bootstrap)
            start: StartAt | None = None
            if from_beginning:
                start = StartAt()
            elif from_offset:
                start = StartAt(offsets=parse_offsets(from_offset))
            elif from_time:
                start = StartAt(time=parse_time(from_time, "--from-time"))
            with kafka_errors(server):
                consumer = make_consumer(server, kafka_settings())
                shown, advance = _count_progress(None, f"replay {topic}")
                try:
                    with shown:
                        summary = replay_topic(
                            projector,
                            consumer,
                            topic,
                            start,
                            batch_size=batch_size,
                            progress=advance,
                        )
                finally:
                    consumer.close()
        else:
            assert files
            shown, hook = _progress_hook(files)
            with shown:
                summary = replay_files(projector, files, batch_size=batch_size, progress=hook)
    if as_json:
        emit_json(summary.as_json())
    else:
        render_summary(summary, "replay")
    if summary.dead_lettered:
        raise typer.Exit(EXIT_DEAD_LETTERS)


@app.command()
def publish(
    files: Annotated[list[Path], typer.Argument(help="Event files (.jsonl or .avro).")],
    bootstrap: BootstrapOption = None,
    topic: TopicOption = "account-events",
    as_json: JsonOption = False,
) -> None:
    """Send events from files to the topic (key = user_id, Avro single-object encoding).

    Each event is validated first; invalid lines are reported with their position and
    not sent. Sends use acks=all with one request in flight per broker, so a user's
    events stay in order. An exported event's recorded_at becomes its record timestamp.
    Exit status: 0, or 3 when some lines were invalid (1 on errors).
    """
    from ledger.publish import publish_files
    from ledger.sources.files import SourceError, check_path
    from ledger.sources.kafka import make_producer

    server = need_bootstrap(bootstrap)
    for f in files:
        try:
            check_path(f)
        except SourceError as exc:
            fail(str(exc))
    with user_errors(), kafka_errors(server):
        rules = policies()
        producer = make_producer(server, kafka_settings())
        shown, hook = _progress_hook(files)
        try:
            with shown:
                summary = publish_files(producer, topic, files, rules, progress=hook)
        finally:
            producer.close(timeout=30)
    if as_json:
        emit_json(summary.as_json())
    else:
        out.print(
            f"sent {summary.sent:,} events to {topic} in {summary.seconds:.1f} s "
            f"({summary.events_per_second:,.0f}/s); {summary.invalid:,} invalid, not sent"
        )
        for line in summary.invalid_samples:
            err.print(f"  {line}", markup=False, soft_wrap=True)
    if summary.invalid:
        raise typer.Exit(EXIT_DEAD_LETTERS)


@app.command()
def consume(
    bootstrap: BootstrapOption = None,
    group: Annotated[str, typer.Option("--group", help="Consumer group id.")] = "ledger-projector",
    topic: TopicOption = "account-events",
    db: DbOption = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Most records per batch/transaction.")
    ] = 2000,
    session_timeout_ms: Annotated[
        int,
        typer.Option(
            "--session-timeout-ms",
            help="Group session timeout; a rebalance takes about half of it.",
        ),
    ] = 10_000,
    log_every: Annotated[
        float, typer.Option("--log-every", help="Seconds between progress log lines.")
    ] = 10.0,
) -> None:
    """Run the projector: a consumer-group member that keeps the ledger current.

    Each batch commits its projection changes and the partitions' next offsets in one
    database transaction; on every partition assignment the consumer seeks to the stored
    offsets, so no event is lost or applied twice across crashes and rebalances. Bad
    input goes to TOPIC.dlq (headers name the reason and source position) and to the
    dead-letter table. A database outage pauses consumption and retries with backoff.
    Logs events/s, per-partition lag and dead letters periodically. SIGTERM/SIGINT finish
    the current batch, leave the group and exit 0.
    """
    import logging

    from consumers.projector import ConsumerSettings, ProjectorService
    from ledger.projector import Projector

    server = need_bootstrap(bootstrap)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    with user_errors(), kafka_errors(server):
        projector = Projector(engine_for(db), policies(), phone_key())
        tune_gc_for_streaming()
        service = ProjectorService(
            ConsumerSettings(
                bootstrap=server,
                group=group,
                topic=topic,
                batch_size=batch_size,
                session_timeout_ms=session_timeout_ms,
                log_every_s=log_every,
                client=kafka_settings(),
            ),
            projector,
        )
        service.install_signal_handlers()
        code = service.run()
    raise typer.Exit(code)


@app.command()
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="Archive to write (.avro).")],
    bootstrap: BootstrapOption = None,
    topic: TopicOption = "account-events",
    as_json: JsonOption = False,
) -> None:
    """Write the topic, up to its current end, to an Avro container archive.

    Each event carries its record time (the Kafka timestamp) as recorded_at, so
    `ledger replay ARCHIVE` builds exactly the history `ledger replay --from-kafka` does.
    Undecodable records are skipped and reported (they belong to the dead-letter topic).
    """
    from ledger.export import export_topic
    from ledger.sources.kafka import make_consumer

    if output.suffix != ".avro":
        fail(f"{output}: exports are Avro container files; name it *.avro")
    server = need_bootstrap(bootstrap)
    with user_errors(), kafka_errors(server):
        consumer = make_consumer(server, kafka_settings())
        shown, advance = _count_progress(None, f"export {topic}")
        try:
            with shown:
                summary = export_topic(consumer, topic, output, progress=advance)
        finally:
            consumer.close()
    if as_json:
        emit_json(summary.as_json())
    else:
        out.print(
            f"wrote {summary.written:,} events from {topic} to {output} "
            f"({summary.skipped:,} undecodable skipped) in {summary.seconds:.1f} s"
        )


# --- queries -------------------------------------------------------------------------------


@app.command()
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
    from ledger.queries import current as query_current

    when = parse_time(at, "--at") or datetime.now(UTC)
    believed = parse_time(believed_at, "--believed-at")
    with user_errors():
        result = query_current(engine_for(db), user, when, believed_at=believed)
    data = result.as_json()
    if as_json:
        emit_json(data)
        return
    t = Table(show_header=False, title=f"{user} at {format_instant(when)}", title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    if data["assignment"] is None:
        t.add_row("assignment", "none (not signed up at that time)")
    else:
        for key in ("assignment", "since", "until", "policy", "rule", "reason"):
            t.add_row(key, str(data[key] if data[key] is not None else "open"))
        for key, value in (data["rulebook"] or {}).items():
            if key != "id":
                t.add_row(key.replace("_", " "), value)
    t.add_row("age status", data["age_status"])
    out.print(t)


@app.command()
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
    from ledger.queries import history as query_history
    from ledger.queries import row_json

    believed = parse_time(believed_at, "--believed-at")
    with user_errors():
        rows = query_history(
            engine_for(db), user, include_superseded=show_all, believed_at=believed
        )
    if as_json:
        emit_json({"user_id": user, "entries": [row_json(r) for r in rows]})
        return
    t = Table(title=f"history of {user}", title_justify="left")
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
        t.add_row(*[c or "" for c in cells], style="dim" if r.superseded_at else None)
    out.print(t)


@app.command()
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
    from ledger.queries import explain as query_explain

    when = parse_time(at, "--at") or datetime.now(UTC)
    believed = parse_time(believed_at, "--believed-at")
    with user_errors():
        text = query_explain(engine_for(db), user, when, believed_at=believed)
    if as_json:
        emit_json({"user_id": user, "at": format_instant(when), "explanation": text})
    else:
        sys.stdout.write(text + "\n")  # prose: let the terminal wrap it


# --- database ------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Create or migrate the store's tables to the newest schema.

    Every command does this itself on an empty database; run it explicitly before
    deploying a new version against a shared database."""
    from ledger.store.database import upgrade

    with user_errors():
        before, after = upgrade(db)
    if as_json:
        emit_json({"from": before, "to": after})
    elif before == after:
        out.print(f"database already at revision {after}")
    else:
        out.print(f"database migrated from {before or 'empty'} to revision {after}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
