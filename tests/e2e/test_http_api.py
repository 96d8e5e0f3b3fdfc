"""`ledger serve` as a real process on a free port, over SQLite and PostgreSQL: every
endpoint answers what the CLI answers, errors are problem details, roles hold, raw phone
numbers stay in the admin's dead-letter endpoint, and a stopped database is a 503."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from ledger.store.schema import events, users
from tests.factories import relocation, signup, terms_accepted
from tests.helpers import postgres
from tests.helpers.http import (
    ADMIN,
    AUDITOR,
    BAD_LINE_PHONE,
    HOSTILE_USER,
    LATE_USER,
    LEDGER,
    METRICS,
    PATHS,
    Server,
    build_store,
    serve_env,
    start_server,
)
from tests.support import Cli

PROBLEM = "application/problem+json"
SAMPLE_USERS = [LATE_USER, "u-000001", "u-000017", "u-000042", HOSTILE_USER]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp(f"http-{request.param}")
    with contextlib.ExitStack() as databases:
        if request.param == "sqlite":
            db = f"sqlite:///{tmp / 'ledger.db'}"
        else:
            request.getfixturevalue("postgres_available")
            db = databases.enter_context(postgres.fresh_database())
        data = build_store(db, tmp)
        server = start_server(db, tmp / "serve.log")
        try:
            yield SimpleNamespace(db=db, server=server, tmp=tmp, **data)
        finally:
            assert server.stop() == 0, server.log.read_text()[-2000:]


def _u(user: str) -> str:
    return quote(user, safe="")


def _problem(server: Server, path: str, status: int, token: str | None = AUDITOR) -> dict:
    got, headers, body = server.get(path, token)
    assert got == status, (path, got, body[:300])
    assert headers["content-type"] == PROBLEM
    doc = json.loads(body)
    assert doc["status"] == status and doc["title"] and doc["type"]
    assert "Traceback" not in body.decode()
    return doc


# --- the same answers as the CLI -----------------------------------------------------------


@pytest.mark.parametrize("user", SAMPLE_USERS, ids=["late", "u1", "u17", "u42", "hostile"])
def test_user_endpoints_answer_as_the_cli(api: SimpleNamespace, user: str) -> None:
    s, cli, u = api.server, api.cli, _u(user)
    assert s.json(f"/v1/users/{u}/history", AUDITOR) == cli.json("history", user)
    assert s.json(f"/v1/users/{u}/history?all=true", AUDITOR) == cli.json("history", user, "--all")
    then = "2026-05-10T00:00:00Z"
    assert s.json(f"/v1/users/{u}/history?believed_at={then}", AUDITOR) == cli.json(
        "history", user, "--believed-at", then
    )
    for at in ("2026-04-15", "2025-01-01T08:00:00+08:00"):
        q = quote(at)
        assert s.json(f"/v1/users/{u}/current?at={q}", AUDITOR) == cli.json(
            "current", user, "--at", at
        )
        assert s.json(f"/v1/users/{u}/current?at={q}&believed_at={then}", AUDITOR) == cli.json(
            "current", user, "--at", at, "--believed-at", then
        )
        assert s.json(f"/v1/users/{u}/explain?at={q}", AUDITOR) == cli.json(
            "explain", user, "--at", at
        )


def test_a_late_event_shows_in_record_time(api: SimpleNamespace) -> None:
    s, u = api.server, _u(LATE_USER)
    then = s.json(f"/v1/users/{u}/current?at=2026-04-15&believed_at=2026-05-10", AUDITOR)
    now = s.json(f"/v1/users/{u}/current?at=2026-04-15", AUDITOR)
    assert (then["assignment"], now["assignment"]) == ("rednote-international", "xhs-domestic")
    rows = s.json(f"/v1/users/{u}/history?all=1", AUDITOR)["entries"]
    assert [(r["rule"], r["superseded_at"]) for r in rows if r["superseded_at"]] == [
        ("R4", "2026-05-20T00:00:00Z")
    ]
    current = s.json(f"/v1/users/{u}/current", AUDITOR)  # at: now
    assert current["assignment"] == "xhs-domestic" and current["rule"] == "R1"


def test_unknown_users_and_malformed_parameters_are_problems(api: SimpleNamespace) -> None:
    s = api.server
    for path in ("current", "history", "explain", "timeline", "timeline.svg"):
        doc = _problem(s, f"/v1/users/nobody/{path}", 404)
        assert doc["title"] == "Unknown user" and "nobody" in doc["detail"]
    # A slash in an id is part of the id, not another route.
    assert "a/b" in _problem(s, "/v1/users/a%2Fb/current", 404)["detail"]
    _problem(s, f"/v1/users/{'x' * 500}/history", 404)
    _problem(s, "/v1/users/%00/history", 404)
    for bad in ("at=soon", "at=2026-13-01", "believed_at=yesterday", "at=2026-04-01T10:00:00"):
        doc = _problem(s, f"/v1/users/{_u(LATE_USER)}/current?{bad}", 422)
        assert doc["title"] == "Malformed time"
    _problem(s, f"/v1/users/{_u(LATE_USER)}/explain?believed_at=9999-12-31T23:59:59-05:00", 422)
    assert _problem(s, f"/v1/users/{_u(LATE_USER)}/history?all=maybe", 422)["errors"]
    assert _problem(s, "/v1/dead-letters?since=never", 422, ADMIN)["title"] == "Malformed time"
    _problem(s, "/v1/dead-letters?limit=0", 422, ADMIN)
    _problem(s, "/v1/no-such-thing", 404)


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def _changes(server: Server, limit: int, token: str = AUDITOR) -> list[dict]:
    """The whole feed over HTTP, a page of `limit` at a time, each asked after the last."""
    got: list[dict] = []
    after = 0
    while True:
        doc = server.json(f"/v1/changes?after={after}&limit={limit}", token)
        assert set(doc) == {"changes", "next_after"} and len(doc["changes"]) <= limit
        assert all(r["seq"] > after for r in doc["changes"])
        if not doc["changes"]:
            assert doc["next_after"] == after
            return got
        assert doc["next_after"] == doc["changes"][-1]["seq"]
        got.extend(doc["changes"])
        after = doc["next_after"]


def test_changes_answer_as_the_cli(api: SimpleNamespace) -> None:
    s, cli = api.server, api.cli
    records = _jsonl(cli.run("changes").stdout)
    # One record per history row: the decision log's, by decision id.
    decisions = _jsonl(cli.run("decisions", "export", "-o", "-").stdout)
    assert sorted(r["decision_id"] for r in records) == sorted(d["decision_id"] for d in decisions)
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs))
    # Every page size covers the same records, without gap or duplicate.
    for limit in (1, 13, 10_000):
        assert _changes(s, limit) == records, limit
    assert s.json("/v1/changes", AUDITOR) == {"changes": records, "next_after": seqs[-1]}
    for after, limit in ((0, 5), (seqs[3], 20), (seqs[-1], 7), (seqs[-1] + 10**6, 1)):
        asked = s.json(f"/v1/changes?after={after}&limit={limit}", AUDITOR)
        assert asked == cli.json("changes", "--after", str(after), "--limit", str(limit))
    # The worked example: the late relocation closed the R4 period and corrected the rest.
    late = [
        (r["kind"], r["rule"], r["valid_from"], r["valid_to"], r["recorded_at"])
        for r in records
        if r["user_id"] == LATE_USER
    ]
    assert late == [
        ("assigned", "R4", "2026-04-01T00:00:00Z", None, "2026-04-01T00:00:01Z"),
        ("assigned", "R4", "2026-04-01T00:00:00Z", "2026-04-10T00:00:00Z", "2026-05-20T00:00:00Z"),
        ("corrected", "R1", "2026-04-10T00:00:00Z", None, "2026-05-20T00:00:00Z"),
    ]
    assert HOSTILE_USER in {r["user_id"] for r in records}  # exact text, JSON-escaped


def test_changes_need_an_auditor_and_well_formed_parameters(api: SimpleNamespace) -> None:
    s = api.server
    status, headers, _ = s.get("/v1/changes")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    _problem(s, "/v1/changes", 401, AUDITOR + "x")
    _problem(s, "/v1/changes", 403, METRICS)
    assert s.json("/v1/changes?limit=1", ADMIN)["changes"]  # admin may do what auditors may
    for bad in (
        "after=-1",
        "after=x",
        "after=",
        f"after={2**63}",
        "limit=0",
        "limit=10001",
        "limit=1.5",
        "limit=-3",
    ):
        doc = _problem(s, f"/v1/changes?{bad}", 422)
        assert doc["title"] == "Invalid request" and doc["errors"], bad
    assert s.json(f"/v1/changes?after={2**63 - 1}", AUDITOR) == {
        "changes": [],
        "next_after": 2**63 - 1,
    }


def test_stats_count_the_store(api: SimpleNamespace) -> None:
    doc = api.server.json("/v1/stats", AUDITOR)
    engine = sa.create_engine(api.db)
    with engine.connect() as conn:
        n_users = conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()
        n_events = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()
        by = dict(
            conn.execute(
                sa.select(users.c.assignment, sa.func.count()).group_by(users.c.assignment)
            ).all()
        )
    engine.dispose()
    assert doc["users"]["total"] == n_users == 52
    assert {k: v for k, v in doc["users"]["by_assignment"].items() if v} == by
    assert doc["events"] == n_events
    assert doc["dead_letters"] == {"total": 1, "unresolved": 1}
    assert sum(src["events"] for src in doc["sources"]) == n_events
    late = [src for src in doc["sources"] if src["last_recorded_at"] == "2026-05-20T00:00:00Z"]
    assert len(late) == 1  # the file that held only the late event


def test_dead_letters_are_for_admins_with_their_raw_input(api: SimpleNamespace) -> None:
    s = api.server
    doc = s.json("/v1/dead-letters", ADMIN)
    assert doc["next_after"] is None and len(doc["items"]) == 1
    item = doc["items"][0]
    assert BAD_LINE_PHONE in item["raw_text"] and "birth_date" in item["reason"]
    export = api.tmp / "export.jsonl"
    api.cli.run("dead-letters", "export", "--all", "-o", str(export))
    assert [json.loads(line) for line in export.open()] == doc["items"]  # the CLI's shape
    assert s.json("/v1/dead-letters?since=2100-01-01", ADMIN)["items"] == []
    assert s.json(f"/v1/dead-letters?after={item['id']}", ADMIN)["items"] == []
    # Roles.
    assert "admin" in _problem(s, "/v1/dead-letters", 403, AUDITOR)["detail"]
    _problem(s, "/v1/dead-letters", 403, METRICS)
    status, headers, _ = s.get("/v1/dead-letters")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    _problem(s, "/v1/dead-letters", 401, "not-a-token-of-this-server")
    _problem(s, f"/v1/users/{_u(LATE_USER)}/history", 401, None)
    _problem(s, f"/v1/users/{_u(LATE_USER)}/history", 401, AUDITOR + "x")
    _problem(s, "/v1/stats", 403, METRICS)


def test_raw_phone_numbers_appear_only_in_dead_letters(api: SimpleNamespace) -> None:
    s = api.server
    bodies: list[str] = []
    for user in SAMPLE_USERS:
        for path in ("history?all=true", "current", "explain", "timeline", "timeline.svg"):
            status, _, body = s.get(f"/v1/users/{_u(user)}/{path}", AUDITOR)
            assert status == 200
            bodies.append(body.decode())
    for path in ("/v1/changes?limit=10000", "/v1/stats", "/metrics", "/readyz", "/openapi.json"):
        bodies.append(s.get(path, AUDITOR)[2].decode())
    phones = api.phones | {BAD_LINE_PHONE}
    # The E.164 forms and the bare digits both.
    needles = phones | {p.lstrip("+") for p in phones}
    assert not [n for n in needles for b in bodies if n in b]
    assert BAD_LINE_PHONE in s.get("/v1/dead-letters", ADMIN)[2].decode()


def test_timeline_svg_draws_every_row_and_escapes_input(api: SimpleNamespace) -> None:
    s = api.server
    for user in (LATE_USER, "u-000001", HOSTILE_USER):
        status, headers, body = s.get(f"/v1/users/{_u(user)}/timeline.svg", AUDITOR)
        assert status == 200 and headers["content-type"].startswith("image/svg+xml")
        assert "default-src 'none'" in headers["content-security-policy"]
        root = ET.fromstring(body)  # well-formed XML whatever the id holds
        bands = [
            g
            for g in root.iter("{http://www.w3.org/2000/svg}g")
            if "band" in g.get("class", "").split()
        ]
        rows = api.cli.json("history", user, "--all")["entries"]
        assert len(bands) == len(rows)
        assert sum("band-superseded" in g.get("class", "") for g in bands) == sum(
            1 for r in rows if r["superseded_at"]
        )
        assert {g.get("data-rule") for g in bands} == {r["rule"] for r in rows}
    text = body.decode()
    assert "<script" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "\\x1b[2J" in text and "\x1b" not in text
    assert "\\u202e" in text
    status, headers, page = s.get(f"/v1/users/{_u(HOSTILE_USER)}/timeline", AUDITOR)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<script" not in page and b"http://" not in page.replace(b"http://www.w3.org", b"")


def test_health_readiness_metrics_and_openapi(api: SimpleNamespace) -> None:
    s = api.server
    assert s.json("/healthz") == {"status": "ok"}
    ready = s.json("/readyz")
    assert ready["status"] == "ready" and ready["schema_revision"]
    _problem(s, "/metrics", 401, None)
    status, headers, body = s.get("/metrics", METRICS)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'route="/v1/users/{user_id}/history",status="200"' in body.decode()
    assert "ledger_http_request_duration_seconds_bucket" in body.decode()
    doc = s.json("/openapi.json")
    assert doc["openapi"].startswith("3.1")
    assert set(PATHS) <= set(doc["paths"])
    status, _, html = s.get("/docs")
    assert status == 200 and b"/static-offline-docs/swagger-ui-bundle.js" in html
    assert b"cdn." not in html  # the docs work without the internet
    assert s.get("/static-offline-docs/swagger-ui-bundle.js")[0] == 200


def test_the_api_states_the_package_s_version(api: SimpleNamespace) -> None:
    """Before, /openapi.json said 1.0.0 whatever the package's version (0.1.0)."""
    assert api.server.json("/openapi.json")["info"]["version"] == version("jurisdiction-ledger")


