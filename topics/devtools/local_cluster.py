"""A whole DPS cluster on one machine, as child processes: what ``runcluster`` runs.

This module owns the orchestration only: one embedded Redis per node (or one shared ``--redis``),
the cluster file every node reads, a database migration, the WS and TS node processes, their
prefixed log stream, readiness, supervision (a node or Redis that exits is restarted with
backoff, see ``topics.devtools.supervisor``) or failure detection, and an orderly shutdown. What a node *does* is
the business of ``dps_site.asgi`` and the ``topic_server`` command. It does not import Django, so
tests and benchmarks can start the same cluster programmatically::

    with LocalCluster(ws=2, ts=2, port=free_port_block(2)) as cluster:
        connect(cluster.ws_urls[0])
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from channel_layer.cluster import (
    TS,
    WS,
    ClusterConfigError,
    parse_cluster,
    redact_url,
    ts_serving_line,
)
from topics.devtools.embedded_redis import (
    RedisProcess,
    RedisServerNotFound,
    RedisStartError,
    accepts_connections,
    free_port,
    port_is_free,
)
from topics.devtools.supervisor import Backoff, RestartPolicy, describe_exit

PROJECT_DIR = Path(__file__).resolve().parents[2]  # where manage.py lives
SERVERS = ("daphne", "uvicorn")
# The listen backlog of WS nodes (the kernel caps it at net.core.somaxconn, 4096 by default).
LISTEN_BACKLOG = 4096
# The servers' own keep-alive pings (daphne and uvicorn: every 20 s) are redundant on a Phoenix
# socket: its client heartbeats every 30 s and the consumer closes a socket silent for
# DPS_IDLE_TIMEOUT (60 s). They cost an idle node most of its CPU (10,000 sockets: 500 pings
# and pongs a second, each with a timer), so WS nodes run without them: uvicorn's 0 turns them
# off; daphne pings only a connection silent this long, which the idle timeout closes first.
DAPHNE_PING_ARGS = ("--ping-interval", "600")
UVICORN_PING_ARGS = ("--ws-ping-interval", "0")
DEFAULT_READY_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.1
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
# A local cluster is for development: DEBUG on and anonymous sockets allowed, unless the
# environment says otherwise (DPS_ALLOW_ANONYMOUS=0 tries a locked-down cluster).
DEVELOPMENT_DEFAULTS = {"DJANGO_DEBUG": "1", "DPS_ALLOW_ANONYMOUS": "1"}


class ClusterError(RuntimeError):
    """The cluster could not start, or one of its processes died."""


class ClusterInterrupted(ClusterError):
    """A stop was requested (Ctrl-C, SIGTERM) while the cluster was still starting."""


def node_suffix(index: int) -> str:
    """0 → "a", 25 → "z", 26 → "aa", 27 → "ab" ... (spreadsheet columns: names stay short)."""
    suffix = ""
    index += 1
    while index:
        index, digit = divmod(index - 1, len(_ALPHABET))
        suffix = _ALPHABET[digit] + suffix
    return suffix


@dataclass(frozen=True)
class LocalNode:
    """One node of the local cluster; ``port`` is the WebSocket port of a WS node (which
    serves its metrics there too), ``metrics_port`` a topic server's metrics port."""

    name: str
    role: str
    port: int | None = None
    metrics_port: int | None = None


@dataclass
class _Child:
    """A running child process and the thread that copies its output to ours."""

    label: str
    proc: subprocess.Popen[str]
    pump: threading.Thread
    started: float  # time.monotonic() at spawn


@dataclass
class _PendingRestart:
    """A supervised process that exited and waits out its backoff."""

    due: float
    restart: Callable[[], None]


