"""The store contract: one set of tests that every implementation of the batch port
(`ledger.app.ports.BatchStore`) passes, through the port itself and through the projector
(`Projector.apply_batch`, `apply_deliveries`) that drives it:

- memory: `ledger.store.memory.MemoryStore`;
- sqlite: `ledger.store.sql.SqlStore` on a SQLite file (`open_engine`);
- postgresql: `SqlStore` on a fresh PostgreSQL database (skipped with a hint when the server
  is absent, mandatory with LEDGER_REQUIRE_POSTGRES=1, as every PostgreSQL test).

What the contract says: a batch stores its rows and its positions in one transaction; a
duplicate event changes nothing but the position; a plan made from a state another writer
has moved on (the user's next sequence number or the event id taken) is a StoreConflict
with nothing written, and the projector plans again; a value the database cannot hold is a
StoreRefused with nothing written, and the projector dead-letters that record alone (only
the SQL stores can refuse: the memory store holds any value the event model admits);
positions are stored, locked and reset per source and partition with the source's
identity; the policy versions a store decided with are pinned at first use, and a changed
policy under a pinned version is refused (PolicyChanged); the fingerprint of the phone
key is recorded with the first events, and a plan under another key is refused in its
transaction (PhoneKeyChanged); and the reads
(`assignment_counts`, `history_rows`) give what was written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledger.app.ingest.plan import BatchPlan, plan_batch, policy_hashes, screen
from ledger.app.ingest.projector import Delivery, Projector, apply_deliveries
from ledger.app.ports import (
    BatchStore,
    BatchTransaction,
    HistoryTableRow,
    PhoneKeyChanged,
    PolicyChanged,
    StoreConflict,
    StoreRefused,
)
from ledger.codecs.policy_files import load_policies, load_policy_paths
from ledger.domain.events import EventError
from ledger.domain.facts import phone_key_fingerprint
from ledger.generate import generate_events
from ledger.sources.records import SourceIdentity, SourceRecord
from ledger.store.database import open_engine
from ledger.store.memory import MemoryStore
from ledger.store.schema import dead_letters
from ledger.store.sql import SqlStore
from tests import factories
from tests.factories import PHONE_CA, PHONE_HK, PHONE_UK, eid, phone_change, relocation, signup
from tests.helpers.policy_drafts import shipped
from tests.support import history_rows, refuse_events_of

POLICIES = load_policies()
KEY = b"store-contract-key"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
# Which stores can refuse a value (StoreRefused): the databases. The memory store holds
# anything the event model admits, so the same batch applies there whole.
CAN_REFUSE = frozenset({"sqlite", "postgresql"})


@dataclass
class Subject:
    """One store under the contract, with what the contract needs beyond the port: its
    dead letters and, for the SQL stores, the URL and a way to make the database refuse."""

    kind: str
    store: MemoryStore | SqlStore
    url: str | None = None

    def dead_letter_reasons(self) -> list[str]:
        if isinstance(self.store, MemoryStore):
            return [d.reason for d in self.store.dead_letters]
        with self.store.engine.connect() as conn:
            return list(conn.execute(sa.select(dead_letters.c.reason)).scalars())

    def refuse_events_of(self, user: str) -> bool:
        """Make the store refuse `user`'s events where it can; False where it cannot."""
        if isinstance(self.store, MemoryStore):
            return False
        refuse_events_of(self.store.engine, user)
        return True


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    if request.param == "memory":
        yield Subject("memory", MemoryStore())
        return
    url = (
        f"sqlite:///{tmp_path / 'ledger.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = SqlStore(open_engine(url))
    yield Subject(request.param, store, url)
    store.engine.dispose()


# --- helpers -------------------------------------------------------------------------------


def delivered(*objs: dict[str, Any], start: datetime = T0) -> list[Delivery]:
    """The events of these JSON objects with record times a millisecond apart (an object's
    own `recorded_at` wins)."""
    out: list[Delivery] = []
    for i, obj in enumerate(objs):
        obj = dict(obj)
        own = obj.pop("recorded_at", None)
        at = datetime.fromisoformat(own) if own else start + timedelta(milliseconds=i)
        out.append((factories.event(obj), at))
    return out


def records(
    source: str, partition: int, first_offset: int, deliveries: Sequence[Delivery | EventError]
) -> list[SourceRecord]:
    return [
        SourceRecord(source, partition, offset, f"{source}[{partition}]@{offset}", b"", d)
        for offset, d in enumerate(deliveries, first_offset)
    ]


def projector(store: BatchStore, **kw: Any) -> Projector:
    return Projector(store, POLICIES, KEY, **kw)


def sorted_rows(rows: Sequence[HistoryTableRow]) -> list[HistoryTableRow]:
    return sorted(rows, key=lambda r: (r.user_id, r.valid_from, r.recorded_at))


def state(store: MemoryStore | SqlStore, *sources: str) -> tuple[Any, ...]:
    """Everything the port reads back: compared before and after what must write nothing."""
    return (
        sorted_rows(store.history_rows()),
        store.assignment_counts(),
        store.policy_pins(),
        {s: store.stored_positions(s) for s in sources},
        {s: store.source_identity(s) for s in sources},
        store.phone_key_fingerprint(),
    )


def plan_in(tx: BatchTransaction, batch: Sequence[SourceRecord]) -> BatchPlan:
    """What the projector plans for `batch` from the state `tx` reads (no cache)."""
    stored = tx.lock_positions({(r.source, r.partition) for r in batch})
    screened = screen(batch, stored, POLICIES, T0)
    owners = tx.event_owners(screened.event_ids)
    return plan_batch(screened, owners, tx.load_users(screened.user_ids), POLICIES, KEY)


def stale_plan(store: BatchStore, batch: Sequence[SourceRecord]) -> BatchPlan:
    """A plan made in a transaction that then writes nothing: once another writer has
    committed, it is a plan from a state that has moved on."""
    with store.transaction() as tx:
        return plan_in(tx, batch)


def write(store: BatchStore, plan: BatchPlan) -> None:
    with store.transaction() as tx:
        tx.write(plan)


@dataclass
class Spy:
    """The port, passed through, counting the conflicts the store reports."""

    store: BatchStore
    conflicts: list[StoreConflict] = field(default_factory=list)

    def transaction(self) -> AbstractContextManager[BatchTransaction]:
        spy = self

        class _Tx:
            def __enter__(self) -> BatchTransaction:
                self.inner = spy.store.transaction()
                return self.inner.__enter__()

            def __exit__(self, *exc: Any) -> Any:
                try:
                    return self.inner.__exit__(*exc)
                except StoreConflict as conflict:
                    spy.conflicts.append(conflict)
                    raise

        return _Tx()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return getattr(self.store, name)


# --- applying a batch --------------------------------------------------------------------


def test_a_batch_stores_its_rows_and_its_positions(subject: Subject) -> None:
    store = subject.store
    assert state(store, "s") == ([], {}, {}, {"s": {}}, {"s": None}, None)
    batch = records(
        "s",
        0,
        0,
        delivered(
            signup(1, "u-1"),
            signup(2, "u-2", phone=PHONE_HK, channel="rednote-app"),
            phone_change(3, "u-1", at="2026-02-01T00:00:00Z", phone=PHONE_CA),
        ),
    )
    result = projector(store).apply_batch(batch, T0)
    assert (result.applied, result.duplicates, result.dead_lettered) == (3, 0, 0)
    assert result.users == {"u-1", "u-2"}
    assert store.stored_positions("s") == {0: 3}
    assert store.assignment_counts() == {"xhs-domestic": 1, "rednote-international": 1}
    rows = sorted_rows(store.history_rows())
    assert [(r.user_id, r.assignment, r.policy, r.rule, r.superseded_at) for r in rows] == [
        ("u-1", "xhs-domestic", "tos-2025-12-cutover", "C2", None),
        ("u-2", "rednote-international", "tos-2025-12-cutover", "C3", None),
    ]
    assert rows[0].valid_from == datetime(2026, 1, 10, 9, tzinfo=UTC)
    assert rows[0].valid_to is None and rows[0].recorded_at == T0
    assert rows[0].evidence == [eid(1)] and rows[0].facts["signup_phone_region"] == "CN"
    assert rows[0].policy_hash == policy_hashes(POLICIES)["tos-2025-12-cutover"]


def test_a_generated_stream_in_uneven_batches_gives_the_in_memory_reference(
    subject: Subject,
) -> None:
    """The same stream (with one undecodable record) through the same projector, in the
    same uneven batches, with a small cache: every history row, the dead letter, the
    positions and the assignment counts agree with a fresh in-memory store's."""
    stream = generate_events(300, seed=13)
    items: list[Any] = [(e, T0 + timedelta(milliseconds=i)) for i, e in enumerate(stream)]
    items.insert(40, EventError("not JSON"))
    batch = records("gen", 0, 0, items)
    reference = MemoryStore()
    for store in (reference, subject.store):
        writer = projector(store, cache_users=50)
        results = [writer.apply_batch(batch[i : i + 211], T0) for i in range(0, len(batch), 211)]
        assert sum(r.dead_lettered for r in results) == 1
    got = sorted_rows(subject.store.history_rows())
    assert got == sorted_rows(reference.history_rows())
    assert len(got) > 300
    assert subject.store.assignment_counts() == reference.assignment_counts()
    assert subject.store.stored_positions("gen") == reference.stored_positions("gen")
    assert subject.store.stored_positions("gen") == {0: len(batch)}
    assert subject.dead_letter_reasons() == ["not JSON"]
    if subject.url is not None:
        # The store's own read agrees with the table read directly.
        as_sql = [
            tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for v in r)
            for r in got
        ]
        assert sorted(as_sql, key=repr) == history_rows(subject.url)


