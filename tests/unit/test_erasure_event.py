"""The AccountErased event (event schema 3): its fields' limits, both wire forms, and the
erasure bytes its link hashes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line, event_to_json_line
from ledger.domain.audit.erasure import (
    ErasureRecord,
    SkeletonRow,
    erased_events_hash,
    erasure_bytes,
    skeleton_hash,
)
from ledger.domain.events import AccountErased, Event, EventError

BASE = {
    "event_id": "5e0c7f00-0000-4000-8000-00000000e001",
    "user_id": "u-1",
    "occurred_at": "2026-12-01T00:00:00Z",
    "type": "AccountErased",
    "request_id": "DSR-1",
}
T = datetime(2026, 12, 1, tzinfo=UTC)


def test_an_erasure_reads_from_json_and_avro_alike() -> None:
    event, _ = event_from_json_line(json.dumps({**BASE, "reason": "asked"}))
    assert event.payload == AccountErased("DSR-1", "asked")
    assert event_from_json_line(event_to_json_line(event))[0] == event
    codec = AvroCodec()
    assert codec.decode(codec.encode(event)) == (event, None)
    bare, _ = event_from_json_line(json.dumps(BASE))
    assert bare.payload == AccountErased("DSR-1", None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"request_id": None}, "missing field 'request_id'"),
        ({"request_id": ""}, "field 'request_id' is empty"),
        ({"request_id": "r" * 101}, "over the limit of 100"),
        ({"request_id": 7}, "must be a string, got integer"),
        ({"request_id": "a\x00b"}, "NUL"),
        ({"reason": "x" * 501}, "over the limit of 500"),
        ({"reason": ["a"]}, "field 'reason' is a JSON array"),
        ({"reason": 5}, "must be a string, got integer"),
        ({"reason": "\ud800"}, "lone surrogate"),
    ],
)
def test_hostile_erasure_fields_are_refused_naming_the_field(
    fields: dict[str, object], message: str
) -> None:
    line = {**BASE, **fields}
    with pytest.raises(EventError) as caught:
        event_from_json_line(json.dumps(line))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_request_id_and_reason_at_their_limits_are_accepted() -> None:
    event, _ = event_from_json_line(
        json.dumps({**BASE, "request_id": "r" * 100, "reason": "x" * 500})
    )
    assert isinstance(event.payload, AccountErased)


def _record(**changes: object) -> ErasureRecord:
    fields: dict[str, object] = {
        "event_id": BASE["event_id"],
        "user_id": "u-1",
        "occurred_at": T,
        "recorded_at": T,
        "request_id": "DSR-1",
        "seq": 4,
        "erased_events": erased_events_hash([(1, T, bytes(32)), (2, T, bytes(32))]),
        "history_rows": 2,
        "retained": None,
    }
    fields.update(changes)
    return ErasureRecord(**fields)  # type: ignore[arg-type]


def test_the_erasure_bytes_commit_to_every_kept_value() -> None:
    base = erasure_bytes(_record())
    for change in (
        {"request_id": "DSR-2"},
        {"seq": 5},
        {"history_rows": 3},
        {"recorded_at": datetime(2026, 12, 2, tzinfo=UTC)},
        {"erased_events": erased_events_hash([(1, T, bytes(31) + b"\x01")])},
        {"retained": skeleton_hash([])},
    ):
        assert erasure_bytes(_record(**change)) != base, change
    # No event row's bytes start as an erasure's (encoding 1 is JSON, encoding 2 is 0x02).
    assert base[:1] not in (b"{", b"\x02")


def test_the_skeleton_hash_does_not_depend_on_row_order() -> None:
    a = SkeletonRow(T, None, "xhs-domestic", "tos-2024", "R1", T, None)
    b = SkeletonRow(datetime(2025, 1, 1, tzinfo=UTC), T, "undetermined", "tos-2024", "R9", T, T)
    assert skeleton_hash([a, b]) == skeleton_hash([b, a]) != skeleton_hash([a])


def test_an_erasure_event_is_an_event_like_any_other() -> None:
    e = Event(BASE["event_id"], "u-1", T, AccountErased("DSR-1"))
    assert e.type == "AccountErased"
