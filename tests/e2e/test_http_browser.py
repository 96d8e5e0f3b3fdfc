"""The timeline page in a real headless Chromium (Debian's `chromium` package), driven over
the DevTools protocol: it loads with no console error, fetches nothing but itself, runs no
script, draws one band per history row (superseded ones included), and a screenshot is
written under the test's temporary directory."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers.http import AUDITOR, HOSTILE_USER, LATE_USER, Server, build_store, start_server
from tests.support import Cli

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
HINT = (
    "Chromium is not installed at /usr/bin/chromium: `apt-get install -y chromium` "
    "(Debian's package; .ci/run installs it when missing)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1100,1200",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class DevTools:
    """A minimal DevTools-protocol client: one page, flattened session."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def call(self, method: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        message: dict[str, Any] = {"id": n, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == n:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if event.get("method") == method:
                return event
            self.events.append(event)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(HINT)
    from websockets.sync.client import connect

    profile = tmp_path_factory.mktemp("chromium-profile")
    log = (profile.parent / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().split()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium did not start (exit {proc.poll()})")
            time.sleep(0.05)
        port, path = active.read_text().split()[:2]
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10) as ws:
            yield _page(DevTools(ws))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _page(devtools: DevTools) -> DevTools:
    """A new page, attached, with the events the tests read enabled."""
    target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
    attached = devtools.call("Target.attachToTarget", targetId=target, flatten=True)
    devtools.session = attached["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        devtools.call(f"{domain}.enable")
    devtools.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Bearer {AUDITOR}"})
    return devtools


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Cli]]:
    tmp = tmp_path_factory.mktemp("http-browser")
    db = f"sqlite:///{tmp / 'ledger.db'}"
    data = build_store(db, tmp)
    server = start_server(db, tmp / "serve.log")
    try:
        yield server, data["cli"]
    finally:
        server.stop()


def _load(devtools: DevTools, url: str) -> list[dict[str, Any]]:
    """Navigate, wait for the load event, and return what the page logged or fetched."""
    devtools.events.clear()
    devtools.call("Page.navigate", url=url)
    devtools.wait_for("Page.loadEventFired")
    devtools.evaluate("1")  # drains events that arrived before the evaluation
    return list(devtools.events)


def _problems(events: list[dict[str, Any]]) -> list[Any]:
    bad = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        console_error = method == "Runtime.consoleAPICalled" and params.get("type") in (
            "error",
            "assert",
        )
        if method == "Runtime.exceptionThrown" or console_error:
            bad.append(params)
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            bad.append(params["entry"])
    return bad


@pytest.mark.parametrize(
    "user", [LATE_USER, "u-000001", HOSTILE_USER], ids=["late", "u1", "hostile"]
)
def test_timeline_page_in_chromium(
    chromium: DevTools, served: tuple[Server, Cli], user: str, tmp_path: Path
) -> None:
    server, cli = served
    url = f"{server.url}/v1/users/{quote(user, safe='')}/timeline"
    events = _load(chromium, url)
    assert _problems(events) == []
    fetched = [
        e["params"]["request"]["url"]
        for e in events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert [u for u in fetched if not u.startswith("data:")] == [url]  # nothing but itself
    rows = cli.json("history", user, "--all")["entries"]
    assert chromium.evaluate("document.querySelectorAll('svg g.band').length") == len(rows)
    assert chromium.evaluate("document.querySelectorAll('svg g.band-superseded').length") == sum(
        1 for r in rows if r["superseded_at"]
    )
    # Each band is drawn where its row says, with a real size on the screen.
    sizes = chromium.evaluate(
        "[...document.querySelectorAll('svg g.band rect')].map(r => r.getBBox().width > 0 "
        "&& r.getBBox().height > 0)"
    )
    assert sizes and all(sizes)
    assert chromium.evaluate("document.querySelectorAll('script').length") == 0
    heading = chromium.evaluate("document.querySelector('h1 code').textContent")
    assert heading == user.replace("\x1b", "\\x1b").replace("\u202e", "\\u202e")
    shot = chromium.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = tmp_path / "timeline.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_late_event_band_sits_under_the_belief_that_replaced_it(
    chromium: DevTools, served: tuple[Server, Cli]
) -> None:
    server, _ = served
    _load(chromium, f"{server.url}/v1/users/{LATE_USER}/timeline.svg")
    boxes = chromium.evaluate(
        "[...document.querySelectorAll('g.band')].map(g => {const b = g.querySelector('rect')"
        ".getBoundingClientRect(); return {cls: g.getAttribute('class'), "
        "rule: g.dataset.rule, top: b.top, bottom: b.bottom, left: b.left, right: b.right}})"
    )
    old = [b for b in boxes if "band-superseded" in b["cls"]]
    new = [b for b in boxes if "band-current" in b["cls"]]
    assert len(old) == 1 and len(new) == 2
    # Record time goes up: the superseded belief lies below both current bands.
    assert all(old[0]["top"] >= b["bottom"] - 1 for b in new)
    r4, r1 = sorted(new, key=lambda b: b["left"])
    assert (r4["rule"], r1["rule"]) == ("R4", "R1") and r4["right"] <= r1["left"] + 1


