"""One consistent, read-only view of a SQL store for the audit trail (docs/audit.md): what
`ledger.app.audit` (verify, digest, decisions) reads, as the stored rows turned into the
records of `ledger.app.ports`.

Everything is read inside ONE transaction while writers go on: on SQLite a read
transaction (the database is in WAL mode, so the writer is not held up and the snapshot
stays fixed), on PostgreSQL a REPEATABLE READ READ ONLY transaction. Rows are streamed
(server-side cursors on PostgreSQL, SQLite's own stepping cursors), sorted by user id in
code-point order, so a whole store is read in bounded memory.

A digest must cover every event below its `seq`. On PostgreSQL the numbers come from a
sequence and a writer may still hold a lower number uncommitted when a higher one is
visible, so `snapshot(wait_for_writers=True)` first takes `LOCK TABLE events IN SHARE MODE`
on a second connection (it waits for the writers in flight, which hold ROW EXCLUSIVE from
before they draw numbers until they commit), exports that transaction's snapshot and
imports it into the reading transaction, then commits: writers are held up only for that
moment, not for the whole read. SQLite writers draw numbers under the database's write lock,
so every committed snapshot is gap-free already.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, inspect, select
from sqlalchemy.sql import ColumnElement, Select

from ledger.app.ports import StoredErasure, StoredEvent, StoredHistory, StoredUser
from ledger.domain.audit.canonical import EVENT_CHAIN_FIELDS
from ledger.domain.limits import quote
from ledger.errors import LedgerError
from ledger.store.batch_writer import stored_fingerprint
from ledger.store.errors import translated_errors
from ledger.store.rows import history_row_from_row, observation_from_row
from ledger.store.schema import (
    CHAIN_FORMAT,
    HISTORY_FROM,
    assignment_history,
    decisions,
    erasures,
    events,
    policy_pins,
    store_formats,
    users,
)

__all__ = ["SqlAuditSnapshot", "SqlAuditSource", "stored_chain_encoding"]

# Rows fetched per round trip of a streamed query.
FETCH_ROWS = 2000
# Event ids looked up per query (under SQLite's bound-parameter limit).
LOOKUP_IDS = 5000

# The chained fields first, in order, so a row's fields are one zip away (this runs once
# per stored event); they hold everything `observation_from_row` reads, too.
_EVENT_COLUMNS = [events.c[name] for name in (*EVENT_CHAIN_FIELDS, "app_seq", "link")]
# A history row with its decision's columns, under the names they had in one table.
_HISTORY_COLUMNS = [
    *assignment_history.c,
    *(c for c in decisions.c if c.name != "id"),
]
_CHAINED = len(EVENT_CHAIN_FIELDS)


class SqlAuditSource:
    """The audit port (`ledger.app.ports.AuditSource`) on a SQL store. Given an engine,
    each snapshot opens a connection of its own; given a connection, the snapshot is its
    transaction: begun here, or the caller's own if one is open (used as it is)."""

    def __init__(self, bind: Engine | Connection) -> None:
        self.bind = bind

    @contextmanager
    def snapshot(self, *, wait_for_writers: bool = False) -> Iterator[SqlAuditSnapshot]:
        if isinstance(self.bind, Connection):
            if self.bind.in_transaction():
                if wait_for_writers:
                    raise ValueError("waiting for writers needs a snapshot of its own")
                yield SqlAuditSnapshot(self.bind)
                return
            with self._transaction(self.bind, wait_for_writers) as snap:
                yield snap
            return
        with translated_errors(reading=True):
            conn = self.bind.connect()
        with conn, self._transaction(conn, wait_for_writers) as snap:
            yield snap

    @contextmanager
    def _transaction(self, conn: Connection, wait_for_writers: bool) -> Iterator[SqlAuditSnapshot]:
        # Only the store's own work is translated into ledger errors here: whatever the
        # caller raises inside the block passes through as it is.
        with translated_errors(reading=True):
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            trans = conn.begin()
            if postgres:
                if wait_for_writers:
                    _import_quiet_snapshot(conn)
            else:
                _begin_sqlite_read(conn)
        try:
            yield SqlAuditSnapshot(conn)
        finally:
            # Nothing was written: ending the read transaction is all that is left.
            with translated_errors(reading=True):
                trans.rollback()


