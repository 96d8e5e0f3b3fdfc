"""Helpers shared by the tests: the CLI runner and readable event fixtures."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from ledger.app.ports import HistoryTableRow
from ledger.cli.main import app
from ledger.store.schema import (
    EVENT_POSITION,
    EVENTS_WITH_ORIGIN,
    HISTORY_FROM,
    Instant,
    UTCDateTime,
    assignment_history,
    decisions,
    event_origins,
    events,
    history_columns,
    users,
)


class Cli:
    """Runs `ledger ...` in-process, as a user would type it."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.runner = CliRunner()

    def run(self, *args: str, expect: int | None = 0, db: bool = True) -> Any:
        argv = [*args, "--db", self.db] if db else list(args)
        result = self.runner.invoke(app, argv, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (
                f"ledger {' '.join(argv)} exited {result.exit_code}, expected {expect}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def json(self, *args: str, expect: int | None = 0, db: bool = True) -> Any:
        return json.loads(self.run(*args, "--json", expect=expect, db=db).stdout)


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def eid(n: int) -> str:
    """Readable, deterministic event ids: eid(7) == '00000000-0000-4000-8000-000000000007'."""
    return f"00000000-0000-4000-8000-{n:012d}"


def history_rows(url: str) -> list[tuple]:
    """Every history row (believed and superseded) without the surrogate id, sorted; from a
    store at any revision since 0003 (before 0007 the decisions were in the rows)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        names = {c["name"] for c in sa.inspect(conn).get_columns("assignment_history")}
        compact = "decision_id" in names
        if compact:
            q = sa.select(*history_columns(*HistoryTableRow._fields)).select_from(HISTORY_FROM)
        else:
            old = sa.table(
                "assignment_history",
                *(sa.column(n, _type_0005(n)) for n in HistoryTableRow._fields),
            )
            q = sa.select(*old.c)
        rows = sorted(conn.execute(q).all(), key=lambda r: (r[0], r[1], r[9]))
    engine.dispose()
    return sorted(
        (
            tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for v in r)
            for r in rows
        ),
        key=repr,
    )


def events_with_origin(url: str) -> list[Any]:
    """Every event row with its source and position text (interned since 0007)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        q = sa.select(events, event_origins.c.source, EVENT_POSITION).select_from(
            EVENTS_WITH_ORIGIN
        )
        found = list(conn.execute(q.order_by(events.c.app_seq)))
    engine.dispose()
    return found


def _type_0005(name: str) -> Any:
    """The column type of a history column of revisions 0003 to 0006."""
    if name in assignment_history.c:
        kind = assignment_history.c[name].type
        return UTCDateTime() if isinstance(kind, Instant) else kind
    return decisions.c[name].type


def chain_heads(url: str) -> dict[str, tuple[bytes, int]]:
    """user -> (hash chain head, chain length), as stored (docs/audit.md)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT user_id, chain_head, events FROM users")).all()
    engine.dispose()
    return {u: (bytes(h), n) for u, h, n in rows}


def consistent(url: str) -> None:
    """Each user: one open row, believed rows tiling valid time, users.events = its events,
    and per-user sequence numbers 1..n."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        e = events.c
        per_user = conn.execute(
            sa.select(e.user_id, sa.func.count(), sa.func.max(e.seq)).group_by(e.user_id)
        ).all()
        counts = {user: n for user, n, _ in per_user}
        seqs = {user: top for user, _, top in per_user}
        stored = {user: n for user, n in conn.execute(sa.select(users.c.user_id, users.c.events))}
        h = assignment_history.c
        rows = conn.execute(
            sa.select(h.user_id, h.valid_from, h.valid_to)
            .where(h.superseded_at.is_(None))
            .order_by(h.user_id, h.valid_from)
        ).all()
    engine.dispose()
    assert stored == counts == seqs
    by_user: dict[str, list] = {}
    for user, start, end in rows:
        by_user.setdefault(user, []).append((start, end))
    for user, spans in by_user.items():
        assert [e for _, e in spans].count(None) == 1, user
        for (_, end), (start, _) in pairwise(spans):
            assert end == start, user


def refuse_events_of(engine: sa.Engine, user: str) -> None:
    """Make the real database refuse every event of `user`, as it would a value it cannot
    hold: a trigger, since the ledger's own validation lets nothing such through. The
    store sees StoreRefused (SQLite: RAISE(ABORT); PostgreSQL: SQLSTATE 22023)."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON events "
                f"WHEN NEW.user_id = '{user}' BEGIN SELECT RAISE(ABORT, 'no {user} here'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.user_id = '{user}' THEN RAISE EXCEPTION 'no {user} here' "
                "USING ERRCODE = '22023'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW "
                "EXECUTE FUNCTION refuse()"
            )
