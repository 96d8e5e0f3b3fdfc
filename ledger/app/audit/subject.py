"""`ledger subject verify`: check a subject export (docs/privacy.md) with no store.

Five checks, each a line of the report, in this order:
- format: the document's `format` is one this ledger reads;
- chain: the links recomputed from the events (from the all-zero link, SHA-256 of the
  previous link and the event's bytes in the proof's chain encoding) are the links stated,
  their last is the stated head, their number the stated length, with seq 1..n and no gap;
- audit_path: the stated leaf is (user_id, head, length), and the RFC 6962 audit path from
  its hash leads to the digest's root in a tree of the digest's size (`users`);
- signature: the digest's signature holds under the key given (HMAC-SHA256 from
  LEDGER_AUDIT_KEY, or an Ed25519 public key); an unsigned digest fails, as nothing then
  vouches for the root;
- history: the history rows are exactly what folding the events through the policies they
  name gives (the fold of `ledger verify`, `Checker`), and each named policy hashes as the
  shipped file of its version (and as the digest pinned it).

A document that is not JSON, or lacks a section or field the checks read, is refused in
one line (`MalformedExport`) instead of checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ledger.app.audit.checker import Checker
from ledger.app.audit.report import VerifyReport
from ledger.app.audit.signing import ALG_NONE, check, signature_alg
from ledger.app.ingest.plan import policy_hashes
from ledger.app.ports import StoredEvent, StoredHistory
from ledger.domain.audit.canonical import CHAIN_ENCODINGS, canonical_event_as
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.domain.audit.digest import Digest, DigestError
from ledger.domain.audit.merkle import leaf_hash, root_from_path
from ledger.domain.audit.stable_ids import decision_id
from ledger.domain.audit.subject import SUBJECT_FORMAT, event_fields
from ledger.domain.facts import stored_observation
from ledger.domain.limits import quote
from ledger.domain.policy import PolicySet
from ledger.domain.projection import HistoryRow
from ledger.domain.time import parse_instant
from ledger.domain.timeline import Entry
from ledger.errors import LedgerError

__all__ = [
    "CHECKS",
    "MAX_EXPORT_BYTES",
    "MalformedExport",
    "SubjectCheck",
    "SubjectReport",
    "parse_export",
    "verify_export",
]

CHECKS = ("format", "chain", "audit_path", "signature", "history")
# A subject export holds one user's events: far below this. Anything larger is refused
# unread rather than parsed into memory.
MAX_EXPORT_BYTES = 64 << 20
_HEX = frozenset("0123456789abcdef")

# The sections and proof fields the checks read, with the JSON type each must have.
_TOP: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "user_id": str,
    "generated_at": str,
    "events": list,
    "history": list,
    "explanation": list,
    "policies": dict,
    "proof": dict,
}
_PROOF: dict[str, type | tuple[type, ...]] = {
    "chain_encoding": int,
    "links": list,
    "head": str,
    "length": int,
    "digest": dict,
    "leaf": dict,
    "leaf_index": int,
    "tree_size": int,
    "siblings": list,
}


class MalformedExport(LedgerError):
    """Not a subject export at all (not JSON, a section missing): one line."""


@dataclass(frozen=True)
class SubjectCheck:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class SubjectReport:
    user_id: str
    checks: list[SubjectCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
        }


def parse_export(raw: bytes) -> dict[str, Any]:
    """The document in `raw`, its sections present with the right JSON types;
    MalformedExport (one line) otherwise."""
    if len(raw) > MAX_EXPORT_BYTES:
        raise MalformedExport(
            f"not a subject export ({len(raw):,} bytes, more than {MAX_EXPORT_BYTES:,})"
        )
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedExport("not a subject export (not UTF-8 text)") from None
    except RecursionError:
        raise MalformedExport("not a subject export (JSON nested too deep)") from None
    except json.JSONDecodeError as exc:
        raise MalformedExport(
            f"not a subject export (not JSON: {exc.msg} at line {exc.lineno})"
        ) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise MalformedExport(f"not a subject export ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise MalformedExport(
            f"not a subject export (a JSON {type(document).__name__}, not an object)"
        )
    _require(document, _TOP, "")
    _require(document["proof"], _PROOF, "proof.")
    return document


def _require(obj: dict[str, Any], spec: dict[str, type | tuple[type, ...]], where: str) -> None:
    for name, kind in spec.items():
        if name not in obj:
            raise MalformedExport(f"not a subject export: field {where}{name!r} is missing")
        value = obj[name]
        # A boolean is an int to Python, never to JSON.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MalformedExport(
                f"not a subject export: field {where}{name!r} is not a JSON "
                f"{_json_kind(kind)} ({quote(value)})"
            )


def _json_kind(kind: type | tuple[type, ...]) -> str:
    return {str: "string", int: "integer", list: "array", dict: "object"}.get(
        kind if isinstance(kind, type) else str, "value"
    )


def _hash(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX:
        raise ValueError(f"{what} is not 64 lowercase hex digits: {quote(value)}")
    return bytes.fromhex(value)


# --- the checks ---------------------------------------------------------------------------


@dataclass
class _Chain:
    """What the chain check found, for the checks after it."""

    head: bytes | None = None  # recomputed from the events
    events: list[StoredEvent] | None = None  # None: some event unreadable


def verify_export(
    document: dict[str, Any],
    policies: PolicySet,
    *,
    hmac_key: bytes | None = None,
    ed25519_public_pem: bytes | None = None,
) -> SubjectReport:
    """Check a parsed subject export (`parse_export`) against the policies shipped
    (`policies`) and the keys given; every check is run and reported."""
    user_id = document["user_id"]
    report = SubjectReport(user_id)
    fmt = document["format"]
    if fmt != SUBJECT_FORMAT:
        report.checks.append(
            SubjectCheck(
                "format", False, f"unknown format {quote(fmt)} (this ledger reads {SUBJECT_FORMAT})"
            )
        )
        for name in CHECKS[1:]:
            report.checks.append(SubjectCheck(name, False, "not checked: unknown format"))
        return report
    report.checks.append(SubjectCheck("format", True, SUBJECT_FORMAT))
    chain = _Chain()
    report.checks.append(_guarded("chain", lambda: _check_chain(document, chain)))
    report.checks.append(_guarded("audit_path", lambda: _check_path(document, chain)))
    report.checks.append(
        _guarded("signature", lambda: _check_signature(document, hmac_key, ed25519_public_pem))
    )
    report.checks.append(_guarded("history", lambda: _check_history(document, chain, policies)))
    return report


def _guarded(name: str, run: Any) -> SubjectCheck:
    # Whatever a hostile document holds, a check fails with a reason; it never escapes.
    try:
        ok, detail = run()
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return SubjectCheck(name, ok, detail)


def _check_chain(document: dict[str, Any], chain: _Chain) -> tuple[bool, str]:
    proof = document["proof"]
    user_id = document["user_id"]
    encoding = proof["chain_encoding"]
    if encoding not in CHAIN_ENCODINGS:
        return False, f"unknown chain encoding {quote(encoding)}"
    events, links = document["events"], proof["links"]
    if not events:
        return False, "the export has no events"
    prev = GENESIS
    parsed: list[StoredEvent] = []
    for i, data in enumerate(events):
        try:
            fields = event_fields(data)
            canonical = canonical_event_as(encoding, fields)
        except ValueError as exc:
            return False, f"event #{i + 1}: {exc}"
        seq = fields["seq"]
        if fields["user_id"] != user_id:
            return False, f"event seq {seq}: of user {quote(fields['user_id'])}, not the subject"
        if seq != i + 1:
            return False, (
                f"event #{i + 1} has seq {seq}, expected {i + 1}: an event was dropped, "
                "added or moved"
            )
        prev = next_link(prev, canonical)
        if i >= len(links):
            return False, f"{len(events)} events, {len(links)} links stated"
        if _hash(links[i], f"link {i + 1}") != prev:
            return False, (
                f"event seq {seq}: its link recomputes to {prev.hex()[:16]}…, the export "
                f"states {str(links[i])[:16]}…: the event was edited"
            )
        parsed.append(_stored(fields, data, prev))
    chain.head = prev
    chain.events = parsed
    if len(links) != len(events):
        return False, f"{len(events)} events, {len(links)} links stated"
    if _hash(proof["head"], "the head") != prev:
        return (
            False,
            f"the links end at {prev.hex()[:16]}…, the stated head is {proof['head'][:16]}…",
        )
    if proof["length"] != len(events):
        return False, f"{len(events)} events, the stated length is {proof['length']}"
    return (
        True,
        f"{len(events)} events, seq 1..{len(events)}, links recompute to head {prev.hex()[:16]}…",
    )


def _stored(fields: dict[str, Any], data: dict[str, Any], link: bytes) -> StoredEvent:
    try:
        observation, problem = stored_observation(SimpleNamespace(**fields)), None
    except (ValueError, TypeError) as exc:
        observation, problem = None, str(exc)
    app_seq = data.get("app_seq")
    return StoredEvent(
        user_id=fields["user_id"],
        seq=fields["seq"],
        app_seq=app_seq if type(app_seq) is int else 0,
        link=link,
        event_id=fields["event_id"],
        recorded_at=fields["recorded_at"],
        fields=fields,
        observation=observation,
        problem=problem,
    )


def _check_path(document: dict[str, Any], chain: _Chain) -> tuple[bool, str]:
    proof = document["proof"]
    user_id = document["user_id"]
    try:
        digest = Digest.from_json(proof["digest"])
    except DigestError as exc:
        return False, f"the digest: {exc}"
    leaf = proof["leaf"]
    head = _hash(leaf.get("head"), "the leaf's head")
    length = leaf.get("length")
    if leaf.get("user_id") != user_id:
        return False, f"the leaf is user {quote(leaf.get('user_id'))}'s, not the subject's"
    if head.hex() != proof["head"] or length != proof["length"]:
        return False, "the leaf's head and length are not the chain's"
    if chain.head is not None and head != chain.head:
        return False, "the leaf's head is not the head the events recompute to"
    if type(length) is not int or length < 0:
        return False, f"the leaf's length is not a count: {quote(length)}"
    if digest.chain_encoding != proof["chain_encoding"]:
        return False, (
            f"the digest was taken under chain encoding {digest.chain_encoding}, the links "
            f"are under {proof['chain_encoding']}"
        )
    size, index = proof["tree_size"], proof["leaf_index"]
    if size != digest.users:
        return False, f"the path is for a tree of {size} leaves, the digest's has {digest.users}"
    siblings = [_hash(s, f"sibling {i}") for i, s in enumerate(proof["siblings"])]
    root = root_from_path(leaf_hash(user_id, head, length), index, size, siblings)
    if root is None:
        return False, (
            f"the path does not fit leaf {index} of a tree of {size} ({len(siblings)} siblings)"
        )
    if root.hex() != digest.root:
        return False, (
            f"the path leads to {root.hex()[:16]}…, the digest's root is {digest.root[:16]}…"
        )
    return True, (
        f"leaf {index} of {size} leads along {len(siblings)} siblings to the root "
        f"{digest.root[:16]}… of the digest of seq {digest.seq}"
    )


def _check_signature(
    document: dict[str, Any], hmac_key: bytes | None, public_pem: bytes | None
) -> tuple[bool, str]:
    signed = document["proof"]["digest"]
    try:
        alg = signature_alg(signed)
        check(signed, hmac_key=hmac_key, ed25519_public_pem=public_pem)
    except DigestError as exc:
        return False, str(exc)
    if alg == ALG_NONE:
        return False, (
            "unsigned: nothing vouches that the digest is the one the ledger took "
            "(an unsigned digest proves nothing to a reader)"
        )
    return True, f"{alg} signature holds"


def _check_history(
    document: dict[str, Any], chain: _Chain, policies: PolicySet
) -> tuple[bool, str]:
    user_id = document["user_id"]
    named: dict[str, Any] = document["policies"]
    shipped = policy_hashes(policies)
    for version, hashed in sorted(named.items()):
        if version not in shipped:
            return False, f"policy {quote(version)} is not among the shipped policies"
        if hashed != shipped[version]:
            return False, (
                f"policy {version}: the export says hash {str(hashed)[:12]}…, the shipped "
                f"file hashes to {shipped[version][:12]}…"
            )
    digest = document["proof"]["digest"]
    pinned = digest.get("policies") if isinstance(digest, dict) else None
    if isinstance(pinned, dict):
        for version, hashed in sorted(named.items()):
            if version in pinned and pinned[version] != hashed:
                return False, f"policy {version}: the digest pinned another hash"
    if chain.events is None:
        return False, "not checked: the events cannot be read (see the chain check)"
    unreadable = next((ev for ev in chain.events if ev.observation is None), None)
    if unreadable is not None:
        return False, f"event seq {unreadable.seq}: {unreadable.problem}"
    rows = [_history(i, h, user_id) for i, h in enumerate(document["history"], 1)]
    used = {s.policy for s in rows}
    if used - named.keys():
        return False, f"the history names policy {sorted(used - named.keys())[0]}, not listed"
    report = VerifyReport()
    checker = Checker(policies, report, document["proof"]["chain_encoding"])
    checker.pins = dict(named)
    checker.check_history(user_id, chain.events, rows)
    if report.problems:
        first = report.problems[0]
        more = f" (and {report.problem_count - 1} more)" if report.problem_count > 1 else ""
        return False, f"{first.kind}: {first.detail}{more}"
    believed = sum(1 for s in rows if s.row is not None and s.row.superseded_at is None)
    return True, (
        f"{len(rows)} rows ({believed} believed) re-derived from the events under "
        f"{', '.join(sorted(named)) or 'no policy'}"
    )


def _history(number: int, h: Any, user_id: str) -> StoredHistory:
    """History row `number` of the export (its decision-log form) as a stored row."""
    where = f"history row #{number}"
    if not isinstance(h, dict):
        raise ValueError(f"{where} is not an object")
    if h.get("user_id") != user_id:
        raise ValueError(f"{where} is of user {quote(h.get('user_id'))}, not the subject")
    valid_from = parse_instant(h["valid_from"])
    recorded_at = parse_instant(h["recorded_at"])
    valid_to = None if h["valid_to"] is None else parse_instant(h["valid_to"])
    superseded = None if h["superseded_at"] is None else parse_instant(h["superseded_at"])
    if h.get("decision_id") != decision_id(user_id, valid_from, recorded_at):
        raise ValueError(f"{where}: its decision_id is not the one its user and times give")
    facts, evidence = h["input"], h["evidence"]
    if not isinstance(facts, dict) or not isinstance(evidence, list):
        raise ValueError(f"{where}: input must be an object and evidence an array")
    for text in ("assignment", "policy", "rule", "reason", "policy_hash"):
        if not isinstance(h[text], str):
            raise ValueError(f"{where}: {text} is not a string")
    entry = Entry(
        valid_from=valid_from,
        valid_to=valid_to,
        assignment=h["assignment"],
        policy=h["policy"],
        rule=h["rule"],
        reason=h["reason"],
        facts=tuple(sorted(facts.items())),
        evidence=tuple(e["event_id"] for e in evidence),
    )
    return StoredHistory(
        id=number,
        user_id=user_id,
        valid_from=valid_from,
        recorded_at=recorded_at,
        policy=h["policy"],
        policy_hash=h["policy_hash"],
        row=HistoryRow(entry, recorded_at, superseded),
    )
