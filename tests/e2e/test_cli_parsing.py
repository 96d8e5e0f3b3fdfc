"""The two parsers of `ledger current|history|explain` agree.

The console script parses a plain read itself (`ledger.cli.history.plain_call`), for
start-up time, and leaves any other command line to typer; both parsers are built from the
declarations in `ledger.cli.options`. These tests start from what typer makes of the
commands (its parameters), not from those declarations, so they fail if the two parsers
ever disagree, however that comes about: every option typer knows is one the plain parser
takes, with the same meaning (the command's code is called with the same arguments); any
command line the plain parser takes, typer takes alike; a command line it leaves to typer
(an unknown, misspelt or misused option, help) is answered by the console script exactly as
by typer (exit status, usage text, error line); and a plain read that fails does so with
typer's exit status and one error line.
"""

from __future__ import annotations

import inspect
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer.main
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ledger.cli import console_main
from ledger.cli import history as plain_commands
from ledger.cli.history import FLAGS, VALUED, plain_call
from ledger.cli.main import app, plugins
from ledger.cli.options import DB, JSON, READS, Option
from ledger.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE

LEDGER = str(Path(sys.executable).with_name("ledger"))
USER = "u-000001"
# What a command line gives each option typer declares, to read a store (`--db` is the
# store's URL), and to fail through the plain path. A new option needs its entries here.
GOOD = {"--at": "2026-04-15", "--believed-at": "2030-01-01"}
BAD = {"--at": "soon", "--believed-at": "2026-13-45", "--db": "nonsense"}

Call = tuple[str, dict[str, Any]]
Answer = tuple[int, str, str]


# --- what typer makes of the commands ---------------------------------------------------


@cache
def typer_group() -> Any:
    return typer.main.get_command(app)


def typer_command(name: str) -> Any:
    return typer_group().commands[name]


def typer_options(name: str) -> list[Any]:
    return [p for p in typer_command(name).params if p.param_type_name == "option"]


def described(param: Any) -> dict[str, Any]:
    """What decides how typer parses an option and what `--help` says of it."""
    keys = ("opts", "secondary_opts", "is_flag", "count", "multiple", "nargs", "required")
    more = ("default", "envvar", "hidden", "help", "show_default")
    return {key: getattr(param, key) for key in (*keys, *more)}


def as_declared(option: Option) -> dict[str, Any]:
    return {
        "opts": [option.name],
        "secondary_opts": [],
        "is_flag": option.is_flag,
        "count": False,
        "multiple": False,
        "nargs": 1,
        "required": False,
        "default": option.default,
        "envvar": None,
        "hidden": False,
        "help": option.help,
        "show_default": option.is_flag,
    }


