"""The batch store on SQL databases (SQLite, PostgreSQL): one query per table to load a
batch's users, executemany writes, no ORM unit of work on the hot path."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, func, select

from ledger.app.ingest.plan import AppliedEvent, BatchPlan, PositionKey
from ledger.app.ports import HistoryTableRow
from ledger.domain.audit import EVENT_CHAIN_FIELDS, GENESIS
from ledger.domain.facts import (
    Observation,
    observed_fields,
)
from ledger.domain.projection import HistoryRow, UserProjection, UserSummary
from ledger.sources.records import SourceIdentity
from ledger.store.errors import translated_errors
from ledger.store.rows import history_row_from_row, observation_from_row
from ledger.store.schema import (
    assignment_history,
    dead_letters,
    events,
    policy_pins,
    source_positions,
    sqlite_instant,
    users,
)

# Keeps IN (...) lists under SQLite's bound-parameter limit.
_CHUNK = 5000


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


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
    for chunk in _chunks(list(user_ids)):
        for row in conn.execute(select(events).where(events.c.user_id.in_(chunk))):
            obs[row.user_id].append(observation_from_row(row))
            if row.user_id not in last or row.recorded_at > last[row.user_id]:
                last[row.user_id] = row.recorded_at
            if row.seq > heads.get(row.user_id, (0, b""))[0]:
                heads[row.user_id] = (row.seq, row.link)
        q = (
            select(assignment_history)
            .where(assignment_history.c.user_id.in_(chunk))
            .where(assignment_history.c.superseded_at.is_(None))
            .order_by(assignment_history.c.user_id, assignment_history.c.valid_from)
        )
        for row in conn.execute(q):
            believed[row.user_id].append(history_row_from_row(row))
    out: dict[str, UserProjection] = {}
    for u in user_ids:
        p = UserProjection(u, obs[u], believed[u], last.get(u), heads.get(u, (0, GENESIS))[1])
        out[u] = p
    return out


# --- the hot path: driver-level executemany with pre-built tuples ----------------------------
#
# SQLAlchemy Core's per-row parameter processing cost more than the database's own work
# (a profile of a replay: ~9 s of 12 s writing). These statements go to the driver as
# they are; the values are already in the form the driver takes, converted here once.


def _sqlite_instant(value: datetime | None) -> str | None:
    return None if value is None else sqlite_instant(value)


def _same(value: datetime | None) -> datetime | None:
    return value


class _Rows:
    """How one dialect's driver takes values: placeholders, instants, dates and JSON."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        if not self.sqlite and conn.dialect.name != "postgresql":  # pragma: no cover
            raise NotImplementedError(f"the ledger does not write to {conn.dialect.name}")
        self.quote = conn.dialect.identifier_preparer.quote

        self.instant: Callable[[datetime | None], Any] = (
            _sqlite_instant if self.sqlite else _same
        )

    def day(self, value: date | None) -> Any:
        return value.isoformat() if self.sqlite and value is not None else value

    def json(self, value: Any) -> str:
        # The text SQLAlchemy's JSON type writes, so rows read back the same either way.
        return json.dumps(value)

    def _columns(self, names: Sequence[str]) -> str:
        return ", ".join(self.quote(n) for n in names)

    def _marks(self, n: int) -> str:
        return ", ".join(["?" if self.sqlite else "%s"] * n)

    def insert(self, table: Table, names: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if rows:
            sql = (
                f"INSERT INTO {self.quote(table.name)} ({self._columns(names)}) "
                f"VALUES ({self._marks(len(names))})"
            )
            self.conn.exec_driver_sql(sql, rows)

    def upsert(
        self, table: Table, names: Sequence[str], keys: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        if rows:
            sets = ", ".join(
                f"{self.quote(n)} = excluded.{self.quote(n)}" for n in names if n not in keys
            )
            sql = (
                f"INSERT INTO {self.quote(table.name)} ({self._columns(names)}) "
                f"VALUES ({self._marks(len(names))}) "
                f"ON CONFLICT ({self._columns(keys)}) DO UPDATE SET {sets}"
            )
            self.conn.exec_driver_sql(sql, rows)

    def insert_new(
        self, table: Table, names: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Insert the rows whose key is not there yet (the key is the first column)."""
        if rows:
            sql = (
                f"INSERT INTO {self.quote(table.name)} ({self._columns(names)}) "
                f"VALUES ({self._marks(len(names))}) ON CONFLICT DO NOTHING"
            )
            self.conn.exec_driver_sql(sql, rows)

    def app_seqs(self, n: int) -> list[int]:
        """The next `n` application sequence numbers (AUDIT.md), in order."""
        if not n:
            return []
        if self.sqlite:
            # The writer holds the database's write lock (BEGIN IMMEDIATE): nobody else
            # can take these numbers before the commit.
            last = self.conn.exec_driver_sql("SELECT max(app_seq) FROM events").scalar()
            start = (last or 0) + 1
            return list(range(start, start + n))
        # Taken while holding the events table's writer lock, so a digest (which waits
        # for writers with a SHARE lock) never sees a number below its maximum commit
        # after it.
        self.conn.exec_driver_sql("LOCK TABLE events IN ROW EXCLUSIVE MODE")
        got = self.conn.exec_driver_sql(
            "SELECT nextval('events_app_seq') FROM generate_series(1, %s)", (n,)
        )
        return sorted(r[0] for r in got)

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            mark = "?" if self.sqlite else "%s"
            self.conn.exec_driver_sql(sql.replace("?", mark), rows)


# The chained fields (ledger.domain.audit), then where the event came from and its place
# in the store's audit trail.
EVENT_COLUMNS = (*EVENT_CHAIN_FIELDS, "source", "position", "app_seq", "link")


def event_row(rows: _Rows, applied: AppliedEvent, app_seq: int) -> tuple[Any, ...]:
    obs = applied.observation
    region, valid, digest, channel, birth, country, evidence, tos = observed_fields(obs.payload)
    return (
        obs.event_id,
        obs.user_id,
        rows.instant(obs.occurred_at),
        rows.instant(applied.recorded_at),
        obs.type,
        region,
        valid,
        digest,
        channel,
        rows.day(birth),
        country,
        evidence,
        tos,
        applied.seq,
        applied.source,
        applied.position,
        app_seq,
        applied.link,
    )


HISTORY_COLUMNS = (
    "user_id",
    "valid_from",
    "valid_to",
    "assignment",
    "policy",
    "rule",
    "reason",
    "facts",
    "evidence",
    "recorded_at",
    "superseded_at",
    "policy_hash",
)


def history_row(
    rows: _Rows, user_id: str, row: HistoryRow, hashes: Mapping[str, str]
) -> tuple[Any, ...]:
    e = row.entry
    return (
        user_id,
        rows.instant(e.valid_from),
        rows.instant(e.valid_to),
        e.assignment,
        e.policy,
        e.rule,
        e.reason,
        rows.json(dict(e.facts)),
        rows.json(list(e.evidence)),
        rows.instant(row.recorded_at),
        rows.instant(row.superseded_at),
        hashes[e.policy],
    )


USER_COLUMNS = (
    "user_id",
    "signup_at",
    "channel",
    "birth_date",
    "signup_phone_region",
    "signup_phone_valid",
    "signup_phone_hash",
    "current_phone_region",
    "current_phone_valid",
    "current_phone_hash",
    "residence",
    "ip_country",
    "tos_version",
    "assignment",
    "policy",
    "rule",
    "since",
    "events",
    "updated_at",
    "chain_head",
)


def user_row(rows: _Rows, state: UserSummary, updated_at: datetime) -> tuple[Any, ...]:
    f = state.facts
    last = state.latest
    return (
        state.user_id,
        rows.instant(f.signup_at),
        f.channel,
        rows.day(f.birth_date),
        f.signup_phone_region,
        f.signup_phone_valid,
        state.signup_phone_hash,
        f.current_phone_region,
        f.current_phone_valid,
        state.current_phone_hash,
        f.residence,
        f.ip_country,
        f.tos_version,
        last.assignment if last else None,
        last.policy if last else None,
        last.rule if last else None,
        rows.instant(last.valid_from) if last else None,
        state.events,
        rows.instant(updated_at),
        state.chain_head,
    )


def dead_letter_values(plan: BatchPlan, raw_limit: int) -> list[dict[str, Any]]:
    rows = []
    for d in plan.dead_letters:
        raw, size = d.raw(raw_limit)
        rows.append(
            {
                "source": d.record.source,
                "position": d.record.position,
                "reason": d.reason,
                "raw": raw,
                "raw_size": size,
                "event_id": d.event_id,
                "user_id": d.user_id,
                "recorded_at": plan.recorded_at,
                "partition": d.record.partition,
                "offset": d.record.offset,
            }
        )
    return rows


def write_plan(conn: Connection, plan: BatchPlan, raw_limit: int) -> None:
    """All writes of one batch; the caller owns the transaction."""
    rows = _Rows(conn)
    # In key order, so two writers that share users take their row locks in the same
    # order and one waits for the other instead of deadlocking.
    numbered = zip(rows.app_seqs(len(plan.events)), plan.events, strict=True)
    rows.insert(
        events,
        EVENT_COLUMNS,
        [
            event_row(rows, a, n)
            for n, a in sorted(numbered, key=lambda p: (p[1].observation.user_id, p[1].seq))
        ],
    )
    # History rows are addressed by (user_id, valid_from, recorded_at): a user's believed
    # rows never share valid_from, and rows with an empty record interval are never kept,
    # so the triple is unique without the store handing ids back.
    where = "WHERE user_id = ? AND valid_from = ? AND recorded_at = ?"
    updates, deletes = [], []
    for user_id, row in plan.superseded_rows:
        key = (user_id, rows.instant(row.entry.valid_from), rows.instant(row.recorded_at))
        if row.record_interval_empty:
            deletes.append(key)
        else:
            updates.append((rows.instant(row.superseded_at), *key))
    rows.execute_many(f"UPDATE assignment_history SET superseded_at = ? {where}", updates)
    rows.execute_many(f"DELETE FROM assignment_history {where}", deletes)
    rows.insert(
        assignment_history,
        HISTORY_COLUMNS,
        [history_row(rows, u, row, plan.policy_hashes) for u, row in plan.new_rows],
    )
    used = sorted({row.entry.policy for _, row in plan.new_rows})
    rows.insert_new(
        policy_pins,
        ("version", "hash", "pinned_at"),
        [(v, plan.policy_hashes[v], rows.instant(plan.recorded_at)) for v in used],
    )
    rows.upsert(
        users,
        USER_COLUMNS,
        ["user_id"],
        sorted((user_row(rows, s, at) for s, at in plan.users), key=lambda r: r[0]),
    )
    if plan.dead_letters:
        conn.execute(dead_letters.insert(), dead_letter_values(plan, raw_limit))
    rows.upsert(
        source_positions,
        ("source", "partition", "next_offset", "updated_at", "topic_id", "partition_count"),
        ["source", "partition"],
        [
            (
                s,
                p,
                o,
                rows.instant(plan.recorded_at),
                plan.identities[s].topic_id if s in plan.identities else None,
                plan.identities[s].partition_count if s in plan.identities else None,
            )
            for (s, p), o in sorted(plan.positions.items())
        ],
    )


def lock_positions(conn: Connection, keys: Collection[PositionKey]) -> dict[PositionKey, int]:
    """Stored next offsets of (source, partition) pairs, locked for this transaction on
    PostgreSQL (SQLite locks the whole database for a writer anyway)."""
    if not keys:
        return {}
    sp = source_positions.c
    q = (
        select(sp.source, sp.partition, sp.next_offset)
        .where(sp.source.in_({s for s, _ in keys}))
        .where(sp.partition.in_({p for _, p in keys}))
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

    def __init__(self, conn: Connection, raw_limit: int) -> None:
        self.conn = conn
        self.raw_limit = raw_limit

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
        write_plan(self.conn, plan, self.raw_limit)


class SqlStore:
    """The batch store on a SQLAlchemy engine (see `ledger.store.database.open_engine`)."""

    def __init__(self, engine: Engine, *, dead_letter_raw_bytes: int = 4 << 20) -> None:
        self.engine = engine
        self.raw_limit = dead_letter_raw_bytes

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        with translated_errors(), self.engine.connect() as conn:
            # SQLite: take the write lock before the first read, so two writers never
            # plan from the same snapshot (PostgreSQL ignores the option; there the
            # unique (user_id, seq) key turns a stale plan into a conflict).
            conn.execution_options(ledger_sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield SqlTransaction(conn, self.raw_limit)

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

    def policy_pins(self) -> dict[str, str]:
        with translated_errors(), self.engine.connect() as conn:
            return dict(conn.execute(select(policy_pins.c.version, policy_pins.c.hash)).all())

    def reset_positions(self, source: str) -> int:
        with translated_errors(), self.engine.begin() as conn:
            q = delete(source_positions).where(source_positions.c.source == source)
            return conn.execute(q).rowcount

    def history_rows(self) -> list[HistoryTableRow]:
        """Every history row, believed and superseded, as `MemoryStore.history_rows` returns
        them (the table's columns without its surrogate id), so the stores compare directly."""
        q = select(*(assignment_history.c[name] for name in HISTORY_COLUMNS))
        with translated_errors(reading=True), self.engine.connect() as conn:
            return [HistoryTableRow(*row) for row in conn.execute(q)]
