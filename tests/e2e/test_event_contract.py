"""Event schema version 2 through the commands: `ledger generate` writes IdentityVerified
events and signup locales, `replay` applies them, and once a policy reads the new facts
(the real-name draft of docs/event-contract.md) `history` shows them, and `policy check`,
`policy test` and `impact` take that draft."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ledger.resources import policies_dir
from tests.helpers.policy_drafts import REAL_NAME_VERSION, real_name_draft
from tests.support import Cli

USERS, SEED = 300, 7


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    Cli("unused").run(
        "generate", "--users", str(USERS), "--seed", str(SEED), "-o", str(path), db=False
    )
    return path


@pytest.fixture
def draft(tmp_path: Path) -> Path:
    path = tmp_path / "drafts" / f"{REAL_NAME_VERSION}.toml"
    path.parent.mkdir()
    path.write_text(real_name_draft())
    return path


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_and_replay_carry_the_new_type_and_field(sqlite_cli: Cli, stream: Path) -> None:
    lines = _lines(stream)
    verified = [e for e in lines if e["type"] == "IdentityVerified"]
    assert {e["document_kind"] for e in verified} == {"resident_id", "passport", "other"}
    assert any("locale" in e for e in lines if e["type"] == "SignedUp")
    summary = sqlite_cli.json("replay", str(stream))
    assert summary["dead_lettered"] == 0
    first = verified[0]
    page = stream.parent / "timeline.html"
    sqlite_cli.run("timeline", str(first["user_id"]), "-o", str(page))
    detail = f"{first['document_kind']} issued in {first['document_country']}"
    assert f"<td>IdentityVerified</td><td>{detail}</td>" in page.read_text()
    sqlite_cli.run("verify")


def test_history_shows_the_identity_facts_once_a_policy_reads_them(
    sqlite_cli: Cli, stream: Path, draft: Path, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(policies_dir(), policies)
    shutil.copy(draft, policies)
    sqlite_cli.json("replay", str(stream), "--policies", str(policies))
    by_id = {e["event_id"]: e for e in _lines(stream)}
    shown = 0
    for event in by_id.values():
        if event["type"] != "IdentityVerified" or event["occurred_at"] < "2026-07":
            continue
        rows = sqlite_cli.json("history", str(event["user_id"]))["entries"]
        decided = [r for r in rows if r["rule"] == "N1"]
        if not decided:
            continue  # the user had not signed up under the draft, or holds another card
        facts = decided[0]["facts"]
        assert facts == {"id_document_country": "CN", "id_document_kind": "resident_id"}
        assert "IdentityVerified" in {by_id[e]["type"] for e in decided[0]["evidence"]}
        shown += 1
    assert shown >= 3


def test_policy_check_test_and_impact_take_the_real_name_draft(
    sqlite_cli: Cli, stream: Path, draft: Path, tmp_path: Path
) -> None:
    checked = sqlite_cli.json("policy", "check", str(draft), db=False)
    assert checked["errors"] == 0
    unread = {f["subject"] for f in checked["findings"]}
    assert "fact signup_locale" in unread  # read by no policy yet
    assert "fact id_document_kind" not in unread
    tested = sqlite_cli.run(
        "policy",
        "test",
        str(draft),
        "--derandomize",
        "--max-examples",
        "25",
        "--out",
        str(tmp_path / "counterexamples"),
        db=False,
    )
    assert f"ok    {REAL_NAME_VERSION}/resident-id-over-a-foreign-phone" in tested.stdout
    sqlite_cli.run("replay", str(stream))
    impact = sqlite_cli.json(
        "impact", "--policies", str(draft), "--accept", REAL_NAME_VERSION, "--at", "2026-10-31"
    )
    moved_by_n1 = [
        r for r in impact["rules"] if r["to"] == {"policy": REAL_NAME_VERSION, "rule": "N1"}
    ]
    assert moved_by_n1 and sum(r["users"] for r in moved_by_n1) > 0
    user = moved_by_n1[0]["samples"][0]
    explained = sqlite_cli.run(
        *("impact", "--policies", str(draft), "--accept", REAL_NAME_VERSION),
        *("--at", "2026-10-31", "--explain", user),
    )
    assert "mainland-China resident identity card" in explained.stdout

