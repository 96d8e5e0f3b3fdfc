"""Fuzzing `ledger replay` on SQLite and on PostgreSQL with mutated JSON lines (issue
"Hostile input"): the mutants of tests/helpers/fuzzing.py through the real CLI, with fewer
examples than the in-memory levels of tests/unit/test_fuzz.py. Every example asserts:
nothing raises; the replay applies and recognises as duplicates what the in-memory
pipeline does with the valid lines alone, builds the same history rows, dead-letters every
other line with a non-empty reason, and a second replay applies nothing.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given

from ledger.config import ByteLimits
from ledger.store.schema import dead_letters
from tests.helpers import postgres
from tests.helpers.fuzzing import (
    CLI_EXAMPLES,
    apply_in_memory,
    fuzz,
    json_cases,
    normalised,
    read_file,
    valid_alone,
)
from tests.support import Cli, history_rows

pytestmark = pytest.mark.slow

# --- the CLI on both databases ------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """An empty store per example (a function-scoped fixture would be shared by all)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}"
        return
    with postgres.fresh_database("ledger_fuzz") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        request.getfixturevalue("postgres_available")
    return request.param


@fuzz(CLI_EXAMPLES, HealthCheck.function_scoped_fixture)
@given(lines=json_cases(cli=True))
def test_json_mutants_through_the_cli(database_kind: str, lines: list[bytes]) -> None:
    limits = ByteLimits()
    valid = [valid_alone(line, limits) for line in lines]
    # A valid line without a record time would get the replay's clock time.
    assume(all(v[1] is not None for v in valid if v is not None))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "fuzz.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        ref_lines = [line for line, v in zip(lines, valid, strict=True) if v is not None]
        reference = read_file(ref_lines, limits)
        ref_store, ref = apply_in_memory(reference)
        with fresh_database(database_kind, folder) as url:
            cli = Cli(url)
            result = cli.run("replay", str(path), "--json", expect=None)
            assert result.exit_code in (0, 3), result.stderr
            summary = json.loads(result.stdout)
            assert (summary["applied"], summary["duplicates"]) == (ref.applied, ref.duplicates)
            invalid = sum(v is None for v in valid)
            assert summary["dead_lettered"] == invalid + ref.dead_lettered
            assert (result.exit_code == 3) == bool(summary["dead_lettered"])
            assert history_rows(url) == normalised(ref_store.history_rows())
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                reasons = conn.execute(sa.select(dead_letters.c.reason)).scalars().all()
            engine.dispose()
            assert len(reasons) == summary["dead_lettered"]
            assert all(r.strip() for r in reasons)
            again = cli.run("replay", str(path), "--json", expect=0)
            assert json.loads(again.stdout)["applied"] == 0