def _begin_sqlite_read(conn: Connection) -> None:
    # pysqlite in its default mode starts no transaction before a SELECT, so every query
    # would see its own moment: begin one explicitly. (Engines from open_engine begin in
    # their "begin" hook already.)
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None and not dbapi.in_transaction:
        conn.exec_driver_sql("BEGIN DEFERRED")


def _import_quiet_snapshot(conn: Connection) -> None:
    """Make `conn`'s transaction (REPEATABLE READ, nothing read yet) see the store at a
    moment when no writer was between drawing an application number and committing."""
    engine = conn.engine
    with engine.connect() as locker:
        # A SHARE lock is refused in a read-only transaction, and the reader engine makes
        # every transaction read-only by default: this one writes nothing either.
        locker.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=False)
        with locker.begin():
            locker.exec_driver_sql("LOCK TABLE events IN SHARE MODE")
            snapshot_id = locker.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            # Must be the reading transaction's first statement; the exporting transaction
            # must still be open, after which the imported snapshot outlives it.
            conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{_snapshot_literal(snapshot_id)}'")


def _snapshot_literal(snapshot_id: str) -> str:
    # The id comes from the server ("00000003-0000001B-1"); SET TRANSACTION SNAPSHOT takes
    # no bind parameter, so make sure it is only what the server writes.
    if not all(c.isalnum() or c == "-" for c in snapshot_id):
        raise ValueError(f"unexpected snapshot id from the server: {snapshot_id!r}")
    return snapshot_id


