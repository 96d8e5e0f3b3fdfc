"""The batch plan is a pure function of plain inputs: no store, no clock."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from ledger.app.ingest.plan import plan_batch, screen
from ledger.codecs.jsonl import event_from_json_line
from ledger.codecs.policy_files import load_policies
from ledger.domain.events import EventError
from ledger.domain.projection import UserProjection
from ledger.sources.records import SourceRecord
from tests import factories
from tests.factories import eid, line, terms_accepted

POLICIES = load_policies()
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def rec(offset: int, item: str | dict[str, Any]) -> SourceRecord:
    """A record of file `f` holding `item`: an event's JSON object, or any other line."""
    text = item if isinstance(item, str) else line(item)
    try:
        decoded: object = event_from_json_line(text)
    except EventError as exc:
        decoded = exc
    return SourceRecord("s", 0, offset, f"f:{offset + 1}", text.encode(), decoded)  # type: ignore[arg-type]


signup = partial(factories.signup, at="2026-01-10T00:00:00Z")


def test_screen_skips_applied_records_and_dead_letters_bad_ones() -> None:
    records = [
        rec(0, signup(1, "u-1")),
        rec(1, signup(2, "u-2")),
        rec(2, "not json"),
        rec(3, terms_accepted(3, "u-2", at="2026-02-01T00:00:00Z", version="tos-2099")),
    ]
    screened = screen(records, {("s", 0): 1}, POLICIES, T0)
    assert screened.already_applied == 1
    assert [a.event.event_id for a in screened.accepted] == [eid(2)]
    dead = [(d.record.offset, d.event_id) for d in screened.dead_letters]
    assert dead == [(2, None), (3, eid(3))]
    assert "unknown terms version 'tos-2099'" in screened.dead_letters[1].reason
    assert screened.positions == {("s", 0): 4}
    assert screened.user_ids == ["u-2"]


def test_plan_decides_owners_duplicates_and_rows_without_a_store() -> None:
    records = [rec(0, signup(1, "u-1")), rec(1, signup(1, "u-1")), rec(2, signup(9, "u-3"))]
    screened = screen(records, {}, POLICIES, T0)
    projections = {u: UserProjection(u) for u in screened.user_ids}
    plan = plan_batch(screened, {eid(9): "u-other"}, projections, POLICIES, b"k")
    assert [a.observation.event_id for a in plan.events] == [eid(1)]
    assert plan.duplicates == 1
    assert [d.reason for d in plan.dead_letters] == [
        f"event_id {eid(9)} is already recorded for another user"
    ]
    assert [(u, r.entry.assignment, r.entry.rule) for u, r in plan.new_rows] == [
        ("u-1", "xhs-domestic", "C2")
    ]
    assert plan.superseded_rows == []
    assert [(s.user_id, s.latest.rule if s.latest else None) for s, _ in plan.users] == [
        ("u-1", "C2"),
    ]
    result = plan.result()
    assert (result.applied, result.duplicates, result.dead_lettered) == (1, 1, 1)
    assert result.users == {"u-1"}


def test_one_event_id_for_two_users_in_one_batch_keeps_the_first() -> None:
    records = [rec(0, signup(7, "u-a")), rec(1, signup(7, "u-b"))]
    screened = screen(records, {}, POLICIES, T0)
    projections = {u: UserProjection(u) for u in screened.user_ids}
    plan = plan_batch(screened, {}, projections, POLICIES, b"k")
    assert [a.observation.user_id for a in plan.events] == ["u-a"]
    assert [(d.record.offset, d.user_id) for d in plan.dead_letters] == [(1, "u-b")]
    assert "already recorded for another user" in plan.dead_letters[0].reason
