"""Errors as RFC 9457 problem details (`application/problem+json`): a stable `type`, a
short `title`, the `status`, and a `detail` for people. Never a stack trace: an error the
server did not expect is logged and answered with a bare 500."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.errors import LedgerError, StoreUnavailable
from ledger.queries.history import ErasedUser, UnknownUser

PROBLEM = "application/problem+json"
# tag: URIs name the problem kinds without pretending there is a page behind them
# (RFC 9457, 3.1.1); "about:blank" is a bare HTTP status.
TYPE_BASE = "tag:jurisdiction-ledger,2026:problem:"
RETRY_AFTER_S = 5

log = logging.getLogger("ledger.serve")


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(description="A URI naming the kind of problem.", examples=["about:blank"])
    title: str = Field(description="A short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.", ge=100, le=599)
    detail: str | None = Field(default=None, description="What went wrong this time.")
    instance: str | None = Field(default=None, description="The path that was asked for.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For 422: each malformed parameter and why."
    )


class ApiProblem(Exception):
    """Raised by the endpoints for a problem they can name."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.headers = headers


def problem_response(
    request: Request | None,
    status: int,
    title: str,
    detail: str | None = None,
    *,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"{TYPE_BASE}{kind}" if kind else "about:blank",
        "title": title,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def unavailable(request: Request | None, detail: str) -> JSONResponse:
    return problem_response(
        request,
        503,
        "Database unavailable",
        detail,
        kind="database-unavailable",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _db_reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def install(app: FastAPI) -> None:
    """Every error the app can meet, as problem details."""

    @app.exception_handler(ApiProblem)
    async def _named(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.title, exc.detail, kind=exc.kind, headers=exc.headers
        )

    @app.exception_handler(UnknownUser)
    async def _unknown_user(request: Request, exc: UnknownUser) -> JSONResponse:
        return problem_response(request, 404, "Unknown user", str(exc), kind="unknown-user")

    @app.exception_handler(ErasedUser)
    async def _erased_user(request: Request, exc: ErasedUser) -> JSONResponse:
        # 410: the ledger knew the user and deleted what it knew, for good.
        body = {
            "type": f"{TYPE_BASE}erased-user",
            "title": "Erased user",
            "status": 410,
            "detail": str(exc),
            "instance": request.url.path,
            **exc.to_json(),
        }
        return JSONResponse(body, status_code=410, media_type=PROBLEM)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and why only: the rejected value itself is not echoed back.
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return problem_response(
            request, 422, "Invalid request", where, kind="invalid-request", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        try:
            phrase = HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "Error"
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
        return problem_response(
            request, exc.status_code, phrase, detail, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(StoreUnavailable)
    async def _store(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return unavailable(request, str(exc))

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.warning("database error on %s: %s", request.url.path, _db_reason(exc))
        return unavailable(request, f"the database did not answer: {_db_reason(exc)}")

    @app.exception_handler(LedgerError)
    async def _ledger(request: Request, exc: LedgerError) -> JSONResponse:
        return problem_response(request, 400, "Bad request", str(exc), kind="bad-request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return problem_response(request, 500, "Internal server error", kind="internal")
