"""examples/residency_router.py, the changefeed's reference consumer, against the real
broker: a generated stream is published to an event topic, replayed from it into a store,
and relayed (`ledger changefeed`) to a changes topic of this module's own; the example
then reads that topic as a program a platform team would run.

Its table must be each user's current data residency as the store has it, its moves the
changes of residency the feed tells in seq order, and both must not change when every
record is delivered twice (the relay sending everything again, as a relay that never
stored its position would). A group that ran before resumes after its committed offsets.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledger.config import settings_from_env
from ledger.queries.changes import MAX_PAGE, page
from ledger.sources import kafka_topics as topics
from ledger.store.readonly import EngineReader
from ledger.store.schema import HISTORY_FROM, assignment_history, history_columns
from tests.helpers.kafka import LEDGER, TEST_PARTITIONS, publish
from tests.support import Cli
from tools.feed import stored_assignments

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "residency_router.py"
RESIDENCY = {
    "xhs-domestic": "mainland-china",
    "rednote-international": "singapore",
    "undetermined": "none",
}
MOVE_LINE = re.compile(
    r"move (?P<user_id>\S+): (?P<from>\S+) -> (?P<to>\S+) "
    r"\(decision (?P<decision_id>[0-9a-f]{32}), seq (?P<seq>\d+), rule (?P<rule>\S+)\)"
)
# Seconds without a record, once caught up, before a run ends: the records are all on the
# topic before a run starts, so this only has to outlast the fetches' round trips.
IDLE_S = "1.5"


@dataclass(frozen=True)
class Run:
    """What one run of the example printed and wrote."""

    moves: list[dict[str, Any]]  # as --json prints them (text lines parsed into the same)
    summary: dict[str, Any]
    table: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Feed:
    db: str
    decisions: int  # records the relay published in one pass
    first_a: Run  # group g-a, --json, a fresh group
    first_b: Run  # group g-b, text output, a fresh group
    resumed_a: Run  # g-a again after the relay sent everything a second time
    rewound_b: Run  # g-b again with --from-beginning: every record twice


def router(bootstrap: str, topic: str, group: str, out: Path, *options: str) -> Run:
    table = out.with_suffix(".table.json")
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--group",
            group,
            "--until-idle",
            IDLE_S,
            "--table-out",
            str(table),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    out.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    if "--json" in options:
        *moves, summary = (json.loads(line) for line in lines)
    else:
        moves, summary = text_output(lines)
    assert all(m["type"] == "move" for m in moves) and summary["type"] == "summary"
    return Run(moves, summary, json.loads(table.read_text()))


def text_output(lines: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The text output as --json would have put it."""
    at = next(i for i, line in enumerate(lines) if line.startswith("residency table:"))
    moves = []
    for line in lines[:at]:
        found = MOVE_LINE.fullmatch(line)
        assert found, line
        move: dict[str, Any] = {"type": "move", **found.groupdict()}
        move["seq"] = int(move["seq"])
        move["from"] = None if move["from"] == "(new)" else move["from"]
        move["to"] = None if move["to"] == "(erased)" else move["to"]
        moves.append(move)
    users_line, *count_lines, read_line = lines[at:]
    counts = {name: int(n) for name, n in (line.split() for line in count_lines)}
    read = re.fullmatch(r"read (\d+) records \((\d+) duplicates\) in [\d.]+ s", read_line)
    assert read, read_line
    summary = {
        "type": "summary",
        "users": int(users_line.split()[2]),
        "residency": counts,
        "records": int(read[1]),
        "duplicates": int(read[2]),
    }
    return moves, summary


