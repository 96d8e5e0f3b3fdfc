"""The services' logs for machines: `ledger consume` and `ledger serve` with `--log-format
json` write one JSON object per line (time, level, logger, message and the record's
fields), their notices and the error that stops them included, as services run under a log
shipper expect. Before, they wrote plain text only. Without the flag they write what they
always wrote."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.http import AUDITOR, start_server
from tests.helpers.kafka import GROUP_FLAGS, publish, wait_for
from tests.support import Cli
from tools.common import LEDGER

NO_BROKER = "127.0.0.1:1"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_KAFKA_BOOTSTRAP_TIMEOUT_MS"] = "1000"
    env.update(extra)
    return env


def records(text: str) -> list[dict[str, Any]]:
    """Every line of a log, each of which must be one JSON object as documented."""
    out = []
    for line in text.splitlines():
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), line
        datetime.fromisoformat(record["time"])
        assert record["level"] in ("debug", "info", "warning", "error", "critical"), line
        assert line.isascii()  # whatever a message quotes, it cannot drive a terminal
        out.append(record)
    return out


def consume(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGER, "consume", *args], capture_output=True, text=True, env=_env(**env), timeout=120
    )


def test_consume_logs_json_to_its_last_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    done = consume(
        "--log-format", "json", "--bootstrap", NO_BROKER, "--allow-dev-key",
        "--metrics-port", "0", "--db", db,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    logged = records(done.stderr)
    warning, metrics = logged[0], logged[1]
    assert warning["level"] == "warning" and "LEDGER_PHONE_KEY is not set" in warning["message"]
    assert metrics["logger"] == "ledger.consume"
    assert metrics["metrics_url"].startswith("http://127.0.0.1:")
    assert metrics["metrics_url"].endswith("/metrics")
    assert logged[-1] == {
        **logged[-1],
        "level": "error",
        "logger": "ledger.consume",
        "message": f"cannot reach Kafka at {NO_BROKER} (no broker answered)",
        "exit_code": 1,
    }
    # A setting refused before anything runs is a JSON line too, with its exit status.
    usage = consume("--log-format", "json", "--db", db)
    assert usage.returncode == 2
    [refused] = records(usage.stderr)
    assert refused["exit_code"] == 2 and "no Kafka bootstrap servers" in refused["message"]


def test_consume_logs_text_by_default(tmp_path: Path) -> None:
    done = consume(
        "--bootstrap", NO_BROKER, "--allow-dev-key", "--db", f"sqlite:///{tmp_path}/x.db"
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"ledger: error: cannot reach Kafka at {NO_BROKER} (no broker answered)"
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(done.stderr.splitlines()[0])


@pytest.mark.kafka
def test_consume_logs_its_progress_with_fields(
    kafka_broker: Any, kafka_topic: str, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    cli = Cli(db)
    stream = tmp_path / "events.jsonl"
    cli.run("generate", "--users", "20", "-o", str(stream), db=False)
    sent = publish(cli, kafka_broker.bootstrap, kafka_topic, stream)
    log = tmp_path / "consume.log"
    cmd = [
        LEDGER, "consume", "--bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic,
        "--group", "json-logs", "--db", db, "--log-format", "json", *GROUP_FLAGS,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=_env())
    try:
        wait_for(db, kafka_topic, sent)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    logged = records(log.read_text())
    by_message = {r["message"].split(" ")[0]: r for r in logged if r["logger"] == "ledger.consume"}
    assert by_message["consuming"]["topic"] == kafka_topic
    assert by_message["consuming"]["group"] == "json-logs"
    progress = [r for r in logged if r["message"].startswith("applied ")]
    assert progress and progress[-1]["applied"] + progress[-1]["duplicates"] == sent
    assert set(progress[-1]["lag"]) <= {str(p) for p in range(6)}
    assert logged[-1]["message"] == "stopped"


def test_serve_logs_json_with_uvicorn_s_access_log(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    cli = Cli(db)
    stream = tmp_path / "events.jsonl"
    cli.run("generate", "--users", "5", "-o", str(stream), db=False)
    cli.run("replay", str(stream))
    log = tmp_path / "serve.log"
    server = start_server(db, log, args=("--log-format", "json", "--access-log"))
    try:
        assert server.get("/v1/users/u-000001/history", AUDITOR)[0] == 200
        assert server.get("/v1/users/%1B%5B2J/history", AUDITOR)[0] == 404
    finally:
        assert server.stop() == 0
    logged = records(log.read_text())
    [serving] = [r for r in logged if r["message"].startswith("serving ")]
    assert serving["url"] == server.url and serving["logger"] == "ledger.serve"
    access = [r for r in logged if r["logger"] == "uvicorn.access"]
    assert {(r["method"], r["path"], r["status"]) for r in access} >= {
        ("GET", "/v1/users/u-000001/history", 200),
        ("GET", "/v1/users/%1B%5B2J/history", 404),  # as asked: percent-encoded
    }
    assert "\x1b" not in log.read_text()


def test_serve_refuses_in_json_too(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    done = subprocess.run(
        [LEDGER, "serve", "--log-format", "json", "--db", f"sqlite:///{missing}"],
        capture_output=True,
        text=True,
        env=_env(LEDGER_PHONE_KEY="a-key"),
        timeout=60,
    )
    assert done.returncode == 1
    [refused] = records(done.stderr)
    assert refused["exit_code"] == 1 and "no such file" in refused["message"]
    assert not missing.exists()
