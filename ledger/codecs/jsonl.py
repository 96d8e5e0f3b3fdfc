"""The JSON form of events (RULES.md, "Event JSON form"): one object per line, payload
fields flat beside the envelope, an optional `recorded_at` on exported events.

Decoding never raises anything but `EventError`; callers add the source position.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from ledger.domain.events import Event, EventError, build_event, payload_fields
from ledger.domain.time import format_instant, parse_instant


def event_to_json_obj(event: Event, recorded_at: datetime | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "occurred_at": format_instant(event.occurred_at),
        "type": event.type,
    }
    for name, value in payload_fields(event.payload).items():
        if value is None:
            continue  # optional fields are left out rather than written as null
        obj[name] = value.isoformat() if isinstance(value, date) else value
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
