"""Several writers on one store, truly in parallel (separate processes), on the real SQLite
and PostgreSQL: they never corrupt a history, and their result equals applying the same
events one writer after the other."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ledger.store.database import HEAD_REVISION
from tests.support import Cli, consistent
from tools.common import LEDGER, believed, two_files_sharing_users

pytestmark = pytest.mark.slow


def run_together(*commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    done = []
    for proc, c in zip(procs, commands, strict=True):
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(c, proc.returncode, out, err))
    return done


def test_two_replays_sharing_users_equal_a_sequential_replay(
    db_url: str, tmp_path: Path, sqlite_url: str
) -> None:
    whole, a, b = two_files_sharing_users(tmp_path, users=1500)
    # Small batches: many interleavings of the two writers on the same users.
    flags = ["--db", db_url, "--batch-size", "300", "--json"]
    first, second = run_together(
        [LEDGER, "replay", str(a), *flags], [LEDGER, "replay", str(b), *flags]
    )
    for done in (first, second):
        assert done.returncode in (0, 3), done.stderr[-2000:]
        assert "Traceback" not in done.stderr
    applied = sum(json.loads(d.stdout)["applied"] for d in (first, second))
    reference = tmp_path / "reference.db"
    ref_url = f"sqlite:///{reference}"
    ref = Cli(ref_url).json("replay", str(whole), expect=None)
    assert applied == ref["applied"]
    consistent(db_url)
    assert believed(db_url) == believed(ref_url)


def test_db_upgrades_at_once_on_an_empty_database_all_succeed(db_url: str) -> None:
    """Was "table alembic_version already exists" for one of them."""
    for _ in range(3):
        results = run_together(
            *[[LEDGER, "db", "upgrade", "--db", db_url, "--json"] for _ in range(4)]
        )
        assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
        assert {json.loads(r.stdout)["to"] for r in results} == {HEAD_REVISION}
