"""The pure building blocks of the tamper-evident audit trail (AUDIT.md): canonical bytes of
stored events, per-user hash chains, a Merkle root over the users' chain heads, policy
content hashes, stable decision ids and the digest document.

Pure: no I/O, no clock. The store and the CLI feed these with stored rows and write the
results; signing the digest is `ledger.app.audit.signing`.

Canonical JSON is the standard library's with every option fixed (sorted keys, no
whitespace, UTF-8, no NaN), extended with timestamps and dates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from ledger.domain.facts import OBSERVED_FIELDS
from ledger.domain.limits import quote
from ledger.domain.policy import Policy
from ledger.domain.time import parse_instant, truncate_ms
from ledger.errors import LedgerError

__all__ = [
    "DIGEST_FORMAT",
    "EMPTY_ROOT",
    "EVENT_CHAIN_FIELDS",
    "GENESIS",
    "Digest",
    "DigestError",
    "MerkleBuilder",
    "body_bytes",
    "canonical_event",
    "canonical_json",
    "decision_id",
    "format_canonical_instant",
    "next_link",
    "policy_hash",
]

# The link before a user's first event.
GENESIS: bytes = bytes(32)

# The stored columns of `events` (ledger/store/schema.py) that the chain covers. `source`
# and `position` are left out on purpose: they say where a copy of the event was read, and
# the chain must not depend on which source or consumer applied it. `seq` is the user's own
# application count (1, 2, ...), which is fixed by the user's event order alone; a global
# sequence across users would make the chain depend on how users interleaved.
EVENT_CHAIN_FIELDS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "occurred_at",
    "recorded_at",
    "type",
    *OBSERVED_FIELDS,
    "seq",
)

_EVENT_FIELD_SET = frozenset(EVENT_CHAIN_FIELDS)

DIGEST_FORMAT = "jurisdiction-ledger-digest/1"
# RFC 6962: the hash of an empty tree is the hash of the empty string.
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
_POLICY_FORMAT = "jurisdiction-ledger-policy/1"


# --- canonical JSON --------------------------------------------------------------------

def format_canonical_instant(value: datetime) -> str:
    """An aware instant as canonical text: UTC, always milliseconds, `Z`
    ("2026-01-10T09:00:00.000Z"). Naive and sub-millisecond instants are refused
    (ValueError): the ledger stores millisecond instants, so anything finer was not written
    by it, and rounding it away would hide an edit."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} has no UTC offset")
    if value.tzinfo is not UTC:
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"datetime {value.isoformat()} is out of range in UTC") from None
    if value.microsecond % 1000:
        raise ValueError(f"datetime {value.isoformat()} is finer than milliseconds")
    # UTC's isoformat ends in "+00:00"; slicing it off is cheaper than a naive copy.
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):  # before date: a datetime is a date
        return format_canonical_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    # bytes included: they have no one obvious text form, so the caller picks one.
    raise ValueError(f"{type(value).__name__} value {quote(value)} has no canonical form")


_ENCODE = json.JSONEncoder(
    sort_keys=True,
    ensure_ascii=False,
    separators=(",", ":"),
    allow_nan=False,
    default=_json_default,
).encode


def canonical_json(value: Any) -> bytes:
    """Deterministic UTF-8 JSON: sorted keys, no whitespace, non-ASCII kept as is, aware
    datetimes as `format_canonical_instant`, dates as ISO dates, tuples as arrays.
    ValueError for anything else (bytes, NaN, non-string keys, naive datetimes)."""
    try:
        text = _ENCODE(value)
    except TypeError as exc:  # a key that is not a string
        raise ValueError(str(exc)) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text holds a lone surrogate, which is not UTF-8") from None


# The type each chained column must hold. A row holding something else (a timestamp read
# back as text, a date as a datetime, 1 for true) would hash differently on another
# backend, so it is refused instead of producing a chain only one store can reproduce.
_TEXT = (str,)
_OPTIONAL_TEXT = (str, type(None))
_EVENT_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "event_id": _TEXT,
    "user_id": _TEXT,
    "occurred_at": (datetime,),
    "recorded_at": (datetime,),
    "type": _TEXT,
    "phone_region": _OPTIONAL_TEXT,
    "phone_valid": (bool, type(None)),
    "phone_hash": _OPTIONAL_TEXT,
    "channel": _OPTIONAL_TEXT,
    "birth_date": (date, type(None)),
    "country": _OPTIONAL_TEXT,
    "evidence": _OPTIONAL_TEXT,
    "tos_version": _OPTIONAL_TEXT,
    "seq": (int,),
}
assert set(_EVENT_FIELD_TYPES) == _EVENT_FIELD_SET


def _fits(name: str, value: Any) -> bool:
    kind = type(value)
    allowed = _EVENT_FIELD_TYPES[name]
    if kind in allowed:
        return True
    # Subclasses: bool is an int and a datetime is a date, and neither may stand in.
    return (
        isinstance(value, allowed)
        and not isinstance(value, bool)
        and not (isinstance(value, datetime) and datetime not in allowed)
    )


