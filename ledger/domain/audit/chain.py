"""The per-user hash chain: each event's link is SHA-256 of the previous link and the
event's canonical bytes (`ledger.domain.audit.canonical.canonical_event`). Pure.

Links are computed one event at a time as events are applied, so batch boundaries never
show in a chain; `ledger verify` recomputes them the same way from the stored fields.
"""

from __future__ import annotations

import hashlib

__all__ = ["GENESIS", "next_link"]

# The link before a user's first event.
GENESIS: bytes = bytes(32)


def next_link(prev: bytes, canonical: bytes) -> bytes:
    """SHA-256(prev ‖ canonical): the link after `prev` for an event's canonical bytes."""
    if len(prev) != 32:
        raise ValueError(f"a previous link is 32 bytes, got {len(prev)}")
    return hashlib.sha256(bytes(prev) + canonical).digest()
