"""Writing one batch's plan into a SQL store: the events, the users' state, the history rows,
positions, identities, policy pins and dead letters, as pre-built tuples handed to the
driver's executemany.

SQLAlchemy Core's per-row parameter processing cost more than the database's own work
(a profile of a replay: ~9 s of 12 s writing). These statements go to the driver as they
are; the values are already in the form the driver takes, converted here once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from ledger.app.ingest.plan import AppliedEvent, BatchPlan
from ledger.app.ports import PhoneKeyChanged
from ledger.domain.audit.canonical import EVENT_CHAIN_FIELDS
from ledger.domain.facts import (
    observed_fields,
)
from ledger.domain.projection import HistoryRow, UserSummary
from ledger.store.rows import event_id_bytes, instant_micros, split_position
from ledger.store.schema import (
    assignment_history,
    dead_letters,
    decisions,
    event_origins,
    events,
    key_fingerprints,
    policy_pins,
    source_positions,
    sqlite_instant,
    users,
)


def _sqlite_iso(value: datetime | None) -> str | None:
    return None if value is None else sqlite_instant(value)


def _sqlite_micros(value: datetime | None) -> int | None:
    return None if value is None else instant_micros(value)


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

        # `Instant` columns, then `UTCDateTime` ones (the small tables and dead letters).
        self.instant: Callable[[datetime | None], Any] = _sqlite_micros if self.sqlite else _same
        self.iso: Callable[[datetime | None], Any] = _sqlite_iso if self.sqlite else _same

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

    def insert_new(self, table: Table, names: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Insert the rows whose key is not there yet (the key is the first column)."""
        if rows:
            sql = (
                f"INSERT INTO {self.quote(table.name)} ({self._columns(names)}) "
                f"VALUES ({self._marks(len(names))}) ON CONFLICT DO NOTHING"
            )
            self.conn.exec_driver_sql(sql, rows)

    def interned(
        self, table: Table, names: Sequence[str], wanted: set[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], int]:
        """The ids of `wanted` rows of an interning table (event_origins, decisions), each
        inserted unless there. These tables stay small (tens of rows), so reading them
        whole costs less than asking for the batch's rows."""
        if not wanted:
            return {}
        sql = f"SELECT id, {self._columns(names)} FROM {self.quote(table.name)}"
        known = {tuple(r[1:]): r[0] for r in self.conn.exec_driver_sql(sql)}
        if not wanted <= known.keys():
            self.insert_new(table, names, sorted(wanted - known.keys()))
            known = {tuple(r[1:]): r[0] for r in self.conn.exec_driver_sql(sql)}
        return known

    def app_seqs(self, n: int) -> list[int]:
        """The next `n` application sequence numbers (docs/audit.md), in order."""
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
EVENT_WRITE_COLUMNS = (*EVENT_CHAIN_FIELDS, "origin_id", "origin_offset", "app_seq", "link")
ORIGIN_COLUMNS = ("source", "prefix")


def event_row(
    rows: _Rows,
    applied: AppliedEvent,
    app_seq: int,
    origins: Mapping[tuple[Any, ...], int],
    positions: Mapping[str, tuple[str, int | None]],
) -> tuple[Any, ...]:
    obs = applied.observation
    prefix, offset = positions[applied.position]
    region, valid, digest, channel, birth, *rest = observed_fields(obs.payload)
    return (
        event_id_bytes(obs.event_id),
        obs.user_id,
        rows.instant(obs.occurred_at),
        rows.instant(applied.recorded_at),
        obs.type,
        region,
        valid,
        digest,
        channel,
        rows.day(birth),
        *rest,
        applied.seq,
        origins[applied.source, prefix],
        offset,
        app_seq,
        applied.link,
    )


HISTORY_WRITE_COLUMNS = (
    "user_id",
    "valid_from",
    "valid_to",
    "decision_id",
    "facts",
    "evidence",
    "recorded_at",
    "superseded_at",
)
DECISION_COLUMNS = ("assignment", "policy", "rule", "reason", "policy_hash")


