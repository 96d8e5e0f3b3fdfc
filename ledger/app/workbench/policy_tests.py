"""`ledger policy test`: property tests and examples for policy authors.

Each check is a case with an id; running it gives a `CheckResult`:

- built-in invariants, over histories from `ledger.testing`, under the candidate set:
  `builtin/one-assignment` (every signed-up user has exactly one assignment at every instant
  after signup, also under each what-if-only policy), `builtin/arrival-order`,
  `builtin/batch-split` and `builtin/duplicates` (the believed history does not depend on
  them; these run the projector for real on a store from `store_factory`);
- each `[[invariants]]` of the policies under review, with the policy governing from
  signup on (`ledger.domain.policy_checks_evaluation.only_policy`);
- each `[[examples]]` of the policies under review.

A failing property is shrunk by Hypothesis; the smallest history found is written as a
JSON Lines file `ledger replay` accepts, with event ids renamed (order kept) so that
several counterexamples can be replayed into one store. The same cases run under pytest
through `PolicyCase.check()`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Verbosity, given, seed, settings
from hypothesis import strategies as st

from ledger.app.ingest.projector import Delivery, Projector, apply_deliveries
from ledger.app.ports import HistoryTableRow, ReadableStore
from ledger.codecs.policy_files import PolicyFiles
from ledger.domain.events import Event
from ledger.domain.facts import FACT_TYPES, observe
from ledger.domain.policy import Policy, PolicySet
from ledger.domain.policy_checks import Example, Invariant
from ledger.domain.policy_checks_evaluation import (
    check_invariant,
    example_policies,
    only_policy,
    run_example,
)
from ledger.domain.time import format_instant
from ledger.domain.timeline import compute_timeline, entry_at
from ledger.sources.files import write_event_file
from ledger.testing import (
    DEFAULT_MAX,
    DEFAULT_MIN,
    batch_splits,
    event_streams,
    streams_with_duplicates,
    user_events,
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
    at: datetime | None = None  # an example's time

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


class _Violation(Exception):
    def __init__(self, message: str, events: Sequence[Event], alternative: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.events = list(events)
        self.alternative = alternative


def _hypothesis(
    strategy: st.SearchStrategy[Any], test: Callable[[Any], None], o: TestOptions
) -> None:
    """Run `test` over `strategy`; the shrunk `_Violation` is raised, if any."""

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


def _crashed(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"the check raised {type(exc).__name__}: {lines[0] if lines else ''}"


# --- counterexample files ----------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120]


def renamed(events: Sequence[Event], tag: str) -> list[Event]:
    """`events` with user ids `cex-<tag>[-<n>]` and event ids unique to `tag`, in the same
    order as before (ties in valid time are decided by event id), so that files of
    different counterexamples never share an event."""
    prefix = hashlib.sha256(tag.encode()).hexdigest()[:20]
    ranks = {old: i for i, old in enumerate(sorted({e.event_id for e in events}))}
    users = list(dict.fromkeys(e.user_id for e in events))
    base = f"cex-{_slug(tag)}"[:180]
    names = {u: base if len(users) == 1 else f"{base}-{i + 1}" for i, u in enumerate(users)}

    def new_id(old: str) -> str:
        hexa = prefix + f"{ranks[old]:012x}"
        return f"{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:32]}"

    return [Event(new_id(e.event_id), names[e.user_id], e.occurred_at, e.payload) for e in events]


def _write(
    out_dir: Path, name: str, events: Sequence[Event], recorded: Sequence[datetime] | None = None
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{_slug(name)}.jsonl"
    times: Iterable[datetime | None] = recorded if recorded is not None else [None] * len(events)
    write_event_file(path, zip(events, times, strict=True))
    return path


# --- declared invariants -----------------------------------------------------------------


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
    return moved if check_invariant(inv, _sorted_obs(moved), under) else events


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


def _sorted_obs(events: Sequence[Event]) -> list[Any]:
    return sorted((observe(e, PHONE_KEY) for e in events), key=lambda o: o.order_key)


def invariant_case(inv: Invariant, files: PolicyFiles, o: TestOptions) -> PolicyCase:
    policies = files.require()
    under = only_policy(policies, inv.policy)

    def run() -> CheckResult:
        result = CheckResult(
            inv.name, inv.kind, inv.policy, inv.source, inv.description, True, only=inv.policy
        )

        def test(events: list[Event]) -> None:
            message = check_invariant(inv, _sorted_obs(events), under)
            if message:
                raise _Violation(message, events)

        try:
            _hypothesis(_histories(policies[inv.policy], inv, policies), test, o)
        except _Violation as v:
            events = renamed(_shifted_into_binding(v.events, inv, policies, under), inv.name)
            message = check_invariant(inv, _sorted_obs(events), under) or v.message
            result.passed, result.message = False, message
            result.counterexample = _write(o.out_dir, inv.name, events)
            result.user_id = events[0].user_id
        except Exception as exc:  # the check itself broke: report it as this check's failure
            result.passed, result.message = False, _crashed(exc)
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
            result.counterexample = _write(o.out_dir, f"{ex.name}.example", events)
            result.user_id = events[0].user_id
        return result

    return PolicyCase(f"example {ex.name}", "example", run)


# --- built-in invariants -----------------------------------------------------------------


def _one_assignment(events: list[Event], policies: PolicySet, label: str) -> str | None:
    entries = compute_timeline(_sorted_obs(events), policies).entries
    signup = min(e.order_key for e in events if e.type == "SignedUp")[0]
    if not entries or entries[0].valid_from != signup:
        return f"{label}: the history does not start at the signup {format_instant(signup)}"
    if entries[-1].valid_to is not None:
        return f"{label}: the history ends at {format_instant(entries[-1].valid_to)}"
    for a, b in pairwise(entries):
        if a.valid_to != b.valid_from or a.valid_to is None or not a.valid_from < a.valid_to:
            return (
                f"{label}: entries from {format_instant(a.valid_from)} and "
                f"{format_instant(b.valid_from)} leave a gap or overlap"
            )
    far = max(e.occurred_at for e in events) + timedelta(days=3650)
    for probe in [signup, *(e.valid_from for e in entries), far]:
        covering = [
            e
            for e in entries
            if e.valid_from <= probe and (e.valid_to is None or probe < e.valid_to)
        ]
        if len(covering) != 1:
            return f"{label}: {len(covering)} assignments at {format_instant(probe)}"
        if entry_at(entries, probe) is None:
            return f"{label}: no assignment at {format_instant(probe)}"
    return None


def _project(
    factory: StoreFactory, policies: PolicySet, batches: Sequence[Sequence[Delivery]]
) -> list[HistoryTableRow]:
    """Every history row after the projector applied `batches` in order to a fresh store."""
    store = factory()
    projector = Projector(store, policies, PHONE_KEY, cache_users=1000)
    apply_deliveries(projector, batches, RECORD_T0, source="policy-test")
    return sorted(store.history_rows(), key=repr)


def _believed(rows: list[HistoryTableRow]) -> list[tuple[Any, ...]]:
    return sorted((r.believed_entry() for r in rows if r.superseded_at is None), key=repr)


def _at_positions(stream: Sequence[Event]) -> list[tuple[Event, datetime]]:
    return [(e, RECORD_T0 + timedelta(milliseconds=i)) for i, e in enumerate(stream)]


def _by_first_delivery(stream: Sequence[Event]) -> list[tuple[Event, datetime]]:
    first: dict[str, datetime] = {}
    for e in stream:
        first.setdefault(e.event_id, RECORD_T0 + timedelta(milliseconds=len(first)))
    return [(e, first[e.event_id]) for e in stream]


def builtin_cases(
    files: PolicyFiles, o: TestOptions, store_factory: StoreFactory
) -> list[PolicyCase]:
    policies = files.require()
    versions = tuple(p.version for p in policies.bindable)
    what_if = [v for v in files.given if v not in policies.rank]
    sets = [("the policy set", policies)] + [
        (f"{v} from signup on", only_policy(policies, v)) for v in what_if
    ]

    def case(name: str, description: str, strategy: Any, test: Callable[[Any], None]) -> PolicyCase:
        def run() -> CheckResult:
            result = CheckResult(f"builtin/{name}", "builtin", None, None, description, True)
            try:
                _hypothesis(strategy, test, o)
            except _Violation as v:
                result.passed, result.message = False, v.message
                events = renamed(v.events, f"builtin.{name}")
                recorded = v.alternative[0] if v.alternative else None
                result.counterexample = _write(o.out_dir, f"builtin.{name}", events, recorded)
                result.user_id = events[0].user_id
                if v.alternative:
                    other_events = renamed(v.alternative[1], f"builtin.{name}")
                    result.alternative = _write(
                        o.out_dir, f"builtin.{name}.alternative", other_events, v.alternative[2]
                    )
            except Exception as exc:
                result.passed, result.message = False, _crashed(exc)
            return result

        return PolicyCase(f"builtin/{name}", "builtin", run)

    def one_assignment(events: list[Event]) -> None:
        for label, under in sets:
            message = _one_assignment(events, under, label)
            if message:
                raise _Violation(message, events)

    def arrival_order(data: st.DataObject) -> None:
        stream = data.draw(event_streams(max_users=3, tos_versions=versions))
        shuffled = data.draw(st.permutations(stream))
        a, b = _at_positions(stream), _at_positions(shuffled)
        if _believed(_project(store_factory, policies, [a])) != _believed(
            _project(store_factory, policies, [b])
        ):
            raise _Violation(
                "two arrival orders of the same events give different believed histories",
                stream,
                ([t for _, t in a], shuffled, [t for _, t in b]),
            )

    def batch_split(data: st.DataObject) -> None:
        deliveries = _at_positions(data.draw(event_streams(max_users=3, tos_versions=versions)))
        batches = data.draw(batch_splits(deliveries))
        if _project(store_factory, policies, batches) != _project(
            store_factory, policies, [deliveries]
        ):
            sizes = ", ".join(str(len(b)) for b in batches)
            raise _Violation(
                f"applying the events in batches of {sizes} gives another history than "
                "applying them at once",
                [e for e, _ in deliveries],
                None,
            )

    def duplicates(stream: list[Event]) -> None:
        seen: set[str] = set()
        first = [e for e in stream if not (e.event_id in seen or seen.add(e.event_id))]  # type: ignore[func-returns-value]
        a, b = _by_first_delivery(stream), _by_first_delivery(first)
        if _project(store_factory, policies, [a]) != _project(store_factory, policies, [b]):
            raise _Violation(
                "duplicate deliveries change the history",
                stream,
                ([t for _, t in a], first, [t for _, t in b]),
            )

    return [
        case(
            "one-assignment",
            "every signed-up user has exactly one assignment at every instant after signup",
            user_events("u-000001", versions),
            one_assignment,
        ),
        case(
            "arrival-order",
            "the believed history is the same for every arrival order",
            st.data(),
            arrival_order,
        ),
        case(
            "batch-split",
            "the history is the same for every split of the events into batches",
            st.data(),
            batch_split,
        ),
        case(
            "duplicates",
            "duplicate deliveries change nothing",
            streams_with_duplicates(max_users=3, tos_versions=versions),
            duplicates,
        ),
    ]


def policy_cases(
    files: PolicyFiles, o: TestOptions, store_factory: StoreFactory
) -> list[PolicyCase]:
    """Every check for the policies under review (`files.given`): built-ins first, then
    each policy's invariants and examples in file order."""
    cases = builtin_cases(files, o, store_factory)
    for version in files.given:
        declared = files.checks.get(version)
        if declared is None:
            continue
        cases.extend(invariant_case(inv, files, o) for inv in declared.invariants)
        cases.extend(example_case(ex, files, o) for ex in declared.examples)
    return cases


def run_policy_tests(
    files: PolicyFiles,
    o: TestOptions,
    store_factory: StoreFactory,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    results = []
    for case in policy_cases(files, o, store_factory):
        result = case.run()
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