def test_a_duplicate_event_changes_nothing_but_the_position(subject: Subject) -> None:
    store = subject.store
    first = delivered(signup(1, "u-1"), relocation(2, "u-1"))
    writer = projector(store)
    apply_deliveries(writer, [first], T0)
    before = state(store)
    # The same event again, from another source (the first one's position is past it).
    again = projector(store).apply_batch(records("again", 0, 0, first[:1]), T0)
    rows_before, counts, pins, *_ = before
    assert (again.applied, again.duplicates, again.dead_lettered) == (0, 1, 0)
    assert state(store)[:3] == (rows_before, counts, pins)
    assert store.stored_positions("again") == {0: 1}
    # The same event id for another user: a dead letter, nothing else.
    claimed = delivered(signup(1, "u-other"))
    other = projector(store).apply_batch(records("t", 0, 0, claimed), T0)
    assert (other.applied, other.duplicates, other.dead_lettered) == (0, 0, 1)
    assert "already recorded for another user" in other.dead_letters[0].reason
    assert state(store)[:3] == (rows_before, counts, pins)
    assert store.stored_positions("t") == {0: 1}


# --- conflicts: a plan from a state another writer has moved on --------------------------


def test_a_plan_behind_the_users_next_sequence_number_conflicts_and_writes_nothing(
    subject: Subject,
) -> None:
    store = subject.store
    apply_deliveries(projector(store), [delivered(signup(1, "u-1"))], T0)
    late = stale_plan(store, records("b", 0, 0, delivered(relocation(3, "u-1"))))
    # Another writer appends to u-1 first: the stale plan's event takes the same seq.
    projector(store).apply_batch(records("a", 0, 0, delivered(phone_change(2, "u-1"))), T0)
    before = state(store, "a", "b")
    with pytest.raises(StoreConflict):
        write(store, late)
    assert state(store, "a", "b") == before
    assert store.stored_positions("b") == {}


