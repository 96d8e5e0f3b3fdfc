"""Erasing a user whose events are still arriving on a live consumer, against the real
broker and both databases: `ledger erase --bootstrap` publishes the erasure between the
user's events; the consumer (with workers) applies it in order, suppresses every later
record of the user (new ones, and a producer resending old ones), leaves every other user
exactly as a file replay would, and the store verifies."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers.kafka import publish, start_consumer, wait_for
from tests.support import Cli, history_rows
from tools.common import stamped_stream

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def spanning_user(lines: list[dict], half: int) -> str:
    """The user with the most events on both sides of `half`."""
    before = {x["user_id"] for x in lines[:half]}
    counts: dict[str, int] = {}
    for x in lines[half:]:
        if x["user_id"] in before:
            counts[x["user_id"]] = counts.get(x["user_id"], 0) + 1
    return max(sorted(counts), key=lambda u: counts[u])


def write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_an_erasure_between_a_users_events_on_a_live_consumer(
    db_url: str, kafka_broker, kafka_topic: str, tmp_path: Path
) -> None:
    stream = tmp_path / "stream.jsonl"
    stamped_stream(stream, users=120, seed=53)
    lines = [json.loads(x) for x in stream.read_text().splitlines()]
    half = len(lines) // 2
    user = spanning_user(lines, half)
    first, rest = lines[:half], lines[half:]
    resent = [x for x in first if x["user_id"] == user]  # a producer resending old events
    later = [x for x in rest if x["user_id"] == user]
    cli, bootstrap = Cli(db_url), kafka_broker.bootstrap
    assert publish(cli, bootstrap, kafka_topic, write(tmp_path / "a.jsonl", first)) == half
    log = tmp_path / "consume.log"
    consumer = start_consumer(
        bootstrap, kafka_topic, db_url, log, group="g-erase", batch=50, workers=2,
        extra=("--log-format", "json"),
    )
    try:
        wait_for(db_url, kafka_topic, half, timeout=120)
        sent = cli.json(
            "erase", user, "--request-id", "LIVE-1", "--yes", "--bootstrap", bootstrap,
            "--topic", kafka_topic, db=False,
        )
        assert sent["user_id"] == user
        tail = write(tmp_path / "b.jsonl", [*rest, *resent])
        assert publish(cli, bootstrap, kafka_topic, tail) == len(rest) + len(resent)
        wait_for(db_url, kafka_topic, len(lines) + 1 + len(resent), timeout=180)
    finally:
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0, log.read_text()[-3000:]
    summary = [json.loads(x) for x in log.read_text().splitlines() if '"suppressed"' in x][-1]
    # Everything of the user after the erasure: their later events and the resent ones.
    assert summary["suppressed"] == len(later) + len(resent)
    erased = cli.json("history", user)
    assert (erased["user_id"], erased["request_id"]) == (user, "LIVE-1")
    report = cli.json("verify")
    assert report["ok"] and report["erased_users"] == 1, report
    # No event id of the user survives: only the erasure event keeps its own.
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        ids = conn.execute(
            sa.text("SELECT count(event_id) FROM events WHERE user_id = :u"), {"u": user}
        ).scalar()
    engine.dispose()
    assert ids == 1
    # Every other user is exactly what a file replay of their events gives.
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    others = write(tmp_path / "others.jsonl", [x for x in lines if x["user_id"] != user])
    Cli(reference).run("replay", str(others), "--workers", "0")
    assert [r for r in history_rows(db_url) if r[0] != user] == history_rows(reference)
