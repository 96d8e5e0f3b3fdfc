"""The batch store on SQL databases (SQLite, PostgreSQL): one query per table to load a
batch's users, executemany writes, no ORM unit of work on the hot path."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, assert_never

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)

from ledger.app.plan import AppliedEvent, BatchPlan, PositionKey
from ledger.app.ports import StoreConflict, StoreRefused, StoreUnavailable
from ledger.domain.events import Relocated, TermsAccepted
from ledger.domain.facts import (
    Observation,
    ObservedPayload,
    ObservedPhoneChange,
    ObservedSignup,
    PhoneFacts,
)
from ledger.domain.projection import HistoryRow, UserProjection, UserSummary
from ledger.domain.timeline import Entry
from ledger.sources.records import SourceIdentity
from ledger.store.schema import assignment_history, dead_letters, events, source_positions, users

# Keeps IN (...) lists under SQLite's bound-parameter limit.
_CHUNK = 5000


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _observed_payload(row: Any) -> ObservedPayload:
    """The payload of a stored event row; the row's `type` column names its kind."""
    phone = (
        PhoneFacts(row.phone_region, bool(row.phone_valid), row.phone_hash)
        if row.phone_hash is not None
        else None
    )
    if row.type == "SignedUp" and phone is not None:
        return ObservedSignup(phone, row.channel, row.birth_date)
    if row.type == "PhoneChanged" and phone is not None:
        return ObservedPhoneChange(phone)
    if row.type == "Relocated":
        return Relocated(row.country, row.evidence)
    if row.type == "TermsAccepted":
        return TermsAccepted(row.tos_version)
    raise ValueError(f"stored event {row.event_id} has an unreadable type {row.type!r}")


def observation_from_row(row: Any) -> Observation:
    return Observation(row.event_id, row.user_id, row.occurred_at, _observed_payload(row))


def entry_from_row(row: Any) -> Entry:
    return Entry(
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        assignment=row.assignment,
        policy=row.policy,
        rule=row.rule,
        reason=row.reason,
        facts=tuple(sorted(row.facts.items())),
        evidence=tuple(row.evidence),
    )


def history_row_from_row(row: Any) -> HistoryRow:
    return HistoryRow(entry_from_row(row), row.recorded_at, row.superseded_at)


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
    believed: dict[str, list[HistoryRow]] = {u: [] for u in user_ids}
    for chunk in _chunks(list(user_ids)):
        for row in conn.execute(select(events).where(events.c.user_id.in_(chunk))):
            obs[row.user_id].append(observation_from_row(row))
            if row.user_id not in last or row.recorded_at > last[row.user_id]:
                last[row.user_id] = row.recorded_at
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
        p = UserProjection(u, obs[u], believed[u], last.get(u))
        out[u] = p
    return out


def history_row_values(user_id: str, row: HistoryRow) -> dict[str, Any]:
    e = row.entry
    return {
        "user_id": user_id,
        "valid_from": e.valid_from,
        "valid_to": e.valid_to,
        "assignment": e.assignment,
        "policy": e.policy,
        "rule": e.rule,
        "reason": e.reason,
        "facts": dict(e.facts),
        "evidence": list(e.evidence),
        "recorded_at": row.recorded_at,
        "superseded_at": row.superseded_at,
    }


def superseded_values(user_id: str, row: HistoryRow) -> dict[str, Any]:
    return {
        "k_user": user_id,
        "k_from": row.entry.valid_from,
        "k_recorded": row.recorded_at,
        "at": row.superseded_at,
        "empty": row.record_interval_empty,
    }


_NO_PAYLOAD: dict[str, Any] = {
    "phone_region": None,
    "phone_valid": None,
    "phone_hash": None,
    "channel": None,
    "birth_date": None,
    "country": None,
    "evidence": None,
    "tos_version": None,
}


def _payload_columns(payload: ObservedPayload) -> dict[str, Any]:
    match payload:
        case ObservedSignup(phone=phone, channel=channel, birth_date=birth_date):
            return {
                "phone_region": phone.region,
                "phone_valid": phone.valid,
                "phone_hash": phone.digest,
                "channel": channel,
                "birth_date": birth_date,
            }
        case ObservedPhoneChange(phone=phone):
            return {
                "phone_region": phone.region,
                "phone_valid": phone.valid,
                "phone_hash": phone.digest,
            }
        case Relocated(country=country, evidence=evidence):
            return {"country": country, "evidence": evidence}
        case TermsAccepted(tos_version=tos_version):
            return {"tos_version": tos_version}
        case _:
            assert_never(payload)


def event_values(applied: AppliedEvent) -> dict[str, Any]:
    obs = applied.observation
    return {
        "event_id": obs.event_id,
        "user_id": obs.user_id,
        "occurred_at": obs.occurred_at,
        "recorded_at": applied.recorded_at,
        "type": obs.type,
        **_NO_PAYLOAD,
        **_payload_columns(obs.payload),
        "source": applied.source,
        "position": applied.position,
        "seq": applied.seq,
    }


