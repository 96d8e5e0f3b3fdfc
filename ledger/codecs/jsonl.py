"""The JSON form of events (docs/rules.md, "Event JSON form"): one object per line, payload
fields flat beside the envelope, an optional `recorded_at` on exported events.

Decoding never raises anything but `EventError`; callers add the source position. The
form is flat, so a line nested deeper than `MAX_DEPTH` is refused before `json` would
recurse into it (RecursionError), and an integer too long for `int()` (ValueError) is read
as an opaque integer: no field is a number, so it only ever makes a type error.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Any

from ledger.domain.events import (
    Event,
    EventError,
    build_event,
    check_recorded_at,
    payload_fields,
    type_name,
)
from ledger.domain.limits import quote
from ledger.domain.time import format_instant

# Far below the interpreter's recursion limit wherever the decoder is called from; a flat
# event has depth 1, so this only decides which error a deeper line gets.
MAX_DEPTH = 32
# Digits of the longest JSON integer converted with int(); Python refuses over 4,300.
_INT_DIGITS = 1000
# A JSON string (escapes included), one bracket, or a quote that opens no complete string,
# for measuring depth without parsing.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}"]', re.DOTALL)


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


class _LongInt(int):
    """A JSON integer with more digits than `_INT_DIGITS`, kept as a zero: no event field
    is a number, so only its type is ever read."""


def _parse_int(text: str) -> int:
    return int(text) if len(text) <= _INT_DIGITS else _LongInt()


# One decoder for every line: json.loads would build a new one per call for parse_int.
_DECODER = json.JSONDecoder(parse_int=_parse_int)


def _deeper_than(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit`. Cheap for the lines that
    matter: it stops as soon as the limit is passed."""
    depth = 0
    for match in _TOKENS.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
        elif match.end() - match.start() == 1:
            return False  # an unterminated string: not JSON at all, let the parser say so
    return False


def event_from_json_line(line: str | bytes) -> tuple[Event, datetime | None]:
    """Parse one JSON line; returns the event and its `recorded_at` if the line carries one."""
    try:
        # Decoding first: json.loads on bytes sniffs the encoding of every line.
        text = line.decode() if isinstance(line, bytes) else line
    except UnicodeDecodeError:
        raise EventError("not valid UTF-8 text") from None
    # Brackets in strings count too: this is only a bound, and a cheap one (two C scans).
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_DEPTH and _deeper_than(text, MAX_DEPTH):
        raise EventError(f"JSON nested more than {MAX_DEPTH} levels deep (events are flat)")
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise EventError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # not reachable after the depth check; kept as a last guard
        raise EventError(f"JSON nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(obj, dict):
        raise EventError(f"expected a JSON object, got {type_name(obj)}")
    # With one bracket, the object's own, no value can be nested (the usual line).
    for name, value in obj.items() if brackets > 1 else ():
        if isinstance(value, dict | list):
            raise EventError(
                f"field {quote(name)} is a JSON {type_name(value)}: the event form is flat"
            )
    return build_event(obj), check_recorded_at(obj.get("recorded_at"))
