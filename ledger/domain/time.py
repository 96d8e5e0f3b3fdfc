"""Timestamps as the ledger uses them: timezone-aware UTC, millisecond precision."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

__all__ = ["UTC", "format_instant", "from_millis", "parse_instant", "to_millis", "truncate_ms"]


def truncate_ms(value: datetime) -> datetime:
    """Normalise to aware UTC with millisecond precision (the Avro timestamp-millis grain),
    so JSON and Avro forms of one event compare equal."""
    if value.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def parse_instant(text: str, *, date_means_midnight_utc: bool = False) -> datetime:
    """Parse ISO 8601 with an offset or `Z`. A bare date is accepted only where asked
    (command-line `--at`), meaning 00:00 UTC of that day."""
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, got {type(text).__name__}")
    s = text.strip()
    if date_means_midnight_utc and len(s) == 10:
        d = date.fromisoformat(s)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    try:
        value = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset (add Z or +HH:MM)")
    return truncate_ms(value)


def format_instant(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with `Z`, milliseconds only when non-zero."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_millis(value: datetime) -> int:
    return (value - _EPOCH) // _MS


def from_millis(ms: int) -> datetime:
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
