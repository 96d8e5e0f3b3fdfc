"""`ledger verify`, `ledger digest` (with `digest list` and `digest path`), `ledger decisions
export`: the audit trail of docs/audit.md from the command line. They read the store
through read-only sessions and never migrate it; `ledger digest` then records the digest it
wrote in the store, in one short write transaction of its own."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ledger.cli.common import (
    POLICIES_HELP,
    DbOption,
    JsonOption,
    LedgerGroup,
    check_output,
    command_group,
    count_progress,
    emit_json,
    err,
    out,
    parse_time,
    plain,
    policy_set,
    settings,
    writing,
)
from ledger.domain.limits import quote
from ledger.domain.time import format_instant, truncate_ms
from ledger.errors import LedgerError, UsageError

__all__ = ["decisions_app", "digest", "digest_app", "take_and_record", "verify"]

# Problems listed in the human output; --json lists every one kept.
SHOWN_PROBLEMS = 50

UNSIGNED_WARNING = (
    "warning: the digest is not signed: nothing vouches that it is the one that was taken "
    "(set LEDGER_AUDIT_KEY, or sign with --private-key)"
)


def _reader(db: str | None) -> tuple[Any, Any]:
    """The settings and a read-only engine on an existing store at the newest schema: an
    audit never creates, migrates or writes the store it checks."""
    from ledger.store.readonly import open_at_head

    s = settings(db_url=db)
    return s, open_at_head(s.db_url)


def _source(engine: Any) -> Any:
    from ledger.store.audit_snapshot import SqlAuditSource

    return SqlAuditSource(engine)


DIGEST_BYTES = 64 << 10


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _load_digest(path: Path, hmac_key: bytes | None, public_key: Path | None) -> Any:
    """The digest in the file, its signature checked with the keys given."""
    from ledger.app.audit.signing import ALG_NONE, check, signature_alg
    from ledger.domain.audit.digest import DigestError

    raw = _read_bytes(path, "digest")
    # A digest is a few hundred bytes; anything far larger is not one, and is not parsed.
    if len(raw) > DIGEST_BYTES:
        raise LedgerError(f"{path}: not a digest ({len(raw):,} bytes, a digest is under 64 KiB)")
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise LedgerError(f"{path}: not a digest (not UTF-8 text)") from None
    except RecursionError:
        raise LedgerError(f"{path}: not a digest (JSON nested too deep)") from None
    except json.JSONDecodeError as exc:
        raise LedgerError(
            f"{path}: not a digest (not JSON: {exc.msg} at line {exc.lineno})"
        ) from None
    pem = _read_bytes(public_key, "public key") if public_key is not None else None
    try:
        unsigned = signature_alg(document) == ALG_NONE
        digest = check(document, hmac_key=hmac_key, ed25519_public_pem=pem)
    except DigestError as exc:
        raise LedgerError(f"{path}: {exc}") from None
    if unsigned:
        err.print(Text(UNSIGNED_WARNING), soft_wrap=True)
    return digest


PoliciesDirOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--policies",
        help=f"{POLICIES_HELP} Give the policies the store was written with.",
        show_default=False,
    ),
]


def verify(
    user: Annotated[
        str | None,
        typer.Option(
            "--user", help="Check only this user (not with --digest).", show_default=False
        ),
    ] = None,
    digest_file: Annotated[
        Path | None,
        typer.Option(
            "--digest",
            help="Also check that the events this digest (from `ledger digest`) covers are "
            "unchanged. Its signature is checked with LEDGER_AUDIT_KEY (HMAC) or --public-key.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="PEM file of the Ed25519 public key the digest was signed with.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    policies: PoliciesDirOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the store against its own events and policies, on one consistent snapshot
    (writers may go on meanwhile).

    For every user: the events' hash chain is whole and unchanged; the assignment history,
    believed and superseded rows alike, is exactly what folding the stored events through
    the policies gives; every history row carries its policy version's pinned hash, and
    every pinned version hashes as the policy file given. With --digest: the Merkle root
    over the chains up to the digest's seq equals the digest's. With LEDGER_PHONE_KEY set:
    the store's phone hashes were made with that key (its recorded fingerprint).

    Exit status: 0 when everything matches; 1 when anything does not (each problem is
    listed: user, kind, event seq or history row, detail), or on errors; 2 on usage errors.
    """
    from ledger.app.audit.verify import verify as run_verify

    if user is not None and digest_file is not None:
        raise UsageError("--digest covers the whole store: give it without --user")
    if public_key is not None and digest_file is None:
        raise UsageError("--public-key checks a digest's signature: give --digest FILE too")
    rules = policy_set(policies)
    s, engine = _reader(db)
    digest = None
    if digest_file is not None:
        digest = _load_digest(digest_file, s.audit_key, public_key)
    total = None
    if err.is_terminal and user is None:
        from ledger.store.reading import count_events

        total = count_events(engine)
    shown, advance = count_progress(total, "verify")
    try:
        with shown:
            report = run_verify(
                _source(engine),
                rules,
                user=user,
                digest=digest,
                # Without LEDGER_PHONE_KEY there is no key to check (an auditor need not
                # hold it): the public development key is not compared.
                phone_key=None if s.uses_dev_phone_key else s.phone_key,
                progress=advance,
            )
    finally:
        engine.dispose()
    if user is not None and report.users == 0:
        raise LedgerError(f"no user {user!r} in the store")
    if as_json:
        emit_json(report.to_json())
    else:
        _render_verify(report)
    if not report.ok:
        first = report.problems[0] if report.problems else None
        raise LedgerError(
            f"verification failed: {report.problem_count:,} "
            f"problem{'s' if report.problem_count != 1 else ''}"
            + (f", the first: {first}" if first else "")
        )


