"""`ledger impact`: what a candidate policy set would change, over every user's stored
events, without writing anything.

Each user's observations go through the projector's own fold
(`ledger.domain.timeline.compute_timeline`) under the candidate set, and the result at one
valid time is compared with the assignment the ledger believes then. Two what-ifs change
only what the fold is given, never the fold:

- `accept`: every user signed up by `at` also accepted that terms version at `at` (a
  synthetic TermsAccepted observation), as when new terms ship on that date;
- `only`: one version binds every user from signup on, whatever its effective date, even
  a version that never binds otherwise (`wechat-style`): see `only_policy`.

Users arrive in chunks from any iterable (the CLI reads them from the store), so memory
holds one chunk and the tallies, whatever the store's size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.app.ports import Decided, UserHistory
from ledger.domain.events import TermsAccepted
from ledger.domain.facts import Observation, ObservedSignup
from ledger.domain.policy import PolicySet
from ledger.domain.policy_checks_evaluation import only_policy
from ledger.domain.time import format_instant
from ledger.domain.timeline import Entry, Timeline, compute_timeline, entry_at, entry_json
from ledger.errors import LedgerError, UsageError

NOT_SIGNED_UP = "not signed up"


class UnknownVersion(LedgerError, LookupError):
    pass


@dataclass(frozen=True)
class WhatIf:
    """What is compared: the candidate set as the fold binds it, at valid time `at`."""

    policies: PolicySet
    at: datetime
    accept: str | None = None
    only: str | None = None

    def describe(self) -> str:
        if self.accept:
            return (
                f"every user signed up by then accepts {self.accept} at {format_instant(self.at)}"
            )
        if self.only:
            return f"{self.only} governs every user from signup on"
        return "the candidate policies as they bind"


def what_if(
    candidate: PolicySet, at: datetime, *, accept: str | None = None, only: str | None = None
) -> WhatIf:
    """Check the options against the candidate set."""
    if accept and only:
        raise UsageError("use --accept or --only, not both")
    for option, version in (("--accept", accept), ("--only", only)):
        if version is not None and version not in candidate:
            known = ", ".join(candidate.by_version)
            raise UnknownVersion(f"{option}: unknown policy version {version!r} (known: {known})")
    if accept is not None and accept not in candidate.rank:
        raise UsageError(
            f"--accept: {accept} is never bound by an acceptance (what-if only); "
            f"use --only {accept}"
        )
    policies = only_policy(candidate, only) if only else candidate
    return WhatIf(policies, at, accept, only)


_ACCEPT_ID = "what-if:accept:"


def candidate_observations(
    user_id: str, observations: Iterable[Observation], w: WhatIf
) -> list[Observation]:
    """The observations the candidate folds, sorted: the stored ones, and with `accept` the
    acceptance every user signed up by `at` makes at `at`."""
    obs = sorted(observations, key=lambda o: o.order_key)
    if w.accept is not None:
        signup = next((o for o in obs if isinstance(o.payload, ObservedSignup)), None)
        if signup is not None and signup.occurred_at <= w.at:
            # Not a UUID on purpose: it can never collide with a stored event id, and it
            # names itself as the what-if in the evidence of the entries it decides.
            obs.append(Observation(_ACCEPT_ID + w.accept, user_id, w.at, TermsAccepted(w.accept)))
            obs.sort(key=lambda o: o.order_key)
    return obs


def candidate_timeline(user_id: str, observations: Iterable[Observation], w: WhatIf) -> Timeline:
    return compute_timeline(candidate_observations(user_id, observations, w), w.policies)


@dataclass(slots=True)
class Transition:
    users: int = 0
    samples: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ImpactReport:
    at: datetime
    accept: str | None
    only: str | None
    description: str
    users: int = 0
    events: int = 0
    moved: int = 0  # another assignment
    reason_changed: int = 0  # the same assignment, by another policy or rule
    matrix: dict[tuple[str, str], Transition] = field(default_factory=dict)
    rules: dict[tuple[tuple[str, str], tuple[str, str]], Transition] = field(default_factory=dict)
    seconds: float = 0.0
    sample_size: int = 3

    def add(self, user_id: str, current: Decided | None, candidate: Decided | None) -> None:
        self.users += 1
        before = current[0] if current else NOT_SIGNED_UP
        after = candidate[0] if candidate else NOT_SIGNED_UP
        if before != after:
            self.moved += 1
        elif current != candidate:
            self.reason_changed += 1
        self._tally(self.matrix, (before, after), user_id)
        rule_before = (current[1], current[2]) if current else ("", "")
        rule_after = (candidate[1], candidate[2]) if candidate else ("", "")
        self._tally(self.rules, (rule_before, rule_after), user_id)

    def _tally(self, table: dict[Any, Transition], key: Any, user_id: str) -> None:
        t = table.get(key)
        if t is None:
            t = table[key] = Transition()
        t.users += 1
        if len(t.samples) < self.sample_size:
            t.samples.append(user_id)

    def share(self, n: int) -> float:
        return n / self.users if self.users else 0.0

    def to_json(self) -> dict[str, Any]:
        def rule(key: tuple[str, str]) -> dict[str, str] | None:
            return {"policy": key[0], "rule": key[1]} if key[0] else None

        return {
            "at": format_instant(self.at),
            "accept": self.accept,
            "only": self.only,
            "what_if": self.description,
            "users": self.users,
            "events": self.events,
            "moved": self.moved,
            "moved_share": round(self.share(self.moved), 6),
            "reason_changed": self.reason_changed,
            "matrix": [
                {
                    "from": a,
                    "to": b,
                    "users": t.users,
                    "share": round(self.share(t.users), 6),
                    "samples": t.samples,
                }
                for (a, b), t in sorted(self.matrix.items())
            ],
            "rules": [
                {
                    "from": rule(a),
                    "to": rule(b),
                    "users": t.users,
                    "share": round(self.share(t.users), 6),
                    "samples": t.samples,
                }
                for (a, b), t in sorted(self.rules.items(), key=lambda kv: (-kv[1].users, kv[0]))
            ],
            "seconds": round(self.seconds, 3),
        }


def impact(
    chunks: Iterable[Sequence[UserHistory]],
    w: WhatIf,
    *,
    samples: int = 3,
    progress: Callable[[int], None] | None = None,
) -> ImpactReport:
    """Fold every user under the candidate and tally current -> candidate at `w.at`.
    `progress` gets the number of events of each chunk once it is folded."""
    started = time.perf_counter()
    report = ImpactReport(w.at, w.accept, w.only, w.describe(), sample_size=samples)
    for chunk in chunks:
        events = 0
        for user in chunk:
            timeline = candidate_timeline(user.user_id, user.observations, w)
            entry = entry_at(timeline.entries, w.at)
            report.add(user.user_id, user.current, entry.decision_key if entry else None)
            events += len(user.observations)
        report.events += events
        if progress is not None:
            progress(events)
    report.seconds = time.perf_counter() - started
    return report


# --- one user, side by side -----------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A stretch of valid time in which neither history changes."""

    valid_from: datetime
    valid_to: datetime | None
    current: Entry | None
    candidate: Entry | None

    @property
    def moved(self) -> bool:
        a = self.current.assignment if self.current else None
        b = self.candidate.assignment if self.candidate else None
        return a != b


