"""Canonical JSON, and the canonical bytes of one stored event row that its user's hash
chain covers, in each chain encoding (docs/audit.md). Pure.

Canonical JSON is the standard library's with every option fixed (sorted keys, no
whitespace, UTF-8, no NaN), extended with timestamps and dates. Every hash of the audit
trail is taken over these bytes, so they must be the same on every store and every run.

Chain encoding 1 is the canonical JSON of the row (`canonical_event`); chain encoding 2,
which links are written under now, is a length-prefixed binary form of the same fields
(`chain_bytes`, `canonical_event_v2`), several times cheaper to compute. Encoding 1 stays:
digests taken under it name it, and `ledger verify --digest` recomputes their chains.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from struct import Struct
from struct import error as StructError
from typing import Any

from ledger.domain.facts import OBSERVED_FIELDS
from ledger.domain.limits import quote

__all__ = [
    "CHAIN_ENCODING",
    "CHAIN_ENCODINGS",
    "EVENT_CHAIN_FIELDS",
    "EVENT_CHAIN_LATER_FIELDS",
    "canonical_event",
    "canonical_event_as",
    "canonical_event_v2",
    "canonical_json",
    "chain_bytes",
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

# Columns added after chain encoding 1 was first released (event schema version 2). In
# encoding 1 each is part of a row's canonical form only when it holds a value, so no link
# computed before it existed changed. Encoding 2 always has every field.
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


def _fields_error(keys: Any, required: frozenset[str]) -> ValueError:
    given = set(keys)
    missing = sorted(required - given)
    extra = sorted(map(str, given - _EVENT_FIELD_SET))
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected {', '.join(quote(k) for k in extra)}")
    return ValueError(f"event row fields: {'; '.join(parts)}")


def canonical_event(fields: Mapping[str, Any]) -> bytes:
    """The canonical bytes of one stored event row in chain encoding 1: the
    `EVENT_CHAIN_FIELDS`, each of its column's type (ValueError naming the missing, extra or
    ill-typed ones). A field of `EVENT_CHAIN_LATER_FIELDS` that is null or absent is left
    out."""
    keys = fields.keys()
    if keys != _EVENT_FIELD_SET and not (_EARLIER_FIELD_SET <= keys <= _EVENT_FIELD_SET):
        raise _fields_error(keys, _EARLIER_FIELD_SET)
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


# --- chain encoding 2: length-prefixed binary ---------------------------------------------

# The encoding the planner links new events under, and every encoding a store or a digest
# may name (a digest without a `chain_encoding` field was taken under 1).
CHAIN_ENCODING = 2
CHAIN_ENCODINGS = (1, 2)

# Encoding 2 is: the version byte 0x02, then every field of EVENT_CHAIN_FIELDS in that
# order, each as a marker byte (0x00 null, 0x01 a value) and, after 0x01, its value: text
# as a big-endian u32 byte count and UTF-8; instants as big-endian i64 milliseconds since
# 1970-01-01T00:00Z; dates as big-endian i32 days since 1970-01-01; booleans as one byte
# 0x00/0x01; `seq` as a big-endian i64. Every value's width is fixed or given before it,
# so one byte string parses back into one row only (docs/audit.md has the table).
_V2 = b"\x02"
_NULL = b"\x00"
_FALSE = b"\x01\x00"
_TRUE = b"\x01\x01"
_TEXT_HEAD = Struct(">BI").pack
_INSTANTS = Struct(">BqBq").pack  # occurred_at and recorded_at, which sit side by side
_DAYS = Struct(">Bi").pack
_SEQ = Struct(">Bq").pack
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
# `chain_bytes` unpacks the observed fields by position, in this order.
assert OBSERVED_FIELDS == (
    "phone_region",
    "phone_valid",
    "phone_hash",
    "channel",
    "birth_date",
    "country",
    "evidence",
    "tos_version",
    "locale",
    "document_country",
    "document_kind",
)


def _refused(name: str, value: Any) -> ValueError:
    return ValueError(f"event row field {name!r}: unexpected {type(value).__name__}")


def _utf8(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise _refused(name, value)
    try:
        return value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"event row field {name!r}: a lone surrogate is not UTF-8") from None


def _text(name: str, value: Any, append: Callable[[bytes], None]) -> None:
    if value is None:
        append(_NULL)
        return
    data = _utf8(name, value)
    append(_TEXT_HEAD(1, len(data)))
    append(data)


def _millis(name: str, value: Any) -> int:
    if not isinstance(value, datetime):
        raise _refused(name, value)
    try:
        delta = value - _EPOCH  # exact integer arithmetic, whatever the offset
    except TypeError:
        raise ValueError(
            f"event row field {name!r}: naive datetime {value.isoformat()} has no UTC offset"
        ) from None
    micro = delta.microseconds
    if micro % 1000:
        # As in encoding 1: anything finer was not written by the ledger.
        raise ValueError(
            f"event row field {name!r}: datetime {value.isoformat()} is finer than milliseconds"
        )
    return (delta.days * 86_400 + delta.seconds) * 1000 + micro // 1000


def chain_bytes(
    event_id: str,
    user_id: str,
    occurred_at: datetime,
    recorded_at: datetime,
    type_: str,
    observed: Sequence[Any],
    seq: int,
) -> bytes:
    """The bytes of one event row in chain encoding 2, from its values (`observed`: the
    OBSERVED_FIELDS in order, None where the event has none). Each value must be of its
    column's type, as for encoding 1 (ValueError naming the field otherwise)."""
    try:
        (
            region,
            valid,
            phone,
            channel,
            birth,
            country,
            evidence,
            tos,
            locale,
            doc_country,
            doc_kind,
        ) = observed
    except ValueError:
        raise ValueError(
            f"event row: {len(observed)} observed fields, not {len(OBSERVED_FIELDS)}"
        ) from None
    eid = _utf8("event_id", event_id)
    uid = _utf8("user_id", user_id)
    kind = _utf8("type", type_)
    parts = [
        _V2,
        _TEXT_HEAD(1, len(eid)),
        eid,
        _TEXT_HEAD(1, len(uid)),
        uid,
        _INSTANTS(1, _millis("occurred_at", occurred_at), 1, _millis("recorded_at", recorded_at)),
        _TEXT_HEAD(1, len(kind)),
        kind,
    ]
    # Written out field by field rather than looped: this runs for every event applied.
    append = parts.append
    _text("phone_region", region, append)
    if valid is None:
        append(_NULL)
    elif valid is True:
        append(_TRUE)
    elif valid is False:
        append(_FALSE)
    else:
        raise _refused("phone_valid", valid)
    _text("phone_hash", phone, append)
    _text("channel", channel, append)
    if birth is None:
        append(_NULL)
    elif isinstance(birth, date) and not isinstance(birth, datetime):
        append(_DAYS(1, birth.toordinal() - _EPOCH_DAY))
    else:
        raise _refused("birth_date", birth)
    _text("country", country, append)
    _text("evidence", evidence, append)
    _text("tos_version", tos, append)
    _text("locale", locale, append)
    _text("document_country", doc_country, append)
    _text("document_kind", doc_kind, append)
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise _refused("seq", seq)
    try:
        append(_SEQ(1, seq))
    except StructError:
        raise ValueError(f"event row field 'seq': {seq} is out of range") from None
    return b"".join(parts)


def canonical_event_v2(fields: Mapping[str, Any]) -> bytes:
    """`chain_bytes` of a stored event row: exactly the `EVENT_CHAIN_FIELDS` (ValueError
    naming the missing, extra or ill-typed ones; a null is encoded as null, never left
    out)."""
    if fields.keys() != _EVENT_FIELD_SET:
        raise _fields_error(fields.keys(), _EVENT_FIELD_SET)
    return chain_bytes(
        fields["event_id"],
        fields["user_id"],
        fields["occurred_at"],
        fields["recorded_at"],
        fields["type"],
        [fields[name] for name in OBSERVED_FIELDS],
        fields["seq"],
    )


def canonical_event_as(encoding: int, fields: Mapping[str, Any]) -> bytes:
    """The stored event row's bytes in chain encoding `encoding` (1 or 2)."""
    if encoding == 2:
        return canonical_event_v2(fields)
    if encoding == 1:
        return canonical_event(fields)
    raise ValueError(f"unknown chain encoding {encoding!r} (this ledger knows 1 and 2)")
