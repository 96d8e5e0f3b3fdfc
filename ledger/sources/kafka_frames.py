"""Records too large to fetch: found, so that they are dead-lettered by position and their
partition moves on, instead of blocking it for ever.

kafka-python refuses a response frame larger than `receive_message_max_bytes` before
reading it (InvalidReceiveError "Invalid frame length"), and a broker answers a fetch
with at least the whole first record batch at the fetch position, however large. So a
record batch over the frame limit can be fetched at no fetch size: the fetch fails, is
retried, and fails again, and the partition (and every partition fetched from the same
broker in the same request) makes no progress, while the consumer looks healthy. A broker
that answers with more than the fetch asks for (the local Tansu broker sends the batches
after the first one too) also makes the records just before such a batch unreadable:
each is found and dead-lettered the same way, one position at a time.

`FrameWatch` counts those failures on a consumer; `probe` then fetches each suspect
partition alone from a given position to tell which one holds such a record there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import InvalidReceiveError

# Failures seen before the partitions are probed: one can be a connection's hiccup.
STRIKES = 3
_LENGTH = re.compile(r"Invalid frame length: (-?\d+)")


class FrameWatch:
    """Counts the fetches a consumer lost to a response frame over its limit."""

    def __init__(self) -> None:
        self.failures = 0
        self.largest = 0  # the largest frame refused, in bytes

    @classmethod
    def install(cls, consumer: KafkaConsumer) -> FrameWatch:
        """Watch `consumer`'s fetch failures (kafka-python's fetcher reports each to
        `_handle_fetch_error`; should that change shape, nothing is counted and a blocked
        partition stays blocked, as before)."""
        watch = cls()
        fetcher = getattr(consumer, "_fetcher", None)
        handle = getattr(fetcher, "_handle_fetch_error", None)
        if handle is None:
            return watch

        def counted(node_id: Any, exception: Any) -> Any:
            watch.saw(exception)
            return handle(node_id, exception)

        fetcher._handle_fetch_error = counted  # type: ignore[union-attr]
        consumer._ledger_frames = watch
        return watch

    def saw(self, exception: BaseException) -> bool:
        """Count `exception` if it is a refused frame (also when `poll` raises it, as it
        does when a metadata request on the same connection failed with it)."""
        if not isinstance(exception, InvalidReceiveError):
            return False
        self.failures += 1
        found = _LENGTH.search(str(exception))
        if found:
            self.largest = max(self.largest, int(found.group(1)))
        return True

    @staticmethod
    def of(consumer: KafkaConsumer) -> FrameWatch | None:
        found: FrameWatch | None = getattr(consumer, "_ledger_frames", None)
        return found

    @property
    def blocked(self) -> bool:
        return self.failures >= STRIKES

    def reset(self) -> None:
        self.failures = 0
        self.largest = 0


def poll_counting(consumer: KafkaConsumer, **kwargs: Any) -> dict[Any, Any]:
    """`consumer.poll`, with a refused frame it raises counted instead of raised."""
    try:
        polled: dict[Any, Any] = consumer.poll(**kwargs)
        return polled
    except InvalidReceiveError as exc:
        watch = FrameWatch.of(consumer)
        if watch is None:
            raise
        watch.saw(exc)
        return {}


def frame_limit(consumer: KafkaConsumer) -> int:
    return int(consumer.config.get("receive_message_max_bytes", 100_000_000))


def probe(
    consumer: KafkaConsumer, starts: Mapping[TopicPartition, int], timeout_s: float = 5.0
) -> dict[TopicPartition, int]:
    """The partitions of `starts` whose record batch at their start position cannot be
    fetched, with the size of the frame refused. Each is fetched alone by a consumer of
    its own with the same settings (no group), so `consumer` is left as it was."""
    config = {k: v for k, v in consumer.config.items() if k in KafkaConsumer.DEFAULT_CONFIG}
    config.update(group_id=None, enable_auto_commit=False)
    found: dict[TopicPartition, int] = {}
    for tp, start in starts.items():
        prober = KafkaConsumer(**config)
        watch = FrameWatch.install(prober)
        try:
            prober.assign([tp])
            prober.seek(tp, start)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not watch.blocked:
                if poll_counting(prober, timeout_ms=500, max_records=1).get(tp):
                    break  # fetchable
                end = prober.highwater(tp)
                if end is not None and start >= end:
                    break  # nothing there to fetch
            if watch.blocked:
                found[tp] = watch.largest
        finally:
            prober.close(autocommit=False)
    return found


def unfetchable_reason(offset: int, frame: int, limit: int) -> str:
    return (
        f"the record at offset {offset} cannot be fetched: its record batch comes in a "
        f"{frame:,}-byte response, over the {limit:,} bytes a response may have "
        "(LEDGER_KAFKA_FRAME_MB); dead-lettered by position, its bytes never read"
    )
