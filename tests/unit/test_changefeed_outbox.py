"""The changefeed's outbox on a real SQLite store: one record per history row, in
application order, with `corrected` exactly where a late event changed a decision for
valid time already seen, whatever the batching; a store rebuilt by replay records its
decisions unannounced; the records encode to the shipped Avro schema and back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app.ingest.projector import Delivery, Projector, apply_deliveries
from ledger.codecs.changefeed import decode_decision, encode_decision
from ledger.codecs.policy_files import load_policies
from ledger.domain.audit.stable_ids import decision_id
from ledger.domain.events import Event
from ledger.queries.changes import Change, page
from ledger.store.database import open_engine
from ledger.store.readonly import EngineReader
from ledger.store.sql import SqlStore
from ledger.testing import batch_splits, event_streams
from tests.factories import phone_change, relocation, signup, terms_accepted
from tests.support import Cli, write_jsonl

POLICIES = load_policies()
KEY = b"changefeed-test-key"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def at_positions(stream: Sequence[Event]) -> list[Delivery]:
    return [(e, T0 + timedelta(milliseconds=i)) for i, e in enumerate(stream)]


def feed(url: str) -> list[Change]:
    engine = open_engine(url, migrate=False)
    try:
        found: list[Change] = []
        while batch := page(EngineReader(engine), after=found[-1].seq if found else 0, limit=7):
            found.extend(batch)
        return found
    finally:
        engine.dispose()


def project(url: str, batches: Sequence[Sequence[Delivery]]) -> tuple[list[Change], set[str]]:
    """The feed after applying `batches`, and the decision ids of every history row."""
    store = SqlStore(open_engine(url))
    try:
        projector = Projector(store, POLICIES, KEY)
        for result in apply_deliveries(projector, batches, T0, source="prop"):
            assert result.dead_letters == []
        rows = store.history_rows()
    finally:
        store.engine.dispose()
    return feed(url), {decision_id(r.user_id, r.valid_from, r.recorded_at) for r in rows}


@PROPS
@given(data=st.data())
def test_every_history_row_is_announced_once_in_application_order_whatever_the_batches(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    deliveries = at_positions(data.draw(event_streams(max_users=3)))
    batches = data.draw(batch_splits(deliveries))
    tmp = tmp_path_factory.mktemp("outbox")
    one_shot, rows = project(f"sqlite:///{tmp / 'one.db'}", [deliveries])
    batched, batched_rows = project(f"sqlite:///{tmp / 'batched.db'}", batches)
    for changes, history in ((one_shot, rows), (batched, batched_rows)):
        ids = [c.decision_id for c in changes]
        assert len(ids) == len(set(ids)) == len(history)  # once each
        assert set(ids) == history
        assert all(a.seq < b.seq for a, b in pairwise(changes))
        for user in {c.user_id for c in changes}:  # each user's, in application order
            mine = [c.app_seq for c in changes if c.user_id == user]
            assert mine == sorted(mine)
    # What was decided, and whether it corrected, depends on the events, not the batches.
    assert {(c.decision_id, c.kind) for c in batched} == {(c.decision_id, c.kind) for c in one_shot}


@PROPS
@given(stream=event_streams(max_users=3))
def test_events_in_valid_time_order_are_never_corrections(
    stream: list[Event], tmp_path_factory: pytest.TempPathFactory
) -> None:
    in_order = sorted(stream, key=lambda e: e.order_key)
    url = f"sqlite:///{tmp_path_factory.mktemp('o') / 'l.db'}"
    changes, _ = project(url, [at_positions(in_order)])
    assert changes
    assert {c.kind for c in changes} == {"assigned"}


LATE_USER = [
    signup(40, "u-5", at="2026-04-01T00:00:00Z", phone="+16045550123",
           recorded_at="2026-04-01T00:00:01Z"),
    phone_change(41, "u-5", at="2026-05-02T00:00:00Z", phone="+447911123456",
                 recorded_at="2026-05-02T00:00:01Z"),
]
LATE_RELOCATION = relocation(42, "u-5", at="2026-04-10T00:00:00Z", country="CN",
                             evidence="self_declared", recorded_at="2026-05-20T00:00:00Z")


def test_a_late_event_that_changes_the_past_is_announced_as_a_correction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    cli = Cli(url)
    cli.run("replay", str(write_jsonl(tmp_path / "a.jsonl", LATE_USER)), "--announce")
    before = feed(url)
    assert [(c.kind, c.rule, c.valid_to) for c in before] == [("assigned", "R4", None)]
    cli.run("replay", str(write_jsonl(tmp_path / "b.jsonl", [LATE_RELOCATION])))
    after = feed(url)[len(before):]
    # The first period, closed by the late event, decides as before: news, not a
    # correction. From 10 April it is domestic, where R4 had been believed up to 2 May.
    assert [(c.kind, c.rule, c.assignment, c.valid_to is None) for c in after] == [
        ("assigned", "R4", "rednote-international", False),
        ("corrected", "R1", "xhs-domestic", True),
    ]
    assert all(c.announce for c in before + after)
    assert after[-1].terms.data_residency == "stored in mainland China"


def test_events_in_order_in_one_batch_announce_only_what_was_believed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    events = [
        signup(1, "u-1", at="2026-01-10T09:00:00Z", phone="+8613912345678"),
        phone_change(2, "u-1", at="2026-02-01T00:00:00Z", phone="+16045550123"),
        terms_accepted(3, "u-1", at="2026-04-01T00:00:00Z", version="tos-2026-03-residency"),
    ]
    Cli(url).run("replay", str(write_jsonl(tmp_path / "e.jsonl", events)))
    changes = feed(url)
    assert {c.kind for c in changes} == {"assigned"}
    # One record time for the batch: the rows its own later events replaced were never
    # believed, so they are not decisions either.
    assert sorted((c.rule, c.valid_to is None) for c in changes) == [("C2", False), ("R4", True)]


def test_a_rebuild_is_recorded_unannounced_unless_asked_and_later_replays_announce(
    tmp_path: Path,
) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", LATE_USER)
    late = write_jsonl(tmp_path / "b.jsonl", [LATE_RELOCATION])
    rebuilt = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    Cli(rebuilt).run("replay", str(first))
    Cli(rebuilt).run("replay", str(late))
    assert [c.announce for c in feed(rebuilt)] == [False, True, True]
    asked = f"sqlite:///{tmp_path / 'asked.db'}"
    Cli(asked).run("replay", str(first), "--announce")
    Cli(asked).run("replay", str(late), "--no-announce")
    assert [c.announce for c in feed(asked)] == [True, False, False]


def test_records_round_trip_through_the_shipped_avro_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    Cli(url).run("replay", str(write_jsonl(tmp_path / "a.jsonl", [*LATE_USER, LATE_RELOCATION])))
    for change in feed(url):
        message = encode_decision(change.record())
        assert message[:2] == b"\xc3\x01"
        assert decode_decision(message) == change.record()
        json_form = change.to_json()
        assert json_form["decision_id"] == change.decision_id
        assert json_form["terms"]["data_residency"] == change.terms.data_residency
