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
from hypothesis import strategies as st

from ledger.config import ByteLimits
from ledger.store.schema import dead_letters
from tests.factories import signup
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
from tests.support import Cli, history_rows, write_jsonl

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


# --- ledger erase with hostile arguments ----------------------------------------------------

_ERASE_TEXT = st.one_of(
    st.text(st.characters(codec=None), max_size=110),
    st.sampled_from(["u-1", "u-2", "", "\x1b[31mred", "a\nb", "x" * 101, "R-1"]),
)


@fuzz(CLI_EXAMPLES, HealthCheck.function_scoped_fixture)
@given(user=_ERASE_TEXT, request_id=_ERASE_TEXT, reason=st.one_of(st.none(), _ERASE_TEXT))
def test_hostile_erase_arguments_through_the_cli(
    database_kind: str, user: str, request_id: str, reason: str | None
) -> None:
    """`ledger erase` on a store holding u-1: exit 0 (u-1 erased, or erased already), 1 (an
    unknown user) or 2 (a refused argument), one printable line on stderr; only u-1 can be
    erased, and the store verifies afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        events = write_jsonl(folder / "e.jsonl", [signup(1, "u-1")])
        with fresh_database(database_kind, folder) as url:
            cli = Cli(url)
            cli.run("replay", str(events))
            argv = ["erase", user, "--request-id", request_id, "--yes", "--json"]
            if reason is not None:
                argv += ["--reason", reason]
            result = cli.run(*argv, expect=None)
            assert result.exit_code in (0, 1, 2), result.stderr
            if result.exit_code:
                assert result.stderr.startswith("ledger: error:"), result.stderr
                assert result.stderr.count("\n") == 1 and "\x1b" not in result.stderr
            else:
                assert user == "u-1"
                report = json.loads(result.stdout)
                assert report["request_id"] == request_id
            erased = "erased at" in cli.run("history", "u-1").stdout
            assert erased == (result.exit_code == 0)
            cli.run("verify")
