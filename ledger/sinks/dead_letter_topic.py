"""The dead-letter topic: a batch's dead letters sent to `<topic>.dlq` with headers that name
the original record, acknowledged by the broker before the batch commits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import MessageSizeTooLargeError

from ledger.sources.records import DeadLetter

# Header names on dead letters, so an operator can find the original record.
DLQ_REASON = "ledger.reason"
DLQ_TOPIC = "ledger.source.topic"
DLQ_PARTITION = "ledger.source.partition"
DLQ_OFFSET = "ledger.source.offset"


DLQ_ENVELOPE = "ledger.envelope"
# Room left in a request for the headers and the record batch around a dead letter's value.
_REQUEST_OVERHEAD = 16 * 1024


def dead_letter_envelope(d: DeadLetter) -> bytes:
    """What the DLQ gets instead of raw input too large for the broker: enough to find the
    original (its source position; the dead-letter table keeps the raw bytes) and to check
    a copy of it (size and SHA-256)."""
    raw = d.record.raw_bytes
    return json.dumps(
        {
            "reason": d.reason,
            "source": d.record.source,
            "partition": d.record.partition,
            "offset": d.record.offset,
            "position": d.record.position,
            "size": d.record.size if d.record.size is not None else len(raw),
            # Only of the whole input: a record too large to fetch was never read.
            "sha256": (
                hashlib.sha256(raw).hexdigest()
                if d.record.size in (None, len(raw))
                else None
            ),
        },
        ensure_ascii=False,
    ).encode()


def _needs_envelope(d: DeadLetter, max_value: int) -> bool:
    """Raw input too large to send, or not all of it at hand (a record too large to fetch):
    the DLQ gets the envelope, which says so."""
    rec = d.record
    return len(rec.raw) > max_value or (rec.size is not None and rec.size > len(rec.raw))


class DeadLetterPublisher:
    """Sends a batch's dead letters to the DLQ topic and waits for the broker's ack, so
    the batch only commits once they are safe (at worst a crash repeats a dead letter;
    none is ever lost). A dead letter larger than the producer or the broker accepts is
    sent as its envelope, marked by the header `ledger.envelope`."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.max_value = int(producer.config["max_request_size"]) - _REQUEST_OVERHEAD

    def _send(self, d: DeadLetter, envelope: bool) -> Any:
        rec = d.record
        source_topic = rec.position.split("[", 1)[0]
        headers = [
            (DLQ_REASON, d.reason.encode()),
            (DLQ_TOPIC, source_topic.encode()),
            (DLQ_PARTITION, str(rec.partition).encode()),
            (DLQ_OFFSET, str(rec.offset).encode()),
        ]
        if envelope:
            headers.append((DLQ_ENVELOPE, b"1"))
        return self.producer.send(
            self.topic,
            key=(d.user_id or "").encode() or None,
            value=dead_letter_envelope(d) if envelope else rec.raw,
            headers=headers,
        )

    def __call__(self, dead_letters: Sequence[DeadLetter]) -> None:
        sent = [(d, self._send(d, _needs_envelope(d, self.max_value))) for d in dead_letters]
        if not sent:
            return
        self.producer.flush()
        retried = []
        for d, future in sent:
            try:
                future.get(timeout=30)  # raises if the broker refused it
            except MessageSizeTooLargeError:
                # The broker's own limit (message.max.bytes) is below the producer's.
                retried.append(self._send(d, True))
        if retried:
            self.producer.flush()
            for future in retried:
                future.get(timeout=30)
