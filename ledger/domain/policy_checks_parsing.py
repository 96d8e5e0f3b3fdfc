"""Reading the `[[invariants]]` and `[[examples]]` of a policy file from its parsed TOML,
and checking that what they name exists in the policy set. Pure.

The file format is described in `ledger.domain.policy_checks`. Every problem is collected,
naming the file and the invariant or example, instead of stopping at the first: a policy
author fixes them all in one go.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from ledger.domain import limits
from ledger.domain.events import Event, EventError
from ledger.domain.events import build_event as _build_event
from ledger.domain.facts import FACT_TYPES
from ledger.domain.policy import PolicySet, event_problem, parse_conditions
from ledger.domain.policy_checks import (
    INVARIANT_KINDS,
    STICKY_FACTS,
    Example,
    Invariant,
    PolicyChecks,
)
from ledger.domain.rulebooks import ASSIGNMENTS
from ledger.domain.time import parse_instant, truncate_ms

_INVARIANT_KEYS = {
    "sticky": {"id", "kind", "description", "facts"},
    "implies": {"id", "kind", "description", "when", "assign", "rule"},
    "never": {"id", "kind", "description", "when", "assign"},
}
_EXAMPLE_KEYS = {"id", "description", "events", "at", "expect", "rule", "policy"}


def _tables(data: Mapping[str, Any], key: str, source: str, problems: list[str]) -> list[Any]:
    raw = data.get(key, [])
    if not isinstance(raw, list):
        problems.append(f"{source}: '{key}' must be an array of tables ([[{key}]])")
        return []
    return raw


def _text(raw: Mapping[str, Any], key: str, where: str, problems: list[str]) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: '{key}' must be a non-empty string, got {value!r}")
        return None
    return value


def _unknown_keys(
    raw: Mapping[str, Any], allowed: set[str], where: str, problems: list[str]
) -> None:
    # A misspelt key ("asign") would otherwise make a check silently weaker.
    for key in sorted(set(raw) - allowed):
        problems.append(f"{where}: unknown key {key!r} (expected {', '.join(sorted(allowed))})")


def _assignment(raw: Mapping[str, Any], key: str, where: str, problems: list[str]) -> str:
    value = raw.get(key)
    if value not in ASSIGNMENTS:
        problems.append(
            f"{where}: {key} = {value!r} is not a rulebook (expected one of "
            f"{', '.join(ASSIGNMENTS)})"
        )
    return str(value)


def parse_checks(
    data: Mapping[str, Any], source: str, version: str, problems: list[str]
) -> PolicyChecks:
    """The `[[invariants]]` and `[[examples]]` of one policy file; every problem is appended
    with the file and the invariant or example id. References to rules are checked later,
    by `check_references`, once every file of the set is read."""
    ids: set[str] = set()
    invariants: list[Invariant] = []
    for index, raw in enumerate(_tables(data, "invariants", source, problems), start=1):
        inv = _parse_invariant(raw, index, source, version, ids, problems)
        if inv is not None:
            invariants.append(inv)
    examples: list[Example] = []
    for index, raw in enumerate(_tables(data, "examples", source, problems), start=1):
        ex = _parse_example(raw, index, source, version, ids, problems)
        if ex is not None:
            examples.append(ex)
    return PolicyChecks(tuple(invariants), tuple(examples))


def _check_id(
    raw: Mapping[str, Any], what: str, index: int, source: str, ids: set[str], problems: list[str]
) -> tuple[str, str]:
    ident = raw.get("id")
    where = f"{source}: {what} {ident if isinstance(ident, str) and ident else f'#{index}'}"
    if not isinstance(ident, str) or not ident.strip():
        problems.append(f"{where}: missing 'id'")
        return "", where
    if ident in ids:
        problems.append(f"{where}: duplicate id {ident!r} (invariants and examples share ids)")
    ids.add(ident)
    return ident, where


def _parse_invariant(
    raw: Any, index: int, source: str, version: str, ids: set[str], problems: list[str]
) -> Invariant | None:
    if not isinstance(raw, dict):
        problems.append(f"{source}: invariant #{index}: not a table")
        return None
    start = len(problems)
    ident, where = _check_id(raw, "invariant", index, source, ids, problems)
    kind = raw.get("kind")
    if kind not in INVARIANT_KINDS:
        problems.append(
            f"{where}: unknown kind {kind!r} (expected one of {', '.join(INVARIANT_KINDS)})"
        )
        return None
    _unknown_keys(raw, _INVARIANT_KEYS[kind], where, problems)
    description = _text(raw, "description", where, problems) or ""
    if kind == "sticky":
        facts = raw.get("facts")
        if not isinstance(facts, list) or not facts:
            problems.append(f"{where}: 'facts' must list the facts whose changes never count")
            facts = []
        for name in facts:
            if name not in FACT_TYPES:
                problems.append(f"{where}: unknown fact {name!r} (known: {', '.join(FACT_TYPES)})")
            elif name not in STICKY_FACTS:
                problems.append(
                    f"{where}: fact {name!r} never changes after signup; a sticky invariant "
                    f"names facts later events change ({', '.join(STICKY_FACTS)})"
                )
        if len(problems) > start:
            return None
        return Invariant(ident, kind, version, source, description, facts=tuple(facts))
    if "when" not in raw:
        problems.append(f"{where}: missing 'when' (use [] for 'always')")
    when = parse_conditions(raw.get("when", []), where, problems)
    assign = _assignment(raw, "assign", where, problems)
    rule = _text(raw, "rule", where, problems)
    if len(problems) > start:
        return None
    return Invariant(ident, kind, version, source, description, when=when, assign=assign, rule=rule)


def _instant(value: Any, where: str, problems: list[str]) -> datetime | None:
    """`at` as TOML gives it: text (a bare date is 00:00 UTC), an offset datetime or a date."""
    try:
        if isinstance(value, datetime):
            return truncate_ms(value)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, str):
            return parse_instant(value, date_means_midnight_utc=True)
    except ValueError as exc:
        problems.append(f"{where}: 'at': {exc}")
        return None
    problems.append(f"{where}: 'at' must be an ISO 8601 time, got {value!r}")
    return None


def example_user_id(example_id: str) -> str:
    return f"example-{example_id}"[: limits.USER_ID_CHARS]


def example_event_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def _parse_example(
    raw: Any, index: int, source: str, version: str, ids: set[str], problems: list[str]
) -> Example | None:
    if not isinstance(raw, dict):
        problems.append(f"{source}: example #{index}: not a table")
        return None
    start = len(problems)
    ident, where = _check_id(raw, "example", index, source, ids, problems)
    _unknown_keys(raw, _EXAMPLE_KEYS, where, problems)
    user_id = example_user_id(ident or str(index))
    raw_events = raw.get("events")
    events: list[Event] = []
    if not isinstance(raw_events, list) or not raw_events:
        problems.append(f"{where}: 'events' must list the user's events")
        raw_events = []
    for n, item in enumerate(raw_events, start=1):
        if not isinstance(item, dict):
            problems.append(f"{where}: event {n}: not a table")
            continue
        # The position decides ties in valid time unless the author gives ids.
        fields = {"event_id": example_event_id(n), "user_id": user_id, **item}
        try:
            events.append(_build_event(fields))
        except EventError as exc:
            problems.append(f"{where}: event {n}: {exc}")
    if len({e.user_id for e in events}) > 1:
        problems.append(f"{where}: the events of an example belong to one user")
    if len({e.event_id for e in events}) < len(events):
        problems.append(f"{where}: two events share an event_id")
    if events and not any(e.type == "SignedUp" for e in events):
        problems.append(f"{where}: no SignedUp event, so nothing is ever assigned")
    at = _instant(raw.get("at"), where, problems) if "at" in raw else None
    if "at" not in raw:
        problems.append(f"{where}: missing 'at' (the valid time the expectation is about)")
    expect = _assignment(raw, "expect", where, problems)
    rule = _text(raw, "rule", where, problems)
    expect_policy = _text(raw, "policy", where, problems) or version
    description = _text(raw, "description", where, problems) or ""
    if len(problems) > start or at is None:
        return None
    return Example(
        ident, version, source, tuple(events), at, expect, rule, expect_policy, description
    )


def check_references(checks: Mapping[str, PolicyChecks], policies: PolicySet) -> list[str]:
    """Problems of invariants and examples that name rules, policies or terms versions the
    set does not have."""
    problems: list[str] = []
    for version, declared in checks.items():
        rules = {r.id for r in policies[version].rules} if version in policies else set()
        for inv in declared.invariants:
            if inv.rule is not None and inv.rule not in rules:
                problems.append(
                    f"{inv.source}: invariant {inv.id}: unknown rule {inv.rule!r} of policy "
                    f"{version} (its rules: {', '.join(sorted(rules))})"
                )
        for ex in declared.examples:
            where = f"{ex.source}: example {ex.id}"
            if ex.expect_policy not in policies:
                problems.append(f"{where}: unknown policy {ex.expect_policy!r}")
            elif ex.rule is not None:
                known = {r.id for r in policies[ex.expect_policy].rules}
                if ex.rule not in known:
                    problems.append(
                        f"{where}: unknown rule {ex.rule!r} of policy {ex.expect_policy} "
                        f"(its rules: {', '.join(sorted(known))})"
                    )
            for n, event in enumerate(ex.events, start=1):
                problem = event_problem(event, policies)
                if problem:
                    problems.append(f"{where}: event {n}: {problem}")
    return problems


__all__ = [
    "check_references",
    "example_event_id",
    "example_user_id",
    "parse_checks",
]
