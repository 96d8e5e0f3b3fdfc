"""The changefeed's relay (docs/changefeed.md): publishes the decision outbox to Kafka in
seq order, each decision to `rulebook-changes` and each open-ended one (a user's current
assignment) to the compacted `rulebook-current`, both keyed by user id.

Delivery is at least once, and at most the unacknowledged tail twice: the relay stores its
position in the ledger's database only after the broker acknowledged every record of a
round (acks=all, idempotent producer), so a relay killed between the two sends that round
again when it restarts. Consumers deduplicate by `decision_id`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer
from sqlalchemy import Engine, select, update

from ledger.codecs.changefeed import encode_decision
from ledger.queries.changes import Change, backlog, page
from ledger.store.errors import translated_errors
from ledger.store.readonly import EngineReader
from ledger.store.schema import changefeed_positions

log = logging.getLogger("ledger.changefeed")

# Seconds between rounds when nothing waits, and the backoff after a failed round.
IDLE_S = 0.2
BACKOFF_S = (0.5, 30.0)
# Seconds a round waits for the broker's acknowledgements before it counts as failed.
ACK_TIMEOUT_S = 60.0


class ChangefeedRelay:
    """One relay for one pair of topics; its position is stored under the changes topic's
    name, so relays to other topics (a second cluster) keep positions of their own."""

    def __init__(
        self,
        engine: Engine,
        producer: KafkaProducer,
        *,
        topic: str,
        current_topic: str,
        metrics: Any = None,
        page_size: int = 2000,
    ) -> None:
        self.engine = engine
        self.reader = EngineReader(engine)
        self.producer = producer
        self.topic = topic
        self.current_topic = current_topic
        self.metrics = metrics
        self.page_size = page_size
        self.position: int | None = None  # read from the store on the first round
        self.published = 0
        self.current_published = 0
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None  # when it runs beside a service

    # -- position ------------------------------------------------------------------------
    def stored_position(self) -> int:
        q = select(changefeed_positions.c.seq).where(
            changefeed_positions.c.target == self.topic
        )
        with translated_errors(), self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def _store_position(self, seq: int) -> None:
        now = datetime.now(UTC)
        cp = changefeed_positions.c
        with translated_errors(), self.engine.begin() as conn:
            moved = conn.execute(
                update(changefeed_positions)
                .where(cp.target == self.topic)
                .values(seq=seq, updated_at=now)
            ).rowcount
            if not moved:
                conn.execute(
                    changefeed_positions.insert().values(
                        target=self.topic, seq=seq, updated_at=now
                    )
                )

    # -- rounds --------------------------------------------------------------------------
    def step(self) -> int:
        """Publish the next page of decisions and store the position reached: the number of
        decisions published (0: none waited)."""
        if self.position is None:
            self.position = self.stored_position()
        with translated_errors(reading=True):
            changes = page(
                self.reader, after=self.position, limit=self.page_size, announced_only=True
            )
        if not changes:
            self._report_backlog()
            return 0
        current = self._send(changes)
        last = changes[-1].seq
        self._store_position(last)
        self.position = last
        self.published += len(changes)
        self.current_published += current
        if self.metrics is not None:
            self.metrics.round_done(
                {self.topic: len(changes), self.current_topic: current}, last
            )
        return len(changes)

    def _send(self, changes: list[Change]) -> int:
        futures = []
        current = 0
        for change in changes:
            key = change.user_id.encode()
            value = encode_decision(change.record())
            futures.append(self.producer.send(self.topic, key=key, value=value))
            if change.current:
                futures.append(self.producer.send(self.current_topic, key=key, value=value))
                current += 1
            elif change.erased:
                # A tombstone: compaction removes the user's row from the table view,
                # and with it the last decision naming them (docs/changefeed.md).
                futures.append(self.producer.send(self.current_topic, key=key, value=None))
                current += 1
        self.producer.flush(timeout=ACK_TIMEOUT_S)
        for future in futures:
            future.get(timeout=ACK_TIMEOUT_S)  # raises the broker's refusal, if any
        return current

    def _report_backlog(self) -> None:
        if self.metrics is None or self.position is None:
            return
        with translated_errors(reading=True):
            waiting = backlog(self.reader, self.position)
        self.metrics.waiting(waiting.records, waiting.oldest_recorded_at)

    def drain(self) -> int:
        """Publish everything recorded so far; the number published."""
        total = 0
        while n := self.step():
            total += n
        return total

    # -- the loop ------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop, let the round in progress finish (its position stored), and close the
        producer: what a stopping service does with a relay running beside it."""
        self.stop()
        if self.thread is not None:
            self.thread.join(timeout=ACK_TIMEOUT_S + 5)
        self.producer.close(timeout=10)

    def run(self, *, until_caught_up: bool = False) -> int:
        """Relay until `stop()` (or, `until_caught_up`, until nothing waits); a failed round
        (broker or database) is logged and retried from the stored position after a
        growing wait. Returns the number of decisions published."""
        if self.metrics is not None:
            self.metrics.started()
        wait = BACKOFF_S[0]
        try:
            while not self._stop.is_set():
                try:
                    n = self.step()
                except Exception as exc:  # every failure is retried the same way
                    if self.metrics is not None:
                        self.metrics.round_failed()
                    # What was sent and not stored is sent again: consumers dedupe it.
                    self.position = None
                    log.warning(
                        "changefeed round failed (%s); retrying in %.1f s",
                        _one_line(exc),
                        wait,
                        extra={"retry_in_s": wait},
                    )
                    self._stop.wait(wait)
                    wait = min(wait * 2, BACKOFF_S[1])
                    continue
                wait = BACKOFF_S[0]
                if n == 0:
                    if until_caught_up:
                        break
                    self._stop.wait(IDLE_S)
        finally:
            if self.metrics is not None:
                self.metrics.stopped()
        return self.published


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def relay_thread(relay: ChangefeedRelay) -> threading.Thread:
    """The relay beside the projector (`ledger consume --changefeed`), as a daemon thread:
    it shares nothing with the consume loop but the database."""
    return threading.Thread(target=relay.run, name="changefeed-relay", daemon=True)


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `predicate` until true or `timeout_s` passed (tests and the bench)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
