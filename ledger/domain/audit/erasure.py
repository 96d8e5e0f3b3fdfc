"""What an erasure commits to (docs/audit.md, "Erasure"): the bytes of the erasure event in
its user's hash chain, the hash of the erased events' kept columns, and the hash of the
retained history skeleton. Pure.

Erasing a user deletes every personal field of their events and the event ids, so the
links of those events can no longer be recomputed from fields. What is kept of each (its
`seq`, record time and stored link) is hashed into the erasure event, whose own link is
SHA-256(the last erased link ‖ these bytes): a later edit of any kept value, or of the
retained skeleton, no longer matches the erasure's link, and the chain's head (which
digests sign) is that link.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from struct import Struct

__all__ = [
    "ERASURE_FORMAT",
    "ErasureRecord",
    "SkeletonRow",
    "erased_events_hash",
    "erasure_bytes",
    "skeleton_hash",
]

# The first byte of an erasure's bytes: neither chain encoding 1 (JSON, "{") nor 2 (0x02)
# starts with it, so no event row's bytes can be taken for an erasure's.
ERASURE_FORMAT = b"\x45\x01"  # "E", version 1

_I64 = Struct(">q").pack
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _millis(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _text(value: str) -> bytes:
    data = value.encode()
    return Struct(">I").pack(len(data)) + data


def _optional_instant(value: datetime | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + _I64(_millis(value))


def erased_events_hash(events: Iterable[tuple[int, datetime, bytes]]) -> bytes:
    """SHA-256 over what is kept of each erased event, in seq order: its seq, record time
    (milliseconds) and stored link."""
    h = hashlib.sha256()
    for seq, recorded_at, link in events:
        h.update(_I64(seq) + _I64(_millis(recorded_at)) + bytes(link))
    return h.digest()


@dataclass(frozen=True, slots=True)
class SkeletonRow:
    """What `LEDGER_RETAIN_ASSIGNMENTS=1` keeps of one history row of an erased user."""

    valid_from: datetime
    valid_to: datetime | None
    assignment: str
    policy: str
    rule: str
    recorded_at: datetime
    superseded_at: datetime | None

    def key(self) -> tuple[datetime, datetime]:
        return (self.valid_from, self.recorded_at)


def skeleton_hash(rows: Iterable[SkeletonRow]) -> bytes:
    """SHA-256 of the retained skeleton: every row in (valid_from, recorded_at) order, each
    field length-prefixed or fixed-width, so one byte string is one skeleton only."""
    h = hashlib.sha256(b"skeleton/1")
    for r in sorted(rows, key=SkeletonRow.key):
        h.update(
            _I64(_millis(r.valid_from))
            + _optional_instant(r.valid_to)
            + _text(r.assignment)
            + _text(r.policy)
            + _text(r.rule)
            + _I64(_millis(r.recorded_at))
            + _optional_instant(r.superseded_at)
        )
    return h.digest()


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    """The erasure event as its user's chain covers it."""

    event_id: str
    user_id: str
    occurred_at: datetime
    recorded_at: datetime
    request_id: str
    seq: int  # the erasure's own place in the chain: the erased events are 1 .. seq - 1
    erased_events: bytes  # `erased_events_hash` of events 1 .. seq - 1
    history_rows: int  # history rows the erasure found (deleted, or kept as the skeleton)
    retained: bytes | None  # `skeleton_hash` of what was kept; None: nothing was


def erasure_bytes(r: ErasureRecord) -> bytes:
    """The bytes the erasure's link hashes."""
    return b"".join(
        (
            ERASURE_FORMAT,
            _text(r.event_id),
            _text(r.user_id),
            _I64(_millis(r.occurred_at)),
            _I64(_millis(r.recorded_at)),
            _text(r.request_id),
            _I64(r.seq),
            r.erased_events,
            _I64(r.history_rows),
            b"\x00" if r.retained is None else b"\x01" + r.retained,
        )
    )
