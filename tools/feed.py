"""Reading the changefeed's topics back, and what a store says they must hold: shared by
the tests and `make faults`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition

from ledger.codecs.changefeed import decode_decision
from ledger.config import settings_from_env
from ledger.domain.audit.stable_ids import decision_id
from ledger.store.rows import instant


@dataclass
class Feed:
    """A changefeed topic read from its beginning to its end."""

    # In partition order, as delivered, with duplicates; None: a tombstone (value None),
    # which a compacted topic's reader takes as "forget this key".
    records: list[dict[str, Any] | None]
    keys: list[bytes]

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """The records that are not tombstones."""
        return [r for r in self.records if r is not None]

    @property
    def tombstones(self) -> list[bytes]:
        """The keys of the tombstones, in order."""
        return [k for k, r in zip(self.keys, self.records, strict=True) if r is None]

    @property
    def deduped(self) -> dict[str, dict[str, Any]]:
        """decision_id -> its record with the highest seq (the documented dedupe)."""
        kept: dict[str, dict[str, Any]] = {}
        for r in self.decisions:
            if r["decision_id"] not in kept or kept[r["decision_id"]]["seq"] < r["seq"]:
                kept[r["decision_id"]] = r
        return kept

    @property
    def duplicates(self) -> int:
        return len(self.decisions) - len(self.deduped)

    def table(self) -> dict[str, dict[str, Any]]:
        """user -> the last record of their key, as a compacted topic's reader keeps it: a
        tombstone drops the key."""
        last: dict[str, dict[str, Any]] = {}
        for key, record in zip(self.keys, self.records, strict=True):
            if record is None:
                last.pop(key.decode(), None)
            else:
                last[key.decode()] = record
        return last


def read_feed(bootstrap: str, topic: str, timeout_s: float = 30.0) -> Feed:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
        **settings_from_env().kafka.client,
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records: list[dict[str, Any] | None] = []
        keys: list[bytes] = []
        for tp in parts:  # partition by partition: a key's records in their order
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            while consumer.position(tp) < ends[tp]:
                for message in consumer.poll(timeout_ms=1000, max_records=5000).get(tp, []):
                    value = message.value
                    records.append(None if value is None else decode_decision(value))
                    keys.append(message.key)
        return Feed(records, keys)
    finally:
        consumer.close()


def stored_decisions(url: str) -> set[str]:
    """The decision id of every history row the store holds."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT user_id, valid_from, recorded_at FROM assignment_history"
            ).all()
    finally:
        engine.dispose()
    return {decision_id(u, instant(vf), instant(rec)) for u, vf, rec in rows}


def stored_assignments(url: str) -> dict[str, str]:
    """user -> current assignment, as `ledger current` answers it."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT user_id, assignment FROM users WHERE assignment IS NOT NULL"
            ).all()
    finally:
        engine.dispose()
    return dict(rows)
