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
