"""The valid-time history of one user, computed from their observations (docs/rules.md,
"Which terms version governs a user" and "History entries"). Pure.

The whole history is recomputed from the user's observations every time: a user has a
handful of events, and recomputing makes "arrival order never matters" hold by
construction instead of by careful patching.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ledger.domain.events import TermsAccepted
from ledger.domain.facts import (
    Facts,
    Observation,
    ObservedSignup,
    fact_to_json,
    facts_set_by,
)
from ledger.domain.policy import PolicySet
from ledger.domain.time import format_instant

FactItems = tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Entry:
    """One history entry as believed: what held over [valid_from, valid_to)."""

    valid_from: datetime
    valid_to: datetime | None
    assignment: str
    policy: str
    rule: str
    reason: str
    facts: FactItems  # the facts the policy read, JSON-ready, sorted by name
    evidence: tuple[str, ...]  # ids of the events those facts came from

    @property
    def decision_key(self) -> tuple[str, str, str]:
        return (self.assignment, self.policy, self.rule)


@dataclass(frozen=True, slots=True)
class Timeline:
    entries: tuple[Entry, ...]
    facts: Facts  # at the end of valid time (all observations applied)
    evidence: dict[str, str]  # fact name -> event id it came from, at the end


@dataclass(frozen=True, slots=True)
class _Binding:
    start: datetime
    rank: int
    version: str
    event_id: str


def _bindings(
    obs: Sequence[Observation], signup: Observation, policies: PolicySet
) -> list[_Binding]:
    base = policies.bound_at_signup(signup.occurred_at)
    out = [_Binding(signup.occurred_at, policies.rank[base.version], base.version, signup.event_id)]
    for o in obs:
        if not isinstance(o.payload, TermsAccepted) or o.payload.tos_version not in policies.rank:
            continue
        p = policies[o.payload.tos_version]
        assert p.effective_from is not None
        start = max(o.occurred_at, p.effective_from, signup.occurred_at)
        out.append(_Binding(start, policies.rank[p.version], p.version, o.event_id))
    out.sort(key=lambda b: (b.start, b.event_id))
    return out


def _apply(
    facts: dict[str, Any], evidence: dict[str, str], o: Observation, signup_id: str | None
) -> None:
    if isinstance(o.payload, ObservedSignup) and o.event_id != signup_id:
        return  # a repeated SignedUp does not sign the user up again
    changed = facts_set_by(o)
    facts.update(changed)
    for name in changed:
        evidence[name] = o.event_id


# Called by a TimelineBuilder after each instant it folds (see `TimelineBuilder`).
StepObserver = Callable[[datetime, Mapping[str, Any], Entry], None]


class TimelineBuilder:
    """Folds one user's observations, sorted by (occurred_at, event_id), into facts and
    history entries. Every TermsAccepted must name a version in `policies` (invalid ones
    are dead-lettered before they get here).

    A live stream mostly brings events later than everything already folded; `extend`
    continues from the saved state then, through the same steps as a full fold, so a
    user's k events cost O(k) instead of O(k^2).

    `on_step`, when given, is called after every instant the fold steps to, in order, with
    the instant, the facts in force from then on and the entry in force from then on. The
    facts are the builder's own mapping, changed by the next step: read it or copy it,
    never modify it. History entries keep only the facts the deciding rule read, so this
    is how a caller sees every fact at every instant (the policy workbench checks
    invariants that way) without a second fold. The projector passes nothing, and then a
    step costs one attribute test more."""

    def __init__(
        self,
        obs: list[Observation],
        policies: PolicySet,
        on_step: StepObserver | None = None,
    ) -> None:
        self.obs = obs  # shared with the caller, who appends before calling extend()
        self.policies = policies
        self.on_step = on_step
        self.facts: dict[str, Any] = {}
        self.evidence: dict[str, str] = {}
        self.entries: list[Entry] = []
        self.applied = 0
        self.last_instant: datetime | None = None
        self.signup = next((o for o in obs if isinstance(o.payload, ObservedSignup)), None)
        if self.signup is None:
            # Evidence may arrive before the signup itself; there is no assignment yet.
            for o in obs:
                _apply(self.facts, self.evidence, o, None)
            self.applied = len(obs)
            return
        self.bindings = _bindings(obs, self.signup, policies)
        self.next_binding = 0
        self.governing = self.bindings[0]
        signup_at = self.signup.occurred_at
        instants = sorted(
            {signup_at}
            | {o.occurred_at for o in obs if o.occurred_at > signup_at}
            | {b.start for b in self.bindings}
        )
        for t in instants:
            self._step(t)

    def can_extend(self, o: Observation) -> bool:
        """Whether `o` comes after every instant folded so far (then nothing before it
        can change)."""
        return (
            self.signup is not None
            and self.last_instant is not None
            and o.occurred_at > self.last_instant
        )

    def extend(self, o: Observation) -> None:
        """Fold `o`, already appended to `obs`; only when `can_extend(o)`."""
        assert self.signup is not None and self.obs[-1] is o
        instants = [o.occurred_at]
        if isinstance(o.payload, TermsAccepted) and o.payload.tos_version in self.policies.rank:
            p = self.policies[o.payload.tos_version]
            assert p.effective_from is not None
            start = max(o.occurred_at, p.effective_from)
            # Later than every binding so far, so the list stays sorted.
            self.bindings.append(
                _Binding(start, self.policies.rank[p.version], p.version, o.event_id)
            )
            if start > o.occurred_at:
                instants.append(start)
        for t in instants:
            self._step(t)

    def _step(self, t: datetime) -> None:
        assert self.signup is not None
        obs, facts, evidence = self.obs, self.facts, self.evidence
        while self.applied < len(obs) and obs[self.applied].occurred_at <= t:
            _apply(facts, evidence, obs[self.applied], self.signup.event_id)
            self.applied += 1
        # Governing version: the newest accepted so far; accepting an older one changes nothing.
        while (
            self.next_binding < len(self.bindings) and self.bindings[self.next_binding].start <= t
        ):
            if self.bindings[self.next_binding].rank > self.governing.rank:
                self.governing = self.bindings[self.next_binding]
            self.next_binding += 1
        self.last_instant = t
        governing = self.governing
        facts["tos_version"] = governing.version
        evidence["tos_version"] = governing.event_id
        decision = self.policies[governing.version].classify_values(facts)
        entries = self.entries
        if not entries or entries[-1].decision_key != (
            decision.assignment,
            decision.policy,
            decision.rule,
        ):
            if entries:
                entries[-1] = replace(entries[-1], valid_to=t)
            read = sorted(decision.facts_read)
            entries.append(
                Entry(
                    valid_from=t,
                    valid_to=None,
                    assignment=decision.assignment,
                    policy=decision.policy,
                    rule=decision.rule,
                    reason=decision.reason,
                    facts=tuple((name, fact_to_json(facts.get(name))) for name in read),
                    # The event that bound the governing terms version comes first: it is
                    # why this policy decides at all.
                    evidence=tuple(
                        dict.fromkeys(
                            [governing.event_id]
                            + [evidence[n] for n in decision.facts_read if n in evidence]
                        )
                    ),
                )
            )
        if self.on_step is not None:
            self.on_step(t, facts, entries[-1])

    def timeline(self) -> Timeline:
        return Timeline(tuple(self.entries), Facts(**self.facts), dict(self.evidence))


def compute_timeline(obs: Sequence[Observation], policies: PolicySet) -> Timeline:
    """The whole history of one user from their sorted observations."""
    return TimelineBuilder(list(obs), policies).timeline()


def entry_at(entries: Sequence[Entry], at: datetime) -> Entry | None:
    for e in entries:
        if e.valid_from <= at and (e.valid_to is None or at < e.valid_to):
            return e
    return None


def entry_json(e: Entry) -> dict[str, Any]:
    """An entry in the JSON form every interface shows (`history --json`, the HTTP API,
    `impact --explain`)."""
    return {
        "valid_from": format_instant(e.valid_from),
        "valid_to": format_instant(e.valid_to),
        "assignment": e.assignment,
        "policy": e.policy,
        "rule": e.rule,
        "reason": e.reason,
        "facts": dict(e.facts),
        "evidence": list(e.evidence),
    }