def test_a_plan_holding_an_event_id_another_writer_recorded_conflicts_and_writes_nothing(
    subject: Subject,
) -> None:
    store = subject.store
    late = stale_plan(store, records("b", 0, 0, delivered(signup(7, "u-b"))))
    projector(store).apply_batch(records("a", 0, 0, delivered(signup(7, "u-a"))), T0)
    before = state(store, "a", "b")
    with pytest.raises(StoreConflict):
        write(store, late)
    assert state(store, "a", "b") == before
    assert [r.user_id for r in store.history_rows()] == ["u-a"]


def test_two_writers_on_one_user_meet_a_conflict_and_end_as_one_writer(subject: Subject) -> None:
    """Writer B holds u-1 in its cache; writer A appends to u-1; B's next batch is planned
    from its stale cache, the store reports StoreConflict, and B plans again from the store.
    The history is the one a single writer builds."""
    a, b = projector(subject.store), projector(Spy(subject.store))
    spy = b.store
    assert isinstance(spy, Spy)
    first, second, third = delivered(
        signup(1, "u-1"),
        relocation(2, "u-1", at="2026-03-01T00:00:00Z"),
        phone_change(3, "u-1", at="2026-04-01T00:00:00Z", phone=PHONE_UK),
    )
    b.apply_batch(records("b", 0, 0, [first]), T0)
    a.apply_batch(records("a", 0, 0, [second]), T0)
    result = b.apply_batch(records("b", 0, 1, [third]), T0)
    assert result.applied == 1
    assert len(spy.conflicts) >= 1
    reference = MemoryStore()
    one = projector(reference)
    for source, offset, item in (("b", 0, first), ("a", 0, second), ("b", 1, third)):
        one.apply_batch(records(source, 0, offset, [item]), T0)
    assert sorted_rows(subject.store.history_rows()) == sorted_rows(reference.history_rows())
    assert subject.store.stored_positions("b") == {0: 2}


