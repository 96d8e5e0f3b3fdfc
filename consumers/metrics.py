"""Prometheus metrics of the projector service (`ledger consume --metrics-port P`), and the
small HTTP server that exposes them with a liveness endpoint.

| metric | type | what |
|---|---|---|
| `ledger_events_applied_total` | counter | events applied to the store |
| `ledger_duplicate_events_total` | counter | deliveries of events already applied (no change) |
| `ledger_dead_letters_total{reason_class}` | counter | records dead-lettered, by kind of reason |
| `ledger_batches_total` | counter | batches committed |
| `ledger_batch_apply_seconds` | histogram | time to apply and commit one batch |
| `ledger_consumer_lag_records{partition}` | gauge | last stable offset minus position |
| `ledger_last_applied_record_timestamp_seconds` | gauge | newest record time committed |
| `ledger_database_retries_total` | counter | store operations that failed and will be retried |
| `ledger_consumer_up` | gauge | 1 while the consume loop runs |

The changefeed's relay (`ledger changefeed`, or `ledger consume --changefeed`) adds:

| metric | type | what |
|---|---|---|
| `ledger_changefeed_published_total{topic}` | counter | records the broker acknowledged |
| `ledger_changefeed_backlog_records` | gauge | decisions recorded and not yet published |
| `ledger_changefeed_lag_seconds` | gauge | record time of the oldest unpublished decision to now |
| `ledger_changefeed_position` | gauge | the last seq published and stored |
| `ledger_changefeed_failures_total` | counter | relay rounds that failed and will be retried |
| `ledger_changefeed_up` | gauge | 1 while the relay runs and its last round did not fail |

`/readyz` answers 200 while every part the process runs (consumer, relay) is `ok`.

The counters move exactly where the service's own `Stats` move, so the scrape after a run
equals the summary the service logs when it stops. The loop thread writes the values; the
HTTP thread only reads the registry (prometheus-client is thread-safe), and never touches
the Kafka consumer.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from ledger.app.ports import StoreConflict, StoreUnavailable

log = logging.getLogger("ledger.consume")

# Seconds a batch takes end to end, from a few records on SQLite to thousands on a slow
# PostgreSQL.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Dead-letter reasons are free text quoting input; the label is one of these few classes.
REASON_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("too_large", ("over the limit of",)),
    ("event_id_conflict", ("already recorded for another user",)),
    ("database_refused", ("the database refused it",)),
    ("unknown_terms_version", ("unknown terms version", "for what-if comparison only")),
    ("no_record_time", ("kafka record timestamp", "tombstone")),
    (
        "undecodable",
        (
            "not valid utf-8",
            "not valid json",
            "json nested",
            "expected a json object",
            "avro",
            "writer schema",
        ),
    ),
)


def reason_class(reason: str) -> str:
    lowered = reason.lower()
    for name, needles in REASON_CLASSES:
        if any(n in lowered for n in needles):
            return name
    return "invalid_event"


class ProjectorMetrics:
    """The hooks `consumers.projector.ProjectorService` calls, on a registry of its own."""

    def __init__(self, *, stale_after_s: float = 90.0) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.applied = Counter("ledger_events_applied", "Events applied to the store.", registry=r)
        self.duplicates = Counter(
            "ledger_duplicate_events",
            "Deliveries of events the store had applied already (nothing changed).",
            registry=r,
        )
        self.suppressed = Counter(
            "ledger_suppressed_events",
            "Records of users erased before them: neither stored nor dead-lettered.",
            registry=r,
        )
        self.erasures = Counter("ledger_erasures", "Users erased.", registry=r)
        self.dead_letters = Counter(
            "ledger_dead_letters",
            "Records dead-lettered, by class of reason.",
            ["reason_class"],
            registry=r,
        )
        for name, _ in REASON_CLASSES:  # every series exists from the start, at 0
            self.dead_letters.labels(name)
        self.dead_letters.labels("invalid_event")
        self.batches = Counter("ledger_batches", "Batches committed.", registry=r)
        self.batch_seconds = Histogram(
            "ledger_batch_apply_seconds",
            "Time to apply and commit one batch (planning, store transaction, DLQ sends).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "ledger_consumer_lag_records",
            "Records between the consumer's position and the end it can read (the last "
            "stable offset when read_committed), per partition.",
            ["partition"],
            registry=r,
        )
        self.last_record_time = Gauge(
            "ledger_last_applied_record_timestamp_seconds",
            "The newest record time (Kafka record timestamp) in a committed batch, Unix time.",
            registry=r,
        )
        self.db_retries = Counter(
            "ledger_database_retries",
            "Store operations that failed (database unavailable or contended) and will be "
            "retried from the stored positions.",
            registry=r,
        )
        self.up = Gauge(
            "ledger_consumer_up",
            "1 while the consume loop runs and its last batch did not fail (0 while batches "
            "fail and are retried, e.g. the database is down or full).",
            registry=r,
        )
        self.stale_after_s = stale_after_s
        self._beat = time.monotonic()
        self._partitions: set[str] = set()
        self._running = False
        self._failing = False  # the last batch, or reading the stored positions, failed
        self._newest = 0.0

    # -- hooks ---------------------------------------------------------------------------
    def started(self) -> None:
        self._running = True
        self.up.set(1)
        self.heartbeat()

    def stopped(self) -> None:
        self._running = False
        self.up.set(0)

    def heartbeat(self) -> None:
        self._beat = time.monotonic()

    def batch_applied(self, result: Any, seconds: float, newest: datetime | None) -> None:
        """`newest`: the latest record time among the batch's records."""
        self.applied.inc(result.applied)
        self.duplicates.inc(result.duplicates)
        self.suppressed.inc(getattr(result, "suppressed", 0))
        self.erasures.inc(getattr(result, "erased", 0))
        for d in result.dead_letters:
            self.dead_letters.labels(reason_class(d.reason)).inc()
        self.batches.inc()
        self.batch_seconds.observe(seconds)
        self._progress(failing=False)
        if newest is not None and newest.timestamp() > self._newest:  # never moves back
            self._newest = newest.timestamp()
            self.last_record_time.set(self._newest)

    def batch_failed(self, exc: BaseException) -> None:
        if isinstance(exc, StoreUnavailable | StoreConflict | OSError):
            self.db_retries.inc()
        self._progress(failing=True)

    def positions_unreadable(self) -> None:
        self.db_retries.inc()
        self._progress(failing=True)

    def _progress(self, *, failing: bool) -> None:
        self._failing = failing
        if self._running:
            self.up.set(0 if failing else 1)

    def lag_by_partition(self, lag: dict[int, int]) -> None:
        names = {str(p) for p in lag}
        for gone in self._partitions - names:  # revoked: no stale series
            self.lag.remove(gone)
        for partition, behind in lag.items():
            self.lag.labels(str(partition)).set(behind)
        self._partitions = names

    # -- liveness --------------------------------------------------------------------------
    def alive(self) -> bool:
        """The loop has gone round recently (a batch that takes longer than this would have
        cost the consumer its group membership anyway), and its last batch did not fail."""
        return self.status() == "ok"

    def status(self) -> str:
        """`ok`; `failing` while batches fail and are retried; `stalled` when the loop has
        not gone round for `stale_after_s` or has stopped."""
        if not self._running or time.monotonic() - self._beat >= self.stale_after_s:
            return "stalled"
        return "failing" if self._failing else "ok"