def test_the_documentation_s_routes_are_counted_by_their_own_names(api: SimpleNamespace) -> None:
    """Before, /openapi.json, /docs and the documentation's files counted as
    route="unmatched", beside the paths nothing serves."""
    s = api.server

    def answered(route: str, status: int) -> float:
        _, _, body = s.get("/metrics", METRICS)
        wanted = f'ledger_http_requests_total{{method="GET",route="{route}",status="{status}"}}'
        lines = [line for line in body.decode().splitlines() if line.startswith(wanted)]
        return float(lines[0].split()[-1]) if lines else 0.0

    asked = {
        "/openapi.json": ("/openapi.json", 200),
        "/docs": ("/docs", 200),
        "/redoc": ("/redoc", 200),
        "/static-offline-docs/swagger-ui.css": ("/static-offline-docs/{path}", 200),
        "/no/such/path": ("unmatched", 404),
    }
    before = {path: answered(*counted) for path, counted in asked.items()}
    for path, (_, status) in asked.items():
        assert s.get(path)[0] == status, path
    for path, counted in asked.items():
        assert answered(*counted) == before[path] + 1, path
    assert answered("unmatched", 200) == 0


# --- starting, stopping, access control ------------------------------------------------------


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("http-small")
    db = f"sqlite:///{tmp / 'ledger.db'}"
    build_store(db, tmp)
    return db


