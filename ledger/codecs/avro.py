"""Avro encodings of events: single-object encoding for messages, object container files
for archives. The writer schema of a message is found by its CRC-64-AVRO fingerprint.

Decoding never raises anything but `EventError`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from ledger.domain.events import PAYLOAD_CLASSES, Event, EventError, build_event, payload_fields
from ledger.domain.time import truncate_ms
from ledger.resources import schemas_dir

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
NAMESPACE = "ledger.events"
ENVELOPE_FILE = "AccountEvent.avsc"


def load_envelope_schema(directory: Path | None = None) -> dict[str, Any]:
    """The envelope with every payload record inlined, so the schema (and its fingerprint)
    is self-contained."""
    directory = directory or schemas_dir()
    envelope = json.loads((directory / ENVELOPE_FILE).read_text())
    inlined: list[Any] = []
    for field in envelope["fields"]:
        if field["name"] == "payload":
            for name in field["type"]:
                short = name.rsplit(".", 1)[-1]
                inlined.append(json.loads((directory / f"{short}.avsc").read_text()))
            field["type"] = inlined
    return envelope


@dataclass(frozen=True)
class WriterSchema:
    parsed: Any
    fingerprint: bytes


class AvroCodec:
    """Encodes with the current schema; decodes any known writer schema by fingerprint."""

    def __init__(self, directory: Path | None = None) -> None:
        self.schema = parse_schema(load_envelope_schema(directory))
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(self.schema), "CRC-64-AVRO"))
        self.current = WriterSchema(self.schema, fp)
        self.writers: dict[bytes, WriterSchema] = {fp: self.current}

    # -- records --------------------------------------------------------------------------
    @staticmethod
    def to_record(event: Event, recorded_at: datetime | None = None) -> dict[str, Any]:
        return {
            "event_id": event.event_id,
            "user_id": event.user_id,
            "occurred_at": event.occurred_at,
            "payload": (f"{NAMESPACE}.{event.type}", payload_fields(event.payload)),
            "recorded_at": recorded_at,
        }

    @staticmethod
    def from_record(record: dict[str, Any]) -> tuple[Event, datetime | None]:
        try:
            type_name, payload = record["payload"]
            fields = dict(payload)
            fields["type"] = type_name.rsplit(".", 1)[-1]
            fields["event_id"] = str(record["event_id"])
            fields["user_id"] = record["user_id"]
            fields["occurred_at"] = record["occurred_at"]
        except (KeyError, TypeError, ValueError) as exc:
            raise EventError(f"Avro record does not fit the envelope: {exc}") from None
        if fields["type"] not in PAYLOAD_CLASSES:
            raise EventError(f"unknown event type {fields['type']!r}")
        recorded_at = record.get("recorded_at")
        return build_event(fields), truncate_ms(recorded_at) if recorded_at else None

    # -- single-object encoding (messages) ------------------------------------------------
    def encode(self, event: Event, recorded_at: datetime | None = None) -> bytes:
        buf = io.BytesIO()
        buf.write(SINGLE_OBJECT_MAGIC)
        buf.write(self.current.fingerprint)
        fastavro.schemaless_writer(buf, self.schema, self.to_record(event, recorded_at))
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[Event, datetime | None]:
        if len(data) < 10 or data[:2] != SINGLE_OBJECT_MAGIC:
            raise EventError("not Avro single-object encoded (missing C3 01 header)")
        fp = bytes(data[2:10])
        writer = self.writers.get(fp)
        if writer is None:
            raise EventError(f"unknown writer schema fingerprint {fp.hex()}")
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[10:]), writer.parsed, self.schema, return_record_name=True
            )
        except EventError:
            raise
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise EventError(
                f"truncated or corrupt Avro body: {type(exc).__name__}: {exc}"
            ) from None
        return self.from_record(record)  # type: ignore[arg-type]

    # -- object container files (archives) ------------------------------------------------
    def write_container(
        self,
        fo: IO[bytes],
        items: Iterable[tuple[Event, datetime | None]],
        *,
        sync_marker: bytes | None = None,
    ) -> int:
        """Write an object container file; a fixed 16-byte `sync_marker` (fastavro draws a
        random one) makes the same events give byte-identical files."""
        count = 0

        def records() -> Iterator[dict[str, Any]]:
            nonlocal count
            for event, recorded_at in items:
                count += 1
                yield self.to_record(event, recorded_at)

        fastavro.writer(fo, self.schema, records(), codec="deflate", sync_marker=sync_marker)
        return count

    def read_container(
        self, fo: IO[bytes]
    ) -> Iterator[tuple[int, tuple[Event, datetime | None] | EventError]]:
        """Yields (record index, decoded event or the error for that record). A corrupt or
        truncated container ends with one error: nothing past that point can be read."""
        try:
            reader = fastavro.reader(fo, reader_schema=self.schema, return_record_name=True)
        except Exception as exc:
            yield 0, EventError(f"not an Avro container file: {type(exc).__name__}: {exc}")
            return
        index = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except Exception as exc:
                yield (
                    index,
                    EventError(
                        f"truncated or corrupt Avro container after record {index}: "
                        f"{type(exc).__name__}: {exc}"
                    ),
                )
                return
            try:
                yield index, self.from_record(record)  # type: ignore[arg-type]
            except EventError as exc:
                yield index, exc
            index += 1
