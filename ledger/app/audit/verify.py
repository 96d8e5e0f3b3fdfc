"""`ledger verify`: check a store against its own events and policies (AUDIT.md).

Three checks per user, on one consistent snapshot read while writers go on:
- the hash chain: seq 1..n contiguous, every stored link equal to SHA-256(previous stored
  link ‖ canonical event), the users row's chain head and length equal to the chain's;
- the history, by re-derivation: the user's stored events are folded in application order,
  each with its stored record time, through the projector's own code (`UserProjection`),
  and the full bitemporal result (believed and superseded rows) must equal the stored
  `assignment_history` field by field;
- the policies: each pinned version must hash as the policy of that version given here,
  and each history row must carry its version's pinned hash.

With a digest, each user's chain is also recomputed from the event fields (not the stored
links) over the events the digest covers (`app_seq <= digest.seq`) and the Merkle root over
all users must be the digest's: an event applied before the digest and changed since is
caught even when every link after it was rewritten to match.

The store is read through a port (`ledger.app.ports.AuditSource`, implemented on SQL by
`ledger.store.audit_snapshot`), so this module stays on the application's side of the
layering: it decides, the store only reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any, TypeVar

from ledger.app.ingest.plan import policy_hashes
from ledger.app.ports import AuditSource, StoredEvent, StoredHistory, StoredUser
from ledger.domain.audit.canonical import canonical_event
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.domain.audit.digest import Digest
from ledger.domain.audit.merkle import MerkleBuilder
from ledger.domain.policy import PolicySet
from ledger.domain.projection import HistoryRow, UserChanges, UserProjection
from ledger.domain.time import format_instant
from ledger.errors import LedgerError, UsageError

__all__ = ["DigestCheck", "Problem", "VerifyReport", "verify"]

# Problems kept in a report; more are counted, not kept, so a store damaged everywhere
# (or verified with the wrong policies) cannot exhaust memory.
MAX_PROBLEMS = 10_000


# --- the report ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    user: str | None  # None: a store-wide problem (a policy pin, the digest)
    kind: str
    detail: str  # one line, without the user id
    seq: int | None = None  # the user's event seq it is about
    row: int | None = None  # the assignment_history row id it is about
    field: str | None = None
    stored: Any = None  # JSON-ready
    derived: Any = None

    def __str__(self) -> str:
        return f"{self.user}: {self.detail}" if self.user is not None else self.detail

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user": self.user, "kind": self.kind, "detail": self.detail}
        if self.seq is not None:
            out["seq"] = self.seq
        if self.row is not None:
            out["row"] = self.row
        if self.field is not None:
            out.update(field=self.field, stored=self.stored, derived=self.derived)
        return out


@dataclass(frozen=True, slots=True)
class DigestCheck:
    seq: int
    root: str  # the digest's
    computed_root: str
    users: int  # the digest's
    computed_users: int
    events: int
    computed_events: int

    @property
    def matches(self) -> bool:
        return self.root == self.computed_root

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "root": self.root,
            "computed_root": self.computed_root,
            "users": self.users,
            "computed_users": self.computed_users,
            "events": self.events,
            "computed_events": self.computed_events,
            "matches": self.matches,
        }


@dataclass(slots=True)
class VerifyReport:
    users: int = 0  # user ids seen in users, events or history
    events: int = 0
    history_rows: int = 0
    pins: int = 0
    problems: list[Problem] = field(default_factory=list)  # the first MAX_PROBLEMS
    problem_count: int = 0
    seconds: float = 0.0
    digest: DigestCheck | None = None
    max_problems: int = MAX_PROBLEMS

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def add(self, problem: Problem) -> None:
        self.problem_count += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "users": self.users,
            "events": self.events,
            "history_rows": self.history_rows,
            "pins": self.pins,
            "problem_count": self.problem_count,
            "problems": [p.to_json() for p in self.problems],
            "digest": self.digest.to_json() if self.digest else None,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
        }


# --- verification ----------------------------------------------------------------------


def verify(
    source: AuditSource,
    policies: PolicySet,
    *,
    user: str | None = None,
    digest: Digest | None = None,
    chunk_users: int = 1000,
    progress: Callable[[int], None] | None = None,
    max_problems: int = MAX_PROBLEMS,
) -> VerifyReport:
    """Verify the store behind `source` against `policies` (see the module's doc): every
    user, or only `user`; with `digest`, also that the events it covers are unchanged.
    `progress` gets the number of events checked since its last call, every `chunk_users`
    users."""
    if user is not None and digest is not None:
        raise UsageError("a digest covers the whole store: check it without a single user")
    if chunk_users < 1:
        raise ValueError("chunk_users must be at least 1")
    started = time.perf_counter()
    report = VerifyReport(max_problems=max_problems)
    checker = _Checker(policies, report)
    merkle = MerkleBuilder() if digest is not None else None
    covered = 0
    pending = 0
    with source.snapshot() as snap, ExitStack() as streams:
        checker.check_pins(snap.pins(), digest)
        # Closed before the snapshot ends, failure or not: an open cursor must not outlive
        # its transaction until the garbage collector finds it.
        users = streams.enter_context(
            closing(
                _merged(
                    streams.enter_context(closing(snap.users(user))),
                    streams.enter_context(closing(snap.events(user))),
                    streams.enter_context(closing(snap.history(user))),
                )
            )
        )
        for n, (user_id, urow, evs, hist) in enumerate(users, 1):
            canonical = checker.check_chain(user_id, urow, evs)
            checker.check_history(user_id, evs, hist)
            if merkle is not None and digest is not None:
                head, length = _chain_until(evs, canonical, digest.seq)
                if length:
                    merkle.add(user_id, head, length)
                    covered += length
            report.users += 1
            report.events += len(evs)
            report.history_rows += len(hist)
            pending += len(evs)
            if progress is not None and n % chunk_users == 0:
                progress(pending)
                pending = 0
    if progress is not None and pending:
        progress(pending)
    if merkle is not None and digest is not None:
        report.digest = _digest_check(digest, merkle, covered, report)
    report.seconds = time.perf_counter() - started
    return report


def _chain_until(
    evs: Sequence[StoredEvent], canonical: Sequence[bytes | None], seq: int
) -> tuple[bytes, int]:
    """The user's chain head and length over the events the digest covers, recomputed
    from the event fields (the stored links are what an attacker would rewrite)."""
    head, length = GENESIS, 0
    for ev, canon in zip(evs, canonical, strict=True):
        if ev.app_seq <= seq:
            # An unreadable row cannot hash as any readable event did.
            head = next_link(head, canon if canon is not None else b"\xff")
            length += 1
    return head, length


def _digest_check(
    digest: Digest, merkle: MerkleBuilder, covered: int, report: VerifyReport
) -> DigestCheck:
    check = DigestCheck(
        seq=digest.seq,
        root=digest.root,
        computed_root=merkle.root().hex(),
        users=digest.users,
        computed_users=merkle.count,
        events=digest.events,
        computed_events=covered,
    )
    if not check.matches:
        counts = ""
        if (check.users, check.events) != (check.computed_users, check.computed_events):
            counts = (
                f"; it counts {check.users:,} users and {check.events:,} events, the store "
                f"now has {check.computed_users:,} and {check.computed_events:,} up to it"
            )
        report.add(
            Problem(
                None,
                "digest_root",
                f"events applied before the digest changed: the Merkle root over the "
                f"events up to seq {digest.seq} is {check.computed_root[:16]}…, the digest "
                f"says {digest.root[:16]}…{counts}",
            )
        )
    return check


T = TypeVar("T", StoredUser, StoredEvent, StoredHistory)


def _by_user(items: Iterable[T], what: str) -> Iterator[tuple[str, list[T]]]:
    last: str | None = None
    for user_id, group in groupby(items, key=lambda item: item.user_id):
        # The merge below and the Merkle root rely on this order; a store that sorted by
        # another collation would otherwise pair the wrong rows silently.
        if last is not None and not user_id > last:
            raise LedgerError(
                f"the store listed {what} out of user id order ({user_id!r} after {last!r}): "
                "verification needs code-point order"
            )
        last = user_id
        yield user_id, list(group)


def _merged(
    users: Iterable[StoredUser], events: Iterable[StoredEvent], history: Iterable[StoredHistory]
) -> Iterator[tuple[str, StoredUser | None, list[StoredEvent], list[StoredHistory]]]:
    """Each user id found in any of the three streams, with its rows from each, in order:
    one user's rows in memory at a time."""
    u_it, e_it, h_it = (
        _by_user(users, "users"),
        _by_user(events, "events"),
        _by_user(history, "history rows"),
    )
    u, e, h = next(u_it, None), next(e_it, None), next(h_it, None)
    while u is not None or e is not None or h is not None:
        user_id = min(x[0] for x in (u, e, h) if x is not None)
        urow: StoredUser | None = None
        evs: list[StoredEvent] = []
        hist: list[StoredHistory] = []
        if u is not None and u[0] == user_id:
            urow = u[1][0]
            u = next(u_it, None)
        if e is not None and e[0] == user_id:
            evs = e[1]
            e = next(e_it, None)
        if h is not None and h[0] == user_id:
            hist = h[1]
            h = next(h_it, None)
        yield user_id, urow, evs, hist


def _show(name: str, value: Any) -> Any:
    """A stored or derived history field in JSON-ready form."""
    if isinstance(value, datetime):
        return format_instant(value)
    if name == "facts":
        return dict(value)  # sorted (name, value) pairs
    if name == "evidence":
        return list(value)
    return value


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _when(valid_from: datetime, recorded_at: datetime) -> str:
    return f"valid from {format_instant(valid_from)}, recorded {format_instant(recorded_at)}"


# The history fields compared besides the key (valid_from, recorded_at), in report order.
_ENTRY_FIELDS = ("valid_to", "assignment", "policy", "rule", "reason", "facts", "evidence")


class _Checker:
    def __init__(self, policies: PolicySet, report: VerifyReport) -> None:
        self.policies = policies
        self.report = report
        self.hashes = policy_hashes(policies)
        self.pins: dict[str, str] = {}
        self.changed: set[str] = set()  # versions whose file differs from the pin
        self.unpinned: set[str] = set()  # versions used by rows and never pinned (reported)

    # --- policies ----------------------------------------------------------------------

    def check_pins(self, pins: dict[str, str], digest: Digest | None) -> None:
        self.pins = pins
        self.report.pins = len(pins)
        for version, pinned in sorted(pins.items()):
            if version not in self.policies:
                self.report.add(
                    Problem(
                        None,
                        "policy_missing",
                        f"policy {version} is pinned by the store but not among the policies "
                        "given: its decisions cannot be re-derived (verify with the policies "
                        "the store was written with)",
                    )
                )
            elif self.hashes[version] != pinned:
                self.changed.add(version)
                self.report.add(
                    Problem(
                        None,
                        "policy_changed",
                        f"policy {version} is not the one the store pinned (pinned hash "
                        f"{pinned[:12]}…, the file given hashes to {self.hashes[version][:12]}…): "
                        "it was edited under its old version; a change must be a new version",
                        field="hash",
                        stored=pinned,
                        derived=self.hashes[version],
                    )
                )
        if digest is None:
            return
        for version, hashed in sorted(digest.policies.items()):
            if pins.get(version) != hashed:
                now = pins.get(version)
                self.report.add(
                    Problem(
                        None,
                        "digest_policy",
                        f"policy {version} was pinned with hash {hashed[:12]}… when the digest "
                        f"was taken, the store now pins "
                        f"{(now[:12] + '…') if now else 'nothing'}",
                        field="hash",
                        stored=now,
                        derived=hashed,
                    )
                )

    def _expected_hash(self, version: str) -> str | None:
        """The hash a history row decided by `version` must carry: the policy's given here,
        or for a version whose file changed, the pin (the rows were decided before; the
        changed file is reported once, not once per row)."""
        if version in self.changed:
            return self.pins[version]
        return self.hashes.get(version)

    # --- the chain ---------------------------------------------------------------------

    def check_chain(
        self, user_id: str, urow: StoredUser | None, evs: Sequence[StoredEvent]
    ) -> list[bytes | None]:
        """Check the user's chain; returns each event's canonical bytes (None: unreadable)."""
        add = self.report.add
        canonical: list[bytes | None] = []
        if urow is None and evs:
            add(
                Problem(
                    user_id,
                    "events_without_user",
                    f"{len(evs)} events of a user with no users row (the row was deleted)",
                    seq=evs[0].seq,
                )
            )
        elif urow is not None and not evs:
            add(
                Problem(
                    user_id,
                    "user_without_events",
                    f"a user row without events (it counts {urow.events}: they were deleted)",
                )
            )
        length = urow.events if urow is not None else None
        prev, expected = GENESIS, 1
        head_link: bytes | None = None
        for ev in evs:
            where = f"event seq {ev.seq} (event_id {ev.event_id})"
            try:
                canon: bytes | None = canonical_event(ev.fields)
            except ValueError as exc:
                canon = None
                add(Problem(user_id, "event_unreadable", f"{where}: {exc}", seq=ev.seq))
            canonical.append(canon)
            if ev.problem is not None and canon is not None:
                add(Problem(user_id, "event_unreadable", f"{where}: {ev.problem}", seq=ev.seq))
            if ev.seq < 1 or (length is not None and ev.seq > length):
                add(
                    Problem(
                        user_id,
                        "event_inserted",
                        f"{where} is outside the user's chain of {length or 0} events "
                        "(an event was inserted)",
                        seq=ev.seq,
                    )
                )
            elif ev.seq > expected:
                gap = (
                    f"seq {expected}"
                    if ev.seq == expected + 1
                    else (f"seq {expected} to {ev.seq - 1}")
                )
                # This event's link chains from one that is gone: it cannot be checked.
                add(
                    Problem(
                        user_id,
                        "event_missing",
                        f"{gap} missing (an event was deleted)",
                        seq=expected,
                    )
                )
            elif canon is not None and next_link(prev, canon) != ev.link:
                add(
                    Problem(
                        user_id,
                        "event_edited",
                        f"{where}: stored link differs from the recomputed one "
                        "(the event was edited)",
                        seq=ev.seq,
                    )
                )
            prev, expected = ev.link, max(expected, ev.seq + 1)
            if length is not None and ev.seq == length:
                head_link = ev.link
        if urow is not None and evs:
            last = expected - 1
            if last < urow.events:
                add(
                    Problem(
                        user_id,
                        "event_missing",
                        f"the users row counts {urow.events} events, the last stored is seq "
                        f"{last} (the last events were deleted)",
                        seq=last + 1,
                    )
                )
            elif head_link is not None and head_link != urow.chain_head:
                add(
                    Problem(
                        user_id,
                        "chain_head",
                        f"the users row's chain head differs from the link of event seq "
                        f"{urow.events} (the users row was edited)",
                        seq=urow.events,
                    )
                )
        return canonical

    # --- the history -------------------------------------------------------------------

    def derive(self, user_id: str, evs: Sequence[StoredEvent]) -> list[HistoryRow]:
        """The history rows the projector keeps for these events: the same fold, each event
        with its stored record time, rows never believed at any record time left out."""
        proj = UserProjection(user_id)
        changes = UserChanges()
        for ev in evs:
            assert ev.observation is not None
            proj.apply(ev.observation, ev.recorded_at, self.policies, changes)
        return [row for _, row in changes.new_rows if not row.record_interval_empty]

    def check_history(
        self, user_id: str, evs: Sequence[StoredEvent], hist: Sequence[StoredHistory]
    ) -> None:
        add = self.report.add
        stored: dict[tuple[datetime, datetime], list[StoredHistory]] = {}
        for s in hist:
            if s.row is None:
                add(
                    Problem(
                        user_id, "history_unreadable", f"history row #{s.id}: {s.problem}", row=s.id
                    )
                )
                continue
            stored.setdefault((s.valid_from, s.recorded_at), []).append(s)
            self._check_pinned(user_id, s)
        if any(ev.observation is None for ev in evs):
            return  # reported as event_unreadable: nothing sound to fold
        derived = self.derive(user_id, evs)
        for d in sorted(derived, key=lambda r: (r.entry.valid_from, r.recorded_at)):
            bucket = stored.get((d.entry.valid_from, d.recorded_at))
            if not bucket:
                e = d.entry
                superseded = (
                    f", superseded {format_instant(d.superseded_at)}" if d.superseded_at else ""
                )
                add(
                    Problem(
                        user_id,
                        "history_missing",
                        f"the history row {_when(e.valid_from, d.recorded_at)}{superseded} "
                        f"({e.assignment}, {e.policy} {e.rule}) is missing from the store "
                        "(a row was deleted)",
                    )
                )
                continue
            self._compare(user_id, bucket.pop(0), d)
        for s in sorted((s for rows in stored.values() for s in rows), key=lambda s: s.id):
            add(
                Problem(
                    user_id,
                    "history_extra",
                    f"history row #{s.id} ({_when(s.valid_from, s.recorded_at)}) is not implied "
                    "by the events (a row was added, or its times were edited)",
                    row=s.id,
                )
            )

    def _check_pinned(self, user_id: str, s: StoredHistory) -> None:
        if s.policy not in self.pins and s.policy not in self.unpinned:
            self.unpinned.add(s.policy)
            self.report.add(
                Problem(
                    user_id,
                    "policy_unpinned",
                    f"history row #{s.id} was decided by policy {s.policy}, which the store "
                    "has not pinned (the pin was deleted)",
                    row=s.id,
                )
            )

    def _compare(self, user_id: str, s: StoredHistory, d: HistoryRow) -> None:
        assert s.row is not None
        pairs: list[tuple[str, Any, Any]] = [
            (name, getattr(s.row.entry, name), getattr(d.entry, name)) for name in _ENTRY_FIELDS
        ]
        pairs.append(("superseded_at", s.row.superseded_at, d.superseded_at))
        pairs.append(("policy_hash", s.policy_hash, self._expected_hash(d.entry.policy)))
        for name, was, should in pairs:
            if was == should:
                continue
            was_j, should_j = _show(name, was), _show(name, should)
            self.report.add(
                Problem(
                    user_id,
                    "history_differs",
                    f"history row #{s.id} ({_when(s.valid_from, s.recorded_at)}): {name} is "
                    f"{_text(was_j)} in the store, {_text(should_j)} derived from the events",
                    row=s.id,
                    field=name,
                    stored=was_j,
                    derived=should_j,
                )
            )
