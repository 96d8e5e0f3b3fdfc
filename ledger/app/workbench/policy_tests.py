"""`ledger policy test`: property tests and examples for policy authors.

Each check is a case with an id; running it gives a `CheckResult`:

- built-in invariants, over histories from `ledger.testing`, under the candidate set:
  `builtin/one-assignment` (every signed-up user has exactly one assignment at every instant
  after signup, also under each what-if-only policy), `builtin/arrival-order`,
  `builtin/batch-split` and `builtin/duplicates` (the believed history does not depend on
  them; these run the projector for real on a store from `store_factory`);
- each `[[invariants]]` of the policies under review, with the policy governing from
  signup on (`ledger.domain.policy_checks.only_policy`);
- each `[[examples]]` of the policies under review.

A failing property is shrunk by Hypothesis; the smallest history found is written as a
JSON Lines file `ledger replay` accepts, with event ids renamed (order kept) so that
several counterexamples can be replayed into one store. The same cases run under pytest
through `PolicyCase.check()`.
"""

from __future__ import annotations

from collections.abc import Callable

from ledger.app.workbench.builtin_cases import builtin_cases
from ledger.app.workbench.cases import CheckResult, PolicyCase, StoreFactory, TestOptions
from ledger.app.workbench.declared_cases import example_case, invariant_case
from ledger.codecs.policy_files import PolicyFiles


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