def _serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGER, "serve", *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_refuses_a_public_address_without_tokens(small_store: str) -> None:
    result = _serve("--db", small_store, "--host", "0.0.0.0", "--port", "0", env=serve_env(None))
    assert result.returncode == 2, result.stderr
    assert "refusing to serve on 0.0.0.0 without API tokens" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    # Without LEDGER_PHONE_KEY a service needs --allow-dev-key.
    env = serve_env()
    del env["LEDGER_PHONE_KEY"]
    result = _serve("--db", small_store, "--port", "0", env=env)
    assert result.returncode == 2 and "LEDGER_PHONE_KEY is not set" in result.stderr
    # A store that is not there is not created.
    result = _serve("--db", "sqlite:////nonexistent/dir/x.db", "--port", "0", env=serve_env())
    assert result.returncode == 1 and "no such file" in result.stderr


def test_without_tokens_it_serves_loopback_only_and_says_so(
    small_store: str, tmp_path: Path
) -> None:
    server = start_server(small_store, tmp_path / "serve.log", env=serve_env(None))
    try:
        log = server.log.read_text()
        assert "no API tokens configured" in log and "on 127.0.0.1 only" in log
        assert server.url.startswith("http://127.0.0.1:")
        assert server.json(f"/v1/users/{_u(LATE_USER)}/history")["entries"]
        assert server.get("/metrics")[0] == 200
        _problem(server, "/v1/dead-letters", 403, None)
    finally:
        assert server.stop() == 0  # SIGTERM: a clean stop