def decision_key(row: HistoryRow, hashes: Mapping[str, str]) -> tuple[str, ...]:
    """A history row's decision in DECISION_COLUMNS order."""
    e = row.entry
    return (e.assignment, e.policy, e.rule, e.reason, hashes[e.policy])


def history_write_row(
    rows: _Rows, user_id: str, row: HistoryRow, decision_id: int
) -> tuple[Any, ...]:
    e = row.entry
    return (
        user_id,
        rows.instant(e.valid_from),
        rows.instant(e.valid_to),
        decision_id,
        rows.json(dict(e.facts)),
        rows.json(list(e.evidence)),
        rows.instant(row.recorded_at),
        rows.instant(row.superseded_at),
    )


USER_WRITE_COLUMNS = (
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
    "id_document_country",
    "id_document_kind",
    "signup_locale",
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
        f.id_document_country,
        f.id_document_kind,
        f.signup_locale,
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


PHONE_KEY = "phone"  # the purpose of the phone key's row in key_fingerprints


def stored_fingerprint(conn: Connection, purpose: str = PHONE_KEY) -> str | None:
    """The fingerprint the store records for `purpose` (None: none yet)."""
    q = select(key_fingerprints.c.fingerprint).where(key_fingerprints.c.purpose == purpose)
    return conn.execute(q).scalar()


def claim_phone_key(rows: _Rows, fingerprint: str, recorded_at: datetime | None) -> None:
    """Record the phone key's fingerprint unless the store has one, and refuse a plan made
    under another key: in the batch's transaction, so two writers under different keys
    starting on an empty store cannot both win (the second waits for the first's row,
    then reads it)."""
    rows.insert_new(
        key_fingerprints,
        ("purpose", "fingerprint", "recorded_at"),
        [(PHONE_KEY, fingerprint, rows.iso(recorded_at))],
    )
    PhoneKeyChanged.check(stored_fingerprint(rows.conn), fingerprint)


def write_plan(conn: Connection, plan: BatchPlan, raw_limit: int) -> None:
    """All writes of one batch; the caller owns the transaction."""
    rows = _Rows(conn)
    if plan.events and plan.phone_key_fingerprint is not None:
        claim_phone_key(rows, plan.phone_key_fingerprint, plan.recorded_at)
    # In key order, so two writers that share users take their row locks in the same
    # order and one waits for the other instead of deadlocking.
    numbered = zip(rows.app_seqs(len(plan.events)), plan.events, strict=True)
    positions = {a.position: split_position(a.position) for a in plan.events}
    origins = rows.interned(
        event_origins, ORIGIN_COLUMNS, {(a.source, positions[a.position][0]) for a in plan.events}
    )
    rows.insert(
        events,
        EVENT_WRITE_COLUMNS,
        [
            event_row(rows, a, n, origins, positions)
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
    hashes = plan.policy_hashes
    ids = rows.interned(
        decisions, DECISION_COLUMNS, {decision_key(row, hashes) for _, row in plan.new_rows}
    )
    rows.insert(
        assignment_history,
        HISTORY_WRITE_COLUMNS,
        [
            history_write_row(rows, u, row, ids[decision_key(row, hashes)])
            for u, row in plan.new_rows
        ],
    )
    used = sorted({row.entry.policy for _, row in plan.new_rows})
    rows.insert_new(
        policy_pins,
        ("version", "hash", "pinned_at"),
        [(v, plan.policy_hashes[v], rows.iso(plan.recorded_at)) for v in used],
    )
    rows.upsert(
        users,
        USER_WRITE_COLUMNS,
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
                rows.iso(plan.recorded_at),
                plan.identities[s].topic_id if s in plan.identities else None,
                plan.identities[s].partition_count if s in plan.identities else None,
            )
            for (s, p), o in sorted(plan.positions.items())
        ],
    )
