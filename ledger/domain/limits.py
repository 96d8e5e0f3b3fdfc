"""How much of each event field the ledger can hold, defined once: the store's column sizes
(`ledger/store/schema.py`) are these constants, and the event model rejects a longer value
so that one record the store cannot hold is dead-lettered instead of failing its batch.

Lengths are in characters (code points), as PostgreSQL counts `varchar(n)`.
"""

from __future__ import annotations

from datetime import UTC, datetime

EVENT_ID_CHARS = 36  # a UUID in canonical form; the event model normalises every id to it
USER_ID_CHARS = 200
EVENT_TYPE_CHARS = 20
CHANNEL_CHARS = 100
COUNTRY_CHARS = 2  # ISO 3166-1 alpha-2
EVIDENCE_CHARS = 20
DOCUMENT_KIND_CHARS = 20  # IdentityVerified.document_kind, a closed set
# A BCP 47 language tag (SignedUp.locale). RFC 5646 (4.4.1) asks for room for 35 characters
# for tags without extensions; extensions and private use can make a valid tag longer.
LOCALE_CHARS = 64
TOS_VERSION_CHARS = 100
# Phones are never stored (only region, validity and a keyed hash), but every distinct one
# is parsed and cached (`ledger.domain.facts`): this bounds that cache. E.164 needs 16.
PHONE_CHARS = 100
# AccountErased (event schema 3): the operator's reference of the request, and a note.
ERASURE_REQUEST_ID_CHARS = 100
ERASURE_REASON_CHARS = 500

# Instants an event may carry: Python's range less a day at each end, so that every store
# and driver can hand them back in any time zone. psycopg converts a timestamptz to the
# session's zone: 9999-12-31T23:00Z is year 10000 in Shanghai, 0001-01-01T00:00Z year 0 in
# New York, and reading either back would fail every later batch of that user.
EARLIEST_INSTANT = datetime(1, 1, 2, tzinfo=UTC)
LATEST_INSTANT = datetime(9999, 12, 30, 23, 59, 59, 999_000, tzinfo=UTC)

# A reason quotes an input value through `quote`, at most this many characters of it: the
# value may be a megabyte, and reasons end up in tables, topics and terminals.
QUOTE_CHARS = 60


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """A short repr of an input value for a one-line reason. `repr` escapes NUL, newlines
    and lone surrogates, so the result is always storable UTF-8 text."""
    if isinstance(value, str | bytes) and len(value) > limit:
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}… ({len(value):,} {unit})"
    text = repr(value)
    return text if len(text) <= 2 * limit else f"{text[:limit]}…"
