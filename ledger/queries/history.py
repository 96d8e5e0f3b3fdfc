"""Reading the ledger: history (believed, all, or as believed at a past record time),
the assignment at a valid time, and plain-language explanations.

Asked as believed at a record time before the ledger had recorded anything of the user,
every answer says so (`Recorded`): the account may well have existed then, the ledger just
had not heard of it yet, which is not the same as "not signed up".

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
from ledger.store.rows import (
    HISTORY_COLUMNS,
    HISTORY_FROM_SQL,
    day,
    history_row,
    instant,
    optional_instant,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine


class UnknownUser(LedgerError, LookupError):
    pass


class ErasedUser(LedgerError, LookupError):
    """The user was erased (docs/data-protection.md): every reader answers this, and
    nothing else, about them (the CLI exits 0; HTTP answers 410 Gone)."""

    def __init__(self, user_id: str, erased_at: datetime, request_id: str) -> None:
        self.user_id = user_id
        self.erased_at = erased_at
        self.request_id = request_id
        super().__init__(f"{user_id} erased at {format_instant(erased_at)} (request {request_id})")

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "erased_at": format_instant(self.erased_at),
            "request_id": self.request_id,
        }


def row_json(row: HistoryRow) -> dict[str, Any]:
    """One history row in the `history --json` form."""
    return {
        **entry_json(row.entry),
        "recorded_at": format_instant(row.recorded_at),
        "superseded_at": format_instant(row.superseded_at),
    }


# Each by the (user_id, ...) index of its table. `{p}` is the driver's placeholder.
_USER_SQL = "SELECT birth_date, signup_at FROM users WHERE user_id = {p}"
_FIRST_SQL = "SELECT MIN(recorded_at) FROM events WHERE user_id = {p}"
_ERASED_SQL = "SELECT erased_at, request_id FROM erasures WHERE user_id = {p}"
_ROWS_SQL = (
    f"SELECT {', '.join(HISTORY_COLUMNS)} FROM {HISTORY_FROM_SQL} "
    "WHERE user_id = {p}{believed} ORDER BY valid_from, recorded_at"
)
_STATEMENTS = {
    (p, name): sql.format(p=p, believed=believed)
    for p in ("?", "%s")
    for name, sql, believed in (
        ("user", _USER_SQL, ""),
        ("first", _FIRST_SQL, ""),
        ("erased", _ERASED_SQL, ""),
        ("all", _ROWS_SQL, ""),
        ("believed", _ROWS_SQL, " AND superseded_at IS NULL"),
    )
}


def _fetch(r: SqlReader, name: str, user_id: str) -> Sequence[Sequence[Any]]:
    return r.rows(_STATEMENTS[r.placeholder, name], (user_id,))


def refuse_erased(r: SqlReader, user_id: str) -> None:
    """Raise ErasedUser if the user was erased."""
    found = _fetch(r, "erased", user_id)
    if found:
        erased_at, request_id = found[0]
        raise ErasedUser(user_id, instant(erased_at), request_id)


class NotErased(LedgerError, LookupError):
    """A retained history was asked of a user who was not erased."""


_RETAINED_SQL = (
    "SELECT h.valid_from, h.valid_to, d.assignment, d.policy, d.rule, h.recorded_at, "
    "h.superseded_at FROM assignment_history AS h JOIN decisions AS d "
    "ON d.id = h.decision_id WHERE h.user_id = {p} ORDER BY h.valid_from, h.recorded_at"
)


@dataclass(frozen=True, slots=True)
class RetainedAnswer:
    """What is kept of an erased user's history: the skeleton, when the erasure ran with
    LEDGER_RETAIN_ASSIGNMENTS=1 (no facts, evidence or reasons: those were deleted)."""

    erased: ErasedUser
    rows: list[tuple[datetime, datetime | None, str, str, str, datetime, datetime | None]]

    def to_json(self) -> dict[str, Any]:
        names = ("valid_from", "valid_to", "assignment", "policy", "rule", "recorded_at",
                 "superseded_at")
        return {
            **self.erased.to_json(),
            "retained": [
                {
                    n: format_instant(v) if isinstance(v, datetime) else v
                    for n, v in zip(names, row, strict=True)
                }
                for row in self.rows
            ],
        }


def retained_history(
    engine: Engine | SqlReader,
    user_id: str,
    *,
    include_superseded: bool = True,
    believed_at: datetime | None = None,
) -> RetainedAnswer:
    """An erased user's retained history skeleton (empty when nothing was retained), chosen
    as `history` chooses rows: `include_superseded`, or what was believed at `believed_at`,
    or (neither) what was believed last. Raises NotErased for a user who was not erased:
    their history is `history`'s."""
    r = reader(engine)
    try:
        refuse_erased(r, user_id)
    except ErasedUser as erased:
        found = r.rows(_RETAINED_SQL.format(p=r.placeholder), (user_id,))
        rows = [
            (instant(vf), optional_instant(vt), a, p, rule, instant(rec), optional_instant(sup))
            for vf, vt, a, p, rule, rec, sup in found
        ]
        if believed_at is not None and not include_superseded:
            rows = [x for x in rows if x[5] <= believed_at and (x[6] is None or x[6] > believed_at)]
        elif not include_superseded:
            rows = [x for x in rows if x[6] is None]
        return RetainedAnswer(erased, rows)
    raise NotErased(f"{user_id!r} was not erased: --retained is for erased users")


