"""The batch store on SQL databases (SQLite, PostgreSQL): one query per table to load a
batch's users, executemany writes, no ORM unit of work on the hot path."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, tuple_

from ledger.app.ingest.plan import BatchPlan, EncodedPlan, PositionKey
from ledger.app.ports import HistoryTableRow
from ledger.domain.audit.chain import GENESIS
from ledger.domain.facts import (
    Observation,
)
from ledger.domain.projection import Erased, HistoryRow, UserProjection
from ledger.sources.records import SourceIdentity
from ledger.store.batch_writer import encode_plan, stored_fingerprint, write_encoded, write_plan
from ledger.store.errors import translated_errors
from ledger.store.rows import HISTORY_COLUMNS, history_row_from_row, observation_from_row
from ledger.store.schema import (
    HISTORY_FROM,
    assignment_history,
    erasures,
    events,
    history_columns,
    policy_pins,
    source_positions,
    users,
)

# How large SQLite's write-ahead log may grow before `SqlStore.reclaim` starts it over.
WAL_RESTART_BYTES = 64 << 20
# What `history_row_from_row` reads, and whose rows.
HISTORY_SELECT = history_columns("user_id", *HISTORY_COLUMNS)

# Keeps IN (...) lists under SQLite's bound-parameter limit.
_CHUNK = 4096
_SMALLEST = 8


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """`items` in IN (...) lists of a few fixed lengths (powers of two), the last item
    repeated to fill one up: each length is another statement text, and the driver keeps
    up to 128 prepared statements per connection. With a length per batch's user count,
    the cached statements of a long replay, ~0.5 MB each for 2,500 parameters, grew a
    process by 70 MB and more per connection."""
    for i in range(0, len(items), _CHUNK):
        chunk = list(items[i : i + _CHUNK])
        size = _SMALLEST
        while size < len(chunk):
            size *= 2
        yield chunk + chunk[-1:] * (size - len(chunk))


def known_event_users(conn: Connection, event_ids: Sequence[str]) -> dict[str, str]:
    """event_id -> user_id for the ids already recorded."""
    out: dict[str, str] = {}
    for chunk in _chunks(list(event_ids)):
        q = select(events.c.event_id, events.c.user_id).where(events.c.event_id.in_(chunk))
        out.update({r.event_id: r.user_id for r in conn.execute(q)})
    return out


def load_projections(conn: Connection, user_ids: Sequence[str]) -> dict[str, UserProjection]:
    """The stored state of every user in `user_ids` (new users get an empty projection)."""
    obs: dict[str, list[Observation]] = {u: [] for u in user_ids}
    last: dict[str, datetime] = {}
    heads: dict[str, tuple[int, bytes]] = {}  # user -> (seq, link) of the last event
    believed: dict[str, list[HistoryRow]] = {u: [] for u in user_ids}
    erased: dict[str, UserProjection] = {}
    for chunk in _chunks(list(user_ids)):
        for row in conn.execute(select(erasures).where(erasures.c.user_id.in_(chunk))):
            # All an erased user's projection needs: their later events are suppressed.
            erased[row.user_id] = UserProjection(
                row.user_id,
                last_recorded_at=row.erased_at,
                erased=Erased(row.erased_at, row.request_id),
                erased_events=row.seq,
            )
        live = [u for u in chunk if u not in erased]
        if not live:
            continue
        for row in conn.execute(select(events).where(events.c.user_id.in_(live))):
            obs[row.user_id].append(observation_from_row(row))
            if row.user_id not in last or row.recorded_at > last[row.user_id]:
                last[row.user_id] = row.recorded_at
            if row.seq > heads.get(row.user_id, (0, b""))[0]:
                heads[row.user_id] = (row.seq, row.link)
        q = (
            select(*HISTORY_SELECT)
            .select_from(HISTORY_FROM)
            .where(assignment_history.c.user_id.in_(live))
            .where(assignment_history.c.superseded_at.is_(None))
            .order_by(assignment_history.c.user_id, assignment_history.c.valid_from)
        )
        for row in conn.execute(q):
            believed[row.user_id].append(history_row_from_row(row))
    out: dict[str, UserProjection] = {}
    for u in user_ids:
        if u in erased:
            out[u] = erased[u]
            continue
        p = UserProjection(u, obs[u], believed[u], last.get(u), heads.get(u, (0, GENESIS))[1])
        out[u] = p
    return out


def lock_positions(conn: Connection, keys: Collection[PositionKey]) -> dict[PositionKey, int]:
    """Stored next offsets of (source, partition) pairs, locked for this transaction on
    PostgreSQL (SQLite locks the whole database for a writer anyway)."""
    if not keys:
        return {}
    sp = source_positions.c
    # The pairs themselves: sources and partitions filtered apart would also lock (and
    # return) stored partitions of one source that were asked for only of another.
    q = (
        select(sp.source, sp.partition, sp.next_offset)
        .where(tuple_(sp.source, sp.partition).in_(sorted(keys)))
        .with_for_update()
    )
    return {(r.source, r.partition): r.next_offset for r in conn.execute(q)}


def stored_positions(conn: Connection, source: str) -> dict[int, int]:
    q = select(source_positions.c.partition, source_positions.c.next_offset).where(
        source_positions.c.source == source
    )
    return {r.partition: r.next_offset for r in conn.execute(q)}


class SqlTransaction:
    """The batch port on one open SQL transaction."""

    def __init__(
        self,
        conn: Connection,
        raw_limit: int,
        *,
        announce: bool = True,
        retain_assignments: bool = False,
    ) -> None:
        self.conn = conn
        self.raw_limit = raw_limit
        self.announce = announce
        self.retain_assignments = retain_assignments

    def lock_positions(self, keys: Collection[PositionKey]) -> dict[PositionKey, int]:
        return lock_positions(self.conn, keys)

    def lock_users(self, user_ids: Sequence[str]) -> None:
        # SQLite writers hold the database's write lock already (BEGIN IMMEDIATE).
        if self.conn.dialect.name != "postgresql":
            return
        for chunk in _chunks(sorted(user_ids)):
            # In key order, so two writers sharing users queue instead of deadlocking.
            q = (
                select(users.c.user_id)
                .where(users.c.user_id.in_(chunk))
                .order_by(users.c.user_id)
                .with_for_update()
            )
            self.conn.execute(q).all()

    def event_owners(self, event_ids: Sequence[str]) -> dict[str, str]:
        return known_event_users(self.conn, event_ids)

    def load_users(self, user_ids: Sequence[str]) -> dict[str, UserProjection]:
        return load_projections(self.conn, user_ids)

    def write(self, plan: BatchPlan) -> None:
        write_plan(
            self.conn,
            plan,
            self.raw_limit,
            announce=self.announce,
            retain_assignments=self.retain_assignments,
        )

    def write_encoded(self, encoded: EncodedPlan) -> None:
        write_encoded(
            self.conn,
            encoded,
            self.raw_limit,
            announce=self.announce,
            retain_assignments=self.retain_assignments,
        )


class SqlStore:
    """The batch store on a SQLAlchemy engine (see `ledger.store.database.open_engine`)."""

    def __init__(
        self,
        engine: Engine,
        *,
        dead_letter_raw_bytes: int = 4 << 20,
        retain_assignments: bool = False,
    ) -> None:
        self.engine = engine
        self.raw_limit = dead_letter_raw_bytes
        # Whether the changefeed's relay publishes what this store's writes decide: not
        # for a store being rebuilt by replay (`ledger replay --announce`).
        self.announce = True
        # Whether an erasure keeps the history skeleton (LEDGER_RETAIN_ASSIGNMENTS=1).
        self.retain_assignments = retain_assignments

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        with translated_errors(), self.engine.connect() as conn:
            # SQLite: take the write lock before the first read, so two writers never
            # plan from the same snapshot (PostgreSQL ignores the option; there the
            # unique (user_id, seq) key turns a stale plan into a conflict).
            conn.execution_options(ledger_sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield SqlTransaction(
                    conn,
                    self.raw_limit,
                    announce=self.announce,
                    retain_assignments=self.retain_assignments,
                )

    def reclaim(self) -> None:
        """SQLite: start the write-ahead log over once it is large. Readers that keep
        taking snapshots (a parallel replay's workers) stop SQLite from ever restarting it
        by itself, and it grew to five times the database in a 200k-event replay; a
        RESTART checkpoint waits for the current readers' short transactions instead."""
        if self.engine.dialect.name != "sqlite" or not self.engine.url.database:
            return
        try:
            size = os.stat(f"{self.engine.url.database}-wal").st_size
        except OSError:
            return
        if size > WAL_RESTART_BYTES:
            with translated_errors(), self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)")

    def scrub(self) -> None:
        """After a batch that erased users: on SQLite, write the log back into the database
        and truncate it, so that no page image from before the erasure stays readable in
        the -wal file (secure_delete zeroes what a transaction frees, not what the log
        still holds). A reader in the middle of a snapshot can keep the log from being
        truncated; the next erasure or `reclaim` tries again."""
        if self.engine.dialect.name != "sqlite" or not self.engine.url.database:
            return
        with translated_errors(), self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def encode(self, plan: BatchPlan) -> EncodedPlan:
        return encode_plan(plan, sqlite=self.engine.dialect.name == "sqlite")

    @contextmanager
    def reading(self) -> Iterator[SqlTransaction]:
        """A read-only snapshot with the batch port's reads (`event_owners`, `load_users`,
        `lock_positions` without the lock): what a parallel replay's workers plan from
        while the writer writes. Nothing written through it is kept."""
        with translated_errors(reading=True), self.engine.connect() as conn, conn.begin() as tx:
            yield SqlTransaction(conn, self.raw_limit)
            tx.rollback()

    def is_empty(self) -> bool:
        """Whether no event was ever applied to it."""
        with translated_errors(), self.engine.connect() as conn:
            return conn.execute(select(events.c.app_seq).limit(1)).first() is None

    def stored_positions(self, source: str) -> dict[int, int]:
        with translated_errors(), self.engine.connect() as conn:
            return stored_positions(conn, source)

    def assignment_counts(self) -> dict[str, int]:
        with translated_errors(), self.engine.connect() as conn:
            rows = conn.execute(
                select(users.c.assignment, func.count()).group_by(users.c.assignment)
            )
            return {(a or "not signed up"): n for a, n in rows}

    def source_identity(self, source: str) -> SourceIdentity | None:
        sp = source_positions.c
        q = (
            select(sp.topic_id, sp.partition_count)
            .where(sp.source == source, sp.partition_count.is_not(None))
            .order_by(sp.updated_at.desc())
            .limit(1)
        )
        with translated_errors(), self.engine.connect() as conn:
            row = conn.execute(q).first()
        return SourceIdentity(row.topic_id, row.partition_count) if row else None

    def history_rows(self) -> list[HistoryTableRow]:
        """Every history row, believed and superseded, as `MemoryStore.history_rows` returns
        them (the table's columns without its surrogate id), so the stores compare directly."""
        q = select(*history_columns(*HistoryTableRow._fields)).select_from(HISTORY_FROM)
        with translated_errors(reading=True), self.engine.connect() as conn:
            return [HistoryTableRow(*row) for row in conn.execute(q)]

    def policy_pins(self) -> dict[str, str]:
        with translated_errors(), self.engine.connect() as conn:
            return dict(conn.execute(select(policy_pins.c.version, policy_pins.c.hash)).all())

    def phone_key_fingerprint(self) -> str | None:
        with translated_errors(), self.engine.connect() as conn:
            return stored_fingerprint(conn)

    def reset_positions(self, source: str) -> int:
        with translated_errors(), self.engine.begin() as conn:
            q = delete(source_positions).where(source_positions.c.source == source)
            return conn.execute(q).rowcount


# A parallel replay's worker reads each batch's users once and keeps them cached itself.
READER_CACHE_KIB = 8192


def open_sql_store(url: str, dead_letter_raw_bytes: int = 4 << 20) -> SqlStore:
    """The store at `url` as it is (no migration: its writer migrated it): what a parallel
    replay's worker process opens, given this function and the URL."""
    from ledger.store.database import open_engine

    engine = open_engine(url, migrate=False, cache_kib=READER_CACHE_KIB)
    return SqlStore(engine, dead_letter_raw_bytes=dead_letter_raw_bytes)
