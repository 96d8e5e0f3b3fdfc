"""The digest document: what `ledger digest` attests about the whole store at one
instant, and the bytes its signature covers (signing is `ledger.app.audit.signing`). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.domain.audit.canonical import (
    CHAIN_ENCODINGS,
    canonical_json,
    format_canonical_instant,
)
from ledger.domain.limits import quote
from ledger.domain.time import parse_instant, truncate_ms
from ledger.errors import LedgerError

__all__ = ["DIGEST_FORMAT", "Digest", "DigestError", "body_bytes"]

DIGEST_FORMAT = "jurisdiction-ledger-digest/1"


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
    and events that is, when it was taken, the hash of every policy version in use, and
    the chain encoding the heads were computed under.
    The signature is not part of it: it is over `body_bytes` (`ledger.app.audit.signing`).

    The document names the chain encoding only when it is not 1 (`"chain_encoding": 2`):
    digests taken before the field existed were under encoding 1 and have no such key, and
    their signed bytes must stay what they were.
    """

    root: str  # hex of the Merkle root
    seq: int
    users: int
    events: int
    recorded_at: datetime
    policies: dict[str, str] = field(default_factory=dict)  # version -> policy_hash
    format: str = DIGEST_FORMAT
    chain_encoding: int = 1

    def __post_init__(self) -> None:
        if self.format != DIGEST_FORMAT:
            raise DigestError(
                f"unsupported digest format {quote(self.format)} (this ledger reads "
                f"{DIGEST_FORMAT})"
            )
        if type(self.chain_encoding) is not int or self.chain_encoding not in CHAIN_ENCODINGS:
            raise _field_error(
                "chain_encoding",
                f"one of {', '.join(map(str, CHAIN_ENCODINGS))}",
                self.chain_encoding,
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
        out: dict[str, Any] = {
            "format": self.format,
            "root": self.root,
            "seq": self.seq,
            "users": self.users,
            "events": self.events,
            "recorded_at": format_canonical_instant(self.recorded_at),
            "policies": dict(sorted(self.policies.items())),
        }
        if self.chain_encoding != 1:
            out["chain_encoding"] = self.chain_encoding
        return out

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
        unknown = sorted(
            str(k) for k in data if k not in names and k not in ("chain_encoding", "signature")
        )
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
        encoding = data.get("chain_encoding", 1)
        if "chain_encoding" in data and encoding == 1:
            # Written out, it would not be in the bytes `to_json` gives back and a
            # signature over them would not check: encoding 1 is said by its absence.
            raise _field_error(
                "chain_encoding", "absent for encoding 1, or a later encoding", encoding
            )
        return cls(
            root=data["root"],
            seq=data["seq"],
            users=data["users"],
            events=data["events"],
            recorded_at=recorded_at,
            policies=data["policies"],
            format=fmt,
            chain_encoding=encoding,
        )


def body_bytes(digest: Digest) -> bytes:
    """The bytes a digest's signature covers: the canonical JSON of `digest.to_json()`."""
    return canonical_json(digest.to_json())
