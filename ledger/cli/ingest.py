"""Commands that move events: `replay` (files or a topic into the store), `publish` (files
onto the topic) and `export` (the topic into an archive)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ledger.cli.common import (
    STDIO,
    BootstrapOption,
    DbOption,
    FormatOption,
    JsonOption,
    PoliciesOption,
    ResetPositionsOption,
    TopicOption,
    WorkersOption,
    check_output,
    emit_json,
    err,
    event_files,
    file_progress,
    kafka_errors,
    out,
    parse_time,
    plain,
    projector,
    reading_topic,
    settings,
    tune_gc_for_streaming,
    warn_if_dev_phone_key,
)
from ledger.config import COMPRESSION_TYPES
from ledger.domain.limits import quote
from ledger.errors import EXIT_DEAD_LETTERS, UsageError

# Events are small Avro records, alike in shape: batches compress well, and the event
# topic is kept forever (docs/producers.md has the measurements behind the choice).
DEFAULT_COMPRESSION = "zstd"


def render_summary(summary: Any, title: str) -> None:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("events applied", f"{summary.applied:,}")
    t.add_row("duplicates (ignored)", f"{summary.duplicates:,}")
    t.add_row("dead-lettered", f"{summary.dead_lettered:,}")
    if getattr(summary, "erased", 0):
        t.add_row("users erased", f"{summary.erased:,}")
    if getattr(summary, "suppressed", 0):
        t.add_row("suppressed (users erased before)", f"{summary.suppressed:,}")
    if summary.already_applied:
        t.add_row("already applied earlier (skipped)", f"{summary.already_applied:,}")
    t.add_row("users in the ledger", f"{summary.users:,}")
    for assignment, n in sorted(summary.assignments.items()):
        t.add_row(plain(f"  {assignment}"), f"{n:,}")
    t.add_row("time", f"{summary.seconds:.1f} s")
    if summary.applied:
        # A rate of nothing applied would only measure how fast a file is skipped.
        t.add_row("throughput", f"{summary.events_per_second:,.0f} events/s")
    out.print(t)
    if summary.dead_letter_samples:
        err.print("dead letters (first ones):", markup=False)
        for line in summary.dead_letter_samples:
            err.print(plain(f"  {line}"), soft_wrap=True)


def parse_offsets(value: str) -> dict[int, int]:
    """`0:120,3:7` -> {0: 120, 3: 7}."""
    offsets: dict[int, int] = {}
    for part in value.split(","):
        p, sep, o = part.strip().partition(":")
        if not sep or not p.isdigit() or not o.isdigit():
            raise UsageError(
                f"--from-offset {value!r}: expected PARTITION:OFFSET[,PARTITION:OFFSET...]"
            )
        offsets[int(p)] = int(o)
    return offsets


def replay(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Event files (.jsonl or .avro), applied in order; - for standard input "
            "(with --format).",
            show_default=False,
        ),
    ] = None,
    fmt: FormatOption = None,
    db: DbOption = None,
    from_kafka: Annotated[
        bool, typer.Option("--from-kafka", help="Replay the topic instead of files.")
    ] = False,
    bootstrap: BootstrapOption = None,
    topic: TopicOption = None,
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
    reset_positions: ResetPositionsOption = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", min=1, help="Events per database transaction.  [default: 5000]"
        ),
    ] = None,
    workers: WorkersOption = None,
    policies: PoliciesOption = None,
    announce: Annotated[
        bool | None,
        typer.Option(
            "--announce/--no-announce",
            help="Whether the changefeed's relay publishes the decisions this replay records "
            "(docs/changefeed.md). Default: yes, except on an empty store, which the replay "
            "is rebuilding: its decisions were announced by the store it replaces.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Apply event files, or a Kafka topic, to the ledger.

    Files: already applied events are skipped (each file's stored position, and event
    ids), so a second replay of the same file applies nothing. `-` reads standard input
    (`--format jsonl|avro`), spooled to a temporary file first: replaying the same bytes
    twice applies nothing the second time, as for a file.

    --from-kafka: rebuilds (fresh database) or continues a projection from the topic and
    stops when caught up with the end seen at start (the last stable offset: records of
    producer transactions still open are left for later, see LEDGER_KAFKA_ISOLATION_LEVEL).
    Without --from-* it continues from the stored positions, which it shares with
    `ledger consume`.

    Bad lines or records are dead-lettered with their reason and position and the replay
    goes on. Exit status: 0; 3 when anything was dead-lettered; 1 on errors; 2 on usage
    errors.
    """
    from ledger.app.ingest.replay import replay_files, replay_topic
    from ledger.cli.common import store_opener
    from ledger.sources.kafka import StartAt

    if from_kafka == bool(files):
        raise UsageError("give event files, or --from-kafka, not both (and not neither)")
    if not from_kafka and (from_beginning or from_offset or from_time or reset_positions):
        raise UsageError(
            "--from-beginning/--from-offset/--from-time/--reset-positions need --from-kafka"
        )
    if sum(map(bool, (from_beginning, from_offset, from_time))) > 1:
        raise UsageError("use only one of --from-beginning, --from-offset, --from-time")
    if from_kafka and fmt is not None:
        raise UsageError("--format is the format of standard input (-), not of a topic")
    s = settings(
        db_url=db,
        batch_size=batch_size,
        workers=workers,
        kafka_bootstrap=bootstrap,
        kafka_topic=topic,
    )
    if files:
        with event_files(files, fmt) as paths:
            wired = projector(s, policies)
            _announcing(wired.store, announce)
            warn_if_dev_phone_key(s)  # once the command line and store are known good
            tune_gc_for_streaming()
            shown, hook = file_progress(paths)
            with shown:
                summary = replay_files(
                    wired,
                    paths,
                    batch_size=s.batch_size,
                    progress=hook,
                    workers=s.workers,
                    open_store=store_opener(s),
                    parallel_min_bytes=s.parallel_min_mb << 20,
                    batch_bytes=s.batch_bytes,
                )
    else:
        start: StartAt | None = None
        if from_beginning:
            start = StartAt()
        elif from_offset:
            start = StartAt(offsets=parse_offsets(from_offset))
        elif from_time:
            start = StartAt(time=parse_time(from_time, "--from-time"))
        s.kafka.require_bootstrap()  # usage errors before the store is opened
        _ = s.kafka.isolation  # a bad LEDGER_KAFKA_ISOLATION_LEVEL too
        wired = projector(s, policies)
        _announcing(wired.store, announce)
        warn_if_dev_phone_key(s)  # once the command line and store are known good
        tune_gc_for_streaming()
        with reading_topic(s, f"replay {s.kafka.topic}") as (consumer, advance):
            summary = replay_topic(
                wired,
                consumer,
                s.kafka.topic,
                start,
                batch_size=s.batch_size,
                watermark_timeout_s=s.kafka.watermark_timeout_s,
                reset_positions=reset_positions,
                progress=advance,
                workers=s.workers,
                open_store=store_opener(s),
                batch_bytes=s.batch_bytes,
            )
    # Closed now, not whenever the garbage collector (tuned above to run seldom) gets to
    # the engine: SQLite checkpoints and removes its WAL files when the last one closes.
    wired.store.engine.dispose()
    if as_json:
        emit_json(summary.to_json())
    else:
        render_summary(summary, "replay")
    if summary.dead_lettered:
        raise typer.Exit(EXIT_DEAD_LETTERS)


