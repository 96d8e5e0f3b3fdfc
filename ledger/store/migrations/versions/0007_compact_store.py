"""A compact store (docs/operations.md, "Tables"): the same information in about a third of
the bytes.

- events: `app_seq` is the primary key (SQLite's rowid, so no index of its own), the
  source and position are an `event_origins` id and an integer offset, the (user_id,
  occurred_at) index is gone (reads by user use the unique (user_id, seq) key);
- assignment_history: the decision (assignment, policy, rule, reason, policy hash) is a
  `decisions` id;
- events, users and assignment_history: instants are integers of microseconds on SQLite
  (`ledger.store.schema.Instant`); PostgreSQL keeps timestamptz.

Links and chain heads are copied byte for byte: they hash the logical values, which do not
change. Each table is renamed aside, created anew and copied: in SQL (`INSERT ... SELECT`,
streamed by the database) where SQL can convert, in chunks of `CHUNK_ROWS` rows by key
where Python must (events' positions), so the upgrade runs in bounded memory on any size
of store. The downgrade restores the 0006 layout the same way.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

from ledger.store.rows import event_id_bytes, split_position
from ledger.store.schema import (
    ROW_ID,
    Instant,
    UTCDateTime,
    assignment_history,
    decisions,
    event_origins,
    events,
    users,
)

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHUNK_ROWS = 5000

# The 0006 columns each table keeps under the same name.
_EVENT_COMMON = (
    "event_id", "user_id", "occurred_at", "recorded_at", "type", "phone_region",
    "phone_valid", "phone_hash", "channel", "birth_date", "country", "evidence",
    "tos_version", "locale", "document_country", "document_kind", "seq", "app_seq", "link",
)  # fmt: skip
_EVENT_TIMES = ("occurred_at", "recorded_at")
_USER_TIMES = ("signup_at", "since", "updated_at")
_HISTORY_TIMES = ("valid_from", "valid_to", "recorded_at", "superseded_at")
# Named indexes and constraints of 0006, whose names the new tables take again.
_OLD_INDEXES = {
    "events": ("ix_events_user",),
    "users": ("ix_users_assignment",),
    "assignment_history": ("ix_history_user",),
}
_OLD_CONSTRAINTS = {
    "events": ("events_pkey", "uq_events_user_seq", "uq_events_app_seq"),
    "users": ("users_pkey",),
    "assignment_history": ("assignment_history_pkey",),
}


def _micros(column: str) -> str:
    """SQLite: 0006's fixed-width ISO text ("2026-01-10 09:00:00.000000") as microseconds
    since the epoch, exactly (strftime's seconds, then the six digits of the fraction)."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE "
        f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000 "
        f"+ CAST(substr({column}, 21, 6) AS INTEGER) END"
    )


def _iso(column: str) -> str:
    """SQLite: microseconds since the epoch as 0006's ISO text (the downgrade)."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE "
        f"strftime('%Y-%m-%d %H:%M:%S', {column} / 1000000 - ({column} % 1000000 < 0), "
        f"'unixepoch') || '.' || substr('00000' || (({column} % 1000000 + 1000000) % 1000000),"
        " -6) END"
    )


def _uuid_text(column: str, sqlite: bool) -> str:
    """16 bytes as a UUID's canonical text (the downgrade)."""
    h = f"lower(hex({column}))" if sqlite else f"encode({column}, 'hex')"
    parts = [f"substr({h}, {start}, {n})" for start, n in ((1, 8), (9, 4), (13, 4), (17, 4))]
    return " || '-' || ".join([*parts, f"substr({h}, 21, 12)"])


def _aside(table: str) -> str:
    """Rename `table` aside, freeing the names of its indexes, keys and sequences."""
    postgres = op.get_bind().dialect.name == "postgresql"
    old = f"{table}_0006"
    for index in _OLD_INDEXES[table]:
        op.drop_index(index, table_name=table)
    op.rename_table(table, old)
    if postgres:
        for name in _OLD_CONSTRAINTS[table]:
            op.execute(f'ALTER TABLE "{old}" DROP CONSTRAINT IF EXISTS "{name}"')
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq RENAME TO {old}_id_seq")
    return old


