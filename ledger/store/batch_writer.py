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
from sqlalchemy.exc import DBAPIError

from ledger.app.ingest.plan import AppliedEvent, BatchPlan, EncodedPlan, PlannedErasure
from ledger.app.ports import PhoneKeyChanged, PolicyChanged
from ledger.domain.audit.canonical import EVENT_CHAIN_FIELDS
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.domain.audit.erasure import (
    ErasureRecord,
    SkeletonRow,
    erased_events_hash,
    erasure_bytes,
    skeleton_hash,
)
from ledger.domain.facts import (
    observed_fields,
)
from ledger.domain.projection import HistoryRow, UserSummary
from ledger.store.rows import (
    event_id_bytes,
    instant,
    instant_micros,
    optional_instant,
    split_position,
)
from ledger.store.schema import (
    assignment_history,
    dead_letters,
    decision_outbox,
    decisions,
    erasures,
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


class _Values:
    """How one dialect's driver takes values: instants, dates and JSON. Needs no
    connection, so a parallel replay's worker builds the rows (`encode_plan`)."""

    def __init__(self, sqlite: bool) -> None:
        self.sqlite = sqlite
        # `Instant` columns, then `UTCDateTime` ones (the small tables and dead letters).
        self.instant: Callable[[datetime | None], Any] = _sqlite_micros if sqlite else _same
        self.iso: Callable[[datetime | None], Any] = _sqlite_iso if sqlite else _same

    def day(self, value: date | None) -> Any:
        return value.isoformat() if self.sqlite and value is not None else value

    def json(self, value: Any) -> str:
        # The text SQLAlchemy's JSON type writes, so rows read back the same either way.
        return json.dumps(value)


# A batch's inserts of at least this many rows go by COPY on PostgreSQL.
COPY_MIN_ROWS = 64


class _Rows(_Values):
    """Statements on one connection, with values as its driver takes them."""

    def __init__(self, conn: Connection) -> None:
        if conn.dialect.name not in ("sqlite", "postgresql"):  # pragma: no cover
            raise NotImplementedError(f"the ledger does not write to {conn.dialect.name}")
        super().__init__(conn.dialect.name == "sqlite")
        self.conn = conn
        self.quote = conn.dialect.identifier_preparer.quote

    def _columns(self, names: Sequence[str]) -> str:
        return ", ".join(self.quote(n) for n in names)

    def _marks(self, n: int) -> str:
        return ", ".join(["?" if self.sqlite else "%s"] * n)

    def insert(self, table: Table, names: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not self.sqlite and len(rows) >= COPY_MIN_ROWS:
            self._copy(table, names, rows)
        elif rows:
            sql = (
                f"INSERT INTO {self.quote(table.name)} ({self._columns(names)}) "
                f"VALUES ({self._marks(len(names))})"
            )
            self.conn.exec_driver_sql(sql, rows)

    def _copy(self, table: Table, names: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """PostgreSQL: new rows by COPY, in the connection's transaction (a third of the
        writer's time per row of a multi-row INSERT). Its errors become SQLAlchemy's, so
        `translated_errors` tells a conflict from a refusal as for any statement."""
        import psycopg

        sql = f"COPY {self.quote(table.name)} ({self._columns(names)}) FROM STDIN"
        raw = self.conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        try:
            with raw.cursor() as cursor, cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc

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
# in the store's audit trail; app_seq last, as the writer appends it (`write_encoded`).
EVENT_WRITE_COLUMNS = (*EVENT_CHAIN_FIELDS, "origin_id", "origin_offset", "link", "app_seq")
ORIGIN_COLUMNS = ("source", "prefix")
_USER_ID = EVENT_WRITE_COLUMNS.index("user_id")
_EVENT_ID = EVENT_WRITE_COLUMNS.index("event_id")
_SEQ = EVENT_WRITE_COLUMNS.index("seq")
_ORIGIN = EVENT_WRITE_COLUMNS.index("origin_id")


def event_row(
    rows: _Values, applied: AppliedEvent, positions: Mapping[str, tuple[str, int | None]]
) -> tuple[Any, ...]:
    """The event's row without its app_seq, and with its origin as the (source, prefix)
    key that the writer interns (`write_encoded`)."""
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
        (applied.source, prefix),
        offset,
        applied.link,
    )


HISTORY_WRITE_COLUMNS = (
    "user_id",
    "valid_from",
    "valid_to",
    "decision_id",  # as the decision's key (`decision_key`) until the writer interns it
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


_DECISION = HISTORY_WRITE_COLUMNS.index("decision_id")


def history_write_row(
    rows: _Values, user_id: str, row: HistoryRow, hashes: Mapping[str, str]
) -> tuple[Any, ...]:
    e = row.entry
    return (
        user_id,
        rows.instant(e.valid_from),
        rows.instant(e.valid_to),
        decision_key(row, hashes),
        rows.json(dict(e.facts)),
        rows.json(list(e.evidence)),
        rows.instant(row.recorded_at),
        rows.instant(row.superseded_at),
    )


OUTBOX_WRITE_COLUMNS = ("user_id", "valid_from", "recorded_at", "kind", "app_seq", "announce")


def outbox_row(rows: _Values, user_id: str, row: HistoryRow) -> tuple[Any, ...]:
    """A history row's changefeed row, led by the id of the event that made it (the writer
    puts that event's app_seq in its place) and without app_seq and announce."""
    if row.origin is None:  # pragma: no cover - a planner bug, not an input
        raise ValueError("a new history row without the event that made it")
    return (
        event_id_bytes(row.origin),
        user_id,
        rows.instant(row.entry.valid_from),
        rows.instant(row.recorded_at),
        "corrected" if row.corrects else "assigned",
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


def user_row(rows: _Values, state: UserSummary, updated_at: datetime) -> tuple[Any, ...]:
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


def claim_policies(rows: _Rows, hashes: Mapping[str, str], recorded_at: datetime | None) -> None:
    """Pin the policy versions a batch decided with (version -> content hash) unless they
    are pinned, and refuse the batch if one is pinned with other content: in the batch's
    transaction and before its rows, so of two writers that start on an empty store with
    different files for one version, the second is refused (on PostgreSQL it waits for the
    first's pin, then reads it) instead of both writing."""
    if not hashes:
        return
    versions = sorted(hashes)
    rows.insert_new(
        policy_pins,
        ("version", "hash", "pinned_at"),
        [(v, hashes[v], rows.iso(recorded_at)) for v in versions],
    )
    found = rows.conn.execute(
        select(policy_pins.c.version, policy_pins.c.hash).where(policy_pins.c.version.in_(versions))
    )
    PolicyChanged.check({version: pinned for version, pinned in found}, hashes)


def encode_plan(plan: BatchPlan, *, sqlite: bool) -> EncodedPlan:
    """The plan's rows as the driver of SQLite (`sqlite`) or PostgreSQL takes them, but
    for the ids of interned values (origins, decisions), which only the writer can give."""
    v = _Values(sqlite)
    rest = BatchPlan(
        dead_letters=plan.dead_letters,
        positions=plan.positions,
        identities=plan.identities,
        duplicates=plan.duplicates,
        already_applied=plan.already_applied,
        recorded_at=plan.recorded_at,
        policy_hashes=plan.policy_hashes,
        phone_key_fingerprint=plan.phone_key_fingerprint,
        erasures=plan.erasures,
        suppressed=plan.suppressed,
    )
    positions = {a.position: split_position(a.position) for a in plan.events}
    encoded = EncodedPlan(rest, [(a.order, event_row(v, a, positions)) for a in plan.events])
    for user_id, row in plan.superseded_rows:
        key = (user_id, v.instant(row.entry.valid_from), v.instant(row.recorded_at))
        if row.record_interval_empty:
            encoded.dropped.append(key)
        else:
            encoded.superseded.append((v.instant(row.superseded_at), *key))
    hashes = plan.policy_hashes
    encoded.history = [history_write_row(v, u, row, hashes) for u, row in plan.new_rows]
    encoded.policies_used = {row.entry.policy for _, row in plan.new_rows}
    encoded.users = [user_row(v, s, at) for s, at in plan.users]
    encoded.outbox = [outbox_row(v, u, row) for u, row in plan.new_rows]
    return encoded


def write_plan(
    conn: Connection,
    plan: BatchPlan,
    raw_limit: int,
    *,
    announce: bool = True,
    retain_assignments: bool = False,
) -> None:
    """All writes of one batch; the caller owns the transaction."""
    encoded = encode_plan(plan, sqlite=conn.dialect.name == "sqlite")
    write_encoded(
        conn, encoded, raw_limit, announce=announce, retain_assignments=retain_assignments
    )


def _with(row: tuple[Any, ...], index: int, value: Any) -> tuple[Any, ...]:
    return (*row[:index], value, *row[index + 1 :])


def write_encoded(
    conn: Connection,
    encoded: EncodedPlan,
    raw_limit: int,
    *,
    announce: bool = True,
    retain_assignments: bool = False,
) -> None:
    """All writes of one batch, its rows already built; the caller owns the transaction.
    `announce`: whether the relay is to publish the batch's decisions (a store rebuilt by
    replay records them unannounced). `retain_assignments`: an erasure keeps the history
    skeleton (LEDGER_RETAIN_ASSIGNMENTS)."""
    rows = _Rows(conn)
    plan = encoded.rest
    if encoded.events and plan.phone_key_fingerprint is not None:
        claim_phone_key(rows, plan.phone_key_fingerprint, plan.recorded_at)
    claim_policies(
        rows, {v: plan.policy_hashes[v] for v in encoded.policies_used}, plan.recorded_at
    )
    origins = rows.interned(
        event_origins, ORIGIN_COLUMNS, {row[_ORIGIN] for _, row in encoded.events}
    )
    # Numbered in record order; inserted in key order, so two writers that share users
    # take their row locks in the same order and one waits for the other instead of
    # deadlocking.
    numbered = [
        (*row[:_ORIGIN], origins[row[_ORIGIN]], *row[_ORIGIN + 1 :], n)
        for n, (_, row) in zip(rows.app_seqs(len(encoded.events)), encoded.events, strict=True)
    ]
    app_seq_of = {r[_EVENT_ID]: r[-1] for r in numbered}
    numbered.sort(key=lambda r: (r[_USER_ID], r[_SEQ]))
    rows.insert(events, EVENT_WRITE_COLUMNS, numbered)
    # History rows are addressed by (user_id, valid_from, recorded_at): a user's believed
    # rows never share valid_from, and rows with an empty record interval are never kept,
    # so the triple is unique without the store handing ids back.
    where = "WHERE user_id = ? AND valid_from = ? AND recorded_at = ?"
    update = f"UPDATE assignment_history SET superseded_at = ? {where}"
    rows.execute_many(update, encoded.superseded)
    rows.execute_many(f"DELETE FROM assignment_history {where}", encoded.dropped)
    ids = rows.interned(decisions, DECISION_COLUMNS, {row[_DECISION] for row in encoded.history})
    rows.insert(
        assignment_history,
        HISTORY_WRITE_COLUMNS,
        [_with(row, _DECISION, ids[row[_DECISION]]) for row in encoded.history],
    )
    rows.upsert(users, USER_WRITE_COLUMNS, ["user_id"], sorted(encoded.users, key=lambda r: r[0]))
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
    _write_outbox(rows, encoded, app_seq_of, announce)
    # Last: an erasure deletes what the batch itself wrote of the user, too.
    for erasure in plan.erasures:
        app_seq = app_seq_of[event_id_bytes(erasure.event_id)]
        erase_user(rows, erasure, app_seq, retain=retain_assignments, announce=announce)


# The columns of an erased user's events that are emptied: every personal field, the event
# id (it was random, and the old links committed to it: without it no guess of a deleted
# value can be confirmed against a link), valid time, type and offset in the source.
ERASED_EVENT_COLUMNS = (
    "event_id",
    "occurred_at",
    "type",
    "phone_region",
    "phone_valid",
    "phone_hash",
    "channel",
    "birth_date",
    "country",
    "evidence",
    "tos_version",
    "locale",
    "document_country",
    "document_kind",
    "origin_offset",
)
# The users row's columns an erasure empties: the facts and the cached state.
ERASED_USER_COLUMNS = tuple(
    c for c in USER_WRITE_COLUMNS if c not in ("user_id", "events", "updated_at", "chain_head")
)
_SKELETON_SELECT = (
    "SELECT h.id, h.valid_from, h.valid_to, d.assignment, d.policy, d.rule, d.policy_hash, "
    "h.recorded_at, h.superseded_at FROM assignment_history AS h "
    "JOIN decisions AS d ON d.id = h.decision_id WHERE h.user_id = ?"
)


def erase_user(
    rows: _Rows, erasure: PlannedErasure, app_seq: int, *, retain: bool, announce: bool
) -> None:
    """Apply one planned erasure (docs/data-protection.md) in the batch's transaction:
    delete the user's personal data, link the erasure into their chain, record it. The
    link commits to what is kept (ledger.domain.audit.erasure)."""
    mark = "?" if rows.sqlite else "%s"
    q = rows.quote

    def run(sql: str, params: tuple[Any, ...]) -> Any:
        return rows.conn.exec_driver_sql(sql.replace("?", mark), params)

    user, seq = erasure.user_id, erasure.seq
    kept = [
        (n, instant(rec), bytes(link))
        for n, rec, link in run(
            "SELECT seq, recorded_at, link FROM events WHERE user_id = ? AND seq < ? ORDER BY seq",
            (user, seq),
        )
    ]
    skeleton = [
        (
            r[0],
            r[6],
            SkeletonRow(
                instant(r[1]),
                optional_instant(r[2]),
                r[3],
                r[4],
                r[5],
                instant(r[7]),
                optional_instant(r[8]),
            ),
        )
        for r in run(_SKELETON_SELECT, (user,))
    ]
    record = ErasureRecord(
        event_id=erasure.event_id,
        user_id=user,
        occurred_at=erasure.occurred_at,
        recorded_at=erasure.recorded_at,
        request_id=erasure.request_id,
        seq=seq,
        erased_events=erased_events_hash(kept),
        history_rows=len(skeleton),
        retained=skeleton_hash(row for _, _, row in skeleton) if retain else None,
    )
    link = next_link(kept[-1][2] if kept else GENESIS, erasure_bytes(record))
    nulls = ", ".join(f"{q(c)} = NULL" for c in ERASED_EVENT_COLUMNS)
    run(f"UPDATE events SET {nulls} WHERE user_id = ? AND seq < ?", (user, seq))
    run("UPDATE events SET link = ? WHERE user_id = ? AND seq = ?", (link, user, seq))
    if retain and skeleton:
        # The skeleton keeps the decision but not its reason, which may quote the facts.
        wanted = {(s.assignment, s.policy, s.rule, "", phash) for _, phash, s in skeleton}
        ids = rows.interned(decisions, DECISION_COLUMNS, wanted)
        rows.execute_many(
            "UPDATE assignment_history SET facts = ?, evidence = ?, decision_id = ? WHERE id = ?",
            [
                (rows.json({}), rows.json([]), ids[(s.assignment, s.policy, s.rule, "", ph)], i)
                for i, ph, s in skeleton
            ],
        )
    else:
        run("DELETE FROM assignment_history WHERE user_id = ?", (user,))
    dead = run("DELETE FROM dead_letters WHERE user_id = ?", (user,)).rowcount
    # The user's earlier changefeed rows name history rows that are gone; the erasure's
    # own row tells consumers to forget the user (a tombstone on rulebook-current).
    run("DELETE FROM decision_outbox WHERE user_id = ?", (user,))
    if not rows.sqlite:
        rows.conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_OUTBOX_LOCK,))
    rows.insert(
        decision_outbox,
        OUTBOX_WRITE_COLUMNS,
        [
            (
                user,
                rows.instant(erasure.occurred_at),
                rows.instant(erasure.recorded_at),
                "erased",
                app_seq,
                announce,
            )
        ],
    )
    cleared = ", ".join(f"{q(c)} = NULL" for c in ERASED_USER_COLUMNS)
    run(
        f"UPDATE users SET {cleared}, events = ?, chain_head = ?, updated_at = ? WHERE user_id = ?",
        (seq, link, rows.instant(erasure.recorded_at), user),
    )
    rows.insert(
        erasures,
        (
            "user_id",
            "app_seq",
            "seq",
            "request_id",
            "erased_at",
            "history_rows",
            "dead_letters",
            "retained_hash",
        ),
        [
            (
                user,
                app_seq,
                seq,
                erasure.request_id,
                rows.instant(erasure.recorded_at),
                len(skeleton),
                dead,
                record.retained,
            )
        ],
    )


# Any 64-bit number no other code of the store's database takes as an advisory lock.
_OUTBOX_LOCK = 0x6C656467_6F757462  # "ledgoutb"


def _write_outbox(
    rows: _Rows, encoded: EncodedPlan, app_seq_of: Mapping[bytes, int], announce: bool
) -> None:
    """The batch's changefeed rows, last in its transaction. On PostgreSQL, writers take
    their turn for it (a transaction-scoped advisory lock, released by the commit), so feed
    rows commit in seq order: a reader that has seen seq N has seen every seq below it,
    and paging by `seq > after` never passes a row still to commit. Only the end of each
    writer's transaction is serialised."""
    if not encoded.outbox:
        return
    # In application order, so the feed tells each user's decisions in the order they were
    # made, whichever worker planned them.
    announced = sorted(
        (app_seq_of[origin], n, tuple(rest)) for n, (origin, *rest) in enumerate(encoded.outbox)
    )
    if not rows.sqlite:
        rows.conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_OUTBOX_LOCK,))
    rows.insert(
        decision_outbox,
        OUTBOX_WRITE_COLUMNS,
        [(*rest, app_seq, announce) for app_seq, _, rest in announced],
    )
