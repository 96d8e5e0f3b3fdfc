"""The server's own Prometheus metrics: requests by route template and status, and their
latency. A registry per app, so several apps in one process (tests) do not collide."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from starlette.routing import Match

_CONVERTOR = re.compile(r"\{(\w+):\w+\}")  # {user_id:path} -> {user_id}, as in OpenAPI

# Latencies of a read-only API on one host: the interesting range is 1 ms to 1 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "ledger_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ledger_http_request_duration_seconds",
            "Time from request to the end of the response, by route template.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )


class MetricsMiddleware:
    """Plain ASGI (no per-request task or body buffering). Routes are labelled by their
    template (`/v1/users/{user_id}/history`), never by the path: user ids would make the
    label set unbounded and put personal identifiers into the metrics.

    FastAPI names the route it chose in the scope for its own endpoints only; the routes
    the framework adds (`/openapi.json`, `/docs`, `/redoc`, the documentation's static
    files) are looked up in `routes`, the app's route list, so that they are not counted
    as "unmatched" with the paths nothing serves."""

    def __init__(self, app: Any, metrics: HttpMetrics, routes: Sequence[Any] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _template(self, scope: Any, asked: Any) -> str:
        """The route template of the request: `scope` as the app left it, `asked` as it
        arrived (a mount rewrites the paths in the scope it hands on)."""
        path = getattr(scope.get("route"), "path", None)
        if path:
            return _CONVERTOR.sub(r"{\1}", path)
        for route in self.routes:
            match, _ = route.matches(asked)
            if match is Match.FULL:
                return str(getattr(route, "path_format", None) or route.path)
        return "unmatched"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        asked = dict(scope)

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = self._template(scope, asked)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
