"""Fuzzing the pipeline in memory with mutated events (issue "Hostile input").

Valid events from `ledger.testing` are mutated at three levels and fed to the real
pipeline: (a) JSON lines, through `read_records` and the projector; (b) Avro single-object
encoding and (c) Kafka consumer records (`kafka.consumer.fetcher.ConsumerRecord`, the
plain data structure kafka-python hands over), through `to_source_record` and the
projector. Every example asserts: nothing raises; each input that is a valid event on its
own (decided by decoding it alone) is applied or recognised as a duplicate, exactly as a
replay of the valid inputs alone does (same history rows, same counts); and each other
input is dead-lettered with a non-empty reason. Then the audit trail's inputs: digest
documents and the settings it reads.

The projector runs on the in-memory store; tests/e2e/test_fuzz.py sends fewer examples
through `ledger replay` on SQLite and on PostgreSQL. Example counts scale with
`LEDGER_FUZZ_EXAMPLES` (tests/helpers/fuzzing.py): `LEDGER_FUZZ_EXAMPLES=5000 pytest
tests/unit/test_fuzz.py tests/e2e/test_fuzz.py` for a long run.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from ledger.codecs.avro import SINGLE_OBJECT_MAGIC
from ledger.codecs.jsonl import event_from_json_line, event_to_json_line
from ledger.codecs.releases import FINGERPRINTS
from ledger.domain import limits
from ledger.domain.events import Event, EventError, SignedUp
from ledger.domain.policy import event_problem
from ledger.domain.time import to_millis
from ledger.sources.kafka import to_source_record
from ledger.sources.records import SourceRecord
from tests import factories
from tests.helpers.fuzzing import (
    CODEC,
    EXAMPLES,
    LOCALE_TEXTS,
    POLICIES,
    RECORDED,
    SMALL,
    apply_in_memory,
    fuzz,
    json_cases,
    long_strings,
    normalised,
    read_file,
    valid_alone,
    valid_streams,
)

# What the in-memory runs fed and got, for `make faults` (LEDGER_FUZZ_REPORT names a file).
TALLY: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_tally() -> Iterator[None]:
    yield
    report = os.environ.get("LEDGER_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps(dict(TALLY)))


def check_pipeline(records: list[SourceRecord], valid: list[bool], reference: list[SourceRecord]):
    """Run the mixed records and the valid ones alone; compare as the module says."""
    assert len(records) == len(valid)
    store, result = apply_in_memory(records)
    ref_store, ref = apply_in_memory(reference)
    assert normalised(store.history_rows()) == normalised(ref_store.history_rows())
    assert (result.applied, result.duplicates) == (ref.applied, ref.duplicates)
    dead = {d.record.offset: d.reason for d in result.dead_letters}
    assert all(reason.strip() for reason in dead.values())
    invalid = {r.offset for r, ok in zip(records, valid, strict=True) if not ok}
    assert invalid <= set(dead)
    # What else is dead-lettered is so in the valid-only replay too (an event id already
    # recorded for another user): the same count.
    assert len(dead) == len(invalid) + len(ref.dead_letters)
    assert result.applied + result.duplicates + len(dead) == len(records)
    TALLY.update(inputs=len(records), applied=result.applied, dead_lettered=len(dead))


@pytest.mark.slow
@fuzz(EXAMPLES)
@given(json_cases())
def test_json_mutants_in_memory(lines: list[bytes]) -> None:
    records = read_file(lines, SMALL)
    assert [r.offset for r in records] == list(range(len(lines)))  # one record per line
    valid = [valid_alone(line, SMALL) is not None for line in lines]
    reference = read_file([ln for ln, ok in zip(lines, valid, strict=True) if ok], SMALL)
    check_pipeline(records, valid, reference)


# --- levels (b) and (c): Avro single-object encoding in Kafka records ---------------------


def _plain_record(event: Event) -> dict[str, Any]:
    """The envelope as on the wire: times and dates as numbers."""
    record = CODEC.to_record(event)
    name, payload = record["payload"]
    payload = dict(payload)
    if payload.get("birth_date") is not None:
        payload["birth_date"] = payload["birth_date"].toordinal() - 719163
    return {
        **record,
        "occurred_at": to_millis(record["occurred_at"]),
        "recorded_at": None,
        "payload": (name, payload),
    }


def _encode_plain(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC + CODEC.current.fingerprint)
    fastavro.schemaless_writer(buf, CODEC.plain_schema, record)
    return buf.getvalue()


LONG = st.integers(-(2**63), 2**63 - 1)
AVRO_TEXT = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.text(st.characters(codec="utf-8"), max_size=5).map(lambda t: t + "\x00"),
    long_strings().filter(lambda s: "\ud800" not in s),
)


@st.composite
def avro_mutant(draw: st.DrawFn, event: Event) -> bytes | None:
    """Level (b): the event single-object encoded, then damaged as bytes or re-encoded
    with a hostile value in one field (any long is a timestamp-millis on the wire)."""
    data = CODEC.encode(event)
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "fingerprint", "magic", "field",
                                 "field", "none", "huge", "same", "older"]))  # fmt: skip
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "extend":
        return data + draw(st.binary(min_size=1, max_size=20))
    if kind == "fingerprint":
        return data[:2] + draw(st.binary(min_size=8, max_size=8)) + data[10:]
    if kind == "older":  # a version-2 body labelled as written by version 1
        return data[:2] + bytes.fromhex(FINGERPRINTS[1]) + data[10:]
    if kind == "magic":
        return draw(st.binary(min_size=2, max_size=2)) + data[2:]
    if kind == "none":
        return None
    if kind == "huge":
        return data + bytes(SMALL.event_bytes)
    if kind == "same":
        return data
    record = _plain_record(event)
    name, payload = record["payload"]
    # `evidence` and `document_kind` are Avro enums: the writer cannot put anything else
    # there.
    fields = ["occurred_at", "recorded_at", "event_id", "user_id", *payload]
    enums = ("evidence", "document_kind")
    field = draw(st.sampled_from([f for f in fields if f not in enums]))
    if field in ("occurred_at", "recorded_at"):
        record[field] = draw(st.one_of(LONG, st.sampled_from([-62135596800001, 253402300800000])))
    elif field in ("event_id", "user_id"):
        record[field] = draw(AVRO_TEXT)
    elif field == "birth_date":
        payload[field] = draw(st.integers(-(2**31), 2**31 - 1))
    else:
        payload[field] = draw(AVRO_TEXT)
    record["payload"] = (name, payload)
    return _encode_plain(record)


TIMESTAMPS = st.one_of(
    st.integers(0, 253402300799999),
    st.sampled_from([-1, 0, -(2**63), 2**63 - 1, 253402300800000]),
    LONG,
)


def _message(offset: int, partition: int, value: bytes | None, ts: int) -> ConsumerRecord:
    size = -1 if value is None else len(value)
    return ConsumerRecord("fuzz", partition, -1, offset, ts, 0, b"k", value, [], None, 1, size, -1)


@st.composite
def kafka_cases(draw: st.DrawFn) -> list[ConsumerRecord]:
    """Level (c): consumer records of valid events and of mutants, with odd timestamps,
    spread over partitions with increasing offsets each."""
    stream = draw(valid_streams())
    items: list[tuple[bytes | None, int]] = [
        (CODEC.encode(e), draw(st.integers(1_700_000_000_000, 1_800_000_000_000))) for e in stream
    ]
    for _ in range(draw(st.integers(1, 6))):
        mutant = draw(avro_mutant(draw(st.sampled_from(stream))))
        items.insert(draw(st.integers(0, len(items))), (mutant, draw(TIMESTAMPS)))
    offsets = [0, 0, 0]
    messages = []
    for value, ts in items:
        partition = draw(st.integers(0, 2))
        messages.append(_message(offsets[partition], partition, value, ts))
        offsets[partition] += draw(st.integers(1, 3))  # compacted or transactional gaps
    return messages


def _is_valid_record(rec: SourceRecord) -> bool:
    return not isinstance(rec.decoded, EventError) and not event_problem(rec.decoded[0], POLICIES)


@pytest.mark.slow
@fuzz(EXAMPLES)
@given(kafka_cases())
def test_kafka_and_avro_mutants_in_memory(messages: list[ConsumerRecord]) -> None:
    records = [to_source_record(m, CODEC, limits=SMALL) for m in messages]
    # Decoded on its own, each message gives the same answer (nothing depends on order).
    alone = [to_source_record(m, CODEC, limits=SMALL) for m in messages]
    valid = [_is_valid_record(r) for r in alone]
    assert [_is_valid_record(r) for r in records] == valid
    reference = [r for r, ok in zip(alone, valid, strict=True) if ok]
    check_pipeline(_by_partition(records), valid, _by_partition(reference))


def _by_partition(records: list[SourceRecord]) -> list[SourceRecord]:
    """Offsets repeat across partitions; `check_pipeline` identifies records by offset."""
    return [
        SourceRecord(
            r.source, r.partition, r.partition * 10**6 + r.offset, r.position, r.raw, r.decoded
        )
        for r in records
    ]


@fuzz(EXAMPLES)
@given(st.binary(max_size=300), st.integers(-(2**64), 2**64))
def test_any_bytes_and_timestamp_make_a_record(value: bytes, timestamp: int) -> None:
    """Arbitrary values and timestamps, also after a valid header."""
    for data in (value, SINGLE_OBJECT_MAGIC + CODEC.current.fingerprint + value):
        rec = to_source_record(_message(0, 0, data, timestamp), CODEC)
        assert isinstance(rec.decoded, EventError | tuple)
        if isinstance(rec.decoded, EventError):
            assert str(rec.decoded).strip()


@fuzz(EXAMPLES)
@given(st.one_of(LOCALE_TEXTS, st.text(max_size=80), long_strings()))
def test_any_locale_is_a_tag_kept_in_its_conventional_case_or_an_event_error(text: str) -> None:
    """SignedUp.locale: whatever text comes, the event is refused in one line, or it keeps
    the same tag (case aside) within the column size, and reads back as itself."""
    line = factories.line(factories.signup(1, locale=text))
    try:
        event, _ = event_from_json_line(line)
    except EventError as exc:
        assert "\n" not in str(exc) and "locale" in str(exc)
        return
    assert isinstance(event.payload, SignedUp) and event.payload.locale is not None
    assert event.payload.locale.lower() == text.lower()
    assert len(event.payload.locale) <= limits.LOCALE_CHARS
    assert event_from_json_line(event_to_json_line(event))[0] == event
    assert CODEC.decode(CODEC.encode(event))[0] == event


@fuzz(max(10, EXAMPLES // 4))
@given(valid_streams(), st.data())
def test_damaged_avro_containers_never_raise(stream: list[Event], data: st.DataObject) -> None:
    """Container files (archives) with bytes flipped, cut or appended: every record index
    appears once, in order, as an event or an error, and the pipeline takes them all."""
    buf = io.BytesIO()
    CODEC.write_container(buf, [(e, RECORDED) for e in stream])
    raw = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "append"]))
        if op == "flip":
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[data.draw(st.integers(0, len(raw) - 1)) :]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=40))
        if not raw:
            break
    items = list(CODEC.read_container(io.BytesIO(bytes(raw)), max_record_bytes=2048,
                                      max_block_bytes=1 << 20))  # fmt: skip
    assert [i for i, _ in items] == list(range(len(items)))
    records = [SourceRecord("file:x", 0, i, f"x.avro#{i}", b"", d) for i, d in items]
    _, result = apply_in_memory(records)
    assert result.applied + result.duplicates + result.dead_lettered == len(records)


# --- the audit trail's inputs: digest documents and the settings it reads -------------------

_JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


def _digest_document() -> dict[str, Any]:
    from ledger.app.audit.signing import sign
    from ledger.domain.audit.digest import Digest

    digest = Digest(
        root="ab" * 32,
        seq=42,
        users=3,
        events=42,
        recorded_at=datetime(2026, 11, 1, tzinfo=UTC),
        policies={"tos-2023-legacy": "cd" * 32},
    )
    return sign(digest, hmac_key=b"audit-key")


@fuzz(EXAMPLES)
@given(st.sampled_from(sorted(_digest_document())), _JSON, st.booleans())
def test_mutated_digest_documents_are_refused_in_one_line(
    field: str, value: Any, drop: bool
) -> None:
    """A digest document with any field replaced or removed is either still the same valid
    digest or refused with a DigestError of one line; nothing else escapes `check`."""
    from ledger.app.audit.signing import check
    from ledger.domain.audit.digest import DigestError

    document = _digest_document()
    original = check(document, hmac_key=b"audit-key")
    if drop:
        del document[field]
    else:
        document[field] = value
    try:
        got = check(document, hmac_key=b"audit-key")
    except DigestError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert got == original


_HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@st.composite
def _digest_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents `check` must accept, written in any way it reads them: any root, counts
    and policy hashes, the instant in any offset and with digits below the millisecond,
    unsigned (with or without a `signature`) or signed with the audit key."""
    from ledger.app.audit.signing import sign
    from ledger.domain.audit.digest import Digest

    instant = draw(
        st.datetimes(datetime(1, 1, 3), datetime(9999, 12, 29), timezones=st.just(UTC))
    )
    digest = Digest(
        root=draw(_HEX64),
        seq=draw(st.integers(0, 2**63)),
        users=draw(st.integers(0, 2**40)),
        events=draw(st.integers(0, 2**40)),
        recorded_at=instant,
        policies=draw(st.dictionaries(st.text(min_size=1, max_size=20), _HEX64, max_size=4)),
    )
    document = sign(digest, hmac_key=draw(st.sampled_from([None, b"audit-key"])))
    document["recorded_at"] = instant.astimezone(draw(_OFFSETS)).isoformat()
    if document["signature"] == {"alg": "none"} and draw(st.booleans()):
        del document["signature"]
    return document


