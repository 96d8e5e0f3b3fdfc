"""`ledger serve` (the HTTP API) and `ledger timeline` (the bitemporal picture of a user)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli import signals
from ledger.cli.common import (
    DEV_KEY_WARNING,
    DbOption,
    JsonOption,
    check_output,
    emit_json,
    out,
    plain,
    settings,
    writing,
)
from ledger.cli.logs import LogFormatOption, ServiceLog
from ledger.errors import LedgerError, UsageError

UserArgument = Annotated[str, typer.Argument(help="User id, e.g. u-000042.")]

NO_TOKENS_NOTE = (
    "no API tokens configured (LEDGER_API_TOKENS / LEDGER_API_TOKENS_FILE): serving without "
    "authentication on {host} only; every caller reads as an auditor, dead letters need an "
    "admin token"
)


def _log_to_stderr(service_log: ServiceLog, access_log: bool) -> None:
    service_log.configure("%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    # uvicorn's start-up chatter repeats what `serve` prints itself.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if access_log else logging.WARNING)


def _addresses(host: str, port: int) -> list[Any]:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"--host {host!r}: not an address this machine can bind ({exc})") from None


def _is_loopback(infos: list[Any]) -> bool:
    def loop(addr: str) -> bool:
        try:
            return ipaddress.ip_address(addr.split("%")[0]).is_loopback
        except ValueError:
            return False

    return all(loop(info[4][0]) for info in infos)


def _bind(infos: list[Any]) -> socket.socket:
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise LedgerError(f"cannot listen on {_url(addr)}: {exc.strerror or exc}") from None
    return sock


def _url(addr: tuple[Any, ...]) -> str:
    host, port = addr[0], addr[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    db: DbOption = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Anything but a loopback address needs API tokens.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port).")
    ] = 8080,
    tokens_file: Annotated[
        str | None,
        typer.Option(
            "--tokens-file",
            help="File of ROLE:TOKEN lines (roles: metrics, auditor, admin); adds to "
            "$LEDGER_API_TOKENS. Default: $LEDGER_API_TOKENS_FILE.",
            show_default=False,
        ),
    ] = None,
    metrics_access: Annotated[
        str | None,
        typer.Option(
            "--metrics-access",
            help="Who may read /metrics: 'token' (any token; the 'metrics' role suffices) or "
            "'open'.  [default: $LEDGER_API_METRICS, else token]",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            min=1,
            max=64,
            help="Database queries run at once (one worker process; more threads only "
            "contend for the interpreter).",
        ),
    ] = 4,
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            min=1,
            max=65536,
            help="Open connections at most; beyond it a new connection closes the oldest "
            "one still sending its request head, or is refused with 503 when all are busy.  "
            "[default: half the process's file descriptors, 64 to 4096]",
            show_default=False,
        ),
    ] = None,
    head_timeout: Annotated[
        float,
        typer.Option(
            "--head-timeout",
            min=0.1,
            max=3600,
            help="Seconds a client has to send a request's line and headers (16 KiB, 100 "
            "fields at most) after connecting or after the previous response.",
        ),
    ] = 10.0,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request on stderr.")
    ] = False,
    allow_dev_key: Annotated[
        bool,
        typer.Option(
            "--allow-dev-key",
            help="Run even though LEDGER_PHONE_KEY is not set (for development only).",
        ),
    ] = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Serve the ledger over HTTP: the questions of current, history and explain, the
    timeline picture, stats, dead letters (admin), health and Prometheus metrics.

    Read-only on the store; OpenAPI at /openapi.json, interactive docs at /docs. Callers
    send a bearer token whose role is auditor (users, stats) or admin (also dead letters);
    without any token configured the server listens on loopback only and says so. Starts
    even while the database is down (then /readyz answers 503 until it is back).
    SIGTERM/SIGINT finish the requests under way and exit 0.

    Refuses to start (exit 2) without LEDGER_PHONE_KEY unless --allow-dev-key is given.

    --log-format json writes every log line (uvicorn's too), notice and the error that
    stops it as one JSON object (time, level, logger, message and fields; an access log
    line has client, method, path, http_version and status)."""
    # A stop asked for while starting is kept and honoured once the server runs.
    signals.hold()
    service_log = ServiceLog(log_format, "ledger.serve")
    if service_log.json:
        # Configured first: in JSON, even a setting refused below is a JSON line.
        _log_to_stderr(service_log, access_log)
    with service_log.errors():
        _serve(
            service_log,
            settings(db_url=db, api_tokens_file=tokens_file, api_metrics_access=metrics_access),
            host=host,
            port=port,
            threads=threads,
            access_log=access_log,
            allow_dev_key=allow_dev_key,
            limits=(max_connections, head_timeout),
        )
    raise typer.Exit(0)


