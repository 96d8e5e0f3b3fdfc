"""The plain read path's parsing, without a store or a process: the options it knows are the
ones typer declares, anything else is left to typer, and a plain read is called with what
its command line says. The reads themselves, as processes against stores, are in
tests/e2e/test_plain_reads.py."""

from __future__ import annotations

import pytest
import typer.main

from ledger.cli.history import FLAGS, VALUED, plain_call
from ledger.cli.main import app


def test_the_plain_options_are_those_typer_declares() -> None:
    group = typer.main.get_command(app)
    for name in ("current", "history", "explain"):
        params = group.commands[name].params  # type: ignore[attr-defined]
        options = [p for p in params if p.param_type_name == "option"]
        assert [p.name for p in params if p.param_type_name == "argument"] == ["user"]
        declared_flags = {opt: p.name for p in options if p.is_flag for opt in p.opts}
        declared_valued = {opt: p.name for p in options if not p.is_flag for opt in p.opts}
        assert declared_flags == dict(FLAGS[name])
        assert declared_valued == dict(VALUED[name])
        assert not any(p.secondary_opts for p in options), "a --no-... form typer accepts"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["history"],
        ["history", "--help"],
        ["history", "u-1", "--help"],
        ["history", "-h"],
        ["history", "u-1", "u-2"],
        ["history", "u-1", "--json", "--json"],
        ["history", "u-1", "--db", "a", "--db", "b"],
        ["history", "u-1", "--db"],
        ["history", "u-1", "--db", "--json"],
        ["history", "u-1", "--js"],
        ["history", "u-1", "--json=yes"],
        ["history", "u-1", "--at", "2026-01-01"],
        ["history", "--", "-u"],
        ["history", "-u"],
        ["history", "-"],
        ["current", "u-1", "--all"],
        ["replay", "events.jsonl"],
        ["db", "upgrade"],
    ],
    ids=repr,
)
def test_anything_but_a_plain_read_is_left_to_typer(args: list[str]) -> None:
    assert plain_call(args) is None


def test_a_plain_read_is_called_with_what_it_says() -> None:
    call = plain_call(["history", "--db=sqlite:///x.db", "u-1", "--all", "--believed-at", "x"])
    assert call is not None
    command_, params = call
    assert command_.__name__ == "history"
    assert params == {"db": "sqlite:///x.db", "user": "u-1", "show_all": True, "believed_at": "x"}
    assert plain_call(["explain", ""]) is not None  # an empty user id is a user id to typer too