def _assert_accepted_as_promised(document: Any, got: Any, key: bytes | None) -> None:
    """What `check` returns for a document it accepts: a Digest whose fields have the types
    and ranges `ledger.domain.audit.Digest` promises and hold what the document says, which
    re-serialises to the same document (the instant in canonical form) and, signed again
    with the same key, carries the very signature that was checked."""
    from ledger.app.audit.signing import check, sign
    from ledger.domain.audit.digest import DIGEST_FORMAT, Digest
    from ledger.domain.time import parse_instant, truncate_ms

    assert isinstance(got, Digest)
    assert got.format == DIGEST_FORMAT
    assert len(got.root) == 64 and set(got.root) <= set("0123456789abcdef")
    for name in ("seq", "users", "events"):
        count = getattr(got, name)
        assert type(count) is int and count >= 0, (name, count)
    assert got.recorded_at.utcoffset() == timedelta(0) and got.recorded_at.microsecond % 1000 == 0
    assert got.recorded_at == truncate_ms(parse_instant(document["recorded_at"]))
    assert isinstance(got.policies, dict)
    for version, policy_hash in got.policies.items():
        assert isinstance(version, str) and version
        assert len(policy_hash) == 64 and set(policy_hash) <= set("0123456789abcdef")
    canonical = got.to_json()
    assert json.loads(json.dumps(canonical)) == canonical
    assert Digest.from_json(canonical) == got
    fields = {k: v for k, v in document.items() if k not in ("signature", "recorded_at")}
    assert fields == {k: v for k, v in canonical.items() if k != "recorded_at"}
    again = sign(got, hmac_key=key)
    assert again["signature"] == (document.get("signature") or {"alg": "none"})
    assert check(json.loads(json.dumps(again)), hmac_key=key) == got