def _render_verify(report: Any) -> None:
    t = Table(title="verify", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("users", f"{report.users:,}")
    t.add_row("events (hash chains)", f"{report.events:,}")
    t.add_row("history rows (re-derived)", f"{report.history_rows:,}")
    t.add_row("erased users (links checked as stored)", f"{report.erased:,}")
    t.add_row("policy pins", f"{report.pins:,}")
    t.add_row("phone key (LEDGER_PHONE_KEY)", report.phone_key)
    if report.digest is not None:
        d = report.digest
        verdict = "matches" if d.matches else "DIFFERS"
        t.add_row("digest", f"{verdict} (seq {d.seq:,}, {d.computed_events:,} events)")
    t.add_row("problems", f"{report.problem_count:,}")
    t.add_row("time", f"{report.seconds:.1f} s")
    if report.events:
        t.add_row("throughput", f"{report.events_per_second:,.0f} events/s")
    out.print(t)
    if not report.problems:
        return
    p = Table(title="problems", title_justify="left")
    for col in ("user", "kind", "at", "detail"):
        p.add_column(col, overflow="fold")
    for problem in report.problems[:SHOWN_PROBLEMS]:
        at = (
            f"seq {problem.seq}"
            if problem.seq is not None
            else (f"row #{problem.row}" if problem.row is not None else "")
        )
        # User ids and stored values are input: printed as data, never as markup.
        p.add_row(plain(problem.user or "—"), plain(problem.kind), plain(at), plain(problem.detail))
    out.print(p)
    if report.problem_count > SHOWN_PROBLEMS:
        out.print(
            f"{report.problem_count - SHOWN_PROBLEMS:,} more problems: --json lists them",
            markup=False,
        )


OutputOption = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--output",
        help="File to write the digest to (default: standard output).",
        show_default=False,
    ),
]
PrivateKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--private-key",
        help="Sign with this Ed25519 private key (unencrypted PKCS#8 PEM) instead of "
        "LEDGER_AUDIT_KEY's HMAC.",
        show_default=False,
        dir_okay=False,
    ),
]


