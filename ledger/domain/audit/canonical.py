"""Canonical JSON, and the canonical bytes of one stored event row that its user's hash
chain covers. Pure.

Canonical JSON is the standard library's with every option fixed (sorted keys, no
whitespace, UTF-8, no NaN), extended with timestamps and dates. Every hash of the audit
trail is taken over these bytes, so they must be the same on every store and every run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from ledger.domain.facts import OBSERVED_FIELDS
from ledger.domain.limits import quote

__all__ = [
    "EVENT_CHAIN_FIELDS",
    "EVENT_CHAIN_LATER_FIELDS",
    "canonical_event",
    "canonical_json",
    "format_canonical_instant",
]

# The stored columns of `events` (ledger/store/schema.py) that the chain covers. `source`
# and `position` are left out on purpose: they say where a copy of the event was read, and
# the chain must not depend on which source or consumer applied it. `seq` is the user's own
# application count (1, 2, ...), which is fixed by the user's event order alone; a global
# sequence across users would make the chain depend on how users interleaved.
EVENT_CHAIN_FIELDS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "occurred_at",
    "recorded_at",
    "type",
    *OBSERVED_FIELDS,
    "seq",
)

# Columns added after the chain's encoding was first released (event schema version 2).
# Each is part of a row's canonical form only when it holds a value, so no link computed
# before it existed changes: a store upgraded from an older revision verifies as it is,
# with nothing recomputed, and an event without the newer fields hashes as it always did.
EVENT_CHAIN_LATER_FIELDS: tuple[str, ...] = ("locale", "document_country", "document_kind")
assert set(EVENT_CHAIN_LATER_FIELDS) <= set(EVENT_CHAIN_FIELDS)

_EVENT_FIELD_SET = frozenset(EVENT_CHAIN_FIELDS)
_EARLIER_FIELD_SET = _EVENT_FIELD_SET - set(EVENT_CHAIN_LATER_FIELDS)


def format_canonical_instant(value: datetime) -> str:
    """An aware instant as canonical text: UTC, always milliseconds, `Z`
    ("2026-01-10T09:00:00.000Z"). Naive and sub-millisecond instants are refused
    (ValueError): the ledger stores millisecond instants, so anything finer was not written
    by it, and rounding it away would hide an edit."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} has no UTC offset")
    if value.tzinfo is not UTC:
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"datetime {value.isoformat()} is out of range in UTC") from None
    if value.microsecond % 1000:
        raise ValueError(f"datetime {value.isoformat()} is finer than milliseconds")
    # UTC's isoformat ends in "+00:00"; slicing it off is cheaper than a naive copy.
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):  # before date: a datetime is a date
        return format_canonical_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    # bytes included: they have no one obvious text form, so the caller picks one.
    raise ValueError(f"{type(value).__name__} value {quote(value)} has no canonical form")


_ENCODE = json.JSONEncoder(
    sort_keys=True,
    ensure_ascii=False,
    separators=(",", ":"),
    allow_nan=False,
    default=_json_default,
).encode


def canonical_json(value: Any) -> bytes:
    """Deterministic UTF-8 JSON: sorted keys, no whitespace, non-ASCII kept as is, aware
    datetimes as `format_canonical_instant`, dates as ISO dates, tuples as arrays.
    ValueError for anything else (bytes, NaN, non-string keys, naive datetimes)."""
    try:
        text = _ENCODE(value)
    except TypeError as exc:  # a key that is not a string
        raise ValueError(str(exc)) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text holds a lone surrogate, which is not UTF-8") from None


# The type each chained column must hold. A row holding something else (a timestamp read
# back as text, a date as a datetime, 1 for true) would hash differently on another
# backend, so it is refused instead of producing a chain only one store can reproduce.
_TEXT = (str,)
_OPTIONAL_TEXT = (str, type(None))
_EVENT_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "event_id": _TEXT,
    "user_id": _TEXT,
    "occurred_at": (datetime,),
    "recorded_at": (datetime,),
    "type": _TEXT,
    "phone_region": _OPTIONAL_TEXT,
    "phone_valid": (bool, type(None)),
    "phone_hash": _OPTIONAL_TEXT,
    "channel": _OPTIONAL_TEXT,
    "birth_date": (date, type(None)),
    "country": _OPTIONAL_TEXT,
    "evidence": _OPTIONAL_TEXT,
    "tos_version": _OPTIONAL_TEXT,
    "locale": _OPTIONAL_TEXT,
    "document_country": _OPTIONAL_TEXT,
    "document_kind": _OPTIONAL_TEXT,
    "seq": (int,),
}
assert set(_EVENT_FIELD_TYPES) == _EVENT_FIELD_SET


def _fits(name: str, value: Any) -> bool:
    kind = type(value)
    allowed = _EVENT_FIELD_TYPES[name]
    if kind in allowed:
        return True
    # Subclasses: bool is an int and a datetime is a date, and neither may stand in.
    return (
        isinstance(value, allowed)
        and not isinstance(value, bool)
        and not (isinstance(value, datetime) and datetime not in allowed)
    )


def canonical_event(fields: Mapping[str, Any]) -> bytes:
    """The canonical bytes of one stored event row: the `EVENT_CHAIN_FIELDS`, each of its
    column's type (ValueError naming the missing, extra or ill-typed ones). A field of
    `EVENT_CHAIN_LATER_FIELDS` that is null or absent is left out."""
    keys = fields.keys()
    if keys != _EVENT_FIELD_SET and not (_EARLIER_FIELD_SET <= keys <= _EVENT_FIELD_SET):
        given = set(keys)
        missing = sorted(_EARLIER_FIELD_SET - given)
        extra = sorted(map(str, given - _EVENT_FIELD_SET))
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(quote(k) for k in extra)}")
        raise ValueError(f"event row fields: {'; '.join(parts)}")
    for name, value in fields.items():
        if not _fits(name, value):
            raise ValueError(f"event row field {name!r}: unexpected {type(value).__name__}")
    row = dict(fields)
    for name in EVENT_CHAIN_LATER_FIELDS:
        if row.get(name) is None:
            row.pop(name, None)
    try:
        return canonical_json(row)
    except ValueError as exc:
        raise ValueError(f"event row: {exc}") from None
