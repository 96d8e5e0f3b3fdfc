"""Classification policies as data: parsing, validation and evaluation. Pure (the files are
read by `ledger.codecs.policy_files`).

A policy is an ordered list of rules; the first rule whose conditions all hold decides.
A condition names a fact and one operator:
  eq / ne        equal / not equal to a value (ne holds for an unset fact)
  set            true: the fact has a value; false: it has none
  in / not_in    member / not a member of a list
  before         the fact is set and earlier than a timestamp or date
  not_before     the fact is set and at or after a timestamp or date
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, cast

from ledger.domain.events import Event, TermsAccepted
from ledger.domain.facts import FACT_TYPES, Facts
from ledger.domain.rulebooks import ASSIGNMENTS
from ledger.domain.time import parse_instant
from ledger.errors import LedgerError

OPERATORS = ("eq", "ne", "set", "in", "not_in", "before", "not_before")


class PolicyError(LedgerError, ValueError):
    """Every problem found in a set of policy files, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid policy files:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Condition:
    fact: str
    op: str
    value: Any
    test: Callable[[Any], bool] = field(compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # The test is a closure, which pickle cannot carry; a parallel replay's workers
        # get the policies pickled and rebuild it from what it was made of.
        return (_condition, (self.fact, self.op, self.value))


@dataclass(frozen=True)
class Rule:
    id: str
    when: tuple[Condition, ...]
    assign: str
    reason: str

    def matches(self, facts: Facts) -> bool:
        return all(c.test(getattr(facts, c.fact)) for c in self.when)


@dataclass(frozen=True)
class Decision:
    assignment: str
    policy: str
    rule: str
    reason: str
    facts_read: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    version: str
    effective_from: datetime | None
    bindable: bool
    title: str
    rules: tuple[Rule, ...]
    source: str = ""
    # (conditions as (fact, test) pairs, decision) per rule, built once below.
    _plan: tuple[tuple[tuple[tuple[str, Callable[[Any], bool]], ...], Decision], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Each rule's decision never changes (the facts read are those of every rule up to
        # and including it), so the fold, which classifies at every instant of every
        # user, only tests conditions.
        read: list[str] = []
        plan = []
        for rule in self.rules:
            read.extend(c.fact for c in rule.when if c.fact not in read)
            tests = tuple((c.fact, c.test) for c in rule.when)
            decision = Decision(rule.assign, self.version, rule.id, rule.reason, tuple(read))
            plan.append((tests, decision))
        object.__setattr__(self, "_plan", tuple(plan))

    def __reduce__(self) -> tuple[Any, ...]:
        fields_ = (self.version, self.effective_from, self.bindable, self.title, self.rules)
        return (Policy, (*fields_, self.source))

    def classify(self, facts: Facts) -> Decision:
        return self.classify_values({name: getattr(facts, name) for name in FACT_TYPES})

    def classify_values(self, values: Mapping[str, Any]) -> Decision:
        """`classify` on facts given by name (a missing name is an unset fact)."""
        get = values.get
        for tests, decision in self._plan:
            if all(test(get(fact)) for fact, test in tests):
                return decision
        # Validation guarantees a catch-all, so this is a broken invariant, not bad input.
        raise AssertionError(f"policy {self.version} has no rule matching {dict(values)}")


def _make_test(op: str, value: Any) -> Callable[[Any], bool]:
    if op == "eq":
        return lambda v: v == value
    if op == "ne":
        return lambda v: v != value
    if op == "set":
        return (lambda v: v is not None) if value else (lambda v: v is None)
    if op == "in":
        members = frozenset(value)
        return lambda v: v in members
    if op == "not_in":
        members = frozenset(value)
        return lambda v: v not in members
    if op == "before":
        return lambda v: v is not None and v < value
    return lambda v: v is not None and v >= value  # not_before


def _condition(fact: str, op: str, value: Any) -> Condition:
    return Condition(fact, op, value, _make_test(op, value))


def _coerce(fact: str, op: str, raw: Any, where: str, problems: list[str]) -> Any:
    kind = FACT_TYPES[fact]
    if op == "set":
        if not isinstance(raw, bool):
            problems.append(f"{where}: 'set' takes true or false, got {raw!r}")
        return raw
    if op in ("in", "not_in"):
        if not isinstance(raw, list):
            problems.append(f"{where}: {op!r} takes a list, got {raw!r}")
            return []
        return [_coerce(fact, "eq", item, where, problems) for item in raw]
    if op in ("before", "not_before") and kind not in (datetime, date):
        problems.append(f"{where}: {op!r} needs a timestamp or date fact, {fact!r} is not one")
        return raw
    if kind is datetime:
        try:
            # A TOML datetime arrives parsed, and without an offset it is naive: comparing it
            # with the facts' aware instants would fail at classification, not here.
            return parse_instant(raw.isoformat() if isinstance(raw, datetime) else raw)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            return raw
    if kind is date:
        try:
            return raw if isinstance(raw, date) else date.fromisoformat(raw)
        except (TypeError, ValueError):
            problems.append(f"{where}: {raw!r} is not an ISO date")
            return raw
    if not isinstance(raw, kind):
        problems.append(f"{where}: fact {fact!r} holds {kind.__name__} values, got {raw!r}")
    return raw


def parse_policy(data: Mapping[str, Any], source: str, problems: list[str]) -> Policy | None:
    """Build one policy from its data; appends every problem found (naming `source` and the
    rule id) instead of stopping at the first."""
    start = len(problems)
    version = data.get("version")
    if not isinstance(version, str) or not version:
        problems.append(f"{source}: missing 'version'")
        version = "?"
    bindable = data.get("bindable", True)
    effective_from = None
    raw_eff = data.get("effective_from")
    if raw_eff is None:
        if bindable:
            problems.append(
                f"{source}: unknown version ordering: bindable policy {version} has no "
                "'effective_from'"
            )
    else:
        try:
            effective_from = parse_instant(raw_eff)
        except ValueError as exc:
            problems.append(f"{source}: unknown version ordering: effective_from: {exc}")
    rules: list[Rule] = []
    seen: set[str] = set()
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        problems.append(f"{source}: policy {version} has no rules")
        raw_rules = []
    for index, raw_rule in enumerate(raw_rules, start=1):
        rule_id = raw_rule.get("id") if isinstance(raw_rule, dict) else None
        where = f"{source}: rule {rule_id or f'#{index}'}"
        if not isinstance(raw_rule, dict):
            problems.append(f"{where}: not a table")
            continue
        if not rule_id:
            problems.append(f"{where}: missing 'id'")
        elif rule_id in seen:
            problems.append(f"{where}: duplicate rule id {rule_id!r}")
        seen.add(rule_id or "")
        assign = raw_rule.get("assign")
        if assign not in ASSIGNMENTS:
            problems.append(
                f"{where}: unknown rulebook {assign!r} (expected one of {', '.join(ASSIGNMENTS)})"
            )
        reason = raw_rule.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            problems.append(f"{where}: missing 'reason' (every rule explains itself)")
        conditions: list[Condition] = []
        for raw_cond in raw_rule.get("when", []):
            conditions.extend(_parse_condition(raw_cond, where, problems))
        rules.append(Rule(str(rule_id), tuple(conditions), str(assign), str(reason)))
    if rules and rules[-1].when:
        problems.append(
            f"{source}: rule {rules[-1].id}: no catch-all rule (the last rule must have an "
            "empty 'when', so every user gets an assignment)"
        )
    if len(problems) > start:
        return None
    return Policy(
        version=version,
        effective_from=effective_from,
        bindable=bool(bindable),
        title=str(data.get("title", version)),
        rules=tuple(rules),
        source=source,
    )


def parse_conditions(raw: Any, where: str, problems: list[str]) -> tuple[Condition, ...]:
    """A `when` list as rules have it, for other tables that state conditions the same way
    (invariants, read by `ledger.domain.policy_checks_parsing`); problems are appended,
    naming `where`."""
    if not isinstance(raw, list):
        problems.append(f"{where}: 'when' must be a list of conditions, got {raw!r}")
        return ()
    return tuple(c for item in raw for c in _parse_condition(item, where, problems))


def _parse_condition(raw: Any, where: str, problems: list[str]) -> Iterable[Condition]:
    if not isinstance(raw, dict) or "fact" not in raw:
        problems.append(f"{where}: condition {raw!r} needs a 'fact' and one operator")
        return []
    fact = raw["fact"]
    if fact not in FACT_TYPES:
        problems.append(f"{where}: unknown fact {fact!r} (known: {', '.join(FACT_TYPES)})")
        return []
    ops = [k for k in raw if k != "fact"]
    if len(ops) != 1 or ops[0] not in OPERATORS:
        problems.append(
            f"{where}: condition on {fact!r} needs exactly one operator of {', '.join(OPERATORS)}"
        )
        return []
    op = ops[0]
    value = _coerce(fact, op, raw[op], where, problems)
    return [Condition(fact, op, value, _make_test(op, value))]


class PolicySet:
    """All known policies; the bindable ones ordered by effective_from."""

    def __init__(self, policies: Iterable[Policy]) -> None:
        self.by_version: dict[str, Policy] = {}
        problems: list[str] = []
        for p in policies:
            if p.version in self.by_version:
                problems.append(
                    f"{p.source}: version {p.version} is also defined in "
                    f"{self.by_version[p.version].source}"
                )
            self.by_version[p.version] = p
        self.bindable: tuple[Policy, ...] = tuple(
            sorted(
                # Validation gives every bindable policy an effective_from.
                (p for p in self.by_version.values() if p.bindable),
                key=lambda p: cast(datetime, p.effective_from),
            )
        )
        for a, b in zip(self.bindable, self.bindable[1:], strict=False):
            if a.effective_from == b.effective_from:
                problems.append(
                    f"{b.source}: unknown version ordering: {a.version} and {b.version} share "
                    f"effective_from {a.effective_from}"
                )
        if not self.bindable:
            problems.append("no bindable policy: at least one terms version must bind sign-ups")
        if problems:
            raise PolicyError(problems)
        self.rank: dict[str, int] = {p.version: i for i, p in enumerate(self.bindable)}

    def __getitem__(self, version: str) -> Policy:
        return self.by_version[version]

    def __contains__(self, version: object) -> bool:
        return version in self.by_version

    def bound_at_signup(self, signup_at: datetime) -> Policy:
        """The latest version effective at signup; the earliest if none is yet."""
        chosen = self.bindable[0]
        for p in self.bindable:
            if p.effective_from is not None and p.effective_from <= signup_at:
                chosen = p
        return chosen

    def acceptance_problem(self, version: str) -> str | None:
        """Why a TermsAccepted for `version` is invalid, or None when it is fine."""
        if version not in self.by_version:
            known = ", ".join(p.version for p in self.bindable)
            return f"unknown terms version {version!r} (known: {known})"
        if version not in self.rank:
            return (
                f"terms version {version!r} is for what-if comparison only and cannot be accepted"
            )
        return None


def event_problem(event: Event, policies: PolicySet) -> str | None:
    """Why a well-formed event cannot be applied (None: it can). Shared by the projector
    and `publish`, so what publish accepts is what the projector applies."""
    if isinstance(event.payload, TermsAccepted):
        return policies.acceptance_problem(event.payload.tos_version)
    return None