def _checked(value: Any) -> int:
    """How many of the two keys (none, the audit key) `check` accepts `value` with, each
    acceptance asserted as promised; anything but DigestError escapes."""
    from ledger.app.audit.signing import check
    from ledger.domain.audit.digest import DigestError

    accepted = 0
    for key in (None, b"audit-key"):
        try:
            got = check(value, hmac_key=key)
        except DigestError:
            continue
        accepted += 1
        _assert_accepted_as_promised(value, got, key)
    return accepted


@pytest.mark.slow
@fuzz(EXAMPLES)
@given(_JSON, _digest_documents())
def test_any_json_is_a_digest_or_a_digest_error(value: Any, document: dict[str, Any]) -> None:
    """Any JSON value is refused with a DigestError (and nothing else) or accepted as the
    digest it holds; so is a valid digest document however it is written, which exactly
    one of the two keys accepts (an unsigned one without a key, a signed one with it)."""
    accepted = _checked(value)
    assert accepted <= 1
    event("any JSON accepted" if accepted else "any JSON refused")
    assert _checked(document) == 1


# Surrogates included: the environment of a process may hold bytes that are not UTF-8.
_ENV_TEXT = st.text(st.characters(codec=None, exclude_characters="\x00"), max_size=40)


@fuzz(EXAMPLES)
@given(_ENV_TEXT, _ENV_TEXT)
def test_hostile_audit_and_worker_settings(workers: str, audit_key: str) -> None:
    """LEDGER_PARSE_WORKERS, LEDGER_WORKERS, LEDGER_PARALLEL_MIN_MB, LEDGER_BATCH_MB,
    LEDGER_KAFKA_FRAME_MB, LEDGER_AUDIT_KEY, LEDGER_PHONE_KEY: a usable setting or one
    UsageError line."""
    from ledger.config import settings_from_env
    from ledger.errors import UsageError

    env = {
        "LEDGER_PARSE_WORKERS": workers,
        "LEDGER_WORKERS": workers,
        "LEDGER_PARALLEL_MIN_MB": workers,
        "LEDGER_KAFKA_BOOTSTRAP_TIMEOUT_MS": workers,
        "LEDGER_CACHE_MB": workers,
        "LEDGER_BATCH_MB": workers,
        "LEDGER_KAFKA_FRAME_MB": workers,
        "LEDGER_AUDIT_KEY": audit_key,
        "LEDGER_PHONE_KEY": audit_key,
    }
    try:
        s = settings_from_env(env)
    except UsageError as exc:
        assert "LEDGER_" in str(exc) and "\n" not in str(exc)
        return
    assert 0 <= s.parse_workers <= 999 and s.cache_mb > 0 and s.batch_bytes > 0
    assert 2 <= s.kafka.frame_mb <= 2047
    assert 0 <= s.workers <= 999 and 0 <= s.parallel_min_mb <= 999
    assert s.audit_key is None or s.audit_key.strip()


