"""Bulk reads and writes of the read model for one batch: one query per table to load the
batch's users, executemany writes, no ORM unit of work on the hot path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ledger.facts import Observation, PhoneFacts
from ledger.projection import HistoryRow, UserProjection
from ledger.store.schema import assignment_history, dead_letters, events, source_positions, users
from ledger.timeline import Entry

# Keeps IN (...) lists under SQLite's bound-parameter limit.
_CHUNK = 5000


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def observation_from_row(row: Any) -> Observation:
    phone = (
        PhoneFacts(row.phone_region, bool(row.phone_valid), row.phone_hash)
        if row.phone_hash is not None
        else None
    )
    return Observation(
        event_id=row.event_id,
        user_id=row.user_id,
        occurred_at=row.occurred_at,
        type=row.type,
        phone=phone,
        channel=row.channel,
        birth_date=row.birth_date,
        country=row.country,
        evidence=row.evidence,
        tos_version=row.tos_version,
    )


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
    return HistoryRow(entry_from_row(row), row.recorded_at, row.superseded_at, stored=True)


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


def event_values(
    obs: Observation, recorded_at: datetime, source: str, position: str
) -> dict[str, Any]:
    return {
        "event_id": obs.event_id,
        "user_id": obs.user_id,
        "occurred_at": obs.occurred_at,
        "recorded_at": recorded_at,
        "type": obs.type,
        "phone_region": obs.phone.region if obs.phone else None,
        "phone_valid": obs.phone.valid if obs.phone else None,
        "phone_hash": obs.phone.digest if obs.phone else None,
        "channel": obs.channel,
        "birth_date": obs.birth_date,
        "country": obs.country,
        "evidence": obs.evidence,
        "tos_version": obs.tos_version,
        "source": source,
        "position": position,
    }


def user_values(p: UserProjection, updated_at: datetime) -> dict[str, Any]:
    f = p.facts
    timeline = p.timeline
    ev = timeline.evidence if timeline else {}
    phones = {o.event_id: o.phone for o in p.observations if o.phone is not None}
    signup_phone = phones.get(ev.get("signup_phone_region", ""))
    current_phone = phones.get(ev.get("current_phone_region", ""))
    last = timeline.entries[-1] if timeline and timeline.entries else None
    return {
        "user_id": p.user_id,
        "signup_at": f.signup_at,
        "channel": f.channel,
        "birth_date": f.birth_date,
        "signup_phone_region": f.signup_phone_region,
        "signup_phone_valid": f.signup_phone_valid,
        "signup_phone_hash": signup_phone.digest if signup_phone else None,
        "current_phone_region": f.current_phone_region,
        "current_phone_valid": f.current_phone_valid,
        "current_phone_hash": current_phone.digest if current_phone else None,
        "residence": f.residence,
        "ip_country": f.ip_country,
        "tos_version": f.tos_version,
        "assignment": last.assignment if last else None,
        "policy": last.policy if last else None,
        "rule": last.rule if last else None,
        "since": last.valid_from if last else None,
        "events": len(p.observations),
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


def write_batch(
    conn: Connection,
    *,
    event_rows: list[dict[str, Any]],
    new_history: list[dict[str, Any]],
    superseded: list[dict[str, Any]],  # from superseded_values()
    user_rows: list[dict[str, Any]],
    dead_letter_rows: list[dict[str, Any]],
    positions: list[dict[str, Any]],
) -> None:
    """All writes of one batch; the caller owns the transaction."""
    if event_rows:
        conn.execute(events.insert(), event_rows)
    # History rows are addressed by (user_id, valid_from, recorded_at): a user's believed
    # rows never share valid_from, and rows with an empty record interval are never kept,
    # so the triple is unique without the store handing ids back.
    key = (
        (assignment_history.c.user_id == bindparam("k_user"))
        & (assignment_history.c.valid_from == bindparam("k_from"))
        & (assignment_history.c.recorded_at == bindparam("k_recorded"))
    )
    updates = [s for s in superseded if not s["empty"]]
    if updates:
        conn.execute(
            update(assignment_history).where(key).values(superseded_at=bindparam("at")), updates
        )
    # A stored row replaced at its own record time was never believed at any record time
    # (an earlier batch merely wrote it first); keeping it would make the history depend
    # on where batches happened to split.
    deletes = [s for s in superseded if s["empty"]]
    if deletes:
        conn.execute(delete(assignment_history).where(key), deletes)
    if new_history:
        conn.execute(assignment_history.insert(), new_history)
    _upsert(conn, users, user_rows, ["user_id"])
    if dead_letter_rows:
        conn.execute(dead_letters.insert(), dead_letter_rows)
    _upsert(conn, source_positions, positions, ["source", "partition"])


def lock_positions(conn: Connection, keys: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
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
