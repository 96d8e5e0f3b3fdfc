"""Several writers on one store, truly in parallel (separate processes), on the real SQLite
and PostgreSQL: they never corrupt a history, and their result equals applying the same
events one writer after the other."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import sqlalchemy as sa

from ledger.codecs.jsonl import event_to_json_line
from ledger.domain.time import from_millis
from ledger.generate import generate_events
from ledger.store.database import HEAD_REVISION
from ledger.store.schema import assignment_history, events, users
from tests.support import Cli

LEDGER = str(Path(sys.executable).with_name("ledger"))


def believed(url: str) -> list[tuple]:
    """The believed history (valid time) of every user: what must not depend on which writer
    applied which event first. Record times of superseded beliefs legitimately do."""
    h = assignment_history.c
    cols = [h.user_id, h.valid_from, h.valid_to, h.assignment, h.policy, h.rule, h.facts]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.select(*cols).where(h.superseded_at.is_(None))).all()
    engine.dispose()
    return sorted(
        (tuple(json.dumps(v, sort_keys=True, default=str) for v in r) for r in found), key=repr
    )


def consistent(url: str) -> None:
    """Each user: one open row, believed rows tiling valid time, users.events = its events,
    and per-user sequence numbers 1..n."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        e = events.c
        per_user = conn.execute(
            sa.select(e.user_id, sa.func.count(), sa.func.max(e.seq)).group_by(e.user_id)
        ).all()
        counts = {user: n for user, n, _ in per_user}
        seqs = {user: top for user, _, top in per_user}
        stored = {user: n for user, n in conn.execute(sa.select(users.c.user_id, users.c.events))}
        h = assignment_history.c
        rows = conn.execute(
            sa.select(h.user_id, h.valid_from, h.valid_to)
            .where(h.superseded_at.is_(None))
            .order_by(h.user_id, h.valid_from)
        ).all()
    engine.dispose()
    assert stored == counts == seqs
    by_user: dict[str, list] = {}
    for user, start, end in rows:
        by_user.setdefault(user, []).append((start, end))
    for user, spans in by_user.items():
        assert [e for _, e in spans].count(None) == 1, user
        for (_, end), (start, _) in pairwise(spans):
            assert end == start, user


def two_files_sharing_users(tmp_path: Path, users: int) -> tuple[Path, Path, Path]:
    """Alternate lines of one stamped stream into two files, so nearly every user has events
    in both; and the whole stream, for the sequential reference."""
    whole, a, b = tmp_path / "all.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with whole.open("w") as w, a.open("w") as fa, b.open("w") as fb:
        for i, event in enumerate(generate_events(users, seed=23)):
            line = event_to_json_line(event, from_millis(1_790_000_000_000 + i)) + "\n"
            w.write(line)
            (fa if i % 2 == 0 else fb).write(line)
    return whole, a, b


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


def test_row08_two_replays_sharing_users_equal_a_sequential_replay(
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


def test_row09_first_commands_at_once_on_an_empty_database(db_url: str) -> None:
    """Was "table alembic_version already exists" for one of them."""
    for _ in range(3):
        results = run_together(
            *[[LEDGER, "db", "upgrade", "--db", db_url, "--json"] for _ in range(4)]
        )
        assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
        assert {json.loads(r.stdout)["to"] for r in results} == {HEAD_REVISION}
