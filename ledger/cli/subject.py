"""`ledger subject export` and `ledger subject verify`: a subject's data as one document
that proves itself (docs/privacy.md), and its check without the store."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from ledger.cli.audit import _read_bytes, take_and_record
from ledger.cli.common import (
    DbOption,
    JsonOption,
    check_output,
    command_group,
    emit_json,
    out,
    plain,
    settings,
    writing,
)
from ledger.domain.time import truncate_ms
from ledger.errors import LedgerError, UsageError
from ledger.render.text import escape_control

__all__ = ["subject_app"]

# A fresh digest taken for an export covers the user unless their events arrive between
# the digest and the export's read: a few tries, then the error says so.
FRESH_DIGEST_TRIES = 3

subject_app = command_group(
    "A data subject's access: export everything the ledger holds of one user, with the "
    "proof that ties it to a signed digest, and check such an export without the store."
)


@subject_app.callback()
def _subject_group() -> None:
    # A callback keeps `subject` a command group.
    pass


def _digest_file(path: Path) -> dict[str, Any]:
    from ledger.cli.audit import DIGEST_BYTES

    raw = _read_bytes(path, "digest")
    if len(raw) > DIGEST_BYTES:
        raise LedgerError(f"{path}: not a digest ({len(raw):,} bytes, a digest is under 64 KiB)")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError, ValueError):
        raise LedgerError(f"{path}: not a digest (not JSON)") from None
    if not isinstance(document, dict):
        raise LedgerError(f"{path}: not a digest (not a JSON object)")
    return document


@subject_app.command("export")
def export(
    user: Annotated[str, typer.Argument(help="The user id.", show_default=False)],
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            help="File to write (JSON, created readable by its owner only), or - for "
            "standard output.",
            show_default=False,
        ),
    ],
    digest_file: Annotated[
        Path | None,
        typer.Option(
            "--digest",
            help="Prove against this digest (a file `ledger digest` wrote, which the store "
            "recorded). Default: the newest recorded digest covering all of the user's "
            "events, or a fresh one.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export everything the ledger holds of USER as one JSON document: every event in
    chain order (regions, validity and keyed hashes, never a raw phone number), every
    history row (believed and superseded) with reason, facts and evidence, the plain-
    language explanation of each believed period with its rulebook's terms, the hash of
    every policy the history names, and the proof: the user's links, chain head and
    length, the signed digest, the user's leaf and its RFC 6962 audit path to the digest's
    root.

    Without --digest, the proof is against the newest recorded digest that covers all of
    the user's events; when none does, a fresh digest is taken, signed with
    LEDGER_AUDIT_KEY when it is set, and recorded. `ledger subject verify FILE` checks the
    export with no store. Exit status: 0 written; 1 an unknown user, a digest the store did
    not record or that does not cover the user, or another error; 2 on usage errors.
    """
    from ledger.queries.history import ErasedUser
    from ledger.queries.subject import NoCoveringDigest, export_subject
    from ledger.store.readonly import open_at_head

    to_stdout = output == "-"
    if to_stdout and as_json:
        raise UsageError("--json reports on a file written: give -o FILE.json with it")
    path = Path(output)
    if not to_stdout:
        check_output(path)
    wanted = _digest_file(digest_file) if digest_file is not None else None
    s = settings(db_url=db)
    fresh: int | None = None
    engine = open_at_head(s.db_url)
    try:
        for attempt in range(FRESH_DIGEST_TRIES + 1):
            try:
                document = export_subject(
                    engine, user, truncate_ms(datetime.now(UTC)), digest_document=wanted
                )
                break
            except ErasedUser as erased:
                # The erased answer, as history/current/explain give it; no file is
                # written: nothing personal is left (docs/data-protection.md).
                if as_json:
                    emit_json(erased.to_json())
                else:
                    sys.stdout.write(escape_control(str(erased)) + "\n")
                return
            except NoCoveringDigest as exc:
                if wanted is not None:
                    raise LedgerError(f"{digest_file}: {exc}") from None
                if attempt == FRESH_DIGEST_TRIES:
                    raise LedgerError(
                        f"{exc}: the user's events kept arriving while digests were taken; "
                        "try again"
                    ) from None
                _, _, _, fresh = take_and_record(s, None)
    finally:
        engine.dispose()
    # ASCII-only JSON: user ids and reasons are input; escaped, the file is safe to print.
    text = json.dumps(document, indent=2) + "\n"
    if to_stdout:
        sys.stdout.write(text)
        return
    # Written beside the target and renamed when complete: a failed export never leaves a
    # file that looks whole. Owner-only: it holds the user's birth date and history.
    partial = path.with_name(path.name + ".partial")
    with writing(path):
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with open(fd, "w", encoding="utf-8", newline="\n") as fo:
                fo.write(text)
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    proof = document["proof"]
    summary = {
        "path": str(path),
        "user_id": user,
        "events": len(document["events"]),
        "history_rows": len(document["history"]),
        "digest_id": proof["digest_id"],
        "digest_seq": proof["digest"]["seq"],
        "fresh_digest": fresh is not None,
        "signature": proof["digest"].get("signature", {}).get("alg", "none"),
    }
    if as_json:
        emit_json(summary)
        return
    how = "a fresh digest" if fresh is not None else "recorded digest"
    out.print(
        plain(
            f"wrote the export of {user!r} to {path}: {summary['events']:,} events, "
            f"{summary['history_rows']:,} history rows, proved against {how} "
            f"#{summary['digest_id']} (seq {summary['digest_seq']:,}, signature "
            f"{summary['signature']})"
        ),
        soft_wrap=True,
    )


@subject_app.command("verify")
def verify(
    file: Annotated[
        Path,
        typer.Argument(help="The export (`ledger subject export`).", dir_okay=False),
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="PEM file of the Ed25519 public key the digest was signed with (HMAC: "
            "LEDGER_AUDIT_KEY).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a subject export with no store, one line per check: format (a version this
    ledger reads); chain (the links recomputed from the events give the stated head and
    length, seq 1..n); audit_path (the leaf and its path lead to the digest's root, in a
    tree of the digest's size); signature (the digest's HMAC-SHA256 signature under
    LEDGER_AUDIT_KEY, or Ed25519 under --public-key; an unsigned digest fails); history
    (the history is what the events give under the shipped policies, whose hashes match).

    Exit status: 0 when every check holds; 1 when one does not, or the file is not a
    subject export; 2 on usage errors.
    """
    from ledger.app.audit.subject import MalformedExport, parse_export, verify_export
    from ledger.codecs.policy_files import load_policies

    raw = _read_bytes(file, "export")
    try:
        document = parse_export(raw)
    except MalformedExport as exc:
        raise LedgerError(f"{file}: {exc}") from None
    pem = _read_bytes(public_key, "public key") if public_key is not None else None
    s = settings()
    report = verify_export(document, load_policies(), hmac_key=s.audit_key, ed25519_public_pem=pem)
    if as_json:
        emit_json(report.to_json())
    else:
        for c in report.checks:
            line = Text(f"{'pass' if c.ok else 'FAIL'}  ", style="green" if c.ok else "bold red")
            # The details quote the document: printed as data, never as markup.
            line.append_text(plain(f"{c.name}: {c.detail}"))
            out.print(line, soft_wrap=True)
    if not report.ok:
        raise LedgerError(f"{file}: the export does not verify: {', '.join(report.failed)} failed")