# --- refusals ------------------------------------------------------------------------------


def test_a_value_the_store_refuses_is_dead_lettered_alone(subject: Subject) -> None:
    store = subject.store
    can_refuse = subject.refuse_events_of("u-13")
    assert can_refuse == (subject.kind in CAN_REFUSE)
    batch = records("s", 0, 0, delivered(*(signup(n, f"u-{n}") for n in range(1, 21))))
    result = projector(store).apply_batch(batch, T0)
    assert store.stored_positions("s") == {0: 20}
    users = {r.user_id for r in store.history_rows()}
    if not can_refuse:
        assert (result.applied, result.dead_lettered) == (20, 0)
        assert "u-13" in users
        return
    assert (result.applied, result.dead_lettered) == (19, 1)
    (dead,) = result.dead_letters
    assert (dead.record.offset, dead.user_id) == (12, "u-13")
    assert dead.reason.startswith("the database refused it: ") and "no u-13 here" in dead.reason
    assert users == {f"u-{n}" for n in range(1, 21)} - {"u-13"}
    # At the port: the write of a plan holding the refused event fails, writing nothing.
    before = state(store, "s", "r")
    plan = stale_plan(store, records("r", 0, 0, delivered(signup(99, "u-13"))))
    with pytest.raises(StoreRefused):
        write(store, plan)
    assert state(store, "s", "r") == before


# --- positions and the source's identity ---------------------------------------------------


def test_positions_are_stored_locked_and_reset_per_source_and_partition(
    subject: Subject,
) -> None:
    store = subject.store
    writer = projector(store)
    users = iter(range(1, 100))

    def signups(k: int) -> list[Delivery]:
        return delivered(*(signup(n, f"u-{n}") for n in (next(users) for _ in range(k))))

    batch = [*records("s", 0, 0, signups(3)), *records("s", 2, 5, signups(2))]
    writer.apply_batch([*batch, *records("t", 1, 0, signups(1))], T0)
    assert store.stored_positions("s") == {0: 3, 2: 7}
    assert store.stored_positions("t") == {1: 1}
    assert store.stored_positions("nowhere") == {}
    # Records below the stored position are applied already: skipped, positions kept.
    again = writer.apply_batch(records("s", 0, 1, signups(1)), T0)
    assert (again.already_applied, again.applied) == (1, 0)
    assert store.stored_positions("s") == {0: 3, 2: 7}
    with store.transaction() as tx:
        locked = tx.lock_positions({("s", 0), ("s", 2), ("t", 1), ("s", 9), ("u", 0)})
    assert {k: locked[k] for k in [("s", 0), ("s", 2), ("t", 1)]} == {
        ("s", 0): 3,
        ("s", 2): 7,
        ("t", 1): 1,
    }
    assert ("s", 9) not in locked and ("u", 0) not in locked
    with store.transaction() as tx:
        assert tx.lock_positions(set()) == {}
        assert tx.lock_positions({("s", 2)})[("s", 2)] == 7
    assert store.reset_positions("s") == 2
    assert store.stored_positions("s") == {}
    assert store.stored_positions("t") == {1: 1}  # another source is not touched
    assert store.reset_positions("s") == 0
    assert store.reset_positions("nowhere") == 0
    # After a reset the same offsets are read again: the events are recognised as duplicates.
    redo = writer.apply_batch(records("s", 0, 0, delivered(signup(1, "u-1"))), T0)
    assert (redo.applied, redo.duplicates) == (0, 1)
    assert store.stored_positions("s") == {0: 1}


def test_lock_positions_returns_only_the_partitions_asked_for(subject: Subject) -> None:
    """BatchTransaction.lock_positions: "stored next offsets of these partitions"."""
    store = subject.store
    writer = projector(store)
    writer.apply_batch(records("s", 0, 0, delivered(signup(1, "u-1"))), T0)
    writer.apply_batch(records("s", 1, 0, delivered(signup(2, "u-2"))), T0)
    writer.apply_batch(records("t", 0, 0, delivered(signup(3, "u-3"))), T0)
    with store.transaction() as tx:
        locked = tx.lock_positions({("s", 0), ("t", 1)})
    assert locked == {("s", 0): 1}


