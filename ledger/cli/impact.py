"""`ledger impact`: who would move between rulebooks under a candidate policy set, and why;
read-only over the store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ledger.cli.common import (
    POLICIES_HELP,
    DbOption,
    JsonOption,
    count_progress,
    emit_json,
    out,
    parse_time,
    plain,
    settings,
    tune_gc_for_streaming,
)
from ledger.domain.time import format_instant
from ledger.domain.timeline import entry_at
from ledger.errors import UsageError

PoliciesOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--policies",
        help=f"{POLICIES_HELP} A candidate set: changing a shipped version is allowed here, "
        "as nothing is recorded. Default: the shipped policies.",
        show_default=False,
    ),
]


def _pct(share: float) -> str:
    return f"{share:.1%}" if share else "0%"


def _render_report(report: Any) -> None:
    states = sorted({a for a, _ in report.matrix} | {b for _, b in report.matrix})
    title = plain(
        f"impact at {format_instant(report.at)}: {report.description} — "
        f"{report.users:,} users, {report.moved:,} move ({_pct(report.share(report.moved))})"
    )
    t = Table(title=title, title_justify="left")
    t.add_column("current \\ candidate", style="bold")
    for s in states:
        t.add_column(plain(s), justify="right")
    for a in states:
        cells = []
        for b in states:
            tr = report.matrix.get((a, b))
            cells.append(plain(f"{tr.users:,} ({_pct(report.share(tr.users))})") if tr else "·")
        t.add_row(plain(a), *cells)
    out.print(t)
    moves = [((a, b), tr) for (a, b), tr in report.matrix.items() if a != b]
    if moves:
        m = Table(title="who moves (sample users)", title_justify="left")
        for col in ("from", "to", "users", "share", "sample users"):
            m.add_column(col, justify="right" if col in ("users", "share") else "left")
        for (a, b), tr in sorted(moves, key=lambda kv: -kv[1].users):
            m.add_row(
                plain(a),
                plain(b),
                f"{tr.users:,}",
                _pct(report.share(tr.users)),
                plain(", ".join(tr.samples)),
            )
        out.print(m)
    r = Table(title="by policy and rule", title_justify="left")
    for col in ("current policy / rule", "candidate policy / rule", "users", "share", "sample"):
        r.add_column(col, justify="right" if col in ("users", "share") else "left")
    for (a, b), tr in sorted(report.rules.items(), key=lambda kv: (-kv[1].users, kv[0])):
        r.add_row(
            plain(f"{a[0]} {a[1]}" if a[0] else "—"),
            plain(f"{b[0]} {b[1]}" if b[0] else "—"),
            f"{tr.users:,}",
            _pct(report.share(tr.users)),
            plain(", ".join(tr.samples[:2])),
            style=None if a == b else "bold",
        )
    out.print(r)
    out.print(
        plain(
            f"{report.reason_changed:,} keep their rulebook for another reason; "
            f"{report.events:,} events folded in {report.seconds:.1f} s"
        )
    )


def _render_explanation(ex: Any) -> None:
    t = Table(
        title=plain(f"{ex.user_id}: current and candidate histories ({ex.description})"),
        title_justify="left",
    )
    for col in ("valid from", "valid to", "current", "candidate", ""):
        t.add_column(col)
    for s in ex.segments:

        def cell(e: Any) -> Any:
            return plain(f"{e.assignment} ({e.policy} {e.rule})" if e else "—")

        t.add_row(
            plain(format_instant(s.valid_from)),
            plain(format_instant(s.valid_to) or "open"),
            cell(s.current),
            cell(s.candidate),
            "moves" if s.moved else "",
            style="bold" if s.moved else None,
        )
    out.print(t)
    for label, entries in (("current", ex.current), ("candidate", ex.candidate)):
        e = entry_at(entries, ex.at)
        if e is None:
            out.print(plain(f"{label} at {format_instant(ex.at)}: no rulebook (not signed up)"))
        else:
            out.print(
                plain(
                    f"{label} at {format_instant(ex.at)}: {e.assignment} by {e.policy} rule "
                    f"{e.rule}: {e.reason}"
                )
            )


def impact(
    policies: PoliciesOption = None,
    accept: Annotated[
        str | None,
        typer.Option(
            "--accept",
            metavar="VERSION",
            help="Pretend every user signed up by --at accepted VERSION at --at (new terms "
            "shipping on that date).",
            show_default=False,
        ),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            metavar="VERSION",
            help="Classify every user under VERSION alone, from signup on, whatever its "
            "effective date (e.g. --only wechat-style).",
            show_default=False,
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="The valid time compared, and the time of --accept: ISO 8601 (2026-04-01 "
            "means 00:00 UTC). Default: now.",
            show_default=False,
        ),
    ] = None,
    explain: Annotated[
        str | None,
        typer.Option(
            "--explain",
            metavar="USER",
            help="Only this user: current and candidate histories side by side, with both "
            "reasons at --at.",
            show_default=False,
        ),
    ] = None,
    samples: Annotated[
        int,
        typer.Option("--samples", help="Sample user ids kept per transition (0-100)."),
    ] = 3,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """What-if: which users a candidate policy set would move between rulebooks, and why.

    Folds every user's stored events with the projector's own fold under the candidate
    policies and compares the result at --at with the assignment the ledger believes then.
    Prints the transition matrix (current -> candidate, counts and shares), the same by
    policy and rule, and sample users per transition. Read-only: nothing is written to the
    store, which is never created or migrated by this command.

    Exit status: 0; 1 on errors (unknown user or version, invalid policies, no ledger);
    2 on usage errors.
    """
    from ledger.app.workbench.impact import explain as explain_user
    from ledger.app.workbench.impact import impact as run_impact
    from ledger.app.workbench.impact import what_if
    from ledger.codecs.policy_files import load_policy_paths

    if not 0 <= samples <= 100:
        raise UsageError(f"--samples {samples}: must be between 0 and 100")
    when = parse_time(at, "--at") or datetime.now(UTC)
    candidate = load_policy_paths(policies).require()
    w = what_if(candidate, when, accept=accept, only=only)
    from ledger.store.readonly import open_at_head

    engine = open_at_head(settings(db_url=db).db_url)
    try:
        if explain is not None:
            from ledger.queries.history import history
            from ledger.store.reading import read_observations

            believed = [r.entry for r in history(engine, explain)]
            ex = explain_user(explain, read_observations(engine, explain), believed, w)
            if as_json:
                emit_json(ex.to_json())
            else:
                _render_explanation(ex)
            return
        from ledger.store.reading import count_events, read_user_histories

        tune_gc_for_streaming()
        shown, advance = count_progress(count_events(engine), "impact")
        with shown:
            report = run_impact(
                read_user_histories(engine, when), w, samples=samples, progress=advance
            )
    finally:
        engine.dispose()
    if as_json:
        emit_json(report.to_json())
    else:
        _render_report(report)


__all__ = ["impact"]
