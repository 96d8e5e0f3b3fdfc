"""`make demo`: the main job on the embedded default, as a user would run it.

Generates ~100k users' events, replays them into a fresh SQLite ledger, then shows the
history, explanation and timeline picture of a user whose rulebook changed at least twice.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

from sqlalchemy import select

from ledger.store.database import open_engine
from ledger.store.schema import HISTORY_FROM, assignment_history, history_columns

OUT = Path("demo-out")
SEED = 2026


def run(*args: str, ok: tuple[int, ...] = (0,)) -> None:
    ledger = Path(sys.executable).with_name("ledger")
    print(f"\n$ ledger {shlex.join(args)}", flush=True)
    code = subprocess.call([str(ledger), *args])
    if code not in ok:
        sys.exit(f"demo: `ledger {args[0]}` failed with exit status {code}")


def user_with_changes(db: str, at_least: int = 2) -> str:
    """A user whose believed history changes rulebook `at_least` times, preferring one
    whose history was also corrected by a late event."""
    engine = open_engine(db)
    h = assignment_history.c
    rows = engine.connect().execute(
        select(*history_columns("user_id", "assignment", "superseded_at"))
        .select_from(HISTORY_FROM)
        .order_by(h.user_id, h.valid_from)
    )
    by_user: dict[str, list[str]] = {}
    corrected: set[str] = set()
    for user_id, assignment, superseded_at in rows:
        if superseded_at is None:
            by_user.setdefault(user_id, []).append(assignment)
        else:
            corrected.add(user_id)
    engine.dispose()
    candidates = [
        u for u, seq in by_user.items() if sum(a != b for a, b in pairwise(seq)) >= at_least
    ]
    if not candidates:
        sys.exit("demo: no user changed rulebook twice; the generator should make many")
    preferred = [u for u in candidates if u in corrected]
    return (preferred or candidates)[0]


def split(path: Path, share: float) -> tuple[Path, Path]:
    lines = path.read_bytes().splitlines(keepends=True)
    cut = int(len(lines) * share)
    first, second = path.with_name("part-1.jsonl"), path.with_name("part-2.jsonl")
    first.write_bytes(b"".join(lines[:cut]))
    second.write_bytes(b"".join(lines[cut:]))
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description="The ledger's main job, end to end.")
    parser.add_argument("--users", type=int, default=100_000, help="users to generate")
    users = parser.parse_args().users
    started = time.perf_counter()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    events = OUT / "events.jsonl"
    db = f"sqlite:///{OUT / 'ledger.db'}"
    run("generate", "--users", str(users), "--seed", str(SEED), "-o", str(events))
    # The generated events carry a log's record times: a late delivery is recorded days
    # after the events around it, so the beliefs it corrects keep their own span of record
    # time (history --all, the timeline's vertical axis). Two replays, like a ledger fed day
    # after day, end exactly as one would: record time comes from the log, not the replay.
    first, second = split(events, 0.9)
    run("replay", str(first), "--db", db, ok=(0, 3))
    run("replay", str(second), "--db", db, ok=(0, 3))
    user = user_with_changes(db)
    run("history", user, "--db", db)
    run("history", user, "--all", "--db", db)
    run("explain", user, "--db", db)
    run("current", user, "--at", "2026-06-01", "--db", db)
    run("timeline", user, "-o", str(OUT / f"timeline-{user}.html"), "--db", db)
    print(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s; the ledger is in "
        f"{OUT / 'ledger.db'} (try: .venv/bin/ledger history {user} --db {db} --json)"
    )


if __name__ == "__main__":
    main()
