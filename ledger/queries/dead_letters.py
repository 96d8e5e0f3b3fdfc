"""Dead letters for people: a page at a time with their raw input (the admin HTTP endpoint),
and their JSON forms, one for every edge."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from ledger.domain.time import format_instant
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


def listed_json(row: DeadLetterRow) -> dict[str, Any]:
    """A dead letter as `dead-letters list --json` and the API list it: never its raw input."""
    return {
        "id": row.id,
        "recorded_at": format_instant(row.recorded_at),
        "source": row.source,
        "position": row.position,
        "partition": row.partition,
        "offset": row.offset,
        "reason": row.reason,
        "raw_size": row.raw_size,
        "event_id": row.event_id,
        "user_id": row.user_id,
        "resolved_at": format_instant(row.resolved_at),
        "resolution": row.resolution,
    }


def _raw_json(raw: bytes) -> dict[str, Any]:
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"raw_base64": base64.b64encode(raw).decode("ascii"), "raw_text": text}


def full_json(row: DeadLetterRow) -> dict[str, Any]:
    """A dead letter with its raw input, as base64 and (when it is UTF-8) as text."""
    raw = row.raw or b""
    return {
        **listed_json(row),
        "raw_kept": len(raw),
        "raw_truncated": row.truncated,
        **_raw_json(raw),
    }
