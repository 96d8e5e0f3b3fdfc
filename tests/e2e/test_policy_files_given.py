"""One meaning of "policy files given" for every command that takes them: `replay`,
`dead-letters retry` and `verify` lay the files over the shipped policies, as `impact` and
`policy check|test` do (a new version is added, a file with a shipped version replaces
it). Writers still pin what they decide with, so a store refuses a shipped version whose
content changed.

Before, `replay --policies DIR` (and `retry`, `verify`) decided with the files in DIR
*instead of* the shipped ones and refused a single file, so a draft given as `policy test`
takes it could not be replayed at all, and a directory holding only the draft lost every
shipped version."""

from __future__ import annotations

from pathlib import Path

from ledger.resources import policies_dir
from tests.factories import signup, terms_accepted
from tests.support import Cli, write_jsonl

DRAFT = """
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
reason = "everyone else"
"""


def draft(tmp_path: Path) -> Path:
    path = tmp_path / "tos-2026-09-draft.toml"
    path.write_text(DRAFT)
    return path


def stream(tmp_path: Path) -> Path:
    """A user under the legacy terms, and one who accepts the draft's version."""
    return write_jsonl(
        tmp_path / "events.jsonl",
        [
            signup(1, "u-old", at="2024-03-01T00:00:00Z"),
            signup(2, "u-new"),
            terms_accepted(3, "u-new", at="2026-09-10T00:00:00Z", version="tos-2026-09-draft"),
        ],
    )


def rules(cli: Cli, user: str) -> list[str]:
    return [e["rule"] for e in cli.json("history", user)["entries"]]


def test_replay_lays_a_draft_file_over_the_shipped_policies(cli: Cli, tmp_path: Path) -> None:
    summary = cli.json("replay", str(stream(tmp_path)), "--policies", str(draft(tmp_path)))
    assert (summary["applied"], summary["dead_lettered"]) == (3, 0)
    assert rules(cli, "u-old") == ["L1"]  # the shipped legacy terms still decide
    assert rules(cli, "u-new") == ["C2", "D3"]  # and the draft's version binds
    # verify re-derives with the same set, given the same way.
    assert cli.json("verify", "--policies", str(draft(tmp_path)))["ok"] is True


def test_a_directory_with_only_the_draft_keeps_the_shipped_policies(
    cli: Cli, tmp_path: Path
) -> None:
    directory = tmp_path / "drafts"
    directory.mkdir()
    draft(directory)
    summary = cli.json("replay", str(stream(tmp_path)), "--policies", str(directory))
    assert (summary["applied"], summary["dead_lettered"]) == (3, 0)
    assert rules(cli, "u-old") == ["L1"] and rules(cli, "u-new") == ["C2", "D3"]


def test_retry_with_the_draft_applies_what_only_it_defines(cli: Cli, tmp_path: Path) -> None:
    cli.run("replay", str(stream(tmp_path)), expect=3)  # the draft's version is unknown
    assert rules(cli, "u-new") == ["C2"]
    retried = cli.json("dead-letters", "retry", "--policies", str(draft(tmp_path)))
    assert (retried["applied"], retried["dead_lettered_again"]) == (1, 0)
    assert rules(cli, "u-old") == ["L1"] and rules(cli, "u-new") == ["C2", "D3"]


def test_a_store_still_refuses_a_changed_shipped_version(cli: Cli, tmp_path: Path) -> None:
    cli.json("replay", str(stream(tmp_path)), "--policies", str(draft(tmp_path)))
    changed = tmp_path / "cutover-reworded.toml"
    text = (policies_dir() / "tos-2025-12-cutover.toml").read_text()
    assert 'reason = "' in text
    changed.write_text(text.replace('reason = "', 'reason = "Reworded: ', 1))
    more = write_jsonl(tmp_path / "more.jsonl", [signup(4, "u-more")])
    refused = cli.run(
        "replay", str(more), "--policies", str(draft(tmp_path)), "--policies", str(changed),
        expect=1,
    )  # fmt: skip
    assert "publish" in refused.stderr and "new version" in refused.stderr
    assert refused.stderr.count("\n") == 1
    # What-if only reads: the same files are a candidate set there.
    report = cli.json("impact", "--policies", str(draft(tmp_path)), "--policies", str(changed))
    assert report["users"] == 2
    # Nothing of the refused replay was applied.
    assert cli.json("replay", str(more), "--policies", str(draft(tmp_path)))["applied"] == 1