def canonical_event(fields: Mapping[str, Any]) -> bytes:
    """The canonical bytes of one stored event row: exactly the `EVENT_CHAIN_FIELDS`,
    each of its column's type (ValueError naming the missing, extra or ill-typed ones)."""
    keys = fields.keys()
    if keys != _EVENT_FIELD_SET:
        given = set(keys)
        missing = sorted(_EVENT_FIELD_SET - given)
        extra = sorted(map(str, given - _EVENT_FIELD_SET))
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(quote(k) for k in extra)}")
        raise ValueError(f"event row fields: {'; '.join(parts)}")
    for name, value in fields.items():
        if not _fits(name, value):
            raise ValueError(f"event row field {name!r}: unexpected {type(value).__name__}")
    try:
        return canonical_json(dict(fields))
    except ValueError as exc:
        raise ValueError(f"event row: {exc}") from None


# --- hash chains -----------------------------------------------------------------------


def next_link(prev: bytes, canonical: bytes) -> bytes:
    """SHA-256(prev ‖ canonical): the link after `prev` for an event's canonical bytes."""
    if len(prev) != 32:
        raise ValueError(f"a previous link is 32 bytes, got {len(prev)}")
    return hashlib.sha256(bytes(prev) + canonical).digest()


# --- Merkle root over (user_id, head, length) -----------------------------------------


