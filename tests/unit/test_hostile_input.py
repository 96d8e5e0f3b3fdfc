"""Hostile input underneath the replay (issue "Hostile input"): the column sizes are the
validation limits, line limits and their edges, bounded Avro containers, Kafka records
that are never fatal, and decoders from which nothing but EventError escapes. The same
inputs through `ledger replay` and `ledger publish` are in tests/e2e/test_hostile_input.py.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line
from ledger.config import ByteLimits
from ledger.domain import limits
from ledger.domain.events import DOCUMENT_KINDS, EVENT_TYPES, EVIDENCE_KINDS, EventError
from ledger.sources.files import read_records
from ledger.sources.kafka import to_source_record
from ledger.store.schema import dead_letters, events, users
from tests.helpers.hostile import GOOD, LIMIT, PUBLISH_BAD


def test_column_sizes_are_the_limits() -> None:
    """Validation and the schema agree (schema.py uses the constants; this pins the numbers
    the migrations created)."""
    expected = {
        "event_id": limits.EVENT_ID_CHARS,
        "user_id": limits.USER_ID_CHARS,
        "type": limits.EVENT_TYPE_CHARS,
        "channel": limits.CHANNEL_CHARS,
        "country": limits.COUNTRY_CHARS,
        "evidence": limits.EVIDENCE_CHARS,
        "tos_version": limits.TOS_VERSION_CHARS,
        "locale": limits.LOCALE_CHARS,
        "document_country": limits.COUNTRY_CHARS,
        "document_kind": limits.DOCUMENT_KIND_CHARS,
    }
    assert {c: events.c[c].type.length for c in expected} == expected
    assert expected == {
        "event_id": 36,
        "user_id": 200,
        "type": 20,
        "channel": 100,
        "country": 2,
        "evidence": 20,
        "tos_version": 100,
        "locale": 64,
        "document_country": 2,
        "document_kind": 20,
    }
    assert users.c.user_id.type.length == limits.USER_ID_CHARS
    assert users.c.signup_locale.type.length == limits.LOCALE_CHARS
    assert users.c.id_document_country.type.length == limits.COUNTRY_CHARS
    assert users.c.id_document_kind.type.length == limits.DOCUMENT_KIND_CHARS
    assert max(map(len, DOCUMENT_KINDS)) <= limits.DOCUMENT_KIND_CHARS
    assert dead_letters.c.user_id.type.length == limits.USER_ID_CHARS
    assert max(map(len, EVIDENCE_KINDS)) <= limits.EVIDENCE_CHARS
    assert max(map(len, EVENT_TYPES)) <= limits.EVENT_TYPE_CHARS


def test_line_limit_edges(tmp_path: Path) -> None:
    """At the limit is decoded (with LF or CRLF), one byte over is not; a long line at the
    end of the file without a newline is measured too; line numbers stay right."""
    limits_ = ByteLimits(event_bytes=len(GOOD[0]))
    path = tmp_path / "edges.jsonl"
    path.write_bytes(
        GOOD[0].encode()
        + b"\r\n"  # exactly the limit, CRLF
        + GOOD[0].encode()
        + b" \n"  # one over
        + GOOD[0].encode()
        + b"\n"  # exactly the limit, LF
        + b"y" * 100_000
        + b"\r\n"
        + b"\n"  # blank: skipped, but counted
        + b"z" * 70_000  # no newline at the end
    )
    out = [(r.position, r.offset, r.decoded) for r, _ in read_records(path, "k", limits=limits_)]
    assert [p for p, _, _ in out] == [f"edges.jsonl:{n}" for n in (1, 2, 3, 4, 6)]
    assert [o for _, o, _ in out] == [0, 1, 2, 3, 5]
    assert not isinstance(out[0][2], EventError) and not isinstance(out[2][2], EventError)
    over = {p: str(d) for p, _, d in out if isinstance(d, EventError)}
    assert over == {
        "edges.jsonl:2": f"line is {len(GOOD[0]) + 1:,} bytes, over the limit of "
        f"{len(GOOD[0]):,} bytes",
        "edges.jsonl:4": f"line is 100,000 bytes, over the limit of {len(GOOD[0]):,} bytes",
        "edges.jsonl:6": f"line is 70,000 bytes, over the limit of {len(GOOD[0]):,} bytes",
    }
    progress = [done for _, done in read_records(path, "k", limits=limits_)]
    assert progress[-1] == path.stat().st_size
    # Resuming after the long lines starts at the right line.
    assert [r.position for r, _ in read_records(path, "k", 5, limits=limits_)] == ["edges.jsonl:6"]


# --- Avro containers and Kafka records: bounded, never raising ----------------------------


def _container(events_: int = 3, **writer: object) -> bytes:
    codec = AvroCodec()
    items = [event_from_json_line(line) for line in GOOD[:events_]]
    buf = io.BytesIO()
    fastavro.writer(buf, codec.schema, (codec.to_record(e, r) for e, r in items), **writer)
    return buf.getvalue()


def _read(data: bytes, **bounds: int) -> list[object]:
    return [d for _, d in AvroCodec().read_container(io.BytesIO(data), **bounds)]


def test_avro_container_blocks_and_records_are_bounded() -> None:
    data = _container(codec="deflate")
    assert not any(isinstance(d, EventError) for d in _read(data))
    # Every record is ~150 bytes: the record bound dead-letters each and goes on.
    small = _read(data, max_record_bytes=20)
    assert len(small) == 3 and all("over the limit of 20 bytes" in str(d) for d in small)
    # A block bound stops the file: nothing after an unreadable block can be found.
    (stopped,) = _read(data, max_block_bytes=50)
    assert "truncated or corrupt Avro container after record 0" in str(stopped)
    # A deflate bomb: a block of 16 MiB of zeros is ~16 KiB compressed.
    bomb = _container(1, codec="deflate")
    header_end = bomb.index(bomb[-16:]) + 16  # the sync marker ends the header first
    zeros = fastavro_deflate(b"\0" * (16 << 20))
    forged = bomb[:header_end] + _long(1) + _long(len(zeros)) + zeros + bomb[-16:]
    (refused,) = _read(forged, max_block_bytes=1 << 20)
    assert "inflates to over 1,048,576 bytes" in str(refused)
    # A forged block length is refused before anything is read.
    (forged_len,) = _read(bomb[:header_end] + _long(1) + _long(1 << 40), max_block_bytes=1 << 20)
    assert "over the limit" in str(forged_len)


def fastavro_deflate(data: bytes) -> bytes:
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _long(n: int) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    return buf.getvalue()


def _kafka(value: bytes | None, timestamp: int = 1_790_000_000_000) -> ConsumerRecord:
    return ConsumerRecord(
        "t", 0, -1, 7, timestamp, 0, b"k", value, [], None, 1, len(value or b""), -1
    )


def test_kafka_records_are_never_fatal() -> None:
    codec = AvroCodec()
    event, _ = event_from_json_line(GOOD[0])
    good = codec.encode(event)
    ok = to_source_record(_kafka(good), codec)
    assert not isinstance(ok.decoded, EventError)
    assert ok.decoded[1] == datetime(2026, 9, 21, 14, 13, 20, tzinfo=UTC)
    cases = {
        "tombstone": (_kafka(None), "tombstone"),
        "no timestamp": (_kafka(good, -1), "Kafka record timestamp -1"),
        "timestamp past 9999": (_kafka(good, 2**62), f"Kafka record timestamp {2**62}: "),
        "timestamp at 9999-12-31": (_kafka(good, 253402214400000), "outside the range"),
        "over the limit": (
            _kafka(good + b"\0" * LIMIT),
            f"message is {len(good) + LIMIT:,} bytes, over the limit of {LIMIT:,} bytes",
        ),
        "unknown fingerprint": (_kafka(good[:2] + b"\1" * 8 + good[10:]), "fingerprint"),
        "cut": (_kafka(good[:-3]), "truncated or corrupt Avro body"),
    }
    for name, (msg, fragment) in cases.items():
        rec = to_source_record(msg, codec)
        assert isinstance(rec.decoded, EventError), name
        assert fragment in str(rec.decoded), (name, str(rec.decoded))
    small = to_source_record(_kafka(good), codec, limits=ByteLimits(event_bytes=10))
    assert "over the limit of 10 bytes" in str(small.decoded)


def test_nothing_escapes_the_decoders() -> None:
    """A sample of hostile lines straight through the decoder: only EventError."""
    for line in [
        *PUBLISH_BAD[:4],
        *PUBLISH_BAD[5:],
        "{" * 50 + "}" * 50,
        '"\\ud800"',
        "1" * 5000,
        '{"a": "' + "[" * 1000,
        "[" * 33,
        "[" * 32 + "]" * 32,
        "nan",
        "-Infinity",
    ]:
        with pytest.raises(EventError):
            event_from_json_line(line)