def _announcing(store: Any, announce: bool | None) -> None:
    """Tell the store whether the relay is to publish this replay's decisions."""
    # No notice on standard error: every first replay would print it, and the store's
    # `ledger changes` shows each record's "announced" for whoever relays the feed.
    store.announce = (not store.is_empty()) if announce is None else announce


def publish(
    files: Annotated[
        list[Path],
        typer.Argument(help="Event files (.jsonl or .avro); - for standard input (with --format)."),
    ],
    fmt: FormatOption = None,
    bootstrap: BootstrapOption = None,
    topic: TopicOption = None,
    compression: Annotated[
        str,
        typer.Option(
            "--compression",
            help=f"Record-batch codec: {', '.join(COMPRESSION_TYPES)} (docs/producers.md).",
        ),
    ] = DEFAULT_COMPRESSION,
    as_json: JsonOption = False,
) -> None:
    """Send events from files (or standard input, `-`) to the topic (key = user_id, Avro
    single-object encoding).

    Each event is validated first; invalid lines are reported with their position and
    not sent. Sends use acks=all with one request in flight per broker, so a user's
    events stay in order. An exported event's recorded_at becomes its record timestamp.
    Exit status: 0; 3 when some lines were invalid; 1 on errors; 2 on usage errors.
    """
    from ledger.app.ingest.publish import publish_files
    from ledger.codecs.policy_files import load_policies
    from ledger.sources.kafka import make_producer

    if compression not in COMPRESSION_TYPES:
        raise UsageError(
            f"--compression {quote(compression)}: expected one of {', '.join(COMPRESSION_TYPES)}"
        )
    s = settings(kafka_bootstrap=bootstrap, kafka_topic=topic)
    server = s.kafka.require_bootstrap()
    with event_files(files, fmt) as paths:
        rules = load_policies()
        with kafka_errors(server):
            producer = make_producer(s.kafka, compression=compression)
            shown, hook = file_progress(paths)
            try:
                with shown:
                    summary = publish_files(producer, s.kafka.topic, paths, rules, progress=hook)
            finally:
                producer.close(timeout=30)
    if as_json:
        emit_json(summary.to_json())
    else:
        rate = f" ({summary.events_per_second:,.0f}/s)" if summary.sent else ""
        out.print(
            plain(
                f"sent {summary.sent:,} events to {s.kafka.topic} in {summary.seconds:.1f} s"
                f"{rate}; {summary.invalid:,} invalid, not sent"
            )
        )
        for line in summary.invalid_samples:
            err.print(plain(f"  {line}"), soft_wrap=True)
    if summary.invalid:
        raise typer.Exit(EXIT_DEAD_LETTERS)


