"""`ledger bench` (and `make bench`): the ledger against its baselines, on the same data in
one run. A plugin of the `ledger` command line (entry point `bench` in pyproject.toml); it
lives in infra/ because it starts the local broker."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import fastavro
import sqlalchemy as sa
import typer
from rich.table import Table

from infra import launcher
from infra.bench import suite
from ledger.cli.common import emit_json, err, out, plain
from ledger.errors import LedgerError

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# Consumer-group sizes measured on PostgreSQL (at most the topic's 6 partitions), and how
# often: one repetition keeps the default run within its budget of ten minutes.
MEMBERS: tuple[int, ...] = (1, 2, 4)
QUICK_MEMBERS: tuple[int, ...] = (1, 2)
MEMBER_REPEAT = 1


def _log(message: str) -> None:
    err.print(plain(f"bench: {message}"))


def _pg_admin(url: str | None) -> str | None:
    url = url or os.environ.get("LEDGER_BENCH_POSTGRES") or DEFAULT_PG
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return url
    except Exception as exc:
        _log(f"PostgreSQL not reachable at {url} ({str(exc).splitlines()[0]}): skipped")
        return None


def _sh(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=suite.ledger_env())
    if done.returncode not in (0, 3):
        raise LedgerError(f"bench: {' '.join(cmd[1:3])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def bench(
    users: Annotated[
        int, typer.Option("--users", min=10, help="Users in the generated stream.")
    ] = 8_000,
    repeat: Annotated[
        int, typer.Option("--repeat", min=1, help="Runs of each contender; the median counts.")
    ] = 3,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="A smoke run: 300 users, one repetition, no quixstreams, no large size, "
            "groups of 1 and 2 members.",
        ),
    ] = False,
    quixstreams: Annotated[
        bool,
        typer.Option(
            "--quixstreams/--no-quixstreams",
            help="Measure the quixstreams app (installed into a venv of its own, once).",
        ),
    ] = True,
    large: Annotated[
        int,
        typer.Option(
            "--large",
            min=0,
            help="Also replay a stream this many times larger, for throughput and peak RSS at "
            "two sizes (0: skip).",
        ),
    ] = 5,
    postgres: Annotated[
        str | None,
        typer.Option(
            "--postgres",
            help="Admin URL of a PostgreSQL server where databases may be created "
            f"(default: $LEDGER_BENCH_POSTGRES, else {DEFAULT_PG}); skipped if unreachable.",
            show_default=False,
        ),
    ] = None,
    work: Annotated[
        Path,
        typer.Option("--work", help="Where data, the quixstreams venv and results stay."),
    ] = Path(".bench"),
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Write the results as JSON here too.", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Measure replay, consume and lookups against baselines on the same data, in one run.

    Generates the stream once (Avro archive and JSON Lines), publishes it to a 6-partition
    topic on a local broker, then runs, interleaved and --repeat times (the median counts):
    fastavro decode-only of the archive; raw kafka-python consume+decode; a quixstreams app
    keeping a per-user count in its state store; `ledger replay` into SQLite and
    PostgreSQL; `ledger consume` into SQLite and PostgreSQL; `ledger history` in-process
    (p50/p99) and as a process; peak RSS and throughput of a replay at two sizes; the
    SQLite store's bytes per event. Then, once, 1, 2 and 4 `ledger consume` members of one
    group into PostgreSQL, timed once all of them hold partitions. Prints tables of
    events/s and ratios.
    """
    members = MEMBERS
    if quick:
        users, repeat, quixstreams, large, members = 300, 1, False, 0, QUICK_MEMBERS
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pg = _pg_admin(postgres)
    kinds = ["sqlite"] + (["postgresql"] if pg else [])
    measures: dict[str, suite.Measure] = {}
    extra: dict[str, Any] = {"users": users, "repeat": repeat, "cpus": os.cpu_count()}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=work)))
        dbs = suite.Databases(tmp, pg)
        archive = tmp / "events.avro"
        _log(f"generating {users:,} users")
        _sh(suite.LEDGER, "generate", "--users", str(users), "--seed", "8", "-o", str(archive))
        events = sum(1 for _ in fastavro.reader(archive.open("rb")))
        extra["events"] = events
        info = stack.enter_context(launcher.running_broker(state_dir=tmp / "broker"))
        topic = "bench-events"
        _sh(suite.LEDGER, "topics", "create", "--bootstrap", info.bootstrap, "--topic", topic)
        _sh(suite.LEDGER, "publish", str(archive), "--bootstrap", info.bootstrap,
            "--topic", topic)
        quix_python = suite.quix_venv(work / "quix-venv", _log) if quixstreams else None

        def add(name: str, run: suite.Run, n: int = events, note: str = "") -> None:
            m = measures.setdefault(name, suite.Measure(name, n, note=note))
            m.runs.append(run.seconds)
            m.counted.append(n if run.events is None else run.events)
            if run.peak_rss_mb is not None:
                m.peak_rss_mb = max(m.peak_rss_mb or 0.0, run.peak_rss_mb)

        for round_ in range(repeat):
            _log(f"round {round_ + 1} of {repeat}")
            add("fastavro decode-only", suite.fastavro_decode(archive))
            add("kafka-python consume+decode", suite.kafka_raw(info.bootstrap, topic, events))
            if quix_python is not None:
                quix = suite.quix(quix_python, info.bootstrap, topic, events)
                add("quixstreams per-user count", quix)
            for kind in kinds:
                with dbs.fresh(kind) as db:
                    add(f"ledger replay -> {kind}", suite.replay(db, archive))
                    # The same store, re-derived and checked: verify's speed is measured
                    # against the replay that wrote it.
                    add(f"ledger verify <- {kind}", suite.verify(db))
                    if kind == "sqlite" and round_ == 0:
                        extra.update(_lookups(db))
                with dbs.fresh(kind) as db:
                    run = suite.consume(db, info.bootstrap, topic, events)
                    add(f"ledger consume -> {kind}", run)
        if large:
            big = tmp / "large.avro"
            _log(f"generating {users * large:,} users for the large size")
            _sh(suite.LEDGER, "generate", "--users", str(users * large), "--seed", "9",
                "-o", str(big))
            big_events = sum(1 for _ in fastavro.reader(big.open("rb")))
            with dbs.fresh("sqlite") as db:
                add(f"ledger replay -> sqlite, {large}x size", suite.replay(db, big), big_events)
        if pg:
            extra["member_scaling"] = _member_scaling(
                dbs, info.bootstrap, topic, events, members, add
            )
        else:
            _log("consumer-group members: skipped without PostgreSQL")
    extra["seconds"] = round(time.monotonic() - started, 1)
    report = _report(measures, extra)
    if output:
        output.write_text(json.dumps(report, indent=2))
    if as_json:
        emit_json(report)
    else:
        _print(report)