@fuzz(EXAMPLES)
@given(_ENV_TEXT)
def test_hostile_retain_assignments_setting(value: str) -> None:
    """LEDGER_RETAIN_ASSIGNMENTS: 0, 1 or unset decide; anything else is one UsageError
    line naming the variable (a typo must not decide what an erasure deletes)."""
    from ledger.config import retain_assignments
    from ledger.errors import UsageError

    try:
        kept = retain_assignments({"LEDGER_RETAIN_ASSIGNMENTS": value})
    except UsageError as exc:
        assert value not in ("", "0", "1")
        assert str(exc).startswith("LEDGER_RETAIN_ASSIGNMENTS=") and "\n" not in str(exc)
        return
    assert kept is (value == "1")


_ARG_TEXT = st.one_of(
    st.text(st.characters(codec=None), max_size=120),
    st.sampled_from(["", " ", "\x1b[31m", "a\nb", "x" * 101, "x" * 501, "R-1"]),
)


@fuzz(EXAMPLES)
@given(_ARG_TEXT, _ARG_TEXT, st.one_of(st.none(), _ARG_TEXT))
def test_hostile_erase_arguments(user: str, request_id: str, reason: str | None) -> None:
    """`ledger erase USER --request-id ID --reason TEXT`: an AccountErased event that
    carries them, or one UsageError line naming the argument, printable."""
    from ledger.cli.erase import _erasure_event
    from ledger.errors import UsageError

    now = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        erasure = _erasure_event(user, request_id, reason, now)
    except UsageError as exc:
        text = str(exc)
        assert "\n" not in text and "\x1b" not in text
        assert any(name in text for name in ("USER", "--request-id", "--reason")), text
        return
    assert erasure.user_id == user and erasure.type == "AccountErased"
    assert erasure.payload.request_id == request_id  # type: ignore[union-attr]
    assert request_id.isprintable() and 0 < len(request_id) <= limits.ERASURE_REQUEST_ID_CHARS
    # What the command line accepts, the event contract reads back the same.
    assert event_from_json_line(event_to_json_line(erasure))[0] == erasure


