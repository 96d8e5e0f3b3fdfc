"""What a policy file promises about itself, and checking one history against it. Pure.

Beside its `[[rules]]` a policy file may declare

`[[invariants]]`, properties every account history must have while the policy governs:

    kind = "sticky"    facts = [...]          changes of these facts after the policy has
                                              decided never change the assignment
    kind = "implies"   when = [...]           whenever the conditions hold, the assignment
                       assign = "…"           is `assign` (and the rule is `rule`, if given)
                       rule = "…" (optional)
    kind = "never"     when = [...]           the assignment is never `assign` while the
                       assign = "…"           conditions hold

`[[examples]]`, unit tests: a few events of one user, a time `at`, the `expect`ed
assignment and optionally the `rule` (of `policy`, default the file's own version).

Conditions are written as a rule's `when` and mean the same. Invariants are checked with the
policy governing from signup on (`only_policy`): the assignment is a function of the facts
alone, so every combination of facts a policy can ever meet is met that way too, however it
came to govern. Examples run under the whole policy set, as a replay would fold them, except
in a file whose policy is never bound (`wechat-style`), which governs them from signup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from ledger.domain import limits
from ledger.domain.events import Event, EventError, Relocated
from ledger.domain.events import build_event as _build_event
from ledger.domain.facts import (
    FACT_TYPES,
    RESIDENCE_EVIDENCE,
    Facts,
    Observation,
    ObservedPhoneChange,
    fact_to_json,
    observe,
)
from ledger.domain.policy import Condition, PolicySet, event_problem, parse_conditions
from ledger.domain.rulebooks import ASSIGNMENTS
from ledger.domain.time import format_instant, parse_instant, truncate_ms
from ledger.domain.timeline import Entry, Timeline, TimelineBuilder, entry_at

INVARIANT_KINDS = ("sticky", "implies", "never")

# The facts later events change; the signup facts are fixed once the user exists, and
# tos_version changes which policy governs rather than what one policy decides.
STICKY_FACTS = ("current_phone_region", "current_phone_valid", "residence", "ip_country")

_INVARIANT_KEYS = {
    "sticky": {"id", "kind", "description", "facts"},
    "implies": {"id", "kind", "description", "when", "assign", "rule"},
    "never": {"id", "kind", "description", "when", "assign"},
}
_EXAMPLE_KEYS = {"id", "description", "events", "at", "expect", "rule", "policy"}


@dataclass(frozen=True)
class Invariant:
    id: str
    kind: str  # one of INVARIANT_KINDS
    policy: str  # the version of the file that declares it
    source: str
    description: str = ""
    facts: tuple[str, ...] = ()  # sticky
    when: tuple[Condition, ...] = ()  # implies, never
    assign: str | None = None  # implies, never
    rule: str | None = None  # implies, optional

    @property
    def name(self) -> str:
        return f"{self.policy}/{self.id}"

    def facts_named(self) -> tuple[str, ...]:
        return self.facts or tuple(dict.fromkeys(c.fact for c in self.when))


@dataclass(frozen=True)
class Example:
    id: str
    policy: str  # the version of the file that declares it
    source: str
    events: tuple[Event, ...]
    at: datetime
    expect: str
    rule: str | None = None
    expect_policy: str = ""  # the policy `rule` belongs to; the file's own by default
    description: str = ""

    @property
    def name(self) -> str:
        return f"{self.policy}/{self.id}"

    @property
    def user_id(self) -> str:
        return self.events[0].user_id


@dataclass(frozen=True)
class PolicyChecks:
    """The invariants and examples one policy file declares."""

    invariants: tuple[Invariant, ...] = ()
    examples: tuple[Example, ...] = ()


# --- parsing ----------------------------------------------------------------------------


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


# --- folding under one policy -----------------------------------------------------------


def only_policy(policies: PolicySet, version: str) -> PolicySet:
    """`policies` with `version` as the one version that binds, from every user's signup on
    (whatever its effective_from, and even if it is never bound otherwise, as
    `wechat-style`). The others stay known but unbound, so acceptances of them change
    nothing. The fold itself is unchanged: only what it binds is."""
    target = policies[version]
    others = [replace(p, bindable=False) for p in policies.by_version.values() if p is not target]
    return PolicySet(
        [*others, replace(target, bindable=True, effective_from=limits.EARLIEST_INSTANT)]
    )


@dataclass(frozen=True, slots=True)
class Step:
    """The fold at one instant: the facts and the entry in force from then on."""

    at: datetime
    facts: Facts
    entry: Entry


class _Probe(TimelineBuilder):
    """The projector's fold, keeping the facts at every instant it evaluates (history
    entries keep only the facts the deciding rule read)."""

    def __init__(self, obs: list[Observation], policies: PolicySet) -> None:
        self.steps: list[Step] = []
        super().__init__(obs, policies)

    def _step(self, t: datetime) -> None:
        super()._step(t)
        self.steps.append(Step(t, Facts(**self.facts), self.entries[-1]))


def fold_steps(obs: Sequence[Observation], policies: PolicySet) -> tuple[Timeline, list[Step]]:
    """The timeline of sorted observations and the fold's state at each instant it steps."""
    probe = _Probe(list(obs), policies)
    return probe.timeline(), probe.steps


