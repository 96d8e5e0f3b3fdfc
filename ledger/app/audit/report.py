"""What `ledger verify` reports: each finding (a chain, history or policy that does not hold),
the check of a digest, and the counts and rates of a run, with their JSON forms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Findings kept in a report; more are counted, not kept, so a store damaged everywhere
# (or verified with the wrong policies) cannot exhaust memory.
MAX_PROBLEMS = 10_000


@dataclass(frozen=True, slots=True)
class Finding:
    user: str | None  # None: a store-wide problem (a policy pin, the digest)
    kind: str
    detail: str  # one line, without the user id
    seq: int | None = None  # the user's event seq it is about
    row: int | None = None  # the assignment_history row id it is about
    field: str | None = None
    stored: Any = None  # JSON-ready
    derived: Any = None

    def __str__(self) -> str:
        return f"{self.user}: {self.detail}" if self.user is not None else self.detail

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user": self.user, "kind": self.kind, "detail": self.detail}
        if self.seq is not None:
            out["seq"] = self.seq
        if self.row is not None:
            out["row"] = self.row
        if self.field is not None:
            out.update(field=self.field, stored=self.stored, derived=self.derived)
        return out


@dataclass(frozen=True, slots=True)
class DigestCheck:
    seq: int
    root: str  # the digest's
    computed_root: str
    users: int  # the digest's
    computed_users: int
    events: int
    computed_events: int
    chain_encoding: int = 1  # the digest's, which its chains were recomputed under

    @property
    def matches(self) -> bool:
        return self.root == self.computed_root

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "root": self.root,
            "computed_root": self.computed_root,
            "users": self.users,
            "computed_users": self.computed_users,
            "events": self.events,
            "computed_events": self.computed_events,
            "chain_encoding": self.chain_encoding,
            "matches": self.matches,
        }


@dataclass(slots=True)
class VerifyReport:
    users: int = 0  # user ids seen in users, events or history
    events: int = 0
    history_rows: int = 0
    erased: int = 0  # erased users, whose chains are checked as stored links
    pins: int = 0
    problems: list[Finding] = field(default_factory=list)  # the first MAX_PROBLEMS
    problem_count: int = 0
    seconds: float = 0.0
    digest: DigestCheck | None = None
    max_problems: int = MAX_PROBLEMS
    # The phone key given against the store's recorded fingerprint: "matches", "differs",
    # "not recorded" (a store without events, or written before fingerprints), or
    # "not checked" (no key given).
    phone_key: str = "not checked"

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def add(self, problem: Finding) -> None:
        self.problem_count += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "users": self.users,
            "events": self.events,
            "history_rows": self.history_rows,
            "erased_users": self.erased,
            "pins": self.pins,
            "phone_key": self.phone_key,
            "problem_count": self.problem_count,
            "problems": [p.to_json() for p in self.problems],
            "digest": self.digest.to_json() if self.digest else None,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
        }


