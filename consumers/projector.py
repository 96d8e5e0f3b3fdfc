"""The projector service: a Kafka consumer-group member that keeps the read model current.

Exactly-once effect: each batch's projection changes and the partitions' next offsets
commit in one store transaction (`ledger.app.ingest.projector.Projector.apply_batch`). On
every partition assignment the consumer seeks to the stored offsets (the beginning where
none is stored), so Kafka's own committed offsets, written after each batch, only serve lag
monitoring.
A crash between the database commit and the Kafka commit costs nothing: the next owner
seeks to the database's positions.

With `Settings.workers`, worker processes decode and plan each polled batch while this
process polls the next and writes the one before (`ledger.app.ingest.pipeline_stream`);
a rebalance or a failed batch drops the batches in flight, which are polled again from
the stored positions. Batches are written between polls, and rebalance callbacks run
inside `poll`, so a revocation never interrupts a write. SIGTERM/SIGINT finish the
batches polled, commit, leave the group and return 0. Bad input goes to `<topic>.dlq`
and the dead-letter table; a database outage pauses consumption and retries with backoff
from the stored positions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    InvalidReceiveError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)
from kafka.structs import OffsetAndMetadata

from ledger.app.ingest.pipeline_stream import StreamPipeline
from ledger.app.ingest.plan import BatchResult
from ledger.app.ingest.projector import Projector
from ledger.app.ports import ParallelStore, StoreConflict, StoreUnavailable
from ledger.codecs.avro import AvroCodec
from ledger.config import Settings
from ledger.domain.time import from_millis, truncate_ms
from ledger.sinks.dead_letter_topic import DeadLetterPublisher
from ledger.sources.kafka import (
    TopicChanged,
    by_bytes,
    cached_identity,
    check_identity,
    check_not_truncated,
    make_consumer,
    make_producer,
    readable_end,
    source_key,
    to_source_record,
    topic_identity,
    unfetchable,
)
from ledger.sources.kafka_frames import FrameWatch, poll_counting
from ledger.sources.records import SourceIdentity, SourceRecord

log = logging.getLogger("ledger.consume")


@dataclass
class Stats:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    suppressed: int = 0  # records of erased users
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no types
    def __init__(self, service: ProjectorService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Another member may now write these users: cached state is no longer safe, and
        # batches planned from it are not written.
        self.service.projector.forget()
        if self.service.pipeline is not None:
            self.service.pipeline.drop()
        if revoked:
            log.info(
                "partitions revoked: %s", _names(revoked), extra={"partitions": _numbers(revoked)}
            )

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.service.projector.forget()
        if assigned:
            log.info(
                "partitions assigned: %s",
                _names(assigned),
                extra={"partitions": _numbers(assigned)},
            )
            self.service.seek_to_stored(assigned)


def _names(tps: list[TopicPartition] | set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps))


def _numbers(tps: list[TopicPartition] | set[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in tps)


class ProjectorService:
    def __init__(
        self,
        settings: Settings,
        projector: Projector,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Any = None,
        open_store: Callable[[], ParallelStore] | None = None,
    ) -> None:
        self.settings = settings
        # What worker processes open the store with; None plans every batch here.
        self.open_store = open_store
        self.pipeline: StreamPipeline | None = None
        # consumers.metrics.ProjectorMetrics (or None): told what `stats` is told, and more.
        self.metrics = metrics
        self.projector = projector
        self.clock = clock
        self.codec = AvroCodec()
        self.stats = Stats()
        self.stopping = False
        self.consumer: KafkaConsumer | None = None
        # Partitions whose stored position could not be read yet (database down).
        self.unpositioned: set[TopicPartition] = set()
        self.last_log = time.monotonic()
        self.logged_stats = Stats()
        self.backoff = 0.0  # seconds before the next retry after a failed batch
        self.retry_due = False  # a batch failed: wait `backoff` before the next attempt
        # The topic incarnation the stored positions were checked against at assignment.
        self.identity: SourceIdentity | None = None
        self.failure: TopicChanged | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def request_stop(self, signum: int = 0, _frame: object = None) -> None:
        if not self.stopping:
            log.info(
                "stopping after the current batch (signal %s)", signum, extra={"signal": signum}
            )
        self.stopping = True

    def fail(self, exc: TopicChanged) -> None:
        """Stop without applying anything more; `run` raises `exc` once the group is left."""
        if self.failure is None:
            log.error("%s", exc)
            self.failure = exc
        self.stopping = True

    def run(self, *, reset_positions: bool = False) -> int:
        """Consume until asked to stop; 0. Raises TopicChanged (after leaving the group)
        when the topic is not the one the stored positions belong to. `reset_positions`
        forgets them first, so the topic is read from the beginning."""
        s, kafka = self.settings.consumer, self.settings.kafka
        if reset_positions:
            forgotten = self.projector.store.reset_positions(source_key(kafka.topic))
            log.info("forgot the stored positions of %d partition(s) of %s", forgotten, kafka.topic)
        consumer = self.consumer = make_consumer(
            kafka,
            group_id=s.group,
            max_poll_records=s.batch_size,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
        )
        producer = make_producer(kafka)
        dead_letters = DeadLetterPublisher(producer, kafka.dlq_topic)
        consumer.subscribe([kafka.topic], listener=_SeekToStored(self))
        log.info(
            "consuming %s as group %s",
            kafka.topic,
            s.group,
            extra={"topic": kafka.topic, "group": s.group},
        )
        if self.metrics:
            self.metrics.started()
        try:
            self.pipeline = self._start_pipeline()
            while not self.stopping:
                try:
                    if not self._step(consumer, dead_letters):
                        break
                except InvalidReceiveError as exc:
                    # A response over the frame limit aborts the connection, and whatever
                    # used it next (a metadata request, a position) raises this: counted,
                    # so the partition that holds the record is found and moved past.
                    if (watch := FrameWatch.of(consumer)) is None:
                        raise
                    watch.saw(exc)
            while self.failure is None and self.pipeline is not None and self.pipeline.busy:
                self._write_next(dead_letters, 1.0)  # what was polled before the stop
        finally:
            if self.metrics:
                self.metrics.stopped()
            pipeline, self.pipeline = self.pipeline, None  # leaving the group revokes
            try:
                if pipeline is not None:
                    pipeline.close()
            finally:
                self._close(producer)
        if self.failure is not None:
            raise self.failure
        return 0

    def _step(self, consumer: KafkaConsumer, dead_letters: DeadLetterPublisher) -> bool:
        """One turn of the loop; False when the consumer must stop."""
        # After any failure, whatever it was: re-seeking to the stored positions succeeds
        # while the database can be read, and a batch that cannot be written would
        # otherwise be retried at once, for ever, at full speed.
        if self.retry_due or (self.unpositioned and not self._position_pending()):
            self.retry_due = False
            self._backoff_wait()
            return True
        watch = FrameWatch.of(consumer)
        if watch is not None and watch.blocked:
            self._skip_unfetchable(consumer, dead_letters)
            return True
        if not self._poll(consumer, dead_letters):
            return False
        if self.pipeline is not None and self.pipeline.busy:
            # Waits for plans only while nothing more may be polled.
            self._write_next(dead_letters, 1.0 if self.pipeline.full else 0.0)
        if self.metrics:
            self.metrics.heartbeat()
            self.metrics.lag_by_partition(self.lag())
        self._maybe_log()
        return True

    def _start_pipeline(self) -> StreamPipeline | None:
        workers = self.settings.workers
        store = self.projector.store
        if workers <= 0 or self.open_store is None or not isinstance(store, ParallelStore):
            return None
        return StreamPipeline(
            self.projector,
            store,
            self.open_store,
            source_key(self.settings.kafka.topic),
            workers=workers,
            codec=self.codec,
        )

    def _poll(self, consumer: KafkaConsumer, dead_letters: DeadLetterPublisher) -> bool:
        """Poll a batch unless enough are in flight, and apply it (or send it to the
        workers); False when the topic changed under this consumer."""
        s, kafka = self.settings.consumer, self.settings.kafka
        pipeline = self.pipeline
        if pipeline is not None and pipeline.full:
            return True
        timeout = 0 if pipeline is not None and pipeline.busy else s.poll_timeout_ms
        try:
            polled = poll_counting(consumer, timeout_ms=timeout, max_records=s.batch_size)
        except (OffsetOutOfRangeError, NoOffsetForPartitionError) as exc:
            self.fail(TopicChanged(kafka.topic, f"no longer has the stored offsets ({exc})"))
            return False
        if not self._topic_unchanged():
            return False
        fetched = [m for tp, msgs in polled.items() if tp not in self.unpositioned for m in msgs]
        for part in by_bytes(fetched, self.settings.batch_bytes):
            if self.pipeline is not None:
                self.pipeline.submit(part, truncate_ms(self.clock()))
            else:
                self._apply([to_source_record(m, self.codec) for m in part], dead_letters)
        return True

    def _topic_unchanged(self) -> bool:
        """After every poll: the topic is still the incarnation checked at assignment, and
        no partition's position is past its end (the topic was truncated or recreated while
        this consumer ran, e.g. a broker that restarted empty)."""
        assert self.consumer is not None
        if self.failure is not None:  # found while partitions were being assigned
            return False
        topic = self.settings.kafka.topic
        try:
            now = cached_identity(self.consumer, topic)
            if self.identity is not None and now is not None:
                check_identity(topic, self.identity, now, {})
            for tp in self.consumer.assignment():
                if tp not in self.unpositioned:
                    # Against the high watermark, not the LSO: a position between them
                    # is legal (`ledger.sources.kafka.readable_end`).
                    check_not_truncated(
                        topic, tp.partition, self.consumer.position(tp), self.consumer.highwater(tp)
                    )
        except TopicChanged as exc:
            self.fail(exc)
            return False
        return True

    # -- batches ---------------------------------------------------------------------------
    def _apply(self, records: list[SourceRecord], dead_letters: DeadLetterPublisher) -> None:
        started = time.perf_counter()
        try:
            result = self.projector.apply_batch(
                records,
                truncate_ms(self.clock()),
                before_commit=dead_letters,
                identity=self.identity,
            )
        except (StoreUnavailable, StoreConflict, KafkaError, OSError) as exc:
            # Nothing of the batch committed (a batch the database refuses is bisected by
            # the projector instead).
            self._failed(exc)
            return
        newest = max(
            (r.decoded[1] for r in records if isinstance(r.decoded, tuple) and r.decoded[1]),
            default=None,
        )
        self._applied(result, time.perf_counter() - started, records, newest)

    def _skip_unfetchable(self, consumer: KafkaConsumer, dead_letters: DeadLetterPublisher) -> None:
        """Fetches keep failing on a response over the frame limit: find the partitions
        whose record at the stored position cannot be fetched, dead-letter those records by
        position (in one transaction with their positions, as any dead letter), and read
        every partition on from the stored positions. Batches in flight are dropped first:
        the probe moves the partitions' positions."""
        if self.pipeline is not None:
            self.pipeline.drop()
        assigned = sorted(
            (tp for tp in consumer.assignment() if tp not in self.unpositioned),
            key=lambda tp: tp.partition,
        )
        try:
            stored = self.projector.store.stored_positions(source_key(self.settings.kafka.topic))
        except (StoreUnavailable, StoreConflict) as exc:
            self._failed(exc)
            return
        firsts = consumer.beginning_offsets([tp for tp in assigned if tp.partition not in stored])
        starts = {tp: stored.get(tp.partition, firsts.get(tp, 0)) for tp in assigned}
        # Only where there is something to fetch: the end of a partition whose fetches fail
        # is unknown (no response came), that of one read to its end is its position.
        starts = {
            tp: start
            for tp, start in starts.items()
            if consumer.highwater(tp) is None or start < consumer.highwater(tp)
        }
        skipped = unfetchable(consumer, starts)
        for record in skipped:
            log.warning(
                "%s[%d]@%d cannot be fetched (a %d-byte response); dead-lettering it by position",
                record.topic,
                record.partition,
                record.offset,
                record.frame,
                extra={"partition": record.partition, "offset": record.offset},
            )
        self.unpositioned |= set(assigned)
        consumer.pause(*assigned)
        if skipped:
            self._apply([to_source_record(f, self.codec) for f in skipped], dead_letters)

    def _write_next(self, dead_letters: DeadLetterPublisher, wait_s: float) -> None:
        """Write the oldest batch in flight if its plans are in within `wait_s`."""
        assert self.pipeline is not None
        started = time.perf_counter()
        try:
            written = self.pipeline.next_written(
                wait_s, identity=self.identity, before_commit=dead_letters
            )
        except (StoreUnavailable, StoreConflict, KafkaError, OSError) as exc:
            self.pipeline.drop()
            self._failed(exc)
            return
        if written is None:
            return
        stamps = [m.timestamp for m in written.records if isinstance(m.timestamp, int)]
        newest = from_millis(max(stamps)) if stamps and max(stamps) >= 0 else None
        self._applied(written.result, time.perf_counter() - started, written.records, newest)

    def _failed(self, exc: BaseException) -> None:
        """A batch failed with nothing of it committed: rewind every partition to the
        stored positions once the database answers again."""
        assert self.consumer is not None
        log.warning(
            "batch failed, will retry from the stored positions: %s",
            _one_line(exc),
            extra={"error": _one_line(exc)},
        )
        if self.metrics:
            self.metrics.batch_failed(exc)
        self.projector.forget()
        self.unpositioned |= set(self.consumer.assignment())
        self.consumer.pause(*self.unpositioned)
        self.retry_due = True

    def _applied(
        self,
        result: BatchResult,
        seconds: float,
        records: Sequence[SourceRecord | ConsumerRecord],
        newest: datetime | None,
    ) -> None:
        self.backoff = 0.0
        self.stats.applied += result.applied
        self.stats.duplicates += result.duplicates
        self.stats.dead_lettered += result.dead_lettered
        self.stats.suppressed += result.suppressed
        self.stats.batches += 1
        if self.metrics:
            self.metrics.batch_applied(result, seconds, newest)
        for d in result.dead_letters:
            log.warning(
                "dead letter %s: %s",
                d.record.position,
                d.reason,
                extra={"position": d.record.position, "reason": d.reason},
            )
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for rec in records:
            tp = TopicPartition(self.settings.kafka.topic, rec.partition)
            offsets[tp] = OffsetAndMetadata(rec.offset + 1, "", -1)
        self._commit_for_monitoring(offsets)

    def _commit_for_monitoring(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        assert self.consumer is not None
        try:
            self.consumer.commit(offsets=offsets)
        except KafkaError as exc:
            # Only lag monitoring reads these; the database holds the real positions.
            log.info("offset commit skipped: %s", _one_line(exc))

    # -- positions -------------------------------------------------------------------------
    def seek_to_stored(self, tps: list[TopicPartition]) -> None:
        assert self.consumer is not None
        topic = self.settings.kafka.topic
        try:
            stored = self.projector.store.stored_positions(source_key(topic))
            stored_identity = self.projector.store.source_identity(source_key(topic))
        except (StoreUnavailable, StoreConflict) as exc:
            log.warning("cannot read stored positions yet: %s", _one_line(exc))
            if self.metrics:
                self.metrics.positions_unreadable()
            self.unpositioned |= set(tps)
            self.consumer.pause(*tps)
            return
        try:
            current = topic_identity(self.consumer, topic)
            check_identity(topic, stored_identity, current, stored)
        except TopicChanged as exc:
            self.consumer.pause(*tps)
            self.fail(exc)
            return
        self.identity = current
        if self.pipeline is not None:
            self.pipeline.positioned([tp.partition for tp in tps], stored)
        for tp in tps:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                self.consumer.seek_to_beginning(tp)
        self.unpositioned -= set(tps)
        self.consumer.resume(*tps)

    def _position_pending(self) -> bool:
        assert self.consumer is not None
        pending = [tp for tp in self.unpositioned if tp in self.consumer.assignment()]
        self.unpositioned &= set(pending)
        if pending:
            self.seek_to_stored(pending)
        return not self.unpositioned

    def _backoff_wait(self) -> None:
        assert self.consumer is not None
        self.backoff = min(self.settings.consumer.max_backoff_s, max(0.5, self.backoff * 2))
        log.info("retrying in %.1f s", self.backoff, extra={"retry_in_s": self.backoff})
        deadline = time.monotonic() + self.backoff
        while time.monotonic() < deadline and not self.stopping:
            # Paused partitions return nothing, but polling keeps the membership alive.
            self.consumer.poll(timeout_ms=200)
            if self.metrics:
                self.metrics.heartbeat()

    # -- reporting ---------------------------------------------------------------------------
    def lag(self) -> dict[int, int]:
        """Records this consumer can read but has not, per partition: up to the last stable
        offset when read_committed, so an open transaction is not counted as lag."""
        assert self.consumer is not None
        out = {}
        for tp in self.consumer.assignment():
            end = readable_end(self.consumer, tp)
            if end is not None:
                out[tp.partition] = max(0, end - self.consumer.position(tp))
        return dict(sorted(out.items()))

    def _maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_log < self.settings.consumer.log_every_s:
            return
        elapsed = now - self.last_log
        rate = (self.stats.applied - self.logged_stats.applied) / elapsed if elapsed else 0.0
        lag = self.lag()
        log.info(
            "applied %d events (%.0f/s), %d duplicates, %d dead letters, %d suppressed; "
            "lag by partition %s",
            self.stats.applied,
            rate,
            self.stats.duplicates,
            self.stats.dead_lettered,
            self.stats.suppressed,
            lag,
            extra={
                "applied": self.stats.applied,
                "events_per_second": round(rate, 1),
                "duplicates": self.stats.duplicates,
                "dead_lettered": self.stats.dead_lettered,
                "suppressed": self.stats.suppressed,
                "lag": lag,
            },
        )
        self.last_log = now
        self.logged_stats = Stats(**{**self.stats.__dict__})

    def _close(self, producer: Any) -> None:
        assert self.consumer is not None
        self._maybe_log(force=True)
        try:
            producer.close(timeout=10)
        finally:
            # Leaves the group now instead of waiting out the session timeout.
            self.consumer.close(autocommit=False)
        log.info("stopped")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