@fuzz(EXAMPLES)
@given(_ENV_TEXT, _ENV_TEXT)
def test_hostile_changefeed_topic_names(changes: str, current: str) -> None:
    """LEDGER_CHANGES_TOPIC, LEDGER_CURRENT_TOPIC: two distinct names Kafka accepts, or
    one UsageError line naming the variable."""
    import re

    from consumers.cli import changefeed_topics
    from ledger.config import settings_from_env
    from ledger.errors import UsageError

    s = settings_from_env({"LEDGER_CHANGES_TOPIC": changes, "LEDGER_CURRENT_TOPIC": current})
    try:
        names = changefeed_topics(s)
    except UsageError as exc:
        assert "LEDGER_C" in str(exc) or "must differ" in str(exc)
        assert "\n" not in str(exc)
        return
    assert names[0] != names[1]
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,249}", name) and name not in (".", "..")


# --- subject exports ---------------------------------------------------------------------

_HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)
_HUGE = st.integers(min_value=-(2**80), max_value=2**80) | st.sampled_from([10**300, -1, 0])


def _shaped(kind: type) -> st.SearchStrategy[Any]:
    """A value of the JSON type a section must have, filled with anything."""
    if kind is list:
        return st.lists(_JSON | st.dictionaries(st.text(max_size=12), _JSON), max_size=4)
    if kind is dict:
        return st.dictionaries(st.text(max_size=12), _JSON | _HEX64, max_size=5)
    if kind is int:
        return _HUGE
    return st.text(max_size=40) | _HEX64


