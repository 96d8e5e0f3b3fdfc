"""The contenders of `ledger bench`, measured on the same data in the same run.

Every throughput is events per second over the same generated stream; every ratio divides
a ledger figure by a baseline measured in this run: fastavro decode-only of the archive
for replays, and for consumers raw kafka-python consume+decode and a quixstreams app
keeping a per-user count in its state store, on the same 6-partition topic. A consumer
group of several `ledger consume` members is compared with a group of one.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import fastavro
import psutil
import sqlalchemy as sa

LEDGER = str(Path(sys.executable).with_name("ledger"))
QUIX_APP = Path(__file__).with_name("quix_app.py")
QUIX_REQUIREMENT = "quixstreams>=3,<4"


class BenchError(RuntimeError):
    """A contender could not run (its message says which and why)."""


@dataclass
class Measure:
    contender: str
    events: int
    runs: list[float] = field(default_factory=list)  # seconds per repetition
    # Events each repetition timed: `events`, unless some were applied before its clock
    # started (consumer-group members that were still joining).
    counted: list[int] = field(default_factory=list)
    peak_rss_mb: float | None = None
    note: str = ""

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def rate(self) -> float:
        # The median of per-run rates: runs may have timed different numbers of events.
        rates = [c / s for c, s in zip(self.counted, self.runs, strict=True) if s > 0]
        return statistics.median(rates) if rates else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(seconds=round(self.seconds, 4), events_per_second=round(self.rate, 1))
        return data


@dataclass
class Run:
    """What a contender returns: seconds it took and, for a process, its peak RSS."""

    seconds: float
    peak_rss_mb: float | None = None
    stdout: str = ""
    stderr: str = ""
    events: int | None = None  # events timed, when not the whole stream
    # Consumer groups: seconds from the first partition assignment until every member held
    # partitions (not timed), and rebalances that happened while timed (none, normally).
    join_seconds: float = 0.0
    rebalances: int = 0


def run_process(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> Run:
    """Run `cmd`, sampling its resident memory (children included) every 20 ms."""
    started = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                rss = proc.memory_info().rss + sum(
                    c.memory_info().rss for c in proc.children(recursive=True)
                )
                peak = max(peak, rss)
            except psutil.Error:
                pass
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 3):
        raise BenchError(f"{Path(cmd[0]).name} {cmd[1]} failed: {err.decode()[-1500:]}")
    return Run(seconds, peak / 1e6, out.decode(), err.decode())


# --- baselines ----------------------------------------------------------------------------


def fastavro_decode(archive: Path) -> Run:
    started = time.perf_counter()
    with archive.open("rb") as fo:
        for _ in fastavro.reader(fo):
            pass
    return Run(time.perf_counter() - started)


def kafka_raw(bootstrap: str, topic: str, expected: int) -> Run:
    """kafka-python consume + fastavro decode of every message, first to last message."""
    import io

    from kafka import KafkaConsumer, TopicPartition

    from ledger.codecs.avro import AvroCodec

    schema = AvroCodec().schema
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        seen = 0
        first = 0.0
        deadline = time.monotonic() + 300
        while seen < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"kafka-python read {seen} of {expected} messages")
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                if not seen:
                    first = time.perf_counter()
                for r in records:
                    fastavro.schemaless_reader(io.BytesIO(r.value[10:]), schema, schema)
                seen += len(records)
        return Run(time.perf_counter() - first)
    finally:
        consumer.close()


def quix_venv(root: Path, log: Callable[[str], None]) -> Path:
    """A virtual environment of its own for quixstreams, made once and kept in `root`."""
    python = root / "bin" / "python"
    stamp = root / ".installed"
    if stamp.exists():
        return python
    log(f"installing {QUIX_REQUIREMENT} into {root} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         QUIX_REQUIREMENT],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"cannot install {QUIX_REQUIREMENT}: {done.stderr[-800:]}")
    stamp.touch()
    return python


def quix(python: Path, bootstrap: str, topic: str, expected: int) -> Run:
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    run = run_process([str(python), str(QUIX_APP), bootstrap, topic, group, str(expected)])
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if result["messages"] < expected:
        raise BenchError(f"quixstreams saw {result['messages']} of {expected} messages")
    return Run(result["seconds"], run.peak_rss_mb)


# --- the ledger ---------------------------------------------------------------------------


class Databases:
    """A fresh store per run: a SQLite file, or a PostgreSQL database dropped afterwards."""

    def __init__(self, work: Path, pg_admin: str | None) -> None:
        self.work = work
        self.pg_admin = pg_admin

    @contextmanager
    def fresh(self, kind: str) -> Iterator[str]:
        if kind == "sqlite":
            path = self.work / f"bench-{uuid.uuid4().hex[:8]}.db"
            try:
                yield f"sqlite:///{path}"
            finally:
                for extra in ("", "-wal", "-shm"):
                    Path(f"{path}{extra}").unlink(missing_ok=True)
            return
        assert self.pg_admin is not None
        admin = sa.create_engine(self.pg_admin, isolation_level="AUTOCOMMIT")
        name = f"ledger_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.engine.make_url(self.pg_admin).set(database=name).render_as_string(False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def ledger_env() -> dict[str, str]:
    # A fixed key: the dev key would make every command warn, and consume refuse.
    return {**os.environ, "LEDGER_PHONE_KEY": os.environ.get("LEDGER_PHONE_KEY", "bench-key")}


def replay(db: str, archive: Path, workers: int = 0) -> Run:
    """The replay's own time (from its summary): the interpreter's start and the schema's
    creation are not replaying. `workers` planning processes (`--workers`), whatever the
    archive's size; the peak RSS is the whole process tree's."""
    env = {**ledger_env(), "LEDGER_PARALLEL_MIN_MB": "0"}
    cmd = [LEDGER, "replay", str(archive), "--db", db, "--json", "--workers", str(workers)]
    run = run_process(cmd, env=env)
    return Run(float(json.loads(run.stdout)["seconds"]), run.peak_rss_mb)


def verify(db: str) -> Run:
    """`ledger verify` of a store (its own time, from its report); it must find nothing."""
    run = run_process([LEDGER, "verify", "--db", db, "--json"], env=ledger_env())
    return Run(float(json.loads(run.stdout)["seconds"]), run.peak_rss_mb)


def relay(db: str, bootstrap: str, topics: tuple[str, str]) -> Run:
    """`ledger changefeed --until-caught-up` over the decisions a consume recorded, to
    fresh topics: its own time, from its last log line (the process's start-up and topic
    creation are not timed, as a consumer's join is not). `Run.stdout` is that line."""
    cmd = [LEDGER, "changefeed", "--bootstrap", bootstrap, "--db", db, "--topic", topics[0],
           "--current-topic", topics[1], "--until-caught-up", "--log-format", "json"]
    run = run_process(cmd, env=ledger_env())
    last = json.loads(run.stderr.strip().splitlines()[-1])
    if not last.get("published"):
        raise BenchError(f"the relay published nothing: {last}")
    return Run(float(last["seconds"]), run.peak_rss_mb, json.dumps(last))


def consumed(db: str, topic: str) -> int:
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT COALESCE(SUM(next_offset), 0) FROM source_positions "
                            "WHERE source = :s"),
                    {"s": f"kafka:{topic}"},
                ).scalar_one()
            )
    except sa.exc.DBAPIError:
        return 0
    finally:
        engine.dispose()


