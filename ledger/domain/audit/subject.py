"""The subject export's events in JSON and back (docs/privacy.md): each event is exactly
the stored columns its user's hash chain covers (`EVENT_CHAIN_FIELDS`), so a reader can
recompute every link, plus its global application number `app_seq`. Pure.

Instants are canonical (`format_canonical_instant`: UTC, milliseconds, `Z`), the birth date
an ISO date, every other field as stored (text, a boolean, the per-user `seq`), null where
the event has none. Read back, each field gets the type its column holds, so that the
chain's encodings (`ledger.domain.audit.canonical`) give the bytes the store hashed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from ledger.domain.audit.canonical import EVENT_CHAIN_FIELDS, format_canonical_instant
from ledger.domain.limits import quote
from ledger.domain.time import parse_instant

__all__ = ["SUBJECT_FORMAT", "event_fields", "event_json"]

# The version of the document `ledger subject export` writes; `ledger subject verify` reads
# only the versions it knows.
SUBJECT_FORMAT = "ledger-subject-export/1"

_INSTANTS = frozenset({"occurred_at", "recorded_at"})
_KNOWN = frozenset({*EVENT_CHAIN_FIELDS, "app_seq"})


def event_json(fields: Mapping[str, Any], app_seq: int) -> dict[str, Any]:
    """One stored event (its `EVENT_CHAIN_FIELDS` as stored) in the export's form."""
    out: dict[str, Any] = {}
    for name in EVENT_CHAIN_FIELDS:
        value = fields[name]
        if isinstance(value, datetime):  # before date: a datetime is a date
            value = format_canonical_instant(value)
        elif isinstance(value, date):
            value = value.isoformat()
        out[name] = value
    out["app_seq"] = app_seq
    return out


def event_fields(data: Any) -> dict[str, Any]:
    """The chained fields of one exported event, typed as their columns are; ValueError
    (naming the field) for a missing or unknown field, or an instant or date that does not
    parse. Other types are left for the chain encoding to refuse, by field."""
    if not isinstance(data, dict):
        raise ValueError(f"an event is a JSON object, got {type(data).__name__}")
    missing = [name for name in EVENT_CHAIN_FIELDS if name not in data]
    if missing:
        raise ValueError(f"field {missing[0]!r} is missing")
    unknown = sorted(str(k) for k in data if k not in _KNOWN)
    if unknown:
        raise ValueError(f"unknown field {quote(unknown[0])}")
    fields: dict[str, Any] = {}
    for name in EVENT_CHAIN_FIELDS:
        value = data[name]
        if name in _INSTANTS:
            if not isinstance(value, str):
                raise ValueError(f"field {name!r}: expected a timestamp, got {quote(value)}")
            # Exactly the canonical form: a finer or offset spelling of the instant would
            # be read as another text than the one the reader is shown.
            text = value
            value = parse_instant(text)
            if format_canonical_instant(value) != text:
                raise ValueError(
                    f"field {name!r}: {quote(text)} is not a canonical instant "
                    "(UTC, milliseconds, Z: 2026-01-10T09:00:00.000Z)"
                )
        elif name == "birth_date" and value is not None:
            if not isinstance(value, str) or len(value) != 10:
                raise ValueError(f"field 'birth_date': expected an ISO date, got {quote(value)}")
            try:
                value = date.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"field 'birth_date': expected an ISO date, got {quote(value)}"
                ) from None
        fields[name] = value
    return fields
