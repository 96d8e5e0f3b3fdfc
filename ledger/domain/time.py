"""Timestamps as the ledger uses them: timezone-aware UTC, millisecond precision.

Every function here raises only `ValueError` for input it cannot represent, including an
instant whose UTC offset pushes it outside `datetime`'s years 1 to 9999
(`9999-12-31T23:59:59-05:00`), which `astimezone` would report as OverflowError.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from ledger.domain.limits import quote

__all__ = ["UTC", "format_instant", "from_millis", "parse_instant", "to_millis", "truncate_ms"]

# The ISO 8601 forms Python parses are under 50 characters
# ("2026-01-10T09:00:00.123456+05:30:00.123456"); anything longer is refused unparsed.
_MAX_INSTANT_CHARS = 64
_RANGE = "years 1 to 9999 in UTC"


def truncate_ms(value: datetime) -> datetime:
    """Normalise to aware UTC with millisecond precision (the Avro timestamp-millis grain),
    so JSON and Avro forms of one event compare equal."""
    if value.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp is out of range once converted to UTC ({_RANGE})") from None
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def parse_instant(text: str, *, date_means_midnight_utc: bool = False) -> datetime:
    """Parse ISO 8601 with an offset or `Z`. A bare date is accepted only where asked
    (command-line `--at`), meaning 00:00 UTC of that day."""
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, got {type(text).__name__}")
    s = text.strip()
    if len(s) > _MAX_INSTANT_CHARS:
        raise ValueError(f"not an ISO 8601 timestamp: {quote(text)}")
    if date_means_midnight_utc and len(s) == 10:
        try:
            d = date.fromisoformat(s)
        except ValueError:
            raise ValueError(f"not an ISO 8601 date: {quote(text)}") from None
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    try:
        # ValueError covers UnicodeEncodeError too: the C parser encodes first, and a lone
        # surrogate cannot be encoded.
        value = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {quote(text)}") from None
    if value.tzinfo is None:
        raise ValueError(f"timestamp {quote(text)} has no UTC offset (add Z or +HH:MM)")
    try:
        return truncate_ms(value)
    except ValueError:
        raise ValueError(
            f"timestamp {quote(text)} is out of range once converted to UTC ({_RANGE})"
        ) from None


def format_instant(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with `Z`, milliseconds only when non-zero. Years are always four
    digits (`strftime("%Y")` writes year 100 as "100", which no parser reads back)."""
    if value is None:
        return None
    value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds") + "Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_millis(value: datetime) -> int:
    return (value - _EPOCH) // _MS


def from_millis(ms: int) -> datetime:
    """The instant `ms` milliseconds after 1970-01-01T00:00:00Z; ValueError when it is
    outside years 1 to 9999 (an Avro timestamp-millis or a Kafka timestamp can be any long)."""
    seconds, millis = divmod(ms, 1000)
    try:
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
    except (OverflowError, OSError, ValueError):
        raise ValueError(
            f"{ms} milliseconds since 1970-01-01T00:00:00Z is out of range ({_RANGE})"
        ) from None
