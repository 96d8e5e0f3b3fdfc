"""`ledger schema check`: the current event schemas against the released versions
(`ledger.codecs.compatibility`, docs/event-contract.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.common import JsonOption, command_group, emit_json, out, plain
from ledger.errors import LedgerError, UsageError

schema_app = command_group(
    "The event contract: the Avro schemas of every released event schema version.\n\n"
    "Exit status: 0 compatible; 1 an incompatibility (or a released version changed); 2 a "
    "usage error."
)


@schema_app.callback()
def _schema_group() -> None:
    # A callback keeps `schema` a command group.
    pass


class SchemaIncompatible(LedgerError):
    pass


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"{n} {noun}"
    # "incompatibility" -> "incompatibilities", "problem" -> "problems"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


@schema_app.command("check")
def check(
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="backward: the current version reads what released versions wrote; "
            "forward: released versions read what the current one writes; full: both.",
        ),
    ] = "backward",
    transitive: Annotated[
        bool,
        typer.Option(
            "--transitive", help="Compare with every released version, not the latest only."
        ),
    ] = False,
    schemas: Annotated[
        Path | None,
        typer.Option(
            "--schemas",
            metavar="DIR",
            help="A schemas directory laid out as the shipped one (*.avsc, releases/N/*.avsc); "
            "default: the shipped schemas, also held to their released fingerprints.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check that the current event schemas stay compatible with the released versions.

    Compares the current schemas with the latest released version (--transitive: with
    every one) by Avro's schema resolution rules, as Apache Avro's compatibility checker
    decides them, under the modes of Confluent Schema Registry. Each incompatibility is
    named with its path (AccountEvent.payload[SignedUp].phone). Exit 1 if there is any."""
    from ledger.codecs.compatibility import MODES, check_schemas

    if mode not in MODES:
        raise UsageError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    if schemas is not None and not (schemas / "AccountEvent.avsc").is_file():
        raise UsageError(f"--schemas {schemas}: no AccountEvent.avsc there")
    try:
        report = check_schemas(schemas, mode, transitive=transitive)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        # The files are a developer's, and may be any JSON at all: one line, never a trace.
        where = schemas or "the shipped schemas"
        problem = f"{type(exc).__name__}: {exc}"
        raise LedgerError(f"cannot read the schemas in {where}: {problem}") from None
    if as_json:
        emit_json(report.to_json())
    else:
        scope = "every released version" if transitive else "the latest released version"
        out.print(
            plain(
                f"event schema version {report.current} ({report.directory}) against {scope} "
                f"({', '.join(map(str, report.compared)) or 'none yet'}), mode {mode}"
            ),
            soft_wrap=True,
        )
        for c in report.comparisons:
            verdict = (
                "compatible"
                if c.compatible
                else f"INCOMPATIBLE, {_count(len(c.incompatibilities), 'problem')}"
            )
            out.print(plain(f"{c.direction:<8}  {c.sentence()}: {verdict}"), soft_wrap=True)
            for found in c.incompatibilities:
                out.print(plain(f"  {found.text()}"), soft_wrap=True)
        for problem in report.changed_releases:
            out.print(plain(f"changed   {problem}"), soft_wrap=True)
    problems = []
    if report.incompatibilities:
        problems.append(f"{_count(report.incompatibilities, 'incompatibility')} ({mode})")
    if report.changed_releases:
        problems.append(f"{_count(len(report.changed_releases), 'released version')} changed")
    if problems:
        raise SchemaIncompatible(
            f"the event schemas are not compatible: {', '.join(problems)}"
        )
