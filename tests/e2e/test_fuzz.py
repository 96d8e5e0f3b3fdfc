"""Fuzzing the whole pipeline with mutated events (issue "Hostile input").

Valid events from `ledger.testing` are mutated at three levels and fed to the real
pipeline: (a) JSON lines, through `read_records` and the projector; (b) Avro single-object
encoding and (c) Kafka consumer records (`kafka.consumer.fetcher.ConsumerRecord`, the
plain data structure kafka-python hands over), through `to_source_record` and the
projector. Every example asserts: nothing raises; each input that is a valid event on its
own (decided by decoding it alone) is applied or recognised as a duplicate, exactly as a
replay of the valid inputs alone does (same history rows, same counts); and each other
input is dead-lettered with a non-empty reason.

The projector runs on the in-memory store (fast); fewer examples go through `ledger
replay` on SQLite and on PostgreSQL.

Example counts scale with `LEDGER_FUZZ_EXAMPLES` (default 300, the in-memory levels; the
CLI levels run a twentieth of it, at least 4): `LEDGER_FUZZ_EXAMPLES=5000 pytest
tests/e2e/test_fuzz.py` for a long run. With `CI` set, examples are derandomised so a CI run
is reproducible.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from ledger.app.ingest.plan import BatchResult
from ledger.app.ingest.projector import Projector
from ledger.codecs.avro import SINGLE_OBJECT_MAGIC, AvroCodec
from ledger.codecs.jsonl import event_from_json_line, event_to_json_obj
from ledger.codecs.policy_files import load_policies
from ledger.config import DEV_PHONE_KEY, Limits
from ledger.domain.events import Event, EventError, SignedUp
from ledger.domain.policy import event_problem
from ledger.domain.time import to_millis
from ledger.sources.files import read_records
from ledger.sources.kafka import to_source_record
from ledger.sources.records import SourceRecord
from ledger.store.memory import MemoryStore
from ledger.store.schema import dead_letters
from ledger.testing import event_streams
from tests.helpers import postgres
from tests.support import Cli, history_rows

EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "300"))
CLI_EXAMPLES = max(4, EXAMPLES // 20)

settings.register_profile(
    "ledger-fuzz",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ledger-fuzz-ci", settings.get_profile("ledger-fuzz"), derandomize=True)
# Applied per test rather than loaded, so the rest of the suite keeps its own settings.
PROFILE = settings.get_profile("ledger-fuzz-ci" if os.environ.get("CI") else "ledger-fuzz")


def fuzz(examples: int, *checks: HealthCheck) -> settings:
    return settings(
        PROFILE,
        max_examples=examples,
        suppress_health_check=[*PROFILE.suppress_health_check, *checks],
    )


POLICIES = load_policies()
CODEC = AvroCodec()
RECORDED = datetime(2026, 11, 1, tzinfo=UTC)  # record time of every generated line
DEFAULT_RECORD_TIME = datetime(2026, 12, 1, tzinfo=UTC)  # of lines without one
# Small, so the longest values cross the line limit without megabytes per example.
SMALL = Limits(event_bytes=16 << 10)


# --- hostile values -----------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text spliced into a line as it is (what `json.dumps` cannot or will not write:
    5,000-digit integers, deep nesting, NaN)."""

    text: str


def _times() -> st.SearchStrategy[str]:
    """ISO 8601 instants all over datetime's range with any offset: near the ends the
    offset pushes many out of range."""
    offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
    edges = st.sampled_from([datetime.min, datetime.max, datetime(1970, 1, 1)])
    naive = st.one_of(edges, st.datetimes())
    aware = st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), naive, offsets)
    fixed = st.sampled_from(
        [
            "9999-12-31T23:59:59-05:00",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59.999Z",
            "0001-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "2026-01-10T09:00:00",  # no offset
            "2026-02-30T00:00:00Z",
            "2026-01-10",
            "",
        ]
    )
    return st.one_of(aware, fixed)


