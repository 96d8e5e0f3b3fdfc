"""The valid-time history of one user, computed from their observations (RULES.md,
"Which terms version governs a user" and "History entries"). Pure.

The whole history is recomputed from the user's observations every time: a user has a
handful of events, and recomputing makes "arrival order never matters" hold by
construction instead of by careful patching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ledger.facts import RESIDENCE_EVIDENCE, Facts, Observation, fact_to_json
from ledger.policy import PolicySet

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
        if o.type != "TermsAccepted" or o.tos_version not in policies.rank:
            continue
        p = policies[o.tos_version]
        assert p.effective_from is not None
        start = max(o.occurred_at, p.effective_from, signup.occurred_at)
        out.append(_Binding(start, policies.rank[p.version], p.version, o.event_id))
    out.sort(key=lambda b: (b.start, b.event_id))
    return out


def _apply(
    facts: dict[str, Any], evidence: dict[str, str], o: Observation, signup_id: str | None
) -> None:
    if o.type == "SignedUp":
        if o.event_id != signup_id:
            return  # a repeated SignedUp does not sign the user up again
        assert o.phone is not None
        facts.update(
            signup_at=o.occurred_at,
            channel=o.channel,
            birth_date=o.birth_date,
            signup_phone_region=o.phone.region,
            signup_phone_valid=o.phone.valid,
            current_phone_region=o.phone.region,
            current_phone_valid=o.phone.valid,
        )
        for name in (
            "signup_at",
            "channel",
            "birth_date",
            "signup_phone_region",
            "signup_phone_valid",
            "current_phone_region",
            "current_phone_valid",
        ):
            evidence[name] = o.event_id
    elif o.type == "PhoneChanged":
        assert o.phone is not None
        facts.update(current_phone_region=o.phone.region, current_phone_valid=o.phone.valid)
        evidence["current_phone_region"] = evidence["current_phone_valid"] = o.event_id
    elif o.type == "Relocated":
        name = "residence" if o.evidence in RESIDENCE_EVIDENCE else "ip_country"
        facts[name] = o.country
        evidence[name] = o.event_id


def compute_timeline(obs: Sequence[Observation], policies: PolicySet) -> Timeline:
    """`obs` must be one user's observations sorted by (occurred_at, event_id), each
    TermsAccepted naming a version in `policies` (invalid ones are dead-lettered before)."""
    signup = next((o for o in obs if o.type == "SignedUp"), None)
    facts: dict[str, Any] = {}
    evidence: dict[str, str] = {}
    if signup is None:
        # Evidence may arrive before the signup itself; there is no assignment yet.
        for o in obs:
            _apply(facts, evidence, o, None)
        return Timeline((), Facts(**facts), evidence)

    bindings = _bindings(obs, signup, policies)
    instants = sorted(
        {signup.occurred_at}
        | {o.occurred_at for o in obs if o.occurred_at > signup.occurred_at}
        | {b.start for b in bindings}
    )
    entries: list[Entry] = []
    i = 0
    governing: _Binding = bindings[0]
    b = 0
    for t in instants:
        while i < len(obs) and obs[i].occurred_at <= t:
            _apply(facts, evidence, obs[i], signup.event_id)
            i += 1
        # Governing version: the newest accepted so far; accepting an older one changes nothing.
        while b < len(bindings) and bindings[b].start <= t:
            if bindings[b].rank > governing.rank:
                governing = bindings[b]
            b += 1
        facts["tos_version"] = governing.version
        evidence["tos_version"] = governing.event_id
        decision = policies[governing.version].classify(Facts(**facts))
        if entries and entries[-1].decision_key == (
            decision.assignment,
            decision.policy,
            decision.rule,
        ):
            continue
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
                # The event that bound the governing terms version comes first: it is why
                # this policy decides at all.
                evidence=tuple(
                    dict.fromkeys(
                        [governing.event_id]
                        + [evidence[n] for n in decision.facts_read if n in evidence]
                    )
                ),
            )
        )
    return Timeline(tuple(entries), Facts(**facts), evidence)


def entry_at(entries: Sequence[Entry], at: datetime) -> Entry | None:
    for e in entries:
        if e.valid_from <= at and (e.valid_to is None or at < e.valid_to):
            return e
    return None
