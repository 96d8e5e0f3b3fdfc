"""The compact store's encodings (migration 0007) give back exactly what they were given:
positions split into an interned prefix and an offset, event ids as 16 bytes, instants as
integer microseconds, for any text or time, hostile ones included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from ledger.store.rows import (
    event_id_bytes,
    event_id_text,
    instant,
    instant_micros,
    join_position,
    split_position,
)

HOSTILE_POSITIONS = [
    "ev.avro#0",
    "events.jsonl:2",
    "account-events[3]@17",
    "#007",  # a leading zero would not print back
    "x#" + "9" * 19,  # past int64
    "x#-1",
    "x#１２",  # digits, but not ASCII ones
    "",
    "\x00",
    "\udc80#3",  # a file name that is not UTF-8, as positions show it
    "\x1b[2J#4",
]


def test_hostile_positions_come_back_as_they_were() -> None:
    for position in HOSTILE_POSITIONS:
        prefix, offset = split_position(position)
        assert join_position(prefix, offset) == position
        assert offset is None or 0 <= offset < 2**63


@given(st.text(), st.one_of(st.none(), st.integers(0, 2**62)))
def test_any_position_comes_back(prefix: str, offset: int | None) -> None:
    position = join_position(prefix, offset)
    assert join_position(*split_position(position)) == position


@given(st.uuids())
def test_an_event_id_is_its_uuid_s_16_bytes(value: uuid.UUID) -> None:
    text = str(value)
    assert event_id_bytes(text) == value.bytes
    assert event_id_text(value.bytes) == text


@given(st.text())
def test_any_other_event_id_text_comes_back_and_is_never_16_bytes(text: str) -> None:
    packed = event_id_bytes(text)
    assert event_id_text(packed) == text
    canonical = len(text) == 36 and str(uuid.UUID(text)) == text if _uuidish(text) else False
    assert (len(packed) == 16) == canonical


def _uuidish(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def test_hostile_event_ids_come_back() -> None:
    for text in ("", "e1", "a" * 15, "a" * 16, "A" * 36, str(uuid.uuid4()).upper(), "\udcff"):
        assert event_id_text(event_id_bytes(text)) == text


@given(st.datetimes(timezones=st.just(UTC)))
def test_any_instant_comes_back(value: datetime) -> None:
    assert instant(instant_micros(value)) == value


def test_instants_at_the_ends_of_time_and_in_other_zones() -> None:
    for value in (
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8))),
    ):
        assert instant(instant_micros(value)) == value