def _long_strings() -> st.SearchStrategy[str]:
    sizes = st.sampled_from([2, 3, 20, 21, 36, 37, 99, 100, 101, 199, 200, 201, 1000, 5000])
    chars = st.sampled_from(["x", "用", "\x00", "\ud800", "\U0001f600", " ", "\\"])
    return st.builds(lambda c, n: c * n, chars, sizes)


def hostile_values() -> st.SearchStrategy[Any]:
    text = st.text(max_size=20)
    return st.one_of(
        text,
        st.text(st.characters(codec="utf-8"), max_size=20),
        st.builds(
            lambda a, s, b: a + s + b, text, st.characters(categories=["Cs"]), text
        ),  # lone surrogates
        text.map(lambda t: t + "\x00"),
        _long_strings(),
        _times(),
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.sampled_from(
            [
                Raw("9" * 5000),
                Raw("-" + "1" * 4400),
                Raw("1e999"),
                Raw("NaN"),
                Raw("[" * 40 + "]" * 40),
                Raw("[" * 5000 + "]" * 5000),
                Raw('{"a": ' * 50 + "1" + "}" * 50),
                Raw('"\\ud800"'),
                Raw('"\\u0000"'),
            ]
        ),
        st.sampled_from(["SignedUp", "Relocated", "tos-2026-03-residency", "wechat-style", "CN"]),
        st.uuids().map(str),
    )


def dump(obj: dict[str, Any]) -> bytes:
    """`obj` as one JSON line, with `Raw` values spliced in."""
    raws: dict[str, str] = {}

    def placeholder(value: Any) -> Any:
        if isinstance(value, Raw):
            token = f"\x1eraw{len(raws)}\x1e"
            raws[json.dumps(token)] = value.text
            return token
        return value

    text = json.dumps({k: placeholder(v) for k, v in obj.items()})
    for token, raw in raws.items():
        text = text.replace(token, raw)
    return text.encode()


# --- level (a): JSON lines ----------------------------------------------------------------


def _usable(event: Event) -> Event:
    """`ledger.testing.channels()` draws any UTF-8 text, NUL included, which the store
    cannot hold and the event model now refuses; the base stream must be valid."""
    if isinstance(event.payload, SignedUp) and "\x00" in event.payload.channel:
        payload = SignedUp(
            event.payload.phone,
            event.payload.channel.replace("\x00", "0"),
            event.payload.birth_date,
        )
        return Event(event.event_id, event.user_id, event.occurred_at, payload)
    return event


def valid_streams() -> st.SearchStrategy[list[Event]]:
    return event_streams(max_users=3, max_events=5).map(lambda s: [_usable(e) for e in s])


FIELDS = ["event_id", "user_id", "occurred_at", "type", "phone", "channel", "birth_date",
          "country", "evidence", "tos_version", "recorded_at"]  # fmt: skip


@st.composite
def json_mutant(draw: st.DrawFn, obj: dict[str, Any], *, cli: bool) -> bytes:
    """One mutation of a valid event's JSON object or line. `cli`: keep the record time
    (a line without one gets the replay's clock time, which a reference cannot know)."""
    kind = draw(st.sampled_from(["value", "value", "delete", "add", "bytes", "structure"]))
    obj = dict(obj)
    if kind == "value":
        name = draw(st.sampled_from(FIELDS))
        times = name in ("occurred_at", "recorded_at")
        value = draw(st.one_of(_times(), _times(), hostile_values()) if times else hostile_values())
        if cli and name == "recorded_at" and value is None:
            value = "x"
        obj[name] = value
    elif kind == "delete":
        names = [k for k in obj if not (cli and k == "recorded_at")]
        del obj[draw(st.sampled_from(names))]
    elif kind == "add":
        obj[draw(st.text(max_size=10).filter(lambda k: k not in obj))] = draw(hostile_values())
    elif kind == "structure":
        return draw(
            st.sampled_from(
                [
                    b"[" + dump(obj) + b"]",
                    b'{"event": ' + dump(obj) + b"}",
                    b"[" * 100_000,
                    b"{" * 3000,
                    b"null",
                    b"[]",
                    b"{}",
                    b'"text"',
                    b"12345",
                    dump(obj) + b" trailing",
                    dump(obj) + dump(obj),
                ]
            )
        )
    line = dump(obj)
    if kind != "bytes":
        return line
    op = draw(st.sampled_from(["flip", "truncate", "insert"]))
    if op == "truncate":
        return line[: draw(st.integers(1, len(line) - 1))]
    at = draw(st.integers(0, len(line) - 1))
    if op == "flip":
        byte = line[at] ^ draw(st.integers(1, 255))
        assume(byte not in b"\r\n")  # a line break would make it two lines
        return line[:at] + bytes([byte]) + line[at + 1 :]
    junk = draw(
        st.binary(min_size=1, max_size=8).filter(lambda b: b"\n" not in b and b"\r" not in b)
    )
    return line[:at] + junk + line[at:]


