"""The typed event model (RULES.md, "Events"): payload classes, validation of flat fields
into an `Event`, and the flat fields of a payload. The JSON and Avro forms are codecs
(`ledger.codecs`) built on `build_event` and `payload_fields`.

Pure: no I/O. Validation never raises anything but `EventError`, whose message says what
is wrong in one line; callers add the source position.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, assert_never, cast, get_args

import pycountry

from ledger.domain.time import parse_instant, truncate_ms
from ledger.errors import LedgerError

EVIDENCE_KINDS = ("self_declared", "id_verified", "ip_geolocation")
KNOWN_CHANNELS = ("xiaohongshu-app", "xiaohongshu-web", "rednote-web", "rednote-app")
EventType = Literal["SignedUp", "PhoneChanged", "Relocated", "TermsAccepted"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)

EvidenceKind = Literal["self_declared", "id_verified", "ip_geolocation"]


class EventError(LedgerError, ValueError):
    """An input that is not a valid event; the message is one line naming the problem."""


@dataclass(frozen=True, slots=True)
class SignedUp:
    phone: str
    channel: str
    birth_date: date | None = None


@dataclass(frozen=True, slots=True)
class PhoneChanged:
    phone: str


@dataclass(frozen=True, slots=True)
class Relocated:
    country: str
    evidence: EvidenceKind


@dataclass(frozen=True, slots=True)
class TermsAccepted:
    tos_version: str


Payload = SignedUp | PhoneChanged | Relocated | TermsAccepted
PAYLOAD_CLASSES: dict[EventType, type[Payload]] = {
    "SignedUp": SignedUp,
    "PhoneChanged": PhoneChanged,
    "Relocated": Relocated,
    "TermsAccepted": TermsAccepted,
}


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    user_id: str
    occurred_at: datetime
    payload: Payload

    @property
    def type(self) -> EventType:
        return type(self.payload).__name__  # type: ignore[return-value]

    @property
    def order_key(self) -> tuple[datetime, str]:
        """Valid-time order of one user's events (RULES.md): occurred_at, then event_id."""
        return (self.occurred_at, self.event_id)


# --- validation shared by the JSON and Avro decoders -------------------------------------


def _require_str(obj: dict[str, Any], key: str) -> str:
    if key not in obj or obj[key] is None:
        raise EventError(f"missing field {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise EventError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value:
        raise EventError(f"field {key!r} is empty")
    return value


def _event_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise EventError(f"event_id {value!r} is not a UUID") from None


def _country(value: str) -> str:
    if len(value) != 2 or not value.isupper() or pycountry.countries.get(alpha_2=value) is None:
        raise EventError(f"country {value!r} is not an ISO 3166-1 alpha-2 code")
    return value


def _evidence(value: str) -> EvidenceKind:
    if value not in EVIDENCE_KINDS:
        raise EventError(f"evidence {value!r} is not one of {', '.join(EVIDENCE_KINDS)}")
    return value  # type: ignore[return-value]


def _birth_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise EventError(f"birth_date must be an ISO date string, got {type(value).__name__}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise EventError(f"birth_date {value!r} is not an ISO date (YYYY-MM-DD)") from None


def _occurred_at(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise EventError("occurred_at has no UTC offset")
        return truncate_ms(value)
    if not isinstance(value, str):
        raise EventError(f"occurred_at must be an ISO 8601 string, got {type(value).__name__}")
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise EventError(f"occurred_at: {exc}") from None


def build_event(fields: dict[str, Any]) -> Event:
    """Validate flat fields (JSON form, or Avro envelope flattened) into an `Event`."""
    event_type = _require_str(fields, "type")
    if event_type not in PAYLOAD_CLASSES:
        raise EventError(f"unknown event type {event_type!r} (expected {', '.join(EVENT_TYPES)})")
    return Event(
        event_id=_event_id(_require_str(fields, "event_id")),
        user_id=_require_str(fields, "user_id"),
        occurred_at=_occurred_at(fields.get("occurred_at")),
        payload=_payload(cast(EventType, event_type), fields),
    )


def _payload(event_type: EventType, fields: dict[str, Any]) -> Payload:
    match event_type:
        case "SignedUp":
            return SignedUp(
                phone=_require_str(fields, "phone"),
                channel=_require_str(fields, "channel"),
                birth_date=_birth_date(fields.get("birth_date")),
            )
        case "PhoneChanged":
            return PhoneChanged(phone=_require_str(fields, "phone"))
        case "Relocated":
            return Relocated(
                country=_country(_require_str(fields, "country")),
                evidence=_evidence(_require_str(fields, "evidence")),
            )
        case "TermsAccepted":
            return TermsAccepted(tos_version=_require_str(fields, "tos_version"))
        case _:
            assert_never(event_type)


def payload_fields(payload: Payload) -> dict[str, Any]:
    """The payload's flat fields, as the JSON and Avro forms carry them (dates as objects:
    each codec renders them its own way)."""
    match payload:
        case SignedUp(phone=phone, channel=channel, birth_date=birth_date):
            return {"phone": phone, "channel": channel, "birth_date": birth_date}
        case PhoneChanged(phone=phone):
            return {"phone": phone}
        case Relocated(country=country, evidence=evidence):
            return {"country": country, "evidence": evidence}
        case TermsAccepted(tos_version=tos_version):
            return {"tos_version": tos_version}
        case _:
            assert_never(payload)
