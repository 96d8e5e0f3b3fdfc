"""The ASGI app behind `ledger serve`.

Every user endpoint calls the function the CLI command of the same name calls
(`ledger.queries.history`), with the same time parsing (ISO 8601, a bare date meaning
00:00 UTC), and answers with the same JSON document as `--json`. The app only reads: its
engine comes from `ledger.store.readonly.open_reader`.

Endpoints are plain functions, run in the server's thread pool: a query blocks its thread,
never the event loop, so /healthz answers while the database hangs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import metadata
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine

from ledger.app.audit.paths import StoreChanged
from ledger.domain.limits import USER_ID_CHARS
from ledger.domain.time import format_instant, parse_instant, truncate_ms
from ledger.http import models
from ledger.http.auth import Access, bearer, requirement
from ledger.http.metrics import HttpMetrics, MetricsMiddleware
from ledger.http.problems import PROBLEM, ApiProblem, Problem, install, unavailable
from ledger.queries import history as queries
from ledger.queries.changes import MAX_PAGE, MAX_SEQ, next_after
from ledger.queries.changes import page as change_page
from ledger.queries.dead_letters import full_json
from ledger.queries.dead_letters import page as dead_letter_page
from ledger.queries.stats import stats as query_stats
from ledger.queries.subject import NoCoveringDigest, export_subject
from ledger.queries.timeline import timeline as query_timeline
from ledger.render.timeline import render_svg
from ledger.render.timeline_page import render_html
from ledger.store.readonly import EngineReader, readiness

DISTRIBUTION = "jurisdiction-ledger"  # the package's name in pyproject.toml


def package_version() -> str:
    """The installed package's version, which the OpenAPI document states: one version,
    from the package metadata, wherever the ledger says which it is."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


STATS_TTL_S = 10.0  # /v1/stats reads whole tables; dashboards poll it
DEAD_LETTER_PAGE_BYTES = 16 << 20  # raw input per /v1/dead-letters answer, about
# The timeline page fetches nothing and runs nothing; the SVG alike.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

