"""The changefeed as records (docs/changefeed.md): the outbox's rows with the history rows
and decisions they announce, a page at a time in `seq` order. What `ledger changes`, the
HTTP API's `/v1/changes` and the Kafka relay all read.

Plain SQL through the driver, as `ledger.queries.history` reads: a page is read once per
relay round and per poll, so it must not cost more than the rows it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.domain.audit.stable_ids import decision_id
from ledger.domain.rulebooks import RULEBOOKS, Rulebook
from ledger.domain.time import format_instant
from ledger.store.readonly import SqlReader
from ledger.store.rows import instant, optional_instant

# The most records one page may ask for (HTTP `limit`, `ledger changes --limit`).
MAX_PAGE = 10_000
# The highest seq a store can hold (a signed 64-bit row id): the largest `after` there is.
MAX_SEQ = 2**63 - 1

KINDS = ("assigned", "corrected", "erased")


@dataclass(frozen=True, slots=True)
class Change:
    """One decision as the changefeed announces it."""

    seq: int
    user_id: str
    kind: str
    valid_from: datetime
    valid_to: datetime | None
    # None only in an erased record (kind "erased"): it announces that the user is gone.
    assignment: str | None
    policy: str | None
    policy_hash: str | None
    rule: str | None
    reason: str | None
    recorded_at: datetime
    app_seq: int | None
    announce: bool

    @property
    def decision_id(self) -> str:
        return decision_id(self.user_id, self.valid_from, self.recorded_at)

    @property
    def terms(self) -> Rulebook | None:
        return None if self.assignment is None else RULEBOOKS[self.assignment]

    @property
    def erased(self) -> bool:
        """Whether it announces the user's erasure: the table view (`rulebook-current`)
        drops the user (a tombstone)."""
        return self.kind == "erased"

    @property
    def current(self) -> bool:
        """Whether it decides the user's assignment from its start on, open-ended: the
        record the table view (`rulebook-current`) takes."""
        return self.valid_to is None and not self.erased

    def _terms_json(self) -> dict[str, str] | None:
        terms = self.terms
        if terms is None:
            return None
        return {
            "age_rule": terms.age_rule,
            "content_focus": terms.content_focus,
            "data_residency": terms.data_residency,
        }

    def record(self) -> dict[str, Any]:
        """As the changefeed's Avro schema has it (`ledger.codecs.changefeed`)."""
        return {
            "decision_id": self.decision_id,
            "seq": self.seq,
            "user_id": self.user_id,
            "kind": self.kind,
            "valid_from": self.valid_from,
            "valid_to": self.valid_to,
            "assignment": self.assignment,
            "policy": self.policy,
            "policy_hash": self.policy_hash,
            "rule": self.rule,
            "reason": self.reason,
            "terms": self._terms_json(),
            "recorded_at": self.recorded_at,
            "app_seq": self.app_seq,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "decision_id": self.decision_id,
            "user_id": self.user_id,
            "kind": self.kind,
            "valid_from": format_instant(self.valid_from),
            "valid_to": format_instant(self.valid_to) if self.valid_to else None,
            "assignment": self.assignment,
            "policy": self.policy,
            "policy_hash": self.policy_hash,
            "rule": self.rule,
            "reason": self.reason,
            "terms": self._terms_json(),
            "recorded_at": format_instant(self.recorded_at),
            "app_seq": self.app_seq,
            "announced": self.announce,
        }


_SELECT = """
SELECT o.seq, o.user_id, o.kind, o.valid_from, h.valid_to, d.assignment, d.policy,
       d.policy_hash, d.rule, d.reason, o.recorded_at, o.app_seq, o.announce
FROM decision_outbox AS o
LEFT JOIN assignment_history AS h
  ON h.user_id = o.user_id AND h.valid_from = o.valid_from AND h.recorded_at = o.recorded_at
  AND o.kind <> 'erased'
LEFT JOIN decisions AS d ON d.id = h.decision_id
WHERE o.seq > {mark}{announced} AND (d.id IS NOT NULL OR o.kind = 'erased')
ORDER BY o.seq
LIMIT {mark}
"""


def _change(row: Sequence[Any]) -> Change:
    seq, user, kind, vf, vt, assignment, policy, phash, rule, reason, rec, app_seq, ann = row
    return Change(
        seq=int(seq),
        user_id=user,
        kind=kind,
        valid_from=instant(vf),
        valid_to=optional_instant(vt),
        assignment=assignment,
        policy=policy,
        policy_hash=phash,
        rule=rule,
        reason=reason,
        recorded_at=instant(rec),
        app_seq=None if app_seq is None else int(app_seq),
        announce=bool(ann),
    )


def page(
    reader: SqlReader, *, after: int = 0, limit: int = 1000, announced_only: bool = False
) -> list[Change]:
    """Up to `limit` records with a seq above `after`, in seq order. A record whose history
    row is gone (believed and withdrawn in the same record instant, never visible) is not
    a decision and is left out; an erased record has no history row, and none of its
    fields. `announced_only`: what the relay publishes."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    sql = _SELECT.format(
        mark=reader.placeholder, announced=" AND o.announce" if announced_only else ""
    )
    return [_change(r) for r in reader.rows(sql, (after, limit))]


def next_after(changes: Sequence[Change], after: int) -> int:
    """Where the page after `changes` (asked for with `after`) starts: the last record's
    seq, or `after` itself when there was none (nothing newer yet)."""
    return changes[-1].seq if changes else after


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the relay has yet to publish past `after`."""

    records: int
    oldest_recorded_at: datetime | None
    last_seq: int  # the feed's highest seq (0: empty)


def backlog(reader: SqlReader, after: int) -> Backlog:
    mark = reader.placeholder
    [(n, oldest)] = reader.rows(
        "SELECT count(*), min(recorded_at) FROM decision_outbox "
        f"WHERE seq > {mark} AND announce",
        (after,),
    )
    [(last,)] = reader.rows("SELECT coalesce(max(seq), 0) FROM decision_outbox", ())
    return Backlog(int(n), optional_instant(oldest), int(last))
