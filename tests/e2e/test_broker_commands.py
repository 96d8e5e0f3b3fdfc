"""`ledger broker start|status|stop` and `ledger topics create` as an operator runs them:
the lifecycle with JSON output, errors in one line on stderr, and a broker that outlives
the command that started it. The launcher and clients underneath are in
tests/integration/test_infra_broker.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra import launcher
from infra.cli import broker_app
from ledger.cli.admin import topics_app
from tests.helpers.kafka import plant_pid_file


@pytest.mark.kafka
def test_cli_start_status_topics_stop(tmp_path: Path) -> None:
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path)]

    started = runner.invoke(broker_app, ["start", *state])
    assert started.exit_code == 0, started.output
    try:
        status = runner.invoke(broker_app, ["status", "--json", *state])
        assert status.exit_code == 0, status.output
        [info] = json.loads(status.stdout)
        assert info["alive"]
        # Commands to paste, whole: before, `stop it: broker stop …` lacked `ledger`.
        lines = started.stdout.splitlines()
        assert f"use it:  export LEDGER_BOOTSTRAP={info['bootstrap']}" in lines
        assert f"stop it: ledger broker stop --state-dir {tmp_path}" in lines

        created = runner.invoke(
            topics_app,
            ["create", "--json", "--partitions", "6"],
            env={"LEDGER_BOOTSTRAP": info["bootstrap"]},
        )
        assert created.exit_code == 0, created.output
        assert json.loads(created.stdout)["created"] == ["account-events", "account-events.dlq"]
        again = runner.invoke(topics_app, ["create", "--bootstrap", info["bootstrap"]])
        assert again.exit_code == 0, again.output
        # Before, "(1 partitions)".
        assert again.stdout.splitlines() == [
            "account-events: already existed (6 partitions)",
            "account-events.dlq: already existed (1 partition)",
        ]
    finally:
        stopped = runner.invoke(broker_app, ["stop", *state])
    assert stopped.exit_code == 0, stopped.output
    assert "Stopped" in stopped.stdout
    status = runner.invoke(broker_app, ["status", "--json", *state])
    assert json.loads(status.stdout) == []


def test_cli_errors_are_one_line_on_stderr(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"LEDGER_BOOTSTRAP": ""}
    missing = runner.invoke(topics_app, ["create"], env=env)
    assert missing.exit_code == 2
    assert missing.stderr.startswith("ledger: error: no Kafka bootstrap servers")
    assert missing.stderr.count("\n") == 1

    unreachable = runner.invoke(
        topics_app, ["create", "-b", "127.0.0.1:1", "--timeout", "1"], env=env
    )
    assert unreachable.exit_code == 1
    assert unreachable.stderr.startswith("ledger: error: cannot create topics on 127.0.0.1:1")
    assert unreachable.stderr.count("\n") == 1

    plant_pid_file(tmp_path, 5, pid=999_999_999)
    plant_pid_file(tmp_path, 6, pid=999_999_999)
    several = runner.invoke(broker_app, ["stop", "--state-dir", str(tmp_path)])
    assert several.exit_code == 1
    assert "several brokers" in several.stderr


@pytest.mark.kafka
def test_broker_survives_the_cli_process(tmp_path: Path) -> None:
    """`broker start` in a separate process returns while the broker keeps running."""
    code = "from infra.cli import broker_app; broker_app()"
    cmd = [sys.executable, "-c", code, "start", "--json", "--state-dir", str(tmp_path)]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    info = json.loads(out.stdout)
    try:
        assert [b.alive for b in launcher.status(tmp_path)] == [True]
    finally:
        assert launcher.stop(info["port"], state_dir=tmp_path) is True
