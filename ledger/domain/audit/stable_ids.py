"""The stable identities the audit trail records: a policy's content hash, pinned by every
history row it decided, and a history row's decision id. Pure."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from ledger.domain.audit.canonical import canonical_json
from ledger.domain.policy import Policy

__all__ = ["decision_id", "policy_hash"]

_POLICY_FORMAT = "jurisdiction-ledger-policy/1"


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
