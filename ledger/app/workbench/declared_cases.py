"""The checks a policy file declares: each `[[invariants]]` (a property over generated
histories, with the policy governing from signup on) and each `[[examples]]`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from hypothesis import strategies as st

from ledger.app.workbench.cases import (
    PHONE_KEY,
    CheckResult,
    PolicyCase,
    TestOptions,
    Violation,
    crashed,
    run_hypothesis,
)
from ledger.app.workbench.counterexamples import renamed, write_counterexample
from ledger.codecs.policy_files import PolicyFiles
from ledger.domain.events import Event
from ledger.domain.facts import FACT_TYPES, observe
from ledger.domain.policy import Policy, PolicySet
from ledger.domain.policy_checks import Example, Invariant
from ledger.domain.policy_checks_evaluation import (
    check_invariant,
    example_policies,
    invariant_violation,
    only_policy,
    run_example,
)
from ledger.testing import (
    DEFAULT_MAX,
    DEFAULT_MIN,
    user_events,
)


def _time_constants(policy: Policy, inv: Invariant) -> list[datetime]:
    conditions = [c for r in policy.rules for c in r.when] + list(inv.when)
    out: list[datetime] = []
    for c in conditions:
        if FACT_TYPES[c.fact] is not datetime or c.op == "set":
            continue
        out.extend(c.value if c.op in ("in", "not_in") else [c.value])
    return out


def _signup_windows(policy: Policy, inv: Invariant) -> list[tuple[datetime, datetime]]:
    """Where signups are drawn: between the times the conditions name, so that both sides
    of each are tried."""
    lo, hi = DEFAULT_MIN, DEFAULT_MAX
    cuts = sorted({t for t in _time_constants(policy, inv) if lo < t < hi})
    return [(a, b - timedelta(milliseconds=1)) for a, b in pairwise([lo, *cuts, hi])]


def _binding_window(version: str, policies: PolicySet) -> tuple[datetime, datetime] | None:
    """When a signup binds `version` in an ordinary replay (None: it never does)."""
    if version not in policies.rank:
        return None
    i = policies.rank[version]
    start = policies.bindable[i].effective_from or DEFAULT_MIN
    later = policies.bindable[i + 1].effective_from if i + 1 < len(policies.bindable) else None
    return start, later or datetime.max.replace(tzinfo=start.tzinfo)


def _shifted_into_binding(
    events: list[Event], inv: Invariant, policies: PolicySet, under: PolicySet
) -> list[Event]:
    """The counterexample moved in valid time so that its user signs up while the policy
    binds sign-ups, if it still breaks the invariant there: then an ordinary replay of the
    file shows the violation too, not only `impact --only`."""
    window = _binding_window(inv.policy, policies)
    signup = min((e.occurred_at for e in events if e.type == "SignedUp"), default=None)
    if window is None or signup is None or window[0] <= signup < window[1]:
        return events
    delta = window[0] - signup
    try:
        moved = [replace(e, occurred_at=e.occurred_at + delta) for e in events]
    except OverflowError:
        return events
    return moved if check_invariant(inv, sorted_observations(moved), under) else events


def _histories(policy: Policy, inv: Invariant, policies: PolicySet) -> st.SearchStrategy[Any]:
    # Acceptances of the oldest version change nothing, under `only_policy` or in a replay,
    # and a replay with the shipped policies knows it (it would dead-letter a draft's).
    accepted = policies.bindable[0].version
    # Built once per window: a strategy made inside a draw (flatmap) is validated again on
    # every draw, which made shrinking a counterexample take seconds.
    return st.one_of(
        *(
            user_events("u-000001", (accepted,), min_value=lo, max_value=hi)
            for lo, hi in _signup_windows(policy, inv)
        )
    )


def sorted_observations(events: Sequence[Event]) -> list[Any]:
    return sorted((observe(e, PHONE_KEY) for e in events), key=lambda o: o.order_key)


def invariant_case(inv: Invariant, files: PolicyFiles, o: TestOptions) -> PolicyCase:
    policies = files.require()
    under = only_policy(policies, inv.policy)

    def run() -> CheckResult:
        result = CheckResult(
            inv.name, inv.kind, inv.policy, inv.source, inv.description, True, only=inv.policy
        )

        def test(events: list[Event]) -> None:
            message = check_invariant(inv, sorted_observations(events), under)
            if message:
                raise Violation(message, events)

        try:
            run_hypothesis(_histories(policies[inv.policy], inv, policies), test, o)
        except Violation as v:
            events = renamed(_shifted_into_binding(v.events, inv, policies, under), inv.name)
            found = invariant_violation(inv, sorted_observations(events), under)
            result.passed, result.message = False, found[1] if found else v.message
            result.counterexample = write_counterexample(o.out_dir, inv.name, events)
            result.user_id = events[0].user_id
            # Where to look to see it: the hint asks `impact --only` about this instant.
            result.at = found[0] if found else None
        except Exception as exc:  # the check itself broke: report it as this check's failure
            result.passed, result.message = False, crashed(exc)
        return result

    return PolicyCase(f"invariant {inv.name}", inv.kind, run)


def example_case(ex: Example, files: PolicyFiles, o: TestOptions) -> PolicyCase:
    policies = files.require()

    def run() -> CheckResult:
        only = None if example_policies(ex, policies) is policies else ex.policy
        result = CheckResult(
            ex.name, "example", ex.policy, ex.source, ex.description, True, only=only, at=ex.at
        )
        message = run_example(ex, policies, PHONE_KEY)
        if message:
            events = renamed(ex.events, f"{ex.policy}.example.{ex.id}")
            result.passed, result.message = False, message
            result.counterexample = write_counterexample(o.out_dir, f"{ex.name}.example", events)
            result.user_id = events[0].user_id
        return result

    return PolicyCase(f"example {ex.name}", "example", run)


