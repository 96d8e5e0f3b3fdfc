"""How the consumer behaves while it cannot make progress (issue: failures handled by
spinning): against the real broker and PostgreSQL, a store that can be read but not
written makes every batch fail. The consumer must back off (growing, logged as "retrying
in"), use little CPU while it waits, say so on /healthz and `ledger_consumer_up`, and
apply everything once the store takes writes again."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from ledger.sinks.dead_letter_topic import DLQ_ENVELOPE
from tests.factories import avro, signup
from tests.helpers.kafka import publish, stamped_stream, start_consumer, stop, wait_for
from tests.integration.test_kafka_faults import dlq_records
from tests.support import Cli

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

_METRICS_AT = re.compile(r"metrics on (http://\S+)/metrics")


def _health(base: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _up(base: str) -> str:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return next(x for x in text.splitlines() if x.startswith("ledger_consumer_up "))


def _tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _read_only(pg_admin: sa.Engine, url: str, on: bool) -> None:
    name = sa.engine.make_url(url).database
    with pg_admin.connect() as conn:
        conn.execute(
            sa.text(
                f'ALTER DATABASE "{name}" SET default_transaction_read_only = '
                f"{'on' if on else 'off'}"
            )
        )
        # Sessions already open keep the old default: end them, the consumer reconnects.
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": name},
        )


@pytest.mark.postgres
def test_a_store_that_refuses_writes_is_retried_with_backoff_not_spun(
    kafka_broker, kafka_topic: str, pg_url: str, pg_admin: sa.Engine, tmp_path: Path
) -> None:
    path = tmp_path / "stream.jsonl"
    total = stamped_stream(path, users=60, seed=41)
    Cli(pg_url).run("db", "upgrade")
    assert publish(Cli(pg_url), kafka_broker.bootstrap, kafka_topic, path) == total
    _read_only(pg_admin, pg_url, True)
    log = tmp_path / "consumer.log"
    proc = start_consumer(
        kafka_broker.bootstrap,
        kafka_topic,
        pg_url,
        log,
        group="g-ro",
        batch=50,
        extra=("--metrics-port", "0"),
    )
    try:
        deadline = time.monotonic() + 60
        while "retrying in" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        base = _METRICS_AT.search(log.read_text())
        assert base is not None
        tree = psutil.Process(proc.pid)
        cpu, started = _tree_cpu(tree), time.monotonic()
        time.sleep(8)
        share = (_tree_cpu(tree) - cpu) / (time.monotonic() - started)
        # Spinning took a whole core (39.8 s of CPU in 40 s); waiting takes a few percent.
        assert share < 0.25, f"{share:.0%} of a core while every batch fails"
        text = log.read_text()
        failures = text.count("batch failed")
        assert 1 <= failures <= 6, f"{failures} failed batches in about 10 s"
        waits = [float(w) for w in re.findall(r"retrying in ([\d.]+) s", text)]
        assert waits == sorted(waits) and waits[-1] > waits[0]  # it backs off
        status, body = _health(base.group(1))
        assert status == 503 and "failing" in body
        assert _up(base.group(1)) == "ledger_consumer_up 0.0"
        _read_only(pg_admin, pg_url, False)
        wait_for(pg_url, kafka_topic, total, timeout=90)
        deadline = time.monotonic() + 10
        while _health(base.group(1))[0] != 200:
            assert time.monotonic() < deadline, "healthy again once batches commit"
            time.sleep(0.2)
        assert _up(base.group(1)) == "ledger_consumer_up 1.0"
    finally:
        stop(proc, log)


def test_a_record_too_large_to_fetch_is_dead_lettered_by_position_and_its_partition_moves_on(
    kafka_broker,
    kafka_topic: str,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record batch over the largest response the reader accepts can be fetched at no
    fetch size. Before, `consume` applied neither of its neighbours, for ever, and said it
    was healthy; `replay --from-kafka` ended with "no high watermark". (The limit is lowered
    to 2 MiB here, so that a 3 MiB record shows what a 100 MB one does at the default.)"""
    monkeypatch.setenv("LEDGER_KAFKA_FRAME_MB", "2")
    producer = KafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap, acks="all", max_request_size=8 << 20
    )
    # The local broker answers a fetch with the batches after the first one too, so a
    # record just before the large one would be unreadable as well: the large one comes
    # first in its partition, a neighbour before it lives in another partition.
    producer.send(kafka_topic, partition=1, key=b"u-1", value=avro(signup(1, "u-1"))).get(30)
    huge = producer.send(
        kafka_topic, partition=0, key=b"u-9", value=b"\xc3\x01" + b"z" * (3 << 20)
    )
    at = huge.get(30).offset
    producer.send(kafka_topic, partition=0, key=b"u-2", value=avro(signup(2, "u-2"))).get(30)
    producer.close()
    log = tmp_path / "consumer.log"
    proc = start_consumer(kafka_broker.bootstrap, kafka_topic, sqlite_url, log, group="g-huge")
    try:
        wait_for(sqlite_url, kafka_topic, at + 3, timeout=90)
    finally:
        stop(proc, log)
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        dead = conn.execute(
            sa.text("SELECT position, reason, raw, raw_size FROM dead_letters")
        ).all()
        applied = (
            conn.execute(sa.text("SELECT user_id FROM events ORDER BY user_id")).scalars().all()
        )
    engine.dispose()
    assert applied == ["u-1", "u-2"]
    ((position, reason, raw, raw_size),) = dead
    assert position == f"{kafka_topic}[0]@{at}"
    assert f"the record at offset {at} cannot be fetched" in reason
    assert bytes(raw) == b"" and raw_size > 3 << 20
    assert "cannot be fetched" in log.read_text()
    (record,) = dlq_records(kafka_broker.bootstrap, kafka_topic, 1)
    assert dict(record.headers)[DLQ_ENVELOPE] == b"1"
    envelope = json.loads(record.value)
    assert (envelope["partition"], envelope["offset"]) == (0, at)
    assert envelope["sha256"] is None and envelope["size"] == raw_size
    # The topic replay gets past it the same way, in seconds.
    other = f"sqlite:///{tmp_path / 'replayed.db'}"
    started = time.monotonic()
    summary = Cli(other).json(
        "replay",
        "--from-kafka",
        "--bootstrap",
        kafka_broker.bootstrap,
        "--topic",
        kafka_topic,
        "--from-beginning",
        expect=3,
    )
    assert time.monotonic() - started < 30
    assert (summary["applied"], summary["dead_lettered"]) == (2, 1)
