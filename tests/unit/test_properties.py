"""Properties of the classification and the bitemporal history over generated streams
(strategies from `ledger.testing`). The projector runs for real on the in-memory store, so
the properties cover the load/fold/write path a replay or consumer takes (the SQL store is
shown to build identical histories in test_store.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app.ingest.projector import Delivery, Projector, apply_deliveries
from ledger.app.ingest.replay import replay_files
from ledger.codecs.jsonl import event_to_json_line
from ledger.codecs.policy_files import load_policies
from ledger.domain.events import Event, PhoneChanged, Relocated
from ledger.domain.facts import observe
from ledger.domain.projection import UserChanges, UserProjection
from ledger.domain.time import parse_instant
from ledger.domain.timeline import compute_timeline
from ledger.store.database import open_engine
from ledger.store.memory import MemoryStore
from ledger.store.sql import SqlStore, open_sql_store
from ledger.testing import batch_splits, event_streams, streams_with_duplicates, user_events

POLICIES = load_policies()
KEY = b"property-test-key"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])




def at_positions(stream: Sequence[Event]) -> list[Delivery]:
    """Record time = arrival position, like Kafka timestamps of one partition."""
    return [(e, T0 + timedelta(milliseconds=i)) for i, e in enumerate(stream)]


def by_first_delivery(stream: Sequence[Event]) -> list[Delivery]:
    """Record time tied to the event (its first delivery), not to where a copy arrives."""
    first: dict[str, datetime] = {}
    for e in stream:
        first.setdefault(e.event_id, T0 + timedelta(milliseconds=len(first)))
    return [(e, first[e.event_id]) for e in stream]


def project(batches: Sequence[Sequence[Delivery]], *, cache_users: int = 1000) -> list[tuple]:
    """Every history row (believed and superseded) after applying `batches` in order."""
    store = MemoryStore()
    projector = Projector(store, POLICIES, KEY, cache_users=cache_users)
    for result in apply_deliveries(projector, batches, T0, source="prop"):
        assert result.dead_letters == []
    return sorted(store.history_rows(), key=repr)


def believed(rows: list[tuple]) -> list[tuple]:
    """Drop record time: (user, valid_from, valid_to, assignment, policy, rule, ...)."""
    return sorted((r.believed_entry() for r in rows if r.superseded_at is None), key=repr)


def entries_of(events: Sequence[Event]) -> tuple:
    obs = sorted((observe(e, KEY) for e in events), key=lambda o: o.order_key)
    return compute_timeline(obs, POLICIES).entries


@PROPS
@given(user_events())
def test_history_tiles_valid_time_from_signup(events: list[Event]) -> None:
    entries = entries_of(events)
    signup = min(e.order_key for e in events if e.type == "SignedUp")[0]
    assert entries[0].valid_from == signup
    assert entries[-1].valid_to is None
    for a, b in pairwise(entries):
        assert a.valid_to == b.valid_from  # no gap, no overlap
        assert a.valid_from < a.valid_to
        assert a.decision_key != b.decision_key  # a new entry only when something changed
    # Exactly one assignment at every instant from signup on, e.g. at every boundary.
    for probe in [signup, *(e.valid_from for e in entries), T0 + timedelta(days=3650)]:
        covering = [
            e
            for e in entries
            if e.valid_from <= probe and (e.valid_to is None or probe < e.valid_to)
        ]
        assert len(covering) == 1


@PROPS
@given(st.data())
def test_believed_history_is_independent_of_arrival_order(data: st.DataObject) -> None:
    stream = data.draw(event_streams(max_users=3))
    shuffled = data.draw(st.permutations(stream))
    assert believed(project([at_positions(stream)])) == believed(project([at_positions(shuffled)]))


@pytest.mark.slow
@PROPS
@given(st.data())
def test_batches_equal_one_shot_including_record_time(data: st.DataObject) -> None:
    deliveries = at_positions(data.draw(event_streams(max_users=3)))
    batches = data.draw(batch_splits(deliveries))
    one_shot = project([deliveries])
    assert project(batches) == one_shot
    # Without the projector's cache every batch reloads its users from the store.
    assert project(batches, cache_users=0) == one_shot


@PROPS
@given(st.data())
def test_equal_record_times_are_also_batch_independent(data: st.DataObject) -> None:
    # File replays without recorded_at give every event the same record time.
    deliveries = [(e, T0) for e in data.draw(event_streams(max_users=2))]
    batches = data.draw(batch_splits(deliveries))
    assert project(batches) == project([deliveries])


@PROPS
@given(streams_with_duplicates(max_users=3))
def test_duplicates_change_nothing(stream: list[Event]) -> None:
    seen: set[str] = set()
    first_only = [e for e in stream if not (e.event_id in seen or seen.add(e.event_id))]
    assert project([by_first_delivery(stream)]) == project([by_first_delivery(first_only)])


@PROPS
@given(event_streams(max_users=3, min_users=2, preserve_user_order=True))
def test_interleaving_users_changes_nothing(stream: list[Event]) -> None:
    deliveries = by_first_delivery(stream)
    one_user_after_another = sorted(deliveries, key=lambda d: d[0].user_id)  # stable per user
    assert project([deliveries]) == project([one_user_after_another])


CUTOVER_FROM = parse_instant("2025-12-08T00:00:00+08:00")
RESIDENCY_FROM = parse_instant("2026-03-25T00:00:00+08:00")


@PROPS
@given(
    user_events(
        tos_versions=("tos-2025-12-cutover",),
        min_value=CUTOVER_FROM,
        max_value=RESIDENCY_FROM - timedelta(milliseconds=1),
    )
)
def test_cutover_assignment_ignores_phone_changes_and_relocations(events: list[Event]) -> None:
    entries = entries_of(events)
    assert {e.policy for e in entries} == {"tos-2025-12-cutover"}
    assert len(entries) == 1  # one decision for the whole life of the account
    without = [e for e in events if not isinstance(e.payload, PhoneChanged | Relocated)]
    assert [x.decision_key for x in entries_of(without)] == [entries[0].decision_key]


@PROPS
@given(user_events(tos_versions=("tos-2023-legacy", "tos-2025-12-cutover")))
def test_legacy_and_cutover_accounts_signed_before_cutover_are_always_domestic(
    events: list[Event],
) -> None:
    signup = min(e.order_key for e in events if e.type == "SignedUp")[0]
    if signup < CUTOVER_FROM:
        assert {e.assignment for e in entries_of(events)} == {"xhs-domestic"}


@PROPS
@given(user_events(max_events=10))
def test_incremental_fold_equals_full_fold(events: list[Event]) -> None:
    """Events arriving in valid-time order take the incremental path; the result must be
    what folding everything at once gives."""
    ordered = sorted(events, key=lambda e: e.order_key)
    proj = UserProjection("u-000001")
    for e in ordered:
        proj.apply(observe(e, KEY), T0, POLICIES, UserChanges())
        assert proj.timeline is not None
        assert proj.timeline.entries == entries_of(ordered[: ordered.index(e) + 1])
    assert (
        proj.timeline.facts == compute_timeline([observe(e, KEY) for e in ordered], POLICIES).facts
    )


def project_in_parallel(
    deliveries: Sequence[Delivery], tmp: Path, *, workers: int, batch_size: int
) -> list[tuple]:
    """`project([deliveries])` by a parallel file replay into SQLite: `workers` processes
    plan the batches (`ledger.app.ingest.pipeline`), this one writes."""
    path = tmp / "stream.jsonl"
    path.write_text("".join(event_to_json_line(e, at) + "\n" for e, at in deliveries))
    url = f"sqlite:///{tmp / 'parallel.db'}"
    store = SqlStore(open_engine(url))  # migrated to the newest schema
    try:
        summary = replay_files(
            Projector(store, POLICIES, KEY),
            [path],
            batch_size=batch_size,
            now=T0,
            workers=workers,
            open_store=partial(open_sql_store, url),
            parallel_min_bytes=0,
        )
        assert summary.dead_lettered == 0
        return sorted(store.history_rows(), key=repr)
    finally:
        store.engine.dispose()


@pytest.mark.slow
@settings(PROPS, max_examples=6)
@given(data=st.data())
def test_workers_change_nothing_whatever_the_order_splits_and_duplicates(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Arrival order, batch splits and duplicates, with the batches planned by worker
    processes that each own a share of the users: the history of the one-shot fold."""
    stream = data.draw(st.permutations(data.draw(streams_with_duplicates(max_users=4))))
    deliveries = by_first_delivery(stream)
    batch_size = data.draw(st.integers(1, max(1, len(deliveries))))
    workers = data.draw(st.sampled_from([1, 2, 3]))
    tmp = tmp_path_factory.mktemp("parallel")
    parallel = project_in_parallel(deliveries, tmp, workers=workers, batch_size=batch_size)
    assert parallel == project([deliveries])
