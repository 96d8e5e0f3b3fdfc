"""The facts the fold derives per user (RULES.md, "Facts"), and the PII-reduced form of
events the fold reads ("observations"). Pure: phone parsing is a library call, no I/O."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, fields
from datetime import date, datetime
from functools import lru_cache
from typing import Any, assert_never

import phonenumbers

from ledger.domain.events import Event, EventType, PhoneChanged, Relocated, SignedUp, TermsAccepted
from ledger.domain.time import format_instant

RESIDENCE_EVIDENCE = frozenset({"self_declared", "id_verified"})


@dataclass(frozen=True, slots=True)
class PhoneFacts:
    """What the ledger keeps of a phone number: never the number itself."""

    region: str | None
    valid: bool
    digest: str


@lru_cache(maxsize=65536)
def _parse_phone(raw: str) -> tuple[str | None, bool, str]:
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None, False, raw.strip()
    canonical = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return (
        phonenumbers.region_code_for_number(number),
        phonenumbers.is_valid_number(number),
        canonical,
    )


def reduce_phone(raw: str, key: bytes) -> PhoneFacts:
    region, valid, canonical = _parse_phone(raw)
    # Keyed, so the digest links one number across events without being reversible by
    # enumerating the (small) space of phone numbers.
    digest = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()[:32]
    return PhoneFacts(region=region, valid=valid, digest=digest)


@dataclass(frozen=True, slots=True)
class ObservedSignup:
    phone: PhoneFacts
    channel: str
    birth_date: date | None = None


@dataclass(frozen=True, slots=True)
class ObservedPhoneChange:
    phone: PhoneFacts


# Relocations and terms acceptances carry nothing personal: the fold reads them as they are.
ObservedPayload = ObservedSignup | ObservedPhoneChange | Relocated | TermsAccepted


@dataclass(frozen=True, slots=True)
class Observation:
    """An event as the fold sees it: the envelope and a payload whose phone is reduced to
    PhoneFacts."""

    event_id: str
    user_id: str
    occurred_at: datetime
    payload: ObservedPayload

    @property
    def order_key(self) -> tuple[datetime, str]:
        return (self.occurred_at, self.event_id)

    @property
    def type(self) -> EventType:
        return observed_type(self.payload)

    @property
    def phone(self) -> PhoneFacts | None:
        p = self.payload
        return p.phone if isinstance(p, ObservedSignup | ObservedPhoneChange) else None


def observed_type(payload: ObservedPayload) -> EventType:
    match payload:
        case ObservedSignup():
            return "SignedUp"
        case ObservedPhoneChange():
            return "PhoneChanged"
        case Relocated():
            return "Relocated"
        case TermsAccepted():
            return "TermsAccepted"
        case _:
            assert_never(payload)


def observe(event: Event, key: bytes) -> Observation:
    return Observation(event.event_id, event.user_id, event.occurred_at, _reduce(event, key))


def _reduce(event: Event, key: bytes) -> ObservedPayload:
    p = event.payload
    match p:
        case SignedUp(phone=phone, channel=channel, birth_date=birth_date):
            return ObservedSignup(reduce_phone(phone, key), channel, birth_date)
        case PhoneChanged(phone=phone):
            return ObservedPhoneChange(reduce_phone(phone, key))
        case Relocated() | TermsAccepted():
            return p
        case _:
            assert_never(p)


@dataclass(frozen=True, slots=True)
class Facts:
    signup_at: datetime | None = None
    channel: str | None = None
    birth_date: date | None = None
    signup_phone_region: str | None = None
    signup_phone_valid: bool | None = None
    current_phone_region: str | None = None
    current_phone_valid: bool | None = None
    residence: str | None = None
    ip_country: str | None = None
    tos_version: str | None = None


FACT_TYPES: dict[str, type] = {
    "signup_at": datetime,
    "channel": str,
    "birth_date": date,
    "signup_phone_region": str,
    "signup_phone_valid": bool,
    "current_phone_region": str,
    "current_phone_valid": bool,
    "residence": str,
    "ip_country": str,
    "tos_version": str,
}
FACT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Facts))
assert set(FACT_NAMES) == set(FACT_TYPES)


def fact_to_json(value: Any) -> Any:
    """Facts in history rows and `--json` output: timestamps and dates as ISO text."""
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
