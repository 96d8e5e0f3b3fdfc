"""What a new user reads: every command's help (no value placeholder on a flag, shell
completion offered once, at the root, where it works), which commands have `--json` as the
documentation says, and summaries that report only what happened."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer._click.core import Context
from typer.testing import CliRunner

from ledger.cli.main import app
from tests.factories import signup
from tests.support import Cli, write_jsonl
from tools.common import LEDGER

ROOT = Path(__file__).resolve().parents[2]
# Wide enough that no help line wraps: what is asserted is on one line. Only COLUMNS, read
# by each new console: typer reads TERMINAL_WIDTH once, when it is first imported, so set
# here it would widen every later help and error box of this test process.
WIDE = {"COLUMNS": "250"}


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command and group of `ledger` (the plugins' too), as (path, click command)."""
    root = typer.main.get_command(app)

    def walk(command: Any, path: list[str], ctx: Context) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                yield from walk(sub, [*path, name], Context(sub, info_name=name, parent=ctx))

    yield from walk(root, [], Context(root, info_name="ledger"))


COMMANDS = [path for path, _ in commands()]


def help_of(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env=WIDE, prog_name="ledger")
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "ledger")
def test_a_flag_shows_no_value_placeholder(path: list[str]) -> None:
    """Before, every flag's help showed `<bool>` (`--json <bool>`), as if it took a value."""
    text = help_of(path)
    assert "<bool>" not in text
    assert re.search(r"--help\s+Show this message", text)


def test_an_option_that_takes_a_value_still_shows_its_type() -> None:
    text = help_of(["history"])
    assert re.search(r"--db\s+<str>", text) and re.search(r"--json\s+Print", text)


@pytest.mark.parametrize("path", COMMANDS[1:], ids=" ".join)
def test_completion_is_offered_at_the_root_only(path: list[str]) -> None:
    """Before, `ledger consume --help` offered --install-completion, which `ledger` refused."""
    assert "completion" not in help_of(path)


def test_the_root_offers_completion_and_it_works(tmp_path: Path) -> None:
    text = help_of([])
    assert "--install-completion" in text and "--show-completion" in text
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["HOME"] = str(tmp_path)
    shown = subprocess.run(
        [LEDGER, "--show-completion", "bash"], capture_output=True, text=True, env=env, timeout=60
    )
    assert shown.returncode == 0 and "complete -o default -F _ledger_completion ledger" in (
        shown.stdout
    )
    installed = subprocess.run(
        [LEDGER, "--install-completion", "bash"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert installed.returncode == 0, installed.stderr
    assert "_ledger_completion" in (tmp_path / ".bash_completions" / "ledger.sh").read_text()
    # What bash asks through that script: the commands, the plugins' among them.
    for words, cword, expected in (
        ("ledger con", "1", "consume"),
        ("ledger dead-l", "1", "dead-letters"),
        ("ledger dead-letters re", "2", "retry"),
        ("ledger history u-1 --belie", "3", "--believed-at"),
    ):
        asking = {"_LEDGER_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
        asked = subprocess.run(
            [LEDGER], capture_output=True, text=True, env={**env, **asking}, timeout=60
        )
        assert asked.returncode == 0 and expected in asked.stdout.split(), (words, asked)


def _json_commands() -> tuple[set[str], set[str]]:
    with_json, without = set(), set()
    for path, command in commands():
        if hasattr(command, "list_commands"):
            continue
        options = {opt for param in command.params for opt in getattr(param, "opts", ())}
        (with_json if "--json" in options else without).add(" ".join(path))
    return with_json, without


def test_the_documentation_names_the_commands_without_json() -> None:
    """Before, the README and docs said every command has --json; the services (serve,
    consume, changefeed) do not (they log, --log-format json). The documentation names
    them, and no other."""
    with_json, without = _json_commands()
    assert with_json and without == {"serve", "consume", "changefeed"}
    for page in ("README.md", "docs/cli.md"):
        text = " ".join((ROOT / page).read_text().split())
        assert "every command has `--help` and `--json`" not in text.lower(), page
        found = re.search(r"every command but (.+?), has `--json`", text, re.IGNORECASE)
        assert found, page
        assert set(re.findall(r"`([a-z-]+)`", found.group(1))) == without, page


def test_a_replay_that_applied_nothing_reports_no_throughput(tmp_path: Path) -> None:
    """Before, a second replay of a file printed a rate of the events it skipped."""
    cli = Cli(f"sqlite:///{tmp_path / 'ledger.db'}")
    events = write_jsonl(tmp_path / "e.jsonl", [signup(1, "u-1")])
    assert "throughput" in cli.run("replay", str(events)).stdout
    again = cli.run("replay", str(events))
    assert "already applied earlier" in again.stdout and "throughput" not in again.stdout
    summary = json.loads(cli.run("replay", str(events), "--json").stdout)
    assert summary["applied"] == 0 and summary["events_per_second"] is None
