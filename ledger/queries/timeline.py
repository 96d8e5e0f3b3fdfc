"""What the bitemporal timeline picture shows of one user: every history row (superseded
ones included, from `ledger.queries.history.history`, the code path of `history --all`),
the user's events, the sign-up and the moments a terms version began to bind."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from ledger.domain.projection import HistoryRow
from ledger.domain.time import format_instant
from ledger.queries.history import history, row_json
from ledger.store.schema import events, users

# A user with more events than this is drawn with the first ones only (the picture says
# so); the history rows are always drawn whole.
MAX_EVENTS = 2000


@dataclass(frozen=True, slots=True)
class EventMark:
    event_id: str
    type: str
    occurred_at: datetime
    recorded_at: datetime
    detail: str | None  # what the event said, without personal data (no phone number)


@dataclass(frozen=True, slots=True)
class Binding:
    at: datetime  # valid time from which `policy` governs
    policy: str


@dataclass(frozen=True, slots=True)
class TimelineData:
    user_id: str
    rows: list[HistoryRow]  # ordered by valid_from, then recorded_at
    events: list[EventMark]  # ordered by (occurred_at, event_id), as the fold reads them
    events_total: int
    signup_at: datetime | None
    bindings: list[Binding]  # from the believed rows: signup's binding, then each rebinding

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "signup_at": format_instant(self.signup_at),
            "entries": [row_json(r) for r in self.rows],
            "events": [
                {
                    "event_id": e.event_id,
                    "type": e.type,
                    "occurred_at": format_instant(e.occurred_at),
                    "recorded_at": format_instant(e.recorded_at),
                    "detail": e.detail,
                }
                for e in self.events
            ],
            "events_total": self.events_total,
            "bindings": [{"at": format_instant(b.at), "policy": b.policy} for b in self.bindings],
        }


def _detail(row: Any) -> str | None:
    if row.type == "SignedUp":
        phone = f"phone region {row.phone_region}" if row.phone_valid else "invalid phone"
        locale = f", locale {row.locale}" if row.locale else ""
        return f"{row.channel}, {phone}{locale}"
    if row.type == "PhoneChanged":
        return f"phone region {row.phone_region}" if row.phone_valid else "invalid phone"
    if row.type == "Relocated":
        return f"{row.country} ({row.evidence})"
    if row.type == "TermsAccepted":
        return str(row.tos_version)
    if row.type == "IdentityVerified":
        return f"{row.document_kind} issued in {row.document_country}"
    return None


def bindings(rows: list[HistoryRow]) -> list[Binding]:
    """When each terms version began to govern, in the believed history. Each policy is the
    policy of one terms version and a rebinding always starts a new entry (docs/rules.md), so the
    moments are the first believed entry and every entry whose policy differs from the one
    before it."""
    believed = sorted(
        (r.entry for r in rows if r.superseded_at is None), key=lambda e: e.valid_from
    )
    out: list[Binding] = []
    for e in believed:
        if not out or out[-1].policy != e.policy:
            out.append(Binding(e.valid_from, e.policy))
    return out


def timeline(engine: Engine, user_id: str) -> TimelineData:
    """Raises UnknownUser like `history`."""
    rows = history(engine, user_id, include_superseded=True)
    e = events.c
    q = (
        select(
            e.event_id,
            e.type,
            e.occurred_at,
            e.recorded_at,
            e.channel,
            e.phone_region,
            e.phone_valid,
            e.country,
            e.evidence,
            e.tos_version,
            e.locale,
            e.document_country,
            e.document_kind,
        )
        .where(e.user_id == user_id)
        .order_by(e.occurred_at, e.event_id)
    )
    with engine.connect() as conn:
        found = conn.execute(q.limit(MAX_EVENTS + 1)).all()
        total = len(found)
        if total > MAX_EVENTS:
            stored = conn.execute(select(users.c.events).where(users.c.user_id == user_id))
            total = int(stored.scalar() or total)
        signup_at = conn.execute(
            select(users.c.signup_at).where(users.c.user_id == user_id)
        ).scalar()
    marks = [
        EventMark(r.event_id, r.type, r.occurred_at, r.recorded_at, _detail(r))
        for r in found[:MAX_EVENTS]
    ]
    return TimelineData(user_id, rows, marks, int(total or 0), signup_at, bindings(rows))
