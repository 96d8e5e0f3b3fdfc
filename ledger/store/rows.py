"""The one mapping from stored rows to the domain's: events to observations, history rows
to `HistoryRow`. Every reader uses it, whether its rows come through SQLAlchemy's column
types (the writer, the audit snapshot, the what-if reads) or straight from the driver
(`ledger history`'s fast path, which must not import SQLAlchemy: nor does this module).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from ledger.domain.events import IdentityVerified, Relocated, TermsAccepted
from ledger.domain.facts import (
    Observation,
    ObservedPayload,
    ObservedPhoneChange,
    ObservedSignup,
    PhoneFacts,
)
from ledger.domain.projection import HistoryRow
from ledger.domain.timeline import Entry


def _observed_payload(row: Any) -> ObservedPayload:
    """The payload of a stored event row; the row's `type` column names its kind."""
    phone = (
        PhoneFacts(row.phone_region, bool(row.phone_valid), row.phone_hash)
        if row.phone_hash is not None
        else None
    )
    if row.type == "SignedUp" and phone is not None:
        return ObservedSignup(phone, row.channel, row.birth_date, row.locale)
    if row.type == "PhoneChanged" and phone is not None:
        return ObservedPhoneChange(phone)
    if row.type == "Relocated":
        return Relocated(row.country, row.evidence)
    if row.type == "TermsAccepted":
        return TermsAccepted(row.tos_version)
    if row.type == "IdentityVerified":
        return IdentityVerified(row.document_country, row.document_kind)
    raise ValueError(f"stored event {row.event_id} has an unreadable type {row.type!r}")


def observation_from_row(row: Any) -> Observation:
    return Observation(row.event_id, row.user_id, row.occurred_at, _observed_payload(row))


# The columns of a history row as `history_row` takes them, in this order.
HISTORY_COLUMNS = (
    "valid_from",
    "valid_to",
    "assignment",
    "policy",
    "rule",
    "reason",
    "facts",
    "evidence",
    "recorded_at",
    "superseded_at",
)


def history_row(values: Sequence[Any], *, driver: bool = False) -> HistoryRow:
    """A history row from its HISTORY_COLUMNS as SQLAlchemy's column types return them, or,
    with `driver`, as the driver itself does (ISO text and JSON text on SQLite). Only the
    driver's values are decoded: a SQLAlchemy JSON column that holds a string is a row
    someone edited, and stays unreadable."""
    valid_from, valid_to, assignment, policy, rule, reason, facts, evidence, rec, sup = values
    if driver:
        valid_from, valid_to = instant(valid_from), optional_instant(valid_to)
        rec, sup = instant(rec), optional_instant(sup)
        facts, evidence = json_value(facts), json_value(evidence)
    entry = Entry(
        valid_from=valid_from,
        valid_to=valid_to,
        assignment=assignment,
        policy=policy,
        rule=rule,
        reason=reason,
        facts=tuple(sorted(facts.items())),
        evidence=tuple(evidence),
    )
    return HistoryRow(entry, rec, sup)


def history_row_from_row(row: Any) -> HistoryRow:
    """A history row from a SQLAlchemy row of `assignment_history`."""
    return history_row([getattr(row, name) for name in HISTORY_COLUMNS])


def instant(value: str | datetime) -> datetime:
    # As `UTCDateTime.process_result_value`: "2026-01-10 09:00:00.000000" on SQLite.
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def optional_instant(value: Any) -> datetime | None:
    return None if value is None else instant(value)


def day(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


def json_value(value: Any) -> Any:
    # SQLite keeps JSON as text; psycopg and SQLAlchemy's JSON type hand it over decoded.
    return json.loads(value) if isinstance(value, str) else value