class _Group:
    """Which partitions each member of a consumer group holds, from the `partitions
    assigned` and `partitions revoked` lines the members log, and when all of them first
    held some at once: the moment the group is complete and consuming at full strength."""

    def __init__(self, members: int) -> None:
        self.held: list[set[int]] = [set() for _ in range(members)]
        self.tails: list[deque[bytes]] = [deque(maxlen=20) for _ in range(members)]
        self.first_assigned: float | None = None
        self.settled: float | None = None
        self.revoked: list[float] = []
        self.lock = threading.Lock()

    def watch(self, member: int, stream: IO[bytes]) -> None:
        for line in stream:
            now = time.perf_counter()
            self.tails[member].append(line)
            found = re.search(rb"partitions (assigned|revoked): (.*)", line)
            if not found:
                continue
            parts = {int(p) for p in re.findall(rb"\[(\d+)\]", found[2])}
            with self.lock:
                if found[1] == b"revoked":
                    self.held[member] -= parts
                    self.revoked.append(now)
                    continue
                # An assignment is the member's whole share, not an addition to it.
                self.held[member] = parts
                if self.first_assigned is None:
                    self.first_assigned = now
                # Disjoint shares: members' lines arrive on separate pipes, so one may still
                # show a share another has already been given in the next generation.
                shares = [len(h) for h in self.held]
                if self.settled is None and all(shares) and sum(shares) == len(
                    set().union(*self.held)
                ):
                    self.settled = now

    def log_tail(self) -> str:
        return "".join(
            f"[member {i}] {line.decode(errors='replace')}"
            for i, tail in enumerate(self.tails)
            for line in tail
        )


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def consume(
    db: str, bootstrap: str, topic: str, expected: int, members: int = 1, workers: int = 0
) -> Run:
    """`ledger consume` from the first stored position to the last message: `members`
    processes of one new consumer group, started together on a store already migrated
    (one migrating while the others wait for its lock would stagger their joins).

    Timed from the moment every member holds partitions to the last record committed: the
    group join and any rebalance while members join are not consuming and are not timed;
    events applied by the members that got partitions first are not counted (`Run.events`),
    and that time is `Run.join_seconds`. For one member the clock starts at its partition
    assignment, so the first fetch and batch are in, as they are for the baselines.
    Members beyond the topic's partition count would never all hold one: keep to ≤ it.
    `workers`: each member's planning processes (`consume --workers`); the peak RSS is the
    whole group's, workers included."""
    env = ledger_env()
    subprocess.run([LEDGER, "db", "upgrade", "--db", db], check=True, capture_output=True, env=env)
    cmd = [LEDGER, "consume", "--bootstrap", bootstrap, "--topic", topic, "--db", db,
           "--group", f"bench-{uuid.uuid4().hex[:8]}", "--session-timeout-ms", "6000",
           "--log-every", "60", "--workers", str(workers)]
    procs = [
        psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        for _ in range(members)
    ]
    group = _Group(members)
    for i, proc in enumerate(procs):
        assert proc.stderr is not None
        threading.Thread(target=group.watch, args=(i, proc.stderr), daemon=True).start()
    peak = 0
    started: float | None = None
    before = 0
    deadline = time.monotonic() + 1800
    try:
        while True:
            # The settling first: the count taken after it is then no older than it.
            settled = group.settled
            done = consumed(db, topic)
            if settled is not None and started is None:
                started, before = settled, done
            if done >= expected:
                break
            if any(proc.poll() is not None for proc in procs):
                raise BenchError(f"ledger consume exited:\n{group.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"ledger consume took {done} of {expected} messages")
            with suppress(psutil.Error):
                # What the host needs for the whole group, sampled at one moment.
                peak = max(peak, sum(_tree_rss(proc) for proc in procs))
            time.sleep(0.02)
        last = time.perf_counter()
    finally:
        for proc in procs:
            with suppress(psutil.NoSuchProcess):
                proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    if started is None or group.first_assigned is None:
        raise BenchError(
            f"the {members} ledger consume member(s) never all held partitions before the "
            f"topic was consumed (they did not join together):\n{group.log_tail()}"
        )
    if before >= expected:
        raise BenchError(f"the first of {members} members consumed the whole topic before "
                         "the last one joined: nothing left to time at full strength")
    return Run(
        last - started,
        peak / 1e6,
        events=expected - before,
        join_seconds=started - group.first_assigned,
        rebalances=sum(1 for t in group.revoked if started < t < last),
    )


def history_latency(db: str, samples: int = 300) -> tuple[float, float]:
    """p50 and p99 of one `history` lookup in-process, in milliseconds."""
    from ledger.queries.history import history
    from ledger.store.database import open_engine

    engine = open_engine(db)
    with engine.connect() as conn:
        users = list(conn.execute(sa.text("SELECT user_id FROM users")).scalars())
    rng = random.Random(1)
    times = []
    for user in rng.sample(users, min(samples, len(users))):
        started = time.perf_counter()
        history(engine, user)
        times.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]


def history_process(db: str, runs: int = 7) -> float:
    """Median wall time of `ledger history USER --json` as a process, in milliseconds."""
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        user = conn.execute(sa.text("SELECT user_id FROM users LIMIT 1")).scalar_one()
    engine.dispose()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [LEDGER, "history", user, "--json", "--db", db],
            check=True,
            capture_output=True,
            env=ledger_env(),
        )
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def store_bytes_per_event(db: str, events: int) -> float:
    """The store's size over its events: the SQLite file (and its WAL), or on PostgreSQL
    every ledger table with its indexes and TOAST (`pg_total_relation_size`)."""
    if not db.startswith("sqlite"):
        engine = sa.create_engine(db)
        try:
            with engine.connect() as conn:
                size = conn.execute(
                    sa.text(
                        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relkind = 'r' AND n.nspname = current_schema()"
                    )
                ).scalar_one()
        finally:
            engine.dispose()
        return int(size) / events if events else 0.0
    path = Path(sa.engine.make_url(db).database or "")
    size = sum(
        Path(f"{path}{extra}").stat().st_size
        for extra in ("", "-wal")
        if Path(f"{path}{extra}").exists()
    )
    return size / events if events else 0.0
