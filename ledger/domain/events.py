"""The typed event model (docs/rules.md, "Events"): payload classes, validation of flat fields
into an `Event`, and the flat fields of a payload. The JSON and Avro forms are codecs
(`ledger.codecs`) built on `build_event` and `payload_fields`.

Pure: no I/O. Validation never raises anything but `EventError`, whose message says what
is wrong in one line, names the field and quotes at most a short piece of the value
(`limits.quote`); callers add the source position. It is complete: an `Event` it returns
can be stored by every store as it is, so nothing fails later in a batch. Text fields are
non-empty, within the column sizes of `ledger.domain.limits`, free of NUL (PostgreSQL text
cannot hold it) and encodable as UTF-8 (no lone surrogates); instants are within
`limits.EARLIEST_INSTANT` and `limits.LATEST_INSTANT`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, Literal, assert_never, get_args

from ledger.domain import limits
from ledger.domain.limits import quote
from ledger.domain.time import parse_instant, truncate_ms
from ledger.errors import LedgerError

EVIDENCE_KINDS = ("self_declared", "id_verified", "ip_geolocation")
DOCUMENT_KINDS = ("resident_id", "passport", "other")
KNOWN_CHANNELS = ("xiaohongshu-app", "xiaohongshu-web", "rednote-web", "rednote-app")
EventType = Literal[
    "SignedUp", "PhoneChanged", "Relocated", "TermsAccepted", "IdentityVerified", "AccountErased"
]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)

EvidenceKind = Literal["self_declared", "id_verified", "ip_geolocation"]
DocumentKind = Literal["resident_id", "passport", "other"]


class EventError(LedgerError, ValueError):
    """An input that is not a valid event; the message is one line naming the problem."""


@dataclass(frozen=True, slots=True)
class SignedUp:
    phone: str
    channel: str
    birth_date: date | None = None
    locale: str | None = None  # a BCP 47 tag in its conventional case (event schema 2 on)


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


@dataclass(frozen=True, slots=True)
class IdentityVerified:
    """The platform verified the user's identity document (real-name verification; event
    schema 2 on)."""

    document_country: str  # ISO 3166-1 alpha-2 of the issuing authority
    document_kind: DocumentKind


@dataclass(frozen=True, slots=True)
class AccountErased:
    """The user's personal data is to be erased (docs/data-protection.md; event schema 3
    on). Not a fact: applying it deletes the user's personal fields, closes their chain
    and suppresses every later event of theirs."""

    request_id: str  # the operator's reference of the erasure request
    reason: str | None = None  # a note; validated, never stored (it may name the person)


Payload = SignedUp | PhoneChanged | Relocated | TermsAccepted | IdentityVerified | AccountErased
PAYLOAD_CLASSES: dict[EventType, type[Payload]] = {
    "SignedUp": SignedUp,
    "PhoneChanged": PhoneChanged,
    "Relocated": Relocated,
    "TermsAccepted": TermsAccepted,
    "IdentityVerified": IdentityVerified,
    "AccountErased": AccountErased,
}
assert set(PAYLOAD_CLASSES) == set(EVENT_TYPES)


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
        """Valid-time order of one user's events (docs/rules.md): occurred_at, then event_id."""
        return (self.occurred_at, self.event_id)


# --- validation shared by the JSON and Avro decoders -------------------------------------

# Record times are Kafka record timestamps (or stand for them in exports), which are
# milliseconds since this instant and never negative: an earlier one could not be published.
RECORD_TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
_RANGE = f"{limits.EARLIEST_INSTANT.date()} to {limits.LATEST_INSTANT.date()} UTC"


