"""Dead letters a page at a time, with their raw input (for the admin HTTP endpoint)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select

from ledger.store.dead_letters import DeadLetterRow, iter_with_raw
from ledger.store.schema import dead_letters

_dl = dead_letters.c


def page(
    engine: Engine,
    *,
    since: datetime | None,
    after: int | None,
    limit: int,
    raw_budget: int,
) -> tuple[list[DeadLetterRow], int | None]:
    """Up to `limit` dead letters recorded at or after `since` with an id above `after`,
    oldest first, and the id to continue after (None: there are no more). A page stops early
    once its raw input adds up to `raw_budget` bytes (one row at least), since each row may
    hold megabytes."""
    q = select(_dl.id, _dl.raw_size).order_by(_dl.id).limit(limit + 1)
    if since is not None:
        q = q.where(_dl.recorded_at >= since)
    if after is not None:
        q = q.where(_dl.id > after)
    with engine.connect() as conn:
        found = conn.execute(q).all()
    chosen: list[int] = []
    used = 0
    for row_id, size in found[:limit]:
        if chosen and used + size > raw_budget:
            break
        chosen.append(row_id)
        used += size
    rows = list(iter_with_raw(engine, chosen))
    more = len(chosen) < len(found)
    return rows, (chosen[-1] if more and chosen else None)