DESCRIPTION = """\
Which rulebook (`xhs-domestic`, `rednote-international`, `undetermined`) governs each user
of the platform, since when and why, with the bitemporal history: **valid time** (when an
assignment held in the world) and **record time** (when the ledger believed it).

Times are ISO 8601 with an offset or `Z`; a bare date (`2026-04-01`) means 00:00 UTC.
`at` is a valid time (default: now); `believed_at` answers with what the ledger believed at
that record time, before later-arriving events corrected it.

`/v1/changes` is the changefeed without Kafka: every decision the ledger recorded, in `seq`
order, a page at a time (`after` = the previous page's `next_after`).

Errors are RFC 9457 problem details (`application/problem+json`). Authentication: a bearer
token with the role `auditor` (user endpoints, changes, stats) or `admin` (also dead
letters); `/healthz`, `/readyz` and this document are open.
"""


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    reasons = {
        401: "No bearer token, or one this server does not know.",
        403: "The token's role may not read this.",
        404: "Unknown user: the ledger has no events for this id.",
        409: "No recorded digest covers the user's events (take one with `ledger digest`), "
        "or the store changed since the digest.",
        422: "A malformed parameter, e.g. a time that is not ISO 8601.",
        503: "The database does not answer (or its schema is not the one this server reads).",
    }
    return {
        s: {
            "description": reasons[s],
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }


def _ok(model: type, description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": description}}


UserId = Annotated[
    str,
    Path(
        description="The user id as it appears in events (any text; URL-encode it).",
        examples=["u-000042"],
    ),
]
At = Annotated[
    str | None,
    Query(
        description="Valid time asked about, ISO 8601 (2026-04-01 or "
        "2026-04-01T12:00:00+08:00). Default: now.",
        examples=["2026-04-01"],
    ),
]
BelievedAt = Annotated[
    str | None,
    Query(
        description="Answer with what the ledger believed at this record time. ISO 8601.",
        examples=["2026-05-10T00:00:00Z"],
    ),
]


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value, date_means_midnight_utc=True)
    except ValueError as exc:
        raise ApiProblem(422, "malformed-time", "Malformed time", f"{name}: {exc}") from None


def _user(user_id: str) -> str:
    # Ids the ledger cannot hold (too long, NUL) are simply unknown: asking the database
    # would only earn a driver error (PostgreSQL refuses NUL in text).
    if len(user_id) > USER_ID_CHARS or "\x00" in user_id:
        raise queries.UnknownUser(
            f"unknown user {user_id[:60]!r}: no events for this user in the ledger"
        )
    return user_id


class _Cached:
    """One value recomputed at most every `ttl` seconds; concurrent callers wait for the
    one computing it instead of all scanning the tables at once."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.lock = threading.Lock()
        self.value: Any = None
        self.at = -float("inf")

    def get(self, compute: Any) -> Any:
        with self.lock:
            if time.monotonic() - self.at > self.ttl:
                self.value = compute()
                self.at = time.monotonic()
            return self.value


def create_app(engine: Engine, access: Access, *, threads: int = 4) -> FastAPI:
    """The app on `engine`; `threads` queries run at once (the rest queue). A few threads
    keep a core busy: with anyio's default of 40, threads contending for the GIL cost more
    CPU per request and a longer tail (measured on the 1M-event store: p99 80 ms with 4,
    105 ms with 16, at 50 clients)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    app = FastAPIOffline(
        lifespan=lifespan,
        title="Jurisdiction ledger",
        version=package_version(),
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
        # No validator badge: Swagger UI would send the document to validator.swagger.io.
        swagger_ui_parameters={"persistAuthorization": False, "validatorUrl": None},
    )
    app.state.access = access
    metrics = HttpMetrics()
    install(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    stats_cache = _Cached(STATS_TTL_S)

    auditor = [Depends(requirement("auditor"))]
    admin = [Depends(requirement("admin"))]

    @app.get(
        "/v1/users/{user_id:path}/current",
        tags=["users"],
        summary="Which rulebook governs a user at a valid time",
        dependencies=auditor,
        responses={
            **_ok(models.Current, "The assignment at `at`."),
            **_problems(401, 403, 404, 422, 503),
        },
    )
    def current(user_id: UserId, at: At = None, believed_at: BelievedAt = None) -> JSONResponse:
        """As `ledger current USER --at T --believed-at R --json`: since/until, policy, rule,
        reason, facts, evidence, the rulebook's age rule, content focus and data residency,
        and the age status at `at`."""
        when = _time(at, "at") or datetime.now(UTC)
        believed = _time(believed_at, "believed_at")
        result = queries.current(engine, _user(user_id), when, believed_at=believed)
        return JSONResponse(result.to_json())

    @app.get(
        "/v1/users/{user_id:path}/history",
        tags=["users"],
        summary="A user's assignment history",
        dependencies=auditor,
        responses={
            **_ok(models.History, "Entries ordered by valid time."),
            **_problems(401, 403, 404, 422, 503),
        },
    )
    def history(
        user_id: UserId,
        all: Annotated[
            bool, Query(description="Include superseded rows (record-time history).")
        ] = False,
        believed_at: BelievedAt = None,
    ) -> JSONResponse:
        """As `ledger history USER [--all] [--believed-at R] --json`: the entries tiling valid
        time from signup; `all` adds the rows the ledger once believed and later superseded;
        `believed_at` shows the history as believed at that record time."""
        believed = _time(believed_at, "believed_at")
        answer = queries.history_answer(
            engine, _user(user_id), include_superseded=all, believed_at=believed
        )
        return JSONResponse(answer.to_json())

    @app.get(
        "/v1/users/{user_id:path}/explain",
        tags=["users"],
        summary="A plain-language statement of a user's rulebook and why",
        dependencies=auditor,
        responses={
            **_ok(models.Explanation, "The statement."),
            **_problems(401, 403, 404, 422, 503),
        },
    )
    def explain(user_id: UserId, at: At = None, believed_at: BelievedAt = None) -> JSONResponse:
        """As `ledger explain USER --at T --believed-at R --json`."""
        when = _time(at, "at") or datetime.now(UTC)
        believed = _time(believed_at, "believed_at")
        doc = queries.explain_json(engine, _user(user_id), when, believed_at=believed)
        return JSONResponse(doc)

    @app.get(
        "/v1/users/{user_id:path}/retained",
        tags=["users"],
        summary="What an erasure kept of a user's history (admin)",
        dependencies=admin,
        responses={
            **_ok(models.Retained, "The erasure and the retained history skeleton."),
            **_problems(401, 403, 404, 422, 503),
        },
    )
    def retained(
        user_id: UserId,
        all: Annotated[
            bool, Query(description="Include superseded rows (record-time history).")
        ] = True,
        believed_at: BelievedAt = None,
    ) -> JSONResponse:
        """As `ledger history USER --retained --json`: for an erased user, the history
        skeleton (valid and record times, assignment, policy, rule) kept when the erasure
        ran with LEDGER_RETAIN_ASSIGNMENTS=1 for legal retention; nothing personal. Admin
        role only: the auditor's reads of an erased user answer 410. 404 for a user who was
        not erased."""
        try:
            answer = queries.retained_history(
                engine,
                _user(user_id),
                include_superseded=all,
                believed_at=_time(believed_at, "believed_at"),
            )
        except queries.NotErased as exc:
            raise queries.UnknownUser(str(exc)) from None
        return JSONResponse(answer.to_json())

    @app.get(
        "/v1/users/{user_id:path}/export",
        tags=["users"],
        summary="A subject export that proves itself",
        dependencies=auditor,
        responses={
            **_ok(models.SubjectExport, "The export, proved against a recorded digest."),
            **_problems(401, 403, 404, 409, 503),
        },
    )
    def export(user_id: UserId) -> JSONResponse:
        """As `ledger subject export USER`: every event, history row, explanation and policy
        hash of the user with the RFC 6962 audit path to the newest recorded digest, which
        must cover all of the user's events. The API only reads: when no recorded digest
        does, it answers 409 and a digest must be taken (`ledger digest`) first.
        `ledger subject verify` checks the document with no store."""
        try:
            doc = export_subject(engine, _user(user_id), truncate_ms(datetime.now(UTC)))
        except (NoCoveringDigest, StoreChanged) as exc:
            kind = "no-covering-digest" if isinstance(exc, NoCoveringDigest) else "store-changed"
            raise ApiProblem(409, kind, "Cannot prove the export", str(exc)) from None
        # Personal data: never kept by a cache on the way.
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    timeline_doc = (
        "Valid time across, record time up: one band per history row (superseded ones "
        "hatched, under the belief that replaced them), coloured by rulebook and labelled "
        "with policy and rule; events as ticks with their types; sign-up and terms bindings "
        "marked. Self-contained: the page fetches nothing."
    )

    @app.get(
        "/v1/users/{user_id:path}/timeline.svg",
        tags=["users"],
        summary="A user's bitemporal timeline as SVG",
        description=timeline_doc,
        dependencies=auditor,
        response_class=Response,
        responses={
            200: {
                "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                "description": "The picture.",
            },
            **_problems(401, 403, 404, 422, 503),
        },
    )
    def timeline_svg(user_id: UserId) -> Response:
        data = query_timeline(engine, _user(user_id))
        return Response(
            render_svg(data),
            media_type="image/svg+xml",
            headers={"Content-Security-Policy": PAGE_CSP},
        )

    @app.get(
        "/v1/users/{user_id:path}/timeline",
        tags=["users"],
        summary="A user's bitemporal timeline as an HTML page",
        description=timeline_doc,
        dependencies=auditor,
        response_class=HTMLResponse,
        responses={
            200: {
                "content": {"text/html": {"schema": {"type": "string"}}},
                "description": "The page.",
            },
            **_problems(401, 403, 404, 422, 503),
        },
    )
    def timeline_page(user_id: UserId) -> HTMLResponse:
        data = query_timeline(engine, _user(user_id))
        return HTMLResponse(render_html(data), headers={"Content-Security-Policy": PAGE_CSP})

    feed = EngineReader(engine)

    @app.get(
        "/v1/changes",
        tags=["changefeed"],
        summary="The changefeed: every decision the ledger recorded, in seq order",
        dependencies=auditor,
        responses={
            **_ok(models.Changes, "Up to `limit` records with a seq above `after`."),
            **_problems(401, 403, 422, 503),
        },
    )
    def changes(
        after: Annotated[
            int,
            Query(
                ge=0,
                le=MAX_SEQ,
                description="Records with a seq above this: the previous page's `next_after` "
                "(0: from the start).",
            ),
        ] = 0,
        limit: Annotated[
            int, Query(ge=1, le=MAX_PAGE, description="At most this many records.")
        ] = 1000,
    ) -> JSONResponse:
        """As `ledger changes --after AFTER --limit LIMIT --json`: each record as the Kafka
        relay publishes it to `rulebook-changes` (with `announced`: whether the relay
        does). A page shorter than `limit` means the feed has nothing newer yet; poll again
        with `after=next_after`. Deduplicate by `decision_id`."""
        found = change_page(feed, after=after, limit=limit)
        return JSONResponse(
            {"changes": [c.to_json() for c in found], "next_after": next_after(found, after)}
        )

    @app.get(
        "/v1/stats",
        tags=["operations"],
        summary="Users per assignment, events, dead letters, last record time per source",
        dependencies=auditor,
        responses={**_ok(models.Stats, "Store-wide figures."), **_problems(401, 403, 503)},
    )
    def stats() -> JSONResponse:
        """Read from whole tables and cached for a few seconds (`computed_at`)."""

        def compute() -> dict[str, Any]:
            return {**query_stats(engine), "computed_at": format_instant(datetime.now(UTC))}

        return JSONResponse(stats_cache.get(compute))

    @app.get(
        "/v1/dead-letters",
        tags=["operations"],
        summary="Rejected input with its raw bytes (admin only: may contain personal data)",
        dependencies=admin,
        responses={
            **_ok(models.DeadLetters, "Dead letters, oldest first."),
            **_problems(401, 403, 422, 503),
        },
    )
    def dead_letters(
        since: Annotated[
            str | None, Query(description="Recorded at or after this time (ISO 8601).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
        after: Annotated[
            int | None,
            Query(ge=0, le=2**62, description="Continue after this id (`next_after`)."),
        ] = None,
    ) -> JSONResponse:
        """As `ledger dead-letters export`: every column, the raw input as `raw_base64`, and as
        `raw_text` when it is UTF-8. Resolved and unresolved alike."""
        rows, next_after = dead_letter_page(
            engine,
            since=_time(since, "since"),
            after=after,
            limit=limit,
            raw_budget=DEAD_LETTER_PAGE_BYTES,
        )
        return JSONResponse(
            {"items": [full_json(r) for r in rows], "next_after": next_after},
            headers={"Cache-Control": "no-store"},
        )

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Liveness: the process answers",
        responses=_ok(models.Health, "Up."),
    )
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: the database answers and its schema is current",
        responses={**_ok(models.Ready, "Ready."), **_problems(503)},
    )
    def readyz(request: Request) -> JSONResponse:
        state = readiness(engine)
        if not state.ready:
            return unavailable(request, state.problem or "not ready")
        return JSONResponse({"status": "ready", "schema_revision": state.revision})

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics of this server",
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                "description": "Prometheus text format.",
            },
            **_problems(401, 403),
        },
    )
    def prometheus(request: Request, credentials: Annotated[Any, Depends(bearer)]) -> Response:
        if not access.metrics_open:
            access.require(credentials, "metrics")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # The problem schema every error response refers to.
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