def member_name(n: int) -> str:
    return f"ledger consume -> postgresql, {n} member{'s' if n > 1 else ''}"


MEMBER_NOTE = (
    "timed from when every member holds partitions to the last event committed: the group "
    "join and the rebalances while members join are excluded (join s; events applied "
    "meanwhile are not counted)"
)


def _member_scaling(
    dbs: suite.Databases,
    bootstrap: str,
    topic: str,
    events: int,
    counts: Sequence[int],
    add: Callable[[str, suite.Run], None],
) -> dict[str, Any]:
    """Each group size MEMBER_REPEAT times, interleaved, on a fresh database each time. The
    rates go to the contenders; this is what the runs said besides."""
    runs: dict[int, list[suite.Run]] = {n: [] for n in counts}
    for _ in range(MEMBER_REPEAT):
        for n in counts:
            _log(f"a consumer group of {n} on PostgreSQL")
            with dbs.fresh("postgresql") as db:
                run = suite.consume(db, bootstrap, topic, events, members=n)
            add(member_name(n), run)
            runs[n].append(run)
    return {
        "repeat": MEMBER_REPEAT,
        "note": MEMBER_NOTE,
        "rows": [
            {
                "members": n,
                "contender": member_name(n),
                "join_seconds": round(statistics.median(r.join_seconds for r in rs), 3),
                "rebalances_while_timed": sum(r.rebalances for r in rs),
            }
            for n, rs in runs.items()
        ],
    }


def _lookups(db: str) -> dict[str, Any]:
    """Store footprint and history lookups, on a store one replay just built."""
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        applied = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
    engine.dispose()
    p50, p99 = suite.history_latency(db)
    return {
        "store_bytes_per_event_sqlite": round(suite.store_bytes_per_event(db, applied), 1),
        "history_in_process_ms": {"p50": round(p50, 3), "p99": round(p99, 3)},
        "history_process_ms": round(suite.history_process(db), 1),
    }


def _ratio(measures: dict[str, suite.Measure], name: str, base: str) -> float | None:
    if name not in measures or base not in measures or not measures[base].rate:
        return None
    return round(measures[name].rate / measures[base].rate, 3)