def export(
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="Archive to write (.avro); - for standard output."
        ),
    ],
    bootstrap: BootstrapOption = None,
    topic: TopicOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the topic, up to its current end, to an Avro container archive.

    Each event carries its record time (the Kafka timestamp) as recorded_at, so
    `ledger replay ARCHIVE` builds exactly the history `ledger replay --from-kafka` does.
    Undecodable records are skipped and reported (they belong to the dead-letter topic).
    `-o -` writes the archive to standard output, and the report to standard error.
    """
    from ledger.app.ingest.export import export_topic

    to_stdout = str(output) == STDIO
    if to_stdout and as_json:
        raise UsageError("--json reports on a file written: give -o FILE.avro with it")
    if not to_stdout and output.suffix != ".avro":
        raise UsageError(f"{output}: exports are Avro container files; name it *.avro")
    s = settings(kafka_bootstrap=bootstrap, kafka_topic=topic)
    if not to_stdout:
        check_output(output)
    with reading_topic(s, f"export {s.kafka.topic}") as (consumer, advance):
        summary = export_topic(
            consumer,
            s.kafka.topic,
            sys.stdout.buffer if to_stdout else output,
            watermark_timeout_s=s.kafka.watermark_timeout_s,
            progress=advance,
        )
    if to_stdout:
        sys.stdout.buffer.flush()
    if as_json:
        emit_json(summary.to_json())
    else:
        # Standard output may be the archive itself: the report goes beside it.
        (err if to_stdout else out).print(
            plain(
                f"wrote {summary.written:,} events from {s.kafka.topic} to {output} "
                f"({summary.skipped:,} undecodable skipped) in {summary.seconds:.1f} s"
            ),
            soft_wrap=True,
        )