def _serve(
    service_log: ServiceLog,
    s: Any,
    *,
    host: str,
    port: int,
    threads: int,
    access_log: bool,
    allow_dev_key: bool,
    limits: tuple[int | None, float],
) -> None:
    from ledger.http.auth import load_access
    from ledger.store.readonly import open_reader, readiness

    if s.uses_dev_phone_key and not allow_dev_key:
        raise UsageError(
            "LEDGER_PHONE_KEY is not set: refusing to serve a ledger whose phone hashes use "
            "the public development key; set LEDGER_PHONE_KEY (or pass --allow-dev-key for "
            "development)"
        )
    if s.uses_dev_phone_key:
        service_log.say(DEV_KEY_WARNING, logging.WARNING)
    access, warnings = load_access(s.api)
    infos = _addresses(host, port)
    if access.open and not _is_loopback(infos):
        raise UsageError(
            f"refusing to serve on {host} without API tokens: anyone who reaches it could "
            "read every user; set LEDGER_API_TOKENS or LEDGER_API_TOKENS_FILE, or listen on "
            "127.0.0.1"
        )
    engine = open_reader(s.db_url, pool_size=threads)
    if not service_log.json:
        _log_to_stderr(service_log, access_log)
    for line in warnings:
        service_log.say(line, logging.WARNING)
    state = readiness(engine)
    if not state.ready:
        service_log.say(f"warning: not ready yet: {state.problem}", logging.WARNING)
    sock = _bind(infos)
    url = _url(sock.getsockname())
    service_log.say(f"serving {url} (API docs at {url}/docs)", url=url, docs=f"{url}/docs")
    if access.open:
        service_log.say(NO_TOKENS_NOTE.format(host=sock.getsockname()[0]), logging.WARNING)
    _run(engine, access, sock, access_log, threads, limits)
    engine.dispose()


def _run(
    engine: Any,
    access: Any,
    sock: socket.socket,
    access_log: bool,
    threads: int,
    limits: tuple[int | None, float],
) -> None:
    import uvicorn

    from ledger.http.app import create_app
    from ledger.http.limits import HEAD_BYTES, default_max_connections, protocol

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        loop = "asyncio"
    config = uvicorn.Config(
        create_app(engine, access, threads=threads),
        loop=loop,
        # h11, not httptools: its parser bounds a request's head (httptools took a 200 MiB
        # header whole), and `protocol` adds the deadline and the connection cap.
        http=protocol(limits[0] or default_max_connections(), limits[1]),
        h11_max_incomplete_event_size=HEAD_BYTES,
        lifespan="on",
        log_config=None,
        access_log=access_log,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)

    def stop(_signum: int, _frame: object) -> None:
        server.should_exit = True

    # A signal held since start-up stops the server as soon as it has started. uvicorn
    # installs its own handlers while it runs, then restores this one and raises the signal
    # into it again: so a SIGTERM ends in exit 0, not in death by the signal.
    signals.hand_over(stop)
    server.run(sockets=[sock])


def timeline(
    user: UserArgument,
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="FILE.svg (the picture) or FILE.html (a page with it)."
        ),
    ],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Draw USER's bitemporal timeline: valid time across, record time up.

    One band per history row, from valid_from to valid_to, standing from recorded_at to
    superseded_at, coloured by rulebook and labelled with policy and rule; a belief a
    late event corrected shows under the one that replaced it. Events are ticks on the
    valid-time axis; sign-up and terms bindings are marked. The file is self-contained."""
    from ledger.queries.timeline import timeline as query_timeline
    from ledger.render.timeline import render_svg
    from ledger.render.timeline_page import render_html
    from ledger.store.database import open_engine

    suffix = output.suffix.lower()
    if suffix not in (".svg", ".html", ".htm"):
        raise UsageError(f"-o {str(output)!r}: name a .svg or .html file")
    check_output(output)
    data = query_timeline(open_engine(settings(db_url=db).db_url, create=False), user)
    content = render_svg(data) if suffix == ".svg" else render_html(data)
    with writing(output):
        output.write_text(content, encoding="utf-8")
    summary = {
        "user_id": user,
        "output": str(output),
        "rows": len(data.rows),
        "superseded": sum(1 for r in data.rows if r.superseded_at is not None),
        "events": len(data.events),
    }
    if as_json:
        emit_json(summary)
    else:
        out.print(
            plain(
                f"wrote {output}: {summary['rows']} history rows ({summary['superseded']} "
                f"superseded), {summary['events']} events"
            )
        )
