"""What an erasure did, read back from the store for `ledger erase` (docs/data-protection.md):
the `erasures` row the erasure recorded, and how many events the user has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from ledger.domain.time import format_instant
from ledger.store.errors import translated_errors
from ledger.store.rows import instant
from ledger.store.schema import erasures, events


@dataclass(frozen=True, slots=True)
class Erasure:
    seq: int  # the erasure's place in the user's chain: seq - 1 events came before it
    erased_at: Any
    request_id: str
    history_rows: int
    dead_letters: int
    retained: bool


@dataclass(frozen=True, slots=True)
class ErasureState:
    user_id: str
    events: int  # the user's stored events (after an erasure: its links, and itself)
    erasure: Erasure | None


def erasure_state(engine: Engine, user_id: str) -> ErasureState:
    """The user's erasure, if any, and how many events the store holds of them."""
    e = erasures.c
    with translated_errors(reading=True), engine.connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(events).where(events.c.user_id == user_id)
        ).scalar_one()
        row = conn.execute(
            select(
                e.seq, e.erased_at, e.request_id, e.history_rows, e.dead_letters, e.retained_hash
            ).where(e.user_id == user_id)
        ).first()
    erasure = (
        None
        if row is None
        else Erasure(row[0], instant(row[1]), row[2], row[3], row[4], row[5] is not None)
    )
    return ErasureState(user_id, int(count), erasure)


def erasure_report(state: ErasureState, *, already: bool) -> dict[str, Any]:
    """`ledger erase --json`: what the user's erasure deleted and kept."""
    erasure = state.erasure
    assert erasure is not None
    before = erasure.seq - 1  # the events before the erasure: emptied, their links kept
    return {
        "user_id": state.user_id,
        "erased_at": format_instant(erasure.erased_at),
        "request_id": erasure.request_id,
        "already_erased": already,
        "deleted": {
            "events": before,
            "history_rows": 0 if erasure.retained else erasure.history_rows,
            "dead_letters": erasure.dead_letters,
        },
        "kept": {
            "event_links": before,
            "history_rows": erasure.history_rows if erasure.retained else 0,
        },
    }
