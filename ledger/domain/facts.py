"""The facts the fold derives per user (docs/rules.md, "Facts"), and the PII-reduced form of
events the fold reads ("observations"). Pure: phone parsing is a library call, no I/O."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from functools import lru_cache
from typing import Any, assert_never

from ledger.domain.events import (
    AccountErased,
    Event,
    EventType,
    IdentityVerified,
    PhoneChanged,
    Relocated,
    SignedUp,
    TermsAccepted,
)
from ledger.domain.time import format_instant

RESIDENCE_EVIDENCE = frozenset({"self_declared", "id_verified"})


@dataclass(frozen=True, slots=True)
class PhoneFacts:
    """What the ledger keeps of a phone number: never the number itself."""

    region: str | None
    valid: bool
    digest: str


# (region, valid, E.164 form or the stripped input if unparseable) of a raw number.
ParsedPhone = tuple[str | None, bool, str]


# Bounded well below a long replay's distinct numbers (a number mostly recurs within one
# user's few events, which arrive close together): a bigger cache only grows the process
# for as long as the stream is new, about 300 bytes per number.
@lru_cache(maxsize=16384)
def _parse_phone(raw: str) -> ParsedPhone:
    # Imported on first use, as pycountry in `events`: readers of the store never parse one.
    import phonenumbers

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


def parse_phones(raws: Iterable[str]) -> dict[str, ParsedPhone]:
    """Parse numbers ahead of their events (in another process: parsing is a tenth of a
    replay's time and needs nothing but the numbers)."""
    return {raw: _parse_phone(raw) for raw in raws}


def event_phones(event: Event) -> tuple[str, ...]:
    """The raw phone numbers an event carries."""
    p = event.payload
    return (p.phone,) if isinstance(p, SignedUp | PhoneChanged) else ()


# What the phone key's fingerprint is the MAC of: a fixed label, never a phone number.
PHONE_KEY_FINGERPRINT_LABEL = b"jurisdiction-ledger phone-key fingerprint v1"


@lru_cache(maxsize=8)
def phone_key_fingerprint(key: bytes) -> str:
    """Which key a store's phone hashes were made with, without the key: HMAC-SHA256 of a
    fixed label under it (hex). Two keys give different fingerprints, and the fingerprint
    gives the key away no more than the stored phone hashes already do."""
    return hmac.new(key, PHONE_KEY_FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def reduce_phone(
    raw: str, key: bytes, parsed: Mapping[str, ParsedPhone] | None = None
) -> PhoneFacts:
    known = parsed.get(raw) if parsed else None
    region, valid, canonical = known or _parse_phone(raw)
    # Keyed, so the digest links one number across events without being reversible by
    # enumerating the (small) space of phone numbers.
    digest = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()[:32]
    return PhoneFacts(region=region, valid=valid, digest=digest)


@dataclass(frozen=True, slots=True)
class ObservedSignup:
    phone: PhoneFacts
    channel: str
    birth_date: date | None = None
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class ObservedPhoneChange:
    phone: PhoneFacts


# Relocations, terms acceptances and identity verifications carry no number to reduce: the
# fold reads them as they are.
# An erasure carries nothing personal either; the planner applies it, never the fold.
ObservedPayload = (
    ObservedSignup
    | ObservedPhoneChange
    | Relocated
    | TermsAccepted
    | IdentityVerified
    | AccountErased
)


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


def stored_observation(row: Any) -> Observation:
    """The observation of a stored event row: any object with the event's envelope and
    OBSERVED_FIELDS as attributes (a database row, or an event of a subject export read
    back without a store); its `type` names the payload's kind. ValueError for a type the
    ledger does not store."""
    phone = (
        PhoneFacts(row.phone_region, bool(row.phone_valid), row.phone_hash)
        if row.phone_hash is not None
        else None
    )
    payload: ObservedPayload
    if row.type == "SignedUp" and phone is not None:
        payload = ObservedSignup(phone, row.channel, row.birth_date, row.locale)
    elif row.type == "PhoneChanged" and phone is not None:
        payload = ObservedPhoneChange(phone)
    elif row.type == "Relocated":
        payload = Relocated(row.country, row.evidence)
    elif row.type == "TermsAccepted":
        payload = TermsAccepted(row.tos_version)
    elif row.type == "IdentityVerified":
        payload = IdentityVerified(row.document_country, row.document_kind)
    else:
        raise ValueError(f"stored event {row.event_id} has an unreadable type {row.type!r}")
    return Observation(row.event_id, row.user_id, row.occurred_at, payload)


# The payload of an observation as flat fields: what the store keeps of an event besides
# its envelope, and what the audit chain hashes.
OBSERVED_FIELDS = (
    "phone_region",
    "phone_valid",
    "phone_hash",
    "channel",
    "birth_date",
    "country",
    "evidence",
    "tos_version",
    # event schema version 2
    "locale",
    "document_country",
    "document_kind",
)


def observed_fields(payload: ObservedPayload) -> tuple[Any, ...]:
    """The payload's values in OBSERVED_FIELDS order (None where the kind has no such
    field). Tuples written out: this runs for every event stored."""
    match payload:
        case ObservedSignup(phone=phone, channel=channel, birth_date=birth_date, locale=locale):
            return (
                *(phone.region, phone.valid, phone.digest, channel, birth_date),
                *(None, None, None, locale, None, None),
            )
        case ObservedPhoneChange(phone=phone):
            return (phone.region, phone.valid, phone.digest) + (None,) * 8
        case Relocated(country=country, evidence=evidence):
            return (None,) * 5 + (country, evidence) + (None,) * 4
        case TermsAccepted(tos_version=tos_version):
            return (None,) * 7 + (tos_version, None, None, None)
        case IdentityVerified(document_country=country, document_kind=kind):
            return (None,) * 9 + (country, kind)
        case AccountErased():
            # Its own fields are the erasure record's (`ledger.domain.audit.erasure`).
            return (None,) * 11
        case _:
            assert_never(payload)


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
        case IdentityVerified():
            return "IdentityVerified"
        case AccountErased():
            return "AccountErased"
        case _:
            assert_never(payload)


def observe(
    event: Event, key: bytes, parsed: Mapping[str, ParsedPhone] | None = None
) -> Observation:
    """The event as the fold sees it; `parsed` holds numbers parsed ahead (parse_phones)."""
    return Observation(
        event.event_id, event.user_id, event.occurred_at, _reduce(event, key, parsed)
    )


def _reduce(
    event: Event, key: bytes, parsed: Mapping[str, ParsedPhone] | None
) -> ObservedPayload:
    p = event.payload
    match p:
        case SignedUp(phone=phone, channel=channel, birth_date=birth_date, locale=locale):
            return ObservedSignup(reduce_phone(phone, key, parsed), channel, birth_date, locale)
        case PhoneChanged(phone=phone):
            return ObservedPhoneChange(reduce_phone(phone, key, parsed))
        case Relocated() | TermsAccepted() | IdentityVerified() | AccountErased():
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
    id_document_country: str | None = None
    id_document_kind: str | None = None
    signup_locale: str | None = None


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
    "id_document_country": str,
    "id_document_kind": str,
    "signup_locale": str,
}
FACT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Facts))
assert set(FACT_NAMES) == set(FACT_TYPES)