def type_name(value: object) -> str:
    """The JSON name of a value's type, for "must be a string, got …" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_text(name: str, value: object, max_chars: int | None = None) -> str:
    """`value` as a string the stores can hold, or EventError naming `name`."""
    if not isinstance(value, str):
        raise EventError(f"field {name!r} must be a string, got {type_name(value)}")
    if not value:
        raise EventError(f"field {name!r} is empty")
    if max_chars is not None and len(value) > max_chars:
        raise EventError(
            f"field {name!r} is {len(value):,} characters, over the limit of {max_chars:,}: "
            f"{quote(value)}"
        )
    if "\x00" in value:
        raise EventError(f"field {name!r} contains a NUL character: {quote(value)}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise EventError(
                f"field {name!r} contains a lone surrogate, which UTF-8 cannot encode: "
                f"{quote(value)}"
            ) from None
    return value


def _require_str(obj: dict[str, Any], key: str, max_chars: int = 1 << 62) -> str:
    value = obj.get(key)
    # The common case in a few C calls: this runs for every field of every event replayed.
    if (
        type(value) is str
        and value
        and len(value) <= max_chars
        and value.isascii()
        and "\x00" not in value
    ):
        return value
    if value is None:
        raise EventError(f"missing field {key!r}")
    return check_text(key, value, max_chars)


def _event_id(value: str) -> str:
    try:
        # Always 36 characters afterwards (limits.EVENT_ID_CHARS), whichever form came in.
        return str(uuid.UUID(value))
    except ValueError:
        raise EventError(f"event_id {quote(value)} is not a UUID") from None


def _country(value: str, name: str = "country") -> str:
    # Imported on first use: a `ledger history` process reads no events and should not pay
    # for pycountry's database at start (a third of its 150 ms budget).
    import pycountry

    if len(value) != 2 or not value.isupper() or pycountry.countries.get(alpha_2=value) is None:
        raise EventError(f"{name} {quote(value)} is not an ISO 3166-1 alpha-2 code")
    return value


def _evidence(value: str) -> EvidenceKind:
    if value not in EVIDENCE_KINDS:
        raise EventError(f"evidence {quote(value)} is not one of {', '.join(EVIDENCE_KINDS)}")
    return value  # type: ignore[return-value]


def _document_kind(value: str) -> DocumentKind:
    if value not in DOCUMENT_KINDS:
        raise EventError(
            f"document_kind {quote(value)} is not one of {', '.join(DOCUMENT_KINDS)}"
        )
    return value  # type: ignore[return-value]


def _locale(value: Any) -> str | None:
    if value is None:
        return None
    text = check_text("locale", value, limits.LOCALE_CHARS)
    tag = _language_tag(text)
    if tag is None:
        raise EventError(f"locale {quote(text)} is not a BCP 47 language tag (as en-US, zh-CN)")
    return tag


@lru_cache(maxsize=4096)
def _language_tag(text: str) -> str | None:
    """`text` in the conventional case of RFC 5646 (2.1.1: language lower, script title,
    region upper), or None if it is not a valid tag. Only the case changes: tags differing
    in case are the same tag, and a policy comparing `signup_locale` with "en-US" must
    match "en-us". Cached: a stream repeats a few dozen locales."""
    # The registry of subtags comes with langcodes; imported on first use, as pycountry.
    import langcodes

    # langcodes also reads "en_US"; BCP 47 separates subtags with hyphens only.
    if "_" in text or not text.isascii() or not langcodes.tag_is_valid(text):
        return None
    subtags = text.lower().split("-")
    out = subtags[:1]
    for subtag in subtags[1:]:
        if len(out[-1]) == 1:  # after a singleton (extension, private use) all stays lower
            out.extend(subtags[len(out) :])
            break
        if len(subtag) == 4 and subtag.isalpha():
            out.append(subtag.title())
        elif len(subtag) == 2 and subtag.isalpha():
            out.append(subtag.upper())
        else:
            out.append(subtag)
    return "-".join(out)


def _birth_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise EventError(f"birth_date must be an ISO date string, got {type_name(value)}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise EventError(f"birth_date {quote(value)} is not an ISO date (YYYY-MM-DD)") from None


def check_instant(name: str, value: Any) -> datetime:
    """An instant field (ISO 8601 text, or an aware datetime from a decoder) as aware UTC
    with millisecond precision, or EventError naming `name`."""
    if value is None:
        raise EventError(f"missing field {name!r}")
    if not isinstance(value, datetime | str):
        raise EventError(f"{name} must be an ISO 8601 string, got {type_name(value)}")
    try:
        instant = truncate_ms(value) if isinstance(value, datetime) else parse_instant(value)
    except ValueError as exc:
        raise EventError(f"{name}: {exc}") from None
    if not limits.EARLIEST_INSTANT <= instant <= limits.LATEST_INSTANT:
        raise EventError(
            f"{name} {quote(value if isinstance(value, str) else instant.isoformat())} is "
            f"outside the range the ledger keeps, {_RANGE}"
        )
    return instant


def check_recorded_at(value: Any) -> datetime | None:
    """The optional record time an exported event carries (None when absent)."""
    if value is None:
        return None
    recorded_at = check_instant("recorded_at", value)
    if recorded_at < RECORD_TIME_MIN:
        raise EventError(
            f"recorded_at {quote(value if isinstance(value, str) else recorded_at.isoformat())} "
            "is before 1970-01-01T00:00:00Z: record times are Kafka timestamps, which "
            "cannot be negative"
        )
    return recorded_at


def build_event(fields: dict[str, Any]) -> Event:
    """Validate flat fields (JSON form, or Avro envelope flattened) into an `Event`."""
    event_type = _require_str(fields, "type", limits.EVENT_TYPE_CHARS)
    if event_type not in PAYLOAD_CLASSES:
        raise EventError(
            f"unknown event type {quote(event_type)} (this version reads "
            f"{', '.join(EVENT_TYPES)}; a type of a newer version is applied by "
            "`ledger dead-letters retry` once the ledger is upgraded)"
        )
    return Event(
        event_id=_event_id(_require_str(fields, "event_id")),
        user_id=_require_str(fields, "user_id", limits.USER_ID_CHARS),
        occurred_at=check_instant("occurred_at", fields.get("occurred_at")),
        payload=_payload(event_type, fields),
    )


def _payload(event_type: EventType, fields: dict[str, Any]) -> Payload:
    match event_type:
        case "SignedUp":
            return SignedUp(
                phone=_require_str(fields, "phone", limits.PHONE_CHARS),
                channel=_require_str(fields, "channel", limits.CHANNEL_CHARS),
                birth_date=_birth_date(fields.get("birth_date")),
                locale=_locale(fields.get("locale")),
            )
        case "PhoneChanged":
            return PhoneChanged(phone=_require_str(fields, "phone", limits.PHONE_CHARS))
        case "Relocated":
            # Both are checked against closed sets, which fit limits.COUNTRY_CHARS and
            # limits.EVIDENCE_CHARS; their messages name the set.
            return Relocated(
                country=_country(_require_str(fields, "country")),
                evidence=_evidence(_require_str(fields, "evidence")),
            )
        case "TermsAccepted":
            return TermsAccepted(
                tos_version=_require_str(fields, "tos_version", limits.TOS_VERSION_CHARS)
            )
        case "IdentityVerified":
            return IdentityVerified(
                document_country=_country(
                    _require_str(fields, "document_country"), "document_country"
                ),
                document_kind=_document_kind(_require_str(fields, "document_kind")),
            )
        case "AccountErased":
            reason = fields.get("reason")
            return AccountErased(
                request_id=_require_str(fields, "request_id", limits.ERASURE_REQUEST_ID_CHARS),
                reason=None
                if reason is None
                else check_text("reason", reason, limits.ERASURE_REASON_CHARS),
            )
        case _:
            assert_never(event_type)


def payload_fields(payload: Payload) -> dict[str, Any]:
    """The payload's flat fields, as the JSON and Avro forms carry them (dates as objects:
    each codec renders them its own way)."""
    match payload:
        case SignedUp(phone=phone, channel=channel, birth_date=birth_date, locale=locale):
            return {"phone": phone, "channel": channel, "birth_date": birth_date, "locale": locale}
        case PhoneChanged(phone=phone):
            return {"phone": phone}
        case Relocated(country=country, evidence=evidence):
            return {"country": country, "evidence": evidence}
        case TermsAccepted(tos_version=tos_version):
            return {"tos_version": tos_version}
        case IdentityVerified(document_country=country, document_kind=kind):
            return {"document_country": country, "document_kind": kind}
        case AccountErased(request_id=request_id, reason=reason):
            return {"request_id": request_id, "reason": reason}
        case _:
            assert_never(payload)
