"""Counterexample files of `ledger policy test`: the smallest history Hypothesis found,
written as JSON Lines that `ledger replay` accepts, with ids renamed so that several can be
replayed into one store."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from ledger.domain.events import Event
from ledger.sources.files import write_event_file


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120]


def renamed(events: Sequence[Event], tag: str) -> list[Event]:
    """`events` with user ids `cex-<tag>[-<n>]` and event ids unique to `tag`, in the same
    order as before (ties in valid time are decided by event id), so that files of
    different counterexamples never share an event."""
    prefix = hashlib.sha256(tag.encode()).hexdigest()[:20]
    ranks = {old: i for i, old in enumerate(sorted({e.event_id for e in events}))}
    users = list(dict.fromkeys(e.user_id for e in events))
    base = f"cex-{_slug(tag)}"[:180]
    names = {u: base if len(users) == 1 else f"{base}-{i + 1}" for i, u in enumerate(users)}

    def new_id(old: str) -> str:
        hexa = prefix + f"{ranks[old]:012x}"
        return f"{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:32]}"

    return [Event(new_id(e.event_id), names[e.user_id], e.occurred_at, e.payload) for e in events]


def write_counterexample(
    out_dir: Path, name: str, events: Sequence[Event], recorded: Sequence[datetime] | None = None
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{_slug(name)}.jsonl"
    # The store the printed hint replays this file into (`ledger.cli.policy.reproduce`):
    # one left from an earlier run holds an earlier counterexample, and pins the policy
    # content of that run, which a draft edited since would be refused against.
    for suffix in (".db", ".db-wal", ".db-shm"):
        path.with_suffix(suffix).unlink(missing_ok=True)
    times: Iterable[datetime | None] = recorded if recorded is not None else [None] * len(events)
    write_event_file(path, zip(events, times, strict=True))
    return path


