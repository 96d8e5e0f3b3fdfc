"""Reading the ledger: history (believed, all, or as believed at a past record time),
the assignment at a valid time, and plain-language explanations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, select

from ledger.rulebooks import RULEBOOKS, AgeStatus, age_status
from ledger.store.schema import assignment_history, users
from ledger.timeutil import format_instant


class UnknownUser(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    valid_from: datetime
    valid_to: datetime | None
    assignment: str
    policy: str
    rule: str
    reason: str
    facts: dict[str, Any]
    evidence: list[str]
    recorded_at: datetime
    superseded_at: datetime | None

    def believed_at(self, record_time: datetime) -> bool:
        return self.recorded_at <= record_time and (
            self.superseded_at is None or self.superseded_at > record_time
        )

    def covers(self, at: datetime) -> bool:
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)

    def as_json(self) -> dict[str, Any]:
        return {
            "valid_from": format_instant(self.valid_from),
            "valid_to": format_instant(self.valid_to),
            "assignment": self.assignment,
            "policy": self.policy,
            "rule": self.rule,
            "reason": self.reason,
            "facts": self.facts,
            "evidence": self.evidence,
            "recorded_at": format_instant(self.recorded_at),
            "superseded_at": format_instant(self.superseded_at),
        }


def _user_row(engine: Engine, user_id: str) -> Any:
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.user_id == user_id)).first()
    if row is None:
        raise UnknownUser(f"unknown user {user_id!r}: no events for this user in the ledger")
    return row


def history(
    engine: Engine,
    user_id: str,
    *,
    include_superseded: bool = False,
    believed_at: datetime | None = None,
) -> list[HistoryRecord]:
    """The user's history, ordered by valid time. Default: what the ledger believes now;
    `believed_at`: what it believed at that record time; `include_superseded`: every row."""
    _user_row(engine, user_id)
    q = select(assignment_history).where(assignment_history.c.user_id == user_id)
    if not include_superseded and believed_at is None:
        q = q.where(assignment_history.c.superseded_at.is_(None))
    q = q.order_by(assignment_history.c.valid_from, assignment_history.c.recorded_at)
    with engine.connect() as conn:
        rows = [
            HistoryRecord(
                r.valid_from,
                r.valid_to,
                r.assignment,
                r.policy,
                r.rule,
                r.reason,
                dict(r.facts),
                list(r.evidence),
                r.recorded_at,
                r.superseded_at,
            )
            for r in conn.execute(q)
        ]
    if believed_at is not None and not include_superseded:
        rows = [r for r in rows if r.believed_at(believed_at)]
    return rows


@dataclass(frozen=True, slots=True)
class Current:
    user_id: str
    at: datetime
    entry: HistoryRecord | None  # None: before signup (or never signed up)
    birth_date: date | None
    age_status: AgeStatus
    signup_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        rb = RULEBOOKS.get(self.entry.assignment) if self.entry else None
        return {
            "user_id": self.user_id,
            "at": format_instant(self.at),
            "assignment": self.entry.assignment if self.entry else None,
            "since": format_instant(self.entry.valid_from) if self.entry else None,
            "until": format_instant(self.entry.valid_to) if self.entry else None,
            "policy": self.entry.policy if self.entry else None,
            "rule": self.entry.rule if self.entry else None,
            "reason": self.entry.reason if self.entry else None,
            "facts": self.entry.facts if self.entry else None,
            "evidence": self.entry.evidence if self.entry else None,
            "rulebook": (
                {
                    "id": rb.id,
                    "platform": rb.platform,
                    "age_rule": rb.age_rule,
                    "content_focus": rb.content_focus,
                    "data_residency": rb.data_residency,
                }
                if rb
                else None
            ),
            "age_status": self.age_status,
            "signup_at": format_instant(self.signup_at),
        }


def current(
    engine: Engine, user_id: str, at: datetime, *, believed_at: datetime | None = None
) -> Current:
    user = _user_row(engine, user_id)
    rows = history(engine, user_id, believed_at=believed_at)
    entry = next((r for r in rows if r.covers(at)), None)
    status: AgeStatus = (
        age_status(entry.assignment, user.birth_date, at.date()) if entry else "unknown"
    )
    return Current(user_id, at, entry, user.birth_date, status, user.signup_at)


def _day(value: datetime) -> str:
    return f"{value.day} {value:%B %Y}"


def explain(
    engine: Engine, user_id: str, at: datetime, *, believed_at: datetime | None = None
) -> str:
    """A statement the user or an auditor can read."""
    cur = current(engine, user_id, at, believed_at=believed_at)
    if cur.entry is None:
        if cur.signup_at is None:
            return (
                f"On {_day(at)} no rulebook governs account {user_id}: the ledger has events "
                "for it but no sign-up yet."
            )
        return (
            f"On {_day(at)} account {user_id} did not exist yet: it signed up on "
            f"{_day(cur.signup_at)}."
        )
    e = cur.entry
    rb = RULEBOOKS[e.assignment]
    if e.assignment == "undetermined":
        lead = (
            f"Since {_day(e.valid_from)} no rulebook can be assigned to you yet (you are in the "
            f"review queue) because {e.reason}"
        )
    else:
        lead = f"Since {_day(e.valid_from)} you are governed by the {rb.title} because {e.reason}"
    parts = [f"{lead} (policy {e.policy}, rule {e.rule})."]
    if e.valid_to is not None:
        parts.append(f"This held until {_day(e.valid_to)}.")
    facts = ", ".join(f"{k} = {v if v is not None else 'not set'}" for k, v in e.facts.items())
    if facts:
        parts.append(f"The rule read: {facts}; from events {', '.join(e.evidence)}.")
    if e.assignment != "undetermined":
        parts.append(
            f"Under this rulebook: {rb.age_rule}; content: {rb.content_focus}; "
            f"your data is {rb.data_residency}."
        )
    age_text = {
        "ok": "no age restriction applies",
        "minor_advisory": "you are under 18: use is advised against (advisory, not blocked)",
        "guardian_consent_required": "you are under 14: a guardian's consent is required",
        "below_minimum_age": "you are under the minimum age of 13 for this rulebook",
        "unknown": "unknown (no birth date on record)"
        if cur.birth_date is None
        else "unknown (no rulebook assigned)",
    }[cur.age_status]
    parts.append(f"Age status on {_day(at)}: {age_text}.")
    earlier = [
        r for r in history(engine, user_id, believed_at=believed_at) if r.valid_from < e.valid_from
    ]
    if earlier:
        prev = earlier[-1]
        was = (
            "in the review queue"
            if prev.assignment == "undetermined"
            else f"governed by the {RULEBOOKS[prev.assignment].title}"
        )
        parts.append(
            f"Before that you were {was} (policy {prev.policy}, rule {prev.rule}) "
            f"from {_day(prev.valid_from)}."
        )
    return " ".join(parts)
