"""`ledger generate`: a synthetic event stream for demos, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.common import JsonOption, emit_json, out, plain
from ledger.errors import UsageError


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
    delivered late. Each event carries its record time (recorded_at) as a log would stamp
    it: seconds after it happened, and for a late delivery the day it came, after the
    events around it; a replay records it then.
    """
    from ledger.generate import generate_log, write_log

    if output.suffix not in (".jsonl", ".avro"):
        raise UsageError(f"{output}: unknown file type {output.suffix!r} (use .jsonl or .avro)")
    count = write_log(output, generate_log(users, seed))
    if as_json:
        emit_json({"path": str(output), "users": users, "seed": seed, "events": count})
    else:
        out.print(plain(f"wrote {count:,} events for {users:,} users to {output}"))
