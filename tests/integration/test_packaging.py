"""The ledger as it is deployed: a wheel installed into a clean virtual environment runs the
demo and the commands outside the repository (the schemas, policies and migrations ship
inside it, the plugins join through their entry points), and the container files
(infra/Dockerfile, infra/compose.yaml) describe that image and the whole pipeline: what
can be checked here without a container registry."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ledger.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _clean_env(**extra: str) -> dict[str, str]:
    """An environment that knows nothing of the repository or of the test run."""
    drop = ("LEDGER_", "PYTHON", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def _run(args: list[str | Path], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_clean_env(**extra),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh virtual environment with the built wheel installed."""
    tmp = tmp_path_factory.mktemp("packaging")
    dist = tmp / "dist"
    # As infra/Dockerfile builds it: the package alone, its dependencies from their wheels.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT], tmp)
    [wheel] = dist.glob("jurisdiction_ledger-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert f"jurisdiction_ledger-{VERSION}.dist-info/entry_points.txt" in names
    assert "ledger/_schemas/AccountEvent.avsc" in names
    assert {n for n in names if n.startswith("ledger/_schemas/policies/")}
    assert {n for n in names if n.startswith("ledger/store/migrations/versions/0004")}
    assert not {n for n in names if n.startswith("tests/") or n.startswith("tools/")}
    assert "infra/Dockerfile" not in names and "infra/compose.yaml" not in names
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp)
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], tmp)
    return venv / "bin"


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_outside_the_repository(
    installed: Path, tmp_path: Path
) -> None:
    where = _run(
        [
            installed / "python",
            "-c",
            "import importlib.metadata as m, ledger, ledger.resources as r, ledger.http.app as h;"
            "print(ledger.__file__); print(r.schemas_dir()); print(h.package_version());"
            "print(m.version('jurisdiction-ledger'))",
        ],
        tmp_path,
    ).stdout.splitlines()
    site = str(installed.parent / "lib")
    assert where[0].startswith(site) and where[1].startswith(site), where
    assert where[2:] == [VERSION, VERSION]
    demo = _run([installed / "python", "-m", "ledger.cli.demo", "--users", "300"], tmp_path)
    assert "demo finished" in demo.stdout
    assert (tmp_path / "demo-out" / "ledger.db").is_file()


@pytest.mark.slow
def test_the_installed_commands_work_outside_the_repository(
    installed: Path, tmp_path: Path
) -> None:
    ledger = installed / "ledger"
    key = {"LEDGER_PHONE_KEY": "packaging-test-key"}
    _run([ledger, "generate", "--users", "40", "-o", "events.jsonl"], tmp_path)
    replay = [ledger, "replay", "events.jsonl", "--json"]
    replayed = json.loads(_run(replay, tmp_path, **key).stdout)
    assert replayed["applied"] > 0 and (tmp_path / "ledger.db").is_file()
    history = json.loads(_run([ledger, "history", "u-000001", "--json"], tmp_path).stdout)
    assert history["entries"]
    verified = json.loads(_run([ledger, "verify", "--json"], tmp_path, **key).stdout)
    assert verified["ok"] and verified["phone_key"] == "matches"
    assert "0 errors" in _run([ledger, "policy", "check"], tmp_path).stdout
    upgraded = json.loads(_run([ledger, "db", "upgrade", "--json"], tmp_path).stdout)
    assert upgraded["from"] == upgraded["to"]
    # The deployable parts join the command through their entry points.
    for plugin in ("consume", "broker", "bench"):
        assert "Usage: ledger" in _run([ledger, plugin, "--help"], tmp_path).stdout
    assert "complete" in _run([ledger, "--show-completion", "bash"], tmp_path).stdout


# --- the container files ---------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of infra/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "infra" / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_the_image_runs_the_ledger_as_an_unprivileged_user_from_the_package() -> None:
    steps = _dockerfile()
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG")
    python = args["PYTHON_VERSION"]
    bases = [a.replace("${PYTHON_VERSION}", python) for i, a in steps if i == "FROM"]
    assert bases and all(re.fullmatch(r"python:3\.1[1-9]-slim( AS \w+)?", b) for b in bases)
    assert tuple(map(int, python.split("."))) >= (3, 11)
    final = [i for i, (instruction, _) in enumerate(steps) if instruction == "FROM"][-1]
    last_stage = steps[final:]
    users = [a for i, a in last_stage if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert ("ENTRYPOINT", '["ledger"]') in last_stage
    # What it copies is in the repository and not kept out of the build context.
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for instruction, rest in steps:
        if instruction == "COPY" and not rest.startswith("--from"):
            *sources, _target = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source not in ignored, source


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text())


def test_compose_runs_the_whole_pipeline_with_the_ledger_s_image() -> None:
    services = _compose()["services"]
    assert {"kafka", "kafka-init", "postgres", "ledger-consume", "ledger-serve"} <= set(services)
    for name in ("ledger-migrate", "ledger-consume", "ledger-serve"):
        build = services[name]["build"]
        assert (ROOT / "infra" / build["context"] / build["dockerfile"]).resolve() == (
            ROOT / "infra" / "Dockerfile"
        )
    assert services["ledger-migrate"]["command"] == ["db", "upgrade"]
    for name in ("ledger-consume", "ledger-serve"):
        depends = services[name]["depends_on"]
        assert depends["ledger-migrate"]["condition"] == "service_completed_successfully"
    assert services["ledger-consume"]["depends_on"]["kafka-init"]["condition"] == (
        "service_completed_successfully"
    )
    environment = services["ledger-consume"]["environment"]
    assert environment["LEDGER_BOOTSTRAP"] == "kafka:19092"
    assert environment["LEDGER_DB"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in environment["LEDGER_DB"]
    # The key is the operator's, never a value written in the file.
    assert environment["LEDGER_PHONE_KEY"] == "${LEDGER_PHONE_KEY:-}"


@pytest.mark.parametrize("name", ["ledger-migrate", "ledger-consume", "ledger-serve"])
def test_each_ledger_service_s_command_is_one_the_ledger_takes(name: str) -> None:
    service = _compose()["services"][name]
    command = service["command"]
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, (command, result.output)
    health = service.get("healthcheck")
    if health is not None:
        # It asks the port the command listens on.
        asked = re.search(r"127\.0\.0\.1:(\d+)/", " ".join(health["test"]))
        assert asked is not None, health
        assert any(arg.endswith(f"port={asked.group(1)}") for arg in command), name