# --- the demo user's picture, on a demo store of each kind ----------------------------------

DEMO_USERS = 2000  # enough for `make demo`'s choice: a user moved twice, with a correction


def _demo_store(tmp: Path, record_times: str) -> tuple[str, str]:
    """A store built as `make demo` builds it (the generated stream split 90/10, replayed
    in two runs) and the user the demo shows. `record_times`: "log", the record times the
    generator writes (a real log's: spread over the years); "replay", without them, so each
    replay records everything at its own start (every record time within seconds)."""
    events = tmp / "events.jsonl"
    cli = Cli(f"sqlite:///{tmp / 'ledger.db'}")
    cli.run("generate", "--users", str(DEMO_USERS), "--seed", "2026", "-o", str(events), db=False)
    lines = events.read_text().splitlines()
    if record_times == "replay":
        lines = [json.dumps({k: v for k, v in json.loads(x).items() if k != "recorded_at"})
                 for x in lines]  # fmt: skip
    cut = len(lines) * 9 // 10
    for name, part in (("part-1", lines[:cut]), ("part-2", lines[cut:])):
        path = tmp / f"{name}.jsonl"
        path.write_text("\n".join(part) + "\n")
        cli.run("replay", str(path), expect=None)
    from ledger.cli.demo import user_with_changes

    return cli.db, user_with_changes(cli.db)


@pytest.mark.parametrize("record_times", ["log", "replay"])
def test_the_demo_users_timeline_shows_every_belief_with_no_label_overlapping(
    chromium: DevTools, tmp_path: Path, record_times: str
) -> None:
    """Every superseded row is a band of real height that nothing covers, no two labels
    overlap, and now is marked: on record times a log spreads over the years and on record
    times two replays put within seconds. Before, record time was drawn to scale: on the
    second kind a corrected belief was a 3-pixel sliver under the band that replaced it,
    and event labels ran into each other."""
    db, user = _demo_store(tmp_path, record_times)
    cli = Cli(db)
    rows = cli.json("history", user, "--all")["entries"]
    superseded = [r for r in rows if r["superseded_at"]]
    assert superseded, "the demo prefers a user with a corrected belief"
    svg = tmp_path / "timeline.svg"
    cli.run("timeline", user, "-o", str(svg))
    _load(chromium, svg.as_uri())

    bands = chromium.evaluate(
        """[...document.querySelectorAll('g.band')].map(g => {
            const rect = g.querySelector('rect');
            rect.scrollIntoView({block: 'center'});
            const b = rect.getBoundingClientRect();
            // What is drawn at the middle of the band's box: the band itself, or whatever
            // covers it.
            const hit = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2);
            return {superseded: g.classList.contains('band-superseded'),
                    recorded: g.dataset.recordedAt, from: g.dataset.validFrom,
                    width: b.width, height: b.height, visible: g.contains(hit)};
        })"""
    )
    drawn = [b for b in bands if b["superseded"]]
    assert sorted((b["from"], b["recorded"]) for b in drawn) == sorted(
        (r["valid_from"], r["recorded_at"]) for r in superseded
    )
    for band in drawn:
        assert band["height"] >= 8 and band["width"] >= 4, band
        assert band["visible"], band

    boxes = chromium.evaluate(
        """[...document.querySelectorAll('svg text')].filter(t => t.textContent.trim())
            .map(t => {const b = t.getBoundingClientRect();
                       return {text: t.textContent, left: b.left + scrollX, top: b.top + scrollY,
                               right: b.right + scrollX, bottom: b.bottom + scrollY};})"""
    )
    assert len(boxes) > 20
    overlapping = [
        (a["text"], b["text"])
        for a, b in itertools.combinations(boxes, 2)
        if min(a["right"], b["right"]) - max(a["left"], b["left"]) > 0.5
        and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > 0.5
    ]
    assert overlapping == []

    now = chromium.evaluate(
        "[...document.querySelectorAll('g.mark-now text')].map(t => t.textContent)"
    )
    assert len(now) == 1 and now[0].startswith("now ")
    # Every record time a row starts or ends at is a step of its own, labelled.
    steps = set(chromium.evaluate(
        "[...document.querySelectorAll('text.y-tick')].map(t => t.dataset.recordedAt)"
    ))  # fmt: skip
    assert {r["recorded_at"] for r in rows} | {r["superseded_at"] for r in superseded} <= steps
    shot = chromium.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (tmp_path / f"demo-timeline-{record_times}.png").write_bytes(base64.b64decode(shot["data"]))