@st.composite
def json_cases(draw: st.DrawFn, *, cli: bool = False) -> list[bytes]:
    """Lines of valid events with mutants inserted (or standing in for the original)."""
    stream = draw(valid_streams())
    objs = [event_to_json_obj(e, RECORDED) for e in stream]
    lines = [dump(o) for o in objs]
    for _ in range(draw(st.integers(1, 6))):
        mutant = draw(json_mutant(draw(st.sampled_from(objs)), cli=cli))
        assume(mutant.strip())  # a blank line is no record at all
        at = draw(st.integers(0, len(lines)))
        if lines and draw(st.integers(0, 3)) == 0:
            lines[min(at, len(lines) - 1)] = mutant
        else:
            lines.insert(at, mutant)
    return lines


def valid_alone(line: bytes, limits: Limits) -> tuple[Event, datetime | None] | None:
    """The event a line holds when decoded on its own, or None when it is not one."""
    if len(line) > limits.event_bytes:
        return None
    try:
        event, recorded_at = event_from_json_line(line)
    except EventError:
        return None
    return None if event_problem(event, POLICIES) else (event, recorded_at)


def normalised(rows: Sequence[tuple]) -> list[tuple]:
    """History rows as `tests.support.history_rows` returns them from SQL."""
    return sorted(
        (
            tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for v in r)
            for r in rows
        ),
        key=repr,
    )


def _apply(records: list[SourceRecord]) -> tuple[MemoryStore, BatchResult]:
    store = MemoryStore()
    result = Projector(store, POLICIES, DEV_PHONE_KEY).apply_batch(records, DEFAULT_RECORD_TIME)
    return store, result


def _read_file(lines: list[bytes], limits: Limits) -> list[SourceRecord]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return [r for r, _ in read_records(path, "file:fuzz", limits=limits)]


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
    store, result = _apply(records)
    ref_store, ref = _apply(reference)
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


@fuzz(EXAMPLES)
@given(json_cases())
def test_json_mutants_in_memory(lines: list[bytes]) -> None:
    records = _read_file(lines, SMALL)
    assert [r.offset for r in records] == list(range(len(lines)))  # one record per line
    valid = [valid_alone(line, SMALL) is not None for line in lines]
    reference = _read_file([ln for ln, ok in zip(lines, valid, strict=True) if ok], SMALL)
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
    _long_strings().filter(lambda s: "\ud800" not in s),
)


@st.composite
def avro_mutant(draw: st.DrawFn, event: Event) -> bytes | None:
    """Level (b): the event single-object encoded, then damaged as bytes or re-encoded
    with a hostile value in one field (any long is a timestamp-millis on the wire)."""
    data = CODEC.encode(event)
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "fingerprint", "magic", "field",
                                 "field", "none", "huge", "same"]))  # fmt: skip
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "extend":
        return data + draw(st.binary(min_size=1, max_size=20))
    if kind == "fingerprint":
        return data[:2] + draw(st.binary(min_size=8, max_size=8)) + data[10:]
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
    # `evidence` is an Avro enum: the writer cannot put anything else there.
    fields = ["occurred_at", "recorded_at", "event_id", "user_id", *payload]
    field = draw(st.sampled_from([f for f in fields if f != "evidence"]))
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
    _, result = _apply(records)
    assert result.applied + result.duplicates + result.dead_lettered == len(records)


