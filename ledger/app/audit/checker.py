"""The per-user checks of `ledger verify`: a user's stored chain against its links, the
stored history against the re-derivation of the user's events, and the policy pins; each
disagreement becomes a `Finding` of the report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ledger.app.audit.report import Finding, VerifyReport
from ledger.app.ingest.plan import policy_hashes
from ledger.app.ports import StoredErasure, StoredEvent, StoredHistory, StoredUser
from ledger.domain.audit.canonical import CHAIN_ENCODING, canonical_event_as
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.domain.audit.digest import Digest
from ledger.domain.audit.erasure import (
    ErasureRecord,
    SkeletonRow,
    erased_events_hash,
    erasure_bytes,
    skeleton_hash,
)
from ledger.domain.policy import PolicySet
from ledger.domain.projection import HistoryRow, UserChanges, UserProjection
from ledger.domain.time import format_instant


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


class Checker:
    def __init__(
        self, policies: PolicySet, report: VerifyReport, encoding: int = CHAIN_ENCODING
    ) -> None:
        self.policies = policies
        self.report = report
        self.encoding = encoding  # the chain encoding the store's links are under
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
                    Finding(
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
                    Finding(
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
                    Finding(
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
        """Check the user's chain under the store's chain encoding; returns each event's
        bytes in it (None: unreadable)."""
        add = self.report.add
        canonical: list[bytes | None] = []
        if urow is None and evs:
            add(
                Finding(
                    user_id,
                    "events_without_user",
                    f"{len(evs)} events of a user with no users row (the row was deleted)",
                    seq=evs[0].seq,
                )
            )
        elif urow is not None and not evs:
            add(
                Finding(
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
                canon: bytes | None = canonical_event_as(self.encoding, ev.fields)
            except ValueError as exc:
                canon = None
                add(Finding(user_id, "event_unreadable", f"{where}: {exc}", seq=ev.seq))
            canonical.append(canon)
            if ev.problem is not None and canon is not None:
                add(Finding(user_id, "event_unreadable", f"{where}: {ev.problem}", seq=ev.seq))
            if ev.seq < 1 or (length is not None and ev.seq > length):
                add(
                    Finding(
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
                    Finding(
                        user_id,
                        "event_missing",
                        f"{gap} missing (an event was deleted)",
                        seq=expected,
                    )
                )
            elif canon is not None and next_link(prev, canon) != ev.link:
                add(
                    Finding(
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
                    Finding(
                        user_id,
                        "event_missing",
                        f"the users row counts {urow.events} events, the last stored is seq "
                        f"{last} (the last events were deleted)",
                        seq=last + 1,
                    )
                )
            elif head_link is not None and head_link != urow.chain_head:
                add(
                    Finding(
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
                    Finding(
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
                    Finding(
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
                Finding(
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
                Finding(
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
                Finding(
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

    # --- an erased user ----------------------------------------------------------------

    def check_erased(
        self,
        user_id: str,
        urow: StoredUser | None,
        evs: Sequence[StoredEvent],
        hist: Sequence[StoredHistory],
        erasure: StoredErasure,
    ) -> None:
        """An erased user (docs/audit.md, "Erasure"): the kept events are seq 1..n without
        gaps and hold nothing personal; the last is the erasure, whose link is recomputed
        from the previous stored link and what it commits to (every kept seq, record time
        and link, the history row count, the retained skeleton's hash); the skeleton, if
        kept, hashes as the erasure says; the users row's head and length are the chain's."""
        add = self.report.add
        n = erasure.seq
        seqs = [ev.seq for ev in evs]
        if seqs != list(range(1, len(seqs) + 1)) or len(seqs) != n:
            add(
                Finding(
                    user_id,
                    "erased_chain",
                    f"the erased user's events are seq {_ranges(seqs)}, the erasure is seq {n}: "
                    "an event was deleted or inserted",
                    field="seq",
                    stored=seqs[-1] if seqs else 0,
                    derived=n,
                )
            )
            return
        *kept, last = evs
        for ev in kept:
            left = sorted(
                name
                for name, value in ev.fields.items()
                if value is not None and name not in ("user_id", "recorded_at", "seq")
            )
            if left or ev.event_id is not None:
                add(
                    Finding(
                        user_id,
                        "erasure_incomplete",
                        f"event seq {ev.seq} of an erased user still holds "
                        f"{', '.join(left) or 'its event id'}",
                        seq=ev.seq,
                    )
                )
        if last.app_seq != erasure.app_seq or last.fields.get("type") != "AccountErased":
            add(
                Finding(
                    user_id,
                    "erasure_edited",
                    f"event seq {n} is not the erasure the erasures row names "
                    f"(application seq {last.app_seq}, the row says {erasure.app_seq})",
                    seq=n,
                )
            )
            return
        retained: bytes | None = None
        if erasure.retained_hash is not None:
            rows = [s.row for s in hist if s.row is not None]
            retained = skeleton_hash(
                SkeletonRow(
                    r.entry.valid_from,
                    r.entry.valid_to,
                    r.entry.assignment,
                    r.entry.policy,
                    r.entry.rule,
                    r.recorded_at,
                    r.superseded_at,
                )
                for r in rows
            )
            if retained != erasure.retained_hash or len(rows) != len(hist):
                add(
                    Finding(
                        user_id,
                        "retained_edited",
                        "the retained history skeleton does not hash as the erasure committed "
                        "to (a retained row was edited, added or deleted)",
                        field="retained_hash",
                        stored=erasure.retained_hash.hex(),
                        derived=retained.hex(),
                    )
                )
            for s in hist:
                if s.row is not None and (s.row.entry.facts or s.row.entry.evidence):
                    add(
                        Finding(
                            user_id,
                            "erasure_incomplete",
                            f"retained history row #{s.id} still holds facts or evidence",
                            row=s.id,
                        )
                    )
        else:
            for s in hist:
                add(
                    Finding(
                        user_id,
                        "history_extra",
                        f"history row #{s.id} of an erased user who kept none (a row was added)",
                        row=s.id,
                    )
                )
        try:
            record = ErasureRecord(
                event_id=last.event_id or "",
                user_id=user_id,
                occurred_at=last.fields["occurred_at"],
                recorded_at=last.recorded_at,
                request_id=erasure.request_id,
                seq=n,
                erased_events=erased_events_hash((e.seq, e.recorded_at, e.link) for e in kept),
                history_rows=erasure.history_rows,
                retained=erasure.retained_hash,
            )
            link = next_link(kept[-1].link if kept else GENESIS, erasure_bytes(record))
        except (TypeError, ValueError, AttributeError) as exc:
            add(Finding(user_id, "event_unreadable", f"the erasure, seq {n}: {exc}", seq=n))
            return
        if link != last.link:
            add(
                Finding(
                    user_id,
                    "erasure_edited",
                    f"the erasure's link (seq {n}) differs from the one recomputed from the "
                    "kept links, record times and the erasures row (a kept link, record "
                    "time or the erasure was edited)",
                    seq=n,
                )
            )
        if urow is None:
            add(Finding(user_id, "events_without_user", "an erased user without a users row"))
        elif urow.events != n or urow.chain_head != last.link:
            add(
                Finding(
                    user_id,
                    "chain_head",
                    f"the users row's chain ({urow.events} events) differs from the erased "
                    f"user's chain of {n} ending in the erasure (the users row was edited)",
                    seq=n,
                )
            )


def _ranges(seqs: Sequence[int]) -> str:
    if not seqs:
        return "none"
    return f"{seqs[0]} to {seqs[-1]} ({len(seqs)} of them)"
