"""Bearer tokens with roles.

| role | may read |
|---|---|
| `metrics` | `/metrics` (for a Prometheus scraper) |
| `auditor` | the user endpoints, `/v1/changes`, `/v1/stats`, `/metrics` |
| `admin` | all of that and `/v1/dead-letters` (raw rejected input) |

`/healthz`, `/readyz` and the OpenAPI document never need a token; `/metrics` needs none
when the server is told so (`--metrics-access open`). Without any token configured the
server only binds a loopback address (`ledger serve` enforces it) and every caller is an
auditor: local development can read users, but raw input still needs an admin token.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.config import API_ROLES, ApiSettings, parse_api_tokens
from ledger.errors import LedgerError
from ledger.http.problems import ApiProblem

RANK = {role: n for n, role in enumerate(API_ROLES)}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="jurisdiction-ledger"'}

# Declared in the OpenAPI document (and Swagger UI's "Authorize"); checked by `Access`.
bearer = HTTPBearer(auto_error=False, description="A token given to the server with a role.")


def _digest(token: str) -> bytes:
    # Looked up by digest, so the time a lookup takes says nothing about the tokens' bytes.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class Access:
    """Who may call what; `tokens` maps sha256(token) to role."""

    tokens: dict[bytes, str] = field(default_factory=dict)
    metrics_open: bool = False

    @property
    def open(self) -> bool:
        return not self.tokens

    def role(self, credentials: HTTPAuthorizationCredentials | None) -> str:
        if self.open:
            return "auditor"
        if credentials is None:
            raise ApiProblem(
                401,
                "unauthorized",
                "Unauthorized",
                "this endpoint needs a bearer token (Authorization: Bearer TOKEN)",
                headers=CHALLENGE,
            )
        role = self.tokens.get(_digest(credentials.credentials))
        if role is None:
            raise ApiProblem(
                401,
                "unauthorized",
                "Unauthorized",
                "the bearer token is not one this server knows",
                headers={
                    "WWW-Authenticate": 'Bearer realm="jurisdiction-ledger", error="invalid_token"'
                },
            )
        return role

    def require(self, credentials: HTTPAuthorizationCredentials | None, needed: str) -> str:
        role = self.role(credentials)
        if RANK[role] < RANK[needed]:
            if self.open:
                detail = (
                    f"this endpoint needs an {needed} token, and this server has no tokens "
                    "configured (LEDGER_API_TOKENS or LEDGER_API_TOKENS_FILE)"
                )
            else:
                detail = f"this endpoint needs the {needed} role; the token given is {role}"
            raise ApiProblem(403, "forbidden", "Forbidden", detail)
        return role


def requirement(needed: str) -> Callable[..., Awaitable[str]]:
    """A FastAPI dependency that lets `needed` (or a higher role) through."""

    # async: a token check does no I/O, so it need not hop to the thread pool.
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> str:
        access: Access = request.app.state.access
        return access.require(credentials, needed)

    return check


def load_access(api: ApiSettings) -> tuple[Access, list[str]]:
    """The tokens of the variable and of the file, checked, and warnings for the operator.
    Raises LedgerError (a missing or unreadable file) or UsageError (a malformed line: the
    message never shows a token)."""
    api.check()
    warnings: list[str] = []
    found: dict[str, str] = {}
    if api.tokens:
        found.update(parse_api_tokens(api.tokens, "LEDGER_API_TOKENS"))
    if api.tokens_file:
        path = Path(api.tokens_file)
        try:
            mode = path.stat().st_mode
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LedgerError(f"cannot read the API tokens file {path}: {exc}") from None
        if os.name == "posix" and mode & stat.S_IRWXO:
            # Not refused: mounted secrets are often 0644 inside a container of their own.
            warnings.append(
                f"warning: the API tokens file {path} is readable by every user (mode "
                f"{stat.S_IMODE(mode):o}); chmod 600 it unless it is alone in a container"
            )
        for token, role in parse_api_tokens(content, str(path), numbered=True).items():
            if found.get(token, role) != role:
                raise LedgerError(f"{path}: a token of LEDGER_API_TOKENS has another role there")
            found[token] = role
    access = Access(
        {_digest(t): role for t, role in found.items()}, metrics_open=api.metrics_access == "open"
    )
    return access, warnings
