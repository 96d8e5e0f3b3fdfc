"""`ledger verify`: check a store against its own events and policies (docs/audit.md).

Three checks per user, on one consistent snapshot read while writers go on:
- the hash chain: seq 1..n contiguous, every stored link equal to SHA-256(previous stored
  link ‖ canonical event), the users row's chain head and length equal to the chain's;
- the history, by re-derivation: the user's stored events are folded in application order,
  each with its stored record time, through the projector's own code (`UserProjection`),
  and the full bitemporal result (believed and superseded rows) must equal the stored
  `assignment_history` field by field;
- the policies: each pinned version must hash as the policy of that version given here,
  and each history row must carry its version's pinned hash.

With a phone key, the store's recorded fingerprint of the key its phone hashes were made
with must be that key's: hashes under another key would never match the ones stored.

With a digest, each user's chain is also recomputed from the event fields (not the stored
links) over the events the digest covers (`app_seq <= digest.seq`) and the Merkle root over
all users must be the digest's: an event applied before the digest and changed since is
caught even when every link after it was rewritten to match.

Links are recomputed under the chain encoding the store records; a digest's chains under
the encoding it was taken under, so a digest from before a migration that changed the
encoding (and recomputed every stored link) still verifies.

The store is read through a port (`ledger.app.ports.AuditSource`, implemented on SQL by
`ledger.store.audit_snapshot`), so this module stays on the application's side of the
layering: it decides, the store only reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import ExitStack, closing
from itertools import groupby
from typing import TypeVar

from ledger.app.audit.checker import Checker
from ledger.app.audit.report import MAX_PROBLEMS, DigestCheck, Finding, VerifyReport
from ledger.app.ports import AuditSource, StoredErasure, StoredEvent, StoredHistory, StoredUser
from ledger.domain.audit.canonical import CHAIN_ENCODING, CHAIN_ENCODINGS, canonical_event_as
from ledger.domain.audit.chain import GENESIS, next_link
from ledger.domain.audit.digest import Digest
from ledger.domain.audit.merkle import MerkleBuilder
from ledger.domain.facts import phone_key_fingerprint
from ledger.domain.policy import PolicySet
from ledger.errors import LedgerError, UsageError

__all__ = ["DigestCheck", "Finding", "VerifyReport", "verify"]


def verify(
    source: AuditSource,
    policies: PolicySet,
    *,
    user: str | None = None,
    digest: Digest | None = None,
    phone_key: bytes | None = None,
    chunk_users: int = 1000,
    progress: Callable[[int], None] | None = None,
    max_problems: int = MAX_PROBLEMS,
) -> VerifyReport:
    """Verify the store behind `source` against `policies` (see the module's doc): every
    user, or only `user`; with `digest`, also that the events it covers are unchanged.
    With `phone_key`, that the store's phone hashes were made with it.
    `progress` gets the number of events checked since its last call, every `chunk_users`
    users."""
    if user is not None and digest is not None:
        raise UsageError("a digest covers the whole store: check it without a single user")
    if chunk_users < 1:
        raise ValueError("chunk_users must be at least 1")
    started = time.perf_counter()
    report = VerifyReport(max_problems=max_problems)
    merkle = MerkleBuilder() if digest is not None else None
    covered = 0
    pending = 0
    with source.snapshot() as snap, ExitStack() as streams:
        checker = Checker(policies, report, _store_encoding(snap.chain_encoding(), report))
        checker.check_pins(snap.pins(), digest)
        if phone_key is not None:
            report.phone_key = _check_phone_key(snap.phone_key_fingerprint(), phone_key, report)
        # Closed before the snapshot ends, failure or not: an open cursor must not outlive
        # its transaction until the garbage collector finds it.
        users = streams.enter_context(
            closing(
                _merged(
                    streams.enter_context(closing(snap.users(user))),
                    streams.enter_context(closing(snap.events(user))),
                    streams.enter_context(closing(snap.history(user))),
                    streams.enter_context(closing(snap.erasures(user))),
                )
            )
        )
        for n, (user_id, urow, evs, hist, erasure) in enumerate(users, 1):
            if erasure is not None:
                checker.check_erased(user_id, urow, evs, hist, erasure)
                report.erased += 1
            else:
                canonical = checker.check_chain(user_id, urow, evs)
                checker.check_history(user_id, evs, hist)
            if merkle is not None and digest is not None:
                if erasure is not None:
                    # The fields are gone; the stored links are checked as a chain and
                    # committed to by the erasure, whose link is the head (docs/audit.md).
                    head, length = _stored_chain_until(evs, digest.seq)
                else:
                    if digest.chain_encoding != checker.encoding:
                        canonical = _encoded(evs, digest.chain_encoding)
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


def _check_phone_key(stored: str | None, key: bytes, report: VerifyReport) -> str:
    if stored is None:
        return "not recorded"
    given = phone_key_fingerprint(key)
    if stored == given:
        return "matches"
    report.add(
        Finding(
            None,
            "phone_key_changed",
            f"the store's phone hashes were made with another key than LEDGER_PHONE_KEY "
            f"(recorded fingerprint {stored[:12]}…, this key's {given[:12]}…): a writer "
            "under this key would be refused, and its hashes would never match the stored ones",
            field="phone_key_fingerprint",
            stored=stored,
            derived=given,
        )
    )
    return "differs"


def _store_encoding(stored: int | None, report: VerifyReport) -> int:
    """The chain encoding to check the store's links under: the one it records (none
    recorded: 1, the only one before the record); an unknown one is reported and the
    links are checked under the writer's."""
    if stored is None:
        return 1
    if stored in CHAIN_ENCODINGS:
        return stored
    report.add(
        Finding(
            None,
            "chain_encoding",
            f"the store records chain encoding {stored}, which this ledger does not know "
            f"(it knows {', '.join(map(str, CHAIN_ENCODINGS))}): the record was edited; "
            f"links are checked under encoding {CHAIN_ENCODING}",
            field="chain_encoding",
            stored=stored,
            derived=CHAIN_ENCODING,
        )
    )
    return CHAIN_ENCODING


