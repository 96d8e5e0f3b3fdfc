"""`ledger generate`: a synthetic event stream for demos, tests and benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.common import (
    STDIO,
    FormatOption,
    JsonOption,
    check_output,
    emit_json,
    event_format,
    out,
    plain,
    writing,
)
from ledger.errors import UsageError


def generate(
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            help="File to write: .jsonl or .avro; - for standard output (with --format).",
        ),
    ],
    users: Annotated[int, typer.Option("--users", min=1, help="How many users.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 1,
    fmt: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a realistic, deterministic synthetic event stream.

    Sign-ups spread over 2024-2026 (so every terms version binds), phones from mainland
    China, HK, MO, TW, US, CA, GB, DE, SG and JP with a few invalid numbers, phone changes,
    relocations of every evidence kind, terms acceptances, some duplicates and some events
    delivered late. Each event carries its record time (recorded_at) as a log would stamp
    it: seconds after it happened, and for a late delivery the day it came, after the
    events around it; a replay records it then.

    `-o - --format jsonl|avro` writes the stream to standard output, for a pipe:
    `ledger generate -o - --format jsonl | ledger replay - --format jsonl`.
    """
    from ledger.generate import generate_log, write_log, write_log_to

    chosen = event_format(output, fmt)
    if output == STDIO:
        if as_json:
            raise UsageError("--json reports on a file written: give -o FILE with it")
        # Nothing else goes to standard output: it is the stream.
        write_log_to(sys.stdout.buffer, chosen, generate_log(users, seed))
        sys.stdout.buffer.flush()
        return
    path = Path(output)
    check_output(path)
    with writing(path):
        count = write_log(path, generate_log(users, seed))
    if as_json:
        emit_json({"path": str(path), "users": users, "seed": seed, "events": count})
    else:
        out.print(plain(f"wrote {count:,} events for {users:,} users to {path}"))
