"""The subject export (docs/privacy.md): one user's events, history, explanation and
policies, with the proof that ties them to a recorded digest, read from one snapshot.

The proof is against a recorded digest that covers every event of the user (its `seq` at
or above the user's last application number, under the store's chain encoding): then the
user's leaf as of the digest is their whole chain, and the events in the document are
exactly the ones the path proves. Which digest is the caller's to say (`digest_document`),
or the newest recorded; `NoCoveringDigest` when none covers the user, so that the command
line can take a fresh one and the HTTP API can say so.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, select

from ledger.app.audit.decisions import decision_json
from ledger.app.audit.paths import StoreChanged, read_recorded, recorded_proof
from ledger.app.ports import RecordedDigest, StoredHistory
from ledger.domain.audit.merkle import Leaf
from ledger.domain.audit.subject import SUBJECT_FORMAT, event_json
from ledger.domain.limits import quote
from ledger.domain.rulebooks import RULEBOOKS, age_status
from ledger.domain.time import format_instant
from ledger.errors import LedgerError
from ledger.queries.history import Current, ErasedUser, UnknownUser, explanation
from ledger.store.audit_snapshot import SqlAuditSource
from ledger.store.digests import SqlDigestSnapshot
from ledger.store.errors import translated_errors
from ledger.store.rows import day, instant, optional_instant
from ledger.store.schema import erasures, users

__all__ = ["DigestNotRecorded", "NoCoveringDigest", "export_subject"]


class NoCoveringDigest(LedgerError):
    """No recorded digest covers every event of the user: one must be taken first."""


class DigestNotRecorded(LedgerError):
    """The digest given is not one the store recorded."""


def export_subject(
    engine: Engine,
    user_id: str,
    now: datetime,
    *,
    digest_document: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The subject export of `user_id` (UnknownUser for a user without events), proved
    against the recorded digest whose document is `digest_document` (DigestNotRecorded
    when the store did not record it), or against the newest recorded one; either way
    NoCoveringDigest when it does not cover all of the user's events."""
    with engine.connect() as conn, SqlAuditSource(conn).snapshot() as snap:
        # An erased user's export is the erased answer, as every reader's: their events
        # keep only links, and nothing personal is left to export (docs/data-protection.md).
        with translated_errors(reading=True):
            gone = conn.execute(
                select(erasures.c.erased_at, erasures.c.request_id).where(
                    erasures.c.user_id == user_id
                )
            ).first()
        if gone is not None:
            raise ErasedUser(user_id, instant(gone[0]), gone[1])
        evs = list(snap.events(user_id))
        if not evs:
            raise UnknownUser(
                f"unknown user {user_id[:60]!r}: no events for this user in the ledger"
            )
        hist = list(snap.history(user_id))
        pins = snap.pins()
        encoding = snap.chain_encoding() or 1
        with translated_errors(reading=True):
            found = conn.execute(
                select(users.c.birth_date, users.c.signup_at).where(users.c.user_id == user_id)
            ).first()
        birth_date, signup_at = (
            (day(found[0]), optional_instant(found[1])) if found else (None, None)
        )
        digests = SqlDigestSnapshot(conn)
        last = max(ev.app_seq for ev in evs)
        recorded = _chosen(digests, digest_document, last, encoding)
        proof = recorded_proof(digests, recorded, user_id)
        chain = Leaf(user_id, bytes(evs[-1].link), len(evs))
        if proof.leaf != chain or not proof.holds:
            raise StoreChanged(
                f"the stored events of {quote(user_id)} do not lead to the root of digest "
                f"#{recorded.id}: the store changed since; run `ledger verify`"
            )
    sequences = {ev.event_id: (ev.app_seq, ev.seq) for ev in evs if ev.event_id is not None}
    # Record-time order, as the decision log (row id breaks ties: the sort is stable).
    ordered = sorted(hist, key=lambda s: (s.recorded_at, s.valid_from))
    named = sorted({s.policy for s in hist})
    proof_json = proof.to_json()
    return {
        "format": SUBJECT_FORMAT,
        "user_id": user_id,
        "generated_at": format_instant(now),
        "events": [event_json(ev.fields, ev.app_seq) for ev in evs],
        "history": [decision_json(s, sequences) for s in ordered],
        "explanation": _explanation(user_id, hist, birth_date, signup_at),
        "policies": {v: pins.get(v) or _row_hash(hist, v) for v in named},
        "proof": {
            "chain_encoding": encoding,
            "links": [bytes(ev.link).hex() for ev in evs],
            "head": chain.head.hex(),
            "length": chain.length,
            "digest_id": proof.digest_id,
            "digest": proof.document,
            "leaf": proof_json["leaf"],
            "leaf_index": proof.leaf_index,
            "tree_size": proof.tree_size,
            "siblings": proof_json["siblings"],
        },
    }


