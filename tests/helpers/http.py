"""Helpers for the HTTP tests: a store with the cases worth asking about, and `ledger serve`
as a real process on a free port of 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.factories import (
    PHONE_CA,
    PHONE_HK,
    PHONE_UK,
    line,
    phone_change,
    relocation,
    signup,
)
from tests.support import Cli, write_jsonl

# Every path of the API, as its OpenAPI document lists them.
PATHS = [
    "/v1/users/{user_id}/current",
    "/v1/users/{user_id}/history",
    "/v1/users/{user_id}/explain",
    "/v1/users/{user_id}/timeline",
    "/v1/users/{user_id}/timeline.svg",
    "/v1/users/{user_id}/export",
    "/v1/users/{user_id}/retained",
    "/v1/changes",
    "/v1/stats",
    "/v1/dead-letters",
    "/healthz",
    "/readyz",
    "/metrics",
]


LEDGER = str(Path(sys.executable).with_name("ledger"))
AUDITOR = "auditor-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef-xyz"
METRICS = "metrics-token-0123456789abcdef"
TOKENS = f"auditor:{AUDITOR},admin:{ADMIN},metrics:{METRICS}"
PHONE_KEY = "http-tests-phone-key"

LATE_USER = "u-late"  # the worked example: a late relocation supersedes a belief
# Markup, Rich markup, quotes, an ESC sequence and a bidi override: data, never code.
HOSTILE_USER = "u-<script>alert(1)</script>[/]\"'&\x1b[2J\u202e"
BAD_LINE_PHONE = "+8613800138000"  # only in a dead letter's raw input

_SERVING = re.compile(r"serving (http://\S+) ")


def build_store(db: str, tmp: Path) -> dict[str, Any]:
    """50 generated users, the late-relocation user, the hostile id, one dead letter."""
    cli = Cli(db)
    stream = tmp / "generated.jsonl"
    cli.run("generate", "--users", "50", "--seed", "1", "-o", str(stream), db=False)
    first = [
        signup(
            40,
            LATE_USER,
            at="2026-04-01T00:00:00Z",
            phone=PHONE_CA,
            channel="rednote-app",
            recorded_at="2026-04-01T00:00:01Z",
        ),
        phone_change(
            41,
            LATE_USER,
            at="2026-05-02T00:00:00Z",
            phone=PHONE_UK,
            recorded_at="2026-05-02T00:00:01Z",
        ),
        signup(
            43,
            HOSTILE_USER,
            at="2026-01-05T00:00:00Z",
            phone=PHONE_HK,
            channel="<b>web</b>",
            recorded_at="2026-01-05T00:00:01Z",
        ),
    ]
    late = [
        relocation(42, LATE_USER, at="2026-04-10T00:00:00Z", recorded_at="2026-05-20T00:00:00Z")
    ]
    cli.run("replay", str(stream))
    cli.run("replay", str(write_jsonl(tmp / "first.jsonl", first)))
    cli.run("replay", str(write_jsonl(tmp / "late.jsonl", late)))
    bad = tmp / "bad.jsonl"
    bad.write_text(
        line(
            signup(
                44,
                "u-bad",
                at="2026-01-05T00:00:00Z",
                phone=BAD_LINE_PHONE,
                channel="rednote-app",
                birth_date="not a date",
            )
        )
        + "\n"
    )
    cli.run("replay", str(bad), expect=3)
    phones = {json.loads(line).get("phone") for line in stream.open()} - {None}
    return {"cli": cli, "stream": stream, "phones": phones | {e["phone"] for e in first}}


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def get(
        self, path: str, token: str | None = None, timeout: float = 10.0
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str, token: str | None = None, expect: int = 200) -> Any:
        status, _, body = self.get(path, token)
        assert status == expect, (path, status, body[:500])
        return json.loads(body)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def serve_env(tokens: str | None = TOKENS, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_PHONE_KEY"] = PHONE_KEY
    if tokens:
        env["LEDGER_API_TOKENS"] = tokens
    env.update(extra)
    return env


def start_server(
    db: str,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    ready_timeout: float = 30.0,
) -> Server:
    """`ledger serve --port 0` on 127.0.0.1; returns once /healthz answers."""
    cmd = [LEDGER, "serve", "--db", db, "--host", "127.0.0.1", "--port", "0", *args]
    proc = subprocess.Popen(
        cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env or serve_env()
    )
    deadline = time.monotonic() + ready_timeout
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ledger serve exited {proc.returncode}:\n{log.read_text()}")
        found = _SERVING.search(log.read_text(errors="replace"))
        if found:
            url = found.group(1)
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return Server(proc, url, log)
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"ledger serve did not come up ({url}):\n{log.read_text()}")
