"""Supervise local child processes safely: identify them, start them detached, stop them.

Built on psutil so the same code serves Linux and macOS (no hand parsing of ``/proc``,
no ``ps`` fallback). Knows nothing about what the processes are: callers
decide whether a process is "theirs" by its command line; this module makes sure
that a pid is only ever trusted, and signalled, together with its start time, because
pids are recycled and a bare pid in a file may name an unrelated process by now.

Typical use::

    child = spawn_detached(argv, log_path)
    identity = identity_of(child)          # persist identity.to_record() somewhere
    ...
    identity = ProcessIdentity.from_record(record)
    if is_alive(identity):
        terminate(identity, grace=10.0)
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from ledger.errors import LedgerError

__all__ = [
    "CREATE_TIME_SLACK",
    "ProcessError",
    "ProcessIdentity",
    "create_time_from_boot_ticks",
    "identify",
    "identity_of",
    "is_alive",
    "same_process",
    "spawn_detached",
    "terminate",
]

# psutil's create_time() is "seconds since boot" plus the boot time, and the boot time
# is a whole second re-derived from the wall clock on every call (/proc/stat btime on
# Linux): a small clock step between recording and checking shifts it by one second,
# and an exact comparison would then disown a live process for good. Reusing a pid
# takes the kernel a full wrap around the pid space, which in practice takes far longer
# than a second, so the slack does not let a recycled pid pass for the original.
CREATE_TIME_SLACK = 1.05

# How long to wait for a process to vanish after SIGKILL before giving up: SIGKILL
# cannot be caught, so only a process stuck in the kernel (uninterruptible I/O) is
# still there after this.
KILL_TIMEOUT = 5.0

# Handles of the children this interpreter started. Holding them lets us reap an exited
# child (otherwise it stays a zombie that still "exists" for signals and pid lookups)
# and avoids subprocess's "still running" ResourceWarning while they are alive.
_CHILDREN: dict[int, psutil.Popen] = {}


class ProcessError(LedgerError, RuntimeError):
    """A process could not be signalled or did not exit; the message is one line."""


@dataclass(frozen=True)
class ProcessIdentity:
    """A pid plus the process's start time: unlike a bare pid, never names another process."""

    pid: int
    create_time: float
    cmdline: tuple[str, ...] = ()

    def to_record(self) -> dict[str, object]:
        """JSON-ready dict; ``from_record`` reads it back (extra keys are ignored)."""
        return {"pid": self.pid, "create_time": self.create_time, "cmdline": list(self.cmdline)}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> ProcessIdentity:
        """Inverse of ``to_record``; ValueError when pid or create_time is missing or malformed."""
        pid = record.get("pid")
        create_time = record.get("create_time")
        cmdline = record.get("cmdline") or []
        # bool is an int subclass; True as a pid is corruption, not pid 1.
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise ValueError(f"process record has no integer pid: {pid!r}")
        if not isinstance(create_time, int | float) or isinstance(create_time, bool):
            raise ValueError(f"process record has no numeric create_time: {create_time!r}")
        if not isinstance(cmdline, list | tuple):
            raise ValueError(f"process record cmdline is not a list: {cmdline!r}")
        return cls(pid=pid, create_time=float(create_time), cmdline=tuple(map(str, cmdline)))


def create_time_from_boot_ticks(ticks: int) -> float:
    """``create_time`` for a start time given as Linux clock ticks since boot.

    That is field 22 of ``/proc/<pid>/stat``, which older records stored instead of a
    create_time; psutil derives create_time from the same field in exactly this way,
    so converted records compare as precisely as fresh ones. ValueError where the
    conversion is not possible (no tick rate) or *ticks* is not an int.
    """
    if not isinstance(ticks, int) or isinstance(ticks, bool) or ticks < 0:
        raise ValueError(f"not a clock-tick count: {ticks!r}")
    try:
        ticks_per_second = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError) as exc:
        raise ValueError(f"no clock tick rate on this system: {exc}") from exc
    return ticks / ticks_per_second + float(psutil.boot_time())


def _reap_exited_children() -> None:
    # poll() collects the exit status, so the pid stops existing (and may be recycled,
    # which is harmless: nothing here trusts a pid without its create_time).
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            del _CHILDREN[pid]


