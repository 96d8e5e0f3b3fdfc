"""The one mapping from stored rows to the domain's: events to observations, history rows
to `HistoryRow`. Every reader uses it, whether its rows come through SQLAlchemy's column
types (the writer, the audit snapshot, the what-if reads) or straight from the driver
(`ledger history`'s fast path, which must not import SQLAlchemy: nor does this module).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ledger.domain.facts import Observation, stored_observation
from ledger.domain.projection import HistoryRow
from ledger.domain.timeline import Entry


def observation_from_row(row: Any) -> Observation:
    return stored_observation(row)


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


# The history rows with their decisions (migration 0007), for the plain-SQL readers.
HISTORY_FROM_SQL = (
    "assignment_history JOIN decisions ON decisions.id = assignment_history.decision_id"
)


def history_row(values: Sequence[Any], *, driver: bool = False) -> HistoryRow:
    """A history row from its HISTORY_COLUMNS as SQLAlchemy's column types return them, or,
    with `driver`, as the driver itself does (integer instants and JSON text on SQLite). Only the
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def instant(value: int | str | datetime) -> datetime:
    """A stored instant as the domain sees it: microseconds since the epoch (`Instant` on
    SQLite), "2026-01-10 09:00:00.000000" (`UTCDateTime` on SQLite) or a datetime."""
    if isinstance(value, int):
        # timedelta arithmetic, not fromtimestamp: exact over years 1 to 9999.
        return _EPOCH + value * _MICRO
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def instant_micros(value: datetime) -> int:
    """An aware datetime as `Instant` stores it on SQLite: microseconds since the epoch."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return (value - _EPOCH) // _MICRO


def optional_instant(value: Any) -> datetime | None:
    return None if value is None else instant(value)


def day(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


def json_value(value: Any) -> Any:
    # SQLite keeps JSON as text; psycopg and SQLAlchemy's JSON type hand it over decoded.
    return json.loads(value) if isinstance(value, str) else value


def event_id_bytes(value: str) -> bytes:
    """An event id as the store keeps it (`EventId`, migration 0007): its UUID's 16 bytes.
    The event model gives every id as a UUID in canonical form; any other text (a store
    written before it did) is kept as its UTF-8 after a 0xFF byte, which UTF-8 never
    holds, padded with another when that would make 16 bytes: only a UUID is 16 bytes."""
    # Canonical form checked by hand: a quarter of uuid.UUID's cost, on the hot path.
    if len(value) == 36 and value[8] == value[13] == value[18] == value[23] == "-":
        hex_digits = value.replace("-", "")
        if hex_digits.islower() or hex_digits.isdigit():
            try:
                packed = bytes.fromhex(hex_digits)
            except ValueError:
                packed = b""
            if len(packed) == 16:
                return packed
    text = b"\xff" + value.encode("utf-8", "surrogatepass")
    return text + b"\xff" if len(text) == 16 else text


def event_id_text(value: bytes | str) -> str:
    """A stored event id as the domain sees it (`event_id_bytes` undone)."""
    if isinstance(value, str):
        return value
    value = bytes(value)
    if len(value) == 16:
        return str(uuid.UUID(bytes=value))
    return value.strip(b"\xff").decode("utf-8", "surrogatepass")


def split_position(position: str) -> tuple[str, int | None]:
    """A source position as `event_origins` keeps it: the text before its trailing decimal
    number and the number ("ev.avro#12" -> ("ev.avro#", 12)), or the whole text and None
    when it ends otherwise, or in a number that would not print back the same ("#007")."""
    end = len(position)
    start = end
    while start > 0 and "0" <= position[start - 1] <= "9":
        start -= 1
    digits = position[start:]
    if not digits or (digits[0] == "0" and len(digits) > 1) or len(digits) > 18:
        return position, None
    return position[:start], int(digits)


def join_position(prefix: str, offset: int | None) -> str:
    """The position `split_position` split."""
    return prefix if offset is None else f"{prefix}{offset}"
