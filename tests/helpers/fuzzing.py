"""What the fuzz tests share (tests/unit/test_fuzz.py in memory, tests/e2e/test_fuzz.py
through the CLI): their Hypothesis settings and example counts, hostile values, valid
streams and their JSON mutants, and the in-memory pipeline both compare with.

Example counts scale with `LEDGER_FUZZ_EXAMPLES` (default 300, the in-memory levels; the
CLI level runs a twentieth of it, at least 4). With `CI` set, examples are derandomised so
a CI run is reproducible.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from ledger.app.ingest.plan import BatchResult
from ledger.app.ingest.projector import Projector
from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line, event_to_json_obj
from ledger.codecs.policy_files import load_policies
from ledger.config import DEV_PHONE_KEY, ByteLimits
from ledger.domain.events import EVENT_TYPES, Event, EventError, SignedUp
from ledger.domain.policy import event_problem
from ledger.sources.files import read_records
from ledger.sources.records import SourceRecord
from ledger.store.memory import MemoryStore
from ledger.testing import event_streams

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
SMALL = ByteLimits(event_bytes=16 << 10)


# --- hostile values -----------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text spliced into a line as it is (what `json.dumps` cannot or will not write:
    5,000-digit integers, deep nesting, NaN)."""

    text: str


def instant_texts() -> st.SearchStrategy[str]:
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


def long_strings() -> st.SearchStrategy[str]:
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
        long_strings(),
        instant_texts(),
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


def usable(event: Event) -> Event:
    """`ledger.testing.channels()` draws any UTF-8 text, NUL included, which the store
    cannot hold and the event model now refuses; the base stream must be valid."""
    if isinstance(event.payload, SignedUp) and "\x00" in event.payload.channel:
        payload = replace(event.payload, channel=event.payload.channel.replace("\x00", "0"))
        return Event(event.event_id, event.user_id, event.occurred_at, payload)
    return event


def valid_streams() -> st.SearchStrategy[list[Event]]:
    return event_streams(max_users=3, max_events=5).map(lambda s: [usable(e) for e in s])


FIELDS = ["event_id", "user_id", "occurred_at", "type", "phone", "channel", "birth_date",
          "country", "evidence", "tos_version", "recorded_at",
          "locale", "document_country", "document_kind"]  # fmt: skip

# Near misses of a BCP 47 tag (SignedUp.locale), and a few tags that are well formed.
LOCALE_TEXTS = st.one_of(
    st.sampled_from(
        ["en_US", "en-", "-en", "en--US", "EN-us", "i-klingon", "und", "qaa-QM", "x-a",
         "en-US-u-", "zh-Hant-TW-x", "e", "123", "en-US\n", "en-\u00dcS", "ｅｎ-US",
         "en-x-" + "a" * 60, "de-DE-1901-1901"]
    ),
    st.from_regex(r"\A[A-Za-z]{1,9}(-[A-Za-z0-9]{1,9}){0,4}\Z"),
)  # fmt: skip


@st.composite
def json_mutant(draw: st.DrawFn, obj: dict[str, Any], *, cli: bool) -> bytes:
    """One mutation of a valid event's JSON object or line. `cli`: keep the record time
    (a line without one gets the replay's clock time, which a reference cannot know)."""
    kind = draw(
        st.sampled_from(["value", "value", "delete", "add", "bytes", "structure", "retype"])
    )
    obj = dict(obj)
    if kind == "retype":  # another type's name, or a newer version's, over these fields
        obj["type"] = draw(st.sampled_from([*EVENT_TYPES, "AccountErased", "identityverified"]))
    elif kind == "value":
        name = draw(st.sampled_from(FIELDS))
        times = name in ("occurred_at", "recorded_at")
        texts = instant_texts()
        if name == "locale":
            value = draw(st.one_of(LOCALE_TEXTS, LOCALE_TEXTS, hostile_values()))
        else:
            value = draw(st.one_of(texts, texts, hostile_values()) if times else hostile_values())
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


def valid_alone(line: bytes, limits: ByteLimits) -> tuple[Event, datetime | None] | None:
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


def apply_in_memory(records: list[SourceRecord]) -> tuple[MemoryStore, BatchResult]:
    store = MemoryStore()
    result = Projector(store, POLICIES, DEV_PHONE_KEY).apply_batch(records, DEFAULT_RECORD_TIME)
    return store, result


def read_file(lines: list[bytes], limits: ByteLimits) -> list[SourceRecord]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return [r for r, _ in read_records(path, "file:fuzz", limits=limits)]
