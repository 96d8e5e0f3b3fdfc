"""`ledger policy test` and `ledger policy check`: property tests and lint for policy
authors, on the shipped policies and on deliberately broken copies; the counterexamples a
failure writes replay into stores that show the violation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import phonenumbers
import pytest

from ledger.app.ingest.projector import Projector
from ledger.codecs.policy_files import load_policy_paths
from ledger.sources.files import read_records, source_key
from ledger.store.memory import MemoryStore
from tests.helpers.policy_drafts import DRAFT, shipped, unreachable_catch_all
from tests.support import Cli

# Derandomised: the same generated histories on every run, so these tests cannot flake.
FAST = ("--max-examples", "10", "--derandomize")
SEARCH = ("--max-examples", "20", "--derandomize")

STICKY_CLAIM = """

[[invariants]]
id = "sticky-claimed"
kind = "sticky"
description = "wrongly claimed: this policy decides by residence and current phone"
facts = ["current_phone_region", "current_phone_valid", "residence"]
"""


def sticky_claim(tmp_path: Path) -> Path:
    """The residency terms, unchanged, declared sticky: they are not."""
    path = tmp_path / "residency-sticky.toml"
    path.write_text(shipped("tos-2026-03-residency") + STICKY_CLAIM)
    return path


def results(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in report["results"]}


def test_policy_test_passes_on_the_shipped_policies(tmp_path: Path) -> None:
    out = tmp_path / "cex"
    report = Cli("").json("policy", "test", *FAST, "--out", str(out), db=False)
    assert report["failed"] == 0 and report["passed"] == report["checks"]
    ids = set(results(report))
    assert {"builtin/one-assignment", "builtin/arrival-order", "builtin/batch-split"} <= ids
    assert "builtin/duplicates" in ids
    # The seed policies' own promises are among the checks.
    for version in ("tos-2025-12-cutover", "wechat-style"):
        assert f"{version}/sticky-after-signup" in ids
    for version in load_policy_paths().given:
        assert f"{version}/mainland-signup-never-international" in ids
    assert "tos-2025-12-cutover/invalid-signup-phone" in ids  # an example
    assert not out.exists()  # nothing failed, nothing written
    text = Cli("").run("policy", "test", *FAST, "--out", str(out), db=False).stdout
    assert "0 failed" in text and "ok    builtin/one-assignment" in text


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    """One `policy test` of both broken copies (a failing property takes a few seconds to
    shrink, so the tests below share the run): the report, the counterexample directory and
    the broken cutover file."""
    tmp = tmp_path_factory.mktemp("broken")
    out = tmp / "cex"
    paths = [str(sticky_claim(tmp)), str(unreachable_catch_all(tmp))]
    report = Cli("").json("policy", "test", *paths, *SEARCH, "--out", str(out), expect=1, db=False)
    return report, out, tmp / "cutover-no-catch-all.toml"


@pytest.mark.slow
def test_broken_copies_fail_exactly_the_checks_they_break(
    broken_run: tuple[dict[str, Any], Path, Path],
) -> None:
    report, out, _ = broken_run
    failed = {i for i, r in results(report).items() if r["status"] == "failed"}
    assert failed == {
        "tos-2026-03-residency/sticky-claimed",
        "tos-2025-12-cutover/invalid-signup-phone-undetermined",  # an invariant
        "tos-2025-12-cutover/invalid-signup-phone",  # an example
    }
    for r in results(report).values():
        if r["status"] == "failed":
            assert Path(r["counterexample"]).parent == out
            assert r["reproduce"].startswith("ledger replay ")
    text = Cli("").run(
        "policy", "test", str(broken_run[2]), *FAST, "--out", str(out), expect=1, db=False
    )
    assert "FAIL  tos-2025-12-cutover/invalid-signup-phone-undetermined" in text.stdout
    assert text.stderr.startswith("ledger: error: 2 of ") and text.stderr.count("\n") == 1


@pytest.mark.slow
def test_a_policy_declared_sticky_that_is_not_fails_and_its_counterexample_replays(
    cli: Cli, broken_run: tuple[dict[str, Any], Path, Path]
) -> None:
    result = results(broken_run[0])["tos-2026-03-residency/sticky-claimed"]
    assert "without changes of" in result["message"]
    cex = Path(result["counterexample"])
    # The policy is the shipped one and the counterexample signs up when it binds, so an
    # ordinary replay shows the assignment moving after a change of a "sticky" fact.
    cli.run("replay", str(cex))
    entries = cli.json("history", result["user_id"])["entries"]
    assert entries[0]["policy"] == "tos-2026-03-residency"
    residency = [e for e in entries if e["policy"] == "tos-2026-03-residency"]
    assert len({e["assignment"] for e in residency}) >= 2


@pytest.mark.slow
def test_an_unreachable_catch_all_fails_and_its_counterexample_replays(
    sqlite_cli: Cli, broken_run: tuple[dict[str, Any], Path, Path]
) -> None:
    report, _, broken = broken_run
    result = results(report)["tos-2025-12-cutover/invalid-signup-phone-undetermined"]
    cex = Path(result["counterexample"])

    # Replayed through the projector with the broken policies, the store shows an invalid
    # signup phone decided by C2/C3 instead of the review queue.
    store = MemoryStore()
    projector = Projector(store, load_policy_paths([broken]).require(), b"k")
    records = [r for r, _ in read_records(cex, source_key(cex))]
    assert projector.apply_batch(records, records[0].decoded[0].occurred_at).dead_letters == []
    (signup,) = [r.decoded[0] for r in records if r.decoded[0].type == "SignedUp"]
    assert not phonenumbers.is_valid_number(phonenumbers.parse(signup.payload.phone, None))
    rows = store.history(result["user_id"])
    assert rows and {r.entry.rule for r in rows} <= {"C2", "C3"}

    # And the same file in a SQL store, asked through `impact`, as the failure says.
    sqlite_cli.run("replay", str(cex))
    ex = sqlite_cli.json(
        "impact", "--policies", str(broken), "--only", "tos-2025-12-cutover",
        "--explain", result["user_id"],
    )  # fmt: skip
    assert ex["at_current"]["rule"] == "C4"  # the shipped policy: review queue
    assert ex["at_candidate"]["rule"] in ("C2", "C3")


@pytest.mark.slow
def test_counterexamples_of_different_checks_share_no_event(
    broken_run: tuple[dict[str, Any], Path, Path],
) -> None:
    files = sorted(broken_run[1].glob("*.jsonl"))
    assert len(files) == 3
    lines = [line for f in files for line in f.read_text().splitlines()]
    ids = [line.split('"event_id": "')[1][:36] for line in lines]
    assert len(ids) == len(set(ids))


# --- policy check -------------------------------------------------------------------------

UNKNOWN_FACT = """
[[invariants]]
id = "sticky-shoes"
kind = "sticky"
facts = ["shoe_size"]
"""


def findings(report: dict[str, Any], severity: str) -> list[dict[str, str]]:
    return [f for f in report["findings"] if f["severity"] == severity]


def test_policy_check_on_the_shipped_policies_has_no_errors() -> None:
    report = Cli("").json("policy", "check", db=False)
    assert report["errors"] == 0
    assert len(report["policies"]) == 4
    assert not any(f["subject"].startswith("rule ") for f in report["findings"])


def test_policy_check_flags_a_shadowed_rule_and_an_unused_fact(tmp_path: Path) -> None:
    draft = tmp_path / "draft.toml"
    draft.write_text(DRAFT)
    report = Cli("").json("policy", "check", str(draft), db=False)  # warnings only: exit 0
    warnings = findings(report, "warning")
    (shadowed,) = [w for w in warnings if w["subject"] == "rule D2"]
    assert shadowed["file"] == str(draft)
    assert "D1" in shadowed["message"] and "shadowed" in shadowed["message"]
    assert any(w["subject"] == "fact ip_country" for w in warnings)
    text = Cli("").run("policy", "check", str(draft), db=False).stdout
    assert f"warning: {draft}: rule D2: never fires" in text


def test_policy_check_flags_an_invariant_naming_an_unknown_fact(tmp_path: Path) -> None:
    draft = tmp_path / "draft.toml"
    draft.write_text(DRAFT + UNKNOWN_FACT)
    result = Cli("").run("policy", "check", str(draft), db=False, expect=1)
    assert f"error: {draft}: invariant sticky-shoes: unknown fact 'shoe_size'" in result.stdout
    assert result.stderr.startswith("ledger: error: 1 error in the policy files")
    report = Cli("").json("policy", "check", str(draft), db=False, expect=1)
    (error,) = findings(report, "error")
    assert error["file"] == str(draft) and error["subject"] == "invariant sticky-shoes"


# --- the commands a failure prints reproduce it ---------------------------------------------

# A new terms version that decides by residence alone. Its invariant and example both fail:
# a valid mainland phone is not enough for it. The example accepts the draft version, which
# only the draft file defines.
FAILING_DRAFT = """
version = "tos-2026-09-draft"
effective_from = "2026-09-01T00:00:00Z"

