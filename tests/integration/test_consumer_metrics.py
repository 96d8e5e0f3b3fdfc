"""`ledger consume --metrics-port`: a consumer run against the real broker exposes its
Prometheus counters, and their values equal the summary the service logs when it stops."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from ledger.codecs.avro import AvroCodec
from ledger.generate import generate_events
from tests.helpers.kafka import _SPAWNED, GROUP_FLAGS, LEDGER, stop, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

_METRICS_AT = re.compile(r"metrics on (http://\S+)/metrics")
_SUMMARY = re.compile(
    r"applied (\d+) events \([^)]*\), (\d+) duplicates, (\d+) dead letters, (\d+) suppressed; "
    r"lag by partition (\{[^}]*\})"
)


def _scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def test_consumer_metrics_equal_the_run_summary(
    kafka_broker, kafka_topic: str, tmp_path: Path, sqlite_url: str
) -> None:
    codec = AvroCodec()
    good = list(generate_events(40, seed=5))
    poison = [b"definitely not avro", codec.encode(good[0])[:-4]]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    for event in good:
        producer.send(kafka_topic, key=event.user_id.encode(), value=codec.encode(event))
    for event in good[:5]:  # delivered twice: duplicates
        producer.send(kafka_topic, key=event.user_id.encode(), value=codec.encode(event))
    for raw in poison:
        producer.send(kafka_topic, key=b"u-poison", value=raw)
    producer.flush()
    producer.close()
    total = len(good) + 5 + len(poison)

    log = tmp_path / "consumer.log"
    cmd = [
        LEDGER, "consume", "--bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic,
        "--group", "g-metrics", "--db", sqlite_url, "--batch-size", "20",
        "--metrics-port", "0", *GROUP_FLAGS,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    _SPAWNED.append(proc)
    try:
        deadline = time.monotonic() + 30
        while not (found := _METRICS_AT.search(log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        base = found.group(1)
        assert base.startswith("http://127.0.0.1:")
        wait_for(sqlite_url, kafka_topic, total)
        with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
            assert response.status == 200
        # The batch that reached the total has committed; its counters follow it at once.
        deadline = time.monotonic() + 10
        while True:
            scraped = _scrape(base + "/metrics")
            seen = sum(scraped["ledger_events_applied_total"].values())
            seen += sum(scraped["ledger_duplicate_events_total"].values())
            seen += sum(scraped["ledger_dead_letters_total"].values())
            if seen >= total or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        stop(proc, log)

    applied, duplicates, dead, suppressed, lag = _SUMMARY.findall(log.read_text())[-1]
    assert scraped["ledger_suppressed_events_total"][()] == int(suppressed) == 0
    assert (
        scraped["ledger_events_applied_total"][()]
        == int(applied)
        == len({e.event_id for e in good})
    )
    # The generator sends a few duplicates of its own, and five more were sent above.
    expected_duplicates = len(good) + 5 - len({e.event_id for e in good})
    assert scraped["ledger_duplicate_events_total"][()] == int(duplicates) == expected_duplicates
    by_class = {dict(k)["reason_class"]: v for k, v in scraped["ledger_dead_letters_total"].items()}
    assert sum(by_class.values()) == int(dead) == len(poison)
    assert by_class["undecodable"] == len(poison)
    batches = scraped["ledger_batches_total"][()]
    assert batches >= 1
    assert scraped["ledger_batch_apply_seconds_count"][()] == batches
    assert scraped["ledger_batch_apply_seconds_sum"][()] > 0
    assert scraped["ledger_database_retries_total"][()] == 0
    assert scraped["ledger_consumer_up"][()] == 1
    # Lag per assigned partition: all caught up, as the summary says.
    lags = {dict(k)["partition"]: v for k, v in scraped["ledger_consumer_lag_records"].items()}
    assert lags and set(lags.values()) == {0}
    assert lag == "{" + ", ".join(f"{p}: 0" for p in sorted(map(int, lags))) + "}"
    # Record time comes from the Kafka timestamps: the newest one produced above.
    newest = scraped["ledger_last_applied_record_timestamp_seconds"][()]
    assert time.time() - 300 < newest <= time.time()
