"""Event files as sources: `.jsonl` (one event per line) and `.avro` (object container).

A file's source key is the SHA-256 of its content, so the stored position belongs to
exactly that content: replaying the same file again skips what was applied, and a
different file at the same path starts from the beginning.

Reading is streamed with bounded memory whatever the file holds: a JSON line longer than
`ByteLimits.event_bytes` is never held whole (it is dead-lettered with its size and its first
bytes) and Avro blocks and records are bounded the same way (`AvroCodec.read_container`).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from ledger.codecs.avro import AvroCodec, UnresolvedRecord
from ledger.codecs.jsonl import event_from_json_line, event_to_json_line
from ledger.config import ByteLimits
from ledger.domain.events import Event, EventError
from ledger.errors import LedgerError
from ledger.sources.records import SourceRecord

SUFFIXES = (".jsonl", ".avro")
# The formats by name, as `--format` takes them for standard input and output.
FORMATS = ("jsonl", "avro")
# The name under which standard input is spooled: positions read `stdin.jsonl:17`.
STDIN_NAME = "stdin"


class SourceError(LedgerError):
    """A source that cannot be read at all (missing file, unknown format)."""


def check_path(path: Path) -> None:
    if path.suffix not in SUFFIXES:
        raise SourceError(f"{path}: unknown file type {path.suffix!r} (expected .jsonl or .avro)")
    if not path.is_file():
        raise SourceError(f"{path}: no such file")


def check_paths(paths: Iterable[Path]) -> None:
    """Every path is a readable event file, checked before anything is applied or sent."""
    for path in paths:
        check_path(path)


def source_key(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fo:
        for block in iter(lambda: fo.read(1 << 20), b""):
            digest.update(block)
    return f"file:{digest.hexdigest()}"


# The rest of an over-long line is read past in pieces of this size, never held.
_SKIP_CHUNK = 1 << 16


def display_name(path: Path) -> str:
    """The file name as positions show it. A name that is not UTF-8 arrives with lone
    surrogates (Python's surrogateescape), which no database can store: they are written
    as escapes instead."""
    name = path.name
    return name if name.isascii() else name.encode("utf-8", "backslashreplace").decode("utf-8")


def read_records(
    path: Path,
    key: str,
    start: int = 0,
    codec: AvroCodec | None = None,
    *,
    limits: ByteLimits | None = None,
) -> Iterator[tuple[SourceRecord, int]]:
    """Records from offset `start` on, each with the byte offset reached (for progress).
    Never raises for what the file holds: bad input is a record whose `decoded` is the
    EventError. `limits` defaults to `ByteLimits()`."""
    for record, reached in read_shard(path, key, start, codec, limits=limits):
        assert not isinstance(record, int)  # nothing is another shard's without `keep`
        yield record, reached


def read_shard(
    path: Path,
    key: str,
    start: int = 0,
    codec: AvroCodec | None = None,
    *,
    limits: ByteLimits | None = None,
    keep: Callable[[object], bool] | None = None,
) -> Iterator[tuple[SourceRecord | int, int]]:
    """`read_records` for one worker of a parallel replay: `keep`, given a record's
    `user_id` as decoded (None when it has none), says whether the record is this worker's;
    of another's only its offset is yielded, unvalidated, so that every worker counts the
    same records and cuts the same batches. Lines without a user id, and records that do not decode,
    are for the worker whose `keep(None)` is true."""
    check_path(path)
    limits = limits or ByteLimits()
    if path.suffix == ".jsonl":
        for record, reached in _jsonl(path, key, start, limits):
            if keep is None or keep(_user_of(record)):
                yield record, reached
            else:
                yield record.offset, reached
    else:
        yield from _avro(path, key, start, codec or AvroCodec(), limits, keep)


def _user_of(record: SourceRecord) -> str | None:
    return None if isinstance(record.decoded, EventError) else record.decoded[0].user_id


def _jsonl(
    path: Path, key: str, start: int, limits: ByteLimits
) -> Iterator[tuple[SourceRecord, int]]:
    name = display_name(path)
    limit = limits.event_bytes
    done = 0
    index = -1
    with path.open("rb") as fo:
        while True:
            # One byte over the limit tells a line over it from one that fits exactly.
            line = fo.readline(limit + 1)
            if not line:
                return
            index += 1
            done += len(line)
            oversize = 0
            if len(line) > limit and not line.endswith(b"\n"):
                if line.endswith(b"\r") and fo.peek(1)[:1] == b"\n":
                    line += fo.read(1)  # CRLF after exactly `limit` bytes: it fits
                    done += 1
                else:
                    rest, tail = _skip_line(fo, line[-2:])
                    done += rest
                    oversize = len(line) + rest - _eol_length(tail)
            if index < start:
                continue
            if oversize:
                # What was read anyway (the line's size is in the reason): no more memory
                # than a line within the limit takes.
                raw = line[: limits.dead_letter_raw_bytes]
                decoded: object = EventError(
                    f"line is {oversize:,} bytes, over the limit of {limit:,} bytes"
                )
            else:
                raw = line.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                try:
                    decoded = event_from_json_line(raw)
                except EventError as exc:
                    decoded = exc
            size = oversize or len(raw)
            yield (
                SourceRecord(key, 0, index, f"{name}:{index + 1}", raw, decoded, size),  # type: ignore[arg-type]
                done,
            )


def _skip_line(fo: IO[bytes], tail: bytes) -> tuple[int, bytes]:
    """Read past the rest of the current line in bounded pieces: how many bytes that was,
    and the line's last two bytes (`tail`: the last two read before)."""
    skipped = 0
    while piece := fo.readline(_SKIP_CHUNK):
        skipped += len(piece)
        tail = (tail + piece)[-2:]
        if piece.endswith(b"\n"):
            break
    return skipped, tail


def _eol_length(tail: bytes) -> int:
    if tail.endswith(b"\r\n"):
        return 2
    return 1 if tail.endswith(b"\n") else 0


def _avro(
    path: Path,
    key: str,
    start: int,
    codec: AvroCodec,
    limits: ByteLimits,
    keep: Callable[[object], bool] | None = None,
) -> Iterator[tuple[SourceRecord | int, int]]:
    name = display_name(path)
    with path.open("rb") as fo:
        for index, decoded in codec.read_container(
            fo,
            max_record_bytes=limits.event_bytes,
            max_block_bytes=limits.avro_block_bytes,
            keep=keep,
        ):
            if index < start and not isinstance(decoded, EventError):
                continue
            if decoded is None:
                yield index, fo.tell()
                continue
            # A container record has no raw bytes of its own (SourceRecord.raw_bytes), except
            # one that does not resolve to this version: its single-object form, which a
            # newer version can apply from the dead letter (`ledger dead-letters retry`).
            raw = decoded.message if isinstance(decoded, UnresolvedRecord) else b""
            yield (
                SourceRecord(key, 0, index, f"{name}#{index}", raw, decoded),
                fo.tell(),
            )


def spool(stream: IO[bytes], directory: Path, fmt: str) -> Path:
    """Copy `stream` (standard input) into a file `stdin.<fmt>` in `directory` and return
    it: a file's source key is the hash of its whole content, so standard input is read to
    its end before anything is applied, in pieces (bounded by the disk, not by memory), and
    then replays exactly as a file of the same bytes does: the same events applied once,
    nothing the second time."""
    if fmt not in FORMATS:
        raise SourceError(f"unknown format {fmt!r} (expected jsonl or avro)")
    path = directory / f"{STDIN_NAME}.{fmt}"
    with path.open("wb") as fo:
        shutil.copyfileobj(stream, fo, _SKIP_CHUNK)
    return path


def write_event_stream(
    fo: IO[bytes],
    fmt: str,
    items: Iterable[tuple[Event, datetime | None]],
    *,
    sync_marker: bytes | None = None,
) -> int:
    """Write (event, record time or None) pairs to a binary stream as JSON Lines (`fmt`
    "jsonl") or an Avro object container ("avro"); returns how many were written."""
    if fmt == "jsonl":
        count = 0
        for event, recorded_at in items:
            fo.write(event_to_json_line(event, recorded_at).encode("utf-8") + b"\n")
            count += 1
        return count
    if fmt == "avro":
        return AvroCodec().write_container(fo, items, sync_marker=sync_marker)
    raise SourceError(f"unknown format {fmt!r} (expected jsonl or avro)")


def write_event_file(
    path: Path,
    items: Iterable[tuple[Event, datetime | None]],
    *,
    sync_marker: bytes | None = None,
) -> int:
    """Write (event, record time or None) pairs as `.jsonl` or an `.avro` container, by
    suffix; returns how many were written."""
    if path.suffix not in SUFFIXES:
        raise SourceError(f"{path}: unknown file type {path.suffix!r} (expected .jsonl or .avro)")
    with path.open("wb") as fo:
        return write_event_stream(fo, path.suffix.removeprefix("."), items, sync_marker=sync_marker)