def relay(bootstrap: str, db: str, topic: str) -> None:
    subprocess.run(
        [
            LEDGER,
            "changefeed",
            "--bootstrap",
            bootstrap,
            "--db",
            db,
            "--topic",
            topic,
            "--current-topic",
            f"{topic}.current",
            "--partitions",
            str(TEST_PARTITIONS),
            "--until-caught-up",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def forget_relay_position(db: str, topic: str) -> None:
    """As if the relay had never stored how far it got: it publishes everything again."""
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM changefeed_positions WHERE target = :t"), {"t": topic})
    engine.dispose()


@pytest.fixture(scope="module")
def feed(kafka_broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    tmp = tmp_path_factory.mktemp("residency-router")
    bootstrap = kafka_broker.bootstrap
    db = f"sqlite:///{tmp / 'ledger.db'}"
    cli = Cli(db)
    name = f"test-router-{uuid.uuid4().hex[:12]}"
    events, changes = f"{name}-events", f"{name}-changes"
    client = settings_from_env().kafka.client
    event_specs = topics.topic_specs(events, TEST_PARTITIONS)
    topics.ensure_topics(bootstrap, event_specs, **client)
    try:
        stream = tmp / "stream.jsonl"
        cli.run("generate", "-o", str(stream), "--users", "300", db=False)
        sent = publish(cli, bootstrap, events, stream)
        # --announce: a first load, not a rebuild (an empty store's replay is recorded as
        # announced already, and the relay would pass over it).
        replayed = cli.json(
            "replay", "--from-kafka", "--bootstrap", bootstrap, "--topic", events, "--announce"
        )
        assert replayed["applied"] + replayed["duplicates"] == sent
        relay(bootstrap, db, changes)
        decisions = len(feed_in_seq_order(db))
        assert decisions > 300, "the relay has next to nothing to publish"

        def run(group: str, out: str, *options: str) -> Run:
            return router(bootstrap, changes, group, tmp / out, *options)

        # Two groups at a time: a run's time is mostly its group join.
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(run, "g-a", "first-a.out", "--json")
            b = pool.submit(run, "g-b", "first-b.out")
            first_a, first_b = a.result(), b.result()
        forget_relay_position(db, changes)
        relay(bootstrap, db, changes)  # every decision is on the topic twice now
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(run, "g-a", "resumed-a.out", "--json")
            b = pool.submit(run, "g-b", "rewound-b.out", "--json", "--from-beginning")
            resumed_a, rewound_b = a.result(), b.result()
        yield Feed(db, decisions, first_a, first_b, resumed_a, rewound_b)
    finally:
        from kafka import KafkaAdminClient

        with (
            contextlib.suppress(Exception),
            KafkaAdminClient(bootstrap_servers=bootstrap, **client) as admin,
        ):
            names = [s.name for s in event_specs] + [changes, f"{changes}.current"]
            admin.delete_topics(names, raise_errors=False)


# --- what the store says -----------------------------------------------------------------


def current_residency(db: str) -> dict[str, str]:
    """Every user's current assignment, as `ledger current` answers it, as a residency."""
    return {user: RESIDENCY[a] for user, a in stored_assignments(db).items()}


def feed_in_seq_order(db: str) -> list[Any]:
    """Every decision the relay publishes, as the store's outbox has them."""
    engine = sa.create_engine(db)
    reader, found, after = EngineReader(engine), [], 0
    while batch := page(reader, after=after, limit=MAX_PAGE, announced_only=True):
        found.extend(batch)
        after = batch[-1].seq
    engine.dispose()
    return found


def expected_moves(db: str) -> dict[str, list[tuple[Any, ...]]]:
    """Per user, the changes of residency the feed tells read once in seq order: each
    open-ended decision replaces the user's current one."""
    current: dict[str, str] = {}
    moves: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for change in feed_in_seq_order(db):
        if change.valid_to is not None:
            continue
        after = RESIDENCY[change.assignment]
        before = current.get(change.user_id)
        if after != before:
            moves[change.user_id].append(
                (before, after, change.decision_id, change.seq, change.rule)
            )
        current[change.user_id] = after
    return moves


def relocated(db: str) -> set[str]:
    """Users whose believed history has periods in both mainland China and Singapore."""
    h = assignment_history.c
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(*history_columns("user_id", "assignment"))
            .select_from(HISTORY_FROM)
            .where(h.superseded_at.is_(None))
        ).all()
    engine.dispose()
    seen: dict[str, set[str]] = defaultdict(set)
    for user, assignment in rows:
        seen[user].add(RESIDENCY[assignment])
    return {u for u, places in seen.items() if {"mainland-china", "singapore"} <= places}


def moves_by_user(run: Run) -> dict[str, list[tuple[Any, ...]]]:
    found: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for m in run.moves:
        found[m["user_id"]].append((m["from"], m["to"], m["decision_id"], m["seq"], m["rule"]))
    return found


def residencies(run: Run) -> dict[str, str]:
    return {user: row["residency"] for user, row in run.table.items()}


# --- the tests ---------------------------------------------------------------------------


def test_the_table_is_every_users_current_residency(feed: Feed) -> None:
    want = current_residency(feed.db)
    assert len(want) == 300
    for run in (feed.first_a, feed.first_b):
        assert residencies(run) == want
        assert run.summary["users"] == 300
        assert run.summary["residency"] == {
            r: Counter(want.values())[r] for r in ("mainland-china", "singapore", "none")
        }
        assert (run.summary["records"], run.summary["duplicates"]) == (feed.decisions, 0)
    # Each row is the user's open-ended decision with the highest seq.
    latest = {c.user_id: c for c in feed_in_seq_order(feed.db) if c.valid_to is None}
    assert {
        u: (row["decision_id"], row["seq"], row["assignment"], row["rule"])
        for u, row in feed.first_a.table.items()
    } == {u: (c.decision_id, c.seq, c.assignment, c.rule) for u, c in latest.items()}


def test_a_move_for_every_change_of_residency(feed: Feed) -> None:
    want = expected_moves(feed.db)
    assert moves_by_user(feed.first_a) == want
    assert moves_by_user(feed.first_b) == want  # the text lines say the same
    # Relocations: users who lived in both places over their history moved between them.
    both = relocated(feed.db)
    assert len(both) >= 50
    crossed = {
        m["user_id"]
        for m in feed.first_a.moves
        if {m["from"], m["to"]} == {"mainland-china", "singapore"}
    }
    assert both <= crossed


def test_records_delivered_twice_change_nothing(feed: Feed) -> None:
    """g-b read from the beginning again: every decision twice, each copy deduplicated."""
    run = feed.rewound_b
    assert (run.summary["records"], run.summary["duplicates"]) == (
        2 * feed.decisions,
        feed.decisions,
    )
    assert run.table == feed.first_a.table
    assert moves_by_user(run) == moves_by_user(feed.first_a)


def test_a_group_resumes_after_its_committed_offsets(feed: Feed) -> None:
    """g-a committed what it read the first time: it reads only the second copy, which
    holds every decision again, so it builds the same table."""
    run = feed.resumed_a
    assert (run.summary["records"], run.summary["duplicates"]) == (feed.decisions, 0)
    assert run.table == feed.first_a.table
    assert moves_by_user(run) == moves_by_user(feed.first_a)