# --- the CLI on both databases ------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """An empty store per example (a function-scoped fixture would be shared by all)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}"
        return
    with postgres.fresh_database("ledger_fuzz") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        request.getfixturevalue("postgres_available")
    return request.param


@fuzz(CLI_EXAMPLES, HealthCheck.function_scoped_fixture)
@given(lines=json_cases(cli=True))
def test_json_mutants_through_the_cli(database_kind: str, lines: list[bytes]) -> None:
    limits = Limits()
    valid = [valid_alone(line, limits) for line in lines]
    # A valid line without a record time would get the replay's clock time.
    assume(all(v[1] is not None for v in valid if v is not None))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "fuzz.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        ref_lines = [line for line, v in zip(lines, valid, strict=True) if v is not None]
        reference = _read_file(ref_lines, limits)
        ref_store, ref = _apply(reference)
        with fresh_database(database_kind, folder) as url:
            cli = Cli(url)
            result = cli.run("replay", str(path), "--json", expect=None)
            assert result.exit_code in (0, 3), result.stderr
            summary = json.loads(result.stdout)
            assert (summary["applied"], summary["duplicates"]) == (ref.applied, ref.duplicates)
            invalid = sum(v is None for v in valid)
            assert summary["dead_lettered"] == invalid + ref.dead_lettered
            assert (result.exit_code == 3) == bool(summary["dead_lettered"])
            assert history_rows(url) == normalised(ref_store.history_rows())
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                reasons = conn.execute(sa.select(dead_letters.c.reason)).scalars().all()
            engine.dispose()
            assert len(reasons) == summary["dead_lettered"]
            assert all(r.strip() for r in reasons)
            again = cli.run("replay", str(path), "--json", expect=0)
            assert json.loads(again.stdout)["applied"] == 0


# --- the audit trail's inputs: digest documents and the settings it reads -------------------

_JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


def _digest_document() -> dict[str, Any]:
    from ledger.app.audit.signing import sign
    from ledger.domain.audit import Digest

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
    from ledger.domain.audit import DigestError

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


@fuzz(EXAMPLES)
@given(_JSON)
def test_any_json_is_a_digest_or_a_digest_error(value: Any) -> None:
    from ledger.app.audit.signing import check
    from ledger.domain.audit import DigestError

    for key in (None, b"audit-key"):
        with contextlib.suppress(DigestError):
            check(value, hmac_key=key)


# Surrogates included: the environment of a process may hold bytes that are not UTF-8.
_ENV_TEXT = st.text(st.characters(codec=None, exclude_characters="\x00"), max_size=40)


@fuzz(EXAMPLES)
@given(_ENV_TEXT, _ENV_TEXT)
def test_hostile_audit_and_worker_settings(workers: str, audit_key: str) -> None:
    """LEDGER_PARSE_WORKERS, LEDGER_AUDIT_KEY, LEDGER_PHONE_KEY: a usable setting or one
    UsageError line."""
    from ledger.config import settings_from_env
    from ledger.errors import UsageError

    env = {
        "LEDGER_PARSE_WORKERS": workers,
        "LEDGER_KAFKA_BOOTSTRAP_TIMEOUT_MS": workers,
        "LEDGER_CACHE_MB": workers,
        "LEDGER_AUDIT_KEY": audit_key,
        "LEDGER_PHONE_KEY": audit_key,
    }
    try:
        s = settings_from_env(env)
    except UsageError as exc:
        assert "LEDGER_" in str(exc) and "\n" not in str(exc)
        return
    assert 0 <= s.parse_workers <= 999 and s.cache_mb > 0
    assert s.audit_key is None or s.audit_key.strip()