def _restart_ids(table: str) -> None:
    """PostgreSQL: a copied table's id sequence continues after the copied ids."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
        )


def _select_list(
    columns: tuple[str, ...], times: tuple[str, ...], convert: Callable[[str], str]
) -> str:
    sqlite = op.get_bind().dialect.name == "sqlite"
    return ", ".join(convert(c) if sqlite and c in times else c for c in columns)


def _copy_users(old: str, convert: Callable[[str], str]) -> None:
    # users keeps its columns: only the instants change form.
    names = tuple(c.name for c in users.columns)
    op.execute(
        f"INSERT INTO users ({', '.join(names)}) "
        f"SELECT {_select_list(names, _USER_TIMES, convert)} FROM {old}"
    )


def _chunks(bind: sa.Connection, sql: str, key: int) -> Any:
    """The rows of `sql` (ordered by app_seq, its column number `key`, with `{after}` and
    `{limit}` to fill in) CHUNK_ROWS at a time, by key: never a whole table in memory."""
    after: Any = None
    while True:
        cond = "1 = 1" if after is None else f"app_seq > {int(after)}"
        rows = bind.exec_driver_sql(sql.format(after=cond, limit=CHUNK_ROWS)).all()
        if not rows:
            return
        yield rows
        after = rows[-1][key]


class _Origins:
    """event_origins ids by (source, prefix), interned as the copy meets them."""

    def __init__(self, bind: sa.Connection) -> None:
        self.bind = bind
        self.ids: dict[tuple[str, str], int] = {}

    def id(self, source: str, prefix: str) -> int:
        key = (source, prefix)
        if key not in self.ids:
            got = self.bind.execute(
                sa.insert(event_origins).values(source=source, prefix=prefix)
            ).inserted_primary_key
            assert got is not None
            self.ids[key] = int(got[0])
        return self.ids[key]


def _copy_events_up(bind: sa.Connection, old: str) -> None:
    sqlite = bind.dialect.name == "sqlite"
    cols = [*_EVENT_COMMON, "source", "position"]
    select_list = _select_list(tuple(cols), _EVENT_TIMES, _micros)
    sql = f"SELECT {select_list} FROM {old} WHERE {{after}} ORDER BY app_seq LIMIT {{limit}}"
    origins = _Origins(bind)
    names = [*_EVENT_COMMON, "origin_id", "origin_offset"]
    mark = "?" if sqlite else "%s"
    insert = f"INSERT INTO events ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
    key = _EVENT_COMMON.index("app_seq")
    for rows in _chunks(bind, sql, key):
        out = []
        for row in rows:
            event_id, *common, source, position = row
            prefix, offset = split_position(position)
            out.append((event_id_bytes(event_id), *common, origins.id(source, prefix), offset))
        bind.exec_driver_sql(insert, out)


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    event_origins.create(bind)
    decisions.create(bind)

    old = _aside("events")
    events.create(bind)
    _copy_events_up(bind, old)
    op.drop_table(old)

    old = _aside("users")
    users.create(bind)
    _copy_users(old, _micros)
    op.drop_table(old)

    old = _aside("assignment_history")
    assignment_history.create(bind)
    op.execute(
        "INSERT INTO decisions (assignment, policy, rule, reason, policy_hash) "
        f"SELECT DISTINCT assignment, policy, rule, reason, policy_hash FROM {old}"
    )
    kept = ("id", "user_id", "valid_from", "valid_to", "facts", "evidence", "recorded_at",
            "superseded_at")  # fmt: skip
    select_list = ", ".join(
        f"o.{c}" if not (sqlite and c in _HISTORY_TIMES) else _micros(f"o.{c}") for c in kept
    )
    op.execute(
        f"INSERT INTO assignment_history ({', '.join(kept)}, decision_id) "
        f"SELECT {select_list}, d.id FROM {old} AS o JOIN decisions AS d "
        "ON d.assignment = o.assignment AND d.policy = o.policy AND d.rule = o.rule "
        "AND d.reason = o.reason AND d.policy_hash = o.policy_hash"
    )
    op.drop_table(old)
    _restart_ids("assignment_history")


def _layout_0006() -> tuple[sa.Table, sa.Table, sa.Table]:
    """events, users and assignment_history as 0006 made them (for the downgrade)."""
    md = sa.MetaData()

    def iso(c: sa.Column[Any]) -> sa.Column[Any]:
        kind = UTCDateTime() if isinstance(c.type, Instant) else c.type
        return sa.Column(c.name, kind, nullable=c.nullable, primary_key=c.primary_key)

    ev = [iso(c) for c in events.columns if c.name not in ("app_seq", "origin_id", "origin_offset")]
    ev[0] = sa.Column("event_id", sa.String(36), primary_key=True)
    old_events = sa.Table(
        "events", md, *ev,
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("position", sa.Text, nullable=False),
        sa.Column("app_seq", sa.BigInteger, nullable=False),
        sa.Index("ix_events_user", "user_id", "occurred_at"),
        sa.UniqueConstraint("user_id", "seq", name="uq_events_user_seq"),
        sa.UniqueConstraint("app_seq", name="uq_events_app_seq"),
    )  # fmt: skip
    old_users = sa.Table(
        "users", md, *(iso(c) for c in users.columns),
        sa.Index("ix_users_assignment", "assignment"),
    )  # fmt: skip
    hist = [iso(c) for c in assignment_history.columns if c.name != "decision_id"]
    hist[0] = sa.Column("id", ROW_ID, primary_key=True, autoincrement=True)
    hist += [sa.Column(c.name, c.type, nullable=False) for c in decisions.columns if c.name != "id"]
    old_history = sa.Table(
        "assignment_history", md, *hist, sa.Index("ix_history_user", "user_id", "valid_from")
    )
    return old_events, old_users, old_history


def _drop_new(table: str) -> str:
    """Rename a 0007 table aside before the downgrade recreates its 0006 form."""
    postgres = op.get_bind().dialect.name == "postgresql"
    new = f"{table}_0007"
    for index in _OLD_INDEXES[table]:
        if index != "ix_events_user":  # gone in 0007
            op.drop_index(index, table_name=table)
    op.rename_table(table, new)
    if postgres:
        for name in (f"{table}_pkey", "uq_events_user_seq", "uq_events_event_id"):
            op.execute(f'ALTER TABLE "{new}" DROP CONSTRAINT IF EXISTS "{name}"')
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq RENAME TO {new}_id_seq")
    return new


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    old_events, old_users, old_history = _layout_0006()
    offset = "CAST(e.origin_offset AS TEXT)"

    new = _drop_new("events")
    old_events.create(bind)
    common = list(_EVENT_COMMON)
    select_list = ", ".join(
        _iso(f"e.{c}")
        if sqlite and c in _EVENT_TIMES
        else _uuid_text("e.event_id", sqlite)
        if c == "event_id"
        else f"e.{c}"
        for c in common
    )
    op.execute(
        f"INSERT INTO events ({', '.join(common)}, source, position) "
        f"SELECT {select_list}, o.source, o.prefix || COALESCE({offset}, '') "
        f"FROM {new} AS e JOIN event_origins AS o ON o.id = e.origin_id"
    )
    op.drop_table(new)

    new = _drop_new("users")
    old_users.create(bind)
    _copy_users(new, _iso)
    op.drop_table(new)

    new = _drop_new("assignment_history")
    old_history.create(bind)
    kept = ("id", "user_id", "valid_from", "valid_to", "facts", "evidence", "recorded_at",
            "superseded_at")  # fmt: skip
    decided = ("assignment", "policy", "rule", "reason", "policy_hash")
    select_list = ", ".join(
        _iso(f"h.{c}") if sqlite and c in _HISTORY_TIMES else f"h.{c}" for c in kept
    )
    op.execute(
        f"INSERT INTO assignment_history ({', '.join(kept + decided)}) "
        f"SELECT {select_list}, {', '.join('d.' + c for c in decided)} "
        f"FROM {new} AS h JOIN decisions AS d ON d.id = h.decision_id"
    )
    op.drop_table(new)
    _restart_ids("assignment_history")
    op.drop_table("decisions")
    op.drop_table("event_origins")