def spawn_detached(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> psutil.Popen:
    """Start *argv* in its own session with stdout and stderr in *log_path* (truncated).

    Its own session means it outlives the caller and a Ctrl-C in the caller's terminal
    does not reach it. OSError if it cannot be executed.
    """
    _reap_exited_children()
    with open(log_path, "wb") as log_file:
        # The child has its own copy of the descriptor; ours can be closed right away.
        child = psutil.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[child.pid] = child
    return child


def identity_of(proc: psutil.Process) -> ProcessIdentity:
    """Identity of a process we hold a handle to, even one that has already exited.

    Use this right after ``spawn_detached`` rather than ``identify``: a child that dies
    at once is a zombie, which ``identify`` reports as gone, yet the caller still needs
    its identity to record and clean up after it.
    """
    # psutil.Popen passes `args` through to subprocess: the argv we executed, which a
    # zombie no longer exposes in its own cmdline.
    args = getattr(proc, "args", None)
    cmdline = tuple(map(str, args)) if isinstance(args, list | tuple) else tuple(proc.cmdline())
    return ProcessIdentity(pid=proc.pid, create_time=proc.create_time(), cmdline=cmdline)


def identify(pid: int) -> ProcessIdentity | None:
    """Identity of the live process *pid*; None if it is gone, a zombie, or not ours to inspect."""
    if pid <= 0:
        return None  # 0 and negative "pids" address process groups when signalled
    _reap_exited_children()
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            # A zombie has exited: it only waits for its parent to collect the status.
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return ProcessIdentity(
                pid=pid, create_time=proc.create_time(), cmdline=tuple(proc.cmdline())
            )
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return None


def same_process(a: ProcessIdentity, b: ProcessIdentity) -> bool:
    """Whether two identities name the same process (same pid, same start); cmdline is ignored."""
    return a.pid == b.pid and abs(a.create_time - b.create_time) <= CREATE_TIME_SLACK


def is_alive(identity: ProcessIdentity) -> bool:
    """True only while the very process *identity* names runs: not a recycled pid, no zombie."""
    current = identify(identity.pid)
    return current is not None and same_process(current, identity)


def _handle(target: int | ProcessIdentity) -> psutil.Process | None:
    """A psutil handle for *target*, or None if it is gone or its pid now names another process."""
    pid = target.pid if isinstance(target, ProcessIdentity) else target
    if pid <= 0:
        return None
    _reap_exited_children()
    proc = _CHILDREN.get(pid)
    try:
        if proc is None:
            proc = psutil.Process(pid)
        if isinstance(target, ProcessIdentity):
            current = ProcessIdentity(pid=pid, create_time=proc.create_time())
            if not same_process(current, target):
                return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied as exc:
        raise ProcessError(f"not allowed to inspect pid {pid} (another user's?)") from exc
    return proc


def _gone(proc: psutil.Process) -> bool:
    child = _CHILDREN.get(proc.pid)
    if child is not None:
        # For our own child only reaping counts: until then its pid cannot be recycled,
        # and returning early on "zombie" would leave the zombie behind.
        if child.poll() is None:
            return False
        del _CHILDREN[proc.pid]
        return True
    # is_running() is False once the pid is free or names a process started later.
    if not proc.is_running():
        return True
    try:
        # Someone else's child that died stays a zombie until its parent (or init) reaps
        # it, which may be never in a container whose pid 1 does not reap: dead is dead.
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    # Polling rather than proc.wait(): psutil's wait() on a process that is not our
    # child only returns once the pid disappears, and a zombie nobody reaps never does.
    deadline = time.monotonic() + timeout
    interval = 0.005
    while not _gone(proc):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, 0.05)
    return True


def terminate(
    target: int | ProcessIdentity, grace: float, kill_timeout: float = KILL_TIMEOUT
) -> bool:
    """SIGTERM *target*, give it *grace* seconds to exit, then SIGKILL it.

    Returns False without signalling anything if it is already gone (or, for an
    identity, if its pid now belongs to another process); True once it has exited.
    A bare pid is trusted as is: pass an identity whenever the pid came from a file.
    ProcessError if we may not signal it or it survives SIGKILL for *kill_timeout* s.
    """
    proc = _handle(target)
    if proc is None:
        return False
    try:
        # psutil refuses to signal (NoSuchProcess) if the pid was recycled since `proc`
        # was created, which closes the gap between the identity check and the signal.
        proc.terminate()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied as exc:
        raise ProcessError(f"not allowed to signal pid {proc.pid} (another user's?)") from exc
    if _wait_gone(proc, grace):
        return True
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        return True  # it exited between the last check and the kill
    except psutil.AccessDenied as exc:
        raise ProcessError(f"not allowed to kill pid {proc.pid} (another user's?)") from exc
    if not _wait_gone(proc, kill_timeout):
        raise ProcessError(f"pid {proc.pid} did not exit {kill_timeout:g}s after SIGKILL")
    return True
