"""Hostile text reaches the terminal as plain text (issue "Hostile input"): Rich
markup in user ids, reasons and positions prints literally and never raises MarkupError,
and control characters are spelled out (ESC as `\\x1b`), in every human output; `--json`
keeps the exact text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.factories import signup, terms_accepted
from tests.support import Cli, write_jsonl

ESC = "\x1b"
HOSTILE_USERS = ["[/]", "[bold red]x[/bold red]", f"u-{ESC}[2J{ESC}]0;owned{ESC}\\"]
# A file name is input too: it becomes every dead letter's position (no "/" in a name, so
# markup that Rich would swallow rather than markup that fails).
HOSTILE_FILE = f"[bold red]x{ESC}[2J.jsonl"


def shown(text: str) -> str:
    """How hostile text must appear in human output."""
    return text.replace(ESC, "\\x1b")


def clean(result: Any) -> Any:
    """No raw ESC anywhere, no traceback, no Rich error."""
    both = result.stdout + result.stderr
    assert ESC not in both, both
    assert "Traceback" not in both and "MarkupError" not in both, both
    return result


def stream() -> list[dict[str, str]]:
    items: list[dict[str, str]] = []
    for i, user in enumerate(HOSTILE_USERS):
        items.append(signup(10 * i + 1, user))
        items.append(
            terms_accepted(10 * i + 2, user, at="2026-04-10T09:00:00Z", version=f"tos-{ESC}[2J[/]")
        )
    return items


def test_hostile_ids_reasons_and_positions_print_as_plain_text(cli: Cli, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / HOSTILE_FILE, stream())
    replay = clean(cli.run("replay", str(path), expect=3))
    assert shown(f"{HOSTILE_FILE}:2") in replay.stderr  # dead-letter samples
    for user in HOSTILE_USERS:
        for args in (
            ("history", user),
            ("history", user, "--all"),
            ("current", user, "--at", "2026-05-01"),
            ("explain", user, "--at", "2025-01-01"),  # before signup: names the user
        ):
            result = clean(cli.run(*args))
            assert shown(user) in result.stdout, (args, result.stdout)
        clean(cli.run("explain", user, "--at", "2026-05-01"))
        # --json keeps the exact text (JSON escapes the control characters).
        assert cli.json("history", user)["user_id"] == user
    # The changefeed's JSON Lines too: ASCII JSON, every user's exact id.
    feed = clean(cli.run("changes")).stdout.splitlines()
    assert {json.loads(line)["user_id"] for line in feed} == set(HOSTILE_USERS)
    listed = clean(cli.run("dead-letters", "list"))
    for user in HOSTILE_USERS:
        assert shown(user) in listed.stdout
    assert shown(HOSTILE_FILE) in listed.stdout
    assert {d["user_id"] for d in cli.json("dead-letters", "list")["dead_letters"]} == set(
        HOSTILE_USERS
    )
    first = cli.json("dead-letters", "list")["dead_letters"][0]["id"]
    raw = clean(cli.run("dead-letters", "show", str(first)))
    assert "\\u001b[2J" in raw.stdout  # the JSON line's own escape, shown as is
    retried = clean(cli.run("dead-letters", "retry", expect=3))
    assert shown(HOSTILE_FILE) in retried.stdout


def test_errors_quoting_input_are_one_plain_line(cli: Cli, tmp_path: Path) -> None:
    cli.run("db", "upgrade")  # read commands refuse a store that is not there
    for user in HOSTILE_USERS:
        result = clean(cli.run("history", user, expect=1))
        assert result.stderr.startswith("ledger: error: unknown user")
        assert result.stderr.count("\n") == 1
    missing = clean(cli.run("replay", str(tmp_path / HOSTILE_FILE), expect=1))
    assert shown(HOSTILE_FILE) in missing.stderr and missing.stderr.count("\n") == 1
    multi = clean(cli.run("replay", str(tmp_path / "a\nb.jsonl"), expect=1))
    assert multi.stderr.count("\n") == 1 and "a\\x0ab.jsonl" in multi.stderr
    for args in (
        ("current", "u-1", "--at", f"{ESC}[2J"),
        ("dead-letters", "purge", "--before", "[bold red]x[/bold red]"),
        ("dead-letters", "show", f"{ESC}[2J"),
        ("changes", "--after", f"{ESC}[2J"),
        ("changes", "--limit", "[bold red]1[/bold red]"),
    ):
        result = clean(cli.run(*args, expect=2))
        assert result.stderr.startswith("ledger: error: ") and result.stderr.count("\n") == 1


def test_output_paths_and_topics_are_not_markup(sqlite_cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "[bold red]x.jsonl"
    sqlite_cli.run("db", "upgrade")  # read commands refuse a store that is not there
    result = clean(sqlite_cli.run("dead-letters", "export", "-o", str(target)))
    assert str(target) in result.stdout


def test_broker_commands_print_hostile_state_dirs_literally(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    state = tmp_path / f"[bold red]x[/]{ESC}[2J"
    state.mkdir(parents=True)
    for args in (("broker", "status"), ("broker", "stop")):
        result = clean(sqlite_cli.run(*args, "--state-dir", str(state), db=False))
        assert shown(str(state)) in result.stdout


def test_json_output_is_exact_and_terminal_safe(cli: Cli, tmp_path: Path) -> None:
    user = "u-\x9b2J\u202e"  # C1 CSI and a bidi override: JSON would pass them through raw
    cli.run("replay", str(write_jsonl(tmp_path / "e.jsonl", [signup(1, user)])))
    result = cli.run("history", user, "--json")
    assert "\x9b" not in result.stdout and "\u202e" not in result.stdout
    assert json.loads(result.stdout)["user_id"] == user
