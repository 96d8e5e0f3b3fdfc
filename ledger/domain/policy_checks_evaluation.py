"""Checking one history against a policy file's invariants and examples
(`ledger.domain.policy_checks`). Pure.

Invariants are checked with the policy governing from signup on (`only_policy`): the
assignment is a function of the facts alone, so every combination of facts a policy can
ever meet is met that way too, however it came to govern. Examples run under the whole
policy set, as a replay would fold them, except in a file whose policy is never bound
(`wechat-style`), which governs them from signup.

Both fold with the projector's own `TimelineBuilder`, so they judge exactly what the ledger
would record; its `on_step` hook hands over the facts at every instant, which history
entries do not keep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ledger.domain import limits
from ledger.domain.events import IdentityVerified, Relocated
from ledger.domain.facts import (
    Facts,
    Observation,
    ObservedSignup,
    fact_to_json,
    facts_set_by,
    observe,
)
from ledger.domain.policy import PolicySet
from ledger.domain.policy_checks import Example, Invariant
from ledger.domain.time import format_instant
from ledger.domain.timeline import Entry, Timeline, TimelineBuilder, entry_at


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


def fold_steps(obs: Sequence[Observation], policies: PolicySet) -> tuple[Timeline, list[Step]]:
    """The timeline of sorted observations and the fold's state at each instant it steps
    (the projector's fold, keeping the facts at every instant it evaluates: history
    entries keep only the facts the deciding rule read)."""
    steps: list[Step] = []

    def keep(t: datetime, facts: Mapping[str, Any], entry: Entry) -> None:
        steps.append(Step(t, Facts(**facts), entry))

    return TimelineBuilder(list(obs), policies, on_step=keep).timeline(), steps


def _step_at(steps: Sequence[Step], t: datetime) -> Step | None:
    found = None
    for s in steps:
        if s.at > t:
            break
        found = s
    return found


def changed_facts(o: Observation) -> frozenset[str]:
    """The facts an observation changes when it is not the signup."""
    if isinstance(o.payload, ObservedSignup):
        return frozenset()
    return frozenset(facts_set_by(o))


def _described(o: Observation) -> str:
    """A later event as a counterexample names it: its type and what it carried (a phone
    change shows nothing of the number)."""
    p = o.payload
    if isinstance(p, Relocated):
        return f"Relocated {p.country} {p.evidence}"
    if isinstance(p, IdentityVerified):
        return f"IdentityVerified {p.document_kind} {p.document_country}"
    return o.type


def _decision(entry: Entry) -> str:
    return f"{entry.assignment} (policy {entry.policy}, rule {entry.rule})"


def _facts_text(facts: Facts, names: Sequence[str]) -> str:
    return ", ".join(f"{n}={fact_to_json(getattr(facts, n))!r}" for n in names)


def check_invariant(inv: Invariant, obs: Sequence[Observation], policies: PolicySet) -> str | None:
    """Why the sorted observations of one user break `inv` while `inv.policy` governs them
    under `policies`, or None when they do not."""
    found = invariant_violation(inv, obs, policies)
    return found[1] if found else None


def invariant_violation(
    inv: Invariant, obs: Sequence[Observation], policies: PolicySet
) -> tuple[datetime, str] | None:
    """As `check_invariant`, with the valid time at which the broken assignment holds (the
    instant to ask about to see it)."""
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
            return (
                s.at,
                f"{holds}, so the assignment must be {wanted}, but it is {_decision(s.entry)}",
            )
        if inv.kind == "never" and s.entry.assignment == inv.assign:
            return (
                s.at,
                f"{holds}, and the assignment is {_decision(s.entry)}, which must never be",
            )
    return None


def _check_sticky(
    inv: Invariant, obs: Sequence[Observation], policies: PolicySet
) -> tuple[datetime, str] | None:
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
            what = _described(cause)
            return t, (
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
    "Step",
    "changed_facts",
    "check_invariant",
    "example_policies",
    "fold_steps",
    "invariant_violation",
    "only_policy",
    "run_example",
]
