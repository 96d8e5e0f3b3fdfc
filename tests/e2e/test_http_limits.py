"""`ledger serve` under hostile clients, on loopback and bounded in count and time: slow
clients that send a request's head a byte at a time, more connections than it allows, a
huge header and too many header fields. It keeps answering /healthz and authenticated
clients throughout, and its memory does not follow what the clients send."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers.http import AUDITOR, Server, build_store, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("limits")
    db = f"sqlite:///{tmp / 'ledger.db'}"
    build_store(db, tmp)
    return db


def _open(
    server: Server, n: int, first: bytes = b"GET /healthz HTTP/1.1\r\nHo"
) -> list[socket.socket]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(first)  # a head begun, never finished
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        while s.recv(1024):  # whatever it answers before closing
            pass
        return True  # end of stream: the server closed it
    except TimeoutError:
        return False  # still open
    except OSError:
        return True  # reset by the server


def test_slow_clients_are_closed_and_others_still_answered(store: str, tmp_path: Path) -> None:
    server = start_server(store, tmp_path / "serve.log", args=("--head-timeout", "2"))
    try:
        slow = _open(server, 300)
        started = time.monotonic()
        # While they hang: health and an authenticated question are answered at once.
        status, _, _ = server.get("/healthz", timeout=5)
        assert status == 200
        status, _, _ = server.get("/v1/stats", AUDITOR, timeout=5)
        assert status == 200
        assert time.monotonic() - started < 2  # not queued behind the slow ones
        time.sleep(2.5)
        closed = sum(_closed_by_server(s, 1.0) for s in slow)
        assert closed == len(slow), f"{len(slow) - closed} slow clients still open"
        for s in slow:
            s.close()
    finally:
        assert server.stop() == 0


def test_connections_beyond_the_cap_close_slow_clients_first(store: str, tmp_path: Path) -> None:
    server = start_server(
        store, tmp_path / "serve.log", args=("--max-connections", "50", "--head-timeout", "60")
    )
    try:
        slow = _open(server, 400)  # eight times the cap, each holding its head back
        answered = 0
        for _ in range(20):
            status, _, _ = server.get("/v1/stats", AUDITOR, timeout=5)
            answered += status == 200
        assert answered == 20
        assert server.get("/healthz", timeout=5)[0] == 200
        open_now = len(psutil.Process(server.proc.pid).net_connections(kind="tcp"))
        assert open_now <= 50 + 5  # the cap, and the listening socket
        for s in slow:
            s.close()
    finally:
        assert server.stop() == 0


def test_a_huge_or_crowded_head_is_refused_without_being_kept(store: str, tmp_path: Path) -> None:
    server = start_server(store, tmp_path / "serve.log")
    try:
        proc = psutil.Process(server.proc.pid)
        before = proc.memory_info().rss
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            try:
                while sent < 64 << 20:  # 64 MiB offered; refused after the first 16 KiB
                    s.sendall(b"a" * (1 << 20))
                    sent += 1 << 20
            except OSError:
                pass  # closed by the server: what we want
            assert sent < 64 << 20, "the server kept reading a 64 MiB header"
        assert proc.memory_info().rss - before < 32 << 20
        crowded = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-%d: 1\r\n" % i for i in range(500)
        ) + b"\r\n"
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(crowded)
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
        assert server.get("/healthz", timeout=5)[0] == 200
    finally:
        assert server.stop() == 0
