"""Replaying event files and topics into the store, in bounded batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from kafka import KafkaConsumer

from ledger.app.ingest.pipeline import replay_file_parallel
from ledger.app.ingest.pipeline_stream import StreamPipeline, pipelined
from ledger.app.ingest.plan import BatchResult
from ledger.app.ingest.projector import Projector
from ledger.app.ports import ParallelStore
from ledger.codecs.avro import AvroCodec
from ledger.domain.time import truncate_ms
from ledger.sources.files import check_paths, read_records, source_key
from ledger.sources.kafka import (
    StartAt,
    by_bytes,
    check_identity,
    read_topic,
    to_source_record,
    topic_identity,
)
from ledger.sources.kafka import source_key as kafka_source_key
from ledger.sources.records import SourceRecord

T = TypeVar("T")


@dataclass(slots=True)
class ReplaySummary:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    already_applied: int = 0  # skipped: the stored source position says they were applied
    # Records of erased users: neither stored nor dead-lettered (docs/data-protection.md).
    suppressed: int = 0
    erased: int = 0  # users the replay erased
    users: int = 0  # in the store after the replay
    assignments: dict[str, int] = field(default_factory=dict)  # users per current assignment
    seconds: float = 0.0
    dead_letter_samples: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        handled = self.applied + self.duplicates + self.dead_lettered
        return handled / self.seconds if self.seconds > 0 else 0.0

    def add(self, batch: BatchResult) -> None:
        self.applied += batch.applied
        self.duplicates += batch.duplicates
        self.already_applied += batch.already_applied
        self.dead_lettered += batch.dead_lettered
        self.suppressed += batch.suppressed
        self.erased += batch.erased
        for d in batch.dead_letters:
            if len(self.dead_letter_samples) < 10:
                self.dead_letter_samples.append(f"{d.record.position}: {d.reason}")

    def to_json(self) -> dict[str, object]:
        return {
            "applied": self.applied,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "already_applied": self.already_applied,
            "suppressed": self.suppressed,
            "erased": self.erased,
            "users": self.users,
            "assignments": self.assignments,
            "seconds": round(self.seconds, 3),
            # None when nothing was applied: a rate would only say how fast it was skipped.
            "events_per_second": round(self.events_per_second, 1) if self.applied else None,
            "dead_letter_samples": self.dead_letter_samples,
        }


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def fill_totals(projector: Projector, summary: ReplaySummary) -> None:
    summary.assignments = projector.store.assignment_counts()
    summary.users = sum(summary.assignments.values())


ProgressHook = Callable[[Path, int, int], None]  # (file, bytes done, records in batch)

# Files smaller than this are planned in the writer: starting worker processes (each
# imports the ledger, about a second of CPU) costs more than they save on a few batches.
PARALLEL_MIN_BYTES = 4 << 20
BATCH_BYTES = 8 << 20  # `Settings.batch_mb`


def _file_batches(
    path: Path,
    key: str,
    start: int,
    size: int,
    max_bytes: int,
    reached: dict[int, int],
    codec: AvroCodec,
) -> Iterator[list[SourceRecord]]:
    """Batches of a file's records, ended at `size` records or once they span `max_bytes`
    of the file; `reached` gets how far into the file each one ends."""
    records: list[SourceRecord] = []
    began = done = 0
    for record, done in read_records(path, key, start, codec):
        if not records:
            began = done
        records.append(record)
        if len(records) >= size or done - began >= max_bytes:
            reached[id(records)] = done
            yield records
            records = []
    if records:
        reached[id(records)] = done
        yield records


def replay_files(
    projector: Projector,
    paths: Sequence[Path],
    *,
    batch_size: int,
    now: datetime | None = None,
    progress: ProgressHook | None = None,
    codec: AvroCodec | None = None,
    workers: int = 0,
    open_store: Callable[[], ParallelStore] | None = None,
    parallel_min_bytes: int = PARALLEL_MIN_BYTES,
    batch_bytes: int = BATCH_BYTES,
) -> ReplaySummary:
    """Apply every file in order. Events without their own `recorded_at` get the replay's
    start time as record time. `codec`: the current event schema's, unless given (a
    ledger of an older version, for tests of the upgrade path). `workers` processes plan
    while this one writes (`ledger.app.ingest.pipeline`), each on a store from
    `open_store`; 0 plans here, as for a file under `parallel_min_bytes`."""
    check_paths(paths)
    codec = codec or AvroCodec()
    started = time.perf_counter()
    record_time = truncate_ms(now or datetime.now(UTC))
    summary = ReplaySummary()
    for path in paths:
        key = source_key(path)
        start = projector.store.stored_positions(key).get(0, 0)
        summary.already_applied += start  # lines (blank ones too) or Avro records
        store = projector.store
        parallel = workers > 0 and path.stat().st_size >= parallel_min_bytes
        if parallel and open_store is not None and isinstance(store, ParallelStore):
            for written in replay_file_parallel(
                projector,
                store,
                open_store,
                path,
                key,
                start,
                workers=workers,
                batch_size=batch_size,
                batch_bytes=batch_bytes,
                record_time=record_time,
                codec=codec,
            ):
                summary.add(written.result)
                if progress:
                    progress(path, written.reached, written.records)
            continue
        reached: dict[int, int] = {}  # id of a batch -> bytes of the file read for it
        batches = _file_batches(path, key, start, batch_size, batch_bytes, reached, codec)
        for records, result in projector.apply_batches(batches, record_time):
            summary.add(result)
            done = reached.pop(id(records))
            if progress:
                progress(path, done, len(records))
    summary.seconds = time.perf_counter() - started
    fill_totals(projector, summary)
    return summary


def replay_topic(
    projector: Projector,
    consumer: KafkaConsumer,
    topic: str,
    start: StartAt | None,
    *,
    batch_size: int,
    watermark_timeout_s: float = 30.0,
    reset_positions: bool = False,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    codec: AvroCodec | None = None,
    workers: int = 0,
    open_store: Callable[[], ParallelStore] | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> ReplaySummary:
    """Rebuild or continue a projection from a topic, up to the end seen at start
    (`ledger.sources.kafka.read_topic`). `start=None` continues from the stored positions
    (the beginning if none).

    The stored positions must belong to the topic as it is now (same topic id, partition
    count, none past a partition's end), else TopicChanged: records below a stored
    position are skipped as applied, which on a recreated topic would skip new events.
    `reset_positions` forgets them first. `codec`, `workers` and `open_store` as in
    `replay_files` (`ledger.app.ingest.pipeline_stream`: this process reads and writes)."""
    started = time.perf_counter()
    record_time = truncate_ms(now or datetime.now(UTC))
    key = kafka_source_key(topic)
    store = projector.store
    if reset_positions:
        store.reset_positions(key)
    stored = store.stored_positions(key)
    identity = topic_identity(consumer, topic)
    check_identity(topic, store.source_identity(key), identity, stored)
    if start is None:
        start = StartAt(offsets=stored)
    codec = codec or AvroCodec()
    summary = ReplaySummary()
    polled = (
        part
        for batch in read_topic(
            consumer,
            topic,
            start,
            max_records=batch_size,
            watermark_timeout_s=watermark_timeout_s,
            stored=stored,
        )
        for part in by_bytes(batch, batch_bytes)
    )
    if workers > 0 and open_store is not None and isinstance(store, ParallelStore):
        with StreamPipeline(
            projector, store, open_store, key, workers=workers, codec=codec
        ) as pipeline:
            pipeline.positioned(stored, stored)
            for written in pipelined(
                pipeline, (list(b) for b in polled), record_time, identity=identity
            ):
                summary.add(written.result)
                if progress:
                    progress(len(written.records))
    else:
        batches = ([to_source_record(m, codec) for m in batch] for batch in polled)
        for records, result in projector.apply_batches(batches, record_time, identity=identity):
            summary.add(result)
            if progress:
                progress(len(records))
    summary.seconds = time.perf_counter() - started
    fill_totals(projector, summary)
    return summary