def ledger_commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every command of the library's own (not the plugins'), by its command line."""
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        if not path and name in plugins():
            continue
        command = group.get_command(ctx, name)
        if hasattr(command, "list_commands"):
            yield from ledger_commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


# --- the ways to run a command line -------------------------------------------------------


def _unset_ledger_environment() -> dict[str, str | None]:
    return {key: None for key in os.environ if key.startswith("LEDGER_")}


def _status(exc: SystemExit) -> int:
    """The exit status of `sys.exit(code)`: None is success, a message a failure."""
    if exc.code is None:
        return EXIT_OK
    return exc.code if isinstance(exc.code, int) else EXIT_ERROR


def _answer(run: Callable[[], object]) -> Answer:
    """What `run` (a command line's whole run) exits with and prints, run as the console
    script runs: `sys.argv[0]` and `__main__` the script `ledger` (whose name usage text
    shows), and no LEDGER_* variable set."""
    with (
        pytest.MonkeyPatch.context() as patch,
        CliRunner().isolation(env=_unset_ledger_environment()) as (out, err, _),
    ):
        patch.setattr(sys, "argv", ["ledger"])
        patch.setitem(sys.modules, "__main__", ModuleType("__main__"))
        try:
            run()
            code = EXIT_OK
        except SystemExit as exc:
            code = _status(exc)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return code, out.getvalue().decode(), err.getvalue().decode()


def through_typer(args: list[str]) -> Answer:
    """Typer alone: how `ledger.cli.main.app` answers every command line the plain parser
    leaves to it."""
    return _answer(lambda: typer_group().main(args=args, prog_name="ledger"))


def through_console_script(args: list[str]) -> Answer:
    """The console script's `main` (the plain parser first, then typer), in this process."""

    def run() -> None:
        sys.argv[1:] = args
        console_main()

    return _answer(run)


def through_process(args: list[str]) -> Answer:
    """The `ledger` console script as a process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    done = subprocess.run(
        [LEDGER, *args], capture_output=True, text=True, env=environment, timeout=120
    )
    return done.returncode, done.stdout, done.stderr


class _Record:
    def __init__(self, name: str, calls: list[Call]) -> None:
        self.name, self.calls = name, calls

    def __call__(self, **params: Any) -> None:
        self.calls.append((self.name, params))


@contextmanager
def recording() -> Iterator[list[Call]]:
    """The code of current, history and explain replaced by a record of its calls, for
    typer's commands and the plain parser alike."""
    calls: list[Call] = []
    with pytest.MonkeyPatch.context() as patch:
        for name in READS:
            patch.setattr(plain_commands, name, _Record(name, calls))
            patch.setitem(plain_commands.COMMANDS, name, _Record(name, calls))  # type: ignore[arg-type]
        yield calls


def called_through_plain(args: list[str]) -> list[Call] | None:
    """The calls a command line makes through the plain parser; None if it leaves it."""
    with recording() as calls:
        code = plain_commands.run_plain(args)
    if code is None:
        return None
    assert code == EXIT_OK
    return calls


def called_through_typer(args: list[str]) -> tuple[int, list[Call]]:
    with recording() as calls:
        code = through_typer(args)[0]
    return code, calls


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("parsing")
    events, url = tmp / "events.jsonl", f"sqlite:///{tmp / 'ledger.db'}"
    for args in (
        ["generate", "--users", "5", "--seed", "7", "-o", str(events)],
        ["replay", str(events), "--db", url],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    return url


# --- one declaration ----------------------------------------------------------------------


def test_the_read_commands_are_the_same_for_both() -> None:
    assert set(plain_commands.COMMANDS) == set(READS)
    assert set(READS) <= set(typer_group().commands)


@pytest.mark.parametrize("name", list(READS))
def test_typer_makes_each_read_command_of_its_declarations(name: str) -> None:
    declared = READS[name]
    params = typer_command(name).params
    assert [(p.param_type_name, p.name) for p in params] == [
        ("argument", declared.argument.param),
        *(("option", option.param) for option in declared.options),
    ]
    argument, *options = params
    assert (argument.required, argument.nargs, argument.multiple, argument.help) == (
        True,
        1,
        False,
        declared.argument.help,
    )
    assert [described(p) for p in options] == [as_declared(o) for o in declared.options]


@pytest.mark.parametrize("name", list(READS))
def test_the_code_of_each_read_command_takes_what_is_declared(name: str) -> None:
    """Both parsers call it with every declared parameter, by name (the defaults are the
    declarations')."""
    declared = READS[name]
    parameters = inspect.signature(plain_commands.COMMANDS[name]).parameters.values()
    assert [(p.name, p.kind, p.default) for p in parameters] == [
        (param, inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.empty)
        for param in (declared.argument.param, *(o.param for o in declared.options))
    ]


def test_every_command_s_db_and_json_are_the_declared_ones() -> None:
    found = {DB.name: 0, JSON.name: 0}
    for line, command in ledger_commands(typer_group()):
        for param in command.params:
            for option in (DB, JSON):
                if option.name in param.opts:
                    assert described(param) == as_declared(option), line
                    found[option.name] += 1
    assert min(found.values()) >= len(READS)


# --- the plain parser knows what typer knows ----------------------------------------------


@pytest.mark.parametrize("name", list(READS))
def test_every_option_typer_knows_is_one_the_plain_parser_takes(name: str) -> None:
    options = typer_options(name)
    for param in options:
        # What the plain parser can read: one long name, a flag or one value, at most once.
        assert [len(param.opts), param.secondary_opts, param.multiple, param.count] == [
            1,
            [],
            False,
            False,
        ], param.name
        assert param.opts[0].startswith("--") and param.nargs == 1, param.name
    assert dict(FLAGS[name]) == {p.opts[0]: p.name for p in options if p.is_flag}
    assert dict(VALUED[name]) == {p.opts[0]: p.name for p in options if not p.is_flag}


def plain_lines(name: str) -> list[list[str]]:
    """Command lines of `name` with every combination of the options typer declares for it,
    in either order, valued ones as `--opt VALUE` and as `--opt=VALUE` (a value of each
    its own, with `=` and a space in it), the user first or last."""
    lines: set[tuple[str, ...]] = set()
    options = typer_options(name)
    for size in range(len(options) + 1):
        for chosen in itertools.combinations(options, size):
            for order, joined in itertools.product((chosen, chosen[::-1]), (False, True)):
                words: list[str] = []
                for param in order:
                    option, value = param.opts[0], f"{param.name} v=1"
                    if param.is_flag:
                        words.append(option)
                    elif joined:
                        words.append(f"{option}={value}")
                    else:
                        words += [option, value]
                lines.add((name, USER, *words))
                lines.add((name, *words, USER))
    return [list(line) for line in sorted(lines)]


@pytest.mark.parametrize("name", list(READS))
def test_the_plain_parser_takes_every_option_typer_knows_with_the_same_meaning(
    name: str,
) -> None:
    lines = plain_lines(name)
    assert len(lines) > 2 ** len(typer_options(name))
    for args in lines:
        plain = called_through_plain(args)
        assert plain is not None, f"the plain parser leaves {args} to typer"
        assert called_through_typer(args) == (EXIT_OK, plain), args
        assert len(plain) == 1


def _words() -> list[str]:
    """Words to make command lines of: every option of the read commands, right, misspelt
    and misused, values, and what else typer reads."""
    words = {"u-2", "2026-04-01", "x=y", "--", "-", "-h", "--help", "-u", "--no-json"}
    for name in READS:
        for param in typer_options(name):
            option = param.opts[0]
            words |= {option, f"{option}=", f"{option}=v", option[:-1], f"{option}s"}
            words |= {f"--no-{option[2:]}", option.upper()}
    return sorted(words)


def _options() -> list[str]:
    """The options of the read commands, and values."""
    options = {p.opts[0] for name in READS for p in typer_options(name)}
    return sorted({*options, *(f"{option}=v" for option in options), "x", "2026-04-01"})


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(READS)),
    words=st.lists(st.sampled_from(_options()) | st.sampled_from(_words()), max_size=6),
    user=st.sampled_from([USER, "", "a b"]) | st.none(),
    where=st.integers(min_value=0, max_value=6),
)
def test_what_the_plain_parser_takes_typer_takes_alike(
    name: str, words: list[str], user: str | None, where: int
) -> None:
    if user is not None:
        words.insert(where, user)
    args = [name, *words]
    plain = called_through_plain(args)
    event("left to typer" if plain is None else "taken by the plain parser")
    if plain is not None:
        assert called_through_typer(args) == (EXIT_OK, plain), args


