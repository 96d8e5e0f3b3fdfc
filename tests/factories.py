"""Events for the tests: one factory per event type, each returning the JSON object a
producer writes (one line of a `.jsonl` file, what `ledger replay` and `ledger publish`
read), with sensible defaults and every field overridable by keyword. A keyword that is not
a parameter is added to the object (or replaces the field of that name), so record times,
birth dates and hostile values go the same way:

    signup(1)                                   # u-1 signs up with a mainland number
    signup(2, "u-2", phone=PHONE_HK, channel="rednote-app")
    signup(3, "u-9", occurred_at="soon", recorded_at="2026-06-01T00:00:00Z")
    terms_accepted(4, version="tos-2099")       # a terms version no policy defines
    identity_verified(5, kind="passport", country="US")

`n` numbers the event id (`eid(n)`). `line(obj)` is the object's JSON line, `event(obj)`
the typed `Event` it decodes to, `avro(obj)` the Avro single-object encoding a Kafka record
carries.
"""

from __future__ import annotations

import json
from typing import Any

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line
from ledger.domain.events import Event
from tests.support import eid

__all__ = [
    "CHANNEL",
    "PHONE_CA",
    "PHONE_CN",
    "PHONE_HK",
    "PHONE_UK",
    "RESIDENCY_TERMS",
    "avro",
    "eid",
    "event",
    "identity_verified",
    "line",
    "phone_change",
    "relocation",
    "signup",
    "terms_accepted",
]

PHONE_CN = "+8613912345678"  # a valid mainland-China mobile number
PHONE_CA = "+16045550123"  # Canada
PHONE_HK = "+85251234567"  # Hong Kong
PHONE_UK = "+447911123456"  # the United Kingdom
CHANNEL = "xiaohongshu-app"
RESIDENCY_TERMS = "tos-2026-03-residency"  # bindable from 2026-04-01


def _event(n: int, user: str, at: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    # Later keys win and keep the earlier one's place: `event_id=...` in `fields` replaces
    # the numbered id where it stands.
    return {"event_id": eid(n), "user_id": user, "occurred_at": at, "type": kind, **fields}


def signup(
    n: int,
    user: str = "u-1",
    *,
    at: str = "2026-01-10T09:00:00Z",
    phone: Any = PHONE_CN,
    channel: Any = CHANNEL,
    **extra: Any,
) -> dict[str, Any]:
    """`SignedUp`: by default a mainland number on the Xiaohongshu app, 10 January 2026
    (under the cutover terms)."""
    return _event(n, user, at, "SignedUp", {"phone": phone, "channel": channel, **extra})


def phone_change(
    n: int,
    user: str = "u-1",
    *,
    at: str = "2026-02-01T00:00:00Z",
    phone: Any = PHONE_CA,
    **extra: Any,
) -> dict[str, Any]:
    """`PhoneChanged`: by default to a Canadian number, 1 February 2026."""
    return _event(n, user, at, "PhoneChanged", {"phone": phone, **extra})


def relocation(
    n: int,
    user: str = "u-1",
    *,
    at: str = "2026-05-01T00:00:00Z",
    country: Any = "CN",
    evidence: Any = "self_declared",
    **extra: Any,
) -> dict[str, Any]:
    """`Relocated`: by default a self-declared move to mainland China, 1 May 2026."""
    return _event(n, user, at, "Relocated", {"country": country, "evidence": evidence, **extra})


def terms_accepted(
    n: int,
    user: str = "u-1",
    *,
    at: str = "2026-04-01T00:00:00Z",
    version: Any = RESIDENCY_TERMS,
    **extra: Any,
) -> dict[str, Any]:
    """`TermsAccepted`: by default the residency terms on the day they take effect."""
    return _event(n, user, at, "TermsAccepted", {"tos_version": version, **extra})


def identity_verified(
    n: int,
    user: str = "u-1",
    *,
    at: str = "2026-01-12T00:00:00Z",
    country: Any = "CN",
    kind: Any = "resident_id",
    **extra: Any,
) -> dict[str, Any]:
    """`IdentityVerified` (event schema version 2): by default a mainland resident
    identity card, two days after the default signup."""
    fields = {"document_country": country, "document_kind": kind, **extra}
    return _event(n, user, at, "IdentityVerified", fields)


def line(obj: dict[str, Any]) -> str:
    """The object as one JSON line (without the newline)."""
    return json.dumps(obj)


def event(obj: dict[str, Any]) -> Event:
    """The typed event the object decodes to (its record time, if any, dropped)."""
    decoded, _ = event_from_json_line(line(obj))
    return decoded


def avro(obj: dict[str, Any]) -> bytes:
    """The Avro single-object encoding of the object's event, as a Kafka record's value."""
    return AvroCodec().encode(event(obj))
