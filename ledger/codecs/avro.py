"""Avro encodings of events: single-object encoding for messages, object container files
for archives. The writer schema of a message is found by its CRC-64-AVRO fingerprint among
every released event schema version, resolved to the current schema and upcast
(`ledger.codecs.releases`).

Decoding never raises anything but `EventError`. It reads `timestamp-millis`, `date` and
`uuid` values as the plain longs, ints and strings they are on the wire and converts them
itself, so a value out of range (any long is a valid timestamp-millis on the wire) is an
error naming its field rather than an OverflowError from inside fastavro. Container files
are read block by block with the sizes bounded (`read_container`), so a forged block length
or a deflate bomb is a dead letter, not an exhausted memory.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, cast

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from ledger.codecs.releases import NAMESPACE, load_releases, upcast
from ledger.domain.events import (
    PAYLOAD_CLASSES,
    Event,
    EventError,
    build_event,
    check_recorded_at,
    payload_fields,
)
from ledger.domain.limits import quote
from ledger.domain.time import from_millis

SINGLE_OBJECT_MAGIC = b"\xc3\x01"

# Logical types decoded by hand (see the module docstring); their wire types are read as is.
_PLAIN_ON_READ = frozenset({"timestamp-millis", "date", "uuid"})
_EPOCH_DAY = date(1970, 1, 1).toordinal()

CONTAINER_MAGIC = b"Obj\x01"
_SYNC_SIZE = 16
# Headers are a magic, a small map (schema and codec) and a sync marker; ours is ~3 KB.
_HEADER_BYTES = 1 << 20
_HEADER_SCHEMA = parse_schema(
    {
        "type": "record",
        "name": "org.apache.avro.file.Header",
        "fields": [
            {"name": "magic", "type": {"type": "fixed", "name": "Magic", "size": 4}},
            {"name": "meta", "type": {"type": "map", "values": "bytes"}},
            {"name": "sync", "type": {"type": "fixed", "name": "Sync", "size": _SYNC_SIZE}},
        ],
    }
)
# Decompressors whose output can be capped (`max_length`); the codecs fastavro itself can
# read without optional libraries.
_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "deflate": lambda: zlib.decompressobj(-15),
    "bzip2": bz2.BZ2Decompressor,
    "xz": lzma.LZMADecompressor,
}


class UnresolvedRecord(EventError):
    """A container record whose writer schema does not resolve to this version's: `message`
    is the record as a single-object message of its writer's schema, which is what a
    dead letter keeps of it (`ledger.sources.files`)."""

    def __init__(self, reason: str, message: bytes) -> None:
        super().__init__(reason)
        self.message = message


class _Corrupt(Exception):
    """The container cannot be read past this point."""


def _plain(schema: Any) -> Any:
    """`schema` with the logical types of `_PLAIN_ON_READ` reduced to their wire types."""
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    if isinstance(schema, dict):
        if schema.get("logicalType") in _PLAIN_ON_READ:
            return schema["type"]
        return {k: _plain(v) for k, v in schema.items()}
    return schema


def _described(exc: BaseException, limit: int = 200) -> str:
    """An exception from a library as one short line of storable text: its message may
    quote input, NUL and lone surrogates included."""
    text = f"{type(exc).__name__}: {exc}"
    if not text.isprintable():
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class WriterSchema:
    version: int  # the event schema version (ledger.codecs.releases)
    parsed: Any
    fingerprint: bytes
    plain: Any  # `parsed` with the logical types read by hand (`_plain`), for decoding
    canonical: str  # Parsing Canonical Form, to know a container's embedded schema by


class AvroCodec:
    """Encodes with the current schema; decodes what any released version wrote, by the
    fingerprint of its writer schema, resolved to the current schema and upcast
    (`ledger.codecs.releases`).

    `version` makes the codec of a ledger of that older version: it reads the versions up
    to it and nothing newer, as that release did (for tests of the upgrade path)."""

    def __init__(self, directory: Path | None = None, *, version: int | None = None) -> None:
        releases = load_releases(directory, up_to=version)
        if not releases or (version is not None and releases[-1].version != version):
            raise ValueError(f"no event schema version {version} in {directory or 'schemas'}")
        self.writers: dict[bytes, WriterSchema] = {}
        for release in releases:
            parsed = parse_schema(release.envelope)
            plain = parse_schema(_plain(release.envelope))
            canonical = _canonical(parsed)
            fp = bytes.fromhex(release.fingerprint)
            self.writers[fp] = WriterSchema(release.version, parsed, fp, plain, canonical)
        self.current = self.writers[fp]
        self.version = self.current.version
        self.schema = self.current.parsed
        self.plain_schema = self.current.plain
        self.payload_types = releases[-1].payload_types
        self._by_canonical = {w.canonical: w for w in self.writers.values()}

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
        """An envelope record as decoded (times and dates as longs and ints, or already as
        datetime and date) into an event and its record time."""
        try:
            type_name, payload = record["payload"]
            fields = dict(payload)
            fields["type"] = type_name.rsplit(".", 1)[-1]
            event_id = record["event_id"]
            # A string as read here; a UUID from readers that apply the logical type.
            fields["event_id"] = str(event_id) if isinstance(event_id, uuid.UUID) else event_id
            fields["user_id"] = record["user_id"]
            fields["occurred_at"] = record["occurred_at"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventError(f"Avro record does not fit the envelope: {_described(exc)}") from None
        if fields["type"] not in PAYLOAD_CLASSES:
            raise EventError(f"unknown event type {quote(fields['type'])}")
        fields["occurred_at"] = _instant("occurred_at", fields["occurred_at"])
        if isinstance(fields.get("birth_date"), int):
            fields["birth_date"] = _date("birth_date", fields["birth_date"])
        recorded_at = record.get("recorded_at")
        if recorded_at is not None:
            recorded_at = _instant("recorded_at", recorded_at)
        return build_event(fields), check_recorded_at(recorded_at)

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
            raise EventError(
                f"unknown writer schema fingerprint {fp.hex()}: a writer schema newer than "
                f"this ledger's event schema version {self.version} (or not an account "
                "event); once the ledger is upgraded, `ledger dead-letters retry` applies it"
            )
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[10:]),
                writer.plain,
                # Resolving the current schema against itself changes nothing, slowly.
                None if writer is self.current else self.plain_schema,
                return_record_name=True,
            )
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise EventError(f"truncated or corrupt Avro body: {_described(exc)}") from None
        return self.from_record(upcast(record, writer.version, self.version))  # type: ignore[arg-type]

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

        # fastavro draws a random marker for None; its stub says bytes only.
        fastavro.writer(
            fo, self.schema, records(), codec="deflate", sync_marker=sync_marker  # type: ignore[arg-type]
        )
        return count

    def read_container(
        self,
        fo: IO[bytes],
        *,
        max_record_bytes: int | None = None,
        max_block_bytes: int | None = None,
        keep: Callable[[object], bool] | None = None,
    ) -> Iterator[tuple[int, tuple[Event, datetime | None] | EventError | None]]:
        """Yields (record index, decoded event or the error for that record).

        `keep`, given a decoded record's `user_id`, says whether to validate it: None is
        yielded for a record it refuses, unvalidated (a parallel replay's worker leaves
        other shards' users to their workers; validation is most of a record's cost).

        A record that decodes but is not a valid event, or is over `max_record_bytes`, is an
        error of its own and reading goes on. A corrupt or truncated container, or a block
        over `max_block_bytes` (compressed or not), ends with one error: nothing past that
        point can be read. None means no bound (`ledger.sources` passes `ByteLimits`).
        """
        index = 0
        try:
            codec, sync, writer = self._read_header(fo)
        except _Corrupt as exc:
            yield 0, EventError(f"not an Avro container file: {exc}")
            return
        canonical = _canonical(writer)
        known = self._by_canonical.get(canonical)
        # Resolving a schema against itself changes nothing and costs a third of the decode.
        reader = None if known is self.current else self.plain_schema
        # A schema of no released version (a newer one, or a copy another tool wrote) is
        # read record by record in its own shape first, so a record that does not resolve
        # is an error of its own rather than the end of the file.
        foreign = None if known else bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        while True:
            try:
                block = self._read_block(fo, codec, max_block_bytes)
                if block is None:
                    return
                count, data = block
                buf = io.BytesIO(data)
                for _ in range(_checked_count(count, data)):
                    start = buf.tell()
                    try:
                        record = fastavro.schemaless_reader(
                            buf, writer, None if foreign else reader, return_record_name=True
                        )
                    except Exception as exc:
                        raise _Corrupt(_described(exc)) from None
                    size = buf.tell() - start
                    if max_record_bytes is not None and size > max_record_bytes:
                        yield (
                            index,
                            EventError(
                                f"Avro record is {size:,} bytes, over the limit of "
                                f"{max_record_bytes:,} bytes"
                            ),
                        )
                    elif keep is not None and not keep(_user_of(record)):
                        yield index, None
                    else:
                        try:
                            if foreign:
                                body = data[start : buf.tell()]
                                record = self._resolve_foreign(record, body, writer, foreign)
                            elif known:
                                record = upcast(
                                    cast(dict[str, Any], record), known.version, self.version
                                )
                            yield index, self.from_record(record)  # type: ignore[arg-type]
                        except EventError as exc:
                            yield index, exc
                    index += 1
                if fo.read(_SYNC_SIZE) != sync:
                    raise _Corrupt("expected sync marker not found")
            except _Corrupt as exc:
                yield (
                    index,
                    EventError(f"truncated or corrupt Avro container after record {index}: {exc}"),
                )
                return

    def _resolve_foreign(
        self, written: Any, body: bytes, writer: Any, writer_fingerprint: bytes
    ) -> dict[str, Any]:
        """A record of a container whose schema is no released version, resolved to the
        current schema; `written` is the same record read in the writer's own shape. A
        record that does not resolve (a type this version lacks, most likely a newer one)
        is an `UnresolvedRecord` that keeps it as a single-object message of its writer's
        schema, which a later version can apply from the dead letter."""
        payload = written.get("payload") if isinstance(written, dict) else None
        name = payload[0] if isinstance(payload, tuple) and isinstance(payload[0], str) else ""
        short = name.rsplit(".", 1)[-1]
        message = SINGLE_OBJECT_MAGIC + writer_fingerprint + body
        if short not in self.payload_types:
            raise UnresolvedRecord(
                f"Avro record of type {quote(short)}, which event schema version "
                f"{self.version} does not have: written with a newer writer schema; once the "
                "ledger is upgraded, `ledger dead-letters retry` applies it",
                message,
            )
        try:
            return cast(
                dict[str, Any],
                fastavro.schemaless_reader(
                    io.BytesIO(body), writer, self.plain_schema, return_record_name=True
                ),
            )
        except Exception as exc:
            raise UnresolvedRecord(
                f"Avro record does not resolve to event schema version {self.version} (a "
                f"newer writer schema?): {_described(exc)}",
                message,
            ) from None

    def _read_header(self, fo: IO[bytes]) -> tuple[str, bytes, Any]:
        """(codec, sync marker, plain writer schema) of a container; leaves `fo` at the
        first block."""
        start = fo.tell()
        head = fo.read(_HEADER_BYTES)
        if head[:4] != CONTAINER_MAGIC:
            raise _Corrupt(f"it starts with {quote(head[:4])}, not {CONTAINER_MAGIC!r}")
        buf = io.BytesIO(head)
        try:
            header = cast(dict[str, Any], fastavro.schemaless_reader(buf, _HEADER_SCHEMA, None))
        except Exception as exc:
            if len(head) == _HEADER_BYTES:
                raise _Corrupt(f"header over {_HEADER_BYTES:,} bytes") from None
            raise _Corrupt(_described(exc)) from None
        meta = header["meta"]
        try:
            codec = meta.get("avro.codec", b"null").decode()
            writer = parse_schema(_plain(json.loads(meta["avro.schema"])))
        except Exception as exc:
            raise _Corrupt(f"unreadable schema or codec: {_described(exc)}") from None
        if codec != "null" and codec not in _DECOMPRESSORS:
            raise _Corrupt(f"unsupported codec {quote(codec)}")
        fo.seek(start + buf.tell())
        return codec, header["sync"], writer

    @staticmethod
    def _read_block(fo: IO[bytes], codec: str, limit: int | None) -> tuple[int, bytes] | None:
        """The next block's record count and decompressed bytes; None at the end."""
        count = _read_long(fo)
        if count is None:
            return None
        size = _read_long(fo)
        if size is None or count < 0 or size < 0:
            raise _Corrupt("invalid block header")
        if limit is not None and size > limit:
            raise _Corrupt(f"block of {size:,} bytes is over the limit of {limit:,} bytes")
        data = fo.read(size)
        if len(data) < size:
            raise _Corrupt(f"block ends after {len(data):,} of {size:,} bytes")
        if codec == "null":
            return count, data
        decompressor = _DECOMPRESSORS[codec]()
        try:
            # zlib reads max_length 0 as no bound, bz2 and lzma read -1 so.
            cap = limit + 1 if limit is not None else (0 if codec == "deflate" else -1)
            out = decompressor.decompress(data, cap)
        except Exception as exc:
            raise _Corrupt(_described(exc)) from None
        if limit is not None and len(out) > limit:
            raise _Corrupt(f"block inflates to over {limit:,} bytes, the limit")
        return count, out


