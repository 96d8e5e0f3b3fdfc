"""Loading policies from their data files (TOML, one per terms version)."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.domain.policy import Policy, PolicyError, PolicySet, parse_policy
from ledger.domain.policy_checks import PolicyChecks
from ledger.domain.policy_checks_parsing import check_references, parse_checks
from ledger.errors import LedgerError
from ledger.resources import policies_dir


def load_policies(directory: Path | None = None) -> PolicySet:
    """Load and validate every `*.toml` in `directory`; raises PolicyError listing every
    problem with its file and rule id."""
    directory = directory or policies_dir()
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise PolicyError([f"{directory}: no policy files (*.toml)"])
    problems: list[str] = []
    policies: list[Policy] = []
    for path in files:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path.name}: not valid TOML: {exc}")
            continue
        policy = parse_policy(data, path.name, problems)
        if policy is not None:
            policies.append(policy)
    if problems:
        raise PolicyError(problems)
    return PolicySet(policies)


# --- candidate sets: DIR|FILE lists laid over the shipped policies ------------------------


class PolicyPathError(LedgerError):
    """A policy path that cannot be read at all (missing, empty directory)."""


@dataclass(frozen=True)
class PolicyFiles:
    """A candidate policy set: the shipped policies with the given files laid over them
    (a given file defines a new version or replaces the shipped file of its version).

    `policies` is None when the files do not make a set at all; with `problems` it is
    only good for lint (`require()` refuses it). `given` lists the versions the given
    files define, the ones under review; `checks` holds every file's invariants and
    examples by version."""

    policies: PolicySet | None
    given: tuple[str, ...]
    checks: dict[str, PolicyChecks] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # version -> file, as named

    def require(self) -> PolicySet:
        if self.problems or self.policies is None:
            raise PolicyError(self.problems or ["no policies"])
        return self.policies


def expand_policy_paths(paths: Sequence[Path]) -> list[Path]:
    """Each DIR as its `*.toml` files (sorted), each FILE as itself."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.toml") if p.is_file())
            if not found:
                raise PolicyPathError(f"{path}: no policy files (*.toml) in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise PolicyPathError(f"{path}: not a policy file or directory")
        else:
            raise PolicyPathError(f"{path}: no such file or directory")
    return files


def _read(path: Path, source: str, problems: list[str]) -> dict[str, Any] | None:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        problems.append(f"{source}: not UTF-8 text")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{source}: not valid TOML: {exc}")
    except OSError as exc:
        problems.append(f"{source}: cannot read: {exc.strerror or exc}")
    return None


def read_policy_paths(paths: Sequence[Path] | None = None) -> PolicyFiles:
    """The candidate set named by DIR|FILE paths (none: the shipped policies), every
    problem collected instead of raised. PolicyPathError for paths that do not exist."""
    shipped = sorted(policies_dir().glob("*.toml"))
    given_files = expand_policy_paths(paths) if paths else shipped
    problems: list[str] = []
    parsed: list[tuple[Policy, PolicyChecks, bool]] = []  # (policy, checks, given)
    replaced: set[str] = set()
    for path, is_given in [(p, True) for p in given_files] + [(p, False) for p in shipped]:
        if not is_given and path in given_files:
            continue
        source = str(path) if is_given and paths else path.name
        data = _read(path, source, problems)
        if data is None:
            continue
        version = data.get("version")
        if not is_given and version in replaced:
            continue  # a given file defines this version instead
        file_problems: list[str] = []
        policy = parse_policy(data, source, file_problems)
        checks = parse_checks(data, source, str(version), file_problems)
        problems.extend(file_problems)
        if is_given and isinstance(version, str):
            replaced.add(version)
        if policy is not None:
            parsed.append((policy, checks, is_given))
    # Built even when some file has problems, so that lint can still look at the rest.
    policies: PolicySet | None = None
    try:
        policies = PolicySet(p for p, _, _ in parsed)
    except PolicyError as exc:
        problems.extend(exc.problems)
    checks_by_version = {p.version: c for p, c, _ in parsed}
    if policies is not None:
        problems.extend(check_references(checks_by_version, policies))
    return PolicyFiles(
        policies,
        tuple(dict.fromkeys(p.version for p, _, g in parsed if g)),
        checks_by_version,
        problems,
        {p.version: p.source for p, _, _ in parsed},
    )


def load_policy_paths(paths: Sequence[Path] | None = None) -> PolicyFiles:
    """As `read_policy_paths`, but PolicyError (every problem, by file and id) unless the
    set is valid."""
    files = read_policy_paths(paths)
    files.require()
    return files
