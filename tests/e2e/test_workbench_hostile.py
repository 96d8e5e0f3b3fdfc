"""Hostile values for every option of `ledger impact`, `ledger policy test` and `ledger
policy check`: each is refused with the exit status of the table in ledger/errors.py and,
for the ledger's own errors, one line on stderr (PolicyError may add indented lines, one per
problem)."""

from __future__ import annotations

import shlex
import sqlite3
from pathlib import Path

import pytest

from tests.factories import signup
from tests.support import Cli, write_jsonl

SIGNUP = signup(1)

CASES = [
    # impact
    ("impact --at soon", 2),
    ("impact --at 2026-13-45", 2),
    ("impact --at 9999-12-31T23:59:59-05:00", 2),
    ("impact --accept tos-2099-unknown --at 2026-11-01", 1),
    ("impact --accept wechat-style", 2),
    ("impact --only tos-2099-unknown", 1),
    ("impact --only ''", 1),
    ("impact --accept tos-2026-03-residency --only wechat-style", 2),
    ("impact --policies {tmp}/missing.toml", 1),
    ("impact --policies {tmp}/empty", 1),
    ("impact --policies {tmp}/garbage.toml", 1),
    ("impact --policies {tmp}/not-a-policy.toml", 1),
    ("impact --explain u-nobody", 1),
    ("impact --explain ''", 1),
    ("impact --samples 1000", 2),
    ("impact --samples -1", 2),
    ("impact --db sqlite:///{tmp}/absent.db", 1),
    ("impact --db sqlite:///{tmp}/nodir/x.db", 1),
    ("impact --db nonsense://", 1),
    ("impact --db sqlite:///{tmp}/plain.db", 1),  # a database, but not a ledger
    # policy test
    ("policy test {tmp}/missing.toml", 1),
    ("policy test {tmp}/empty", 1),
    ("policy test {tmp}/garbage.toml", 1),
    ("policy test --max-examples 0", 2),
    ("policy test --max-examples -3", 2),
    ("policy test --max-examples many", 2),
    ("policy test --seed 1 --derandomize", 2),
    ("policy test --seed x", 2),
    ("policy test --out {tmp}/afile", 2),
    # policy check
    ("policy check {tmp}/missing.toml", 1),
    ("policy check {tmp}/empty", 1),
    ("policy check {tmp}/garbage.toml", 1),
    ("policy check {tmp}/not-a-policy.toml", 1),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger with one user (every case leaves it as it was: impact only reads), and the
    odd files the cases name."""
    tmp = tmp_path_factory.mktemp("hostile")
    Cli(f"sqlite:///{tmp / 'ledger.db'}").run(
        "replay", str(write_jsonl(tmp / "one.jsonl", [SIGNUP]))
    )
    (tmp / "empty").mkdir()
    (tmp / "garbage.toml").write_text("version = [not toml\n")
    (tmp / "not-a-policy.toml").write_text('title = "no version, no rules"\n')
    (tmp / "afile").write_text("")
    plain = sqlite3.connect(tmp / "plain.db")
    plain.execute("create table t (x)")
    plain.close()
    return tmp


@pytest.mark.parametrize(("line", "code"), CASES, ids=[c[0] for c in CASES])
def test_hostile_option_values(workdir: Path, line: str, code: int) -> None:
    args = shlex.split(line.format(tmp=workdir))
    cli = Cli(f"sqlite:///{workdir / 'ledger.db'}")
    result = cli.run(*args, expect=code, db=args[0] == "impact" and "--db" not in args)
    err = result.stderr
    if err.startswith("ledger: error:"):
        _, *rest = err.rstrip("\n").split("\n")
        assert all(line.startswith("  ") for line in rest), err
    else:
        assert code == 2 and "Usage:" in err, err  # the argument parser's own usage errors
    assert "Traceback" not in err + result.stdout


def test_hostile_user_ids_print_as_plain_text(tmp_path: Path) -> None:
    """User ids reach impact's tables (samples, --explain) as typed: no Rich markup is
    interpreted and control characters are spelled out."""
    hostile = "[bold red]u\x1b[2J-1[/]"
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    cli = Cli(db)
    cli.run("replay", str(write_jsonl(tmp_path / "h.jsonl", [{**SIGNUP, "user_id": hostile}])))
    shown = "[bold red]u\\x1b[2J-1[/]"
    for args in (
        ("impact", "--only", "wechat-style", "--at", "2026-11-01"),
        ("impact", "--explain", hostile, "--at", "2026-11-01"),
    ):
        result = cli.run(*args)
        assert shown in result.stdout and "\x1b" not in result.stdout
    assert cli.json("impact", "--explain", hostile)["user_id"] == hostile