def _leaf_hash(user_id: str, head: bytes, length: int) -> bytes:
    return hashlib.sha256(b"\x00" + canonical_json([user_id, head.hex(), length])).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleBuilder:
    """The RFC 6962 Merkle Tree Hash of the users' leaves, built as they stream past in
    user_id order, holding only O(log n) hashes.

    The state is the roots of the perfect subtrees seen so far, largest first (one per set
    bit of the leaf count). RFC 6962 splits n leaves at the largest power of two below n,
    so its tree is exactly those subtrees joined right to left, which is what `root` does.

    User ids must arrive strictly increasing in Python's string order (code points). A
    store that sorts by a database collation must sort by code point too (`COLLATE "C"` on
    PostgreSQL): a different order is refused instead of giving another root.
    """

    __slots__ = ("_count", "_last", "_stack")

    def __init__(self) -> None:
        self._stack: list[tuple[bytes, int]] = []  # (subtree root, leaf count)
        self._last: str | None = None
        self._count = 0

    @property
    def count(self) -> int:
        """How many leaves were added."""
        return self._count

    def add(self, user_id: str, head: bytes, length: int) -> None:
        if not isinstance(user_id, str):
            raise ValueError(f"user id {quote(user_id)} is not a string")
        if self._last is not None and not user_id > self._last:
            raise ValueError(
                f"Merkle leaves must be sorted by user id, strictly increasing: "
                f"{quote(user_id)} came after {quote(self._last)}"
            )
        if isinstance(head, bytearray | memoryview):
            head = bytes(head)  # as some drivers hand back a stored link
        if not isinstance(head, bytes) or len(head) != 32:
            raise ValueError(f"chain head of {quote(user_id)} is not 32 bytes")
        if type(length) is not int or length < 0:
            raise ValueError(f"chain length of {quote(user_id)} is not a count: {length!r}")
        self._last = user_id
        self._count += 1
        node, size = _leaf_hash(user_id, head, length), 1
        stack = self._stack
        while stack and stack[-1][1] == size:
            left, _ = stack.pop()
            node, size = _node_hash(left, node), size * 2
        stack.append((node, size))

    def root(self) -> bytes:
        """The root over the leaves added so far (`EMPTY_ROOT` for none); more may follow."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][0]
        for left, _ in reversed(self._stack[:-1]):
            node = _node_hash(left, node)
        return node


# --- policies and decisions -----------------------------------------------------------


def _condition_value(op: str, value: Any) -> Any:
    # `in` / `not_in` test membership of a set (`frozenset(value)` in the policy), so order
    # and repeats in the file are not semantic: they are normalised away, and reordering a
    # list does not demand a new policy version.
    if op in ("in", "not_in") and isinstance(value, list | tuple):
        unique = {canonical_json(_policy_scalar(item)): item for item in value}
        return [_policy_scalar(unique[k]) for k in sorted(unique)]
    return _policy_scalar(value)


def _policy_scalar(value: Any) -> Any:
    # A policy file may write a native TOML datetime finer than milliseconds, which the
    # parser keeps as is; its full precision is part of what the policy decides, so it is
    # written with microseconds instead of being refused as a stored instant would be.
    if isinstance(value, datetime) and value.tzinfo is not None and value.microsecond % 1000:
        return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    return value


def policy_hash(policy: Policy) -> str:
    """Hex SHA-256 of a policy's canonical parsed form: version, effective_from, bindable,
    title and each rule (id, assign, reason, conditions in order). Comments, whitespace,
    key order, the file's name and how an instant is written (offset or `Z`) do not change
    it; any change to what the policy decides does. The file's invariants and examples are
    tests of the policy, not part of it, and are not covered."""
    form = {
        "format": _POLICY_FORMAT,
        "version": policy.version,
        "effective_from": policy.effective_from,
        "bindable": policy.bindable,
        "title": policy.title,
        "rules": [
            {
                "id": rule.id,
                "assign": rule.assign,
                "reason": rule.reason,
                "when": [
                    {"fact": c.fact, "op": c.op, "value": _condition_value(c.op, c.value)}
                    for c in rule.when
                ],
            }
            for rule in policy.rules
        ],
    }
    return hashlib.sha256(canonical_json(form)).hexdigest()


def decision_id(user_id: str, valid_from: datetime, recorded_at: datetime) -> str:
    """A history row's stable id: the first 32 hex characters (128 bits) of SHA-256 over the
    canonical JSON object {"recorded_at", "user_id", "valid_from"}. The same row gets the
    same id in every export and on every store; instants are compared in UTC."""
    body = {"user_id": user_id, "valid_from": valid_from, "recorded_at": recorded_at}
    return hashlib.sha256(canonical_json(body)).hexdigest()[:32]


# --- the digest document --------------------------------------------------------------


class DigestError(LedgerError, ValueError):
    """A digest document that is malformed, unsigned when it must be, or whose signature
    does not check; the message is one line."""


_HEX = frozenset("0123456789abcdef")


def _is_hash_hex(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _field_error(name: str, expected: str, value: object) -> DigestError:
    return DigestError(f"digest field {name!r}: expected {expected}, got {quote(value)}")


@dataclass(frozen=True)
class Digest:
    """What `ledger digest` attests: the Merkle root over every user's (user_id, chain
    head, chain length), the highest global application `seq` it covers, how many users
    and events that is, when it was taken, and the hash of every policy version in use.
    The signature is not part of it: it is over `body_bytes` (`ledger.app.audit.signing`).
    """

    root: str  # hex of the Merkle root
    seq: int
    users: int
    events: int
    recorded_at: datetime
    policies: dict[str, str] = field(default_factory=dict)  # version -> policy_hash
    format: str = DIGEST_FORMAT

    def __post_init__(self) -> None:
        if self.format != DIGEST_FORMAT:
            raise DigestError(
                f"unsupported digest format {quote(self.format)} (this ledger reads "
                f"{DIGEST_FORMAT})"
            )
        if not _is_hash_hex(self.root):
            raise _field_error("root", "64 lowercase hex digits", self.root)
        for name in ("seq", "users", "events"):
            if not _is_count(getattr(self, name)):
                raise _field_error(name, "a non-negative integer", getattr(self, name))
        if not isinstance(self.recorded_at, datetime) or self.recorded_at.tzinfo is None:
            raise _field_error("recorded_at", "a timestamp with a UTC offset", self.recorded_at)
        if not isinstance(self.policies, dict):
            raise _field_error("policies", "an object of version -> hash", self.policies)
        for version, digest in self.policies.items():
            if not isinstance(version, str) or not version:
                raise _field_error("policies", "non-empty version names", version)
            if not _is_hash_hex(digest):
                raise _field_error(f"policies.{version}", "64 lowercase hex digits", digest)
        # The document carries milliseconds, so a finer instant could not round-trip.
        try:
            recorded_at = truncate_ms(self.recorded_at)
        except ValueError:
            raise _field_error("recorded_at", "an instant in range", self.recorded_at) from None
        object.__setattr__(self, "recorded_at", recorded_at)
        # A copy, so that the caller's dict changing later cannot change a frozen digest.
        object.__setattr__(self, "policies", dict(self.policies))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "root": self.root,
            "seq": self.seq,
            "users": self.users,
            "events": self.events,
            "recorded_at": format_canonical_instant(self.recorded_at),
            "policies": dict(sorted(self.policies.items())),
        }

    @classmethod
    def from_json(cls, data: Any) -> Digest:
        """The digest in a parsed document. Strict: a missing, unknown or wrongly typed field
        is a DigestError naming it. A `signature` key is the signed document's envelope and
        is ignored here (`ledger.app.audit.signing.check` checks it)."""
        if not isinstance(data, dict):
            raise DigestError(f"a digest is a JSON object, got {type(data).__name__}")
        names = ("format", "root", "seq", "users", "events", "recorded_at", "policies")
        for name in names:
            if name not in data:
                raise DigestError(f"digest field {name!r} is missing")
        unknown = sorted(str(k) for k in data if k not in names and k != "signature")
        if unknown:
            raise DigestError(f"digest has unknown field {quote(unknown[0])}")
        fmt = data["format"]
        if not isinstance(fmt, str):
            raise _field_error("format", "a string", fmt)
        raw_time = data["recorded_at"]
        if not isinstance(raw_time, str):
            raise _field_error("recorded_at", "an ISO 8601 timestamp string", raw_time)
        try:
            recorded_at = parse_instant(raw_time)
        except ValueError:
            raise _field_error("recorded_at", "an ISO 8601 timestamp", raw_time) from None
        return cls(
            root=data["root"],
            seq=data["seq"],
            users=data["users"],
            events=data["events"],
            recorded_at=recorded_at,
            policies=data["policies"],
            format=fmt,
        )


def body_bytes(digest: Digest) -> bytes:
    """The bytes a digest's signature covers: the canonical JSON of `digest.to_json()`."""
    return canonical_json(digest.to_json())
