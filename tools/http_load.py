"""A bounded load run of `ledger serve` (a benchmark, not part of `make test`).

    .venv/bin/python -m tools.http_load --db sqlite:///m.db --clients 50 --seconds 20

starts `ledger serve` on a free port of 127.0.0.1 (one worker, an admin token of its own),
samples user ids from the store, and has N concurrent keep-alive clients (aiohttp) ask
`/history` and `/current` of random users for the given time; then prints requests/s and
latency percentiles per endpoint. `--url http://127.0.0.1:PORT --token T` runs against a
server already running instead. Traffic goes to loopback addresses only, and the run is
bounded in time (at most 300 s) and in requests (`--max-requests`).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import sqlalchemy as sa

LEDGER = str(Path(sys.executable).with_name("ledger"))
MAX_SECONDS = 300.0
ENDPOINTS = {
    "history": "/v1/users/{user}/history",
    "current": "/v1/users/{user}/current",
    "healthz": "/healthz",  # the framework alone, for comparison
}


def _loopback_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"refusing to load {url}: only loopback addresses (127.0.0.0/8, ::1)")


def _sample_users(db: str, n: int) -> list[str]:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT user_id FROM users ORDER BY random() LIMIT :n"), {"n": n}
        ).scalars()
        users = list(rows)
    engine.dispose()
    if not users:
        raise SystemExit(f"no users in {db}")
    return users


def _start_server(db: str, token: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ)
    env["LEDGER_API_TOKENS"] = f"admin:{token}"
    env.setdefault("LEDGER_PHONE_KEY", "http-load-benchmark")
    proc = subprocess.Popen(
        [LEDGER, "serve", "--db", db, "--port", "0"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"serving (http://\S+) ", log.read_text())
        if found:
            try:
                with urllib.request.urlopen(found.group(1) + "/readyz", timeout=5) as response:
                    if response.status == 200:
                        return proc, found.group(1)
            except OSError:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"ledger serve did not become ready:\n{log.read_text()}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux), to report the server's cost per request
    apart from whatever else the machine runs."""
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except Exception:
        return float("nan")


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def _run(
    url: str,
    token: str,
    users: list[str],
    endpoints: list[str],
    clients: int,
    seconds: float,
    max_requests: int,
) -> dict[str, Any]:
    import aiohttp

    latencies: dict[str, list[float]] = {e: [] for e in endpoints}
    errors: dict[str, int] = {e: 0 for e in endpoints}
    statuses: dict[int, int] = {}
    sent = 0
    stop_at = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(7)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while time.monotonic() < stop_at and sent < max_requests:
            sent += 1
            endpoint = endpoints[sent % len(endpoints)]
            path = ENDPOINTS[endpoint].format(user=quote(rng.choice(users), safe=""))
            start = time.perf_counter()
            try:
                async with session.get(url + path, headers=headers) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError:
                errors[endpoint] += 1
                continue
            latencies[endpoint].append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                errors[endpoint] += 1

    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = time.monotonic() - started
    report: dict[str, Any] = {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": sum(len(v) for v in latencies.values()),
        "requests_per_second": round(sum(len(v) for v in latencies.values()) / elapsed, 1),
        "statuses": statuses,
        "endpoints": {},
    }
    for endpoint, values in latencies.items():
        values.sort()
        report["endpoints"][endpoint] = {
            "requests": len(values),
            "requests_per_second": round(len(values) / elapsed, 1),
            "errors": errors[endpoint],
            "p50_ms": round(_percentile(values, 50) * 1000, 2),
            "p90_ms": round(_percentile(values, 90) * 1000, 2),
            "p99_ms": round(_percentile(values, 99) * 1000, 2),
            "max_ms": round((values[-1] if values else float("nan")) * 1000, 2),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="the store (user ids are sampled from it)")
    parser.add_argument("--url", help="a running server (default: start one on --db)")
    parser.add_argument("--token", help="bearer token for --url")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000, help="user ids to sample")
    parser.add_argument("--endpoints", default="history,current", help=f"of {', '.join(ENDPOINTS)}")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, not measured")
    args = parser.parse_args(argv)
    endpoints = [e for e in args.endpoints.split(",") if e]
    if not endpoints or set(endpoints) - set(ENDPOINTS):
        parser.error(f"--endpoints: choose from {', '.join(ENDPOINTS)}")
    seconds = min(args.seconds, MAX_SECONDS)
    users = _sample_users(args.db, args.users)
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            url, token = args.url.rstrip("/"), args.token or ""
        else:
            token = secrets.token_urlsafe(24)
            proc, url = _start_server(args.db, token, Path(tmp) / "serve.log")
        _loopback_only(url)
        try:
            if args.warmup > 0:
                asyncio.run(_run(url, token, users, endpoints, args.clients, args.warmup, 100_000))
            cpu = _cpu_seconds(proc.pid) if proc else float("nan")
            report = asyncio.run(
                _run(url, token, users, endpoints, args.clients, seconds, args.max_requests)
            )
            if proc is not None:
                used = _cpu_seconds(proc.pid) - cpu
                report["server_cpu_seconds"] = round(used, 2)
                report["server_cpu_ms_per_request"] = round(used / report["requests"] * 1000, 3)
            report["load_average"] = os.getloadavg()
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    report["server"] = "ledger serve (uvicorn, 1 worker)" if proc else url
    report["db"] = sa.engine.make_url(args.db).render_as_string(hide_password=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