def digest(
    output: OutputOption = None,
    private_key: PrivateKeyOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a digest of the store: the Merkle root over every user's (user id, event chain
    head, chain length), the highest application seq it covers, the numbers of users and
    events, the time, and the pinned policy hashes.

    Signed with HMAC-SHA256 when LEDGER_AUDIT_KEY is set, with Ed25519 when --private-key
    is given; unsigned (with a warning) otherwise. Keep it where the operator cannot change
    it: `ledger verify --digest FILE` later proves that no event it covers has changed.
    The store records every digest it writes (`ledger digest list`), so that `ledger digest
    path USER` can prove a user's chain against it. On PostgreSQL, writers pause for the
    moment it takes to see them all committed.
    """
    pem = _read_bytes(private_key, "private key") if private_key is not None else None
    if output is not None and str(output) != "-":
        check_output(output)
    s = settings(db_url=db)
    taken, document, text, digest_id = take_and_record(s, pem)
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        return
    with writing(output):
        output.write_text(text, encoding="utf-8")
    d = taken.digest
    summary = {
        "path": str(output),
        "id": digest_id,
        "seq": d.seq,
        "users": d.users,
        "events": d.events,
        "root": d.root,
        "signature": document["signature"]["alg"],
    }
    if as_json:
        emit_json(summary)
    else:
        out.print(
            plain(
                f"wrote digest #{digest_id} of {d.users:,} users and {d.events:,} events up "
                f"to seq {d.seq:,} to {output} (root {d.root[:16]}…, signature "
                f"{summary['signature']})"
            ),
            soft_wrap=True,
        )


def take_and_record(s: Any, pem: bytes | None) -> tuple[Any, dict[str, Any], str, int]:
    """Take a digest of the store, sign it (Ed25519 with `pem`, else HMAC with
    LEDGER_AUDIT_KEY, else unsigned with a warning) and record it: the taken digest, the
    signed document, its text and its recorded id. `ledger digest` and `ledger subject
    export` (when no recorded digest covers the user) both take digests this way."""
    from ledger.app.audit.digest import take_blocked_digest
    from ledger.app.audit.signing import sign
    from ledger.domain.audit.digest import DigestError
    from ledger.store.readonly import open_at_head

    engine = open_at_head(s.db_url)
    try:
        taken = take_blocked_digest(_source(engine), truncate_ms(datetime.now(UTC)))
    finally:
        engine.dispose()
    try:
        # A flag wins over the environment: an Ed25519 key given replaces the HMAC.
        if pem is not None:
            document = sign(taken.digest, ed25519_private_pem=pem)
        elif s.audit_key is not None:
            document = sign(taken.digest, hmac_key=s.audit_key)
        else:
            document = sign(taken.digest)
    except DigestError as exc:
        raise LedgerError(str(exc)) from None
    if pem is None and s.audit_key is None:
        err.print(Text(UNSIGNED_WARNING), soft_wrap=True)
    text = json.dumps(document, indent=2) + "\n"
    # Recorded before it is written out: a digest the store did not record is never
    # handed out, as proofs can be given only against recorded ones.
    digest_id = _record(s.db_url, taken, text, document["signature"]["alg"])
    return taken, document, text, digest_id


def _record(url: str, taken: Any, text: str, alg: str) -> int:
    """Records the digest in the store: the one write of the audit commands, on an engine
    of its own (the audit's sessions are read-only), never migrating."""
    from ledger.store.database import open_engine
    from ledger.store.digests import record_digest

    engine = open_engine(url, migrate=False, create=False)
    try:
        return record_digest(engine, taken, text, alg)
    except LedgerError as exc:
        raise LedgerError(
            f"cannot record the digest in the store, so it was not written: {exc}"
        ) from None
    finally:
        engine.dispose()


digest_app = typer.Typer(
    cls=LedgerGroup,
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


@digest_app.callback(invoke_without_command=True)
def _digest_group(
    ctx: typer.Context,
    output: OutputOption = None,
    private_key: PrivateKeyOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a digest of the store (`ledger digest [-o FILE] [--private-key PEM]`), list the
    digests it recorded (`ledger digest list`), or give a user's audit path against one
    (`ledger digest path USER`).

    A digest is the Merkle root over every user's (user id, event chain head, chain
    length), the highest application seq it covers, the numbers of users and events, the
    time, and the pinned policy hashes. Signed with HMAC-SHA256 when LEDGER_AUDIT_KEY is
    set, with Ed25519 when --private-key is given; unsigned (with a warning) otherwise.
    The store records every digest it writes. On PostgreSQL, writers pause for the moment
    it takes to see them all committed.
    """
    if ctx.invoked_subcommand is None:
        digest(output=output, private_key=private_key, db=db, as_json=as_json)
        return
    if output is not None or private_key is not None or db is not None or as_json:
        raise UsageError(
            f"give the options of `digest {ctx.invoked_subcommand}` after it, not before"
        )


@digest_app.command("list")
def digest_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the digests the store recorded, oldest first: id, the seq each covers, when it
    was taken, its root, and its signature algorithm (none: unsigned)."""
    from ledger.store.digests import SqlDigestRecords

    _, engine = _reader(db)
    try:
        with SqlDigestRecords(engine).snapshot() as snap:
            rows = [
                {
                    "id": r.id,
                    "seq": r.seq,
                    "recorded_at": format_instant(r.recorded_at),
                    "users": r.users,
                    "events": r.events,
                    "root": r.root,
                    "signature": r.signature,
                }
                for r in snap.recorded_digests()
            ]
    finally:
        engine.dispose()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print("no digest is recorded: take one with `ledger digest`", markup=False)
        return
    t = Table(title="digests", title_justify="left")
    for col in ("id", "seq", "recorded at", "users", "events", "root", "signature"):
        t.add_column(col, justify="right" if col in ("id", "seq", "users", "events") else "left")
    for r in rows:
        t.add_row(
            str(r["id"]),
            f"{r['seq']:,}",
            plain(str(r["recorded_at"])),
            f"{r['users']:,}",
            f"{r['events']:,}",
            plain(f"{str(r['root'])[:16]}…"),
            plain(str(r["signature"])),
        )
    out.print(t)


@digest_app.command("path")
def digest_path(
    user: Annotated[str, typer.Argument(help="The user id.", show_default=False)],
    digest_id: Annotated[
        int | None,
        typer.Option(
            "--digest-id",
            help="The recorded digest to prove against (default: the newest).",
            show_default=False,
            min=1,
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give the RFC 6962 audit path of USER's leaf (user id, chain head, chain length, as of
    the digest's seq) to the root of a recorded digest: the leaf, its index, the tree size,
    the sibling hashes nearest the leaf first, and the digest as it was written.

    The path is checked before it is printed. Exit status: 0 when it leads to the digest's
    root; 1 when it does not (an event the digest covers changed since), when the user has
    no leaf in the digest, or on errors; 2 on usage errors.
    """
    from ledger.app.audit.paths import audit_path
    from ledger.store.digests import SqlDigestRecords

    _, engine = _reader(db)
    try:
        proof = audit_path(SqlDigestRecords(engine), user, digest_id)
    finally:
        engine.dispose()
    if not proof.holds:
        computed = proof.computed_root
        raise LedgerError(
            f"the audit path of {quote(user)} does not lead to the root of digest "
            f"#{proof.digest_id} (it leads to "
            f"{computed.hex()[:16] + '…' if computed else 'no root'}, the digest says "
            f"{proof.root.hex()[:16]}…): the events it covers changed since"
        )
    if as_json:
        emit_json(proof.to_json())
        return
    t = Table(
        title=f"audit path (digest #{proof.digest_id})", show_header=False, title_justify="left"
    )
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    t.add_row("user", plain(proof.leaf.user_id))
    t.add_row("chain head", proof.leaf.head.hex())
    t.add_row("chain length", f"{proof.leaf.length:,}")
    t.add_row("leaf index", f"{proof.leaf_index:,}")
    t.add_row("tree size", f"{proof.tree_size:,}")
    t.add_row("digest seq", f"{proof.document['seq']:,}")
    t.add_row("root", proof.root.hex())
    for i, sibling in enumerate(proof.siblings):
        t.add_row(f"sibling {i}", sibling.hex())
    t.add_row("checks", "the path leads to the digest's root")
    out.print(t)
    out.print(plain(json.dumps(proof.document, indent=2)), soft_wrap=True)


decisions_app = command_group(
    "The decision log: every assignment the ledger recorded, with its policy, rule, input "
    "facts and evidence events, one JSON object per line."
)


@decisions_app.callback()
def _decisions_group() -> None:
    # A callback keeps `decisions` a command group.
    pass


@decisions_app.command("export")
def export_decisions_command(
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            help="File to write (.jsonl, created readable by its owner only), or - for "
            "standard output.",
            show_default=False,
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only decisions recorded at or after T (ISO 8601).",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="Only decisions recorded before T (ISO 8601).", show_default=False
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export the decision log: one JSON object per history row (believed or superseded),
    in record-time order: decision_id, user_id, recorded_at, superseded_at, valid_from,
    valid_to, policy, policy_hash, rule, assignment, reason, input (the facts the rule
    read) and evidence (event ids with their seq and user_seq). No raw phone number is in
    it; facts such as the birth date are, so the file is created readable by its owner
    only."""
    from ledger.app.audit.decisions import export_decisions

    start = parse_time(since, "--since")
    end = parse_time(until, "--until")
    if start is not None and end is not None and end <= start:
        raise UsageError("--until must be after --since")
    to_stdout = output == "-"
    if to_stdout and as_json:
        raise UsageError("--json reports on a file written: give -o FILE.jsonl with it")
    path = Path(output)
    if not to_stdout and path.suffix != ".jsonl":
        raise UsageError(f"{output}: the decision log is JSON Lines; name it *.jsonl")
    if not to_stdout:
        check_output(path)
    _, engine = _reader(db)
    try:
        if to_stdout:
            written = export_decisions(_source(engine), sys.stdout, since=start, until=end)
            return
        # Written beside the target and renamed when complete: a failed export never
        # leaves a file that looks whole.
        partial = path.with_name(path.name + ".partial")
        with writing(path):
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with open(fd, "w", encoding="utf-8", newline="\n") as fo:
                    written = export_decisions(_source(engine), fo, since=start, until=end)
                os.replace(partial, path)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    finally:
        engine.dispose()
    if as_json:
        emit_json(
            {
                "path": str(path),
                "written": written,
                "since": format_instant(start),
                "until": format_instant(end),
            }
        )
    else:
        out.print(plain(f"wrote {written:,} decisions to {path}"), soft_wrap=True)