def _step_at(steps: Sequence[Step], t: datetime) -> Step | None:
    found = None
    for s in steps:
        if s.at > t:
            break
        found = s
    return found


def changed_facts(o: Observation) -> frozenset[str]:
    """The facts an observation changes when it is not the signup."""
    match o.payload:
        case ObservedPhoneChange():
            return frozenset({"current_phone_region", "current_phone_valid"})
        case Relocated(evidence=kind):
            return frozenset({"residence" if kind in RESIDENCE_EVIDENCE else "ip_country"})
        case _:
            return frozenset()


def _decision(entry: Entry) -> str:
    return f"{entry.assignment} (policy {entry.policy}, rule {entry.rule})"


def _facts_text(facts: Facts, names: Sequence[str]) -> str:
    return ", ".join(f"{n}={fact_to_json(getattr(facts, n))!r}" for n in names)


def check_invariant(inv: Invariant, obs: Sequence[Observation], policies: PolicySet) -> str | None:
    """Why the sorted observations of one user break `inv` while `inv.policy` governs them
    under `policies`, or None when they do not."""
    if inv.kind == "sticky":
        return _check_sticky(inv, obs, policies)
    _, steps = fold_steps(obs, policies)
    for s in steps:
        if s.entry.policy != inv.policy or not all(
            c.test(getattr(s.facts, c.fact)) for c in inv.when
        ):
            continue
        holds = f"at {format_instant(s.at)} {_facts_text(s.facts, inv.facts_named()) or 'always'}"
        if inv.kind == "implies" and (
            s.entry.assignment != inv.assign or (inv.rule and s.entry.rule != inv.rule)
        ):
            wanted = f"{inv.assign}" + (f" by rule {inv.rule}" if inv.rule else "")
            return f"{holds}, so the assignment must be {wanted}, but it is {_decision(s.entry)}"
        if inv.kind == "never" and s.entry.assignment == inv.assign:
            return f"{holds}, and the assignment is {_decision(s.entry)}, which must never be"
    return None


def _check_sticky(inv: Invariant, obs: Sequence[Observation], policies: PolicySet) -> str | None:
    _, steps = fold_steps(obs, policies)
    governed = [s for s in steps if s.entry.policy == inv.policy]
    if not governed:
        return None
    decided = governed[0].at
    named = set(inv.facts)
    # The same history without the later changes of the named facts: what happened before
    # the policy decided is part of the decision.
    changes = [o for o in obs if o.occurred_at > decided and changed_facts(o) & named]
    if not changes:
        return None
    dropped = {id(o) for o in changes}
    _, frozen = fold_steps([o for o in obs if id(o) not in dropped], policies)
    for t in sorted({s.at for s in steps} | {s.at for s in frozen}):
        real, without = _step_at(steps, t), _step_at(frozen, t)
        if t < decided or real is None or without is None or real.entry.policy != inv.policy:
            continue
        if real.entry.assignment != without.entry.assignment:
            cause = max((o for o in changes if o.occurred_at <= t), key=lambda o: o.order_key)
            what = (
                "PhoneChanged"
                if isinstance(cause.payload, ObservedPhoneChange)
                else (
                    f"Relocated {cause.payload.country} {cause.payload.evidence}"  # type: ignore[union-attr]
                )
            )
            return (
                f"at {format_instant(t)} the assignment is {_decision(real.entry)} after the "
                f"{what} of {format_instant(cause.occurred_at)} (event {cause.event_id}) "
                f"changed {', '.join(sorted(changed_facts(cause) & named))}; without changes "
                f"of {', '.join(inv.facts)} after the decision at {format_instant(decided)} "
                f"it stays {_decision(without.entry)}"
            )
    return None


def example_policies(ex: Example, policies: PolicySet) -> PolicySet:
    """The set an example folds under: the whole set, or its own policy from signup on when
    that is never bound otherwise."""
    return policies if ex.policy in policies.rank else only_policy(policies, ex.policy)


def run_example(ex: Example, policies: PolicySet, phone_key: bytes) -> str | None:
    """Why the example fails under `policies`, or None when it holds."""
    obs = sorted((observe(e, phone_key) for e in ex.events), key=lambda o: o.order_key)
    timeline, _ = fold_steps(obs, example_policies(ex, policies))
    entry = entry_at(timeline.entries, ex.at)
    wanted = ex.expect + (f" by rule {ex.rule} of {ex.expect_policy}" if ex.rule else "")
    if entry is None:
        return f"expected {wanted} at {format_instant(ex.at)}, but no rulebook governs then"
    if entry.assignment != ex.expect or (
        ex.rule is not None and (entry.rule, entry.policy) != (ex.rule, ex.expect_policy)
    ):
        return (
            f"expected {wanted} at {format_instant(ex.at)}, got {_decision(entry)}: {entry.reason}"
        )
    return None


__all__ = [
    "INVARIANT_KINDS",
    "STICKY_FACTS",
    "Example",
    "Invariant",
    "PolicyChecks",
    "Step",
    "changed_facts",
    "check_invariant",
    "check_references",
    "example_policies",
    "fold_steps",
    "only_policy",
    "parse_checks",
    "run_example",
]
