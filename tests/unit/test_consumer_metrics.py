"""The consumer's metrics in process: dead-letter reasons fall into a few stable classes,
the lag series follow the assigned partitions, and liveness follows the start. The metrics
of a running consumer against the broker are in tests/integration/test_consumer_metrics.py."""

from __future__ import annotations

from prometheus_client import generate_latest


def test_reason_classes_are_few_and_stable() -> None:
    from consumers.metrics import ProjectorMetrics, reason_class

    assert reason_class("line is 2,000,000 bytes, over the limit of 1,048,576 bytes") == "too_large"
    assert reason_class("not valid JSON: Expecting value at column 1") == "undecodable"
    assert reason_class("not Avro single-object encoded (missing C3 01 header)") == "undecodable"
    assert reason_class("unknown terms version 'tos-2099' (known: …)") == "unknown_terms_version"
    assert reason_class("event_id x is already recorded for another user") == "event_id_conflict"
    assert reason_class("the database refused it: value too long") == "database_refused"
    assert reason_class("field 'phone' must be a string, got int") == "invalid_event"
    metrics = ProjectorMetrics()
    metrics.lag_by_partition({0: 3, 1: 0})
    metrics.lag_by_partition({1: 2})  # partition 0 revoked: its series goes
    text = generate_latest(metrics.registry).decode()
    assert 'ledger_consumer_lag_records{partition="1"} 2.0' in text
    assert 'partition="0"' not in text
    assert not metrics.alive()  # not started
    metrics.started()
    assert metrics.alive()


def test_failing_batches_make_the_consumer_unhealthy_until_one_commits() -> None:
    """Before, the consumer reported up 1 and /healthz ok while every batch failed (the
    loop kept going round): progress, not the loop, decides."""
    from consumers.metrics import ProjectorMetrics
    from ledger.app.ingest.plan import BatchResult
    from ledger.errors import StoreUnavailable

    def up() -> str:
        text = generate_latest(metrics.registry).decode()
        return next(line for line in text.splitlines() if line.startswith("ledger_consumer_up "))

    metrics = ProjectorMetrics()
    metrics.started()
    assert metrics.status() == "ok" and up() == "ledger_consumer_up 1.0"
    metrics.batch_failed(StoreUnavailable("database or disk is full"))
    metrics.heartbeat()  # the loop still goes round
    assert metrics.status() == "failing" and not metrics.alive()
    assert up() == "ledger_consumer_up 0.0"
    metrics.positions_unreadable()
    assert metrics.status() == "failing"
    metrics.batch_applied(BatchResult(applied=1), 0.01, None)
    assert metrics.status() == "ok" and up() == "ledger_consumer_up 1.0"
    metrics.stopped()
    assert metrics.status() == "stalled" and up() == "ledger_consumer_up 0.0"
