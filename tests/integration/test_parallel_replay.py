"""The parallel replay (`ledger.app.ingest.pipeline`) on the real databases: whatever the
number of workers and wherever batches split, the store holds exactly what a sequential
replay writes (events in the same application order, links, history, users, dead letters,
positions), including where the workers' parts cannot foresee each other and a batch
falls back to the sequential path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from ledger.app.ingest.projector import Projector
from ledger.app.ingest.replay import ReplaySummary, replay_files
from ledger.app.ingest.shards import shard_of
from ledger.codecs.policy_files import load_policies
from ledger.errors import LedgerError
from ledger.generate import generate_events, write_events
from ledger.store.database import open_engine
from ledger.store.sql import SqlStore, open_sql_store
from tests.factories import phone_change, signup, terms_accepted
from tests.helpers import postgres
from tests.helpers.failing_store import FailingStoreOpener
from tests.support import eid

POLICIES = load_policies()
KEY = b"parallel-test-key"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
LEDGER = str(Path(sys.executable).with_name("ledger"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A factory of empty stores on one backend: each call, a database of its own."""
    with ExitStack() as stack:
        count = 0

        def make() -> str:
            nonlocal count
            count += 1
            if request.param == "sqlite":
                return f"sqlite:///{tmp_path / f'ledger{count}.db'}"
            request.getfixturevalue("postgres_available")
            return stack.enter_context(postgres.fresh_database("ledger_parallel"))

        yield make


def replay(
    url: str,
    path: Path,
    *,
    workers: int,
    batch_size: int,
    opener: Callable[[], Any] | None = None,
    batch_bytes: int = 8 << 20,
) -> ReplaySummary:
    engine = open_engine(url)
    try:
        projector = Projector(SqlStore(engine), POLICIES, KEY)
        return replay_files(
            projector,
            [path],
            batch_size=batch_size,
            now=NOW,
            workers=workers,
            open_store=opener or partial(open_sql_store, url),
            parallel_min_bytes=0,
            batch_bytes=batch_bytes,
        )
    finally:
        engine.dispose()


def _value(v: Any) -> Any:
    if isinstance(v, memoryview):
        return bytes(v)
    if isinstance(v, str) and v[:1] in "[{":
        return json.loads(v)  # JSON columns come back as text on one backend
    return v


# Numbers a database hands out by itself: a PostgreSQL sequence may skip, and interned
# values are numbered in the order they were first written.
SURROGATES = {"app_seq", "id", "origin_id", "decision_id"}