def _user_row(r: SqlReader, user_id: str) -> tuple[date | None, datetime | None]:
    """The user's (birth date, signup time)."""
    found = _fetch(r, "user", user_id)
    if not found:
        raise UnknownUser(f"unknown user {user_id!r}: no events for this user in the ledger")
    birth_date, signup_at = found[0]
    return day(birth_date), optional_instant(signup_at)


def _first_recorded_at(r: SqlReader, user_id: str) -> datetime | None:
    """The record time of the user's first event (None: no event stored)."""
    found = _fetch(r, "first", user_id)
    return optional_instant(found[0][0]) if found else None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the ledger had recorded of a user by the record time asked about.

    `first_recorded_at` is the record time of the user's first event, known when a record
    time was asked about (None otherwise: then the answer is about now, and the ledger
    knows the user). `on_record` is False when that first record came after the record
    time asked about: the ledger held no record of the user then."""

    believed_at: datetime | None = None
    first_recorded_at: datetime | None = None

    @property
    def on_record(self) -> bool:
        return (
            self.believed_at is None
            or self.first_recorded_at is None
            or self.first_recorded_at <= self.believed_at
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "on_record": self.on_record,
            "first_recorded_at": format_instant(self.first_recorded_at),
        }

    def no_record_text(self, subject: str) -> str:
        """What every interface says when `on_record` is False (a sentence, capitalised)."""
        return (
            f"The ledger held no record of {subject} at {format_instant(self.believed_at)}: "
            f"its first event was recorded at {format_instant(self.first_recorded_at)}"
        )


def history(
    engine: Engine | SqlReader,
    user_id: str,
    *,
    include_superseded: bool = False,
    believed_at: datetime | None = None,
) -> list[HistoryRow]:
    """The user's history, ordered by valid time. Default: what the ledger believes now;
    `believed_at`: what it believed at that record time; `include_superseded`: every row.
    Empty also for a known user asked about before the ledger recorded anything of them:
    `history_answer` tells that apart."""
    r = reader(engine)
    refuse_erased(r, user_id)
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
class HistoryAnswer:
    """The rows of `history` with what the ledger had recorded of the user by then."""

    user_id: str
    rows: list[HistoryRow]
    recorded: Recorded

    def to_json(self) -> dict[str, Any]:
        """The `history --json` document."""
        return {
            "user_id": self.user_id,
            "entries": [row_json(row) for row in self.rows],
            **self.recorded.to_json(),
        }


def history_answer(
    engine: Engine | SqlReader,
    user_id: str,
    *,
    include_superseded: bool = False,
    believed_at: datetime | None = None,
) -> HistoryAnswer:
    """`history`, and whether the ledger held any record of the user at `believed_at`
    (every row, `include_superseded`, is not asked as of a record time)."""
    r = reader(engine)
    rows = history(r, user_id, include_superseded=include_superseded, believed_at=believed_at)
    asked = None if include_superseded else believed_at
    known = Recorded(asked, _first_recorded_at(r, user_id)) if asked is not None else Recorded()
    return HistoryAnswer(user_id, rows, known)


@dataclass(frozen=True, slots=True)
class Current:
    user_id: str
    at: datetime
    entry: Entry | None  # None: before signup, never signed up, or not on record yet
    previous: Entry | None  # the entry before `entry`, if any
    birth_date: date | None
    age_status: AgeStatus
    signup_at: datetime | None  # as believed at the record time asked about
    recorded: Recorded = Recorded()

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
            **self.recorded.to_json(),
        }


def current(
    engine: Engine | SqlReader,
    user_id: str,
    at: datetime,
    *,
    believed_at: datetime | None = None,
) -> Current:
    r = reader(engine)
    refuse_erased(r, user_id)
    birth_date, signup_at = _user_row(r, user_id)
    entries = [row.entry for row in _history_rows(r, user_id, False, believed_at)]
    known = Recorded()
    if believed_at is not None:
        known = Recorded(believed_at, _first_recorded_at(r, user_id))
        # The sign-up as the ledger knew it then: a believed history starts at the sign-up,
        # and there is none before the ledger had recorded one.
        signup_at = entries[0].valid_from if entries else None
    entry = entry_at(entries, at)
    i = entries.index(entry) if entry else 0
    previous = entries[i - 1] if i > 0 else None
    status: AgeStatus = age_status(entry.assignment, birth_date, at.date()) if entry else "unknown"
    return Current(user_id, at, entry, previous, birth_date, status, signup_at, known)


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
    return explanation(current(engine, user_id, at, believed_at=believed_at))


def explain_json(
    engine: Engine | SqlReader,
    user_id: str,
    at: datetime,
    *,
    believed_at: datetime | None = None,
) -> dict[str, Any]:
    """The `explain --json` document."""
    cur = current(engine, user_id, at, believed_at=believed_at)
    return {
        "user_id": user_id,
        "at": format_instant(at),
        "explanation": explanation(cur),
        **cur.recorded.to_json(),
    }


def explanation(cur: Current) -> str:
    """The statement of `explain` for an answer of `current`."""
    at, user_id = cur.at, cur.user_id
    if not cur.recorded.on_record:
        return (
            f"{cur.recorded.no_record_text(f'account {user_id}')}; so it could not say which "
            f"rulebook governed the account on {_day(at)}."
        )
    if cur.entry is None:
        if cur.signup_at is None:
            then = cur.recorded.believed_at
            knew = f"had at {format_instant(then)}" if then else "has"
            return (
                f"On {_day(at)} no rulebook governs account {user_id}: the ledger {knew} events "
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
