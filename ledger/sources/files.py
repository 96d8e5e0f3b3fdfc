"""Event files as sources: `.jsonl` (one event per line) and `.avro` (object container).

A file's source key is the SHA-256 of its content, so the stored position belongs to
exactly that content: replaying the same file again skips what was applied, and a
different file at the same path starts from the beginning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line, event_to_json_line
from ledger.domain.events import Event, EventError
from ledger.errors import LedgerError
from ledger.sources.records import SourceRecord

SUFFIXES = (".jsonl", ".avro")


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


def read_records(
    path: Path, key: str, start: int = 0, codec: AvroCodec | None = None
) -> Iterator[tuple[SourceRecord, int]]:
    """Records from offset `start` on, each with the byte offset reached (for progress)."""
    check_path(path)
    if path.suffix == ".jsonl":
        yield from _jsonl(path, key, start)
    else:
        yield from _avro(path, key, start, codec or AvroCodec())


def _jsonl(path: Path, key: str, start: int) -> Iterator[tuple[SourceRecord, int]]:
    done = 0
    with path.open("rb") as fo:
        for index, line in enumerate(fo):
            done += len(line)
            if index < start:
                continue
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                decoded: object = event_from_json_line(raw)
            except EventError as exc:
                decoded = exc
            yield (
                SourceRecord(key, 0, index, f"{path.name}:{index + 1}", raw, decoded),  # type: ignore[arg-type]
                done,
            )


def _avro(path: Path, key: str, start: int, codec: AvroCodec) -> Iterator[tuple[SourceRecord, int]]:
    with path.open("rb") as fo:
        for index, decoded in codec.read_container(fo):
            if index < start and not isinstance(decoded, EventError):
                continue
            # A container record has no raw bytes of its own (SourceRecord.raw_bytes).
            yield (
                SourceRecord(key, 0, index, f"{path.name}#{index}", b"", decoded),
                fo.tell(),
            )


def write_event_file(
    path: Path,
    items: Iterable[tuple[Event, datetime | None]],
    *,
    sync_marker: bytes | None = None,
) -> int:
    """Write (event, record time or None) pairs as `.jsonl` or an `.avro` container, by
    suffix; returns how many were written."""
    if path.suffix == ".jsonl":
        count = 0
        with path.open("w", encoding="utf-8", newline="\n") as fo:
            for event, recorded_at in items:
                fo.write(event_to_json_line(event, recorded_at))
                fo.write("\n")
                count += 1
        return count
    if path.suffix == ".avro":
        with path.open("wb") as fo:
            return AvroCodec().write_container(fo, items, sync_marker=sync_marker)
    raise SourceError(f"{path}: unknown file type {path.suffix!r} (expected .jsonl or .avro)")
