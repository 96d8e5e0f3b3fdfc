"""The typed event model and its JSON Lines form (RULES.md, "Events" and "Event JSON form").

Pure: no I/O. Decoding never raises anything but `EventError`, whose message says what is
wrong in one line; callers add the source position.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import pycountry

from ledger.timeutil import format_instant, parse_instant, truncate_ms

EVIDENCE_KINDS = ("self_declared", "id_verified", "ip_geolocation")
KNOWN_CHANNELS = ("xiaohongshu-app", "xiaohongshu-web", "rednote-web", "rednote-app")
EVENT_TYPES = ("SignedUp", "PhoneChanged", "Relocated", "TermsAccepted")

EvidenceKind = Literal["self_declared", "id_verified", "ip_geolocation"]


class EventError(ValueError):
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
PAYLOAD_CLASSES: dict[str, type[Payload]] = {
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
    def type(self) -> str:
        return type(self.payload).__name__

    @property
    def order_key(self) -> tuple[datetime, str]:
        """Valid-time order of one user's events (RULES.md): occurred_at, then event_id."""
        return (self.occurred_at, self.event_id)


@dataclass(frozen=True, slots=True)
class Delivered:
    """An event as a source delivered it: where it came from and its record time
    (None = the source has none; the caller supplies one)."""

    event: Event
    position: str
    recorded_at: datetime | None = None


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
    payload: Payload
    if event_type == "SignedUp":
        payload = SignedUp(
            phone=_require_str(fields, "phone"),
            channel=_require_str(fields, "channel"),
            birth_date=_birth_date(fields.get("birth_date")),
        )
    elif event_type == "PhoneChanged":
        payload = PhoneChanged(phone=_require_str(fields, "phone"))
    elif event_type == "Relocated":
        payload = Relocated(
            country=_country(_require_str(fields, "country")),
            evidence=_evidence(_require_str(fields, "evidence")),
        )
    else:
        payload = TermsAccepted(tos_version=_require_str(fields, "tos_version"))
    return Event(
        event_id=_event_id(_require_str(fields, "event_id")),
        user_id=_require_str(fields, "user_id"),
        occurred_at=_occurred_at(fields.get("occurred_at")),
        payload=payload,
    )


def payload_fields(payload: Payload) -> dict[str, Any]:
    if isinstance(payload, SignedUp):
        out: dict[str, Any] = {"phone": payload.phone, "channel": payload.channel}
        if payload.birth_date is not None:
            out["birth_date"] = payload.birth_date.isoformat()
        return out
    if isinstance(payload, PhoneChanged):
        return {"phone": payload.phone}
    if isinstance(payload, Relocated):
        return {"country": payload.country, "evidence": payload.evidence}
    return {"tos_version": payload.tos_version}


# --- JSON Lines form -----------------------------------------------------------------------


def event_to_json_obj(event: Event, recorded_at: datetime | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "occurred_at": format_instant(event.occurred_at),
        "type": event.type,
    }
    obj.update(payload_fields(event.payload))
    if recorded_at is not None:
        obj["recorded_at"] = format_instant(recorded_at)
    return obj


def event_to_json_line(event: Event, recorded_at: datetime | None = None) -> str:
    return json.dumps(event_to_json_obj(event, recorded_at), ensure_ascii=False)


def event_from_json_line(line: str | bytes) -> tuple[Event, datetime | None]:
    """Parse one JSON line; returns the event and its `recorded_at` if the line carries one."""
    try:
        # Decoding first: json.loads on bytes sniffs the encoding of every line.
        obj = json.loads(line.decode() if isinstance(line, bytes) else line)
    except json.JSONDecodeError as exc:
        raise EventError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except UnicodeDecodeError:
        raise EventError("not valid UTF-8 text") from None
    if not isinstance(obj, dict):
        raise EventError(f"expected a JSON object, got {type(obj).__name__}")
    recorded_at = None
    if obj.get("recorded_at") is not None:
        try:
            recorded_at = parse_instant(obj["recorded_at"])
        except ValueError as exc:
            raise EventError(f"recorded_at: {exc}") from None
    return build_event(obj), recorded_at
