"""Redriving dead letters: once the cause of a rejection is fixed (a missing policy version
shipped, say), the kept raw input is decoded again and applied through the one code path,
`Projector.apply_batch`, and each dead letter is marked with what became of it.

Every retry run is a source of its own (`redrive:<uuid>`): its records are numbered from 0
in that source, so the run's progress is stored like any replay's and never collides with
the original source's positions, while each record keeps the dead letter's ORIGINAL
position, so the applied event's audit trail still names the line or offset it came from.

Record time is the run's: the ledger learns the event at the retry. A JSON line's own
`recorded_at` (or an Avro message's) is ignored here on purpose: using it would put
history rows at record times when the ledger in fact held the event as rejected, and
`--believed-at` would then report beliefs the ledger never had.

Each dead letter is applied in a batch of its own, so the projector's result says exactly
what became of it. It is marked afterwards, in a second transaction: a crash in between
leaves it unresolved with its event applied, and the next retry finds it a duplicate and
marks it so; nothing is applied twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ledger.app.ingest.projector import Projector
from ledger.app.ports import Rejected, RetryLedger
from ledger.codecs.avro import SINGLE_OBJECT_MAGIC, AvroCodec
from ledger.codecs.jsonl import event_from_json_line
from ledger.domain.events import Event, EventError
from ledger.errors import LedgerError
from ledger.sources.records import SourceRecord

# The source key of a retry run; the word predates the command's name and stays, because
# stored dead letters and positions (and the filters people wrote) carry it.
RETRY_SOURCE_PREFIX = "redrive:"
# `ledger.sources.kafka.source_key`: a topic's records are Avro single-object messages.
KAFKA_PREFIX = "kafka:"

Status = Literal["applied", "duplicate", "dead-lettered", "not-retryable", "already-resolved"]


@dataclass(frozen=True, slots=True)
class Outcome:
    dead_letter_id: int
    position: str
    status: Status
    detail: str  # the resolution written, or why nothing was done
    new_id: int | None = None  # dead-lettered again: the new dead letter's id
    reason: str | None = None  # dead-lettered again: why, this time

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.dead_letter_id,
            "position": self.position,
            "outcome": self.status,
            "detail": self.detail,
            "new_id": self.new_id,
            "reason": self.reason,
        }


@dataclass(slots=True)
class RetrySummary:
    run: str  # the run's source key
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def still_dead(self) -> int:
        """Dead letters this run was asked to retry that remain unapplied."""
        return self.count("dead-lettered") + self.count("not-retryable")

    def to_json(self) -> dict[str, object]:
        return {
            "run": self.run,
            "applied": self.count("applied"),
            "duplicates": self.count("duplicate"),
            "dead_lettered_again": self.count("dead-lettered"),
            "not_retryable": self.count("not-retryable"),
            "already_resolved": self.count("already-resolved"),
            "results": [o.to_json() for o in self.outcomes],
        }


def decode_raw(
    source: str, raw: bytes, codec: AvroCodec
) -> tuple[Event, datetime | None] | EventError:
    """The dead letter's raw input decoded as its source would: an Avro single-object
    message from a topic (or wherever the bytes carry its C3 01 header, which no JSON text
    can start with), a JSON line otherwise. The record time is dropped (module docstring)."""
    try:
        if source.startswith(KAFKA_PREFIX) or raw[:2] == SINGLE_OBJECT_MAGIC:
            event, _ = codec.decode(raw)
        else:
            event, _ = event_from_json_line(raw)
    except EventError as exc:
        return exc
    return event, None


def not_retryable(letter: Rejected) -> str | None:
    """Why the kept raw input cannot be applied whatever was fixed (None: it can be tried)."""
    raw = letter.raw or b""
    if letter.raw_size == 0 or not raw:
        return "no raw input was kept (a corrupt Avro container has none)"
    if letter.raw_size > len(raw):
        return (
            f"its raw input was cut to {len(raw):,} of {letter.raw_size:,} bytes when it was "
            "dead-lettered; fix and replay the original input instead"
        )
    return None


def retry_dead_letters(
    projector: Projector,
    letters: Iterable[Rejected],
    ledger: RetryLedger,
    *,
    now: datetime,
    run: str | None = None,
    codec: AvroCodec | None = None,
    progress: Callable[[int], None] | None = None,
) -> RetrySummary:
    """Retry `letters` in order with record time `now`; see the module docstring. Dead
    letters already resolved are reported and left alone."""
    summary = RetrySummary(run or f"{RETRY_SOURCE_PREFIX}{uuid.uuid4()}")
    codec = codec or AvroCodec()
    offset = 0
    for letter in letters:
        summary.outcomes.append(_retry(projector, letter, ledger, now, summary.run, offset, codec))
        if summary.outcomes[-1].status not in ("not-retryable", "already-resolved"):
            offset += 1
        if progress:
            progress(1)
    return summary


def _retry(
    projector: Projector,
    letter: Rejected,
    ledger: RetryLedger,
    now: datetime,
    run: str,
    offset: int,
    codec: AvroCodec,
) -> Outcome:
    if letter.resolved_at is not None:
        return Outcome(
            letter.id, letter.position, "already-resolved", f"already resolved: {letter.resolution}"
        )
    problem = not_retryable(letter)
    if problem is not None:
        return Outcome(letter.id, letter.position, "not-retryable", problem)
    raw = letter.raw or b""
    record = SourceRecord(
        run, 0, offset, letter.position, raw, decode_raw(letter.source, raw, codec)
    )
    result = projector.apply_batch([record], now)
    new_id: int | None = None
    reason: str | None = None
    status: Status
    if result.dead_letters:
        status, reason = "dead-lettered", result.dead_letters[0].reason
        new_id = ledger.dead_letter_at(run, 0, offset)
        resolution = f"dead-lettered again as #{new_id}"
    elif result.applied:
        status, resolution = "applied", "applied"
    elif result.duplicates:
        status, resolution = "duplicate", "duplicate"
    else:
        # Only a record below its source's stored position is neither: the run key was used
        # before, which a fresh uuid rules out.
        raise LedgerError(f"retry source {run} was used before; start a new run")
    detail = resolution
    if not ledger.resolve(letter.id, now, resolution):
        detail += " (another run had resolved this dead letter meanwhile)"
    return Outcome(letter.id, letter.position, status, detail, new_id, reason)