# The targets: (contender, baseline, at least this ratio).
TARGETS = [
    ("ledger replay -> sqlite", "fastavro decode-only", 0.25),
    ("ledger replay -> postgresql", "fastavro decode-only", 0.2),
    ("ledger consume -> sqlite", "quixstreams per-user count", 1.0),
    ("ledger consume -> postgresql", "quixstreams per-user count", 1.0),
    ("ledger consume -> sqlite", "kafka-python consume+decode", 0.5),
    ("ledger consume -> postgresql", "kafka-python consume+decode", 0.5),
    # Issue "Tamper-evident audit trail": verify does the replay's fold without writing.
    ("ledger verify <- sqlite", "ledger replay -> sqlite", 0.5),
    ("ledger verify <- postgresql", "ledger replay -> postgresql", 0.5),
]


def _report(measures: dict[str, suite.Measure], extra: dict[str, Any]) -> dict[str, Any]:
    ratios = [
        {"contender": c, "baseline": b, "ratio": _ratio(measures, c, b), "target": t}
        for c, b, t in TARGETS
        if c in measures and b in measures
    ]
    scaling = extra.get("member_scaling")
    if scaling:
        one = measures.get(member_name(1))
        for row in scaling["rows"]:
            m = measures[row["contender"]]
            row["events_per_second"] = round(m.rate, 1)
            row["events_timed"] = statistics.median(m.counted)
            row["vs_1_member"] = round(m.rate / one.rate, 3) if one and one.rate else None
    big = next((m for m in measures.values() if "x size" in m.contender), None)
    small = measures.get("ledger replay -> sqlite")
    if big and small and small.rate:
        extra["large_vs_small_throughput"] = round(big.rate / small.rate, 3)
    return {
        "contenders": [m.to_json() for m in measures.values()],
        "ratios": ratios,
        **extra,
    }


def _print(report: dict[str, Any]) -> None:
    table = Table(title=f"ledger bench: {report['events']:,} events, median of {report['repeat']}",
                  title_justify="left")
    for col in ("contender", "events/s", "seconds", "peak RSS MB"):
        table.add_column(col, justify="left" if col == "contender" else "right")
    scaling = report.get("member_scaling")
    in_scaling = {row["contender"] for row in scaling["rows"]} if scaling else set()
    for m in report["contenders"]:
        if m["contender"] in in_scaling:
            continue
        rss = f"{m['peak_rss_mb']:.0f}" if m["peak_rss_mb"] else "—"
        table.add_row(plain(m["contender"]), f"{m['events_per_second']:,.0f}",
                      f"{m['seconds']:.2f}", rss)
    out.print(table)
    ratios = Table(title="ratios against the baselines (target)", title_justify="left")
    for col in ("contender", "baseline", "ratio", "target", "met"):
        ratios.add_column(col)
    for r in report["ratios"]:
        met = r["ratio"] is not None and r["ratio"] >= r["target"]
        ratios.add_row(r["contender"], r["baseline"], str(r["ratio"]), f"≥ {r['target']}",
                       "yes" if met else "no")
    out.print(ratios)
    if scaling:
        _print_members(report, scaling)
    for key in ("store_bytes_per_event_sqlite", "history_in_process_ms", "history_process_ms",
                "large_vs_small_throughput", "seconds"):
        if key in report:
            out.print(plain(f"{key.replace('_', ' ')}: {report[key]}"))


def _print_members(report: dict[str, Any], scaling: dict[str, Any]) -> None:
    runs = "one run" if scaling["repeat"] == 1 else f"median of {scaling['repeat']}"
    table = Table(
        title=f"consumer-group members on PostgreSQL, one topic of 6 partitions, {runs}, "
        f"{report['cpus']} CPUs",
        title_justify="left",
    )
    for col in ("members", "events/s", "vs 1 member", "events timed", "seconds", "join s",
                "peak RSS MB, all"):
        table.add_column(col, justify="right")
    rows = {m["contender"]: m for m in report["contenders"]}
    for row in scaling["rows"]:
        m = rows[row["contender"]]
        rss = f"{m['peak_rss_mb']:.0f}" if m["peak_rss_mb"] else "—"
        ratio = "—" if row["vs_1_member"] is None else f"{row['vs_1_member']:.2f}x"
        table.add_row(str(row["members"]), f"{row['events_per_second']:,.0f}", ratio,
                      f"{row['events_timed']:,.0f}", f"{m['seconds']:.2f}",
                      f"{row['join_seconds']:.2f}", rss)
    out.print(table)
    fewer = (
        f" {runs.capitalize()} per group size, not the median of {report['repeat']}, to keep "
        "the suite within ten minutes."
        if scaling["repeat"] < report["repeat"]
        else ""
    )
    out.print(plain(f"members: {scaling['note']}.{fewer}"))
    rebalanced = [row["members"] for row in scaling["rows"] if row["rebalances_while_timed"]]
    if rebalanced:
        out.print(plain(f"members: the group rebalanced while timed at {rebalanced} members: "
                        "those rates include it."))
