"""`ledger decisions export`: the decision log (docs/audit.md), one JSON object per history row
in record-time order, in the spirit of OPA decision logs.

Each line names the decision (a stable id from user, valid_from and recorded_at), when it
was believed (recorded_at, superseded_at) and for which valid time, the policy and its
content hash, the rule, the assignment and reason, the facts the rule read (`input`) and
the events those facts came from with their application and per-user sequence numbers.
No line carries a raw phone number: the store holds none (only region, validity and a
keyed hash), and this module reads nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import closing
from datetime import datetime
from itertools import islice
from typing import Any, TextIO

from ledger.app.ports import AuditSource, StoredHistory
from ledger.domain.audit.stable_ids import decision_id
from ledger.domain.time import format_instant
from ledger.errors import LedgerError

__all__ = ["decision_json", "export_decisions"]

# History rows written per evidence lookup: bounds the memory the lookup needs.
CHUNK_ROWS = 1000


def decision_json(s: StoredHistory, sequences: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """One decision-log line; `sequences` maps the evidence's event ids to (app_seq, seq)."""
    if s.row is None:
        raise LedgerError(f"history row #{s.id} cannot be read ({s.problem}): run `ledger verify`")
    e = s.row.entry
    evidence = []
    for event_id in e.evidence:
        app_seq, user_seq = sequences.get(event_id, (None, None))
        evidence.append({"event_id": event_id, "seq": app_seq, "user_seq": user_seq})
    return {
        "decision_id": decision_id(s.user_id, e.valid_from, s.row.recorded_at),
        "user_id": s.user_id,
        "recorded_at": format_instant(s.row.recorded_at),
        "superseded_at": format_instant(s.row.superseded_at),
        "valid_from": format_instant(e.valid_from),
        "valid_to": format_instant(e.valid_to),
        "policy": e.policy,
        "policy_hash": s.policy_hash,
        "rule": e.rule,
        "assignment": e.assignment,
        "reason": e.reason,
        "input": dict(e.facts),
        "evidence": evidence,
    }


def _chunks(rows: Iterator[StoredHistory], size: int) -> Iterator[list[StoredHistory]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def export_decisions(
    source: AuditSource,
    out: TextIO,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Write the decisions recorded in [since, until) to `out` as JSON Lines, from one
    snapshot; returns how many."""
    written = 0
    with source.snapshot() as snap, closing(snap.decisions(since, until)) as rows:
        for chunk in _chunks(rows, chunk_rows):
            wanted = sorted({i for s in chunk if s.row is not None for i in s.row.entry.evidence})
            sequences = snap.event_sequences(wanted)
            for s in chunk:
                # ASCII-only JSON: user ids and reasons are input; escaped, the file is safe
                # to print on a terminal.
                out.write(json.dumps(decision_json(s, sequences)) + "\n")
            written += len(chunk)
    return written
