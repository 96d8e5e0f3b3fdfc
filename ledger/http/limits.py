"""What `ledger serve` allows one client, enforced where connections are made: uvicorn's h11
protocol with the limits a server facing hostile clients needs, which uvicorn leaves out.

- **A request's head** (request line and headers) may hold `HEAD_BYTES` at most (h11's
  bound on an incomplete event) and `MAX_HEADERS` header fields; a larger one is answered
  400 or 431 and the connection closed, before anything of it is kept.
- **It must arrive in time**: `head_timeout_s` after the connection opened, or after the
  previous response on a kept-alive connection. A client sending a byte a second is
  closed then, instead of holding a connection for ever.
- **Open connections are capped** (`max_connections`): a new connection beyond the cap
  closes the oldest one that has not sent a complete head yet (the slow clients an
  attack is made of), so a client that sends its request at once still gets in; only when
  every connection is busy with a request is the new one refused with 503.

The server stays one process: it keeps answering `/healthz` and authenticated clients
while thousands of slow connections come and go.
"""

from __future__ import annotations

import asyncio
import resource
from collections import OrderedDict
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT_S = 10.0

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 29\r\n\r\ntoo many connections, retry.\n"
)
_TOO_MANY_HEADERS = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
    b"charset=utf-8\r\nconnection: close\r\ncontent-length: 22\r\n\r\ntoo many header fields\n"
)


def default_max_connections() -> int:
    """Half the process's file descriptors (the rest are the database's, logs and
    sockets of other kinds), between 64 and 4,096."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(64, min(4096, soft // 2))


def _waiting(state: ServerState) -> OrderedDict[GuardedH11Protocol, None]:
    """The server's connections whose request head has not arrived yet, oldest first."""
    found: OrderedDict[GuardedH11Protocol, None] | None = getattr(state, "ledger_waiting", None)
    if found is None:
        found = OrderedDict()
        state.ledger_waiting = found  # type: ignore[attr-defined]
    return found


class GuardedH11Protocol(H11Protocol):
    """Configure with `protocol(max_connections, head_timeout_s)`."""

    max_connections = 1024
    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        waiting = _waiting(self.server_state)
        if len(self.connections) > self.max_connections:
            if waiting:
                oldest = next(iter(waiting))
                oldest.close_slow()
            else:
                transport.write(_REFUSED)
                self._close()
                return
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is None or self.transport.is_closing():
            return
        # The head is in once h11 has moved past waiting for it (a body may still come;
        # reading it is the application's, and bounded there).
        if self.conn.their_state is not h11.IDLE:
            self._head_arrived()
            if self.headers is not None and len(self.headers) > MAX_HEADERS:
                self.transport.write(_TOO_MANY_HEADERS)
                self._close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this kept-alive connection (unless a pipelined one is in).
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._wait_for_head()

    def close_slow(self) -> None:
        """Close a connection whose request head did not arrive in time or in room."""
        self._close()

    # -- bookkeeping ---------------------------------------------------------------------
    def _wait_for_head(self) -> None:
        self._head_arrived()
        _waiting(self.server_state)[self] = None
        self._head_timer = self.loop.call_later(self.head_timeout_s, self.close_slow)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        _waiting(self.server_state).pop(self, None)

    def _close(self) -> None:
        self._head_arrived()
        self.connections.discard(self)
        if not self.transport.is_closing():
            self.transport.close()


def protocol(max_connections: int, head_timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's `http=`, with these limits."""
    return type(
        "LedgerHttpProtocol",
        (GuardedH11Protocol,),
        {"max_connections": max_connections, "head_timeout_s": head_timeout_s},
    )