[[rules]]
id = "D1"
when = [{ fact = "residence", eq = "CN" }]
assign = "xhs-domestic"
reason = "residence in mainland China"

[[rules]]
id = "D3"
when = []
assign = "rednote-international"
reason = "REASON"

[[invariants]]
id = "mainland-phone-domestic"
kind = "implies"
description = "a valid mainland current phone means domestic"
when = [
  { fact = "current_phone_valid", eq = true }, { fact = "current_phone_region", eq = "CN" },
]
assign = "xhs-domestic"

[[examples]]
id = "mainland-phone-accepts"
description = "a mainland phone user accepts the draft: domestic"
at = "2026-09-11"
expect = "xhs-domestic"

[[examples.events]]
type = "SignedUp"
occurred_at = "2026-01-10T09:00:00Z"
phone = "+8613912345678"
channel = "xiaohongshu-app"

[[examples.events]]
type = "TermsAccepted"
occurred_at = "2026-09-10T00:00:00Z"
tos_version = "tos-2026-09-draft"
"""

DECISION = re.compile(r"(?P<assignment>[a-z-]+) \(policy (?P<policy>\S+), rule (?P<rule>\w+)\)")


def run_hint(hint: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The printed commands, through a shell, with this environment's `ledger` first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["LEDGER_PHONE_KEY"] = "policy-hints"
    return subprocess.run(
        ["sh", "-c", hint], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def failed_draft_checks(tmp: Path, reason: str) -> dict[str, dict[str, Any]]:
    (tmp / "drafts").mkdir(exist_ok=True)
    (tmp / "drafts" / "tos-2026-09-draft.toml").write_text(FAILING_DRAFT.replace("REASON", reason))
    report = Cli("").json(
        "policy", "test", "drafts/tos-2026-09-draft.toml", *FAST, "--out", "cex",
        expect=1, db=False,
    )  # fmt: skip
    failed = {i: r for i, r in results(report).items() if r["status"] == "failed"}
    assert set(failed) == {
        "tos-2026-09-draft/mainland-phone-domestic",  # the invariant
        "tos-2026-09-draft/mainland-phone-accepts",  # the example
    }
    return failed


@pytest.mark.parametrize("reason", ["everyone else", "everyone else, reworded"])
def test_the_printed_hints_show_the_rule_the_check_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reason: str
) -> None:
    """Run as printed, each hint replays the counterexample with the draft laid over the
    shipped policies (no dead letter: the draft's version is known) and then shows, at the
    instant the check names, the decision it reported. A second run with the draft edited
    under its version replays into a fresh store, not one that pinned the first content."""
    monkeypatch.chdir(tmp_path)
    runs = [reason] if reason == "everyone else" else ["everyone else", reason]
    for text in runs:
        for check, r in failed_draft_checks(tmp_path, text).items():
            reported = DECISION.search(r["message"])
            assert reported and reported["rule"] == "D3", r["message"]
            assert "--policies drafts/tos-2026-09-draft.toml" in r["reproduce"]
            shown = run_hint(r["reproduce"], tmp_path)
            assert shown.returncode == 0, (check, r["reproduce"], shown.stdout, shown.stderr)
            assert "dead-lettered" not in shown.stderr
            last = shown.stdout.splitlines()[-1]
            if r["kind"] == "example":  # `ledger explain USER --at T`
                assert f"(policy {reported['policy']}, rule {reported['rule']})" in last
                assert f"because {text} (" in last
            else:  # `ledger impact --only V --explain USER --at T`: the candidate line
                assert last.startswith(f"candidate at {r['at']}: ")
                assert (
                    f"{reported['assignment']} by {reported['policy']} rule "
                    f"{reported['rule']}: {text}" in last
                )
