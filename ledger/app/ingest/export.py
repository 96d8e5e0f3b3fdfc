"""`ledger export`: a topic into an Avro container archive that carries each event's record
time (the Kafka timestamp), so replaying the archive equals replaying the topic."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from kafka import KafkaConsumer

from ledger.codecs.avro import AvroCodec
from ledger.domain.events import Event, EventError
from ledger.sources.files import write_event_file, write_event_stream
from ledger.sources.kafka import StartAt, read_topic, to_source_record


@dataclass(slots=True)
class ExportSummary:
    path: str
    written: int = 0
    skipped: int = 0  # undecodable records (they belong to the dead-letter topic)
    seconds: float = 0.0
    skipped_samples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "written": self.written,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "skipped_samples": self.skipped_samples,
        }


def export_topic(
    consumer: KafkaConsumer,
    topic: str,
    path: Path | IO[bytes],
    *,
    watermark_timeout_s: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write the topic up to its end as an Avro container to `path`, a file or a binary
    stream (standard output)."""
    summary = ExportSummary(str(path) if isinstance(path, Path) else "-")
    started = time.perf_counter()
    codec = AvroCodec()

    def events() -> Iterator[tuple[Event, datetime | None]]:
        for batch in read_topic(
            consumer, topic, StartAt(), watermark_timeout_s=watermark_timeout_s
        ):
            for msg in batch:
                rec = to_source_record(msg, codec)
                if isinstance(rec.decoded, EventError):
                    summary.skipped += 1
                    if len(summary.skipped_samples) < 10:
                        summary.skipped_samples.append(f"{rec.position}: {rec.decoded}")
                    continue
                summary.written += 1
                yield rec.decoded
            if progress:
                progress(len(batch))

    if isinstance(path, Path):
        write_event_file(path, events())
    else:
        write_event_stream(path, "avro", events())
    summary.seconds = time.perf_counter() - started
    return summary