def _checked_count(count: int, data: bytes) -> int:
    """Every envelope record takes bytes (its strings' lengths at least), so a block cannot
    hold more records than bytes: a forged count must not make a loop of a billion."""
    if count > len(data):
        raise _Corrupt(f"block claims {count:,} records in {len(data):,} bytes")
    return count


def _read_long(fo: IO[bytes]) -> int | None:
    """An Avro long (zig-zag varint) from `fo`; None at a clean end of file."""
    shift = result = 0
    for i in range(10):  # a 64-bit varint has at most 10 bytes
        byte = fo.read(1)
        if not byte:
            if i == 0:
                return None
            raise _Corrupt("file ends inside a block header")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7
    raise _Corrupt("block header number longer than 10 bytes")


def _instant(name: str, value: Any) -> Any:
    """A timestamp-millis long as a datetime (other values are left to `build_event`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return from_millis(value)
        except ValueError as exc:
            raise EventError(f"{name}: {exc}") from None
    return value


def _date(name: str, days: int) -> date:
    try:
        return date.fromordinal(_EPOCH_DAY + days)
    except (ValueError, OverflowError):
        raise EventError(
            f"{name}: {days} days since 1970-01-01 is out of range (years 1 to 9999)"
        ) from None


def _canonical(schema: Any) -> str:
    return to_parsing_canonical_form(schema)


def _user_of(record: object) -> object:
    """The `user_id` of a record as decoded, or None when it has none to shard by."""
    return record.get("user_id") if isinstance(record, dict) else None
