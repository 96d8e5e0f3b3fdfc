"""Reading users' stored events back for what-if runs, in chunks of users, read-only.

Users are paged by id (keyset, never OFFSET), and each chunk takes three short queries on
a connection of its own: the user ids, their events (by the (user_id, occurred_at) index)
and the history entries believed at the time compared. No transaction stays open across
chunks, so a long what-if never holds back a writer or SQLite's checkpoints; a writer
active meanwhile is seen chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import Engine, func, select

from ledger.app.ports import UserHistory
from ledger.domain.facts import OBSERVED_FIELDS, Observation
from ledger.store.errors import translated_errors
from ledger.store.rows import observation_from_row
from ledger.store.schema import HISTORY_FROM, assignment_history, events, history_columns, users

CHUNK_USERS = 2000

# Only what the fold reads: record times, sources and positions are not needed.
_EVENT_COLUMNS = [
    events.c[name] for name in ("event_id", "user_id", "occurred_at", "type", *OBSERVED_FIELDS)
]


def count_events(engine: Engine) -> int:
    with translated_errors(), engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def read_user_histories(
    engine: Engine, at: datetime, *, chunk_users: int = CHUNK_USERS
) -> Iterator[list[UserHistory]]:
    """Every user with their observations and the assignment believed at `at`, in chunks
    of `chunk_users` users ordered by user id."""
    h = assignment_history.c
    last: str | None = None
    while True:
        with translated_errors(), engine.connect() as conn:
            q = select(users.c.user_id).order_by(users.c.user_id).limit(chunk_users)
            if last is not None:
                q = q.where(users.c.user_id > last)
            ids = list(conn.execute(q).scalars())
            if not ids:
                return
            first, last = ids[0], ids[-1]
            obs: dict[str, list[Observation]] = {u: [] for u in ids}
            rows = conn.execute(
                select(*_EVENT_COLUMNS).where(events.c.user_id >= first, events.c.user_id <= last)
            )
            for row in rows:
                bucket = obs.get(row.user_id)
                if bucket is not None:
                    bucket.append(observation_from_row(row))
            current: dict[str, tuple[str, str, str]] = {}
            q = select(*history_columns("user_id", "assignment", "policy", "rule"))
            q = q.select_from(HISTORY_FROM).where(
                h.user_id >= first,
                h.user_id <= last,
                h.superseded_at.is_(None),
                h.valid_from <= at,
                (h.valid_to.is_(None)) | (h.valid_to > at),
            )
            for row in conn.execute(q):
                current[row.user_id] = (row.assignment, row.policy, row.rule)
        yield [UserHistory(u, obs[u], current.get(u)) for u in ids]


def read_observations(engine: Engine, user_id: str) -> list[Observation]:
    """One user's stored observations, in valid-time order."""
    with translated_errors(), engine.connect() as conn:
        rows = conn.execute(select(*_EVENT_COLUMNS).where(events.c.user_id == user_id))
        return sorted((observation_from_row(r) for r in rows), key=lambda o: o.order_key)