class SqlAuditSnapshot:
    """Reads of one snapshot; `ledger.app.ports.AuditSnapshot` on SQL."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"

    # --- ordering ------------------------------------------------------------------------

    def _user_order(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # Python compares strings by code point, and the Merkle root needs that order.
        # SQLite's BINARY collation on UTF-8 is exactly that; PostgreSQL's default
        # collation may not be (en_US ignores punctuation), "C" is.
        return column.collate("C") if self.postgres else column

    def _stream(self, query: Select[Any]) -> Iterator[Any]:
        with translated_errors(reading=True):
            result = self.conn.execute(
                query, execution_options={"stream_results": True, "yield_per": FETCH_ROWS}
            )
            try:
                yield from result
            finally:
                result.close()

    # --- the port ----------------------------------------------------------------------

    def users(self, user: str | None = None) -> Generator[StoredUser, None, None]:
        u = users.c
        q = select(u.user_id, u.events, u.chain_head).order_by(self._user_order(u.user_id))
        if user is not None:
            q = q.where(u.user_id == user)
        for row in self._stream(q):
            yield StoredUser(row.user_id, row.events, row.chain_head)

    def events(self, user: str | None = None) -> Generator[StoredEvent, None, None]:
        e = events.c
        q = select(*_EVENT_COLUMNS).order_by(self._user_order(e.user_id), e.seq)
        if user is not None:
            q = q.where(e.user_id == user)
        for row in self._stream(q):
            yield stored_event(row)

    def history(self, user: str | None = None) -> Generator[StoredHistory, None, None]:
        h = assignment_history.c
        q = select(*_HISTORY_COLUMNS).select_from(HISTORY_FROM)
        q = q.order_by(self._user_order(h.user_id), h.id)
        if user is not None:
            q = q.where(h.user_id == user)
        for row in self._stream(q):
            yield stored_history(row)

    def erasures(self, user: str | None = None) -> Generator[StoredErasure, None, None]:
        if not inspect(self.conn).has_table(erasures.name):
            return  # a store below revision 0010, read as it is: nobody was erased
        x = erasures.c
        q = select(erasures).order_by(self._user_order(x.user_id))
        if user is not None:
            q = q.where(x.user_id == user)
        for row in self._stream(q):
            yield StoredErasure(
                row.user_id,
                row.app_seq,
                row.seq,
                row.request_id,
                row.erased_at,
                row.history_rows,
                row.dead_letters,
                None if row.retained_hash is None else bytes(row.retained_hash),
            )

    def decisions(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Generator[StoredHistory, None, None]:
        h = assignment_history.c
        q = select(*_HISTORY_COLUMNS).select_from(HISTORY_FROM).order_by(h.recorded_at, h.id)
        if since is not None:
            q = q.where(h.recorded_at >= since)
        if until is not None:
            q = q.where(h.recorded_at < until)
        for row in self._stream(q):
            yield stored_history(row)

    def event_sequences(self, event_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        e = events.c
        found: dict[str, tuple[int, int]] = {}
        ids = sorted(set(event_ids))
        for i in range(0, len(ids), LOOKUP_IDS):
            q = select(e.event_id, e.app_seq, e.seq).where(e.event_id.in_(ids[i : i + LOOKUP_IDS]))
            with translated_errors(reading=True):
                found.update({r.event_id: (r.app_seq, r.seq) for r in self.conn.execute(q)})
        return found

    def pins(self) -> dict[str, str]:
        q = select(policy_pins.c.version, policy_pins.c.hash)
        with translated_errors(reading=True):
            return {r.version: r.hash for r in self.conn.execute(q)}

    def phone_key_fingerprint(self) -> str | None:
        with translated_errors(reading=True):
            return stored_fingerprint(self.conn)

    def max_app_seq(self) -> int:
        with translated_errors(reading=True):
            return int(self.conn.execute(select(func.max(events.c.app_seq))).scalar() or 0)

    def chain_encoding(self) -> int | None:
        with translated_errors(reading=True):
            return stored_chain_encoding(self.conn)


def stored_chain_encoding(conn: Connection) -> int | None:
    """The store's recorded chain encoding (None: no record, a store below the revision
    that added it, whose links are under chain encoding 1)."""
    # A missing table must not be a failed query: on PostgreSQL that would end the
    # snapshot's transaction.
    if not inspect(conn).has_table(store_formats.name):
        return None
    q = select(store_formats.c.version).where(store_formats.c.name == CHAIN_FORMAT)
    version = conn.execute(q).scalar()
    if version is None or type(version) is int:
        return version
    # SQLite keeps whatever an edit wrote, text included.
    raise LedgerError(
        f"the store's chain encoding record is not a number: {quote(version)} "
        "(the store_formats table was edited)"
    )


def stored_event(row: Any) -> StoredEvent:
    fields = dict(zip(EVENT_CHAIN_FIELDS, row[:_CHAINED], strict=True))
    try:
        observation = observation_from_row(row)
        problem = None
    except (ValueError, TypeError) as exc:
        observation, problem = None, str(exc)
    return StoredEvent(
        user_id=row.user_id,
        seq=row.seq,
        app_seq=row.app_seq,
        link=row.link,
        event_id=row.event_id,
        recorded_at=row.recorded_at,
        fields=fields,
        observation=observation,
        problem=problem,
    )


def stored_history(row: Any) -> StoredHistory:
    try:
        history = history_row_from_row(row)
        problem = None
    except (AttributeError, TypeError, ValueError) as exc:
        # facts or evidence edited into something that is not an object / a list
        history, problem = None, f"unreadable row: {type(exc).__name__}: {exc}"
    return StoredHistory(
        id=row.id,
        user_id=row.user_id,
        valid_from=row.valid_from,
        recorded_at=row.recorded_at,
        policy=row.policy,
        policy_hash=row.policy_hash,
        row=history,
        problem=problem,
    )
