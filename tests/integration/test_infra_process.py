"""infra.process against real processes: identity, detached start, SIGTERM/SIGKILL, zombies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from infra import process
from infra.process import ProcessIdentity

ROOT = Path(__file__).parents[2]
SLEEP_CODE = "import time; time.sleep(60)"
IGNORE_TERM_CODE = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)

Spawn = Callable[..., psutil.Popen]


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def _run_helper(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A short-lived Python that imports this repo's infra package, as a separate parent."""
    return subprocess.run(
        _python(code, *args),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """spawn_detached with a log in tmp_path; whatever is still running afterwards is killed."""
    started: list[psutil.Popen] = []

    def _spawn(argv: Sequence[str], log_name: str = "child.log") -> psutil.Popen:
        child = process.spawn_detached(argv, tmp_path / log_name)
        started.append(child)
        return child

    yield _spawn
    for child in started:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


@pytest.fixture
def strays() -> Iterator[list[ProcessIdentity]]:
    """Processes that are not our children; stopped at the end if a test left them running."""
    identities: list[ProcessIdentity] = []
    yield identities
    for identity in identities:
        process.terminate(identity, grace=1.0)  # by identity: never a recycled pid


# --------------------------------------------------------------------------- identity


def test_identify_and_is_alive_for_a_spawned_child(spawn: Spawn) -> None:
    before = time.time()
    child = spawn(_python(SLEEP_CODE))
    identity = process.identity_of(child)
    assert identity.pid == child.pid
    assert identity.cmdline == (sys.executable, "-c", SLEEP_CODE)
    assert before - 2 <= identity.create_time <= time.time() + 2

    found = process.identify(child.pid)
    assert found is not None
    assert process.same_process(found, identity)
    # Popen returns once exec has closed the child's close-on-exec pipe, which the kernel
    # does before it lays out the new program's arguments: on a loaded machine
    # /proc/PID/cmdline can still read empty for a moment (seen under parallel tests).
    deadline = time.monotonic() + 5
    while not found.cmdline and time.monotonic() < deadline:
        time.sleep(0.01)
        found = process.identify(child.pid)
        assert found is not None
    assert found.cmdline == identity.cmdline
    assert process.is_alive(identity)


def test_a_forged_create_time_is_not_alive_and_never_signalled(spawn: Spawn) -> None:
    child = spawn(_python(SLEEP_CODE))
    real = process.identity_of(child)
    for shift in (-3600.0, -2.0, 2.0):
        forged = ProcessIdentity(real.pid, real.create_time + shift, real.cmdline)
        assert not process.is_alive(forged)
        assert not process.same_process(forged, real)
        assert process.terminate(forged, grace=0.1) is False
    assert child.poll() is None, "terminate() signalled a process by pid alone"
    assert process.is_alive(real)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux procfs")
def test_boot_ticks_convert_to_the_create_time_psutil_reports(spawn: Spawn) -> None:
    child = spawn(_python(SLEEP_CODE))
    # Field 22 of /proc/<pid>/stat, counted after the parenthesised command name.
    ticks = int(Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    converted = ProcessIdentity(child.pid, process.create_time_from_boot_ticks(ticks))
    assert process.is_alive(converted)
    assert abs(converted.create_time - child.create_time()) < 0.02
    with pytest.raises(ValueError):
        process.create_time_from_boot_ticks(-1)


# --------------------------------------------------------------------------- terminate


def test_terminate_stops_a_cooperative_process_with_sigterm(spawn: Spawn) -> None:
    child = spawn(_python(SLEEP_CODE))
    identity = process.identity_of(child)
    started = time.monotonic()
    assert process.terminate(identity, grace=10.0) is True
    assert time.monotonic() - started < 5.0, "waited for the grace period despite SIGTERM"
    assert child.returncode == -signal.SIGTERM
    assert not process.is_alive(identity)
    assert process.terminate(identity, grace=1.0) is False  # already gone: nothing to do


def test_terminate_kills_a_process_that_ignores_sigterm(spawn: Spawn, tmp_path: Path) -> None:
    child = spawn(_python(IGNORE_TERM_CODE), log_name="stubborn.log")
    log = tmp_path / "stubborn.log"
    _wait_for(lambda: "ready" in log.read_text())  # the handler is installed
    identity = process.identity_of(child)
    started = time.monotonic()
    assert process.terminate(identity, grace=0.5) is True
    assert time.monotonic() - started >= 0.5, "SIGKILL came before the grace period ended"
    assert child.returncode == -signal.SIGKILL
    assert not psutil.pid_exists(child.pid), "the killed child was left a zombie"


# --------------------------------------------------------------------------- detached start


def test_spawned_child_runs_in_its_own_session_and_is_reaped(
    spawn: Spawn, tmp_path: Path
) -> None:
    code = (
        "import os, sys; "
        "print(repr(sys.stdin.read())); print('session', os.getsid(0), flush=True); "
        "print('to stderr', file=sys.stderr); sys.exit(3)"
    )
    child = spawn(_python(code))
    identity = process.identity_of(child)
    log = tmp_path / "child.log"
    _wait_for(lambda: "to stderr" in log.read_text())
    lines = log.read_text().splitlines()
    assert lines[0] == "''"  # stdin is /dev/null: nothing to read, no hang
    assert lines[1] == f"session {child.pid}"  # session leader of its own session
    assert child.pid != os.getsid(0)

    # The registry reaps it as soon as anyone asks about it: no zombie stays behind.
    _wait_for(lambda: not process.is_alive(identity))
    assert child.returncode == 3
    assert not psutil.pid_exists(child.pid)
    assert process.identify(child.pid) is None


def test_detached_child_outlives_its_parent_and_can_be_stopped_by_others(
    strays: list[ProcessIdentity], tmp_path: Path
) -> None:
    code = (
        "import json, sys; from infra import process; "
        "child = process.spawn_detached(sys.argv[1:2] + ['-c', sys.argv[2]], sys.argv[3]); "
        "print(json.dumps(process.identity_of(child).to_record()))"
    )
    out = _run_helper(code, sys.executable, SLEEP_CODE, str(tmp_path / "orphan.log"))
    identity = ProcessIdentity.from_record(json.loads(out.stdout))
    strays.append(identity)

    # The parent has exited; the child kept running in its own session.
    assert process.is_alive(identity)
    assert os.getsid(identity.pid) == identity.pid
    # Not our child: it may linger as a zombie until init reaps it, which counts as gone.
    assert process.terminate(identity, grace=10.0) is True
    assert not process.is_alive(identity)
    assert process.identify(identity.pid) is None


def test_a_zombie_is_not_alive_and_not_signalled() -> None:
    # A parent that never reaps its exited child, and sleeps: the child stays a zombie.
    code = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "print(pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen(_python(code), stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            zombie_pid = int(parent.stdout.readline())
            _wait_for(lambda: psutil.Process(zombie_pid).status() == psutil.STATUS_ZOMBIE)
            assert psutil.pid_exists(zombie_pid)  # a bare kill(pid, 0) would call it alive
            assert process.identify(zombie_pid) is None
            assert process.terminate(zombie_pid, grace=0.1) is False
        finally:
            parent.kill()
