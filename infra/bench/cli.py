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
from ledger.errors import LedgerError, UsageError

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
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Planning processes of the parallel replay and consume contenders "
            "(`--workers`; the others plan in the reader, `--workers 0`).",
        ),
    ] = 2,
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="Stream sizes, in events, at which a parallel replay into SQLite is also "
            "timed, for throughput and peak RSS as the stream grows (e.g. "
            "200000,1000000,5000000; empty: skip).",
        ),
    ] = "200000,1000000",
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
    PostgreSQL; `ledger consume` into SQLite and PostgreSQL (each with 0 and --workers
    planning processes); `ledger changefeed` publishing what that consume with workers
    decided (it keeps up when it is at least as fast); `ledger history` in-process
    (p50/p99) and as a process; peak RSS and throughput of a replay at two sizes; the
    SQLite store's bytes per event. Then, once, 1, 2 and 4 `ledger consume` members of one
    group into PostgreSQL, timed once all of them hold partitions. Prints tables of
    events/s and ratios.
    """
    members = MEMBERS
    sizes = _sizes(scale)
    if quick:
        users, repeat, quixstreams, sizes, members = 300, 1, False, [], QUICK_MEMBERS
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
                    if round_ == 0:
                        extra.update(_lookups(db, kind))
                with dbs.fresh(kind) as db:
                    name = f"ledger replay -> {kind}, {workers} workers"
                    add(name, suite.replay(db, archive, workers))
                with dbs.fresh(kind) as db:
                    run = suite.consume(db, info.bootstrap, topic, events)
                    add(f"ledger consume -> {kind}", run)
                with dbs.fresh(kind) as db:
                    run = suite.consume(db, info.bootstrap, topic, events, workers=workers)
                    add(f"ledger consume -> {kind}, {workers} workers", run)
                    # The decisions that consume recorded, published: the relay keeps up
                    # when it publishes them faster than they were made.
                    feed = (f"bench-changes-{kind}-{round_}", f"bench-current-{kind}-{round_}")
                    add(f"ledger changefeed <- {kind}", suite.relay(db, info.bootstrap, feed))
        if sizes:
            extra["scale"] = _scale(dbs, tmp, sizes, workers, add)
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


# Events per user of the generated stream (measured: 5.35 at 8,000 to 190,000 users).
EVENTS_PER_USER = 5.35


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--scale {text!r}: expected event counts, e.g. 200000,1000000") from None
    if any(n < 1000 for n in sizes):
        raise UsageError(f"--scale {text!r}: each size is at least 1000 events")
    return sizes


def scale_name(events: int, workers: int) -> str:
    return f"ledger replay -> sqlite, {workers} workers, {events:,} events"


def _scale(
    dbs: suite.Databases,
    tmp: Path,
    sizes: Sequence[int],
    workers: int,
    add: Callable[..., None],
) -> dict[str, Any]:
    """A parallel replay into SQLite of streams of each size, once each: throughput and
    peak RSS of the whole process tree as the stream grows, and the store's bytes/event."""
    rows: list[dict[str, Any]] = []
    for target in sizes:
        path = tmp / f"scale-{target}.avro"
        users = max(10, round(target / EVENTS_PER_USER))
        _log(f"generating {users:,} users (about {target:,} events) for the scale run")
        _sh(suite.LEDGER, "generate", "--users", str(users), "--seed", "9", "-o", str(path))
        events = sum(1 for _ in fastavro.reader(path.open("rb")))
        name = scale_name(target, workers)
        with dbs.fresh("sqlite") as db:
            run = suite.replay(db, path, workers)
            add(name, run, events)
            stored = suite.store_bytes_per_event(db, _applied(db))
        path.unlink()
        rows.append(
            {
                "contender": name,
                "events": events,
                "events_per_second": round(events / run.seconds, 1),
                "peak_rss_mb": round(run.peak_rss_mb or 0.0, 1),
                "store_bytes_per_event": round(stored, 1),
            }
        )
    first, last = rows[0], rows[-1]
    return {
        "workers": workers,
        "rows": rows,
        "throughput_last_vs_first": round(
            last["events_per_second"] / first["events_per_second"], 3
        ),
        "peak_rss_last_vs_first": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3)
        if first["peak_rss_mb"]
        else None,
    }


def _applied(db: str) -> int:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        if db.startswith("sqlite"):
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        applied = int(conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one())
    engine.dispose()
    return applied


def member_name(n: int) -> str:
    return f"ledger consume -> postgresql, {n} member{'s' if n > 1 else ''}"