def user_values(state: UserSummary, updated_at: datetime) -> dict[str, Any]:
    f = state.facts
    last = state.latest
    return {
        "user_id": state.user_id,
        "signup_at": f.signup_at,
        "channel": f.channel,
        "birth_date": f.birth_date,
        "signup_phone_region": f.signup_phone_region,
        "signup_phone_valid": f.signup_phone_valid,
        "signup_phone_hash": state.signup_phone_hash,
        "current_phone_region": f.current_phone_region,
        "current_phone_valid": f.current_phone_valid,
        "current_phone_hash": state.current_phone_hash,
        "residence": f.residence,
        "ip_country": f.ip_country,
        "tos_version": f.tos_version,
        "assignment": last.assignment if last else None,
        "policy": last.policy if last else None,
        "rule": last.rule if last else None,
        "since": last.valid_from if last else None,
        "events": state.events,
        "updated_at": updated_at,
    }


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - the ledger supports SQLite and PostgreSQL
        raise NotImplementedError(f"upserts are not implemented for {dialect}")
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c: stmt.excluded[c] for c in rows[0] if c not in keys},
    )
    conn.execute(stmt, rows)


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
    if plan.events:
        # In key order, so two writers that share users take their row locks in the same
        # order and one waits for the other instead of deadlocking.
        rows = sorted(
            (event_values(a) for a in plan.events), key=lambda r: (r["user_id"], r["seq"])
        )
        conn.execute(events.insert(), rows)
    # History rows are addressed by (user_id, valid_from, recorded_at): a user's believed
    # rows never share valid_from, and rows with an empty record interval are never kept,
    # so the triple is unique without the store handing ids back.
    key = (
        (assignment_history.c.user_id == bindparam("k_user"))
        & (assignment_history.c.valid_from == bindparam("k_from"))
        & (assignment_history.c.recorded_at == bindparam("k_recorded"))
    )
    superseded = [superseded_values(u, row) for u, row in plan.superseded_rows]
    updates = [s for s in superseded if not s["empty"]]
    if updates:
        conn.execute(
            update(assignment_history).where(key).values(superseded_at=bindparam("at")), updates
        )
    deletes = [s for s in superseded if s["empty"]]
    if deletes:
        conn.execute(delete(assignment_history).where(key), deletes)
    if plan.new_rows:
        conn.execute(
            assignment_history.insert(), [history_row_values(u, row) for u, row in plan.new_rows]
        )
    _upsert(
        conn,
        users,
        sorted((user_values(s, at) for s, at in plan.users), key=lambda r: r["user_id"]),
        ["user_id"],
    )
    if plan.dead_letters:
        conn.execute(dead_letters.insert(), dead_letter_values(plan, raw_limit))
    _upsert(
        conn,
        source_positions,
        [
            {
                "source": s,
                "partition": p,
                "next_offset": o,
                "updated_at": plan.recorded_at,
                "topic_id": plan.identities[s].topic_id if s in plan.identities else None,
                "partition_count": (
                    plan.identities[s].partition_count if s in plan.identities else None
                ),
            }
            for (s, p), o in sorted(plan.positions.items())
        ],
        ["source", "partition"],
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

    def reset_positions(self, source: str) -> int:
        with translated_errors(), self.engine.begin() as conn:
            q = delete(source_positions).where(source_positions.c.source == source)
            return conn.execute(q).rowcount


@contextmanager
def translated_errors() -> Iterator[None]:
    """SQLAlchemy's errors as the port's three kinds (`ledger.app.ports`)."""
    try:
        yield
    except IntegrityError as exc:
        # The planner never writes one event id or one (user, seq) twice, so a violated
        # unique key means another writer committed them first; any other integrity
        # error (a check, a trigger) is the database refusing the data.
        if _unique_violation(exc):
            raise StoreConflict(f"another writer got there first: {_reason(exc)}") from exc
        raise StoreRefused(_reason(exc)) from exc
    except OperationalError as exc:
        if _contention(exc):
            raise StoreConflict(f"another writer holds the rows: {_reason(exc)}") from exc
        raise StoreUnavailable(f"the database failed: {_reason(exc)}") from exc
    except InterfaceError as exc:
        raise StoreUnavailable(f"the database failed: {_reason(exc)}") from exc
    except (DataError, UnicodeError, ValueError, OverflowError) as exc:
        raise StoreRefused(_reason(exc)) from exc


def _reason(exc: BaseException) -> str:
    """The database's own words, one line."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


def _unique_violation(exc: IntegrityError) -> bool:
    code = getattr(exc.orig, "sqlstate", None)
    return code == "23505" or "UNIQUE constraint failed" in str(exc.orig)


def _contention(exc: OperationalError) -> bool:
    """Lost a race with another writer rather than lost the database: SQLite's busy lock
    (after its timeout), PostgreSQL's deadlock and serialization failures."""
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40P01", "40001") or "database is locked" in str(exc.orig)
