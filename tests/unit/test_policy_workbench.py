"""The policy workbench's library, without the command line: the pytest entry point of
`policy test` (`ledger.cli.policy.policy_cases`), lint, the loading of DIR|FILE lists over
the shipped policies, invariants and examples with file and id in their problems, and
`only_policy`. `ledger policy test` and `ledger policy check` as commands are in
tests/e2e/test_policy_workbench.py."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ledger.cli.policy import policy_cases
from ledger.codecs.policy_files import load_policy_paths, read_policy_paths
from ledger.domain.policy import PolicySet, parse_policy
from ledger.domain.policy_checks_evaluation import only_policy
from ledger.domain.policy_checks_parsing import parse_checks
from ledger.domain.policy_lint import lint
from ledger.resources import policies_dir
from tests.helpers.policy_drafts import DRAFT, shipped, unreachable_catch_all

CASES_OUT = Path(tempfile.gettempdir()) / "ledger-policy-cases"
SIGNUP = '{ type = "SignedUp", occurred_at = "2026-01-01T00:00:00Z", phone = "+86", channel = "x" }'


@pytest.mark.parametrize("case", policy_cases(max_examples=5, out_dir=CASES_OUT), ids=str)
def test_shipped_policies_through_the_pytest_entry_point(case: Any) -> None:
    case.check()


def test_the_pytest_entry_point_reports_a_failure_with_its_counterexample(tmp_path: Path) -> None:
    cases = policy_cases([unreachable_catch_all(tmp_path)], max_examples=20, out_dir=tmp_path)
    (case,) = [c for c in cases if c.id.endswith("/invalid-signup-phone-undetermined")]
    with pytest.raises(AssertionError, match=r"undetermined: .*counterexample: .*\.jsonl"):
        case.check()


def test_lint_finds_rules_that_cannot_hold_and_rulebooks_never_assigned() -> None:
    problems: list[str] = []
    data = {
        "version": "only-one",
        "effective_from": "2020-01-01T00:00:00Z",
        "rules": [
            {
                "id": "X1",
                "when": [{"fact": "residence", "eq": "CN"}, {"fact": "residence", "ne": "CN"}],
                "assign": "rednote-international",
                "reason": "contradiction",
            },
            {
                "id": "X2",
                "when": [
                    {"fact": "signup_phone_valid", "eq": True},
                    {"fact": "signup_phone_region", "set": False},
                ],
                "assign": "undetermined",
                "reason": "a valid number always has a region",
            },
            {"id": "X3", "when": [], "assign": "xhs-domestic", "reason": "all"},
        ],
    }  # fmt: skip
    policy = parse_policy(data, "only-one.toml", problems)
    assert policy is not None and not problems
    found = {f.subject: f.message for f in lint(PolicySet([policy]), ["only-one"])}
    assert "can never hold together" in found["rule X1"]
    assert "can never hold together" in found["rule X2"]
    assert "rulebook rednote-international" in found and "rulebook undetermined" in found


def test_lint_knows_one_identity_verification_sets_both_document_facts() -> None:
    # D2 can only match a user D1 already decided: a document kind never comes without
    # its issuing country. Facts drawn independently would let D2 fire and hide that.
    problems: list[str] = []
    data = {
        "version": "real-name-draft",
        "effective_from": "2020-01-01T00:00:00Z",
        "rules": [
            {"id": "D1", "when": [{"fact": "id_document_country", "set": True}],
             "assign": "xhs-domestic", "reason": "any verified document"},
            {"id": "D2", "when": [{"fact": "id_document_kind", "eq": "passport"}],
             "assign": "rednote-international", "reason": "a passport"},
            {"id": "D3", "when": [], "assign": "undetermined", "reason": "otherwise"},
        ],
    }  # fmt: skip
    policy = parse_policy(data, "real-name-draft.toml", problems)
    assert policy is not None and not problems
    found = {f.subject: f.message for f in lint(PolicySet([policy]), ["real-name-draft"])}
    assert "rule D2" in found, found
    assert "rule D1" not in found and "rule D3" not in found


def test_given_files_are_laid_over_the_shipped_policies(tmp_path: Path) -> None:
    edited = tmp_path / "cutover.toml"
    edited.write_text(shipped("tos-2025-12-cutover").replace("C4", "C9"))
    files = load_policy_paths([edited])
    assert files.given == ("tos-2025-12-cutover",)
    assert [r.id for r in files.require()["tos-2025-12-cutover"].rules][-1] == "C9"
    assert len(files.require().by_version) == 4
    copy = tmp_path / "all"
    shutil.copytree(policies_dir(), copy)
    assert set(load_policy_paths([copy]).given) == set(load_policy_paths().given)


def invariant(body: str) -> str:
    return f'[[invariants]]\nid = "a"\n{body}'


def example(events: str, expect: str = "undetermined") -> str:
    return f'[[examples]]\nid = "e"\nevents = [{events}]\nat = "2026-01-02"\nexpect = "{expect}"'


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (invariant('kind = "maybe"'), "unknown kind 'maybe'"),
        (invariant('kind = "sticky"\nfacts = ["signup_at"]'), "never changes"),
        (invariant('kind = "never"\nwhen = []\nasign = "x"'), "unknown key 'asign'"),
        (invariant('kind = "never"\nwhen = [{ fact = "x", eq = 1 }]'), "unknown fact 'x'"),
        (example(""), "'events' must list"),
        (example('{ type = "Nope" }'), "unknown event type"),
        (example(SIGNUP, expect="mars"), "not a rulebook"),
    ],
)
def test_bad_invariants_and_examples_are_reported_with_file_and_id(
    table: str, problem: str
) -> None:
    import tomllib

    problems: list[str] = []
    parse_checks(tomllib.loads(table), "f.toml", "v", problems)
    assert problems and problem in problems[0] and problems[0].startswith("f.toml: ")


def test_references_to_unknown_rules_and_versions_are_errors(tmp_path: Path) -> None:
    draft = tmp_path / "draft.toml"
    example = (
        '\n[[examples]]\nid = "e"\nat = "2026-10-02"\nexpect = "xhs-domestic"\nrule = "Z9"\n'
        'events = [{ type = "SignedUp", occurred_at = "2026-10-01T00:00:00Z", '
        'phone = "+8613912345678", channel = "x" }, { type = "TermsAccepted", '
        'occurred_at = "2026-10-01T00:00:00Z", tos_version = "tos-1999" }]\n'
    )
    draft.write_text(DRAFT + example)
    problems = read_policy_paths([draft]).problems
    assert any("example e: unknown rule 'Z9'" in p for p in problems)
    assert any("example e: event 2: unknown terms version 'tos-1999'" in p for p in problems)


def test_only_policy_binds_one_version_from_signup_and_ignores_acceptances() -> None:
    ps = load_policy_paths().require()
    wechat = only_policy(ps, "wechat-style")
    assert [p.version for p in wechat.bindable] == ["wechat-style"]
    assert wechat.bound_at_signup(ps["tos-2023-legacy"].effective_from).version == "wechat-style"  # type: ignore[arg-type]
    assert "tos-2026-03-residency" in wechat and "tos-2026-03-residency" not in wechat.rank

