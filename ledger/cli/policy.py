"""`ledger policy check|test`: validation, lint and property tests for policy authors.

`policy_cases()` is the same suite for pytest::

    import pytest
    from ledger.cli.policy import policy_cases

    @pytest.mark.parametrize("case", policy_cases(["policies/"]), ids=str)
    def test_policy(case):
        case.check()
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli.common import JsonOption, command_group, emit_json, out, plain
from ledger.errors import LedgerError, UsageError

__all__ = ["policy_app", "policy_cases"]

DEFAULT_OUT = Path("policy-counterexamples")

policy_app = command_group(
    "Check and test classification policies before shipping them.\n\n"
    "Files and directories given are laid over the shipped policies (schemas/policies): a "
    "new version is added, a file with a shipped version replaces it; with none given, the "
    "shipped policies are checked. `check` validates and lints; `test` runs the built-in "
    "invariants, the invariants each file declares (with Hypothesis) and its examples.\n\n"
    "Exit status: 0 success (warnings may be printed); 1 errors or failed checks; 2 a usage "
    "error."
)


@policy_app.callback()
def _policy_group() -> None:
    # A callback keeps `policy` a command group.
    pass


PathsArgument = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Policy files or directories of *.toml (default: the shipped policies).",
        show_default=False,
    ),
]


class PolicyCheckFailed(LedgerError):
    pass


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@policy_app.command("check")
def check(paths: PathsArgument = None, as_json: JsonOption = False) -> None:
    """Validate policy files and lint them.

    Errors (exit 1): everything loading refuses (unknown facts or rulebooks, duplicate
    rule ids, a missing catch-all, versions that cannot be ordered) and invariants or
    examples that name unknown facts, rules or policies. Warnings (exit 0): rules that can
    never fire because earlier rules match every case they match (shadowed), facts no rule
    reads, rulebooks no bindable policy assigns. Each names its file and rule."""
    from ledger.codecs.policy_files import read_policy_paths
    from ledger.domain.policy_lint import errors, lint

    files = read_policy_paths(paths)
    findings = errors(files.problems)
    if files.policies is not None:
        findings += lint(files.policies, files.given)
    n_errors = sum(f.severity == "error" for f in findings)
    n_warnings = len(findings) - n_errors
    if as_json:
        emit_json(
            {
                "policies": [{"version": v, "file": files.sources.get(v)} for v in files.given],
                "errors": n_errors,
                "warnings": n_warnings,
                "findings": [f.to_json() for f in findings],
            }
        )
    else:
        for f in findings:
            out.print(plain(f"{f.severity}: {f.text()}"), soft_wrap=True)
        n = len(files.given)
        out.print(
            plain(
                f"checked {n} {'policy' if n == 1 else 'policies'} ({', '.join(files.given)}): "
                f"{_count(n_errors, 'error')}, {_count(n_warnings, 'warning')}"
            ),
            soft_wrap=True,
        )
    if n_errors:
        raise PolicyCheckFailed(f"{_count(n_errors, 'error')} in the policy files")


def _options(max_examples: int, seed: int | None, derandomize: bool, out_dir: Path) -> Any:
    try:
        from ledger.app.workbench.cases import TestOptions
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        # Hypothesis is in the `test` extra, not a dependency of the ledger itself.
        raise LedgerError(
            "policy tests need Hypothesis: pip install 'jurisdiction-ledger[test]'"
        ) from None
    if max_examples < 1:
        raise UsageError(f"--max-examples {max_examples}: must be at least 1")
    if seed is not None and derandomize:
        raise UsageError("use --seed or --derandomize, not both")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    return TestOptions(max_examples, seed, derandomize, out_dir)


def policy_cases(
    paths: Sequence[str | Path] | None = None,
    *,
    max_examples: int = 100,
    seed: int | None = None,
    derandomize: bool = True,
    out_dir: Path = DEFAULT_OUT,
) -> list[Any]:
    """The checks of `ledger policy test PATHS` as `PolicyCase`s for a pytest suite: run
    each with `case.check()`, which raises AssertionError with the failure and the path of
    its counterexample. Derandomised by default, so a CI run is repeatable."""
    from ledger.app.workbench.policy_tests import policy_cases as cases
    from ledger.codecs.policy_files import load_policy_paths
    from ledger.store.memory import MemoryStore

    files = load_policy_paths([Path(p) for p in paths] if paths else None)
    return cases(files, _options(max_examples, seed, derandomize, out_dir), MemoryStore)


def reproduce(result: Any, paths: Sequence[Path] | None) -> str:
    """The commands that show a counterexample in a store of its own, exactly as the check
    saw it: replayed with the same policy files (laid over the shipped ones, as here), then
    asked at the instant and under the policy the check used. Empty without a file."""
    if result.counterexample is None:
        return ""
    from ledger.domain.time import format_instant

    policies = [arg for p in paths or () for arg in ("--policies", str(p))]

    def store(path: Path) -> str:
        return f"sqlite:///{path.with_suffix('.db')}"

    db = store(result.counterexample)
    commands = [["ledger", "replay", str(result.counterexample), *policies, "--db", db]]
    at = ["--at", format_instant(result.at) or ""] if result.at is not None else []
    if result.alternative is not None:
        # Two deliveries of the same events that should have given the same history.
        other = store(result.alternative)
        commands.append(["ledger", "replay", str(result.alternative), *policies, "--db", other])
        commands.append(["ledger", "history", result.user_id, "--all", "--db", db])
        commands.append(["ledger", "history", result.user_id, "--all", "--db", other])
    elif result.only is not None:
        # The version governed from signup on, which no replay binds: `impact --only` folds
        # the stored events that way, its "candidate" is what the check saw.
        only = ["--only", result.only, "--explain", result.user_id, *at]
        commands.append(["ledger", "impact", *policies, *only, "--db", db])
    elif at:
        commands.append(["ledger", "explain", result.user_id, *at, "--db", db])
    else:
        commands.append(["ledger", "history", result.user_id, "--all", "--db", db])
    return " && ".join(shlex.join(c) for c in commands)


@policy_app.command("test")
def test(
    paths: PathsArgument = None,
    max_examples: Annotated[
        int,
        typer.Option("--max-examples", help="Generated histories per property (at least 1)."),
    ] = 100,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed the generator: the same run again.", show_default=False),
    ] = None,
    derandomize: Annotated[
        bool,
        typer.Option(
            "--derandomize",
            help="The same examples on every run, derived from each property (for CI).",
        ),
    ] = False,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Where counterexamples are written, one JSON Lines file each."),
    ] = DEFAULT_OUT,
    as_json: JsonOption = False,
) -> None:
    """Property tests and examples for policy authors.

    Built-in invariants, over generated account histories: every signed-up user has
    exactly one assignment at every instant after signup; the believed history is the same
    for every arrival order, every batch split and with duplicate deliveries. Then the
    invariants each policy file declares (sticky, implies, never), checked with the policy
    governing from signup on, and the examples it declares, run as unit tests.

    A failure prints the check's id, why, and the shrunk counterexample written as a JSON
    Lines file that `ledger replay` accepts, with the commands that show it in a store.
    Exit status: 0 all passed; 1 a check failed or the files are invalid; 2 usage."""
    options = _options(max_examples, seed, derandomize, out_dir)
    from ledger.app.workbench.policy_tests import run_policy_tests
    from ledger.codecs.policy_files import load_policy_paths
    from ledger.store.memory import MemoryStore

    files = load_policy_paths(paths)

    def show(result: Any) -> None:
        if as_json:
            return
        status = "ok  " if result.passed else "FAIL"
        out.print(plain(f"{status}  {result.id}"), soft_wrap=True)
        if not result.passed:
            out.print(plain(f"      {result.message}"), soft_wrap=True)
            if result.counterexample:
                out.print(plain(f"      counterexample: {result.counterexample}"), soft_wrap=True)
                out.print(plain(f"      see it: {reproduce(result, paths)}"), soft_wrap=True)

    results = run_policy_tests(files, options, MemoryStore, show)
    failed = [r for r in results if not r.passed]
    if as_json:
        emit_json(
            {
                "policies": list(files.given),
                "checks": len(results),
                "passed": len(results) - len(failed),
                "failed": len(failed),
                "results": [
                    {**r.to_json(), "reproduce": reproduce(r, paths) or None} for r in results
                ],
            }
        )
    else:
        out.print(
            plain(
                f"{len(results)} checks: {len(results) - len(failed)} passed, {len(failed)} failed"
            )
        )
    if failed:
        raise PolicyCheckFailed(
            f"{len(failed)} of {len(results)} policy checks failed: "
            + ", ".join(r.id for r in failed)
        )
