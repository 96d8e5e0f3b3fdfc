"""The model of `ledger policy test`: options, a case (one check with an id) and its result,
and how a property runs under Hypothesis. `ledger.app.workbench.policy_tests` assembles the
cases; the built-in and the declared ones live in modules of their own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Verbosity, given, seed, settings
from hypothesis import strategies as st

from ledger.app.ports import ReadableStore
from ledger.domain.events import Event
from ledger.domain.time import format_instant
from ledger.testing import (
    DEFAULT_MAX,
)

# Phone digests are not read by any rule; any key folds the same assignments.
PHONE_KEY = b"ledger-policy-test"
# Record times of built-in checks: after every valid time drawn, one millisecond apart.
RECORD_T0 = DEFAULT_MAX + timedelta(days=1)


StoreFactory = Callable[[], ReadableStore]


@dataclass(frozen=True)
class TestOptions:
    max_examples: int = 100
    seed: int | None = None
    derandomize: bool = False  # the same examples every run: for CI
    out_dir: Path = Path("policy-counterexamples")


@dataclass
class CheckResult:
    id: str
    kind: str  # builtin, sticky, implies, never, example
    policy: str | None
    source: str | None
    description: str
    passed: bool
    message: str = ""
    counterexample: Path | None = None  # JSON Lines, replayable
    alternative: Path | None = None  # the other delivery of a built-in's two
    user_id: str | None = None
    only: str | None = None  # `impact --only` this version to see the history as tested
    at: datetime | None = None  # an example's time; where an invariant's violation holds

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "policy": self.policy,
            "file": self.source,
            "description": self.description,
            "status": "passed" if self.passed else "failed",
            "message": self.message or None,
            "counterexample": str(self.counterexample) if self.counterexample else None,
            "alternative": str(self.alternative) if self.alternative else None,
            "user_id": self.user_id,
            "only": self.only,
            "at": format_instant(self.at),
        }


@dataclass(frozen=True)
class PolicyCase:
    """One check, to run directly or as a parametrised pytest test."""

    id: str
    kind: str
    run: Callable[[], CheckResult] = field(compare=False, repr=False)

    def __str__(self) -> str:
        return self.id

    def check(self) -> None:
        """Raise AssertionError naming the failure and the counterexample file."""
        result = self.run()
        if not result.passed:
            where = f" (counterexample: {result.counterexample})" if result.counterexample else ""
            raise AssertionError(f"{result.id}: {result.message}{where}")


class Violation(Exception):
    def __init__(
        self,
        message: str,
        events: Sequence[Event],
        alternative: Any = None,
        only: str | None = None,  # the version that governed from signup on, if one did
    ) -> None:
        super().__init__(message)
        self.message = message
        self.events = list(events)
        self.alternative = alternative
        self.only = only


def run_hypothesis(
    strategy: st.SearchStrategy[Any], test: Callable[[Any], None], o: TestOptions
) -> None:
    """Run `test` over `strategy`; the shrunk `Violation` is raised, if any."""

    @settings(
        max_examples=o.max_examples,
        derandomize=o.derandomize,
        database=None,  # a CLI run leaves no .hypothesis directory behind
        deadline=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    @given(strategy)
    def run(value: Any) -> None:
        test(value)

    if o.seed is not None and not o.derandomize:
        run = seed(o.seed)(run)
    run()


def crashed(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"the check raised {type(exc).__name__}: {lines[0] if lines else ''}"


