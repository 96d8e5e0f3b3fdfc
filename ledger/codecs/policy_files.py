"""Loading policies from their data files (TOML, one per terms version)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ledger.domain.policy import Policy, PolicyError, PolicySet, parse_policy
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