def _chosen(
    digests: SqlDigestSnapshot,
    wanted: dict[str, Any] | None,
    last: int,
    encoding: int,
) -> RecordedDigest:
    """The recorded digest to prove against (see `export_subject`)."""
    if wanted is None:
        # Digests are taken at ever higher seqs: if the newest does not cover the user, no
        # older one does.
        newest = digests.recorded()
        if newest is None:
            raise NoCoveringDigest("no digest is recorded in the store")
        _, digest = read_recorded(newest)
        if newest.seq < last or digest.chain_encoding != encoding:
            raise NoCoveringDigest(
                f"the newest recorded digest (#{newest.id}, seq {newest.seq:,}) does not "
                f"cover the user's last event (seq {last:,})"
            )
        return newest
    match = None
    for recorded in digests.recorded_digests():
        if recorded.seq == wanted.get("seq") and recorded.root == wanted.get("root"):
            try:
                same = json.loads(recorded.document) == wanted
            except ValueError:
                same = False
            if same:
                match = recorded
    if match is None:
        raise DigestNotRecorded(
            "the store did not record this digest (`ledger digest list` shows those it did)"
        )
    _, digest = read_recorded(match)
    if match.seq < last:
        raise NoCoveringDigest(
            f"digest #{match.id} covers events up to seq {match.seq:,}, the user's last event "
            f"is seq {last:,}: take a newer digest"
        )
    if digest.chain_encoding != encoding:
        raise NoCoveringDigest(
            f"digest #{match.id} was taken under chain encoding {digest.chain_encoding}, the "
            f"store's links are under {encoding}: take a newer digest"
        )
    return match


def _row_hash(hist: list[StoredHistory], version: str) -> str:
    return next(s.policy_hash for s in hist if s.policy == version)


def _explanation(
    user_id: str,
    hist: list[StoredHistory],
    birth_date: date | None,
    signup_at: datetime | None,
) -> list[dict[str, Any]]:
    """For each believed period, the statement `ledger explain USER --at <its start>`
    gives, and its rulebook's terms."""
    rows = [s.row for s in hist if s.row is not None and s.row.superseded_at is None]
    entries = sorted((r.entry for r in rows), key=lambda e: e.valid_from)
    out = []
    for i, e in enumerate(entries):
        at = e.valid_from
        cur = Current(
            user_id,
            at,
            e,
            entries[i - 1] if i else None,
            birth_date,
            age_status(e.assignment, birth_date, at.date()),
            signup_at,
        )
        rb = RULEBOOKS[e.assignment]
        out.append(
            {
                "valid_from": format_instant(e.valid_from),
                "valid_to": format_instant(e.valid_to),
                "assignment": e.assignment,
                "policy": e.policy,
                "rule": e.rule,
                "statement": explanation(cur),
                "rulebook": {
                    "id": rb.id,
                    "title": rb.title,
                    "age_rule": rb.age_rule,
                    "content_focus": rb.content_focus,
                    "data_residency": rb.data_residency,
                },
            }
        )
    return out