class RelayMetrics:
    """The hooks `consumers.changefeed.ChangefeedRelay` calls, on a registry of its own or
    on the projector's (`ledger consume --changefeed` serves both on one endpoint)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, stale_after_s: float = 90.0
    ) -> None:
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self.registry = r = registry
        self.published = Counter(
            "ledger_changefeed_published",
            "Changefeed records the broker acknowledged, by topic.",
            ["topic"],
            registry=r,
        )
        self.backlog = Gauge(
            "ledger_changefeed_backlog_records",
            "Decisions recorded in the outbox and not yet published.",
            registry=r,
        )
        self.lag = Gauge(
            "ledger_changefeed_lag_seconds",
            "Seconds from the record time of the oldest decision not yet published to now "
            "(0 when none waits).",
            registry=r,
        )
        self.position = Gauge(
            "ledger_changefeed_position",
            "The outbox seq up to which the relay has published and stored its position.",
            registry=r,
        )
        self.failures = Counter(
            "ledger_changefeed_failures",
            "Relay rounds that failed (broker or database) and will be retried.",
            registry=r,
        )
        self.up = Gauge(
            "ledger_changefeed_up",
            "1 while the relay runs and its last round did not fail.",
            registry=r,
        )
        self.stale_after_s = stale_after_s
        self._beat = time.monotonic()
        self._running = False
        self._failing = False

    def started(self) -> None:
        self._running = True
        self.up.set(1)
        self._beat = time.monotonic()

    def stopped(self) -> None:
        self._running = False
        self.up.set(0)

    def round_done(self, published: dict[str, int], position: int) -> None:
        """`published`: records acknowledged in the round, by topic."""
        self._beat = time.monotonic()
        self._failing = False
        if self._running:
            self.up.set(1)
        for topic, n in published.items():
            self.published.labels(topic).inc(n)
        self.position.set(position)

    def waiting(self, records: int, oldest: datetime | None) -> None:
        self._beat = time.monotonic()
        self.backlog.set(records)
        self.lag.set(0 if oldest is None else max(0.0, time.time() - oldest.timestamp()))

    def round_failed(self) -> None:
        self._beat = time.monotonic()
        self._failing = True
        self.failures.inc()
        if self._running:
            self.up.set(0)

    def status(self) -> str:
        if not self._running or time.monotonic() - self._beat >= self.stale_after_s:
            return "stalled"
        return "failing" if self._failing else "ok"


class _Handler(BaseHTTPRequestHandler):
    metrics: Any  # ProjectorMetrics or RelayMetrics, set on the subclass made per server
    parts: tuple[Any, ...]  # every part whose status /readyz reports

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/livez"):
            status = self.metrics.status()
            body = b'{"status":"%s"}' % status.encode()
            self._send(200 if status == "ok" else 503, body, "application/json")
        elif path == "/readyz":
            statuses = {type(p).__name__: p.status() for p in self.parts}
            ready = all(v == "ok" for v in statuses.values())
            body = json.dumps({"status": "ok" if ready else "not ready", **statuses}).encode()
            self._send(200 if ready else 503, body, "application/json")
        else:
            self._send(404, b'{"status":"not found"}', "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not worth a log line


class MetricsServer:
    """/metrics and /healthz on a daemon thread."""

    def __init__(self, metrics: Any, host: str, port: int, *, also: tuple[Any, ...] = ()) -> None:
        """`metrics`: whose registry /metrics serves and whose status /healthz tells;
        `also`: other parts on the same registry that /readyz asks as well."""
        handler = type("Handler", (_Handler,), {"metrics": metrics, "parts": (metrics, *also)})
        server: type[ThreadingHTTPServer] = ThreadingHTTPServer
        if ":" in host:  # an IPv6 address
            server = type("Server6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        self.httpd = server((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
