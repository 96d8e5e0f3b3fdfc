"""The Hypothesis strategies of `ledger.testing`, and the codec property they exist for:
Avro and JSON round trips are identities."""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from datetime import UTC, datetime

import phonenumbers
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line, event_to_json_line
from ledger.domain.events import EVENT_TYPES, Event, SignedUp, TermsAccepted
from ledger.testing import (
    INVALID_PHONES,
    PHONE_REGIONS,
    batch_splits,
    event_streams,
    instants,
    phones,
    streams_with_duplicates,
    user_events,
)

CODEC = AvroCodec()

# Streams are big draws; the size check is about Hypothesis' budget, not a bug in the test.
STREAMS = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])


@STREAMS
@given(event_streams(), st.none() | instants())
def test_json_and_avro_round_trips_are_identities(
    stream: list[Event], recorded_at: datetime | None
) -> None:
    for event in stream:
        assert event_from_json_line(event_to_json_line(event, recorded_at)) == (event, recorded_at)
        assert CODEC.decode(CODEC.encode(event, recorded_at)) == (event, recorded_at)


@STREAMS
@given(event_streams())
def test_avro_container_round_trip_is_the_identity(stream: list[Event]) -> None:
    buffer = io.BytesIO()
    assert CODEC.write_container(buffer, ((e, None) for e in stream)) == len(stream)
    buffer.seek(0)
    assert [item for _, item in CODEC.read_container(buffer)] == [(e, None) for e in stream]


@given(phones())
def test_phones_are_valid_in_a_listed_region_or_listed_invalid(phone: str) -> None:
    if phone in INVALID_PHONES:
        with contextlib.suppress(phonenumbers.NumberParseException):  # some do not even parse
            assert not phonenumbers.is_valid_number(phonenumbers.parse(phone))
    else:
        number = phonenumbers.parse(phone)
        assert phonenumbers.is_valid_number(number)
        assert phonenumbers.region_code_for_number(number) in PHONE_REGIONS
        assert phone == phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@given(phones(["HK", "MO", "TW"], invalid=False))
def test_phones_can_be_restricted_to_regions(phone: str) -> None:
    region = phonenumbers.region_code_for_number(phonenumbers.parse(phone))
    assert region in {"HK", "MO", "TW"}


@given(instants(datetime(2026, 3, 24, 16, tzinfo=UTC), datetime(2026, 3, 25, tzinfo=UTC)))
def test_instants_are_utc_milliseconds_in_range(instant: datetime) -> None:
    assert instant.utcoffset() is not None and instant.utcoffset().total_seconds() == 0
    assert instant.microsecond % 1000 == 0
    assert datetime(2026, 3, 24, 16, tzinfo=UTC) <= instant <= datetime(2026, 3, 25, tzinfo=UTC)


@given(user_events("u-42", tos_versions=("tos-2026-03-residency", "wechat-style"), max_events=5))
def test_user_events_shape(events: list[Event]) -> None:
    assert 1 <= len(events) <= 5
    assert isinstance(events[0].payload, SignedUp)
    assert not any(isinstance(e.payload, SignedUp) for e in events[1:])
    assert {e.user_id for e in events} == {"u-42"}
    assert len({e.event_id for e in events}) == len(events)
    versions = {e.payload.tos_version for e in events if isinstance(e.payload, TermsAccepted)}
    assert versions <= {"tos-2026-03-residency", "wechat-style"}


def test_user_events_reach_the_awkward_cases() -> None:
    # The ordering rules only get exercised if these cases are actually generated.
    def collide(events: list[Event]) -> bool:
        return len({e.occurred_at for e in events}) < len(events)

    def predates(events: list[Event]) -> bool:
        return any(e.occurred_at < events[0].occurred_at for e in events[1:])

    # Finding one is enough; shrinking it to the minimal example would take most of the time.
    fast = settings(database=None, max_examples=2000, phases=[Phase.generate])
    assert collide(find(user_events(), collide, settings=fast))
    assert predates(find(user_events(), predates, settings=fast))


def test_user_events_reach_every_event_type_and_locale() -> None:
    # Every type of the current event schema, and signups with and without a locale: what
    # the fuzz and property tests draw from must include what version 2 added.
    fast = settings(database=None, max_examples=2000, phases=[Phase.generate])
    # Not AccountErased: what follows an erasure is suppressed, so arrival order matters
    # for it by design, and the property tests hold arrival order not to matter. Its own
    # tests (tests/integration/test_erasure.py) draw it.
    for kind in (k for k in EVENT_TYPES if k != "AccountErased"):
        find(user_events(), lambda events, k=kind: any(e.type == k for e in events), settings=fast)
    for has_locale in (True, False):
        find(
            user_events(max_events=1),
            lambda events, h=has_locale: (events[0].payload.locale is not None) == h,
            settings=fast,
        )


@STREAMS
@given(event_streams(max_users=3, preserve_user_order=True))
def test_event_streams_ids_unique_and_user_order_kept(stream: list[Event]) -> None:
    assert len({e.event_id for e in stream}) == len(stream)
    first_of_user: dict[str, Event] = {}
    for event in stream:
        first_of_user.setdefault(event.user_id, event)
    assert all(isinstance(e.payload, SignedUp) for e in first_of_user.values())
    assert 1 <= len(first_of_user) <= 3


@STREAMS
@given(st.data())
def test_batch_splits_concatenate_to_the_stream(data: st.DataObject) -> None:
    stream = data.draw(event_streams())
    batches = data.draw(batch_splits(stream))
    assert [e for batch in batches for e in batch] == stream
    assert all(batches)
    with_empty = data.draw(batch_splits(stream, allow_empty=True))
    assert [e for batch in with_empty for e in batch] == stream


@STREAMS
@given(streams_with_duplicates(max_duplicates=6))
def test_duplicates_only_repeat_earlier_deliveries(stream: list[Event]) -> None:
    first: dict[str, Event] = {}
    for event in stream:
        if event.event_id in first:
            assert event == first[event.event_id]
        else:
            first[event.event_id] = event
    repeats = len(stream) - len(first)
    assert 0 <= repeats <= 6
    counts = Counter(e.event_id for e in stream)
    assert sum(n - 1 for n in counts.values()) == repeats