def test_the_source_identity_is_stored_with_the_positions_and_reset_with_them(
    subject: Subject,
) -> None:
    store = subject.store
    writer = projector(store)
    assert store.source_identity("kafka:t") is None
    first = SourceIdentity("topic-id-1", 3)
    writer.apply_batch(records("kafka:t", 0, 0, delivered(signup(1, "u-1"))), T0, identity=first)
    assert store.source_identity("kafka:t") == first
    assert store.source_identity("kafka:other") is None
    # Without an identity the stored one stays; a new incarnation replaces it.
    writer.apply_batch(records("kafka:t", 1, 0, delivered(signup(2, "u-2"))), T0)
    assert store.source_identity("kafka:t") == first
    second = SourceIdentity(None, 4)
    later = T0 + timedelta(seconds=1)
    writer.apply_batch(
        records("kafka:t", 0, 1, delivered(signup(3, "u-3"), start=later)), later, identity=second
    )
    assert store.source_identity("kafka:t") == second
    assert store.reset_positions("kafka:t") == 2
    assert store.source_identity("kafka:t") is None


# --- policy pins ---------------------------------------------------------------------------


def test_policy_versions_are_pinned_at_first_use(subject: Subject) -> None:
    store = subject.store
    assert store.policy_pins() == {}
    hashes = policy_hashes(POLICIES)
    projector(store).apply_batch(records("s", 0, 0, delivered(signup(1, "u-1"))), T0)
    assert store.policy_pins() == {"tos-2025-12-cutover": hashes["tos-2025-12-cutover"]}
    later = delivered(
        factories.terms_accepted(2, "u-1", recorded_at="2026-11-01T00:00:01+00:00")
    )
    projector(store).apply_batch(records("s", 0, 1, later), T0)
    used = {r.policy for r in store.history_rows()}
    assert used == {"tos-2025-12-cutover", "tos-2026-03-residency"}
    assert store.policy_pins() == {v: hashes[v] for v in used}
    # A write deciding under a pinned version with other content is refused whole, and
    # the pin stays.
    pins = store.policy_pins()
    plan = stale_plan(store, records("p", 0, 0, delivered(signup(3, "u-3"))))
    plan.policy_hashes = {v: "0" * 64 for v in plan.policy_hashes}
    with pytest.raises(PolicyChanged):
        write(store, plan)
    assert store.policy_pins() == pins
    assert "u-3" not in {r.user_id for r in store.history_rows()}


def test_a_changed_policy_under_a_pinned_version_is_refused(
    subject: Subject, tmp_path: Path
) -> None:
    store = subject.store
    edited = tmp_path / "cutover.toml"
    edited.write_text(shipped("tos-2025-12-cutover").replace("C4", "C9"))
    changed = load_policy_paths([edited]).require()
    Projector(store, changed, KEY)  # nothing pinned yet: any content goes
    projector(store).apply_batch(records("s", 0, 0, delivered(signup(1, "u-1"))), T0)
    with pytest.raises(PolicyChanged) as refused:
        Projector(store, changed, KEY)
    ((version, pinned, now),) = refused.value.changed
    assert version == "tos-2025-12-cutover"
    assert pinned == policy_hashes(POLICIES)[version] == store.policy_pins()[version]
    assert now == policy_hashes(changed)[version] != pinned
    projector(store)  # the shipped content is still the pinned one


def test_two_writers_with_different_files_for_one_version_cannot_both_win(
    subject: Subject, tmp_path: Path
) -> None:
    """Both start on an empty store, so neither is refused when it starts; the pin is
    checked again in every batch's transaction, and the second to write is refused before
    it writes a row (before, both wrote, under two hashes, and verify failed for ever)."""
    store = subject.store
    edited = tmp_path / "cutover.toml"
    edited.write_text(shipped("tos-2025-12-cutover").replace("C4", "C9"))
    shipped_writer = projector(store)
    edited_writer = Projector(store, load_policy_paths([edited]).require(), KEY)
    shipped_writer.apply_batch(records("a", 0, 0, delivered(signup(1, "u-1"))), T0)
    rows = store.history_rows()
    with pytest.raises(PolicyChanged, match="tos-2025-12-cutover is not the one"):
        edited_writer.apply_batch(records("b", 0, 0, delivered(signup(2, "u-2"))), T0)
    assert store.history_rows() == rows
    assert store.policy_pins() == {
        "tos-2025-12-cutover": policy_hashes(POLICIES)["tos-2025-12-cutover"]
    }
    assert store.stored_positions("b") == {}