MEMBER_NOTE = (
    "timed from when every member holds partitions to the last event committed: the group "
    "join and the rebalances while members join are excluded (join s; events applied "
    "meanwhile are not counted); each member plans its own batches (--workers 0): the "
    "members are the parallelism"
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


def _lookups(db: str, kind: str) -> dict[str, Any]:
    """Store footprint, and on SQLite history lookups, on a store one replay just built."""
    stored = suite.store_bytes_per_event(db, _applied(db))
    size = {f"store_bytes_per_event_{kind}": round(stored, 1)}
    if kind != "sqlite":
        return size
    p50, p99 = suite.history_latency(db)
    return {
        **size,
        "history_in_process_ms": {"p50": round(p50, 3), "p99": round(p99, 3)},
        "history_process_ms": round(suite.history_process(db), 1),
    }


def _ratio(measures: dict[str, suite.Measure], name: str, base: str) -> float | None:
    if name not in measures or base not in measures or not measures[base].rate:
        return None
    return round(measures[name].rate / measures[base].rate, 3)


# The targets of issue "Platform scale": (contender, baseline, at least this ratio). A
# contender named with ", N workers" is matched by its prefix (`_match`).
TARGETS = [
    ("ledger replay -> sqlite", "fastavro decode-only", 0.25),
    ("ledger replay -> postgresql", "fastavro decode-only", 0.25),
    ("ledger replay -> sqlite, * workers", "fastavro decode-only", 0.25),
    ("ledger replay -> postgresql, * workers", "fastavro decode-only", 0.25),
    ("ledger consume -> sqlite", "quixstreams per-user count", 0.5),
    ("ledger consume -> postgresql", "quixstreams per-user count", 0.5),
    ("ledger consume -> sqlite", "kafka-python consume+decode", 0.3),
    ("ledger consume -> postgresql", "kafka-python consume+decode", 0.3),
    ("ledger consume -> sqlite, * workers", "quixstreams per-user count", 0.5),
    ("ledger consume -> postgresql, * workers", "quixstreams per-user count", 0.5),
    ("ledger consume -> sqlite, * workers", "kafka-python consume+decode", 0.3),
    ("ledger consume -> postgresql, * workers", "kafka-python consume+decode", 0.3),
    # The changefeed's relay keeps up with the consumer whose decisions it publishes.
    ("ledger changefeed <- sqlite", "ledger consume -> sqlite, * workers", 1.0),
    ("ledger changefeed <- postgresql", "ledger consume -> postgresql, * workers", 1.0),
    # verify does the replay's fold without writing: at least as fast as the replay.
    ("ledger verify <- sqlite", "ledger replay -> sqlite", 1.0),
    ("ledger verify <- postgresql", "ledger replay -> postgresql", 1.0),
]
# Scalar targets: (report key, most, or None for at least `least`, least).
LIMITS = [
    ("store_bytes_per_event_sqlite", 250.0, None),
    ("store_bytes_per_event_postgresql", 300.0, None),
    ("history_process_ms", 150.0, None),
]


def _match(measures: dict[str, suite.Measure], pattern: str) -> str | None:
    if "*" not in pattern:
        return pattern if pattern in measures else None
    head, tail = pattern.split("*")
    return next(
        (n for n in measures if n.startswith(head) and n.endswith(tail) and "events" not in n),
        None,
    )


def _report(measures: dict[str, suite.Measure], extra: dict[str, Any]) -> dict[str, Any]:
    ratios = [
        {"contender": c, "baseline": b, "ratio": _ratio(measures, c, b), "target": t}
        for c, b, t in ((_match(measures, c), _match(measures, b), t) for c, b, t in TARGETS)
        if c is not None and b is not None
    ]
    scaling = extra.get("member_scaling")
    if scaling:
        one = measures.get(member_name(1))
        for row in scaling["rows"]:
            m = measures[row["contender"]]
            row["events_per_second"] = round(m.rate, 1)
            row["events_timed"] = statistics.median(m.counted)
            row["vs_1_member"] = round(m.rate / one.rate, 3) if one and one.rate else None
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
    for key, most, _ in LIMITS:
        if key in report:
            met = "yes" if report[key] <= most else "no"
            out.print(plain(f"{key.replace('_', ' ')}: {report[key]} (target ≤ {most}: {met})"))
    for key in ("history_in_process_ms", "seconds"):
        if key in report:
            out.print(plain(f"{key.replace('_', ' ')}: {report[key]}"))
    if "scale" in report:
        _print_scale(report["scale"])


def _print_scale(scale: dict[str, Any]) -> None:
    table = Table(
        title=f"replay into SQLite as the stream grows ({scale['workers']} workers, one run each)",
        title_justify="left",
    )
    for col in ("events", "events/s", "peak RSS MB, all processes", "store bytes/event"):
        table.add_column(col, justify="right")
    for row in scale["rows"]:
        table.add_row(f"{row['events']:,}", f"{row['events_per_second']:,.0f}",
                      f"{row['peak_rss_mb']:.0f}", f"{row['store_bytes_per_event']:.0f}")
    out.print(table)
    thr, rss = scale["throughput_last_vs_first"], scale["peak_rss_last_vs_first"]
    out.print(plain(
        f"scale: throughput at the largest size is {thr}x that at the smallest (target ≥ 0.8: "
        f"{'yes' if thr >= 0.8 else 'no'}); peak RSS {rss}x (target ≤ 1.1: "
        f"{'yes' if rss is not None and rss <= 1.1 else 'no'}); peak RSS under 300 MB at "
        f"every size: {'yes' if all(r['peak_rss_mb'] < 300 for r in scale['rows']) else 'no'}"
    ))


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
