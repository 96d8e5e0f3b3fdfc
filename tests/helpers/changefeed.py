"""The changefeed's relay as a process, and topic names for one test."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.common import LEDGER
from tools.feed import Feed, read_feed, stored_assignments, stored_decisions

__all__ = ["Feed", "read_feed", "stored_assignments", "stored_decisions"]


@pytest.fixture
def feed_topics() -> Iterator[tuple[str, str]]:
    """Names of the changefeed's two topics for one test (the relay creates them)."""
    tag = uuid.uuid4().hex[:10]
    yield f"changes-{tag}", f"current-{tag}"


def start_relay(
    bootstrap: str, db: str, topics: tuple[str, str], log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    cmd = [
        LEDGER,
        "changefeed",
        "--bootstrap",
        bootstrap,
        "--db",
        db,
        "--topic",
        topics[0],
        "--current-topic",
        topics[1],
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