# --- the phone key ---------------------------------------------------------------------------


def test_the_phone_key_s_fingerprint_is_recorded_with_the_first_events(subject: Subject) -> None:
    store = subject.store
    assert store.phone_key_fingerprint() is None
    # Only dead letters: no phone hash stored, nothing to record.
    projector(store).apply_batch(records("s", 0, 0, [EventError("not an event")]), T0)
    assert store.phone_key_fingerprint() is None
    projector(store).apply_batch(records("s", 0, 1, delivered(signup(1, "u-1"))), T0)
    assert store.phone_key_fingerprint() == phone_key_fingerprint(KEY)
    assert KEY.hex() not in store.phone_key_fingerprint() and len(set(KEY)) > 1


def test_a_writer_under_another_phone_key_is_refused_and_writes_nothing(
    subject: Subject,
) -> None:
    """Before, a store replayed under two keys mixed phone hashes that can never match."""
    store = subject.store
    other = Projector(store, POLICIES, b"another-key")  # nothing recorded yet: any key goes
    projector(store).apply_batch(records("s", 0, 0, delivered(signup(1, "u-1"))), T0)
    before = state(store, "s", "t")
    # The writer that started before the first one wrote meets the fingerprint in its
    # batch's transaction; one that starts now is refused at once.
    with pytest.raises(PhoneKeyChanged) as refused:
        other.apply_batch(records("t", 0, 0, delivered(signup(2, "u-2"))), T0)
    assert (refused.value.stored, refused.value.given) == (
        phone_key_fingerprint(KEY),
        phone_key_fingerprint(b"another-key"),
    )
    assert "LEDGER_PHONE_KEY" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(PhoneKeyChanged):
        Projector(store, POLICIES, b"another-key")
    assert state(store, "s", "t") == before
    projector(store).apply_batch(records("t", 0, 0, delivered(signup(2, "u-2"))), T0)


# --- reads ---------------------------------------------------------------------------------


def test_the_reads_give_counts_and_every_row_believed_and_superseded(subject: Subject) -> None:
    """The worked example of a late relocation (RULES.md) beside a signup from Hong Kong and
    a user with a phone change but no signup."""
    store = subject.store
    at = datetime.fromisoformat
    first = [
        (factories.event(signup(40, "u-5", at="2026-04-01T00:00:00Z", phone=PHONE_CA)),
         at("2026-04-01T00:00:01+00:00")),
        (factories.event(phone_change(41, "u-5", at="2026-05-02T00:00:00Z", phone=PHONE_UK)),
         at("2026-05-02T00:00:01+00:00")),
        (factories.event(signup(43, "u-hk", at="2026-01-05T00:00:00Z", phone=PHONE_HK)),
         at("2026-05-03T00:00:00+00:00")),
        (factories.event(phone_change(44, "u-nosignup")), at("2026-05-04T00:00:00+00:00")),
    ]  # fmt: skip
    late = [(factories.event(relocation(42, "u-5", at="2026-04-10T00:00:00Z")),
             at("2026-05-20T00:00:00+00:00"))]  # fmt: skip
    apply_deliveries(projector(store), [first, late], T0)
    assert store.assignment_counts() == {
        "rednote-international": 1,
        "xhs-domestic": 1,
        "not signed up": 1,
    }
    rows = [r for r in sorted_rows(store.history_rows()) if r.user_id == "u-5"]
    assert [
        (r.valid_from, r.valid_to, r.assignment, r.rule, r.recorded_at, r.superseded_at)
        for r in rows
    ] == [
        (at("2026-04-01T00:00:00+00:00"), None, "rednote-international", "R4",
         at("2026-04-01T00:00:01+00:00"), at("2026-05-20T00:00:00+00:00")),
        (at("2026-04-01T00:00:00+00:00"), at("2026-04-10T00:00:00+00:00"),
         "rednote-international", "R4", at("2026-05-20T00:00:00+00:00"), None),
        (at("2026-04-10T00:00:00+00:00"), None, "xhs-domestic", "R1",
         at("2026-05-20T00:00:00+00:00"), None),
    ]  # fmt: skip
    assert {r.policy for r in rows} == {"tos-2026-03-residency"}
    assert [r.evidence for r in rows] == [[eid(40)], [eid(40)], [eid(40), eid(42)]]
    assert rows[-1].facts == {"residence": "CN"}
    assert {r.user_id for r in store.history_rows()} == {"u-5", "u-hk"}
