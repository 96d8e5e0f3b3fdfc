"""Reading the ledger: history (believed, all, or as believed at a past record time),
the assignment at a valid time, and plain-language explanations.

The statements are plain SQL in the driver's own paramstyle, run through a
`ledger.store.readonly.SqlReader`: an engine's pool for the HTTP API, one connection of
the driver (`sqlite3`, psycopg) for the CLI. Nothing here imports SQLAlchemy: `ledger
history` as a process spends its time on the answer, not on loading a statement compiler
it would not use.
Values are read back as `ledger.store.schema` stores them (its `UTCDateTime`, `JSON` and
`Date` columns): ISO text on SQLite, native types on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from ledger.domain.projection import HistoryRow
from ledger.domain.rulebooks import RULEBOOKS, AgeStatus, age_status
from ledger.domain.time import format_instant
from ledger.domain.timeline import Entry, entry_at, entry_json
from ledger.errors import LedgerError
from ledger.store.readonly import SqlReader, reader
from ledger.store.rows import HISTORY_COLUMNS, day, history_row, optional_instant

if TYPE_CHECKING:
    from sqlalchemy import Engine


class UnknownUser(LedgerError, LookupError):
    pass


def row_json(row: HistoryRow) -> dict[str, Any]:
    """One history row in the `history --json` form."""
    return {
        **entry_json(row.entry),
        "recorded_at": format_instant(row.recorded_at),
        "superseded_at": format_instant(row.superseded_at),
    }


# Both by the (user_id, ...) index of their table. `{p}` is the driver's placeholder.
_USER_SQL = "SELECT birth_date, signup_at FROM users WHERE user_id = {p}"
_ROWS_SQL = (
    f"SELECT {', '.join(HISTORY_COLUMNS)} FROM assignment_history "
    "WHERE user_id = {p}{believed} ORDER BY valid_from, recorded_at"
)
_STATEMENTS = {
    (p, name): sql.format(p=p, believed=believed)
    for p in ("?", "%s")
    for name, sql, believed in (
        ("user", _USER_SQL, ""),
        ("all", _ROWS_SQL, ""),
        ("believed", _ROWS_SQL, " AND superseded_at IS NULL"),
    )
}


def _fetch(r: SqlReader, name: str, user_id: str) -> Sequence[Sequence[Any]]:
    return r.rows(_STATEMENTS[r.placeholder, name], (user_id,))


def _user_row(r: SqlReader, user_id: str) -> tuple[date | None, datetime | None]:
    """The user's (birth date, signup time)."""
    found = _fetch(r, "user", user_id)
    if not found:
        raise UnknownUser(f"unknown user {user_id!r}: no events for this user in the ledger")
    birth_date, signup_at = found[0]
    return day(birth_date), optional_instant(signup_at)


def history(
    engine: Engine | SqlReader,
    user_id: str,
    *,
    include_superseded: bool = False,
    believed_at: datetime | None = None,
) -> list[HistoryRow]:
    """The user's history, ordered by valid time. Default: what the ledger believes now;
    `believed_at`: what it believed at that record time; `include_superseded`: every row."""
    r = reader(engine)
    rows = _history_rows(r, user_id, include_superseded, believed_at)
    if not rows:  # a known user has rows; one query, not two, on the hot path (HTTP API)
        _user_row(r, user_id)
    return rows


def _history_rows(
    r: SqlReader, user_id: str, include_superseded: bool, believed_at: datetime | None
) -> list[HistoryRow]:
    name = "believed" if not include_superseded and believed_at is None else "all"
    rows = [history_row(row, driver=True) for row in _fetch(r, name, user_id)]
    if believed_at is not None and not include_superseded:
        rows = [r for r in rows if r.believed_at(believed_at)]
    return rows


@dataclass(frozen=True, slots=True)
class Current:
    user_id: str
    at: datetime
    entry: Entry | None  # None: before signup (or never signed up)
    previous: Entry | None  # the entry before `entry`, if any
    birth_date: date | None
    age_status: AgeStatus
    signup_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        rb = RULEBOOKS.get(self.entry.assignment) if self.entry else None
        # An entry's facts are (name, value) pairs; JSON shows them as an object.
        return {
            "user_id": self.user_id,
            "at": format_instant(self.at),
            "assignment": self.entry.assignment if self.entry else None,
            "since": format_instant(self.entry.valid_from) if self.entry else None,
            "until": format_instant(self.entry.valid_to) if self.entry else None,
            "policy": self.entry.policy if self.entry else None,
            "rule": self.entry.rule if self.entry else None,
            "reason": self.entry.reason if self.entry else None,
            "facts": dict(self.entry.facts) if self.entry else None,
            "evidence": list(self.entry.evidence) if self.entry else None,
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
    engine: Engine | SqlReader,
    user_id: str,
    at: datetime,
    *,
    believed_at: datetime | None = None,
) -> Current:
    r = reader(engine)
    birth_date, signup_at = _user_row(r, user_id)
    entries = [row.entry for row in _history_rows(r, user_id, False, believed_at)]
    entry = entry_at(entries, at)
    i = entries.index(entry) if entry else 0
    previous = entries[i - 1] if i > 0 else None
    status: AgeStatus = age_status(entry.assignment, birth_date, at.date()) if entry else "unknown"
    return Current(user_id, at, entry, previous, birth_date, status, signup_at)


def _day(value: datetime) -> str:
    return f"{value.day} {value:%B %Y}"


def explain(
    engine: Engine | SqlReader,
    user_id: str,
    at: datetime,
    *,
    believed_at: datetime | None = None,
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
    facts = ", ".join(f"{k} = {v if v is not None else 'not set'}" for k, v in e.facts)
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
    prev = cur.previous
    if prev is not None:
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
