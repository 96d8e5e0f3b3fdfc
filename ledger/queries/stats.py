"""Store-wide figures for operators: users per assignment, events, dead letters, and the
record time each source was last applied up to."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from ledger.domain.time import format_instant
from ledger.store.schema import dead_letters, event_origins, events, users

# Every assignment is listed, with 0 where nobody has it, so a dashboard's series exist.
ASSIGNMENTS = ("xhs-domestic", "rednote-international", "undetermined")
NOT_SIGNED_UP = "not signed up"


def stats(engine: Engine) -> dict[str, Any]:
    """The `/v1/stats` document. Reads whole tables (events grouped by source): seconds on a
    store of millions of events, so callers cache it."""
    by_assignment: dict[str, int] = dict.fromkeys(ASSIGNMENTS, 0)
    with engine.connect() as conn:
        for assignment, n in conn.execute(
            select(users.c.assignment, func.count()).group_by(users.c.assignment)
        ):
            key = assignment or NOT_SIGNED_UP
            by_assignment[key] = by_assignment.get(key, 0) + n
        sources = conn.execute(
            select(event_origins.c.source, func.count(), func.max(events.c.recorded_at))
            .select_from(events.join(event_origins, event_origins.c.id == events.c.origin_id))
            .group_by(event_origins.c.source)
            .order_by(event_origins.c.source)
        ).all()
        dl = dead_letters.c
        total, unresolved = conn.execute(
            select(func.count(), func.count().filter(dl.resolved_at.is_(None)))
        ).one()
    return {
        "users": {"total": sum(by_assignment.values()), "by_assignment": by_assignment},
        "events": sum(n for _, n, _ in sources),
        "dead_letters": {"total": int(total), "unresolved": int(unresolved)},
        "sources": [
            {"source": source, "events": n, "last_recorded_at": format_instant(last)}
            for source, n, last in sources
        ],
    }