def test_tokens_from_a_file(small_store: str, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# roles\nauditor:{'a' * 20}\nadmin:{'b' * 20}  # ops\n")
    tokens.chmod(0o600)
    server = start_server(
        small_store,
        tmp_path / "serve.log",
        env=serve_env(None),
        args=("--tokens-file", str(tokens), "--metrics-access", "open"),
    )
    try:
        assert server.get("/v1/stats", "a" * 20)[0] == 200
        assert server.get("/v1/dead-letters", "a" * 20)[0] == 403
        assert server.get("/v1/dead-letters", "b" * 20)[0] == 200
        assert server.get("/metrics")[0] == 200  # open
        assert "no API tokens" not in server.log.read_text()
    finally:
        server.stop()
    tokens.write_text("auditor:short\n")
    result = _serve("--db", small_store, "--tokens-file", str(tokens), env=serve_env(None))
    assert result.returncode == 2 and "line 1" in result.stderr and "short" not in result.stderr
    result = _serve("--db", small_store, env=serve_env("admin-but-no-role"))
    assert result.returncode == 2 and "ROLE:TOKEN" in result.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_database_that_does_not_answer_is_a_503(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/none"
    server = start_server(url, tmp_path / "serve.log")
    try:
        assert "not ready yet" in server.log.read_text()
        assert server.json("/healthz") == {"status": "ok"}
        doc = _problem(server, "/readyz", 503, None)
        assert doc["title"] == "Database unavailable"
        status, headers, _ = server.get(f"/v1/users/{_u(LATE_USER)}/history", AUDITOR)
        assert status == 503 and headers["retry-after"]
        _problem(server, "/v1/stats", 503)
    finally:
        assert server.stop() == 0


@pytest.mark.postgres
def test_a_stopped_database_is_a_503_until_it_is_back(
    pg_url: str, pg_admin: sa.Engine, tmp_path: Path
) -> None:
    build_store(pg_url, tmp_path)
    server = start_server(pg_url, tmp_path / "serve.log")
    name = sa.engine.make_url(pg_url).database
    path = f"/v1/users/{_u(LATE_USER)}/history?all=true"
    try:
        before = server.json(path, AUDITOR)
        postgres.refuse_connections(pg_admin, name)
        for p in (path, f"/v1/users/{_u(LATE_USER)}/current", "/v1/stats"):
            doc = _problem(server, p, 503)
            assert doc["title"] == "Database unavailable"
        _problem(server, "/readyz", 503, None)
        assert server.json("/healthz") == {"status": "ok"}
        postgres.allow_connections(pg_admin, name)
        deadline = time.monotonic() + 10
        while server.get("/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.json(path, AUDITOR) == before
    finally:
        postgres.allow_connections(pg_admin, name)
        assert server.stop() == 0


# --- the same picture from the command line ----------------------------------------------------


def test_timeline_command_writes_svg_and_html(small_store: str, tmp_path: Path) -> None:
    cli = Cli(small_store)
    svg, html = tmp_path / "late.svg", tmp_path / "late.html"
    summary = cli.json("timeline", LATE_USER, "-o", str(svg))
    assert summary["rows"] == 3 and summary["superseded"] == 1 and summary["events"] == 3
    root = ET.parse(svg).getroot()
    assert root.get("data-rows") == "3"
    cli.run("timeline", HOSTILE_USER, "-o", str(html))
    text = html.read_text()
    assert "<script" not in text and "&lt;script&gt;" in text
    assert cli.run("timeline", LATE_USER, "-o", str(tmp_path / "x.png"), expect=2)
    result = cli.run("timeline", "nobody", "-o", str(svg), expect=1)
    assert "unknown user 'nobody'" in result.stderr
    assert not os.path.exists(tmp_path / "x.png")


def test_the_subject_export_answers_as_the_cli(api: SimpleNamespace, tmp_path: Path) -> None:
    s, cli = api.server, api.cli
    user = "u-000017"
    path = f"/v1/users/{_u(user)}/export"
    # The API only reads: with no recorded digest covering the user, it says so.
    if not cli.json("digest", "list"):
        assert _problem(s, path, 409)["title"] == "Cannot prove the export"
    out = tmp_path / "export.json"
    cli.run("subject", "export", user, "-o", str(out))  # records a fresh digest if needed
    by_cli = json.loads(out.read_text())
    got, headers, body = s.get(path, AUDITOR)
    assert got == 200 and headers["cache-control"] == "no-store"
    by_api = json.loads(body)
    for doc in (by_cli, by_api):
        doc.pop("generated_at")
    assert by_api == by_cli
    # The auditor role, or the admin's; no token is a 401; an unknown user a 404.
    assert s.json(path, ADMIN)["user_id"] == user
    _problem(s, path, 401, token=None)
    _problem(s, path, 403, METRICS)
    assert _problem(s, "/v1/users/nobody/export", 404)["title"] == "Unknown user"


# --- an erased user ------------------------------------------------------------------------


def test_an_erased_user_is_gone_from_every_answer(db_url: str, tmp_path: Path) -> None:
    """docs/data-protection.md: after `ledger erase`, history/current/explain/timeline/export
    answer 410 Gone with the erased line; the changefeed lists only the `erased` record;
    the dead letters naming the user are deleted (nothing of them in `dead-letters
    export`), and `decisions export` holds none of their decisions."""
    cli = Cli(db_url)
    user, other = "u-gone", "u-stays"
    lines = [
        signup(1, user, at="2026-03-01T00:00:00Z", recorded_at="2026-03-01T00:00:01Z"),
        relocation(
            2, user, at="2026-04-01T00:00:00Z", country="US", recorded_at="2026-04-01T00:00:01Z"
        ),
        signup(3, other, at="2026-03-02T00:00:00Z", recorded_at="2026-03-02T00:00:01Z"),
        # Dead letters naming each user: terms no policy knows.
        terms_accepted(4, user, at="2026-05-01T00:00:00Z", version="v-none"),
        terms_accepted(5, other, at="2026-05-01T00:00:00Z", version="v-none"),
    ]
    stream = tmp_path / "e.jsonl"
    stream.write_text("".join(json.dumps(x) + "\n" for x in lines))
    cli.run("replay", str(stream), "--announce", expect=3)
    cli.run("subject", "export", user, "-o", str(tmp_path / "before.json"))
    report = cli.json("erase", user, "--request-id", "DSR-9", "--yes")
    assert report["deleted"]["dead_letters"] == 1
    server = start_server(db_url, tmp_path / "serve.log")
    try:
        for what in ("current", "history", "explain", "timeline", "timeline.svg", "export"):
            got, headers, body = server.get(f"/v1/users/{user}/{what}", ADMIN)
            assert got == 410 and headers["content-type"] == PROBLEM, (what, got, body[:200])
            doc = json.loads(body)
            assert doc["title"] == "Erased user" and doc["request_id"] == "DSR-9"
            assert doc["erased_at"] == report["erased_at"]
            assert doc["detail"] == f"{user} erased at {report['erased_at']} (request DSR-9)"
        assert server.json(f"/v1/users/{other}/current", AUDITOR)["user_id"] == other
        feed = [c for c in server.json("/v1/changes", AUDITOR)["changes"] if c["user_id"] == user]
        assert [c["kind"] for c in feed] == ["erased"] and feed[0]["assignment"] is None
        dead = server.json("/v1/dead-letters", ADMIN)
        assert user not in json.dumps(dead) and other in json.dumps(dead)
        # What the erasure kept: for the admin only; nothing, without retention.
        assert server.get(f"/v1/users/{user}/retained", AUDITOR)[0] == 403
        kept = server.json(f"/v1/users/{user}/retained", ADMIN)
        assert (kept["request_id"], kept["retained"]) == ("DSR-9", [])
        assert server.get(f"/v1/users/{other}/retained", ADMIN)[0] == 404
    finally:
        assert server.stop() == 0, server.log.read_text()[-2000:]
    exported = tmp_path / "dead.jsonl"
    cli.run("dead-letters", "export", "-o", str(exported))
    text = exported.read_text()
    assert user not in text and "v-none" in text  # the other user's dead letter stays
    decisions = tmp_path / "decisions.jsonl"
    cli.run("decisions", "export", "-o", str(decisions))
    rows = [json.loads(x) for x in decisions.read_text().splitlines()]
    assert rows and all(r["user_id"] == other for r in rows)
    answer = cli.run("subject", "export", user, "-o", str(tmp_path / "after.json")).stdout
    assert answer.strip() == f"{user} erased at {report['erased_at']} (request DSR-9)"
    assert not (tmp_path / "after.json").exists()