def _encoded(evs: Sequence[StoredEvent], encoding: int) -> list[bytes | None]:
    """Each event's bytes in `encoding` (None: unreadable, reported by the chain check)."""
    out: list[bytes | None] = []
    for ev in evs:
        try:
            out.append(canonical_event_as(encoding, ev.fields))
        except ValueError:
            out.append(None)
    return out


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


def _stored_chain_until(evs: Sequence[StoredEvent], seq: int) -> tuple[bytes, int]:
    """An erased user's chain head and length over the events the digest covers: the
    stored link of the last of them."""
    head, length = GENESIS, 0
    for ev in evs:
        if ev.app_seq <= seq:
            head, length = ev.link, length + 1
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
        chain_encoding=digest.chain_encoding,
    )
    if not check.matches:
        counts = ""
        if (check.users, check.events) != (check.computed_users, check.computed_events):
            counts = (
                f"; it counts {check.users:,} users and {check.events:,} events, the store "
                f"now has {check.computed_users:,} and {check.computed_events:,} up to it"
            )
        report.add(
            Finding(
                None,
                "digest_root",
                f"events applied before the digest changed: the Merkle root over the "
                f"events up to seq {digest.seq} is {check.computed_root[:16]}…, the digest "
                f"says {digest.root[:16]}…{counts}",
            )
        )
    return check


T = TypeVar("T", StoredUser, StoredEvent, StoredHistory, StoredErasure)


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


Merged = tuple[str, StoredUser | None, list[StoredEvent], list[StoredHistory], StoredErasure | None]


def _merged(
    users: Iterable[StoredUser],
    events: Iterable[StoredEvent],
    history: Iterable[StoredHistory],
    erasures: Iterable[StoredErasure] = (),
) -> Generator[Merged, None, None]:
    """Each user id found in the users, events or history streams, with its rows from each
    and its erasure, in order: one user's rows in memory at a time."""
    u_it, e_it, h_it, x_it = (
        _by_user(users, "users"),
        _by_user(events, "events"),
        _by_user(history, "history rows"),
        _by_user(erasures, "erasures"),
    )
    u, e, h, x = next(u_it, None), next(e_it, None), next(h_it, None), next(x_it, None)
    while u is not None or e is not None or h is not None or x is not None:
        user_id = min(y[0] for y in (u, e, h, x) if y is not None)
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
        erasure: StoredErasure | None = None
        if x is not None and x[0] == user_id:
            erasure = x[1][0]
            x = next(x_it, None)
        yield user_id, urow, evs, hist, erasure
