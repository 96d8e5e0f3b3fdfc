"""What every source yields: one record as read, decoded or not, with its position; and a
record the ledger rejected, with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger.codecs.jsonl import event_to_json_line
from ledger.domain.events import Event, EventError
from ledger.domain.limits import EVENT_ID_CHARS, USER_ID_CHARS


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One item read from a source, decoded or not."""

    source: str  # stable key of the source: "file:<sha256>" or "kafka:<topic>"
    partition: int
    offset: int  # position within the partition; the next record is offset + 1
    position: str  # for people: "events.jsonl:17", "account-events[3]@1234"
    raw: bytes
    decoded: tuple[Event, datetime | None] | EventError
    # The input's full size where `raw` holds only its start (a line over the size limit,
    # read no further); None: `raw` is all of it.
    size: int | None = None

    @property
    def raw_bytes(self) -> bytes:
        """The bytes to keep for a dead letter. A record of an Avro container has no bytes
        of its own; the decoded event stands in for it."""
        if self.raw or isinstance(self.decoded, EventError):
            return self.raw
        event, recorded_at = self.decoded
        return event_to_json_line(event, recorded_at).encode()


REASON_CHARS = 500


def _storable(value: str | None, max_chars: int) -> str | None:
    """An id a dead letter can keep in its own column: one that did not fit there is still
    in the raw input, and a dead letter must never be refused itself."""
    if value is None or len(value) > max_chars or "\x00" in value:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value


def bounded(text: str, limit: int = REASON_CHARS) -> str:
    """`text` on one line and at most `limit` characters, every character storable and
    printable: reasons quote the input, and the input may be a megabyte of anything."""
    size = len(text)
    text = text[: limit * 2]  # nothing past this can be kept; keep the work bounded too
    text = text.encode("utf-8", "backslashreplace").decode()
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
    one_line = " ".join(text.split())
    if size <= limit and len(one_line) <= limit:
        return one_line
    return one_line[: limit - 30] + f"… ({size:,} characters)"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: SourceRecord
    reason: str  # bounded: see `bounded`
    event_id: str | None = None
    user_id: str | None = None

    @classmethod
    def of(
        cls,
        record: SourceRecord,
        reason: str,
        event_id: str | None = None,
        user_id: str | None = None,
    ) -> DeadLetter:
        return cls(
            record,
            bounded(reason),
            _storable(event_id, EVENT_ID_CHARS),
            _storable(user_id, USER_ID_CHARS),
        )

    def raw(self, limit: int) -> tuple[bytes, int]:
        """The raw input cut to `limit` bytes, and its full size."""
        raw = self.record.raw_bytes
        return raw[:limit], self.record.size or len(raw)


@dataclass(frozen=True, slots=True)
class SourceIdentity:
    """Which incarnation of a source stored positions belong to. A Kafka topic that was
    deleted and created again has a new topic id (brokers with topic ids) and may have
    another partition count; positions of the old one mean nothing in the new one."""

    topic_id: str | None
    partition_count: int