# --- what the plain parser leaves to typer is answered as typer answers it ---------------


def usage_errors(name: str) -> Iterator[list[str]]:
    """Command lines of `name` that typer refuses with a usage error, from its options."""
    options = typer_options(name)
    yield [name]
    yield [name, USER, "u-2"]
    yield [name, USER, "--no-such-option"]
    for param in options:
        option = param.opts[0]
        yield [name, USER, option[:-1]]  # abbreviated
        yield [name, USER, f"-{option}"]
        if param.is_flag:
            yield [name, USER, f"{option}=yes"]
            yield [name, option]  # no user
        else:
            yield [name, USER, option]  # no value
            yield [name, option, "x"]  # no user
    own = {p.opts[0] for p in options}
    for other in READS.values():
        for option in other.options:
            if option.name not in own:
                yield [name, USER, option.name, *([] if option.is_flag else ["x"])]


@pytest.mark.parametrize("name", list(READS))
def test_a_usage_error_is_typer_s(name: str) -> None:
    for args in usage_errors(name):
        assert plain_call(args) is None, args
        answer = through_console_script(args)
        assert answer == through_typer(args), args
        code, out, err = answer
        assert (code, out) == (EXIT_USAGE, ""), args
        assert err.strip(), args


@pytest.mark.parametrize("name", list(READS))
@pytest.mark.parametrize("where", ["--help", "-h"])
def test_help_is_typer_s(name: str, where: str) -> None:
    for args in ([name, where], [name, USER, where], [name, USER, "--json", where]):
        assert plain_call(args) is None
        assert through_console_script(args) == through_typer(args), args
    assert through_typer([name, "--help"])[0] == EXIT_OK


# --- a plain read that fails, fails as typer's --------------------------------------------


def failing_reads(name: str, store: str) -> Iterator[tuple[list[str], int]]:
    """Plain reads of `name` that fail, with typer's exit status: each valued option with
    a value the command refuses, and a user the ledger does not know."""
    for param in typer_options(name):
        if not param.is_flag:
            option = param.opts[0]
            db = [] if option == DB.name else [DB.name, store]
            status = EXIT_ERROR if option == DB.name else EXIT_USAGE
            yield [name, USER, option, BAD[option], *db], status
    yield [name, "u-404", DB.name, store], EXIT_ERROR


@pytest.mark.parametrize("name", list(READS))
def test_a_failing_plain_read_fails_as_typer_s(name: str, store: str) -> None:
    for args, status in failing_reads(name, store):
        assert plain_call(args) is not None, args
        answer = through_console_script(args)
        assert answer == through_typer(args), args
        code, out, err = answer
        assert (code, out) == (status, ""), args
        assert err.startswith("ledger: error: ") and err.count("\n") == 1, (args, err)


# --- as a process -------------------------------------------------------------------------


def every_option(name: str, store: str) -> list[str]:
    """`name USER` with every option typer declares for it, to read `store`."""
    words = [name, USER]
    for param in typer_options(name):
        option = param.opts[0]
        words += (
            [option] if param.is_flag else [option, store if option == DB.name else GOOD[option]]
        )
    return words


@pytest.mark.parametrize("name", list(READS))
def test_the_console_script_answers_as_typer(name: str, store: str) -> None:
    """One of each kind above through a `ledger` process: a read with every option, the
    same read as text, a failing read, a usage error, help."""
    read = every_option(name, store)
    text = [w for w in read if all(w not in p.opts for p in typer_options(name) if p.is_flag)]
    failing, _ = next(failing_reads(name, store))
    for args in (read, text, failing, [name, USER, "--no-such-option"], [name, "--help"]):
        assert through_process(args) == through_typer(args), args
    code, out, _ = through_process(read)
    assert code == EXIT_OK and out.strip()
