"""The checks every policy set must pass: one assignment at every instant after signup, and a
believed history that depends neither on arrival order, nor on batch splits, nor on
duplicate deliveries (these run the projector for real on a store from the factory)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from hypothesis import strategies as st

from ledger.app.ingest.projector import Delivery, Projector, apply_deliveries
from ledger.app.ports import HistoryTableRow
from ledger.app.workbench.cases import (
    PHONE_KEY,
    RECORD_T0,
    CheckResult,
    PolicyCase,
    StoreFactory,
    TestOptions,
    Violation,
    crashed,
    run_hypothesis,
)
from ledger.app.workbench.counterexamples import renamed, write_counterexample
from ledger.app.workbench.declared_cases import sorted_observations
from ledger.codecs.policy_files import PolicyFiles
from ledger.domain.events import Event
from ledger.domain.policy import PolicySet
from ledger.domain.policy_checks_evaluation import only_policy
from ledger.domain.time import format_instant
from ledger.domain.timeline import compute_timeline, entry_at
from ledger.testing import (
    batch_splits,
    event_streams,
    streams_with_duplicates,
    user_events,
)


def _one_assignment(events: list[Event], policies: PolicySet, label: str) -> str | None:
    entries = compute_timeline(sorted_observations(events), policies).entries
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
    sets: list[tuple[str, PolicySet, str | None]] = [("the policy set", policies, None)] + [
        (f"{v} from signup on", only_policy(policies, v), v) for v in what_if
    ]

    def case(name: str, description: str, strategy: Any, test: Callable[[Any], None]) -> PolicyCase:
        def run() -> CheckResult:
            result = CheckResult(f"builtin/{name}", "builtin", None, None, description, True)
            try:
                run_hypothesis(strategy, test, o)
            except Violation as v:
                result.passed, result.message = False, v.message
                events = renamed(v.events, f"builtin.{name}")
                recorded = v.alternative[0] if v.alternative else None
                result.counterexample = write_counterexample(
                    o.out_dir, f"builtin.{name}", events, recorded
                )
                result.user_id = events[0].user_id
                result.only = v.only
                if v.alternative:
                    other_events = renamed(v.alternative[1], f"builtin.{name}")
                    result.alternative = write_counterexample(
                        o.out_dir, f"builtin.{name}.alternative", other_events, v.alternative[2]
                    )
            except Exception as exc:
                result.passed, result.message = False, crashed(exc)
            return result

        return PolicyCase(f"builtin/{name}", "builtin", run)

    def one_assignment(events: list[Event]) -> None:
        for label, under, only in sets:
            message = _one_assignment(events, under, label)
            if message:
                raise Violation(message, events, only=only)

    def arrival_order(data: st.DataObject) -> None:
        stream = data.draw(event_streams(max_users=3, tos_versions=versions))
        shuffled = data.draw(st.permutations(stream))
        a, b = _at_positions(stream), _at_positions(shuffled)
        if _believed(_project(store_factory, policies, [a])) != _believed(
            _project(store_factory, policies, [b])
        ):
            raise Violation(
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
            raise Violation(
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
            raise Violation(
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