@st.composite
def _export_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """Documents with every section a subject export has, of the right JSON type, holding
    anything: they pass the structural check and reach every check."""
    from ledger.app.audit.subject import _PROOF, _TOP
    from ledger.domain.audit.subject import SUBJECT_FORMAT

    doc = {
        name: draw(_shaped(kind if isinstance(kind, type) else str)) for name, kind in _TOP.items()
    }
    doc["format"] = draw(st.just(SUBJECT_FORMAT) | st.text(max_size=20))
    doc["proof"] = {
        name: draw(_shaped(kind if isinstance(kind, type) else str))
        for name, kind in _PROOF.items()
    }
    doc["proof"]["chain_encoding"] = draw(st.sampled_from([1, 2]) | _HUGE)
    return doc


@pytest.mark.slow
@fuzz(EXAMPLES)
@given(_JSON, _export_shaped())
def test_any_json_is_checked_or_refused_as_a_subject_export(
    value: Any, shaped: dict[str, Any]
) -> None:
    """Any JSON text is refused as not an export (MalformedExport, one line) or checked;
    a document of an export's shape is checked, every check reported, none passing on
    garbage; nothing else escapes."""
    from ledger.app.audit.subject import CHECKS, MalformedExport, parse_export, verify_export

    for doc in (value, shaped):
        try:
            raw = json.dumps(doc).encode()
        except ValueError:
            continue  # NaN cannot be written as JSON
        try:
            parsed = parse_export(raw)
        except MalformedExport as exc:
            assert "\n" not in str(exc)
            continue
        report = verify_export(parsed, POLICIES, hmac_key=b"audit-key")
        assert [c.name for c in report.checks] == list(CHECKS)
        assert not report.ok
        assert all("\n" not in c.detail for c in report.checks)
    for cut in (b"", b"{", json.dumps(shaped).encode()[:-1], b'{"format": ' + b"9" * 5000 + b"}"):
        with pytest.raises(MalformedExport):
            parse_export(cut)
