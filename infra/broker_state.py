"""What a local broker leaves in its state directory, and whether a recorded pid is still
that broker.

Every broker ``infra.launcher`` starts is described by a pid file
``<state_dir>/broker-<PORT>.pid`` (JSON) next to its log ``<state_dir>/broker-<PORT>.log``.
A pid file vouches for its pid only while that pid is still the Tansu broker it recorded:
the same process (start time, when recorded), running ``broker`` on the recorded port.
``our_broker`` is that check, and the launcher signals nothing that does not pass it, so a
recycled pid is never killed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from infra import process

__all__ = [
    "HOST",
    "log_path",
    "log_tail",
    "our_broker",
    "pid_files",
    "pid_path",
    "read_pid_file",
    "write_json_atomically",
]

HOST = "127.0.0.1"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def pid_path(state_dir: Path, port: int) -> Path:
    return state_dir / f"broker-{port}.pid"


def log_path(state_dir: Path, port: int) -> Path:
    return state_dir / f"broker-{port}.log"


def pid_files(state_dir: Path) -> list[Path]:
    return sorted(Path(state_dir).glob("broker-*.pid"))


def read_pid_file(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    # A non-integer pid or port is a corrupt file: treat it like an unreadable one.
    if not all(type(data.get(key)) is int for key in ("pid", "port")):
        return None
    return data


def write_json_atomically(path: Path, data: dict[str, object]) -> None:
    # A reader (status in another shell) must never see half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def log_tail(path: Path, lines: int = 5) -> str:
    """Last log lines joined with ' | ' so error messages stay on one line."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    text = _ANSI.sub("", text)
    # Rust panics append a backtrace hint that would crowd out the real error.
    noise = ("stack backtrace:", "note: Some details are omitted")
    tail = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(noise)
    ][-lines:]
    return " | ".join(tail) if tail else "(log is empty)"


def _is_broker_argv(argv: Sequence[str], binary: str, port: int) -> bool:
    """Whether *argv* is a Tansu broker (our *binary*, if known) listening on *port*."""
    if not argv:
        return False
    exe_matches = (
        os.path.realpath(argv[0]) == os.path.realpath(binary)
        if binary
        else Path(argv[0]).name.startswith("tansu")
    )
    return exe_matches and "broker" in argv and f"tcp://{HOST}:{port}" in argv


def _recorded_identity(record: dict[str, object]) -> process.ProcessIdentity | None:
    """The process the pid file vouches for; None if it records no start time at all.

    ValueError if it records one that cannot be read: such a file cannot vouch for its pid.
    """
    if "create_time" in record:
        return process.ProcessIdentity.from_record(record)
    # Pid files written before this module used psutil record /proc's start time in clock
    # ticks ("start_ticks") instead. A broker started by the old code may still be running
    # and must stay stoppable, so the ticks are converted and checked as strictly as the
    # old code did, rather than trusting such a file on its argv alone. Only a file that
    # has no start time whatsoever (the old code wrote null where /proc was missing) falls
    # back to the argv check alone, which is also all the old code could do there.
    ticks = record.get("start_ticks")
    if ticks is None:
        return None
    if not isinstance(ticks, int):
        raise ValueError(f"start_ticks is not an integer: {ticks!r}")
    pid = int(record["pid"])  # type: ignore[call-overload]
    return process.ProcessIdentity(pid, process.create_time_from_boot_ticks(ticks))


def our_broker(record: dict[str, object]) -> process.ProcessIdentity | None:
    """The running process *record* describes, if its pid still is that broker; else None.

    Checks the start time (when recorded) so a recycled pid never passes, then that the
    process is the recorded Tansu binary running ``broker`` on the recorded port, so a
    pid file naming another program, or another broker, never passes either.
    """
    pid = int(record["pid"])  # type: ignore[call-overload]
    port = int(record["port"])  # type: ignore[call-overload]
    current = process.identify(pid)
    if current is None:
        return None
    try:
        expected = _recorded_identity(record)
    except ValueError:
        return None
    if expected is not None and not process.same_process(current, expected):
        return None
    if not _is_broker_argv(current.cmdline, str(record.get("binary") or ""), port):
        return None
    return current