def state(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a replay writes, without the surrogate numbers: events in application
    order (app_seq's rank, not its value) with their source and position, history rows
    with their decisions."""
    engine = sa.create_engine(url)
    queries = {
        "events": "SELECT e.*, o.source, o.prefix FROM events e "
        "JOIN event_origins o ON o.id = e.origin_id ORDER BY e.app_seq",
        "users": "SELECT * FROM users ORDER BY user_id",
        "history": "SELECT h.*, d.assignment, d.policy, d.rule, d.reason, d.policy_hash "
        "FROM assignment_history h JOIN decisions d ON d.id = h.decision_id "
        "ORDER BY h.user_id, h.valid_from, h.recorded_at",
        "dead_letters": "SELECT * FROM dead_letters ORDER BY id",
        "positions": "SELECT * FROM source_positions ORDER BY source, partition",
        "pins": "SELECT version, hash FROM policy_pins ORDER BY version",
    }
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name, sql in queries.items():
            result = conn.execute(sa.text(sql))
            keep = [i for i, c in enumerate(result.keys()) if c not in SURROGATES]
            out[name] = [tuple(_value(row[i]) for i in keep) for row in result]
    engine.dispose()
    return out


def test_any_number_of_workers_writes_the_sequential_store(
    fresh_url: Callable[[], str], tmp_path: Path
) -> None:
    path = tmp_path / "gen.jsonl"
    write_events(path, generate_events(250, seed=17))  # duplicates and late events included
    states, summaries = [], []
    # The last two end their batches by bytes (a few kB: some twenty lines), not count.
    runs = ((0, 97, 8 << 20), (1, 97, 8 << 20), (3, 97, 8 << 20), (2, 1000, 8 << 20))
    for workers, batch_size, batch_bytes in (*runs, (0, 1000, 4000), (3, 1000, 4000)):
        url = fresh_url()
        summaries.append(
            replay(url, path, workers=workers, batch_size=batch_size, batch_bytes=batch_bytes)
        )
        states.append(state(url))
    assert len(states[0]["events"]) > 1000
    assert summaries[0].duplicates > 0
    for other in states[1:]:
        for table in states[0]:
            assert other[table] == states[0][table], table
    counts = {(s.applied, s.duplicates, s.dead_lettered, s.users) for s in summaries}
    assert len(counts) == 1


def _users_in_shards(shards: int) -> list[str]:
    """One user id per shard of `shards` workers, in shard order."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < shards:
        n += 1
        found.setdefault(shard_of(f"user-{n}", shards), f"user-{n}")
    return [found[s] for s in range(shards)]


def test_what_the_workers_cannot_foresee_falls_back_to_the_sequential_result(
    fresh_url: Callable[[], str], tmp_path: Path
) -> None:
    """An event id claimed by users of two workers (in one batch, and in two batches the
    workers plan at the same time), input no worker can read, and an event the policies
    refuse: dead-lettered exactly as a sequential replay does, the rest applied."""
    a, b = _users_in_shards(2)
    lines = [
        json.dumps(signup(1, a)),
        json.dumps(signup(2, b)),
        json.dumps({**phone_change(3, a), "event_id": eid(90)}),
        json.dumps({**phone_change(4, b), "event_id": eid(90)}),  # same batch, other user
        "",
        "{not json",
        json.dumps({"event_id": eid(5), "type": "SignedUp"}),  # no user
        json.dumps({**phone_change(6, a, at="2026-03-01T00:00:00Z"), "event_id": eid(91)}),
        json.dumps(terms_accepted(7, b, version="tos-1999-unknown")),
        json.dumps({**phone_change(8, b, at="2026-03-02T00:00:00Z"), "event_id": eid(91)}),
        json.dumps(phone_change(9, a, at="2026-04-01T00:00:00Z")),
        json.dumps(phone_change(9, a, at="2026-04-01T00:00:00Z")),  # a plain duplicate
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    states = []
    for workers in (0, 2):
        url = fresh_url()
        summary = replay(url, path, workers=workers, batch_size=4)
        states.append(state(url))
        reasons = [d.split(": ", 1)[1] for d in summary.dead_letter_samples]
        assert sum("already recorded for another user" in r for r in reasons) == 2, reasons
        assert summary.duplicates == 1
    assert states[0] == states[1]


def test_a_failed_worker_stops_the_replay_and_a_second_replay_finishes_it(
    fresh_url: Callable[[], str], tmp_path: Path
) -> None:
    path = tmp_path / "gen.jsonl"
    write_events(path, generate_events(120, seed=5))
    sequential = fresh_url()
    replay(sequential, path, workers=0, batch_size=50)
    url = fresh_url()
    opener = FailingStoreOpener(url, fail_after=3)
    with pytest.raises(LedgerError, match=r"worker \d failed: .*planned enough"):
        replay(url, path, workers=2, batch_size=50, opener=opener)
    partial_events = len(state(url)["events"])
    assert 0 < partial_events < len(state(sequential)["events"])  # some batches committed
    replay(url, path, workers=2, batch_size=50)
    assert state(url) == state(sequential)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _left_after_sigkill(
    tmp_path: Path, seed: int, env: dict[str, str], *args: str, settle_s: float = 0.0
) -> list[psutil.Process]:
    """Replay a 3,000-user stream with `args`, SIGKILL it once it has two child processes
    (and `settle_s` more), and return those still running 15 s later."""
    path = tmp_path / "gen.jsonl"
    write_events(path, generate_events(3000, seed=seed))
    cmd = [LEDGER, "replay", str(path), "--db", f"sqlite:///{tmp_path / 'l.db'}", *args]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(children) < 2:
        children = _tree(proc.pid)
        time.sleep(0.05)
    assert len(children) >= 2, f"no helper processes started: {[p.cmdline() for p in children]}"
    time.sleep(settle_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _gone, alive = psutil.wait_procs(children, timeout=15)
    return alive


def test_workers_do_not_outlive_a_killed_replay(tmp_path: Path) -> None:
    env = {"LEDGER_PHONE_KEY": "k", "LEDGER_PARALLEL_MIN_MB": "0"}
    # Half a second of planning and writing first.
    alive = _left_after_sigkill(
        tmp_path, 3, env, "--workers", "2", "--batch-size", "50", settle_s=0.5
    )
    assert alive == [], f"left running: {[p.cmdline() for p in alive]}"


def test_phone_parsers_and_the_resource_tracker_do_not_outlive_a_killed_replay(
    tmp_path: Path,
) -> None:
    """A sequential replay parses the next batch's phone numbers in a pool process, which
    (with multiprocessing's resource tracker) kept running for ever after a SIGKILL."""
    env = {"LEDGER_PHONE_KEY": "k", "LEDGER_PARSE_WORKERS": "1"}
    alive = _left_after_sigkill(tmp_path, 4, env, "--workers", "0", "--batch-size", "50")
    assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
