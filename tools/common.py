"""What the fault scenarios (`tools.faults`) share with the test suite: the `ledger`
command beside this interpreter, the flags that make a consumer group join quickly,
generated streams with record times, and the store reads that compare two runs.

The tests import these from here (never the other way round: a tool must run without the
test suite's fixtures)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import sqlalchemy as sa

from ledger.codecs.jsonl import event_to_json_line
from ledger.domain.time import from_millis
from ledger.generate import generate_events
from ledger.store.schema import (
    HISTORY_FROM,
    assignment_history,
    history_columns,
    source_positions,
)

LEDGER = str(Path(sys.executable).with_name("ledger"))
GROUP_FLAGS = ["--session-timeout-ms", "6000", "--log-every", "1", "--allow-dev-key"]
T0_MS = 1_790_000_000_000  # record times of the stamped streams (2026-09)


def stamped_stream(path: Path, users: int, seed: int) -> int:
    """A generated stream whose events carry increasing record times, so a consumer (via
    the Kafka timestamps `publish` sets from them) and a file replay see the same ones."""
    with path.open("w") as out:
        for i, event in enumerate(generate_events(users, seed)):
            out.write(event_to_json_line(event, from_millis(T0_MS + i)) + "\n")
    return sum(1 for _ in path.open())


def two_files_sharing_users(tmp_path: Path, users: int) -> tuple[Path, Path, Path]:
    """Alternate lines of one stamped stream into two files, so nearly every user has events
    in both; and the whole stream, for the sequential reference."""
    whole, a, b = tmp_path / "all.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with whole.open("w") as w, a.open("w") as fa, b.open("w") as fb:
        for i, event in enumerate(generate_events(users, seed=23)):
            line = event_to_json_line(event, from_millis(1_790_000_000_000 + i)) + "\n"
            w.write(line)
            (fa if i % 2 == 0 else fb).write(line)
    return whole, a, b


def consumed(db: str, topic: str) -> int:
    """Records the store has taken from the topic (sum of next offsets)."""
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(source_positions.c.next_offset), 0)).where(
                    source_positions.c.source == f"kafka:{topic}"
                )
            ).scalar_one()
    except sa.exc.DBAPIError:
        return 0  # the consumer has not created the tables yet
    finally:
        engine.dispose()


def believed(url: str) -> list[tuple]:
    """The believed history (valid time) of every user: what must not depend on which writer
    applied which event first. Record times of superseded beliefs legitimately do."""
    h = assignment_history.c
    cols = history_columns("user_id", "valid_from", "valid_to", "assignment", "policy", "rule")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(*cols, h.facts).select_from(HISTORY_FROM).where(h.superseded_at.is_(None))
        ).all()
    engine.dispose()
    return sorted(
        (tuple(json.dumps(v, sort_keys=True, default=str) for v in r) for r in found), key=repr
    )
