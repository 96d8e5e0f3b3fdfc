"""What a policy file promises about itself: the invariants and examples it declares. Pure.

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

Conditions are written as a rule's `when` and mean the same.

This module holds what they are. Reading them from a file's parsed TOML is
`ledger.domain.policy_checks_parsing`; checking a history against them is
`ledger.domain.policy_checks_evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger.domain.events import Event
from ledger.domain.policy import Condition

INVARIANT_KINDS = ("sticky", "implies", "never")

# The facts later events change; the signup facts are fixed once the user exists, and
# tos_version changes which policy governs rather than what one policy decides.
STICKY_FACTS = (
    "current_phone_region",
    "current_phone_valid",
    "residence",
    "ip_country",
    "id_document_country",
    "id_document_kind",
)


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


__all__ = [
    "INVARIANT_KINDS",
    "STICKY_FACTS",
    "Example",
    "Invariant",
    "PolicyChecks",
]
