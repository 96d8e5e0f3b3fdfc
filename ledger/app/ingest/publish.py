"""`ledger publish`: event files onto the topic, key = user_id, Avro single-object encoded."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaProducer

from ledger.codecs.avro import AvroCodec
from ledger.domain.events import EventError
from ledger.domain.policy import PolicySet, event_problem
from ledger.domain.time import to_millis
from ledger.sources.files import check_paths, read_records

# Acknowledged sends are awaited every this many messages, which bounds memory and the
# number of unconfirmed messages.
CONFIRM_EVERY = 10_000


@dataclass(slots=True)
class PublishSummary:
    sent: int = 0
    invalid: int = 0
    seconds: float = 0.0
    invalid_samples: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "invalid": self.invalid,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "invalid_samples": self.invalid_samples,
        }


def publish_files(
    producer: KafkaProducer,
    topic: str,
    paths: Sequence[Path],
    policies: PolicySet,
    *,
    progress: Callable[[Path, int, int], None] | None = None,
) -> PublishSummary:
    """Send every valid event; invalid lines are reported with their position and not
    sent. An exported event's `recorded_at` becomes the record timestamp, so a topic
    restored from an archive replays to the same history."""
    check_paths(paths)
    codec = AvroCodec()
    summary = PublishSummary()
    started = time.perf_counter()
    pending = []
    for path in paths:
        done = unreported = 0
        for rec, done in read_records(path, "publish", 0, codec):
            if isinstance(rec.decoded, EventError):
                problem: str | None = str(rec.decoded)
            else:
                event, recorded_at = rec.decoded
                problem = event_problem(event, policies)
            if problem is not None:
                summary.invalid += 1
                if len(summary.invalid_samples) < 10:
                    summary.invalid_samples.append(f"{rec.position}: {problem}")
                continue
            pending.append(
                producer.send(
                    topic,
                    key=event.user_id.encode(),
                    value=codec.encode(event),
                    timestamp_ms=to_millis(recorded_at) if recorded_at else None,
                )
            )
            summary.sent += 1
            unreported += 1
            if len(pending) >= CONFIRM_EVERY:
                _confirm(producer, pending)
                if progress:
                    progress(path, done, unreported)
                unreported = 0
        _confirm(producer, pending)
        if progress:
            progress(path, done, unreported)
    summary.seconds = time.perf_counter() - started
    return summary


def _confirm(producer: KafkaProducer, pending: list) -> None:  # type: ignore[type-arg]
    producer.flush()
    for future in pending:
        future.get(timeout=60)  # raises the broker's error for a refused message
    pending.clear()