class LocalCluster:
    """Start, watch and stop a local DPS cluster of ``ws`` WS nodes and ``ts`` TS nodes.

    WS nodes listen on ``host:port``, ``port+1``, ... Every node gets its own embedded Redis unless
    ``redis`` names one Redis URL for all of them. ``emit`` receives every output line.

    With ``supervise``, once the cluster is up a thread restarts any node or embedded Redis that
    exits (whatever its exit code) after a backoff, and logs its name and exit code; without it
    (``runcluster --fail-fast``, and what tests use to see a death) :meth:`wait` reports the
    first exit.
    """

    def __init__(
        self,
        ws: int = 2,
        ts: int = 2,
        *,
        port: int = 8000,
        redis: str | None = None,
        host: str = "127.0.0.1",
        server: str = "daphne",
        migrate: bool = True,
        emit: Callable[[str], None] | None = None,
        base_env: Mapping[str, str] | None = None,
        supervise: bool = False,
        restart_policy: RestartPolicy | None = None,
    ) -> None:
        if ws < 1 or ts < 1:
            raise ValueError("a cluster needs at least one WS node and one TS node")
        if port < 1 or port + ws - 1 > 65535:
            raise ValueError(f"WS ports {port}..{port + ws - 1} are not all valid TCP ports")
        if server not in SERVERS:
            raise ValueError(f"server must be one of {SERVERS}, not {server!r}")
        self.host = host
        self.server = server
        self.shared_redis = redis
        self.migrate = migrate
        self.nodes: list[LocalNode] = [
            LocalNode(f"ws-{node_suffix(i)}", WS, port + i) for i in range(ws)
        ] + [LocalNode(f"ts-{node_suffix(i)}", TS, metrics_port=free_port(host))
             for i in range(ts)]
        self._emit = emit or _print_line
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._emit_lock = threading.Lock()
        self._workdir: str | None = None
        self._redis: dict[str, RedisProcess] = {}
        self._children: list[_Child] = []
        self._serving: set[str] = set()  # topic servers that have said they serve their inbox
        self._stop_requested = False
        self.supervise = supervise
        self._restart_policy = restart_policy or RestartPolicy()
        self._backoffs: dict[str, Backoff] = {}
        self._pending: dict[str, _PendingRestart] = {}
        self._children_lock = threading.Lock()  # the supervisor thread replaces children
        self._supervisor: threading.Thread | None = None
        self._supervisor_stop = threading.Event()

    # -- what the cluster is ---------------------------------------------------------------

    @property
    def ws_nodes(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.role == WS]

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://{self.host}:{n.port}/socket/websocket?vsn=2.0.0" for n in self.ws_nodes]

    @property
    def demo_urls(self) -> list[str]:
        """The demo chat at ``/`` of every WS node."""
        return [f"http://{self.host}:{n.port}/" for n in self.ws_nodes]

    def metrics_url(self, node: LocalNode) -> str:
        """Where ``node`` serves its Prometheus metrics."""
        return f"http://{self.host}:{node.port or node.metrics_port}/metrics"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.ws_nodes[0].port}/admin/"

    @property
    def workdir(self) -> str | None:
        """The temp dir holding the cluster file and the Redis dirs; removed by :meth:`stop`."""
        return self._workdir

    @property
    def cluster_file(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the cluster has not been started")
        return Path(self._workdir, "cluster.json")

    def redis_url(self, node: LocalNode) -> str:
        if self.shared_redis:
            return self.shared_redis
        return self._redis[node.name].url

    def cluster_config(self) -> dict[str, list[dict[str, str]]]:
        """The cluster file's content: every node's name, role and home Redis."""
        return {
            "nodes": [
                {"name": n.name, "role": n.role, "redis": self.redis_url(n)} for n in self.nodes
            ]
        }

    def env_for(self, node: LocalNode) -> dict[str, str]:
        """The environment a node process runs with."""
        return {
            **self._child_env(),
            "DPS_NODE": node.name,
            "DPS_CLUSTER": str(self.cluster_file),
        }

    def command_for(self, node: LocalNode) -> list[str]:
        """The command line of a node process (run from the project directory)."""
        if node.role == TS:
            return [sys.executable, "manage.py", "topic_server", "--metrics-host", self.host,
                    "--metrics-port", str(node.metrics_port)]
        assert node.port is not None
        # The server must pass frames somewhat over the socket's own limit through, so that
        # the Phoenix socket (not the server) answers them with its specified close 1009.
        frame_limit = str(4 * int(self._base_env.get("DPS_MAX_FRAME_BYTES", 1024 * 1024)))
        if self.server == "uvicorn":
            return [sys.executable, "-m", "uvicorn", "--host", self.host, "--port", str(node.port),
                    "--backlog", str(LISTEN_BACKLOG), *UVICORN_PING_ARGS,
                    "--ws-max-size", frame_limit, "dps_site.asgi:application"]
        # An endpoint string, as -b/-p leave Twisted's listen backlog at 50: a connection storm
        # then waits on SYN retries (seconds) instead of the accept loop (milliseconds).
        endpoint = f"tcp:port={node.port}:interface={self.host}:backlog={LISTEN_BACKLOG}"
        return [sys.executable, "-m", "daphne", "-e", endpoint, *DAPHNE_PING_ARGS,
                "--websocket-max-message-size", frame_limit, "--websocket-max-frame-size",
                frame_limit, "dps_site.asgi:application"]

    def _child_env(self) -> dict[str, str]:
        env = dict(self._base_env)
        # Inherited node identity would make migrate (or a node) join some other cluster.
        env.pop("DPS_NODE", None)
        env.pop("DPS_CLUSTER", None)
        env.setdefault("DJANGO_SETTINGS_MODULE", "dps_site.settings")
        for name, value in DEVELOPMENT_DEFAULTS.items():  # what the caller set explicitly wins
            env.setdefault(name, value)
        env["PYTHONUNBUFFERED"] = "1"  # so the prefixed log stream is live, not block-buffered
        return env

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = DEFAULT_READY_TIMEOUT) -> Self:
        """Start everything; return once every WS node accepts TCP connections and every topic
        server has said it serves its inbox.

        Raises :class:`ClusterError` (after stopping what was started) if a process dies, the
        cluster is not ready within ``timeout`` seconds, or a stop is requested meanwhile.
        """
        if self._workdir is not None:
            raise RuntimeError("the cluster is already started")
        try:
            self._check_ports_free()
            self._workdir = tempfile.mkdtemp(prefix="dps-cluster-")
            self._start_redis()
            self._write_cluster_file()
            if self.migrate:
                self._run_migrate()
            for node in self.nodes:
                self._spawn_node(node)
            self._wait_until_ready(timeout)
            if self.supervise:
                self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                                    name="dps-supervisor")
                self._supervisor.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _check_ports_free(self) -> None:
        # A port held by someone else would also "accept connections": readiness would lie.
        for node in self.ws_nodes:
            assert node.port is not None
            if not port_is_free(node.port, self.host, allow_time_wait=True):
                raise ClusterError(f"port {node.port} on {self.host} (for {node.name}) is in use")

    def _start_redis(self) -> None:
        if self.shared_redis:
            self.say(f"every node uses Redis {redact_url(self.shared_redis)}")
            return
        for node in self.nodes:
            self._check_stop()
            redis = RedisProcess(parent_dir=self._workdir)
            self._redis[node.name] = redis  # registered first so stop() cleans up a failed start
            try:
                redis.start()
            except (RedisServerNotFound, RedisStartError) as exc:
                raise ClusterError(f"redis for {node.name}: {exc}") from exc
            self.say(f"redis for {node.name}: {redis.url} (pid {redis.pid})")

    def _write_cluster_file(self) -> None:
        config = self.cluster_config()
        try:  # the nodes will read it: fail here, not in each node
            parse_cluster(config, "runcluster")
        except ClusterConfigError as exc:
            raise ClusterError(str(exc)) from exc
        # It holds Redis URLs, passwords included: readable by this user only, from creation.
        fd = os.open(self.cluster_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(config, indent=2))
        self.say(f"cluster file: {self.cluster_file}")

    def _run_migrate(self) -> None:
        child = self._spawn("migrate", [sys.executable, "manage.py", "migrate", "--noinput"],
                            self._child_env())
        while child.proc.poll() is None:
            self._check_stop()
            time.sleep(_POLL_INTERVAL)
        child.pump.join()
        with self._children_lock:
            self._children.remove(child)
        if child.proc.returncode:
            raise ClusterError(f"migrate failed with exit code {child.proc.returncode}")

    def _spawn_node(self, node: LocalNode) -> _Child:
        child = self._spawn(node.name, self.command_for(node), self.env_for(node))
        self.say(f"{node.name} started (pid {child.proc.pid})")
        return child

    def pid_of(self, name: str) -> int | None:
        """The pid of the node process called ``name`` now (None while it is down)."""
        with self._children_lock:
            return next((c.proc.pid for c in self._children if c.label == name), None)

    def redis_pid(self, name: str) -> int | None:
        """The pid of the embedded Redis of node ``name`` (None with a shared ``--redis``)."""
        redis = self._redis.get(name)
        return redis.pid if redis is not None else None

    def _spawn(self, label: str, command: list[str], env: dict[str, str]) -> _Child:
        # Own process group: Ctrl-C reaches only us, and we stop the children in order.
        proc = subprocess.Popen(
            command, cwd=PROJECT_DIR, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            bufsize=1, start_new_session=True,
        )
        pump = threading.Thread(target=self._pump, args=(label, proc.stdout), daemon=True,
                                name=f"dps-log-{label}")
        pump.start()
        child = _Child(label, proc, pump, time.monotonic())
        with self._children_lock:
            self._children.append(child)
        return child

    def _pump(self, label: str, stream: IO[str]) -> None:
        serving = ts_serving_line(label)
        for line in stream:
            if line.startswith(serving):
                self._serving.add(label)
            self._write(f"[{label}] {line.rstrip()}")

    def _wait_until_ready(self, timeout: float) -> None:
        # Ready = every WS node accepts connections and every topic server has said it serves:
        # a node that dies while starting fails the start instead of a later publish.
        waiting = list(self.nodes)
        deadline = time.monotonic() + timeout
        while waiting:
            self._check_stop()
            failure = self.poll()
            if failure:
                raise ClusterError(failure)
            waiting = [n for n in waiting if not self._is_ready(n)]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"not ready after {timeout:g}s: " + ", ".join(
                    f"{n.name} not accepting connections" if n.role == WS else
                    f"{n.name} not serving" for n in waiting))
            time.sleep(_POLL_INTERVAL)

    def _is_ready(self, node: LocalNode) -> bool:
        return self._accepts_connections(node) if node.role == WS else node.name in self._serving

    def _accepts_connections(self, node: LocalNode) -> bool:
        assert node.port is not None
        return accepts_connections(node.port, self.host)

    # -- one node at a time (failure tests) -------------------------------------------------

    def kill_node(self, name: str, signum: int = signal.SIGKILL,
                  timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop one node's process with ``signum`` and forget it (``poll`` no longer sees it)."""
        child = next(c for c in self._children if c.label == name)
        self._children.remove(child)
        self._serving.discard(name)
        _signal_group(child.proc, signum)
        child.proc.wait(timeout)
        child.pump.join(timeout=1.0)

    def start_node(self, name: str, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Start one node (again) and wait until it is ready."""
        node = next(n for n in self.nodes if n.name == name)
        self._spawn(node.name, self.command_for(node), self.env_for(node))
        self._wait_until_ready(timeout)

    def restart_redis(self, name: str) -> None:
        """Replace ``name``'s Redis by an empty one on the same port (its data is gone)."""
        old = self._redis[name]
        port = old.port
        old.stop()
        redis = self._redis[name] = RedisProcess(port, parent_dir=self._workdir)
        redis.start()

    def poll(self) -> str | None:
        """Describe the first process that has exited, or return None if all are running."""
        with self._children_lock:
            children = list(self._children)
        for child in children:
            code = child.proc.poll()
            if code is not None:
                return f"{child.label} exited unexpectedly with exit code {code}"
        for name, redis in self._redis.items():
            code = redis.returncode()
            if code is not None:
                return f"redis for {name} exited unexpectedly with exit code {code}"
        return None

    def request_stop(self) -> None:
        """Ask :meth:`start` or :meth:`wait` to return; safe to call from a signal handler."""
        # A plain flag, not an Event: Event.set() takes a lock and can deadlock in a handler.
        self._stop_requested = True

    def _check_stop(self) -> None:
        if self._stop_requested:
            raise ClusterInterrupted("stop requested while the cluster was starting")

    def wait(self) -> str | None:
        """Block until a stop is requested (return None) or, unsupervised, a process dies
        (return why)."""
        while not self._stop_requested:
            failure = None if self.supervise else self.poll()
            if failure:
                return failure
            time.sleep(_POLL_INTERVAL)
        return None

    # -- supervision -----------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._supervisor_stop.wait(_POLL_INTERVAL):
            try:
                self._supervise_once()
            except Exception as exc:  # supervision must outlive any one failed restart
                self.say(f"supervision error: {exc}")

    def _supervise_once(self) -> None:
        now = time.monotonic()
        with self._children_lock:
            exited = [c for c in self._children if c.proc.poll() is not None]
            for child in exited:
                self._children.remove(child)
        for child in exited:
            child.pump.join(timeout=1.0)  # its last lines come before the restart notice
            self._serving.discard(child.label)
            node = next(n for n in self.nodes if n.name == child.label)
            if not self._in_cluster_file(node.name):
                # The operator removed it (a topic server drains and exits 0): let it go.
                self.say(f"{node.name} exited with {describe_exit(child.proc.returncode)} "
                         "and is no longer in the cluster file; not restarting it")
                continue
            self._schedule(child.label, child.proc.returncode, now - child.started,
                           lambda node=node: self._spawn_node(node))
        for name, redis in self._redis.items():
            label = f"redis for {name}"
            code = redis.returncode()
            if code is not None and label not in self._pending:
                self._schedule(label, code, now - redis.started_at,
                               lambda name=name: self._restart_redis(name))
        for label, pending in list(self._pending.items()):
            if pending.due <= time.monotonic() and not self._supervisor_stop.is_set():
                del self._pending[label]
                pending.restart()

    def _in_cluster_file(self, name: str) -> bool:
        try:
            config = json.loads(self.cluster_file.read_text())
            return any(node.get("name") == name for node in config["nodes"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return True  # unreadable mid-edit: restart, the node itself will judge the file

    def _schedule(self, label: str, code: int, ran_for: float,
                  restart: Callable[[], None]) -> None:
        backoff = self._backoffs.setdefault(label, Backoff(self._restart_policy))
        delay = backoff.next_delay(ran_for)
        self.say(f"{label} exited with {describe_exit(code)} after {ran_for:.1f}s; "
                 f"restarting it in {delay:g}s (restart {backoff.restarts})")
        self._pending[label] = _PendingRestart(time.monotonic() + delay, restart)

    def _restart_redis(self, name: str) -> None:
        redis = self._redis[name]
        try:
            redis.restart()
        except RedisStartError as exc:
            self.say(f"redis for {name} did not start again: {exc}")
            return  # still exited: the next round schedules another attempt
        self.say(f"redis for {name} restarted on {redis.url} (pid {redis.pid})")

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``timeout``), then Redis; remove the temp dir."""
        self._supervisor_stop.set()  # no restart may race the shutdown
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
        self._supervisor = None
        self._pending.clear()
        with self._children_lock:
            children, self._children = self._children, []
        for child in children:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.label} did not stop within {timeout:g}s; killing it")
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
        for child in children:
            child.pump.join(timeout=1.0)  # flush the last lines; a stray grandchild can't block us
        # Redis goes last: nodes shutting down may still talk to it.
        for redis in self._redis.values():
            redis.stop()
        self._redis.clear()
        self._serving.clear()
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._supervisor_stop.clear()  # a later start() supervises again

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- output ----------------------------------------------------------------------------

    def development_settings(self) -> dict[str, str]:
        """The development defaults the nodes run with, as they will see them."""
        env = self._child_env()
        return {name: env[name] for name in DEVELOPMENT_DEFAULTS}

    def say(self, message: str) -> None:
        """Emit one line of the cluster's own (not a node's) output."""
        self._write(f"[runcluster] {message}")

    def _write(self, line: str) -> None:
        with self._emit_lock:  # one pump thread per child: keep lines whole
            self._emit(line)


def _signal_group(proc: subprocess.Popen[str], signum: int) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def _print_line(line: str) -> None:
    print(line, flush=True)