@dataclass(frozen=True)
class Explanation:
    user_id: str
    at: datetime
    description: str
    current: tuple[Entry, ...]
    candidate: tuple[Entry, ...]

    @property
    def segments(self) -> list[Segment]:
        bounds = sorted({e.valid_from for e in (*self.current, *self.candidate)})
        return [
            Segment(t, end, entry_at(self.current, t), entry_at(self.candidate, t))
            for t, end in zip(bounds, [*bounds[1:], None], strict=True)
        ]

    def to_json(self) -> dict[str, Any]:
        def entry(e: Entry | None) -> dict[str, Any] | None:
            return None if e is None else entry_json(e)

        return {
            "user_id": self.user_id,
            "at": format_instant(self.at),
            "what_if": self.description,
            "at_current": entry(entry_at(self.current, self.at)),
            "at_candidate": entry(entry_at(self.candidate, self.at)),
            "current": [entry(e) for e in self.current],
            "candidate": [entry(e) for e in self.candidate],
            "segments": [
                {
                    "valid_from": format_instant(s.valid_from),
                    "valid_to": format_instant(s.valid_to),
                    "current": entry(s.current),
                    "candidate": entry(s.candidate),
                    "moved": s.moved,
                }
                for s in self.segments
            ],
        }


def explain(
    user_id: str, observations: Iterable[Observation], believed: Sequence[Entry], w: WhatIf
) -> Explanation:
    """The user's believed history beside the candidate's."""
    timeline = candidate_timeline(user_id, observations, w)
    return Explanation(user_id, w.at, w.describe(), tuple(believed), timeline.entries)
