"""Kafka as a source of events: clients, decoding records, and reading a topic up to the end
seen at start. (The dead-letter topic, a sink, is `ledger.sinks.dead_letter_topic`.)

Correct on Apache Kafka and on the local Tansu broker alike. Two things are done the
portable way on purpose: the end of a partition is taken from fetch responses
(`readable_end`), not from `end_offsets()`; and `--from-time` seeks with
`offsets_for_times` and then also drops earlier records client-side.

Readers are read_committed by default (`KafkaSettings.isolation`): the end they can reach
is the last stable offset (LSO), below the high watermark while a producer transaction is
open, so "caught up" and the lag are measured against it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import codec as kafka_codec
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    UnsupportedCodecError,
)

from ledger.codecs.avro import AvroCodec
from ledger.config import COMPRESSION_TYPES, ByteLimits, KafkaSettings
from ledger.domain.events import EventError, check_recorded_at
from ledger.domain.time import from_millis, to_millis
from ledger.sources.files import SourceError
from ledger.sources.kafka_frames import (
    FrameWatch,
    frame_limit,
    poll_counting,
    probe,
    unfetchable_reason,
)
from ledger.sources.records import SourceIdentity, SourceRecord


class KafkaSourceError(SourceError):
    """The topic cannot be read as asked (no such topic, no watermark, bad offsets)."""


class TopicChanged(KafkaSourceError):
    """The topic is not the one the stored positions belong to (recreated, truncated or
    replaced): reading on would skip or repeat records without anyone noticing."""

    def __init__(self, topic: str, what: str) -> None:
        super().__init__(
            f"topic {topic!r} {what}; its stored positions belong to an earlier incarnation, "
            "so reading on could skip events. Choices: stop and find out what happened to "
            "the topic, or run again with --reset-positions to forget the stored positions "
            "and read the topic from the beginning (events applied before are recognised by "
            "event id and not applied twice)"
        )


def topic_identity(consumer: KafkaConsumer, topic: str) -> SourceIdentity:
    """The topic as the cluster describes it now. The topic id comes from the metadata the
    consumer already holds (Metadata v10+, Kafka 2.8+; None from older brokers)."""
    partitions = partitions_of(consumer, topic)
    cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
    topic_id = cluster.topic_id(topic) if cluster is not None else None
    return SourceIdentity(str(topic_id) if topic_id else None, len(partitions))


def check_identity(
    topic: str,
    stored: SourceIdentity | None,
    current: SourceIdentity,
    positions: Mapping[int, int],
) -> None:
    """Raise TopicChanged when the stored positions cannot belong to the topic as it is."""
    if (
        stored is not None
        and stored.topic_id
        and current.topic_id
        and stored.topic_id != current.topic_id
    ):
        raise TopicChanged(
            topic, f"was recreated (topic id {stored.topic_id}, now {current.topic_id})"
        )
    if stored is not None and stored.partition_count != current.partition_count:
        raise TopicChanged(
            topic,
            f"has {current.partition_count} partitions, the stored positions were taken "
            f"from {stored.partition_count}",
        )
    beyond = sorted(p for p in positions if p >= current.partition_count)
    if beyond:
        raise TopicChanged(topic, f"has no partition {beyond[0]} any more")


def cached_identity(consumer: KafkaConsumer, topic: str) -> SourceIdentity | None:
    """The topic as the consumer's metadata last described it, without asking the broker
    (cheap enough for every poll); None when the metadata does not know the topic."""
    cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
    if cluster is None:
        return None
    partitions = cluster.partitions_for_topic(topic)
    if not partitions:
        return None
    topic_id = cluster.topic_id(topic)
    return SourceIdentity(str(topic_id) if topic_id else None, len(partitions))


def check_not_truncated(topic: str, partition: int, position: int, highwater: int | None) -> None:
    """A consumer's position past a partition's high watermark: the log it was reading is
    gone (truncated, or the topic recreated empty). Left alone, the consumer would wait at
    that offset while new events pile up below it, reporting a lag of zero."""
    if highwater is not None and position > highwater:
        raise TopicChanged(
            topic,
            f"partition {partition} ends at offset {highwater}, below the stored position "
            f"{position}",
        )


def source_key(topic: str) -> str:
    """The key of a topic's positions in the store, shared by the consumer and
    `replay --from-kafka`, so either can continue where the other stopped."""
    return f"kafka:{topic}"


# codec -> (kafka-python's check for the library that codec needs, the package providing
# it). gzip is in the standard library. All three are dependencies of the ledger; an
# installation without one (a trimmed image) must say which, not fail on every batch.
CODEC_LIBRARIES: Mapping[str, tuple[Any, str]] = {
    "snappy": (kafka_codec.has_snappy, "python-snappy"),
    "lz4": (kafka_codec.has_lz4, "lz4"),
    "zstd": (kafka_codec.has_zstd, "zstandard"),
}


class CodecUnavailable(KafkaSourceError):
    """Record batches in a codec this installation cannot (de)compress: no record of such a
    batch can be read or written until the package is installed, so nothing is skipped."""


def _needs(codec: str) -> str | None:
    """What is missing to use `codec`, as the end of a sentence; None when nothing is."""
    check, package = CODEC_LIBRARIES.get(codec, (lambda: True, ""))
    if check():
        return None
    return (
        f"needs the Python package {package}, which is not installed (pip install {package}; "
        "jurisdiction-ledger depends on it, so this installation is incomplete)"
    )


def missing_codec(codec: str) -> CodecUnavailable | None:
    """The error for writing with a codec whose library is not installed, else None."""
    needs = _needs(codec)
    return None if needs is None else CodecUnavailable(f"--compression {codec} {needs}")


def codec_error(exc: UnsupportedCodecError) -> CodecUnavailable:
    """kafka-python's UnsupportedCodecError, raised by `poll` for a batch it cannot
    decompress, as the codec and the package that provides it."""
    text = str(exc)
    for codec in CODEC_LIBRARIES:
        if f" {codec} " in text and (needs := _needs(codec)) is not None:
            return CodecUnavailable(
                f"a record batch is compressed with {codec}, and reading it {needs}"
            )
    return CodecUnavailable(
        f"a record batch cannot be decompressed ({text}); Kafka defines the codecs "
        f"{', '.join(c for c in COMPRESSION_TYPES if c != 'none')}"
    )


def make_producer(
    kafka: KafkaSettings, *, compression: str = "none", idempotent: bool = False
) -> KafkaProducer:
    """`compression`: one of COMPRESSION_TYPES. Dead letters keep the default, none: a
    dead-letter topic is read by people with whatever tool is at hand. `idempotent`: the
    broker drops the copies a producer's own retries would write (the changefeed's relay)."""
    if compression not in COMPRESSION_TYPES:
        raise ValueError(f"unknown compression {compression!r}")
    if (missing := missing_codec(compression)) is not None:
        raise missing
    try:
        return KafkaProducer(
            bootstrap_servers=kafka.require_bootstrap(),
            bootstrap_timeout_ms=kafka.bootstrap_timeout_ms,
            acks="all",
            # One request in flight per broker keeps a user's events in order across
            # retries without relying on idempotent-producer support.
            max_in_flight_requests_per_connection=1,
            retries=10,
            linger_ms=10,
            batch_size=256 * 1024,
            compression_type=None if compression == "none" else compression,
            enable_idempotence=idempotent,
            **kafka.client,
        )
    except ValueError as exc:
        # kafka-python's word for a broker too old for the codec (zstd needs Kafka 2.1).
        raise KafkaSourceError(f"cannot write {compression} batches: {exc}") from None


def make_consumer(kafka: KafkaSettings, **extra: Any) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.require_bootstrap(),
        bootstrap_timeout_ms=kafka.bootstrap_timeout_ms,
        enable_auto_commit=False,
        # Every reader seeks explicitly (stored position, time, or the beginning). An
        # offset the broker no longer has must be an error, not a silent jump to the
        # earliest record, which stored positions would then skip.
        auto_offset_reset="none",
        # A reader never creates the topic it reads: a topic that vanished (a broker
        # restarted empty) would come back with the broker's default partition count.
        allow_auto_create_topics=False,
        isolation_level=kafka.isolation,
        **{**kafka.fetch_sizes, **extra, **kafka.client},
    )
    _record_stable_offsets(consumer)
    FrameWatch.install(consumer)
    return consumer


_STABLE = "_ledger_stable_offsets"


def _record_stable_offsets(consumer: KafkaConsumer) -> None:
    """Keep the last stable offset each fetch response reports, per partition.

    kafka-python parses it but keeps only the high watermark (`consumer.highwater`). Its
    `end_offsets()` would answer with the LSO for a read_committed consumer (ListOffsets
    with the isolation level, as the Java client's `endOffsets`), but brokers disagree on
    it (ARCHITECTURE.md: the local broker's is wrong after a batch of several records),
    and it costs a request each time. The fetch response is what the broker itself holds
    the reader to. Should kafka-python's fetcher change shape, nothing is recorded and
    `readable_end` falls back to the high watermark: a replay then waits for an open
    transaction to end instead of stopping before it, which is slower, never wrong.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    parse = getattr(fetcher, "_parse_fetched_data", None)
    if parse is None:
        return
    stable: dict[TopicPartition, int] = {}
    setattr(consumer, _STABLE, stable)

    def parse_and_record(completed_fetch: Any) -> Any:
        data = getattr(completed_fetch, "partition_data", None)
        offset = getattr(data, "last_stable_offset", -1)
        # -1: a broker before 0.11 or a failed fetch, which report no LSO.
        if isinstance(offset, int) and offset >= 0 and getattr(data, "error_code", 1) == 0:
            stable[completed_fetch.topic_partition] = offset
        return parse(completed_fetch)

    fetcher._parse_fetched_data = parse_and_record  # type: ignore[union-attr]


def readable_end(consumer: KafkaConsumer, tp: TopicPartition) -> int | None:
    """The offset up to which this consumer can read `tp` now: the last stable offset for a
    read_committed consumer (records of an open transaction wait below the high watermark
    until it ends), the high watermark otherwise. None before the first fetch response.

    For "caught up" and the lag. Truncation is judged against the high watermark instead
    (`check_not_truncated`): a stored position may lie between the two, taken by a
    read_uncommitted reader, and is no sign of a replaced topic."""
    highwater: int | None = consumer.highwater(tp)
    if highwater is None or consumer.config.get("isolation_level") != "read_committed":
        return highwater
    stable: int | None = getattr(consumer, _STABLE, {}).get(tp)
    return highwater if stable is None else min(stable, highwater)


class Fetched(NamedTuple):
    """What `to_source_record` reads of a Kafka record: the form in which a parallel
    consumer sends records to the processes that decode and plan them (a ConsumerRecord
    carries headers, sizes and a checksum nobody there needs)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes | None
    # Not fetched: a record too large to fetch (`ledger.sources.kafka_frames`), with the
    # size of the response refused and the limit it broke.
    frame: int = 0
    frame_limit: int = 0

    @classmethod
    def of(cls, msg: ConsumerRecord | Fetched) -> Fetched:
        if isinstance(msg, Fetched):
            return msg
        return cls(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.value)

    @property
    def key(self) -> bytes | None:
        return None  # a worker is chosen by partition when there is no key


def by_bytes(records: list[ConsumerRecord], max_bytes: int) -> Iterator[list[ConsumerRecord]]:
    """A poll's records as consecutive batches whose values hold at most `max_bytes` (a
    larger record alone), so a poll of many large messages becomes several batches."""
    first = total = 0
    for i, msg in enumerate(records):
        n = len(msg.value or b"")
        if i > first and total + n > max_bytes:
            yield records[first:i]
            first, total = i, 0
        total += n
    if first < len(records):
        yield records[first:] if first else records


def to_source_record(
    msg: ConsumerRecord | Fetched, codec: AvroCodec, *, limits: ByteLimits | None = None
) -> SourceRecord:
    """Record time is the Kafka record timestamp (docs/rules.md), so two replays of one topic
    build the same bitemporal history. Never raises: a value over `limits.event_bytes`, an
    undecodable value or a timestamp that is no record time (Kafka's -1 "none", or outside
    the range `check_recorded_at` keeps) is a record whose `decoded` is the EventError."""
    max_bytes = (limits or ByteLimits()).event_bytes
    decoded: tuple[Any, datetime | None] | EventError
    frame = getattr(msg, "frame", 0)
    if frame:
        decoded = EventError(unfetchable_reason(msg.offset, frame, msg.frame_limit))
    elif msg.value is None:
        decoded = EventError("empty message (tombstone), not an event")
    elif len(msg.value) > max_bytes:
        decoded = EventError(
            f"message is {len(msg.value):,} bytes, over the limit of {max_bytes:,} bytes"
        )
    else:
        try:
            event, _ = codec.decode(msg.value)
            if not isinstance(msg.timestamp, int) or msg.timestamp < 0:
                # Record time comes from the log, never the clock: without one, no event.
                raise EventError(f"Kafka record timestamp {msg.timestamp!r} is not an instant")
            try:
                decoded = (event, check_recorded_at(from_millis(msg.timestamp)))
            except ValueError as exc:  # EventError is one too
                raise EventError(f"Kafka record timestamp {msg.timestamp}: {exc}") from None
        except EventError as exc:
            decoded = exc
    return SourceRecord(
        source=source_key(msg.topic),
        partition=msg.partition,
        offset=msg.offset,
        position=f"{msg.topic}[{msg.partition}]@{msg.offset}",
        raw=msg.value or b"",
        decoded=decoded,
        size=frame or None,
    )


@dataclass(frozen=True)
class StartAt:
    """Where `read_topic` starts in each partition: an explicit offset, the stored
    position, a time, or the beginning."""

    offsets: Mapping[int, int] | None = None  # partition -> offset
    time: datetime | None = None


def partitions_of(consumer: KafkaConsumer, topic: str, timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if time.monotonic() > deadline:
            raise KafkaSourceError(f"topic {topic!r} does not exist (or has no partitions)")
        time.sleep(0.2)


def unfetchable(
    consumer: KafkaConsumer, starts: Mapping[TopicPartition, int]
) -> list[Fetched]:
    """The records at `starts` that cannot be fetched (`kafka_frames.probe`), as records
    that dead-letter themselves. Those partitions move past them; `consumer` is otherwise
    left as it was."""
    limit = frame_limit(consumer)
    found = []
    for tp, frame in sorted(probe(consumer, starts).items()):
        consumer.seek(tp, starts[tp] + 1)
        found.append(Fetched(tp.topic, tp.partition, starts[tp], -1, None, frame, limit))
    watch = FrameWatch.of(consumer)
    if watch is not None:
        watch.reset()
    return found


def _skip_unfetchable(
    consumer: KafkaConsumer, tps: list[TopicPartition], end: Mapping[TopicPartition, int]
) -> Iterator[list[Any]]:
    starts = {
        tp: consumer.position(tp)
        for tp in tps
        if (tp not in end or consumer.position(tp) < end[tp])
        and (consumer.highwater(tp) is None or consumer.position(tp) < consumer.highwater(tp))
    }
    skipped = unfetchable(consumer, starts)
    if skipped:
        yield skipped


def read_topic(
    consumer: KafkaConsumer,
    topic: str,
    start: StartAt,
    *,
    max_records: int = 5000,
    watermark_timeout_s: float = 30.0,
    stored: Mapping[int, int] | None = None,
) -> Iterator[list[ConsumerRecord]]:
    """Batches of a topic's records from `start` up to the end of each partition as first
    reported by the broker (`readable_end`: for a read_committed consumer the last stable
    offset, so an open transaction is not waited for), then stop. `stored` are the
    positions the store holds for the topic: one past a partition's high watermark means
    the topic was truncated or recreated (TopicChanged), wherever `start` begins."""
    parts = partitions_of(consumer, topic)
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    if start.offsets is not None:
        unknown = sorted(set(start.offsets) - set(parts))
        if unknown:
            raise KafkaSourceError(f"topic {topic!r} has no partition {unknown[0]}")
    if start.time is not None:
        found = consumer.offsets_for_times({tp: to_millis(start.time) for tp in tps})
    for tp in tps:
        if start.offsets is not None and tp.partition in start.offsets:
            consumer.seek(tp, start.offsets[tp.partition])
        elif start.time is not None and found.get(tp) is not None:
            consumer.seek(tp, found[tp].offset)
        elif start.time is not None:
            consumer.seek_to_end(tp)
        else:
            consumer.seek_to_beginning(tp)
    since = to_millis(start.time) if start.time is not None else None
    end: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + watermark_timeout_s
    while True:
        try:
            polled = poll_counting(consumer, timeout_ms=500, max_records=max_records)
        except (OffsetOutOfRangeError, NoOffsetForPartitionError) as exc:
            raise TopicChanged(topic, f"has no record at a requested offset ({exc})") from None
        for tp in tps:
            reached = readable_end(consumer, tp)
            if tp not in end and reached is not None:
                end[tp] = reached
                floor = (stored or {}).get(tp.partition, 0)
                check_not_truncated(topic, tp.partition, floor, consumer.highwater(tp))
        batch = [
            r
            for tp, records in polled.items()
            for r in records
            if (tp not in end or r.offset < end[tp]) and (since is None or r.timestamp >= since)
        ]
        if batch:
            yield batch
        if (watch := FrameWatch.of(consumer)) is not None and watch.blocked:
            yield from _skip_unfetchable(consumer, tps, end)
            deadline = time.monotonic() + watermark_timeout_s
        if len(end) == len(tps) and all(consumer.position(tp) >= end[tp] for tp in tps):
            return
        if len(end) < len(tps) and time.monotonic() > deadline:
            raise KafkaSourceError(
                f"the broker reported no high watermark for {topic!r} within "
                f"{watermark_timeout_s:.0f} s"
            )
        for tp in tps:
            if tp in end and consumer.position(tp) >= end[tp]:
                consumer.pause(tp)
