"""Lint for policy sets: what validation accepts but is probably a mistake. Pure.

- a rule that never fires: earlier rules match every case it matches (shadowed), or its own
  conditions can never hold together;
- a fact no rule of any policy reads;
- a rulebook no bindable policy ever assigns.

Rules are conjunctions of one-fact conditions against constants, so "never fires" is decided
exactly, not sampled: each fact's values fall into a few classes that no condition tells
apart (unset; each constant; for times, just before, at and just after each constant; any
other value), and every combination of classes is tried. What the fold guarantees at the
moment a policy classifies is assumed: signup facts and both validity flags are set, a
valid phone number has a region, and `tos_version` is the policy's own version.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ledger.domain.facts import FACT_NAMES, FACT_TYPES, Facts
from ledger.domain.policy import Policy, PolicySet
from ledger.domain.rulebooks import ASSIGNMENTS

# Combinations tried per policy before the analysis is given up (with a warning saying so).
MAX_CASES = 250_000

# Set whenever a policy classifies (the signup has been folded; tos_version is the governing
# version, i.e. the classifying policy's own).
_ALWAYS_SET = {"signup_at", "channel", "signup_phone_valid", "current_phone_valid", "tos_version"}
# A valid number always has a region (`phonenumbers.region_code_for_number`).
_VALID_HAS_REGION = (
    ("signup_phone_valid", "signup_phone_region"),
    ("current_phone_valid", "current_phone_region"),
)
# One IdentityVerified sets both document facts: one without the other never occurs.
_SET_TOGETHER = (("id_document_country", "id_document_kind"),)
_OTHER = "\uffffany other value"  # equal to no constant a policy can name


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    source: str  # the policy file, or "policy set" for findings about the whole set
    subject: str  # "rule C4", "fact ip_country", "rulebook undetermined", ...
    message: str

    def text(self) -> str:
        return ": ".join(part for part in (self.source, self.subject, self.message) if part)

    def to_json(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "file": self.source,
            "subject": self.subject,
            "message": self.message,
        }


SET_SOURCE = "policy set"


@dataclass(frozen=True)
class Reach:
    """Whether a rule decides in some case: `fires`; if not, whether its conditions can
    hold at all (`matches`) and which earlier rules decide every case they do."""

    fires: bool
    matches: bool
    covered_by: tuple[str, ...]


def _constants(policy: Policy, fact: str) -> list[Any]:
    values: list[Any] = []
    for rule in policy.rules:
        for c in rule.when:
            if c.fact != fact or c.op == "set":
                continue
            values.extend(c.value if c.op in ("in", "not_in") else [c.value])
    return values


def _shifted(value: Any, step: timedelta, sign: int) -> Any | None:
    try:
        return value + step if sign > 0 else value - step
    except OverflowError:
        return None


def _classes(policy: Policy, fact: str) -> list[Any]:
    """One value per class of values no condition of `policy` tells apart."""
    if fact == "tos_version":
        return [policy.version]
    kind = FACT_TYPES[fact]
    values: list[Any] = [] if fact in _ALWAYS_SET else [None]
    constants = _constants(policy, fact)
    if kind is bool:
        return [*values, True, False]
    if kind in (datetime, date):
        step = timedelta(milliseconds=1) if kind is datetime else timedelta(days=1)
        points: list[Any] = []
        for c in sorted(set(constants)):
            points.extend(p for p in (_shifted(c, step, -1), c, _shifted(c, step, 1)) if p)
        if not points:
            points = [datetime(2026, 1, 1, tzinfo=UTC) if kind is datetime else date(2026, 1, 1)]
        return values + sorted(set(points))
    return values + list(dict.fromkeys(constants)) + [_OTHER]


def _facts_read(policy: Policy) -> list[str]:
    return list(dict.fromkeys(c.fact for r in policy.rules for c in r.when))


def reachability(policy: Policy) -> dict[str, Reach] | None:
    """Per rule id, whether it ever decides; None when there are too many combinations."""
    read = _facts_read(policy)
    classes = [_classes(policy, f) for f in read]
    total = 1
    for options in classes:
        total *= len(options)
    if total > MAX_CASES:
        return None
    base: dict[str, Any] = {name: None for name in FACT_NAMES}
    # Facts no rule reads still get a consistent value (a valid phone has a region).
    base.update(
        {f: _classes(policy, f)[0] for f in _ALWAYS_SET},
        signup_phone_valid=False,
        current_phone_valid=False,
        signup_phone_region=_OTHER,
        current_phone_region=_OTHER,
    )
    rules = policy.rules
    fires = [False] * len(rules)
    matches = [False] * len(rules)
    covered: list[set[str]] = [set() for _ in rules]
    for combo in itertools.product(*classes):
        values = dict(base)
        values.update(zip(read, combo, strict=True))
        if any(values[v] is True and values[r] is None for v, r in _VALID_HAS_REGION):
            continue
        if any((values[a] is None) != (values[b] is None) for a, b in _SET_TOGETHER):
            continue
        facts = Facts(**values)
        first: int | None = None
        for i, rule in enumerate(rules):
            if not rule.matches(facts):
                continue
            matches[i] = True
            if first is None:
                first = i
                fires[i] = True
            else:
                covered[i].add(rules[first].id)
    return {
        r.id: Reach(fires[i], matches[i], tuple(sorted(covered[i]))) for i, r in enumerate(rules)
    }


def lint(policies: PolicySet, versions: Iterable[str]) -> list[Finding]:
    """Warnings about the policies `versions` (the files under review) and about the set."""
    versions = set(versions)
    findings: list[Finding] = []
    firing: dict[str, set[str]] = {}  # version -> ids of rules that fire
    for policy in policies.by_version.values():
        reach = reachability(policy)
        if reach is None:
            firing[policy.version] = {r.id for r in policy.rules}
            if policy.version in versions:
                findings.append(
                    Finding(
                        "warning",
                        policy.source,
                        f"policy {policy.version}",
                        f"more than {MAX_CASES:,} combinations of facts: shadowed rules "
                        "were not looked for",
                    )
                )
            continue
        firing[policy.version] = {rule_id for rule_id, r in reach.items() if r.fires}
        if policy.version not in versions:
            continue
        for rule in policy.rules:
            r = reach[rule.id]
            if r.fires:
                continue
            if not r.matches:
                message = "never fires: its conditions can never hold together"
            else:
                message = (
                    "never fires: earlier rules "
                    f"{', '.join(r.covered_by)} match every case it matches (shadowed)"
                )
            findings.append(Finding("warning", policy.source, f"rule {rule.id}", message))
    read = {c.fact for p in policies.by_version.values() for r in p.rules for c in r.when}
    for fact in FACT_NAMES:
        if fact not in read:
            findings.append(
                Finding("warning", SET_SOURCE, f"fact {fact}", "no rule of any policy reads it")
            )
    assigned = {
        rule.assign
        for p in policies.bindable
        for rule in p.rules
        if rule.id in firing.get(p.version, ())
    }
    for rulebook in ASSIGNMENTS:
        if rulebook not in assigned:
            findings.append(
                Finding(
                    "warning",
                    SET_SOURCE,
                    f"rulebook {rulebook}",
                    "no rule that fires in a bindable policy assigns it",
                )
            )
    return findings


def errors(problems: Sequence[str]) -> list[Finding]:
    """Validation problems (`file: rule X: message` lines) as error findings."""
    out: list[Finding] = []
    for problem in problems:
        source, _, rest = problem.partition(": ")
        subject, sep, message = rest.partition(": ")
        if not sep or subject.split(" ")[0] not in ("rule", "invariant", "example"):
            subject, message = "", rest
        out.append(Finding("error", source, subject, message or problem))
    return out