def facts_set_by(o: Observation) -> dict[str, Any]:
    """The facts an observation sets when the fold applies it (docs/rules.md, "Facts"): the
    one place that says which event kind derives which fact. A SignedUp sets the signup
    facts only as the user's first signup (the fold decides which that is); a
    TermsAccepted sets none of its own: it changes which policy governs (`tos_version` is
    derived from the bindings)."""
    p = o.payload
    match p:
        case ObservedSignup(phone=phone, channel=channel, birth_date=birth_date, locale=locale):
            return {
                "signup_at": o.occurred_at,
                "channel": channel,
                "birth_date": birth_date,
                "signup_locale": locale,
                "signup_phone_region": phone.region,
                "signup_phone_valid": phone.valid,
                "current_phone_region": phone.region,
                "current_phone_valid": phone.valid,
            }
        case ObservedPhoneChange(phone=phone):
            return {"current_phone_region": phone.region, "current_phone_valid": phone.valid}
        case Relocated(country=country, evidence=kind):
            return {"residence" if kind in RESIDENCE_EVIDENCE else "ip_country": country}
        case IdentityVerified(document_country=country, document_kind=kind):
            return {"id_document_country": country, "id_document_kind": kind}
        case TermsAccepted() | AccountErased():
            return {}
        case _:
            assert_never(p)


def fact_to_json(value: Any) -> Any:
    """Facts in history rows and `--json` output: timestamps and dates as ISO text."""
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
